/*
 * matmul_q_x86.h — template of the x86 packed quantized product (sl_k_matmul_qp, layout and recipe in
 * matmul_q.c); matmul_q_x86.c includes it once per variant, inside a target region, after defining
 * (the template undefines them at its end):
 *   MQ(name)  the variant's suffix for every name defined here
 *   MQ_VNNI   0: pmaddubsw + pmaddwd (AVX2); 1: vpdpbusd, VEX (AVX-VNNI); 2: vpdpbusd, EVEX (AVX512-VNNI)
 *   MQ_W      output lanes per vector: 16 (zmm, a whole packed group) or 8 (ymm, half a group)
 *   MQ_RT     rows of the largest register tile
 *
 * Register tile: R activation rows x MQ_W outputs, one accumulator vector per row (plus Q4_1's offset chain
 * and the block's integer sums: 3 vectors per row). Per block, each 64-byte chunk of packed quants is loaded
 * once (nibbles split once) and used for the R rows; each row's 4 activation bytes of a step are one
 * broadcast load. Eight vpdpbusd per (row, block) leave the block's exact sums of 16 outputs in 16 lanes, then
 * one conversion, one multiply (d_w * d_x) and one fma per row finish the block, d_x (and Q4_1's s_x) read as
 * f32 from the row's tail (sl_k_quantize_act_row) by a broadcast load: the recipe of matmul_q.c,
 * lane by lane, so every variant gives the scalar reference's bits whatever the tile.
 *
 * Integer tricks (all exact):
 *   Q4_1: nibbles are unsigned levels already: u8 x s8 directly.
 *   Q4_0: sum (q - 8) x = sum q x - 8 sum x; the block's sum x comes with the Q8_0S activations, so -8 sum x
 *         starts the accumulator.
 *   Q8_0: vpdpbusd: (w + 128) x - 128 sum x, w + 128 being w with its top bit flipped; pmaddubsw (unsigned x
 *         signed, pairs saturating at 2^15): |w| x (x with w's sign), 2 * 128 * 127 < 2^15.
 */

#define MQ_XBS 36 /* bytes of an activation block: Q8_1 and Q8_0S alike */

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


#if MQ_W == 16
typedef __m512i MQ(vi);
typedef __m512 MQ(vf);
#define MQ_LOADQ(p) _mm512_loadu_si512((const void *)(p))
#define MQ_AND(a, b) _mm512_and_si512(a, b)
#define MQ_XOR(a, b) _mm512_xor_si512(a, b)
#define MQ_SRL4(a) _mm512_srli_epi16(a, 4)
#define MQ_SET8(c) _mm512_set1_epi8((char)(c))
#define MQ_SET32(c) _mm512_set1_epi32(c)
#define MQ_ZEROI() _mm512_setzero_si512()
#define MQ_CVT(a) _mm512_cvtepi32_ps(a)
#define MQ_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define MQ_MUL(a, b) _mm512_mul_ps(a, b)
#define MQ_ADDF(a, b) _mm512_add_ps(a, b)
#define MQ_SETF(f) _mm512_set1_ps(f)
#define MQ_ZEROF() _mm512_setzero_ps()
#define MQ_PH(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define MQ_STOREF(p, v) _mm512_storeu_ps(p, v)
#else
typedef __m256i MQ(vi);
typedef __m256 MQ(vf);
#define MQ_LOADQ(p) _mm256_loadu_si256((const __m256i *)(p))
#define MQ_AND(a, b) _mm256_and_si256(a, b)
#define MQ_XOR(a, b) _mm256_xor_si256(a, b)
#define MQ_SRL4(a) _mm256_srli_epi16(a, 4)
#define MQ_SET8(c) _mm256_set1_epi8((char)(c))
#define MQ_SET32(c) _mm256_set1_epi32(c)
#define MQ_ZEROI() _mm256_setzero_si256()
#define MQ_CVT(a) _mm256_cvtepi32_ps(a)
#define MQ_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define MQ_MUL(a, b) _mm256_mul_ps(a, b)
#define MQ_ADDF(a, b) _mm256_add_ps(a, b)
#define MQ_SETF(f) _mm256_set1_ps(f)
#define MQ_ZEROF() _mm256_setzero_ps()
#define MQ_PH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define MQ_STOREF(p, v) _mm256_storeu_ps(p, v)
#endif

