/*
 * matmul_k_x86.h — template of the x86 products of matmul_k.c (Q5_0, Q5_1, IQ4_NL, Q2_K .. Q6_K);
 * matmul_k_x86.c includes it once per variant, inside a target region, after defining
 * (the template undefines them at its end):
 *   KQ(name)  the variant's suffix for every name defined here
 *   KQ_VNNI   0: pmaddubsw + pmaddwd + add (AVX2); 1: pmaddubsw + vpdpwssd, VEX (AVX-VNNI);
 *             2: pmaddubsw + vpdpwssd, EVEX (AVX512-VNNI); the 32-element types use vpdpbusd under 1 and 2
 *   KQ_W      outputs per vector in the K-quant tiles: 1 (ymm, 8 lanes) or 2 (zmm: output c in lanes 0-7,
 *             output c + 1 in lanes 8-15, each half holding that output's 8 canonical lanes)
 *   KQ_RT     rows of the multi-row K-quant tile (a half-height tile takes the rows left over)
 *
 * Every variant performs the recipe written out in matmul_k.c: pmaddubsw gives exact 16-bit sums of element
 * pairs (u <= 63, |q| <= 128: under 2^15), and pmaddwd or vpdpwssd with the chunk's two sub-block scales as
 * the word operand turns them into the recipe's exact int32 lanes; the float work per (row, output) pair is
 * the same multiplies and fused multiply-adds in the same order, so every variant equals the scalar
 * reference bit for bit, whatever tile a pair went through.
 *
 * Why zmm pairs outputs rather than rows: the activation chunk is broadcast to both halves with one load
 * (vbroadcasti64x4 is a load, no shuffle), and a single activation row (decode) still fills the register.
 * Zmm integer multiplies issue on two ports here, as ymm ones do, so each one does twice the work; the 32
 * registers hold the accumulators of KQ_RT = 8 rows x 2 outputs (integer lanes, scale and min chains).
 *
 * Tiles (K-quants): m = KQ_RT rows x KQ_W outputs, h = KQ_RT / 2 rows x KQ_W outputs, s = 1 row x KQ_CT
 * outputs (decode: KQ_CT / KQ_W independent chains for the out-of-order core), 1 = 1 row x KQ_W outputs. A
 * zmm tile given one output (the last of an odd range) computes it in both halves and stores one. The
 * 32-element types keep ymm tiles (KQ_RT32 rows x 1 output, or 1 x 1) in every variant.
 */

#define KQ_CT 4   /* outputs per group: the 1-row tile's width, and the weight rows kept in L1 together */
#define KQ_RT32 4 /* rows of the 32-element types' multi-row tile */

#if KQ_W == 2
typedef __m512i KQ(kq_vi);
typedef __m512 KQ(kq_vf);
#define KV_AND _mm512_and_si512
#define KV_OR _mm512_or_si512
#define KV_SRLI16 _mm512_srli_epi16
#define KV_SLLI16 _mm512_slli_epi16
#define KV_SLLI32 _mm512_slli_epi32
#define KV_SET1_8 _mm512_set1_epi8
#define KV_ADD32 _mm512_add_epi32
#define KV_SUB32 _mm512_sub_epi32
#define KV_MADD _mm512_madd_epi16
#define KV_MADDUBS _mm512_maddubs_epi16
#define KV_ZERO_I _mm512_setzero_si512
#define KV_ZERO_F _mm512_setzero_ps
#define KV_CVT _mm512_cvtepi32_ps
#define KV_FMA _mm512_fmadd_ps
#define KV_MUL _mm512_mul_ps
#define KV_SET1_PS _mm512_set1_ps
#else
typedef __m256i KQ(kq_vi);
typedef __m256 KQ(kq_vf);
#define KV_AND _mm256_and_si256
#define KV_OR _mm256_or_si256
#define KV_SRLI16 _mm256_srli_epi16
#define KV_SLLI16 _mm256_slli_epi16
#define KV_SLLI32 _mm256_slli_epi32
#define KV_SET1_8 _mm256_set1_epi8
#define KV_ADD32 _mm256_add_epi32
#define KV_SUB32 _mm256_sub_epi32
#define KV_MADD _mm256_madd_epi16
#define KV_MADDUBS _mm256_maddubs_epi16
#define KV_ZERO_I _mm256_setzero_si256
#define KV_ZERO_F _mm256_setzero_ps
#define KV_CVT _mm256_cvtepi32_ps
#define KV_FMA _mm256_fmadd_ps
#define KV_MUL _mm256_mul_ps
#define KV_SET1_PS _mm256_set1_ps
#endif

