/* bf16_gemm.c -- run-time detection for the bfloat16 product and its entry (bf16_gemm.h).
 *
 * Compiled with the baseline flags: nothing here executes an AVX-512 instruction. The kernel
 * (bf16_gemm_avx512.c, FM_HAVE_BF16_KERNEL) is built only for x86-64 with GCC or Clang;
 * whether it runs is decided from cpu.h's probe (AVX-512 F, BW, VL and AVX512_BF16 in CPUID,
 * the opmask and ZMM registers saved by the OS in XCR0, FUSEDMLP_ISA), once, at first use.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_gemm.h"
#include "fm_atomic.h"
#include "cpu.h"
#include "fm_platform.h"

#if defined(FM_HAVE_BF16_KERNEL)
int fm_gemm_bf16_avx512(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                        const float *b, int ldb, float *c, int ldc);
int fm_gemm_bf16_packed_avx512(int trans_a, int m, int n, int k, const float *a, int lda,
                               const uint32_t *bp, ptrdiff_t ps, float *c, int ldc);
void fm_bf16_pack_avx512(int trans, int k, const float *b, int ldb, int p0, int p1, int j0,
                         int j1, uint32_t *dst, ptrdiff_t ps);
void fm_bf16_convert_avx512(ptrdiff_t n, const float *src, uint16_t *dst);

static void *fm_bf16_reason = NULL;         /* "" when the kernel runs */

static const char *fm_bf16_detect(void)
{
    unsigned raw = fm_cpu_raw(), need = FM_CPU_AVX512F | FM_CPU_AVX512BW | FM_CPU_AVX512VL;
    if (!fm_cpu_allows(FM_CPU_AVX512F) && (fm_cpu_features() & FM_CPU_AVX512F))
        return "FUSEDMLP_ISA forces a variant without AVX-512";
    if (!(raw & FM_OS_XSAVE))
        return "the CPU or the operating system does not offer XSAVE (OSXSAVE)";
    if (!(raw & FM_CPU_LEAF7))
        return "the CPU has no AVX-512 (CPUID leaf 7 missing)";
    if ((raw & need) != need)
        return "the CPU lacks AVX-512 F/BW/VL";
    if (!(raw & FM_CPU_AVX512BF16))
        return "the CPU has AVX-512 but not AVX512-BF16 (vdpbf16ps)";
    if (!(raw & FM_OS_ZMM))
        return "the operating system does not enable the AVX-512 register state (XCR0)";
    return "";
}

const char *fm_bf16_why_not(void)
{
    const char *reason = (const char *)fm_load_ptr(&fm_bf16_reason, FM_ACQUIRE);
    if (reason == NULL) {                   /* the same answer from every thread that races */
        reason = fm_bf16_detect();
        fm_store_ptr(&fm_bf16_reason, (void *)reason, FM_RELEASE);
    }
    return reason;
}

const char *fm_bf16_amx_why_not(void)
{
    unsigned raw = fm_cpu_raw();
    if (!fm_cpu_allows(FM_CPU_AVX512F) && (fm_cpu_features() & FM_CPU_AVX512F))
        return "FUSEDMLP_ISA forces a variant without AVX-512";
    if (!(raw & FM_OS_XSAVE))
        return "the CPU or the operating system does not offer XSAVE (OSXSAVE)";
    if (!(raw & FM_CPU_LEAF7))
        return "the CPU has no AMX (CPUID leaf 7 missing)";
    if (!(raw & FM_CPU_AMX_BF16))
        return "the CPU has no AMX-BF16 tiles";
    if (!(raw & FM_OS_TILE))
        return "the operating system does not enable the AMX tile state (XCR0)";
    return "";
}
#else
const char *fm_bf16_amx_why_not(void)
{
    return "this build of fusedmlp has no AMX detection (it needs GCC or Clang on x86-64)";
}

const char *fm_bf16_why_not(void)
{
#if defined(__x86_64__) || defined(_M_X64)
    return "this build of fusedmlp has no bf16 kernel (it needs GCC or Clang on x86-64, not Windows)";
#else
    return "the bf16 kernel is x86-64 only (AVX512-BF16); this CPU is another architecture";
#endif
}
#endif

int fm_bf16_cpu(void) { return fm_bf16_why_not()[0] == 0; }

/* float32 -> bf16 bits, round to nearest even, subnormals to zero (as vcvtne2ps2bf16). */
static float fm_bf16_round(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, 4);
    if ((bits & 0x7f800000u) == 0)
        bits &= 0x80000000u;
    else if ((bits & 0x7fffffffu) > 0x7f800000u)
        bits |= 0x00400000u;                /* NaN stays NaN (quiet) */
    else
        bits += 0x7fffu + ((bits >> 16) & 1);
    bits &= 0xffff0000u;
    memcpy(&x, &bits, 4);
    return x;
}

/* The bf16 bits of x (its upper half after fm_bf16_round). */
static uint32_t fm_bf16_bits(float x)
{
    uint32_t bits;
    x = fm_bf16_round(x);
    memcpy(&bits, &x, 4);
    return bits >> 16;
}

