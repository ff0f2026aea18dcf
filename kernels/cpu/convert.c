/*
 * convert.c — element conversions: fp16/bf16 <-> f32, and rows of quantized blocks <-> f32.
 *
 * Quantization follows GGML's reference functions (quantize_row_q4_0_ref, _q4_1_ref, _q8_0_ref, _q8_1_ref)
 * operation for operation, so a row we write is byte-identical to what llama.cpp and the `gguf` Python
 * package write, and a row they wrote dequantizes here to the floats they would read. fp16 and bf16 round to
 * nearest even; NaNs convert as the F16C instructions convert them (quiet bit set, payload truncated), so
 * the scalar conversions and the F16C ones agree on every bit pattern.
 *
 * The AVX2 paths cover what runs per token: dequantizing weight tiles (exact mode, embedding rows) and
 * quantizing activation rows to Q8_0/Q8_1 (fast mode). Each gives the scalar result bit for bit: dequantizing
 * is exact arithmetic (a product of an 11-bit and an 8-bit significand, plus one rounded add for Q4_1), and
 * the Q8 quantizer performs the reference's float operations and its round-half-away-from-zero.
 */
#include <float.h>

#include "kcpu_impl.h"

/* ---- scalar element conversions ---------------------------------------------------------------------- */

float sl_fp16_to_f32(sl_fp16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t u;
    if (exp == 0x1f) { /* inf, or NaN made quiet */
        u = sign | 0x7f800000 | (man ? 0x400000 | (man << 13) : 0);
    } else if (exp == 0) { /* zero or subnormal: man * 2^-24, renormalized */
        if (!man) {
            u = sign;
        } else {
            uint32_t e = 113; /* float exponent field of 2^-14, the first normal half exponent */
            while (!(man & 0x400)) {
                man <<= 1;
                e--;
            }
            u = sign | (e << 23) | ((man & 0x3ff) << 13);
        }
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13); /* rebias 15 -> 127 */
    }
    return sl__f32_from_bits(u);
}

sl_fp16_t sl_f32_to_fp16(float f) {
    uint32_t x = sl__f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t a = x & 0x7fffffff;
    if (a > 0x7f800000) return (sl_fp16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff)); /* NaN, as F16C */
    if (a >= 0x477ff000) return (sl_fp16_t)(sign | 0x7c00); /* >= 65520 rounds past 65504: inf */
    if (a >= 0x38800000) {                                   /* normal half: rebias, round the 13 lost bits */
        uint32_t r = a - 0x38000000 + 0xfff + ((a >> 13) & 1);
        return (sl_fp16_t)(sign | (r >> 13));
    }
    /* subnormal half (or zero): round(f * 2^24) to nearest even, from the significand m * 2^(e - 150) */
    uint32_t e = a >> 23;
    if (e < 102) return (sl_fp16_t)sign; /* below 2^-25: rounds to zero (2^-25 itself is a tie to 0) */
    uint32_t m = (a & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e; /* 14 .. 24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return (sl_fp16_t)(sign | q);
}

float sl_bf16_to_f32(sl_bf16_t h) { return sl__f32_from_bits((uint32_t)h << 16); }

sl_bf16_t sl_f32_to_bf16(float f) { /* ggml_compute_fp32_to_bf16 */
    uint32_t u = sl__f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (sl_bf16_t)((u >> 16) | 64); /* NaN: force quiet */
    return (sl_bf16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

/* ---- dequantization ------------------------------------------------------------------------------------ */

static void sl_dequantize_scalar(int type, const void *row, int64_t k0, int64_t k1, float *dst) {
    int64_t n = k1 - k0;
    switch (type) {
    case SL_DTYPE_F32: memcpy(dst, (const float *)row + k0, (size_t)n * sizeof(float)); return;
    case SL_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = sl_fp16_to_f32(((const sl_fp16_t *)row)[k0 + i]);
        return;
    case SL_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = sl_bf16_to_f32(((const sl_bf16_t *)row)[k0 + i]);
        return;
    case SL_DTYPE_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, dst += 32) {
            const sl_block_q4_0 *blk = (const sl_block_q4_0 *)row + k0 / 32 + b;
            float d = sl_fp16_to_f32(blk->d);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((blk->qs[j] & 0x0f) - 8) * d;
                dst[j + 16] = (float)((blk->qs[j] >> 4) - 8) * d;
            }
        }
        return;
    case SL_DTYPE_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, dst += 32) {
            const sl_block_q4_1 *blk = (const sl_block_q4_1 *)row + k0 / 32 + b;
            float d = sl_fp16_to_f32(blk->d), m = sl_fp16_to_f32(blk->m);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)(blk->qs[j] & 0x0f) * d + m;
                dst[j + 16] = (float)(blk->qs[j] >> 4) * d + m;
            }
        }
        return;
    case SL_DTYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, dst += 32) {
            const sl_block_q8_0 *blk = (const sl_block_q8_0 *)row + k0 / 32 + b;
            float d = sl_fp16_to_f32(blk->d);
            for (int j = 0; j < 32; j++) dst[j] = (float)blk->qs[j] * d;
        }
        return;
    case SL_DTYPE_Q8_1:
    case SL_DTYPE_Q8_0S: /* the same layout: d, a 16-bit word, the levels */
        for (int64_t b = 0; b < n / 32; b++, dst += 32) {
            const sl_block_q8_1 *blk = (const sl_block_q8_1 *)row + k0 / 32 + b;
            float d = sl_fp16_to_f32(blk->d);
            for (int j = 0; j < 32; j++) dst[j] = (float)blk->qs[j] * d;
        }
        return;
    default: memset(dst, 0, (size_t)n * sizeof(float)); return;
    }
}