/* 32 bytes at byte offset off of each of the KQ_W weight blocks blk[0..KQ_W), one per 256-bit half. */
SL_INLINE KQ(kq_vi) KQ(kq_wload)(const uint8_t *const *blk, size_t off) {
#if KQ_W == 2
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(blk[0] + off))),
                              _mm256_loadu_si256((const __m256i *)(blk[1] + off)), 1);
#else
    return _mm256_loadu_si256((const __m256i *)(blk[0] + off));
#endif
}

/* 32 activation bytes, in every 256-bit half. */
SL_INLINE KQ(kq_vi) KQ(kq_xload)(const uint8_t *p) {
#if KQ_W == 2
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
#else
    return _mm256_loadu_si256((const __m256i *)p);
#endif
}

/* One 256-bit value per output, output i in half i. */
SL_INLINE KQ(kq_vi) KQ(kq_wjoin)(const __m256i *v) {
#if KQ_W == 2
    return _mm512_inserti64x4(_mm512_castsi256_si512(v[0]), v[1], 1);
#else
    return v[0];
#endif
}

/* f[i] in the 8 lanes of output i. */
SL_INLINE KQ(kq_vf) KQ(kq_wjoinf)(const float *f) {
#if KQ_W == 2
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(f[0]))),
                                               _mm256_castps_pd(_mm256_set1_ps(f[1])), 1));
#else
    return _mm256_set1_ps(f[0]);
#endif
}

/* sl__fold8 of output i's lanes. */
SL_INLINE float KQ(kq_fold)(KQ(kq_vf) v, const int i) {
#if KQ_W == 2
    return sl__fold8_avx2(i ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
                            : _mm512_castps512_ps256(v));
#else
    (void)i;
    return sl__fold8_avx2(v);
#endif
}

/* The word operand of chunk v from the scales S of each output (16 int16 per half): S[2v] in words 0-7 of a
 * half (lanes j < 4), S[2v + 1] in words 8-15. */
SL_INLINE KQ(kq_vi) KQ(kq_chunk_scale)(KQ(kq_vi) s16, const int v) {
#if KQ_W == 2
    const __m512i base = _mm512_set_epi64(0x0011001100110011, 0x0011001100110011, 0x0010001000100010,
                                          0x0010001000100010, 0x0001000100010001, 0x0001000100010001, 0, 0);
    return _mm512_permutexvar_epi16(_mm512_add_epi16(base, _mm512_set1_epi16((short)(2 * v))), s16);
#else
    return kq_chunk_scale(s16, v);
#endif
}

/* isum + the recipe's int32 lanes of one chunk: scale-weighted sums of 4 products of u (unsigned) and x. */
SL_INLINE KQ(kq_vi) KQ(kq_dot)(KQ(kq_vi) isum, KQ(kq_vi) u, KQ(kq_vi) x, KQ(kq_vi) sc) {
#if KQ_VNNI == 2
    return _mm512_dpwssd_epi32(isum, KV_MADDUBS(u, x), sc);
#elif KQ_VNNI == 1
    return _mm256_dpwssd_avx_epi32(isum, _mm256_maddubs_epi16(u, x), sc);
#else
    return KV_ADD32(isum, KV_MADD(KV_MADDUBS(u, x), sc));
#endif
}

