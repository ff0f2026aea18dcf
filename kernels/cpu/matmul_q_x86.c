/*
 * matmul_q_x86.c — the x86 variants of sl_k_matmul_q, instantiated from the template matmul_q_x86.h:
 *   avx2       pmaddubsw + pmaddwd, 2 x 4 register tile (16 ymm registers)
 *   avxvnni    the same with AVX-VNNI's vpdpbusd (VEX; Alder Lake and later parts without AVX-512)
 *   avx512vnni vpdpbusd on ymm with EVEX, 4 x 4 tile (32 registers). The lanes stay 256 bits wide so the
 *              canonical 8-lane order (kcpu_impl.h) holds without a cross-lane shuffle per block.
 * All three give bit-identical results (the integer lanes are exact, the float work is the same).
 */
#include "kcpu_impl.h"

#if SL_KCPU_X86

/* Everything between push and pop, the template's static helpers included, is compiled for the target. */
#define SL_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define SL_TARGET_PUSH(t) SL_PRAGMA(clang attribute push(__attribute__((target(t))), apply_to = function))
#define SL_TARGET_POP _Pragma("clang attribute pop")
#else
#define SL_TARGET_PUSH(t) _Pragma("GCC push_options") SL_PRAGMA(GCC target(t))
#define SL_TARGET_POP _Pragma("GCC pop_options")
#endif

SL_TARGET_PUSH("avx2,fma,f16c")
#define MQ(name) name##_avx2
#define MQ_VNNI 0
#define MQ_RT 2
#include "matmul_q_x86.h"
#undef MQ
#undef MQ_VNNI
#undef MQ_RT
SL_TARGET_POP

SL_TARGET_PUSH("avx2,fma,f16c,avxvnni")
#define MQ(name) name##_avxvnni
#define MQ_VNNI 1
#define MQ_RT 2
#include "matmul_q_x86.h"
#undef MQ
#undef MQ_VNNI
#undef MQ_RT
SL_TARGET_POP

SL_TARGET_PUSH("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#define MQ(name) name##_avx512vnni
#define MQ_VNNI 2
#define MQ_RT 4
#include "matmul_q_x86.h"
#undef MQ
#undef MQ_VNNI
#undef MQ_RT
SL_TARGET_POP

#else
typedef int sl__matmul_q_x86_unused; /* ISO C wants a declaration in every translation unit */
#endif
