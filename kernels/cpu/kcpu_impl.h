/*
 * kcpu_impl.h — what the CPU kernel files share with each other (and with their tests); nothing above
 * kernels/ includes it.
 *
 * One numeric recipe for every instruction set. Each kernel fixes the exact sequence of float operations
 * behind every output value: which lane accumulates which term, that products are accumulated with fused
 * multiply-adds, and the order in which lanes fold at the end. The scalar code is written in that lane
 * structure and the AVX2 / AVX-512 code performs the same operations on wider registers, so every path is
 * bit-identical to the scalar one. That is stronger than kcpu.h asks (a tolerance), and it buys two things:
 * a sequence generates the same tokens on any x86-64 machine, alone or batched, and the tests compare paths
 * with memcmp. The recipes:
 *
 *   canonical f32 dot (sl__dot_canon): 16 lane accumulators; lane l takes k = 16 i + l in order of i with
 *     acc = fma(a_k, b_k, acc); lanes fold as 16 -> 8 -> 4 -> 2 -> 1 by adding the upper half onto the lower
 *     (sl__fold16); the last n % 16 terms follow one by one with fma onto the folded sum.
 *   canonical sum (the sums of exps in softmax and attention, sl__exp_sum): the same with adds.
 *   quantized dot (matmul_q, Q4_0/Q4_1/Q8_0): per 32-block the exact int32 sum of its products isum_b, then
 *     acc = fma(d_w * d_x, (float)isum_b, acc), one chain over blocks; Q4_1 adds a separate chain
 *     ms = fma(m_w, s_x, ms), and the result is acc + ms. (The K family's recipes are in matmul_k.c.)
 *   exp (sl__exp_canon): Cephes' range reduction and degree-6 polynomial in fma form, 2^n applied as two
 *     exact power-of-two multiplies (so results down to the subnormal range need no special case).
 *
 * The price is that the scalar path calls fmaf() (one instruction where the CPU has FMA; a slower libm
 * routine on pre-2013 x86 parts, which are not a serving target).
 *
 * SIMD code is compiled with function-level target attributes (or target pragmas around a template's
 * instantiation), never per-file flags, so the library runs on any x86-64 and picks the path at run time;
 * on other architectures only the scalar code is built.
 */
#ifndef SL_KCPU_IMPL_H
#define SL_KCPU_IMPL_H

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "kcpu.h"

/* -DSL_KCPU_NO_SIMD builds the scalar code alone, as on other architectures (to check that build here). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SL_KCPU_NO_SIMD)
#define SL_KCPU_X86 1
#include <immintrin.h>
/* Feature sets of the paths. AVX2 always comes with FMA and F16C on real parts (Haswell onwards); the
 * detection in cpu_features.c checks all three anyway. */
#define SL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
/* Everything between push and pop, static helpers of an included template too, is compiled for target t
 * (the instantiating files matmul_k_x86.c and matmul_q_x86.c). */
#define SL_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define SL_TARGET_PUSH(t) SL_PRAGMA(clang attribute push(__attribute__((target(t))), apply_to = function))
#define SL_TARGET_POP _Pragma("clang attribute pop")
#else
#define SL_TARGET_PUSH(t) _Pragma("GCC push_options") SL_PRAGMA(GCC target(t))
#define SL_TARGET_POP _Pragma("GCC pop_options")
#endif
#else
#define SL_KCPU_X86 0
#endif

#define SL_INLINE static inline __attribute__((always_inline))
/* Register tiles loop over their rows and outputs with compile-time bounds; unrolled completely, their
 * accumulator arrays live in registers (GCC -O2 leaves such loops rolled and the arrays on the stack, which
 * made a tile 2x slower). */
#if defined(__clang__)
#define SL_UNROLL _Pragma("unroll")
#else
#define SL_UNROLL _Pragma("GCC unroll 16")
#endif

/* GGML's quantizers round x * id + 0.5 in two steps; a compiler that fuses them into one fma (GCC does in
 * GNU C mode on FMA targets) would change which way ties fall and break byte equality with llama.cpp. */
#if defined(__clang__)
#define SL_EXACT_FP
#else
#define SL_EXACT_FP __attribute__((optimize("fp-contract=off")))
#endif

/* ---- the dispatch state (cpu_features.c) ----------------------------------------------------------- */

/* Level in use; -1 until sl_kcpu_init ran. Read on every kernel call. */
extern atomic_int sl__kcpu_level_v;
/* 1 if the integer dot products may use VNNI (vpdpbusd) at the current level: AVX512-VNNI at the AVX-512
 * level, AVX-VNNI at the AVX2 level. The results are identical either way (the integer sums are exact). */