/* The unsigned levels of elements 32 v .. 32 v + 31 of each output's super-block (layouts in kdtype.h). */
SL_INLINE KQ(kq_vi) KQ(kq_chunk)(const int T, const uint8_t *const *blk, const int v) {
    const KQ(kq_vi) m2 = KV_SET1_8(3), m4 = KV_SET1_8(0x0f), one = KV_SET1_8(1);
    const int h = v / 4, c = v % 4;
    if (T == SL_DTYPE_Q2_K || T == SL_DTYPE_Q3_K) {
        const size_t qs = T == SL_DTYPE_Q2_K ? offsetof(sl_block_q2_K, qs) : offsetof(sl_block_q3_K, qs);
        const KQ(kq_vi) q = KQ(kq_wload)(blk, qs + 32 * (size_t)h);
        KQ(kq_vi) u = KV_AND(KV_SRLI16(q, 2 * c), m2); /* 16-bit shifts, then byte masks */
        if (T == SL_DTYPE_Q3_K) {
            const KQ(kq_vi) hm = KQ(kq_wload)(blk, offsetof(sl_block_q3_K, hmask));
            const KQ(kq_vi) hb = KV_AND(KV_SRLI16(hm, 4 * h + c), one);
            u = KV_OR(u, KV_SLLI16(hb, 2));
        }
        return u;
    }
    if (T == SL_DTYPE_Q4_K || T == SL_DTYPE_Q5_K) {
        const size_t qs = T == SL_DTYPE_Q4_K ? offsetof(sl_block_q4_K, qs) : offsetof(sl_block_q5_K, qs);
        const KQ(kq_vi) q = KQ(kq_wload)(blk, qs + 32 * (size_t)(v / 2));
        KQ(kq_vi) u = KV_AND(v % 2 ? KV_SRLI16(q, 4) : q, m4);
        if (T == SL_DTYPE_Q5_K) {
            const KQ(kq_vi) qh = KQ(kq_wload)(blk, offsetof(sl_block_q5_K, qh));
            const KQ(kq_vi) hb = KV_AND(KV_SRLI16(qh, v), one);
            u = KV_OR(u, KV_SLLI16(hb, 4));
        }
        return u;
    }
    /* Q6_K */
    const KQ(kq_vi) ql = KQ(kq_wload)(blk, offsetof(sl_block_q6_K, ql) + 64 * (size_t)h + 32 * (size_t)(c & 1));
    const KQ(kq_vi) qh = KQ(kq_wload)(blk, offsetof(sl_block_q6_K, qh) + 32 * (size_t)h);
    const KQ(kq_vi) lo = KV_AND(c < 2 ? ql : KV_SRLI16(ql, 4), m4);
    const KQ(kq_vi) hi = KV_AND(KV_SRLI16(qh, 2 * c), m2);
    return KV_OR(lo, KV_SLLI16(hi, 4));
}

/* R activation rows x G vectors of KQ_W weight rows (wr[0 .. G * KQ_W), the last repeated where the range
 * has fewer): the recipe of matmul_k.c for each (row, output) pair; stores outputs [0, nc). */