/* op(B) as the portable loop reads it, whichever form it is held in: float32 (rounded as it is
 * read), bf16 bits (row-major, leading dimension ld) or fm_bf16_pack's words (panel stride
 * ld). */
enum { FM_B_FLOAT32, FM_B_BITS, FM_B_PACKED };
typedef struct {
    int form, trans;
    const void *b;
    ptrdiff_t ld;
} fm_b_operand;

/* op(B)[kk, j] as a float holding a bf16 value. */
static float fm_b_at(const fm_b_operand *op, ptrdiff_t kk, ptrdiff_t j)
{
    uint32_t bits;
    float y;
    if (op->form == FM_B_FLOAT32) {
        const float *b = (const float *)op->b;
        return fm_bf16_round(op->trans ? b[j * op->ld + kk] : b[kk * op->ld + j]);
    }
    if (op->form == FM_B_BITS) {
        const uint16_t *b16 = (const uint16_t *)op->b;
        bits = (uint32_t)(op->trans ? b16[j * op->ld + kk] : b16[kk * op->ld + j]) << 16;
    } else {
        uint32_t word = ((const uint32_t *)op->b)[(j / 32) * op->ld + (kk / 2) * 32 + j % 32];
        bits = (kk % 2 ? word >> 16 : word) << 16;
    }
    memcpy(&y, &bits, 4);
    return y;
}

/* The portable loop: used only when the kernel cannot run or could not get its space (or
 * MKL's product its bf16 copies). The same bf16 operands and float32 sums, in another order
 * than the kernel's. */
static void fm_gemm_bf16_loop(int trans_a, int m, int n, int k, const float *a, int lda,
                              const fm_b_operand *b, float *c, int ldc)
{
    int i, j, kk;
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            float sum = 0;
            for (kk = 0; kk < k; kk++) {
                float x = trans_a ? a[(ptrdiff_t)kk * lda + i] : a[(ptrdiff_t)i * lda + kk];
                sum += fm_bf16_round(x) * fm_b_at(b, kk, j);
            }
            c[(ptrdiff_t)i * ldc + j] = sum;
        }
}

/* MKL's cblas_gemm_bf16bf16f32 and MKL_Set_Num_Threads_Local, when chosen (fm_bf16_use_mkl). */
typedef void (*fm_mkl_gemm_fn)(int, int, int, int, int, int, float, const uint16_t *, int,
                               const uint16_t *, int, float, float *, int);
typedef int (*fm_mkl_threads_fn)(int);
static fm_mkl_gemm_fn fm_mkl_gemm = NULL;
static fm_mkl_threads_fn fm_mkl_threads = NULL;

/* The addresses come from dlsym/GetProcAddress as void *. ISO C has no conversion from an
 * object pointer to a function pointer (POSIX and Windows make them the same size and
 * representation, which dlsym relies on): the bits are copied instead. */
typedef char fm_function_pointers_are_data_sized[sizeof(fm_mkl_gemm_fn) == sizeof(void *) ? 1 : -1];

void fm_bf16_use_mkl(void *gemm, void *set_threads_local)
{
    memcpy(&fm_mkl_gemm, &gemm, sizeof fm_mkl_gemm);
    memcpy(&fm_mkl_threads, &set_threads_local, sizeof fm_mkl_threads);
}

int fm_bf16_mkl(void) { return fm_mkl_gemm != NULL; }

void fm_bf16_convert(ptrdiff_t n, const float *src, uint16_t *dst)
{
    ptrdiff_t i;
#if defined(FM_HAVE_BF16_KERNEL)
    if (fm_bf16_cpu()) {
        fm_bf16_convert_avx512(n, src, dst);
        return;
    }
#endif
    for (i = 0; i < n; i++)
        dst[i] = (uint16_t)fm_bf16_bits(src[i]);
}

#if defined(FM_HAVE_BF16_KERNEL)
/* The calling thread's bf16 copies of MKL's operands (grown as needed, freed at thread exit:
 * fm_platform.h's thread-local key). */
typedef struct { size_t size; uint16_t *words; } fm_mkl_space;
static fm_tls_key fm_mkl_key;
static int fm_mkl_key_made = 0;
static fm_once fm_mkl_once = FM_ONCE_INIT;
static void FM_TLS_CALLBACK fm_mkl_space_free(void *space)
{
    if (space == NULL)
        return;
    free(((fm_mkl_space *)space)->words);
    free(space);
}
static void fm_mkl_key_init(void)
{
    fm_mkl_key_made = fm_tls_create(&fm_mkl_key, fm_mkl_space_free) == 0;
}

static uint16_t *fm_mkl_words(size_t count)
{
    fm_mkl_space *space;
    fm_call_once(&fm_mkl_once, fm_mkl_key_init);
    if (!fm_mkl_key_made)
        return NULL;
    space = (fm_mkl_space *)fm_tls_get(fm_mkl_key);
    if (space == NULL) {
        space = (fm_mkl_space *)calloc(1, sizeof(fm_mkl_space));
        if (space == NULL || fm_tls_set(fm_mkl_key, space) != 0) {
            free(space);
            return NULL;
        }
    }
    if (space->size < count) {
        uint16_t *words = (uint16_t *)realloc(space->words, count * sizeof(uint16_t));
        if (words == NULL)
            return NULL;
        space->words = words;
        space->size = count;
    }
    return space->words;
}

