/*
 * matmul_k_x86.c — the x86 variants of the products of matmul_k.c (Q5_0, Q5_1, IQ4_NL, Q2_K .. Q6_K),
 * instantiated from the template matmul_k_x86.h, and the AVX2 dequantization of those types:
 *   avx2       pmaddubsw + pmaddwd on ymm, 4-row K-quant tile (16 registers)
 *   avxvnni    the same with AVX-VNNI's vpdpwssd / vpdpbusd (VEX; Alder Lake and later parts without AVX-512)
 *   avx512vnni zmm with two outputs per register and vpdpwssd, 8-row K-quant tile (32 registers)
 * All reproduce the scalar reference of matmul_k.c bit for bit (the integer lanes are exact, the float work per
 * (row, output) pair is the same sequence). The helpers before the instances work on one output's ymm data and
 * are shared by all three (a function for a subset of the caller's target inlines into it).
 */
#include "kcpu_impl.h"

#if SL_KCPU_X86

SL_TARGET_PUSH("avx2,fma,f16c")

static inline float kq_ldf(const uint8_t *p) {
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}

static inline uint16_t kq_ld16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Block bytes of each weight type, as constants the instances fold (sl_dtype_block_bytes is out of line). */
SL_INLINE size_t kq_wbs(const int T) {
    switch (T) {
    case SL_DTYPE_Q5_0: return sizeof(sl_block_q5_0);
    case SL_DTYPE_Q5_1: return sizeof(sl_block_q5_1);
    case SL_DTYPE_IQ4_NL: return sizeof(sl_block_iq4_nl);
    case SL_DTYPE_Q2_K: return sizeof(sl_block_q2_K);
    case SL_DTYPE_Q3_K: return sizeof(sl_block_q3_K);
    case SL_DTYPE_Q4_K: return sizeof(sl_block_q4_K);
    case SL_DTYPE_Q5_K: return sizeof(sl_block_q5_K);
    default: return sizeof(sl_block_q6_K);
    }
}

/* 32 nibbles of a 16-byte Q4-style array as bytes in element order (low nibbles, then high ones). */
SL_INLINE __m256i kq_nibbles(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m128i m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(t, 4), m), _mm_and_si128(t, m));
}

/* Bit i of qh (i < 32) as 0x10 in byte i, 0 elsewhere: Q5's fifth bit. */
SL_INLINE __m256i kq_q5_high(const uint8_t *qh4) {
    uint32_t qh;
    memcpy(&qh, qh4, sizeof qh);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), /* byte i <- byte i / 8 of qh */
                                              _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                                 0x0202020202020202, 0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

/* ---- the K-quants with Q8_K activations ---------------------------------------------------------------------- */

/* Sub-block scales S and mins M (per 16 elements) and d, dmin of a super-block, as sl__k_scales. */
SL_INLINE void kq_scales(const int T, const uint8_t *blk, int16_t S[16], int16_t M[16], float *d, float *dmin) {
    if (T == SL_DTYPE_Q2_K) {
        const sl_block_q2_K *b = (const sl_block_q2_K *)blk;
        for (int k = 0; k < 16; k++) {
            S[k] = b->scales[k] & 0xF;
            M[k] = b->scales[k] >> 4;
        }
        *d = sl__fp16_to_f32_f16c(b->d);
        *dmin = sl__fp16_to_f32_f16c(b->dmin);
    } else if (T == SL_DTYPE_Q3_K) {
        const sl_block_q3_K *b = (const sl_block_q3_K *)blk;
        for (int k = 0; k < 16; k++) {
            int lo = k < 8 ? b->scales[k] & 0xF : b->scales[k - 8] >> 4;
            int hi = (b->scales[8 + k % 4] >> (2 * (k / 4))) & 3;
            S[k] = (int16_t)((lo | (hi << 4)) - 32);
            M[k] = 0;
        }
        *d = sl__fp16_to_f32_f16c(b->d);
        *dmin = 0.0f;
    } else if (T == SL_DTYPE_Q4_K || T == SL_DTYPE_Q5_K) {
        const sl_block_q4_K *b = (const sl_block_q4_K *)blk;
        const uint8_t *q = b->scales;
        for (int j = 0; j < 8; j++) { /* get_scale_min_k4 */
            int sc, m;
            if (j < 4) {
                sc = q[j] & 63;
                m = q[j + 4] & 63;
            } else {
                sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
                m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
            }
            S[2 * j] = S[2 * j + 1] = (int16_t)sc;
            M[2 * j] = M[2 * j + 1] = (int16_t)m;
        }
        *d = sl__fp16_to_f32_f16c(b->d);
        *dmin = sl__fp16_to_f32_f16c(b->dmin);
    } else {
        const sl_block_q6_K *b = (const sl_block_q6_K *)blk;
        for (int k = 0; k < 16; k++) {
            S[k] = b->scales[k];
            M[k] = 0;
        }
        *d = sl__fp16_to_f32_f16c(b->d);
        *dmin = 0.0f;
    }
}