SL_INLINE void KQ(kq_tile256)(const int T, const int R, const int G, const uint8_t *const *wr, int nc,
                              const uint8_t *const *xr, int nb, float *y, int ldy) {
    const size_t wbs = kq_wbs(T), xbs = sizeof(sl_block_q8_K);
    const size_t xqo = offsetof(sl_block_q8_K, qs), xso = offsetof(sl_block_q8_K, bsums);
    /* sl__kquant_offset (Q3_K 4, Q6_K 32) as a shift: K * v = v << log2 K, exact for these int32 sums */
    const int k_shift = T == SL_DTYPE_Q3_K ? 2 : T == SL_DTYPE_Q6_K ? 5 : 0;
    const int has_min = T == SL_DTYPE_Q2_K || T == SL_DTYPE_Q4_K || T == SL_DTYPE_Q5_K;
    KQ(kq_vf) acc[KQ_RT * KQ_CT / KQ_W], macc[KQ_RT * KQ_CT / KQ_W]; /* pair (r, g) at r * G + g */
    SL_UNROLL
    for (int i = 0; i < R * G; i++) acc[i] = macc[i] = KV_ZERO_F();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk[KQ_CT]; /* the super-blocks b of wr */
        KQ(kq_vi) isum[KQ_RT * KQ_CT / KQ_W], s16[KQ_CT / KQ_W], m16[KQ_CT / KQ_W];
        KQ(kq_vf) dw[KQ_CT / KQ_W], dmin[KQ_CT / KQ_W];
        SL_UNROLL
        for (int g = 0; g < G; g++) {
            __m256i s[KQ_W], m[KQ_W];
            float d[KQ_W], dm[KQ_W];
            SL_UNROLL
            for (int i = 0; i < KQ_W; i++) {
                blk[g * KQ_W + i] = wr[g * KQ_W + i] + (size_t)b * wbs;
                kq_scales_vec(T, blk[g * KQ_W + i], &s[i], &m[i], &d[i], &dm[i]);
            }
            s16[g] = KQ(kq_wjoin)(s);
            m16[g] = KQ(kq_wjoin)(m);
            dw[g] = KQ(kq_wjoinf)(d);
            dmin[g] = KQ(kq_wjoinf)(dm);
        }
        SL_UNROLL
        for (int i = 0; i < R * G; i++) isum[i] = KV_ZERO_I();
        SL_UNROLL
        for (int v = 0; v < 8; v++) {
            KQ(kq_vi) xv[KQ_RT];
            SL_UNROLL
            for (int r = 0; r < R; r++) xv[r] = KQ(kq_xload)(xr[r] + (size_t)b * xbs + xqo + 32 * v);
            SL_UNROLL
            for (int g = 0; g < G; g++) {
                const KQ(kq_vi) u = KQ(kq_chunk)(T, blk + g * KQ_W, v);
                const KQ(kq_vi) sc = KQ(kq_chunk_scale)(s16[g], v);
                SL_UNROLL
                for (int r = 0; r < R; r++) isum[r * G + g] = KQ(kq_dot)(isum[r * G + g], u, xv[r], sc);
            }
        }
        SL_UNROLL
        for (int r = 0; r < R; r++) {
            const uint8_t *xb = xr[r] + (size_t)b * xbs;
            const KQ(kq_vi) bs = KQ(kq_xload)(xb + xso);
            const KQ(kq_vf) dx = KV_SET1_PS(kq_ldf(xb));
            SL_UNROLL
            for (int g = 0; g < G; g++) {
                const int i = r * G + g;
                if (k_shift) isum[i] = KV_SUB32(isum[i], KV_SLLI32(KV_MADD(bs, s16[g]), k_shift));
                acc[i] = KV_FMA(KV_MUL(dw[g], dx), KV_CVT(isum[i]), acc[i]);
                if (has_min) macc[i] = KV_FMA(KV_MUL(dmin[g], dx), KV_CVT(KV_MADD(bs, m16[g])), macc[i]);
            }
        }
    }
    SL_UNROLL
    for (int r = 0; r < R; r++)
        SL_UNROLL
        for (int g = 0; g < G; g++)
            SL_UNROLL
            for (int i = 0; i < KQ_W; i++) {
                const int p = r * G + g, c = g * KQ_W + i;
                if (c < nc)
                    y[(size_t)r * ldy + c] =
                        has_min ? KQ(kq_fold)(acc[p], i) - KQ(kq_fold)(macc[p], i) : KQ(kq_fold)(acc[p], i);
            }
}

/* ---- the 32-element types: Q5_0, IQ4_NL (Q8_0 activations) and Q5_1 (Q8_1), on ymm ---------------------- */

