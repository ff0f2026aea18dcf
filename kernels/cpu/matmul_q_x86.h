/*
 * matmul_q_x86.h — template of the x86 quantized matmul; matmul_q_x86.c includes it once per variant,
 * inside a target region, after defining:
 *   MQ(name)  the variant's suffix for every name defined here
 *   MQ_VNNI   0: pmaddubsw + pmaddwd (AVX2); 1: vpdpbusd, VEX (AVX-VNNI); 2: vpdpbusd, EVEX (AVX512-VNNI)
 *   MQ_RT     rows of the multi-row register tile (16 registers hold 2 rows x 4 outputs, 32 hold 4 x 4)
 *
 * Register tile: R activation rows x C weight rows (C = 4, or 1 for the last outputs of a range). Per block,
 * each weight block is unpacked once and used for R rows, each activation block loaded once per output.
 * One 8-lane int32 vector per (row, output) and block holds the exact sums of 4 consecutive products, so the
 * float work per pair is the canonical one (kcpu_impl.h) whatever R and C are: batch invariance, and bits
 * equal to the scalar reference.
 *
 * Integer tricks (all give the same exact lanes):
 *   Q4_1: nibbles are unsigned already: u8 x s8 directly.
 *   Q4_0: sum (q - 8) x = sum q x - 8 sum x; the -8 sum x lanes are computed once per activation block and
 *         used as the accumulator start of the product.
 *   Q8_0: signed x signed. With pmaddubsw: |w| x (x with w's sign) (no saturation: 2 * 128 * 127 < 2^15).
 *         With vpdpbusd (no saturation at all): (w + 128) x - 128 sum x, w + 128 being w with its top bit
 *         flipped.
 */

#define MQ_CT 4       /* outputs per full tile */
#define MQ_PF_TILES 4 /* prefetch distance, in tiles: ~250 ns of 1-row work at the model's shapes, > DRAM latency */

