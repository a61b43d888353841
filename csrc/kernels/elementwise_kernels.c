/* elementwise_kernels.c -- one instruction-set variant of the elementwise loops.
 *
 * CMakeLists.txt compiles this file once per variant, with that variant's compiler flags
 * (e.g. -mavx2) and FM_VARIANT set to its name (e.g. avx2); each object defines
 * fm_fill_f_<variant> and fm_fill_d_<variant>, and elementwise_dispatch.c calls the pair of
 * the variant it selects. The loops themselves are in elementwise_impl.h.
 */
#include "elementwise.h"

#ifndef FM_VARIANT
#error "compile with -DFM_VARIANT=<name> (CMakeLists.txt does)"
#endif

#define FM_JOIN(a, b, c) a##_##b##_##c
#define FM_NAME(name, type, variant) FM_JOIN(name, type, variant)
#define FM_FIELD_OF(name, type) name##_##type

/* float */
#define T float
#define FM_FN(name) FM_NAME(fm_##name, f, FM_VARIANT)
#define FM_FIELD(name) FM_FIELD_OF(name, f)
#define FM_FABS fabsf
#define FM_COPYSIGN copysignf
#define FM_LOG1P log1pf
#define FM_SQRT sqrtf
#define FM_EXP fm_exp_f
#define FM_EXPM1 fm_expm1_f
#include "elementwise_impl.h"
#undef T
#undef FM_FN
#undef FM_FIELD
#undef FM_FABS
#undef FM_COPYSIGN
#undef FM_LOG1P
#undef FM_SQRT
#undef FM_EXP
#undef FM_EXPM1

/* double */
#define T double
#define FM_FN(name) FM_NAME(fm_##name, d, FM_VARIANT)
#define FM_FIELD(name) FM_FIELD_OF(name, d)
#define FM_FABS fabs
#define FM_COPYSIGN copysign
#define FM_LOG1P log1p
#define FM_SQRT sqrt
#define FM_EXP fm_exp_d
#define FM_EXPM1 fm_expm1_d
#include "elementwise_impl.h"
