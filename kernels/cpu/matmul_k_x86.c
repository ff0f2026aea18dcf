/*
 * matmul_k_x86.c — the AVX2 variant of the products of matmul_k.c (Q5_0, Q5_1, IQ4_NL, Q2_K .. Q6_K).
 *
 * It performs the recipe written out in matmul_k.c on 8-lane vectors: pmaddubsw + pmaddwd give exactly the
 * recipe's int32 lanes (for the K-quants with the chunk's two sub-block scales as pmaddwd's word operand),
 * and the float work per (row, output) pair is the same sequence of multiplies and fused multiply-adds, so
 * the results equal the scalar reference bit for bit, whatever rows shared a tile. The AVX-512 level runs
 * this code too.
 *
 * Register tiles: 4 activation rows x 1 weight row (each weight chunk unpacked once for the 4 rows), or for
 * the K-quants 1 row x 4 weight rows when fewer than 4 rows remain (decode: four independent chains). Smaller
 * than the Q4/Q8 tiles of matmul_q_x86.h (4 x 4): each (row, output) pair holds three vectors here (integer
 * lanes, scale and min accumulators), and 16 ymm registers hold four pairs and the operands.
 */
#include "kcpu_impl.h"

#if SL_KCPU_X86

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#define KQ_RT 4 /* activation rows per tile */

static inline float kq_fold8(__m256 v) { /* sl__fold8 */
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

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

/* lanes j: sum over i in 4j..4j+3 of u[i] * s[i] (u unsigned bytes, s signed bytes, no saturation here) */
SL_INLINE __m256i kq_dot4(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
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

/* ---- the 32-element types: Q5_0, IQ4_NL (Q8_0 activations) and Q5_1 (Q8_1) -------------------------------- */

SL_INLINE void kq_tile32(const int T, const int R, const uint8_t *w, const uint8_t *const *xr, int nb, float *y,
                         int ldy) {
    const size_t wbs = kq_wbs(T);
    const size_t xbs = T == SL_DTYPE_Q5_1 ? sizeof(sl_block_q8_1) : sizeof(sl_block_q8_0);
    const size_t xqo = T == SL_DTYPE_Q5_1 ? 4 : 2; /* where the quants start in an activation block */
    __m256 acc[KQ_RT];
    __m128 ms[KQ_RT]; /* Q5_1: lane 0 is the chain fma(m_w, s_x, ms) */
    SL_UNROLL
    for (int r = 0; r < R; r++) {
        acc[r] = _mm256_setzero_ps();
        ms[r] = _mm_setzero_ps();
    }
    const __m256i kv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)sl__iq4nl_values));
    for (int b = 0; b < nb; b++, w += wbs) {
        __m256i wq; /* Q5: unsigned levels; IQ4_NL: signed values */
        float dw, mw = 0.0f;
        if (T == SL_DTYPE_IQ4_NL) {
            const sl_block_iq4_nl *blk = (const sl_block_iq4_nl *)w;
            wq = _mm256_shuffle_epi8(kv, kq_nibbles(blk->qs));
            dw = sl__fp16_to_f32_f16c(blk->d);
        } else if (T == SL_DTYPE_Q5_0) {
            const sl_block_q5_0 *blk = (const sl_block_q5_0 *)w;
            wq = _mm256_or_si256(kq_nibbles(blk->qs), kq_q5_high(blk->qh));
            dw = sl__fp16_to_f32_f16c(blk->d);
        } else {
            const sl_block_q5_1 *blk = (const sl_block_q5_1 *)w;
            wq = _mm256_or_si256(kq_nibbles(blk->qs), kq_q5_high(blk->qh));
            dw = sl__fp16_to_f32_f16c(blk->d);
            mw = sl__fp16_to_f32_f16c(blk->m);
        }
        const __m256i wabs = _mm256_abs_epi8(wq); /* IQ4_NL: |w| x (x with w's sign), |w| <= 127 */
        SL_UNROLL
        for (int r = 0; r < R; r++) {
            const uint8_t *xb = xr[r] + (size_t)b * xbs;
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xb + xqo));
            const float dx = sl__fp16_to_f32_f16c(kq_ld16(xb));
            __m256i isum;
            if (T == SL_DTYPE_IQ4_NL) isum = kq_dot4(wabs, _mm256_sign_epi8(xv, wq));
            else if (T == SL_DTYPE_Q5_0) isum = _mm256_sub_epi32(kq_dot4(wq, xv), kq_dot4(_mm256_set1_epi8(16), xv));
            else isum = kq_dot4(wq, xv);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), _mm256_cvtepi32_ps(isum), acc[r]);
            if (T == SL_DTYPE_Q5_1)
                ms[r] = _mm_fmadd_ss(_mm_set_ss(mw), _mm_set_ss(sl__fp16_to_f32_f16c(kq_ld16(xb + 2))), ms[r]);
        }
    }
    SL_UNROLL
    for (int r = 0; r < R; r++) {
        const float s = kq_fold8(acc[r]);
        y[(size_t)r * ldy] = T == SL_DTYPE_Q5_1 ? s + _mm_cvtss_f32(ms[r]) : s;
    }
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