/* acc + lanes l: sum over t < 4 of u[4l + t] * s[4l + t] (u unsigned bytes, s signed; exact) */
SL_INLINE MQ(vi) MQ(dp)(MQ(vi) acc, MQ(vi) u, MQ(vi) s) {
#if MQ_VNNI == 2 && MQ_W == 16
    return _mm512_dpbusd_epi32(acc, u, s);
#elif MQ_VNNI == 2
    return _mm256_dpbusd_epi32(acc, u, s);
#elif MQ_VNNI == 1
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* R rows x G * MQ_W outputs: G consecutive packed groups (gstride bytes apart; G = 2 only with MQ_W = 16, a
 * 2-D tile that loads each activation broadcast once for two groups), or one half group (MQ_W = 8, half h).
 * Writes outputs [0, nvalid) of the tile at y + r * ldy. pf: the same blocks further on, to prefetch (or NULL). */
SL_INLINE void MQ(tile)(const int wtype, const int R, const int G, const uint8_t *gp, size_t gstride, int h,
                        const uint8_t *const *xr, int nb, float *y, int ldy, int nvalid, const uint8_t *pf) {
    /* each row's f32 (d, s) pairs follow its blocks (sl_k_quantize_act_row) */
    const float *xf[MQ_RT];
    SL_UNROLL
    for (int r = 0; r < R; r++) xf[r] = (const float *)(const void *)(xr[r] + (size_t)nb * MQ_XBS);
    const size_t gbs = wtype == SL_DTYPE_Q4_1 ? 320 : wtype == SL_DTYPE_Q4_0 ? 288 : 544; /* sl__qp_block_bytes */
    const size_t qo = (wtype == SL_DTYPE_Q4_1 ? 64 : 32) + (size_t)h * 32; /* this half's quants in a chunk */
    const size_t so = (size_t)h * 16;                                      /* this half's scales */
    MQ(vf) acc[MQ_RT][2], ms[MQ_RT][2];
    SL_UNROLL
    for (int r = 0; r < R; r++)
        SL_UNROLL
        for (int g = 0; g < G; g++) acc[r][g] = ms[r][g] = MQ_ZEROF();

    for (int b = 0; b < nb; b++) {
        const uint8_t *pb[2] = {gp + (size_t)b * gbs, gp + gstride + (size_t)b * gbs};
        if (pf)
            for (size_t at = 0; at < gbs; at += 64) _mm_prefetch((const char *)(pf + (size_t)b * gbs + at), _MM_HINT_T1);
        MQ(vi) isum[MQ_RT][2];
        SL_UNROLL
        for (int r = 0; r < R; r++) {
            const uint8_t *xb = xr[r] + (size_t)b * MQ_XBS;
            const int sum = (int16_t)MQ(ld16)(xb + 2); /* Q8_0S: the exact sum of the levels */
            MQ(vi) init;
            if (wtype == SL_DTYPE_Q4_0)
                init = MQ_SET32(-8 * sum);
            else if (wtype == SL_DTYPE_Q8_0 && MQ_VNNI)
                init = MQ_SET32(-128 * sum);
            else
                init = MQ_ZEROI();
            SL_UNROLL
            for (int g = 0; g < G; g++) isum[r][g] = init;
        }
        if (wtype == SL_DTYPE_Q8_0) {
            SL_UNROLL
            for (int k = 0; k < 8; k++) {
                MQ(vi) w[2], u[2];
                SL_UNROLL
                for (int g = 0; g < G; g++) {
                    w[g] = MQ_LOADQ(pb[g] + qo + 64 * k);
#if MQ_VNNI
                    u[g] = MQ_XOR(w[g], MQ_SET8(0x80));
#else
                    u[g] = _mm256_abs_epi8(w[g]);
#endif
                }
                SL_UNROLL
                for (int r = 0; r < R; r++) {
                    const MQ(vi) xs = MQ_SET32((int)MQ(ld32)(xr[r] + (size_t)b * MQ_XBS + 4 + 4 * k));
                    SL_UNROLL
                    for (int g = 0; g < G; g++) {
#if MQ_VNNI
                        isum[r][g] = MQ(dp)(isum[r][g], u[g], xs);
#else
                        isum[r][g] = MQ(dp)(isum[r][g], u[g], _mm256_sign_epi8(xs, w[g]));
#endif
                    }
                }
            }
        } else {
            SL_UNROLL
            for (int i = 0; i < 4; i++) {
                MQ(vi) lo[2], hi[2];
                SL_UNROLL
                for (int g = 0; g < G; g++) {
                    const MQ(vi) z = MQ_LOADQ(pb[g] + qo + 64 * i);
                    lo[g] = MQ_AND(z, MQ_SET8(0x0f));
                    hi[g] = MQ_AND(MQ_SRL4(z), MQ_SET8(0x0f));
                }
                SL_UNROLL
                for (int r = 0; r < R; r++) {
                    const uint8_t *xq = xr[r] + (size_t)b * MQ_XBS + 4;
                    const MQ(vi) xl = MQ_SET32((int)MQ(ld32)(xq + 4 * i)), xh = MQ_SET32((int)MQ(ld32)(xq + 16 + 4 * i));
                    SL_UNROLL
                    for (int g = 0; g < G; g++) {
                        isum[r][g] = MQ(dp)(isum[r][g], lo[g], xl);
                        isum[r][g] = MQ(dp)(isum[r][g], hi[g], xh);
                    }
                }
            }
        }
        MQ(vf) dw[2], mw[2];
        SL_UNROLL
        for (int g = 0; g < G; g++) {
            dw[g] = MQ_PH(pb[g] + so);
            if (wtype == SL_DTYPE_Q4_1) mw[g] = MQ_PH(pb[g] + 32 + so);
        }
        SL_UNROLL
        for (int r = 0; r < R; r++) {
            const MQ(vf) dx = MQ_SETF(xf[r][2 * b]);
            SL_UNROLL
            for (int g = 0; g < G; g++) acc[r][g] = MQ_FMA(MQ_MUL(dw[g], dx), MQ_CVT(isum[r][g]), acc[r][g]);
            if (wtype == SL_DTYPE_Q4_1) {
                const MQ(vf) sx = MQ_SETF(xf[r][2 * b + 1]);
                SL_UNROLL
                for (int g = 0; g < G; g++) ms[r][g] = MQ_FMA(mw[g], sx, ms[r][g]);
            }
        }
    }

    SL_UNROLL
    for (int r = 0; r < R; r++)
        SL_UNROLL
        for (int g = 0; g < G; g++) {
            const MQ(vf) v = wtype == SL_DTYPE_Q4_1 ? MQ_ADDF(acc[r][g], ms[r][g]) : acc[r][g];
            const int nv = nvalid - g * MQ_W;
            if (nv >= MQ_W) {
                MQ_STOREF(y + (size_t)r * ldy + g * MQ_W, v);
            } else if (nv > 0) {
                float tmp[MQ_W];
                MQ_STOREF(tmp, v);
                memcpy(y + (size_t)r * ldy + g * MQ_W, tmp, (size_t)nv * sizeof(float));
            }
        }
}

/* One out-of-line instance per (weight type, rows, groups): the compiler keeps each tile in registers. */
typedef void (*MQ(tile_fn))(const uint8_t *gp, size_t gstride, int h, const uint8_t *const *xr, int nb, float *y,
                            int ldy, int nvalid, const uint8_t *pf);
#define MQ_INSTANCE(T, TN, R, G)                                                                          \
    static void MQ(tile_##TN##_##R##_##G)(const uint8_t *gp, size_t gstride, int h, const uint8_t *const *xr, \
                                          int nb, float *y, int ldy, int nvalid, const uint8_t *pf) {     \
        MQ(tile)(T, R, G, gp, gstride, h, xr, nb, y, ldy, nvalid, pf);                                   \
    }
#if MQ_W == 16
/* 2-D tiles: 4 rows x 2 groups (24 accumulator-side vectors of 32 registers); 1-group tiles of 8, 4, 2, 1 rows
 * for batches of 8 rows or more, a lone group and decode (whose one row gains nothing from sharing a
 * broadcast). */
#define MQ_INSTANCES(T, TN)                                                                               \
    MQ_INSTANCE(T, TN, 4, 2) MQ_INSTANCE(T, TN, 2, 2) MQ_INSTANCE(T, TN, 8, 1) MQ_INSTANCE(T, TN, 4, 1)  \
    MQ_INSTANCE(T, TN, 2, 1) MQ_INSTANCE(T, TN, 1, 1)
#define MQ_PICK(TN)                                                                                       \
    {MQ(tile_##TN##_8_1), MQ(tile_##TN##_4_1), MQ(tile_##TN##_2_1), MQ(tile_##TN##_1_1),                   \
     MQ(tile_##TN##_4_2), MQ(tile_##TN##_4_2), MQ(tile_##TN##_2_2), MQ(tile_##TN##_1_1)}
#else
#define MQ_INSTANCES(T, TN) MQ_INSTANCE(T, TN, 4, 1) MQ_INSTANCE(T, TN, 2, 1) MQ_INSTANCE(T, TN, 1, 1)
#define MQ_PICK(TN)                                                                                       \
    {MQ(tile_##TN##_4_1), MQ(tile_##TN##_4_1), MQ(tile_##TN##_2_1), MQ(tile_##TN##_1_1),                   \
     MQ(tile_##TN##_4_1), MQ(tile_##TN##_4_1), MQ(tile_##TN##_2_1), MQ(tile_##TN##_1_1)}
#endif
MQ_INSTANCES(SL_DTYPE_Q4_0, q4_0)
MQ_INSTANCES(SL_DTYPE_Q4_1, q4_1)
MQ_INSTANCES(SL_DTYPE_Q8_0, q8_0)

void MQ(sl__matmul_qp)(int wtype, const void *packed, int o0, int o1, int n_in, const void *xq, size_t xq_row_bytes,
                       int n_rows, float *y, int ldy) {
    /* [0..3]: one group (or half), 8 / 4 / 2 / 1 rows; [4..7]: two groups, for 8 / 4 / 2 / 1 rows left */
    static const MQ(tile_fn) fn_q4_0[8] = MQ_PICK(q4_0), fn_q4_1[8] = MQ_PICK(q4_1), fn_q8_0[8] = MQ_PICK(q8_0);
    const MQ(tile_fn) *fn = wtype == SL_DTYPE_Q4_0 ? fn_q4_0 : wtype == SL_DTYPE_Q4_1 ? fn_q4_1 : fn_q8_0;
    const int nb = n_in / 32;
    const size_t gstride = (size_t)nb * sl__qp_block_bytes(wtype);
    const uint8_t *X = (const uint8_t *)xq;
    /* Groups outermost: a group's blocks stay in L1 while every activation row passes by. Calls of 2 to 7 rows
     * take two groups at a time on zmm (sharing each broadcast); 8 rows or more take one group in 8-row tiles,
     * which unpack each group's quants once per 8 rows (measured on the 16-row products, 2026-11-25: equal hot,
     * ~5-10% faster with weights from memory); decode one group. The first row tile of a group prefetches the
     * group two ahead (weights streaming from memory in decode); with 8-row tiles the last row tile of a group
     * prefetches the next group instead, while the group's own blocks come from L1 (measured: ~3% faster at
     * 16 rows than the first tile prefetching two ahead, ~8% faster than no prefetch). The prefetches go to L2
     * (T1): they then queue in L2's many miss slots instead of L1's few fill buffers (decode ~4% faster than
     * with T0; four groups ahead gained nothing more). */
    for (int o = o0; o < o1;) {
        const uint8_t *gp = (const uint8_t *)packed + (size_t)(o / SL_QP_GROUP) * gstride;
        const int two = MQ_W == 16 && n_rows >= 2 && n_rows < 8 && o1 - o > SL_QP_GROUP;
        const int span = two ? 2 * SL_QP_GROUP : SL_QP_GROUP;
        const uint8_t *pf = o + span + 2 * SL_QP_GROUP <= o1 ? gp + (size_t)(span / SL_QP_GROUP + 1) * gstride : NULL;
        const int eight = MQ_W == 16 && n_rows >= 8; /* 8-row tiles: the last one prefetches the next group */
        for (int h = 0; h < (two ? 1 : SL_QP_GROUP / MQ_W); h++) {
            const int ob = o + h * MQ_W;
            if (ob >= o1) break;
            const int nvalid = o1 - ob < (two ? span : MQ_W) ? o1 - ob : (two ? span : MQ_W);
            for (int r = 0; r < n_rows;) {
                const int left = n_rows - r;
                int pick = left >= 8 && MQ_RT == 8 ? 0 : left >= 4 ? 1 : left >= 2 ? 2 : 3;
                if (two && pick == 0) pick = 1; /* the 2-group tile is 4 rows */
                const int nr = pick == 0 ? 8 : pick == 1 ? 4 : pick == 2 ? 2 : 1;
                const uint8_t *xr[8];
                for (int i = 0; i < nr; i++) xr[i] = X + (size_t)(r + i) * xq_row_bytes;
                if (two && nr == 1) /* a last single row of a batch: each group on its own */
                    for (int g = 0; g < 2; g++)
                        fn[3](gp + (size_t)g * gstride, gstride, 0, xr, nb, y + (size_t)r * ldy + ob + g * MQ_W, ldy,
                              nvalid - g * MQ_W < MQ_W ? nvalid - g * MQ_W : MQ_W, NULL);
                else
                    fn[pick + (two ? 4 : 0)](gp, gstride, h, xr, nb, y + (size_t)r * ldy + ob, ldy, nvalid,
                                             h != 0 ? NULL : !eight ? (r == 0 ? pf : NULL)
                                                        : r + nr >= n_rows && o + 2 * SL_QP_GROUP <= o1 ? gp + gstride
                                                                                                       : NULL);
                r += nr;
            }
        }
        o += span;
    }
#if MQ_VNNI == 2
    sl__avx512_clean();
#else
    SL_AVX2_LEAVE();
#endif
}

#undef MQ_INSTANCES
#undef MQ_INSTANCE
#undef MQ_PICK
#undef MQ_XBS
#undef MQ_LOADQ
#undef MQ_AND
#undef MQ_XOR
#undef MQ_SRL4
#undef MQ_SET8
#undef MQ_SET32
#undef MQ_ZEROI
#undef MQ_CVT
#undef MQ_FMA
#undef MQ_MUL
#undef MQ_ADDF
#undef MQ_SETF
#undef MQ_ZEROF
#undef MQ_PH
#undef MQ_STOREF

/* The parameters, so the next instance can define its own. */
#undef MQ
#undef MQ_VNNI
#undef MQ_W
#undef MQ_RT