/* S and M of kq_scales as vectors of 16 int16 (Q2_K .. Q6_K), built from the block's bytes in
 * registers, and d, dmin. Going through kq_scales' arrays instead costs scalar work per super-block, a
 * 32-byte load of 16 just-stored int16 (which the CPU cannot forward from the stores) and two broadcasts
 * per chunk; measured here on a 1-row 2048 x 2048 product, this form and kq_chunk_scale took Q4_K from 225
 * to 162 us, Q5_K from 278 to 228, Q6_K from 250 to 222, Q2_K from 129 to 117. */
SL_INLINE void kq_scales_vec(const int T, const uint8_t *blk, __m256i *s16, __m256i *m16, float *d, float *dmin) {
    if (T == SL_DTYPE_Q2_K) {
        const sl_block_q2_K *b = (const sl_block_q2_K *)blk;
        const __m128i sc = _mm_loadu_si128((const __m128i *)b->scales);
        *s16 = _mm256_cvtepu8_epi16(_mm_and_si128(sc, _mm_set1_epi8(0xF)));
        *m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0xF)));
        *d = sl__fp16_to_f32_f16c(b->d);
        *dmin = sl__fp16_to_f32_f16c(b->dmin);
    } else if (T == SL_DTYPE_Q3_K) { /* 16 6-bit scales: low 4 bits in scales[0..7], high 2 in scales[8..11] */
        const sl_block_q3_K *b = (const sl_block_q3_K *)blk;
        uint32_t h;
        memcpy(&h, b->scales + 8, sizeof h);
        const __m128i m4 = _mm_set1_epi8(0x0f);
        const __m128i a = _mm_loadl_epi64((const __m128i *)b->scales);
        const __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(a, m4), _mm_and_si128(_mm_srli_epi16(a, 4), m4));
        /* scale k takes bits 2 (k / 4) .. 2 (k / 4) + 1 of scales[8 + k % 4]: dword k / 4 of h shifted by 2 (k / 4) */
        const __m128i hi = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32((int)h), _mm_setr_epi32(0, 2, 4, 6)),
                                         _mm_set1_epi8(3));
        *s16 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_or_si128(lo, _mm_slli_epi16(hi, 4))), _mm256_set1_epi16(32));
        *m16 = _mm256_setzero_si256();
        *d = sl__fp16_to_f32_f16c(b->d);
        *dmin = 0.0f;
    } else if (T == SL_DTYPE_Q6_K) {
        const sl_block_q6_K *b = (const sl_block_q6_K *)blk;
        *s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        *m16 = _mm256_setzero_si256();
        *d = sl__fp16_to_f32_f16c(b->d);
        *dmin = 0.0f;
    } else { /* Q4_K, Q5_K: get_scale_min_k4 on 32-bit words a, b, c = scales[0..3], [4..7], [8..11] */
        const sl_block_q4_K *bk = (const sl_block_q4_K *)blk;
        uint32_t a, b, c;
        memcpy(&a, bk->scales, 4), memcpy(&b, bk->scales + 4, 4), memcpy(&c, bk->scales + 8, 4);
        const uint32_t sc_lo = a & 0x3f3f3f3fu, sc_hi = (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4);
        const uint32_t m_lo = b & 0x3f3f3f3fu, m_hi = ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4);
        const __m128i v = _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)m_lo, (int)m_hi); /* sc[0..7], m[0..7] */
        *s16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(v, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));
        *m16 = _mm256_cvtepu8_epi16(
            _mm_shuffle_epi8(v, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
        *d = sl__fp16_to_f32_f16c(bk->d);
        *dmin = sl__fp16_to_f32_f16c(bk->dmin);
    }
}