int sl__kcpu_use_vnni512(void);
int sl__kcpu_use_avxvnni(void);
/* Tests: allow (1) or forbid (0) VNNI so the pmaddubsw paths can be compared on a VNNI machine. */
void sl__kcpu_allow_vnni(int allow);

static inline sl_simd_level sl__kcpu_level(void) {
    int l = atomic_load_explicit(&sl__kcpu_level_v, memory_order_relaxed);
    if (l < 0) {
        sl_kcpu_init();
        l = atomic_load_explicit(&sl__kcpu_level_v, memory_order_relaxed);
    }
    return (sl_simd_level)l;
}

/* ---- canonical scalar recipes (the reference every SIMD path reproduces) ---------------------------- */

static inline float sl__fold8(const float a[8]) {
    float s4[4], s2[2];
    for (int l = 0; l < 4; l++) s4[l] = a[l] + a[l + 4];
    for (int l = 0; l < 2; l++) s2[l] = s4[l] + s4[l + 2];
    return s2[0] + s2[1];
}

static inline float sl__fold16(const float a[16]) {
    float s8[8];
    for (int l = 0; l < 8; l++) s8[l] = a[l] + a[l + 8];
    return sl__fold8(s8);
}

/* Sum of a[k] * b[k] for k in [n16, n) onto s, one fma at a time: the tail of the canonical dot. */
static inline float sl__dot_tail(const float *a, const float *b, int n16, int n, float s) {
    for (int k = n16; k < n; k++) s = fmaf(a[k], b[k], s);
    return s;
}

static inline float sl__dot_canon(const float *a, const float *b, int n) {
    float acc[16] = {0};
    int n16 = n & ~15;
    for (int k = 0; k < n16; k += 16)
        for (int l = 0; l < 16; l++) acc[l] = fmaf(a[k + l], b[k + l], acc[l]);
    return sl__dot_tail(a, b, n16, n, sl__fold16(acc));
}

/* exp clamps its argument to [-104, 89]: below, every result is under half the smallest subnormal (0 after
 * rounding); above, over FLT_MAX (inf). Inside, n = rint(x log2 e) stays in [-150, 129], so 2^n splits
 * into two factors 2^(n>>1), 2^(n - n>>1) with normal exponents. */
#define SL_EXP_LO (-104.0f)
#define SL_EXP_HI 89.0f
#define SL_EXP_LOG2E 1.44269504088896341f
#define SL_EXP_LN2_HI 0.693359375f     /* ln 2 split so n * LN2_HI is exact (Cephes C1) */
#define SL_EXP_LN2_LO (-2.12194440e-4f) /* ln 2 - LN2_HI (Cephes C2) */
#define SL_EXP_P0 1.9875691500e-4f       /* Cephes expf minimax coefficients on [-ln2/2, ln2/2] */
#define SL_EXP_P1 1.3981999507e-3f
#define SL_EXP_P2 8.3334519073e-3f
#define SL_EXP_P3 4.1665795894e-2f
#define SL_EXP_P4 1.6666665459e-1f
#define SL_EXP_P5 5.0000001201e-1f

static inline float sl__f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t sl__f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float sl__exp_canon(float x) {
    if (x != x) return x + x;
    x = x < SL_EXP_LO ? SL_EXP_LO : x;
    x = x > SL_EXP_HI ? SL_EXP_HI : x;
    float n = rintf(x * SL_EXP_LOG2E);
    float r = fmaf(n, -SL_EXP_LN2_HI, x);
    r = fmaf(n, -SL_EXP_LN2_LO, r);
    float z = r * r;
    float p = SL_EXP_P0;
    p = fmaf(p, r, SL_EXP_P1);
    p = fmaf(p, r, SL_EXP_P2);
    p = fmaf(p, r, SL_EXP_P3);
    p = fmaf(p, r, SL_EXP_P4);
    p = fmaf(p, r, SL_EXP_P5);
    float e = fmaf(p, z, r) + 1.0f;
    int ni = (int)n;
    int n1 = ni >= 0 ? ni / 2 : -((1 - ni) / 2); /* floor(ni / 2), as the vector code's arithmetic shift */
    int n2 = ni - n1;
    e *= sl__f32_from_bits((uint32_t)(n1 + 127) << 23);
    e *= sl__f32_from_bits((uint32_t)(n2 + 127) << 23);
    return e;
}

#if SL_KCPU_X86
/* sl__exp_canon on 8 lanes. max/min return their second operand when one is NaN, so NaN passes through. */
SL_TARGET_AVX2 SL_INLINE __m256 sl__exp8_avx2(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(SL_EXP_HI), _mm256_max_ps(_mm256_set1_ps(SL_EXP_LO), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(SL_EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-SL_EXP_LN2_HI), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-SL_EXP_LN2_LO), r);
    const __m256 z = _mm256_mul_ps(r, r);
    __m256 p = _mm256_set1_ps(SL_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SL_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SL_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SL_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SL_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SL_EXP_P5));
    __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, z, r), _mm256_set1_ps(1.0f));
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    e = _mm256_mul_ps(e, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23)));
    return _mm256_mul_ps(e, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23)));
}