/* S and M of kq_scales as vectors of 16 int16 (Q2_K, Q4_K, Q5_K, Q6_K), built from the block's bytes in
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

/* The unsigned levels of elements 32 v .. 32 v + 31 of a super-block (the layouts are in kdtype.h). */
SL_INLINE __m256i kq_chunk(const int T, const uint8_t *blk, const int v) {
    const __m256i m2 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const int h = v / 4, c = v % 4;
    if (T == SL_DTYPE_Q2_K || T == SL_DTYPE_Q3_K) {
        const uint8_t *qs = T == SL_DTYPE_Q2_K ? ((const sl_block_q2_K *)blk)->qs : ((const sl_block_q3_K *)blk)->qs;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
        __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * c), m2); /* 16-bit shifts, then byte masks */
        if (T == SL_DTYPE_Q3_K) {
            const __m256i hm = _mm256_loadu_si256((const __m256i *)((const sl_block_q3_K *)blk)->hmask);
            const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + c), one);
            u = _mm256_or_si256(u, _mm256_slli_epi16(hb, 2));
        }
        return u;
    }
    if (T == SL_DTYPE_Q4_K || T == SL_DTYPE_Q5_K) {
        const uint8_t *qs = T == SL_DTYPE_Q4_K ? ((const sl_block_q4_K *)blk)->qs : ((const sl_block_q5_K *)blk)->qs;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * (v / 2)));
        __m256i u = _mm256_and_si256(v % 2 ? _mm256_srli_epi16(q, 4) : q, m4);
        if (T == SL_DTYPE_Q5_K) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)((const sl_block_q5_K *)blk)->qh);
            const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(qh, v), one);
            u = _mm256_or_si256(u, _mm256_slli_epi16(hb, 4));
        }
        return u;
    }
    /* Q6_K */
    const sl_block_q6_K *b = (const sl_block_q6_K *)blk;
    const __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (c & 1)));
    const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
    const __m256i lo = _mm256_and_si256(c < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), m2);
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
}