/* pmaddwd's word operand for chunk v: S[2v] in the low 128 bits, S[2v + 1] in the high ones. */
SL_INLINE __m256i kq_chunk_scale(__m256i s16, const int v) {
    const __m256i pair = _mm256_permutevar8x32_epi32(s16, _mm256_set1_epi32(v)); /* (S[2v], S[2v+1]) x 8 */
    return _mm256_shuffle_epi8(pair, _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2,
                                                      3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3));
}

SL_TARGET_POP

/* ---- the variants ------------------------------------------------------------------------------------------- */

SL_TARGET_PUSH("avx2,fma,f16c")
#define KQ(name) name##_avx2
#define KQ_VNNI 0
#define KQ_W 1
#define KQ_RT 4
#include "matmul_k_x86.h"
SL_TARGET_POP

SL_TARGET_PUSH("avx2,fma,f16c,avxvnni")
#define KQ(name) name##_avxvnni
#define KQ_VNNI 1
#define KQ_W 1
#define KQ_RT 4
#include "matmul_k_x86.h"
SL_TARGET_POP

SL_TARGET_PUSH("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#define KQ(name) name##_avx512vnni
#define KQ_VNNI 2
#define KQ_W 2
#define KQ_RT 8
#include "matmul_k_x86.h"
SL_TARGET_POP

SL_TARGET_PUSH("avx2,fma,f16c")

/* ---- dequantization (exact mode's weight tiles, embedding rows) ---------------------------------------------- */

/* Elements 8 i .. 8 i + 7 of a 32-byte vector of levels as floats, minus k (exact: small integers). */
SL_INLINE __m256 kq_levels_f32(__m256i v, int i, int k, int is_signed) {
    __m128i half = i < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
    if (i & 1) half = _mm_srli_si128(half, 8);
    const __m256i w = is_signed ? _mm256_cvtepi8_epi32(half) : _mm256_cvtepu8_epi32(half);
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(w, _mm256_set1_epi32(k)));
}