/* AVX code must not call out-of-line plain (SSE-compiled) functions: GCC does not clear the upper register
 * state before such calls, and the callee's SSE instructions then pay a transition penalty (sl_fp16_to_f32
 * called from an AVX2 loop took ~50 ns per call here). Hence these F16C forms of the scalar conversions,
 * which give the same bits (tested on every fp16 value and on random floats). */
SL_TARGET_AVX2 SL_INLINE float sl__fp16_to_f32_f16c(sl_fp16_t h) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
SL_TARGET_AVX2 SL_INLINE sl_fp16_t sl__f32_to_fp16_f16c(float f) {
    return (sl_fp16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0);
}

/* Every AVX2 function called from plain code ends with this. GCC inserts vzeroupper itself, but only when
 * optimizing (-O2 and up): without it, a Debug build's SSE code after an AVX2 kernel ran ~80x slower here. */
#define SL_AVX2_LEAVE() _mm256_zeroupper()

/* Every function that runs AVX-512 code calls this before returning. Writing zmm16-31 (or their ymm/xmm
 * parts, which EVEX code uses freely) marks the upper register state dirty in a way vzeroupper does not
 * clear, and from then on every legacy-SSE instruction in the process (libc, libm, all code built without
 * AVX) runs up to ~50x slower: measured 3.4 -> 176 ns per scalar fma here after one AVX-512 tile. Zeroing
 * them with a VEX/EVEX zeroing idiom, then vzeroupper, restores the clean state. */
SL_TARGET_AVX512 SL_INLINE void sl__avx512_clean(void) {
    __asm__ volatile("vpxord %%xmm16, %%xmm16, %%xmm16\n\tvpxord %%xmm17, %%xmm17, %%xmm17\n\t"
                     "vpxord %%xmm18, %%xmm18, %%xmm18\n\tvpxord %%xmm19, %%xmm19, %%xmm19\n\t"
                     "vpxord %%xmm20, %%xmm20, %%xmm20\n\tvpxord %%xmm21, %%xmm21, %%xmm21\n\t"
                     "vpxord %%xmm22, %%xmm22, %%xmm22\n\tvpxord %%xmm23, %%xmm23, %%xmm23\n\t"
                     "vpxord %%xmm24, %%xmm24, %%xmm24\n\tvpxord %%xmm25, %%xmm25, %%xmm25\n\t"
                     "vpxord %%xmm26, %%xmm26, %%xmm26\n\tvpxord %%xmm27, %%xmm27, %%xmm27\n\t"
                     "vpxord %%xmm28, %%xmm28, %%xmm28\n\tvpxord %%xmm29, %%xmm29, %%xmm29\n\t"
                     "vpxord %%xmm30, %%xmm30, %%xmm30\n\tvpxord %%xmm31, %%xmm31, %%xmm31\n\t"
                     "vzeroupper" ::
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                           "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
                           "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
                           "xmm31");
}

/* Canonical 8 -> 1 fold of v's lanes, as sl__fold8. */
SL_TARGET_AVX2 SL_INLINE float sl__fold8_avx2(__m256 v) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

/* Canonical 16 -> 1 fold of lanes 0-7 (lo) and 8-15 (hi), as sl__fold16. */
SL_TARGET_AVX2 SL_INLINE float sl__fold16_avx2(__m256 lo, __m256 hi) { return sl__fold8_avx2(_mm256_add_ps(lo, hi)); }
#endif

/* ---- conversions and quantization helpers (convert.c) ----------------------------------------------- */

/* The largest |x[i]| of x[0..n), and in *max the x[i] it came from (the first one on ties), as GGML's
 * quantizers find them (convert.c, quant_k.c). */
static inline float sl__absmax(const float *x, int n, float *max) {
    float amax = 0;
    *max = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            *max = x[i];
        }
    }
    return amax;
}

/* Dequantizes elements [k0, k1) of one row (k0, k1 multiples of the block for quantized types). */
void sl__dequantize_range(int type, const void *row, int64_t k0, int64_t k1, float *dst);

/* Bytes of one packed block of a group (matmul_q.c). */
size_t sl__qp_block_bytes(int wtype);

/* ---- K-quants, Q5_0/Q5_1, IQ4_NL (quant_k.c, matmul_k.c, matmul_k_x86.c) -------------------------------- */

