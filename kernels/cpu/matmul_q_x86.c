/*
 * matmul_q_x86.c — the x86 variants of sl_k_matmul_qp, instantiated from the template matmul_q_x86.h:
 *   avx2       pmaddubsw + pmaddwd on ymm: half a packed group (8 outputs) per vector, tiles of up to 4 rows
 *   avxvnni    the same with AVX-VNNI's vpdpbusd (VEX; Alder Lake and later parts without AVX-512)
 *   avx512vnni vpdpbusd on zmm: a whole group (16 outputs) per vector, tiles of up to 8 rows (32 registers:
 *              accumulator, offset chain and integer sums per row)
 * All three give bit-identical results (the integer sums are exact, the float work per lane is the recipe's).
 */
#include "kcpu_impl.h"

#if SL_KCPU_X86

SL_TARGET_PUSH("avx2,fma,f16c")
#define MQ(name) name##_avx2
#define MQ_VNNI 0
#define MQ_W 8
#define MQ_RT 4
#include "matmul_q_x86.h"
SL_TARGET_POP

SL_TARGET_PUSH("avx2,fma,f16c,avxvnni")
#define MQ(name) name##_avxvnni
#define MQ_VNNI 1
#define MQ_W 8
#define MQ_RT 4
#include "matmul_q_x86.h"
SL_TARGET_POP

SL_TARGET_PUSH("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#define MQ(name) name##_avx512vnni
#define MQ_VNNI 2
#define MQ_W 16
#define MQ_RT 8
#include "matmul_q_x86.h"
SL_TARGET_POP

#else
typedef int sl__matmul_q_x86_unused; /* ISO C wants a declaration in every translation unit */
#endif