#if SL_KCPU_X86
/* 32 nibbles of a Q4 block as 32 bytes in element order: low nibbles (elements 0..15), then high ones. */
SL_TARGET_AVX2 SL_INLINE __m256i sl_nibbles_avx2(const uint8_t *qs) {
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Elements 8 i .. 8 i + 7 of a 32-byte vector of small ints as floats. */
SL_TARGET_AVX2 SL_INLINE __m256 sl_bytes_to_f32_avx2(__m256i v, int i, int is_signed) {
    __m128i half = i < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
    if (i & 1) half = _mm_srli_si128(half, 8);
    return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(half) : _mm256_cvtepu8_epi32(half));
}

SL_TARGET_AVX2 static void sl_dequantize_avx2_body(int type, const void *row, int64_t k0, int64_t k1, float *dst) {
    int64_t n = k1 - k0, i = 0;
    switch (type) {
    case SL_DTYPE_F16: {
        const sl_fp16_t *s = (const sl_fp16_t *)row + k0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
        for (; i < n; i++) dst[i] = sl__fp16_to_f32_f16c(s[i]);
        return;
    }
    case SL_DTYPE_BF16: {
        const sl_bf16_t *s = (const sl_bf16_t *)row + k0;
        for (; i + 8 <= n; i += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
        for (; i < n; i++) dst[i] = sl_bf16_to_f32(s[i]);
        return;
    }
    case SL_DTYPE_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, dst += 32) {
            const sl_block_q4_0 *blk = (const sl_block_q4_0 *)row + k0 / 32 + b;
            __m256 d = _mm256_set1_ps(sl__fp16_to_f32_f16c(blk->d));
            __m256i q = _mm256_sub_epi8(sl_nibbles_avx2(blk->qs), _mm256_set1_epi8(8));
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(dst + 8 * j, _mm256_mul_ps(sl_bytes_to_f32_avx2(q, j, 1), d));
        }
        return;
    case SL_DTYPE_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, dst += 32) {
            const sl_block_q4_1 *blk = (const sl_block_q4_1 *)row + k0 / 32 + b;
            __m256 d = _mm256_set1_ps(sl__fp16_to_f32_f16c(blk->d)), m = _mm256_set1_ps(sl__fp16_to_f32_f16c(blk->m));
            __m256i q = sl_nibbles_avx2(blk->qs);
            for (int j = 0; j < 4; j++) {
                __m256 qd = _mm256_mul_ps(sl_bytes_to_f32_avx2(q, j, 0), d); /* exact: 4-bit x 11-bit */
                _mm256_storeu_ps(dst + 8 * j, _mm256_add_ps(qd, m));
            }
        }
        return;
    case SL_DTYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, dst += 32) {
            const sl_block_q8_0 *blk = (const sl_block_q8_0 *)row + k0 / 32 + b;
            __m256 d = _mm256_set1_ps(sl__fp16_to_f32_f16c(blk->d));
            __m256i q = _mm256_loadu_si256((const __m256i *)blk->qs);
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(dst + 8 * j, _mm256_mul_ps(sl_bytes_to_f32_avx2(q, j, 1), d));
        }
        return;
    default: return; /* F32 and unknown types never come here */
    }
}