static inline uint32_t MQ(ld32)(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint16_t MQ(ld16)(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* acc + lanes j: sum over i in 4j..4j+3 of u[i] * s[i] (u unsigned bytes, s signed). */
SL_INLINE __m256i MQ(dpbusd)(__m256i acc, __m256i u, __m256i s) {
#if MQ_VNNI == 2
    return _mm256_dpbusd_epi32(acc, u, s);
#elif MQ_VNNI == 1
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* Canonical 8 -> 1 fold (sl__fold8). */
SL_INLINE float MQ(fold8)(__m256 v) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

SL_INLINE void MQ(tile)(const int wtype, const int R, const int C, const uint8_t *const *wr,
                        const uint8_t *const *xr, int nb, float *y, int ldy) {
    /* block sizes and where the quants start inside a block */
    const size_t wbs = wtype == SL_DTYPE_Q4_0 ? sizeof(sl_block_q4_0)
                       : wtype == SL_DTYPE_Q4_1 ? sizeof(sl_block_q4_1)
                                                : sizeof(sl_block_q8_0);
    const size_t wqo = wtype == SL_DTYPE_Q4_1 ? 4 : 2;
    const size_t xbs = wtype == SL_DTYPE_Q4_1 ? sizeof(sl_block_q8_1) : sizeof(sl_block_q8_0);
    const size_t xqo = wtype == SL_DTYPE_Q4_1 ? 4 : 2;

    __m256 acc[MQ_RT][MQ_CT]; /* lanes j of (r, c), canonical order */
    __m256 ms[MQ_RT];         /* Q4_1: lane 2c + 1 is the m * s chain of (r, c); other lanes unused */
    SL_UNROLL
    for (int r = 0; r < R; r++) {
        ms[r] = _mm256_setzero_ps();
        SL_UNROLL
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    }

    for (int b = 0; b < nb; b++) {
        /* Weight scales as floats: Q4_1 [d0 m0 d1 m1 d2 m2 d3 m3], others [d0 d1 d2 d3 . . . .]. */
        __m256 wsc;
        if (wtype == SL_DTYPE_Q4_1) {
            uint32_t dm[MQ_CT] = {0};
            SL_UNROLL
            for (int c = 0; c < C; c++) dm[c] = MQ(ld32)(wr[c] + b * wbs);
            wsc = _mm256_cvtph_ps(_mm_setr_epi32((int)dm[0], (int)dm[1], (int)dm[2], (int)dm[3]));
        } else {
            uint16_t d[MQ_CT] = {0};
            SL_UNROLL
            for (int c = 0; c < C; c++) d[c] = MQ(ld16)(wr[c] + b * wbs);
            wsc = _mm256_cvtph_ps(_mm_setr_epi16((short)d[0], (short)d[1], (short)d[2], (short)d[3], 0, 0, 0, 0));
        }

        __m256 dd[MQ_RT];   /* lane of output c (2c for Q4_1, c otherwise): d_w * d_x */
        __m256i off[MQ_RT]; /* Q4_0 / Q8_0 (VNNI): accumulator start, -8 or -128 times sums of 4 x */
        SL_UNROLL
        for (int r = 0; r < R; r++) {
            const uint8_t *xb = xr[r] + b * xbs;
            if (wtype == SL_DTYPE_Q4_1) {
                __m128 ds = _mm_cvtph_ps(_mm_cvtsi32_si128((int)MQ(ld32)(xb))); /* [dx sx . .] */
                __m256 ds4 = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(ds)));
                dd[r] = _mm256_mul_ps(wsc, ds4);
                ms[r] = _mm256_fmadd_ps(wsc, ds4, ms[r]); /* odd lanes: fma(m_w, s_x, ms) */
            } else {
                __m128 dx = _mm_cvtph_ps(_mm_cvtsi32_si128(MQ(ld16)(xb)));
                dd[r] = _mm256_mul_ps(wsc, _mm256_broadcastss_ps(dx));
            }
            off[r] = _mm256_setzero_si256();
            if (wtype == SL_DTYPE_Q4_0 || (wtype == SL_DTYPE_Q8_0 && MQ_VNNI != 0)) {
                const __m256i xq = _mm256_loadu_si256((const __m256i *)(xb + xqo));
                const __m256i k = _mm256_set1_epi8(wtype == SL_DTYPE_Q4_0 ? 8 : (char)0x80);
                off[r] = _mm256_sub_epi32(_mm256_setzero_si256(), MQ(dpbusd)(_mm256_setzero_si256(), k, xq));
            }
        }

        /* The scales go through memory: a broadcast from L1 is a load rather than a shuffle, and the shuffle
         * port is this loop's busiest (the gain over vpermps measured within noise, 0-5%). */
        float ddm[MQ_RT][8];
        SL_UNROLL
        for (int r = 0; r < R; r++) _mm256_storeu_ps(ddm[r], dd[r]);
        SL_UNROLL
        for (int c = 0; c < C; c++) {
            const uint8_t *q = wr[c] + b * wbs + wqo;
            __m256i wq;
            if (wtype == SL_DTYPE_Q8_0) {
                wq = _mm256_loadu_si256((const __m256i *)q);
            } else {
                /* [qs | qs] then the upper copy shifted right 4 (as 64-bit lanes, whose bits spilling into the
                 * byte below are masked off): no cross-lane insert, which would compete for the shuffle port */
                const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q));
                wq = _mm256_and_si256(_mm256_srlv_epi64(t, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
            }
            const __m256i wu = wtype != SL_DTYPE_Q8_0 ? wq
                               : MQ_VNNI                ? _mm256_xor_si256(wq, _mm256_set1_epi8((char)0x80))
                                                        : _mm256_abs_epi8(wq);
            const int lane = wtype == SL_DTYPE_Q4_1 ? 2 * c : c;
            SL_UNROLL
            for (int r = 0; r < R; r++) {
                __m256i xq = _mm256_loadu_si256((const __m256i *)(xr[r] + b * xbs + xqo));
                if (wtype == SL_DTYPE_Q8_0 && MQ_VNNI == 0) xq = _mm256_sign_epi8(xq, wq);
                const __m256i isum = MQ(dpbusd)(off[r], wu, xq);
                const __m256 scale = _mm256_broadcast_ss(&ddm[r][lane]);
                acc[r][c] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum), acc[r][c]);
            }
        }
    }

    SL_UNROLL
    for (int r = 0; r < R; r++) {
        float msl[8];
        _mm256_storeu_ps(msl, ms[r]);
        SL_UNROLL
        for (int c = 0; c < C; c++) {
            float s = MQ(fold8)(acc[r][c]);
            y[(size_t)r * ldy + c] = wtype == SL_DTYPE_Q4_1 ? s + msl[2 * c + 1] : s;
        }
    }
}