/* lanes j: sum over i in 4j..4j+3 of u[i] * s[i] (u unsigned bytes, s signed bytes, no saturation here) */
SL_INLINE __m256i KQ(kq_dot4)(__m256i u, __m256i s) {
#if KQ_VNNI == 2
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#elif KQ_VNNI == 1
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

SL_INLINE void KQ(kq_tile32)(const int T, const int R, const uint8_t *w, const uint8_t *const *xr, int nb, float *y,
                             int ldy) {
    const size_t wbs = kq_wbs(T);
    const size_t xbs = T == SL_DTYPE_Q5_1 ? sizeof(sl_block_q8_1) : sizeof(sl_block_q8_0);
    const size_t xqo = T == SL_DTYPE_Q5_1 ? 4 : 2; /* where the quants start in an activation block */
    __m256 acc[KQ_RT32];
    __m128 ms[KQ_RT32]; /* Q5_1: lane 0 is the chain fma(m_w, s_x, ms) */
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
            if (T == SL_DTYPE_IQ4_NL) isum = KQ(kq_dot4)(wabs, _mm256_sign_epi8(xv, wq));
            else if (T == SL_DTYPE_Q5_0)
                isum = _mm256_sub_epi32(KQ(kq_dot4)(wq, xv), KQ(kq_dot4)(_mm256_set1_epi8(16), xv));
            else isum = KQ(kq_dot4)(wq, xv);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), _mm256_cvtepi32_ps(isum), acc[r]);
            if (T == SL_DTYPE_Q5_1)
                ms[r] = _mm_fmadd_ss(_mm_set_ss(mw), _mm_set_ss(sl__fp16_to_f32_f16c(kq_ld16(xb + 2))), ms[r]);
        }
    }
    SL_UNROLL
    for (int r = 0; r < R; r++) {
        const float s = sl__fold8_avx2(acc[r]);
        y[(size_t)r * ldy] = T == SL_DTYPE_Q5_1 ? s + _mm_cvtss_f32(ms[r]) : s;
    }
}

/* One out-of-line instance per (type, tile shape), so each keeps its accumulators in registers. */
typedef void (*KQ(kq_tile_fn))(const uint8_t *const *wr, int nc, const uint8_t *const *xr, int nb, float *y, int ldy);
#define KQ_INST256(T, TN, SHAPE, R, G)                                                                        \
    static void KQ(kq_##TN##_##SHAPE)(const uint8_t *const *wr, int nc, const uint8_t *const *xr, int nb,     \
                                      float *y, int ldy) {                                                     \
        KQ(kq_tile256)(T, R, G, wr, nc, xr, nb, y, ldy);                                                        \
    }
#define KQ_INSTANCES256(T, TN)                                                                                 \
    KQ_INST256(T, TN, m, KQ_RT, 1)                                                                             \
    KQ_INST256(T, TN, h, KQ_RT / 2, 1)                                                                         \
    KQ_INST256(T, TN, s, 1, KQ_CT / KQ_W)                                                                      \
    KQ_INST256(T, TN, 1, 1, 1)
