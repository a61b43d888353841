/* isa_cap.h -- the one reading of FUSEDMLP_ISA by the kernel families outside the elementwise
 * dispatcher (elementwise_dispatch.c validates the name at import and picks the elementwise
 * variant). A forced variant caps every family: forcing baseline or avx2 means that no
 * AVX-512 kernel of any family (small_gemm, bf16_gemm) runs.
 */
#ifndef FUSEDMLP_ISA_CAP_H
#define FUSEDMLP_ISA_CAP_H

#include <stdlib.h>
#include <string.h>

/* 1 unless FUSEDMLP_ISA forces a variant other than avx512. */
static inline int fm_isa_allows_avx512(void)
{
    const char *isa = getenv("FUSEDMLP_ISA");
    return isa == NULL || isa[0] == '\0' || strcmp(isa, "avx512") == 0;
}

#endif