SL_TARGET_AVX2 static void sl_dequantize_avx2(int type, const void *row, int64_t k0, int64_t k1, float *dst) {
    sl_dequantize_avx2_body(type, row, k0, k1, dst);
    SL_AVX2_LEAVE();
}
#endif

void sl__dequantize_range(int type, const void *row, int64_t k0, int64_t k1, float *dst) {
    switch (type) { /* the types of quant_k.c */
    case SL_DTYPE_Q5_0: case SL_DTYPE_Q5_1: case SL_DTYPE_IQ4_NL: case SL_DTYPE_Q2_K: case SL_DTYPE_Q3_K:
    case SL_DTYPE_Q4_K: case SL_DTYPE_Q5_K: case SL_DTYPE_Q6_K: case SL_DTYPE_Q8_K:
        sl__dequantize_k_range(type, row, k0, k1, dst);
        return;
    default: break;
    }
#if SL_KCPU_X86
    if (sl__kcpu_level() >= SL_SIMD_AVX2 && type != SL_DTYPE_F32 && sl_dtype_block_bytes(type)) {
        sl_dequantize_avx2(type, row, k0, k1, dst);
        return;
    }
#endif
    sl_dequantize_scalar(type, row, k0, k1, dst);
}

void sl_k_dequantize_row(int type, const void *src, float *dst, int64_t n) { sl__dequantize_range(type, src, 0, n, dst); }

/* ---- quantization: GGML's reference functions ----------------------------------------------------------- */

SL_EXACT_FP static void sl_quantize_q4_0_ref(const float *x, sl_block_q4_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float max; /* the value of largest magnitude, first one on ties */
        sl__absmax(x, 32, &max);
        const float d = max / -8; /* max maps to -8, the one level without a positive twin */
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = sl_f32_to_fp16(d);
        for (int j = 0; j < 16; j++) {
            const float x0 = x[j] * id, x1 = x[j + 16] * id;
            const int xi0 = (int8_t)(x0 + 8.5f), xi1 = (int8_t)(x1 + 8.5f); /* truncation, as GGML */
            y[i].qs[j] = (uint8_t)((xi0 < 15 ? xi0 : 15) | ((xi1 < 15 ? xi1 : 15) << 4));
        }
    }
}

SL_EXACT_FP static void sl_quantize_q4_1_ref(const float *x, sl_block_q4_1 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15; /* 16 levels */
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = sl_f32_to_fp16(d);
        y[i].m = sl_f32_to_fp16(min);
        for (int j = 0; j < 16; j++) {
            const float x0 = (x[j] - min) * id, x1 = (x[j + 16] - min) * id;
            const int xi0 = (int8_t)(x0 + 0.5f), xi1 = (int8_t)(x1 + 0.5f);
            y[i].qs[j] = (uint8_t)((xi0 < 15 ? xi0 : 15) | ((xi1 < 15 ? xi1 : 15) << 4));
        }
    }
}

/* Q8_0, Q8_1 and Q8_0S share the rounding: d = amax / 127, q = roundf(x / d) (half away from zero). Q8_1 adds
 * s = d * sum(q), which lets a Q4_1 product account for the weights' offset m in one multiply; Q8_0S the exact
 * sum(q) (|sum| <= 32 * 127 fits an int16), the correction of Q4_0's level offset 8 and of Q8_0 weights
 * shifted to unsigned bytes. with_sum: 0 Q8_0, 1 Q8_1, 2 Q8_0S (the same layout as Q8_1). */
SL_EXACT_FP static void sl_quantize_q8_ref(const float *x, void *dst, int64_t nb, int with_sum) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / 127; /* the int8 range is used symmetrically: -127 .. 127 */
        const float id = d ? 1.0f / d : 0.0f;
        int8_t *qs;
        if (with_sum) {
            sl_block_q8_1 *y = (sl_block_q8_1 *)dst + i;
            y->d = sl_f32_to_fp16(d);
            qs = y->qs;
        } else {
            sl_block_q8_0 *y = (sl_block_q8_0 *)dst + i;
            y->d = sl_f32_to_fp16(d);
            qs = y->qs;
        }
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            qs[j] = (int8_t)roundf(x[j] * id);
            sum += qs[j];
        }
        if (with_sum == 1) ((sl_block_q8_1 *)dst)[i].s = sl_f32_to_fp16((float)sum * d);
        if (with_sum == 2) ((sl_block_q8_0s *)dst)[i].sum = (int16_t)sum;
    }
}