/* The 32-element types have one output per tile: nc is always 1. */
#define KQ_INSTANCES32(T, TN)                                                                                  \
    static void KQ(kq_##TN##_m)(const uint8_t *const *wr, int nc, const uint8_t *const *xr, int nb, float *y,   \
                                int ldy) {                                                                     \
        KQ(kq_tile32)(T, KQ_RT32, wr[0], xr, nb, y, ldy);                                                       \
    }                                                                                                          \
    static void KQ(kq_##TN##_1)(const uint8_t *const *wr, int nc, const uint8_t *const *xr, int nb, float *y,   \
                                int ldy) {                                                                     \
        KQ(kq_tile32)(T, 1, wr[0], xr, nb, y, ldy);                                                             \
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
#undef KQ_INST256

#define KQ_PF_GROUPS 4 /* prefetch distance in groups of KQ_CT weight rows, as matmul_q_x86.h's MQ_PF_TILES */

void KQ(sl__matmul_k)(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const void *xq,
                      size_t xq_row_bytes, int n_rows, float *y, int ldy) {
    /* m: multi-row; h: half-height (NULL for the 32-element types); s: 1 row x KQ_CT outputs (NULL for the
     * 32-element types); t1: 1 row x one vector of outputs. tw: outputs per tile call but for s. */
    KQ(kq_tile_fn) m, h = NULL, s = NULL, t1;
    int rt = KQ_RT32, tw = 1;
#define KQ_PICK32(TN) m = KQ(kq_##TN##_m), t1 = KQ(kq_##TN##_1)
#define KQ_PICK256(TN)                                                                                         \
    m = KQ(kq_##TN##_m), h = KQ(kq_##TN##_h), s = KQ(kq_##TN##_s), t1 = KQ(kq_##TN##_1), rt = KQ_RT, tw = KQ_W
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
    /* Groups of KQ_CT outputs outermost: their weight rows stay in L1 while every activation row passes; the
     * group KQ_PF_GROUPS ahead is requested now, for weights streaming from DRAM (decode). */
    for (int o = o0; o < o1; o += KQ_CT) {
        const int nc = o1 - o < KQ_CT ? o1 - o : KQ_CT;
        const uint8_t *wr[KQ_CT]; /* a short group repeats its last row: tiles read KQ_W rows per vector */
        for (int c = 0; c < KQ_CT; c++) wr[c] = W + (size_t)(o + (c < nc ? c : nc - 1)) * w_row_bytes;
        if (o + (KQ_PF_GROUPS + 1) * KQ_CT <= o1) {
            const char *pf = (const char *)(W + (size_t)(o + KQ_PF_GROUPS * KQ_CT) * w_row_bytes);
            for (size_t at = 0; at < KQ_CT * w_row_bytes; at += 64) _mm_prefetch(pf + at, _MM_HINT_T0);
        }
        for (int r = 0; r < n_rows;) {
            const uint8_t *xr[KQ_RT > KQ_RT32 ? KQ_RT : KQ_RT32];
            float *yt = y + (size_t)r * ldy + o;
            const int left = n_rows - r;
            KQ(kq_tile_fn) fn = left >= rt ? m : h && left >= rt / 2 ? h : NULL;
            if (fn) {
                const int nr = fn == m ? rt : rt / 2;
                for (int i = 0; i < nr; i++) xr[i] = X + (size_t)(r + i) * xq_row_bytes;
                for (int c = 0; c < nc; c += tw) fn(wr + c, nc - c < tw ? nc - c : tw, xr, nb, yt + c, ldy);
                r += nr;
            } else {
                xr[0] = X + (size_t)r * xq_row_bytes;
                if (s && nc == KQ_CT) s(wr, nc, xr, nb, yt, ldy);
                else
                    for (int c = 0; c < nc; c += tw) t1(wr + c, nc - c < tw ? nc - c : tw, xr, nb, yt + c, ldy);
                r += 1;
            }
        }
    }
#if KQ_W == 2
    sl__avx512_clean();
#else
    SL_AVX2_LEAVE();
#endif
}

#undef KQ_PF_GROUPS
#undef KQ_CT
#undef KQ_RT32
#undef KV_AND
#undef KV_OR
#undef KV_SRLI16
#undef KV_SLLI16
#undef KV_SLLI32
#undef KV_SET1_8
#undef KV_ADD32
#undef KV_SUB32
#undef KV_MADD
#undef KV_MADDUBS
#undef KV_ZERO_I
#undef KV_ZERO_F
#undef KV_CVT
#undef KV_FMA
#undef KV_MUL
#undef KV_SET1_PS

/* The parameters, so the next instance can define its own. */
#undef KQ
#undef KQ_VNNI
#undef KQ_W
#undef KQ_RT