/* R activation rows x C weight rows (R * C <= KQ_RT): the recipe of matmul_k.c for each pair. */
SL_INLINE void kq_tile256(const int T, const int R, const int C, const uint8_t *const *wr, const uint8_t *const *xr,
                          int nb, float *y, int ldy) {
    const size_t wbs = kq_wbs(T), xbs = sizeof(sl_block_q8_K);
    const size_t xqo = offsetof(sl_block_q8_K, qs), xso = offsetof(sl_block_q8_K, bsums);
    const int K = T == SL_DTYPE_Q3_K ? 4 : T == SL_DTYPE_Q6_K ? 32 : 0; /* sl__kquant_offset */
    const int has_min = T == SL_DTYPE_Q2_K || T == SL_DTYPE_Q4_K || T == SL_DTYPE_Q5_K;
    __m256 acc[KQ_RT], macc[KQ_RT]; /* pair (r, c) at r * C + c */
    SL_UNROLL
    for (int i = 0; i < R * C; i++) acc[i] = macc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        float dw[KQ_RT], dmin[KQ_RT];
        __m256i isum[KQ_RT], s16[KQ_RT], m16[KQ_RT];
        SL_UNROLL
        for (int c = 0; c < C; c++) {
            if (T == SL_DTYPE_Q3_K) { /* its packed 6-bit scales: the scalar unpacking */
                int16_t S[16], M[16];
                kq_scales(T, wr[c] + (size_t)b * wbs, S, M, &dw[c], &dmin[c]);
                s16[c] = _mm256_loadu_si256((const __m256i *)S);
                m16[c] = _mm256_setzero_si256();
            } else {
                kq_scales_vec(T, wr[c] + (size_t)b * wbs, &s16[c], &m16[c], &dw[c], &dmin[c]);
            }
        }
        SL_UNROLL
        for (int i = 0; i < R * C; i++) isum[i] = _mm256_setzero_si256();
        SL_UNROLL
        for (int v = 0; v < 8; v++) {
            __m256i xv[KQ_RT];
            SL_UNROLL
            for (int r = 0; r < R; r++)
                xv[r] = _mm256_loadu_si256((const __m256i *)(xr[r] + (size_t)b * xbs + xqo + 32 * v));
            SL_UNROLL
            for (int c = 0; c < C; c++) {
                const __m256i u = kq_chunk(T, wr[c] + (size_t)b * wbs, v);
                const __m256i sc = kq_chunk_scale(s16[c], v);
                SL_UNROLL
                for (int r = 0; r < R; r++)
                    isum[r * C + c] =
                        _mm256_add_epi32(isum[r * C + c], _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv[r]), sc));
            }
        }
        SL_UNROLL
        for (int r = 0; r < R; r++) {
            const uint8_t *xb = xr[r] + (size_t)b * xbs;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(xb + xso));
            const float dx = kq_ldf(xb);
            SL_UNROLL
            for (int c = 0; c < C; c++) {
                const int i = r * C + c;
                if (K)
                    isum[i] = _mm256_sub_epi32(isum[i],
                                               _mm256_mullo_epi32(_mm256_madd_epi16(bs, s16[c]), _mm256_set1_epi32(K)));
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw[c] * dx), _mm256_cvtepi32_ps(isum[i]), acc[i]);
                if (has_min)
                    macc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dmin[c] * dx),
                                              _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, m16[c])), macc[i]);
            }
        }
    }
    SL_UNROLL
    for (int r = 0; r < R; r++)
        SL_UNROLL
        for (int c = 0; c < C; c++) {
            const int i = r * C + c;
            y[(size_t)r * ldy + c] = has_min ? kq_fold8(acc[i]) - kq_fold8(macc[i]) : kq_fold8(acc[i]);
        }
}

/* One out-of-line instance per (type, tile shape), so each keeps its accumulators in registers. Shapes:
 * r4 = KQ_RT rows x 1 output, c4 = 1 row x KQ_RT outputs (decode: independent chains for the out-of-order
 * core), r1 = 1 x 1. The 32-element types have r4 and r1 only. */
typedef void (*kq_tile_fn)(const uint8_t *const *wr, const uint8_t *const *xr, int nb, float *y, int ldy);
#define KQ_INSTANCES32(T, TN)                                                                              \
    static void kq_##TN##_r4(const uint8_t *const *wr, const uint8_t *const *xr, int nb, float *y, int ldy) { \
        kq_tile32(T, KQ_RT, wr[0], xr, nb, y, ldy);                                                        \
    }                                                                                                      \
    static void kq_##TN##_r1(const uint8_t *const *wr, const uint8_t *const *xr, int nb, float *y, int ldy) { \
        kq_tile32(T, 1, wr[0], xr, nb, y, ldy);                                                            \
    }
#define KQ_INSTANCES256(T, TN)                                                                             \
    static void kq_##TN##_r4(const uint8_t *const *wr, const uint8_t *const *xr, int nb, float *y, int ldy) { \
        kq_tile256(T, KQ_RT, 1, wr, xr, nb, y, ldy);                                                       \
    }                                                                                                      \
    static void kq_##TN##_c4(const uint8_t *const *wr, const uint8_t *const *xr, int nb, float *y, int ldy) { \
        kq_tile256(T, 1, KQ_RT, wr, xr, nb, y, ldy);                                                       \
    }                                                                                                      \
    static void kq_##TN##_r1(const uint8_t *const *wr, const uint8_t *const *xr, int nb, float *y, int ldy) { \
        kq_tile256(T, 1, 1, wr, xr, nb, y, ldy);                                                           \
    }