/* sl__dequantize_k_range's float operations on 8 lanes: (d * S) * (u - K) [- dmin * M], q * d [+ m]. */
SL_INLINE void kq_dequant_block(const int T, const uint8_t *blk, float *dst) {
    if (T == SL_DTYPE_Q5_0 || T == SL_DTYPE_Q5_1 || T == SL_DTYPE_IQ4_NL) {
        const sl_block_q5_1 *b1 = (const sl_block_q5_1 *)blk;
        const sl_block_q5_0 *b0 = (const sl_block_q5_0 *)blk;
        const sl_block_iq4_nl *bi = (const sl_block_iq4_nl *)blk;
        __m256i q;
        if (T == SL_DTYPE_IQ4_NL)
            q = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)sl__iq4nl_values)),
                                    kq_nibbles(bi->qs));
        else if (T == SL_DTYPE_Q5_0) q = _mm256_or_si256(kq_nibbles(b0->qs), kq_q5_high(b0->qh));
        else q = _mm256_or_si256(kq_nibbles(b1->qs), kq_q5_high(b1->qh));
        const __m256 d = _mm256_set1_ps(sl__fp16_to_f32_f16c(T == SL_DTYPE_Q5_1 ? b1->d : b0->d));
        for (int i = 0; i < 4; i++) {
            if (T == SL_DTYPE_Q5_1) {
                const __m256 m = _mm256_set1_ps(sl__fp16_to_f32_f16c(b1->m));
                _mm256_storeu_ps(dst + 8 * i, _mm256_add_ps(_mm256_mul_ps(kq_levels_f32(q, i, 0, 0), d), m));
            } else if (T == SL_DTYPE_Q5_0) {
                _mm256_storeu_ps(dst + 8 * i, _mm256_mul_ps(kq_levels_f32(q, i, 16, 0), d));
            } else {
                _mm256_storeu_ps(dst + 8 * i, _mm256_mul_ps(d, kq_levels_f32(q, i, 0, 1)));
            }
        }
        return;
    }
    const int K = T == SL_DTYPE_Q3_K ? 4 : T == SL_DTYPE_Q6_K ? 32 : 0;
    const int has_min = T == SL_DTYPE_Q2_K || T == SL_DTYPE_Q4_K || T == SL_DTYPE_Q5_K;
    int16_t S[16], M[16];
    float d, dmin;
    kq_scales(T, blk, S, M, &d, &dmin);
    SL_UNROLL
    for (int v = 0; v < 8; v++) {
        const __m256i u = kq_chunk_avx2(T, &blk, v);
        for (int i = 0; i < 4; i++) {
            const int s = 2 * v + i / 2; /* the 16-element sub-block of lanes 8 i .. 8 i + 7 */
            const __m256 y = _mm256_mul_ps(_mm256_set1_ps(d * (float)S[s]), kq_levels_f32(u, i, K, 0));
            _mm256_storeu_ps(dst + 32 * v + 8 * i,
                             has_min ? _mm256_sub_ps(y, _mm256_set1_ps(dmin * (float)M[s])) : y);
        }
    }
}

#define KQ_DEQ(T, TN, BE)                                                                                  \
    static void kq_dequant_##TN(const uint8_t *p, size_t nb, float *dst) {                                 \
        for (size_t b = 0; b < nb; b++) kq_dequant_block(T, p + b * kq_wbs(T), dst + b * (BE));            \
    }
KQ_DEQ(SL_DTYPE_Q5_0, q5_0, 32)
KQ_DEQ(SL_DTYPE_Q5_1, q5_1, 32)
KQ_DEQ(SL_DTYPE_IQ4_NL, iq4_nl, 32)
KQ_DEQ(SL_DTYPE_Q2_K, q2_K, 256)
KQ_DEQ(SL_DTYPE_Q3_K, q3_K, 256)
KQ_DEQ(SL_DTYPE_Q4_K, q4_K, 256)
KQ_DEQ(SL_DTYPE_Q5_K, q5_K, 256)
KQ_DEQ(SL_DTYPE_Q6_K, q6_K, 256)
#undef KQ_DEQ

int sl__dequantize_k_avx2(int type, const void *row, int64_t k0, int64_t k1, float *dst) {
    const int be = sl__is_kquant(type) ? 256 : 32;
    const uint8_t *p = (const uint8_t *)row + (size_t)(k0 / be) * kq_wbs(type);
    const size_t nb = (size_t)((k1 - k0) / be);
    switch (type) {
    case SL_DTYPE_Q5_0: kq_dequant_q5_0(p, nb, dst); break;
    case SL_DTYPE_Q5_1: kq_dequant_q5_1(p, nb, dst); break;
    case SL_DTYPE_IQ4_NL: kq_dequant_iq4_nl(p, nb, dst); break;
    case SL_DTYPE_Q2_K: kq_dequant_q2_K(p, nb, dst); break;
    case SL_DTYPE_Q3_K: kq_dequant_q3_K(p, nb, dst); break;
    case SL_DTYPE_Q4_K: kq_dequant_q4_K(p, nb, dst); break;
    case SL_DTYPE_Q5_K: kq_dequant_q5_K(p, nb, dst); break;
    case SL_DTYPE_Q6_K: kq_dequant_q6_K(p, nb, dst); break;
    default: return 0; /* Q8_K: the scalar code */
    }
    SL_AVX2_LEAVE();
    return 1;
}

SL_TARGET_POP

#else
typedef int sl__matmul_k_x86_unused; /* ISO C wants a declaration in every translation unit */
#endif