#if SL_KCPU_X86
SL_TARGET_AVX2 SL_INLINE float sl_hmax_avx2(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* roundf on 8 lanes: |v| = t + f with t = floor(|v|); t + 1 when f >= 0.5; v's sign put back. */
SL_TARGET_AVX2 SL_INLINE __m256i sl_roundf_avx2(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_andnot_ps(sign, v);
    __m256 t = _mm256_floor_ps(a);
    __m256 up = _mm256_cmp_ps(_mm256_sub_ps(a, t), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    t = _mm256_add_ps(t, _mm256_and_ps(up, _mm256_set1_ps(1.0f)));
    return _mm256_cvtps_epi32(_mm256_or_ps(t, _mm256_and_ps(v, sign))); /* integral: conversion is exact */
}

/* F16C rounds to nearest even and converts NaNs as sl_f32_to_fp16 does; returns the count converted. */
SL_TARGET_AVX2 static int64_t sl_quantize_f16_avx2(const float *src, sl_fp16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    SL_AVX2_LEAVE();
    return i;
}

SL_TARGET_AVX2 static void sl_quantize_q8_avx2(const float *x, void *dst, int64_t nb, int with_sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < nb; i++, x += 32) {
        __m256 v[4];
        for (int j = 0; j < 4; j++) v[j] = _mm256_loadu_ps(x + 8 * j);
        __m256 am = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                  _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        const float d = sl_hmax_avx2(am) / 127;
        const float id = d ? 1.0f / d : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int j = 0; j < 4; j++) q[j] = sl_roundf_avx2(_mm256_mul_ps(v[j], vid));
        /* packs work per 128-bit lane: the permute puts the four groups of 8 back in element order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        if (with_sum) {
            sl_block_q8_1 *y = (sl_block_q8_1 *)dst + i;
            y->d = sl__f32_to_fp16_f16c(d);
            _mm256_storeu_si256((__m256i *)y->qs, p);
            __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
            if (with_sum == 1)
                y->s = sl__f32_to_fp16_f16c((float)_mm_cvtsi128_si32(s4) * d);
            else
                ((sl_block_q8_0s *)y)->sum = (int16_t)_mm_cvtsi128_si32(s4);
        } else {
            sl_block_q8_0 *y = (sl_block_q8_0 *)dst + i;
            y->d = sl__f32_to_fp16_f16c(d);
            _mm256_storeu_si256((__m256i *)y->qs, p);
        }
    }
    SL_AVX2_LEAVE();
}
#endif

void sl_k_quantize_row(int type, const float *src, void *dst, int64_t n) {
    switch (type) {
    case SL_DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case SL_DTYPE_F16: {
        int64_t i = 0;
#if SL_KCPU_X86
        if (sl__kcpu_level() >= SL_SIMD_AVX2) i = sl_quantize_f16_avx2(src, dst, n);
#endif
        for (; i < n; i++) ((sl_fp16_t *)dst)[i] = sl_f32_to_fp16(src[i]);
        return;
    }
    case SL_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((sl_bf16_t *)dst)[i] = sl_f32_to_bf16(src[i]);
        return;
    case SL_DTYPE_Q4_0: sl_quantize_q4_0_ref(src, dst, n / 32); return;
    case SL_DTYPE_Q4_1: sl_quantize_q4_1_ref(src, dst, n / 32); return;
    case SL_DTYPE_Q8_0:
    case SL_DTYPE_Q8_1:
    case SL_DTYPE_Q8_0S: {
        const int with_sum = type == SL_DTYPE_Q8_1 ? 1 : type == SL_DTYPE_Q8_0S ? 2 : 0;
#if SL_KCPU_X86
        if (sl__kcpu_level() >= SL_SIMD_AVX2) {
            sl_quantize_q8_avx2(src, dst, n / 32, with_sum);
            return;
        }
#endif
        sl_quantize_q8_ref(src, dst, n / 32, with_sum);
        return;
    }
    default: /* the types of quant_k.c; any other is not a type we write (callers check sl_dtype_supported) */
        sl__quantize_k_row(type, src, dst, n);
        return;
    }
}