extern const int8_t sl__iq4nl_values[16]; /* IQ4_NL's levels */
/* 1 for Q2_K .. Q6_K (weights in 256-element super-blocks with Q8_K activations). */
int sl__is_kquant(int type);
/* A K-quant super-block as one shape: element e = (d * S[e / 16]) * (u[e] - K) - dmin * M[e / 16], with the
 * unsigned levels u in element order, K = sl__kquant_offset(type) (Q3_K 4, Q6_K 32, else 0), and a min term
 * only where sl__kquant_has_min(type) (Q2_K, Q4_K, Q5_K; M is 0 for the others). */
int sl__kquant_offset(int type);
int sl__kquant_has_min(int type);
void sl__k_scales(int type, const void *blk, int16_t S[16], int16_t M[16], float *d, float *dmin);
void sl__k_levels(int type, const void *blk, uint8_t u[256]);
/* The 5-bit levels 0..31 of a Q5_0 or Q5_1 block, element order. */
void sl__q5_levels(int type, const void *blk, uint8_t u[32]);
/* Dequantizes elements [k0, k1) of a row of Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K or Q8_K. */
void sl__dequantize_k_range(int type, const void *row, int64_t k0, int64_t k1, float *dst);
/* Quantizes a row to one of those types (GGML's quantizers); 0 if this file does not write it. */
int sl__quantize_k_row(int type, const float *src, void *dst, int64_t n);
/* 1 for the weight types whose products matmul_k.c computes (Q5_0, Q5_1, IQ4_NL, Q2_K .. Q6_K). */
int sl__matmul_k_handles(int wtype);
/* sl_k_matmul_q for those types: dispatcher (matmul_k.c) and the x86 variants (matmul_k_x86.c: maddubs,
 * AVX-VNNI, AVX512-VNNI). */
void sl__matmul_k(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const void *xq,
                  size_t xq_row_bytes, int n_rows, float *y, int ldy);
#if SL_KCPU_X86
void sl__matmul_k_avx2(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const void *xq,
                       size_t xq_row_bytes, int n_rows, float *y, int ldy);
void sl__matmul_k_avxvnni(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const void *xq,
                          size_t xq_row_bytes, int n_rows, float *y, int ldy);
void sl__matmul_k_avx512vnni(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in,
                             const void *xq, size_t xq_row_bytes, int n_rows, float *y, int ldy);
/* sl__dequantize_k_range on AVX2, the same bits; returns 0 (and does nothing) for types it leaves to it. */
int sl__dequantize_k_avx2(int type, const void *row, int64_t k0, int64_t k1, float *dst);
#endif

/* ---- shared pieces of ops.c ----------------------------------------------------------------------------- */

/* x[i] = exp(x[i] - max) for i < n; returns the canonical sum of the results. */
float sl__exp_sum(float *x, int n, float max);
/* x[i] *= s for i < n (vectorized; an exact product per element, so every level gives the same bits). */
void sl__scale(float *x, int n, float s);

/* ---- per-instruction-set entry points --------------------------------------------------------------- */
#if SL_KCPU_X86
/* matmul_q_x86.c: the whole sl_k_matmul_qp for one variant (maddubs, AVX-VNNI, AVX512-VNNI). */
void sl__matmul_qp_avx2(int wtype, const void *packed, int o0, int o1, int n_in, const void *xq,
                        size_t xq_row_bytes, int n_rows, float *y, int ldy);
void sl__matmul_qp_avxvnni(int wtype, const void *packed, int o0, int o1, int n_in, const void *xq,
                           size_t xq_row_bytes, int n_rows, float *y, int ldy);
void sl__matmul_qp_avx512vnni(int wtype, const void *packed, int o0, int o1, int n_in, const void *xq,
                              size_t xq_row_bytes, int n_rows, float *y, int ldy);
#endif

/* Register-tile kernels of the f32 product (matmul_f32.c, matmul_f32_x86.c): accumulate the 16 canonical
 * lanes of R x C dot products over k in [0, n16) (n16 a multiple of 16) onto acc[r * C + c][0..16), reading
 * x[r][k] and w[c][k]; the caller folds the lanes and adds the n % 16 tail. */
typedef void (*sl__f32_tile_fn)(const float *const *x, const float *const *w, int n16, float (*acc)[16]);
typedef struct sl__f32_tiles {
    int rt, ct;               /* full tile: rt rows x ct outputs */
    sl__f32_tile_fn fn[2][2]; /* [1 row or rt rows][1 output or ct outputs] */
} sl__f32_tiles;
#define SL_F32_TILE_MAX 16 /* rt * ct bound of every variant, for the acc arrays of callers */
#if SL_KCPU_X86
extern const sl__f32_tiles sl__f32_tiles_avx2;
extern const sl__f32_tiles sl__f32_tiles_avx512;
#endif
/* The tiles of the level in use. */
const sl__f32_tiles *sl__f32_tiles_get(void);

#endif /* SL_KCPU_IMPL_H */