KQ_INSTANCES32(SL_DTYPE_Q5_0, q5_0)
KQ_INSTANCES32(SL_DTYPE_Q5_1, q5_1)
KQ_INSTANCES32(SL_DTYPE_IQ4_NL, iq4_nl)
KQ_INSTANCES256(SL_DTYPE_Q2_K, q2_K)
KQ_INSTANCES256(SL_DTYPE_Q3_K, q3_K)
KQ_INSTANCES256(SL_DTYPE_Q4_K, q4_K)
KQ_INSTANCES256(SL_DTYPE_Q5_K, q5_K)
KQ_INSTANCES256(SL_DTYPE_Q6_K, q6_K)
#undef KQ_INSTANCES32
#undef KQ_INSTANCES256

#define KQ_PF_GROUPS 4 /* prefetch distance in groups of KQ_RT weight rows, as matmul_q_x86.h's MQ_PF_TILES */

void sl__matmul_k_avx2(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const void *xq,
                       size_t xq_row_bytes, int n_rows, float *y, int ldy) {
    kq_tile_fn r4, r1, c4 = NULL; /* c4: NULL for the 32-element types */
#define KQ_PICK32(TN) r4 = kq_##TN##_r4, r1 = kq_##TN##_r1
#define KQ_PICK256(TN) r4 = kq_##TN##_r4, r1 = kq_##TN##_r1, c4 = kq_##TN##_c4
    switch (wtype) {
    case SL_DTYPE_Q5_0: KQ_PICK32(q5_0); break;
    case SL_DTYPE_Q5_1: KQ_PICK32(q5_1); break;
    case SL_DTYPE_IQ4_NL: KQ_PICK32(iq4_nl); break;
    case SL_DTYPE_Q2_K: KQ_PICK256(q2_K); break;
    case SL_DTYPE_Q3_K: KQ_PICK256(q3_K); break;
    case SL_DTYPE_Q4_K: KQ_PICK256(q4_K); break;
    case SL_DTYPE_Q5_K: KQ_PICK256(q5_K); break;
    case SL_DTYPE_Q6_K: KQ_PICK256(q6_K); break;
    default: return;
    }
#undef KQ_PICK32
#undef KQ_PICK256
    const int nb = n_in / (sl__is_kquant(wtype) ? 256 : 32);
    const uint8_t *W = (const uint8_t *)w, *X = (const uint8_t *)xq;
    /* Groups of KQ_RT outputs outermost: their weight rows stay in L1 while every activation row passes; the
     * group KQ_PF_GROUPS ahead is requested now, for weights streaming from DRAM (decode). */
    for (int o = o0; o < o1; o += KQ_RT) {
        const int nc = o1 - o < KQ_RT ? o1 - o : KQ_RT;
        const uint8_t *wr[KQ_RT];
        for (int c = 0; c < nc; c++) wr[c] = W + (size_t)(o + c) * w_row_bytes;
        if (o + (KQ_PF_GROUPS + 1) * KQ_RT <= o1) {
            const char *pf = (const char *)(W + (size_t)(o + KQ_PF_GROUPS * KQ_RT) * w_row_bytes);
            for (size_t at = 0; at < KQ_RT * w_row_bytes; at += 64) _mm_prefetch(pf + at, _MM_HINT_T0);
        }
        for (int r = 0; r < n_rows;) {
            const uint8_t *xr[KQ_RT];
            float *yt = y + (size_t)r * ldy + o;
            if (n_rows - r >= KQ_RT) {
                for (int i = 0; i < KQ_RT; i++) xr[i] = X + (size_t)(r + i) * xq_row_bytes;
                for (int c = 0; c < nc; c++) r4(wr + c, xr, nb, yt + c, ldy);
                r += KQ_RT;
            } else {
                xr[0] = X + (size_t)r * xq_row_bytes;
                if (c4 && nc == KQ_RT) c4(wr, xr, nb, yt, ldy);
                else
                    for (int c = 0; c < nc; c++) r1(wr + c, xr, nb, yt + c, ldy);
                r += 1;
            }
        }
    }
    SL_AVX2_LEAVE();
}

#undef KQ_PF_GROUPS

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
        const __m256i u = kq_chunk(T, blk, v);
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

#undef KQ_RT

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else
typedef int sl__matmul_k_x86_unused; /* ISO C wants a declaration in every translation unit */
#endif