/* One out-of-line instance per (weight type, tile shape): the compiler keeps each tile in registers.
 * Shapes: m4 = MQ_RT rows x 4 outputs, m1 = MQ_RT x 1, s4 = 1 x 4, s1 = 1 x 1. */
#define MQ_INSTANCE(T, TN, SHAPE, R, C)                                                                   \
    static void MQ(tile_##TN##_##SHAPE)(const uint8_t *const *wr, const uint8_t *const *xr, int nb,        \
                                        float *y, int ldy) {                                             \
        MQ(tile)(T, R, C, wr, xr, nb, y, ldy);                                                           \
    }
#define MQ_INSTANCES(T, TN)                                                                               \
    MQ_INSTANCE(T, TN, m4, MQ_RT, 4)                                                                      \
    MQ_INSTANCE(T, TN, m1, MQ_RT, 1)                                                                      \
    MQ_INSTANCE(T, TN, s4, 1, 4)                                                                          \
    MQ_INSTANCE(T, TN, s1, 1, 1)
MQ_INSTANCES(SL_DTYPE_Q4_0, q4_0)
MQ_INSTANCES(SL_DTYPE_Q4_1, q4_1)
MQ_INSTANCES(SL_DTYPE_Q8_0, q8_0)
#undef MQ_INSTANCES
#undef MQ_INSTANCE

typedef void (*MQ(tile_fn))(const uint8_t *const *wr, const uint8_t *const *xr, int nb, float *y, int ldy);

void MQ(sl__matmul_q)(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const void *xq,
                      size_t xq_row_bytes, int n_rows, float *y, int ldy) {
    MQ(tile_fn) fn[2][2]; /* [multi-row][4 outputs] */
#define MQ_PICK(TN)                                                                                       \
    fn[1][1] = MQ(tile_##TN##_m4), fn[1][0] = MQ(tile_##TN##_m1), fn[0][1] = MQ(tile_##TN##_s4),         \
    fn[0][0] = MQ(tile_##TN##_s1)
    switch (wtype) {
    case SL_DTYPE_Q4_0: MQ_PICK(q4_0); break;
    case SL_DTYPE_Q4_1: MQ_PICK(q4_1); break;
    default: MQ_PICK(q8_0); break;
    }
#undef MQ_PICK
    const int nb = n_in / 32;
    const uint8_t *W = (const uint8_t *)w, *X = (const uint8_t *)xq;
    /* Outputs outermost: a tile's 4 weight rows stay in L1 while every activation row passes by. The weight
     * rows of the tile MQ_PF_TILES ahead are requested now: with weights streaming from DRAM (decode of a
     * model larger than the cache), a 1-row call ran 15-25% faster so in interleaved A/B runs here. */
    for (int o = o0; o < o1; o += MQ_CT) {
        const int nc = o1 - o < MQ_CT ? o1 - o : MQ_CT;
        const uint8_t *wr[MQ_CT];
        for (int c = 0; c < nc; c++) wr[c] = W + (size_t)(o + c) * w_row_bytes;
        if (o + (MQ_PF_TILES + 1) * MQ_CT <= o1) {
            const char *pf = (const char *)(W + (size_t)(o + MQ_PF_TILES * MQ_CT) * w_row_bytes);
            for (size_t at = 0; at < MQ_CT * w_row_bytes; at += 64) _mm_prefetch(pf + at, _MM_HINT_T0);
        }
        for (int r = 0; r < n_rows;) {
            const int multi = n_rows - r >= MQ_RT;
            const int nr = multi ? MQ_RT : 1;
            const uint8_t *xr[MQ_RT];
            for (int i = 0; i < nr; i++) xr[i] = X + (size_t)(r + i) * xq_row_bytes;
            float *yt = y + (size_t)r * ldy + o;
            if (nc == MQ_CT) {
                fn[multi][1](wr, xr, nb, yt, ldy);
            } else {
                for (int c = 0; c < nc; c++) fn[multi][0](wr + c, xr, nb, yt + c, ldy);
            }
            r += nr;
        }
    }
#if MQ_VNNI == 2
    sl__avx512_clean();
#else
    SL_AVX2_LEAVE();
#endif
}

#undef MQ_CT
#undef MQ_PF_TILES