/* rows x cols of x (leading dimension ld) into dst, rows after rows. */
static void fm_convert_rows(int rows, int cols, const float *x, int ld, uint16_t *dst)
{
    int i;
    if (ld == cols) {
        fm_bf16_convert((ptrdiff_t)rows * cols, x, dst);
        return;
    }
    for (i = 0; i < rows; i++)
        fm_bf16_convert(cols, x + (ptrdiff_t)i * ld, dst + (ptrdiff_t)i * cols);
}

/* MKL's product of op(A) @ op(B); A is converted here, B too unless b16 is given. 0 when the
 * bf16 copies cannot be had (the caller falls back to the kernel). */
static int fm_bf16_gemm_mkl(int trans_a, int trans_b, int m, int n, int k, const float *a,
                            int lda, const float *b, const uint16_t *b16, int ldb, float *c,
                            int ldc)
{
    int a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
    int b_rows = trans_b ? n : k, b_cols = trans_b ? k : n, saved;
    size_t a_size = (size_t)a_rows * a_cols, b_size = b16 ? 0 : (size_t)b_rows * b_cols;
    uint16_t *words = fm_mkl_words(a_size + b_size + 1);
    if (words == NULL)
        return 0;
    fm_convert_rows(a_rows, a_cols, a, lda, words);
    if (!b16) {
        fm_convert_rows(b_rows, b_cols, b, ldb, words + a_size);
        b16 = words + a_size;
        ldb = b_cols;
    }
    saved = fm_mkl_threads ? fm_mkl_threads(1) : 0;     /* fusedmlp's parts are the threads */
    /* CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 */
    fm_mkl_gemm(101, trans_a ? 112 : 111, trans_b ? 112 : 111, m, n, k, 1.0f, words,
                a_cols > 0 ? a_cols : 1, b16, ldb > 0 ? ldb : 1, 0.0f, c, ldc);
    if (fm_mkl_threads)
        fm_mkl_threads(saved);
    return 1;
}
#endif

void fm_bf16_gemm_b16(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                      const uint16_t *b16, int ldb, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
#if defined(FM_HAVE_BF16_KERNEL)
    if (fm_mkl_gemm && fm_bf16_gemm_mkl(trans_a, trans_b, m, n, k, a, lda, NULL, b16, ldb, c, ldc))
        return;
#endif
    {
        fm_b_operand op = {FM_B_BITS, trans_b, b16, ldb};
        fm_gemm_bf16_loop(trans_a, m, n, k, a, lda, &op, c, ldc);
    }
}

void fm_bf16_gemm(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                  const float *b, int ldb, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
#if defined(FM_HAVE_BF16_KERNEL)
    if (fm_mkl_gemm && fm_bf16_gemm_mkl(trans_a, trans_b, m, n, k, a, lda, b, NULL, ldb, c, ldc))
        return;
    if (fm_bf16_cpu() && fm_gemm_bf16_avx512(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc))
        return;
#endif
    {
        fm_b_operand op = {FM_B_FLOAT32, trans_b, b, ldb};
        fm_gemm_bf16_loop(trans_a, m, n, k, a, lda, &op, c, ldc);
    }
}

/* The portable pack (fm_bf16_pack when the kernel cannot run): the same words. */

void fm_bf16_pack(int trans, int k, const float *b, int ldb, int p0, int p1, int j0, int j1,
                  uint32_t *dst, ptrdiff_t ps)
{
    int p, j;
#if defined(FM_HAVE_BF16_KERNEL)
    if (fm_bf16_cpu()) {
        fm_bf16_pack_avx512(trans, k, b, ldb, p0, p1, j0, j1, dst, ps);
        return;
    }
#endif
    for (p = p0; p < p1; p++)
        for (j = j0; j < j1; j++) {
            float lo = trans ? b[(ptrdiff_t)j * ldb + 2 * p] : b[2 * (ptrdiff_t)p * ldb + j];
            float hi = 2 * p + 1 >= k ? 0.0f
                       : trans ? b[(ptrdiff_t)j * ldb + 2 * p + 1]
                               : b[(2 * (ptrdiff_t)p + 1) * ldb + j];
            dst[(ptrdiff_t)(j / 32) * ps + (ptrdiff_t)p * 32 + j % 32] =
                fm_bf16_bits(lo) | fm_bf16_bits(hi) << 16;
        }
}

void fm_bf16_gemm_packed(int trans_a, int m, int n, int k, const float *a, int lda,
                         const uint32_t *bp, ptrdiff_t ps, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
#if defined(FM_HAVE_BF16_KERNEL)
    if (fm_bf16_cpu() && fm_gemm_bf16_packed_avx512(trans_a, m, n, k, a, lda, bp, ps, c, ldc))
        return;
#endif
    {
        fm_b_operand op = {FM_B_PACKED, 0, bp, ps};
        fm_gemm_bf16_loop(trans_a, m, n, k, a, lda, &op, c, ldc);
    }
}
