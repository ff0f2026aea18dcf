/*
 * attention.c — one query token's attention over the paged KV cache, and the store of a token's K/V.
 *
 * The cache is a pool of token slots (kcpu.h); a sequence reaches its tokens through a block table, so
 * this kernel gathers K and V rows slot by slot and never assumes they are contiguous. Per query head it
 * makes two passes over the visible tokens: scores (canonical dot of q with K, times scale) into the
 * caller's scratch, then softmax weights (canonical exp and sum) and the weighted sum of V rows, each output
 * element accumulated over tokens in order with fma and divided by the sum at the end. Two passes rather
 * than an online softmax because the scratch is free and a fixed order needs no rescaling of partial sums.
 *
 * Grouped-query attention: query head h reads KV head h / (n_head / n_head_kv). The AVX2 and AVX-512 loops
 * give the scalar bits (AVX-512 folds eight keys' lane sums at once, across registers); head_dim that is not
 * a multiple of 16 (scores) or 8 / 16 (values) is finished with scalar code.
 * Rows are read as F32 or F16 (converted exactly on load).
 */
#include "kcpu_impl.h"

/* Element offsets of a sequence's tokens 0, 1, 2, ... for one KV head, in order: the slot of token t is
 * block_table[t / block_size] * block_size + t % block_size, walked with a counter instead of a division per
 * key (a division costs more than the 64-dimension dot it would address). */
typedef struct sl_att_it {
    const int32_t *bt;
    int bs, blk, in; /* block size; the next token's block index and position within it */
    size_t mul, add; /* offset = slot * mul + add: mul = n_head_kv * head_dim, add = kvh * head_dim */
} sl_att_it;

static inline sl_att_it sl_att_begin(const int32_t *block_table, int block_size, int n_head_kv, int kvh,
                                     int head_dim) {
    sl_att_it it = {block_table, block_size, 0, 0, (size_t)n_head_kv * (size_t)head_dim,
                    (size_t)kvh * (size_t)head_dim};
    return it;
}

static inline size_t sl_att_next(sl_att_it *it) {
    const size_t at = ((size_t)it->bt[it->blk] * (size_t)it->bs + (size_t)it->in) * it->mul + it->add;
    if (++it->in == it->bs) {
        it->in = 0;
        it->blk++;
    }
    return at;
}

static inline float sl_kv_get(const void *pool, int kv_type, size_t i) {
    return kv_type == SL_DTYPE_F16 ? sl_fp16_to_f32(((const sl_fp16_t *)pool)[i]) : ((const float *)pool)[i];
}

/* Canonical dot of q with K row at element offset `at`, lanes part first, tail by the caller's rule. */
static float sl_att_dot_scalar(const float *q, const void *k_pool, int kv_type, size_t at, int head_dim) {
    float acc[16] = {0};
    const int n16 = head_dim & ~15;
    for (int d = 0; d < n16; d += 16)
        for (int l = 0; l < 16; l++) acc[l] = fmaf(q[d + l], sl_kv_get(k_pool, kv_type, at + d + l), acc[l]);
    float s = sl__fold16(acc);
    for (int d = n16; d < head_dim; d++) s = fmaf(q[d], sl_kv_get(k_pool, kv_type, at + d), s);
    return s;
}

#if SL_KCPU_X86
SL_TARGET_AVX2 SL_INLINE float sl_kv_get_avx2(const void *pool, int kv_type, size_t i) {
    return kv_type == SL_DTYPE_F16 ? sl__fp16_to_f32_f16c(((const sl_fp16_t *)pool)[i]) : ((const float *)pool)[i];
}

SL_TARGET_AVX2 SL_INLINE __m256 sl_kv_load8_avx2(const void *pool, int kv_type, size_t i) {
    if (kv_type == SL_DTYPE_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const sl_fp16_t *)pool + i)));
    return _mm256_loadu_ps((const float *)pool + i);
}

SL_TARGET_AVX2 static void sl_att_scores_avx2(const float *q, const void *k_pool, int kv_type,
                                              const int32_t *block_table, int block_size, int n_ctx, int n_head_kv,
                                              int kvh, int head_dim, float scale, float *scores) {
    const int n16 = head_dim & ~15;
    sl_att_it it = sl_att_begin(block_table, block_size, n_head_kv, kvh, head_dim);
    for (int t = 0; t < n_ctx; t++) {
        const size_t at = sl_att_next(&it);
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        for (int d = 0; d < n16; d += 16) {
            lo = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), sl_kv_load8_avx2(k_pool, kv_type, at + d), lo);
            hi = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), sl_kv_load8_avx2(k_pool, kv_type, at + d + 8), hi);
        }
        float s = sl__fold16_avx2(lo, hi);
        for (int d = n16; d < head_dim; d++) s = fmaf(q[d], sl_kv_get_avx2(k_pool, kv_type, at + d), s);
        scores[t] = s * scale;
    }
    SL_AVX2_LEAVE();
}

/* One pass of the values over the tokens for nv (1..8) W-lane chunks at d0, in named registers (an accumulator
 * array indexed by a run-time bound stays in memory, and every fma then waits for a store to forward), for one
 * V element type: inlined with f16 and nv constant, so the loop holds no branch. One body for both widths:
 * VEC the vector type, W its lanes, LOAD(pool, type, i) the V elements [i, i + W) as f32. */
#define SL_ATT_VPASS_DEFINE(NAME, TARGET, VEC, W, SETZERO, SET1, FMADD, LOAD, STOREU)                              \
    TARGET SL_INLINE void NAME(const float *p, const void *v_pool, const int f16, const int nv, sl_att_it it,      \
                               int n_ctx, size_t d0, float *out) {                                                \
        const int kv_type = f16 ? SL_DTYPE_F16 : SL_DTYPE_F32;                                                    \
        VEC a0 = SETZERO(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;                        \
        for (int t = 0; t < n_ctx; t++) {                                                                         \
            const size_t at = sl_att_next(&it) + d0;                                                              \
            const VEC pt = SET1(p[t]);                                                                            \
            a0 = FMADD(pt, LOAD(v_pool, kv_type, at), a0);                                                        \
            if (nv > 1) a1 = FMADD(pt, LOAD(v_pool, kv_type, at + W), a1);                                        \
            if (nv > 2) a2 = FMADD(pt, LOAD(v_pool, kv_type, at + 2 * W), a2);                                    \
            if (nv > 3) a3 = FMADD(pt, LOAD(v_pool, kv_type, at + 3 * W), a3);                                    \
            if (nv > 4) a4 = FMADD(pt, LOAD(v_pool, kv_type, at + 4 * W), a4);                                    \
            if (nv > 5) a5 = FMADD(pt, LOAD(v_pool, kv_type, at + 5 * W), a5);                                    \
            if (nv > 6) a6 = FMADD(pt, LOAD(v_pool, kv_type, at + 6 * W), a6);                                    \
            if (nv > 7) a7 = FMADD(pt, LOAD(v_pool, kv_type, at + 7 * W), a7);                                    \
        }                                                                                                         \
        STOREU(out, a0);                                                                                          \
        if (nv > 1) STOREU(out + W, a1);                                                                          \
        if (nv > 2) STOREU(out + 2 * W, a2);                                                                      \
        if (nv > 3) STOREU(out + 3 * W, a3);                                                                      \
        if (nv > 4) STOREU(out + 4 * W, a4);                                                                      \
        if (nv > 5) STOREU(out + 5 * W, a5);                                                                      \
        if (nv > 6) STOREU(out + 6 * W, a6);                                                                      \
        if (nv > 7) STOREU(out + 7 * W, a7);                                                                      \
    }
SL_ATT_VPASS_DEFINE(sl_att_vpass_avx2, SL_TARGET_AVX2, __m256, 8, _mm256_setzero_ps, _mm256_set1_ps, _mm256_fmadd_ps,
                    sl_kv_load8_avx2, _mm256_storeu_ps)

/* out[d] = sum over t of p[t] * V[t][d] in token order, for d in [0, head_dim & ~(W - 1)); returns that bound.
 * Passes of 64 dims over the tokens, each dispatched to the pass inlined for its chunk count and V type. */
#define SL_ATT_VALUES_DEFINE(NAME, TARGET, VPASS, W, LEAVE)                                                        \
    TARGET static int NAME(const float *p, const void *v_pool, int kv_type, const int32_t *block_table,           \
                           int block_size, int n_ctx, int n_head_kv, int kvh, int head_dim, float *out) {          \
        const int nw = head_dim & ~(W - 1), f16 = kv_type == SL_DTYPE_F16;                                      \
        const sl_att_it it = sl_att_begin(block_table, block_size, n_head_kv, kvh, head_dim);                   \
        for (int d0 = 0; d0 < nw; d0 += 64) {                                                                   \
            const int nv = (nw - d0 < 64 ? nw - d0 : 64) / W;                                                   \
            float *o = out + d0;                                                                                \
            switch (nv + 8 * f16) {                                                                             \
            case 8: VPASS(p, v_pool, 0, 8, it, n_ctx, (size_t)d0, o); break;                                    \
            case 7: VPASS(p, v_pool, 0, 7, it, n_ctx, (size_t)d0, o); break;                                    \
            case 6: VPASS(p, v_pool, 0, 6, it, n_ctx, (size_t)d0, o); break;                                    \
            case 5: VPASS(p, v_pool, 0, 5, it, n_ctx, (size_t)d0, o); break;                                    \
            case 4: VPASS(p, v_pool, 0, 4, it, n_ctx, (size_t)d0, o); break;                                    \
            case 3: VPASS(p, v_pool, 0, 3, it, n_ctx, (size_t)d0, o); break;                                    \
            case 2: VPASS(p, v_pool, 0, 2, it, n_ctx, (size_t)d0, o); break;                                    \
            case 1: VPASS(p, v_pool, 0, 1, it, n_ctx, (size_t)d0, o); break;                                    \
            case 16: VPASS(p, v_pool, 1, 8, it, n_ctx, (size_t)d0, o); break;                                   \
            case 15: VPASS(p, v_pool, 1, 7, it, n_ctx, (size_t)d0, o); break;                                   \
            case 14: VPASS(p, v_pool, 1, 6, it, n_ctx, (size_t)d0, o); break;                                   \
            case 13: VPASS(p, v_pool, 1, 5, it, n_ctx, (size_t)d0, o); break;                                   \
            case 12: VPASS(p, v_pool, 1, 4, it, n_ctx, (size_t)d0, o); break;                                   \
            case 11: VPASS(p, v_pool, 1, 3, it, n_ctx, (size_t)d0, o); break;                                   \
            case 10: VPASS(p, v_pool, 1, 2, it, n_ctx, (size_t)d0, o); break;                                   \
            default: VPASS(p, v_pool, 1, 1, it, n_ctx, (size_t)d0, o); break;                                   \
            }                                                                                                   \
        }                                                                                                       \
        LEAVE();                                                                                                \
        return nw;                                                                                              \
    }
SL_ATT_VALUES_DEFINE(sl_att_values_avx2, SL_TARGET_AVX2, sl_att_vpass_avx2, 8, SL_AVX2_LEAVE)
#endif

#if SL_KCPU_X86
/* ---- AVX-512: eight keys' dots at once, their canonical folds done across keys ---------------------------- */
SL_TARGET_AVX512 SL_INLINE __m512 sl_kv_load16_avx512(const void *pool, int kv_type, size_t i) {
    if (kv_type == SL_DTYPE_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const sl_fp16_t *)pool + i)));
    return _mm512_loadu_ps((const float *)pool + i);
}

/* Lane-index vectors of the transposed fold (below): lo/hi halves of pairs, quarters, eighths, sixteenths. */
#define SL_IDX16(...) _mm512_setr_epi32(__VA_ARGS__)

/* scores[t] = canonical dot(q, K[t]) * scale for t < n_ctx, bit for bit the scalar recipe. The 16 lane sums of
 * each key are computed in a zmm (lane l takes dimensions 16 i + l in order of i, fused multiply-adds), and the
 * fold 16 -> 8 -> 4 -> 2 -> 1 (sl__fold16: the upper half added onto the lower, at every level) runs on eight
 * keys at once: each level pairs two registers with two permutes and adds them, so the same two numbers are
 * added as in the per-key fold (a + b == b + a exactly), with lanes now holding different keys. Keys are
 * walked (and prefetched) 16 at a time, folded 8 at a time; keys left over (fewer than 16) fold one by one. */
SL_TARGET_AVX512 SL_INLINE __m512 sl_att_dot16_any(const __m512 *qv, int nq, const void *k_pool, int kv_type,
                                                  size_t at) {
    __m512 a = _mm512_fmadd_ps(qv[0], sl_kv_load16_avx512(k_pool, kv_type, at), _mm512_setzero_ps());
    for (int i = 1; i < nq; i++) a = _mm512_fmadd_ps(qv[i], sl_kv_load16_avx512(k_pool, kv_type, at + 16 * i), a);
    return a;
}

SL_TARGET_AVX512 SL_INLINE __m512 sl_att_dot16_8(__m512 q0, __m512 q1, __m512 q2, __m512 q3, __m512 q4, __m512 q5,
                                                __m512 q6, __m512 q7, const int nq, const void *k_pool,
                                                const int kv_type, size_t at) {
    __m512 a = _mm512_fmadd_ps(q0, sl_kv_load16_avx512(k_pool, kv_type, at), _mm512_setzero_ps());
    if (nq > 1) a = _mm512_fmadd_ps(q1, sl_kv_load16_avx512(k_pool, kv_type, at + 16), a);
    if (nq > 2) a = _mm512_fmadd_ps(q2, sl_kv_load16_avx512(k_pool, kv_type, at + 32), a);
    if (nq > 3) a = _mm512_fmadd_ps(q3, sl_kv_load16_avx512(k_pool, kv_type, at + 48), a);
    if (nq > 4) a = _mm512_fmadd_ps(q4, sl_kv_load16_avx512(k_pool, kv_type, at + 64), a);
    if (nq > 5) a = _mm512_fmadd_ps(q5, sl_kv_load16_avx512(k_pool, kv_type, at + 80), a);
    if (nq > 6) a = _mm512_fmadd_ps(q6, sl_kv_load16_avx512(k_pool, kv_type, at + 96), a);
    if (nq > 7) a = _mm512_fmadd_ps(q7, sl_kv_load16_avx512(k_pool, kv_type, at + 112), a);
    return a;
}

SL_TARGET_AVX512 SL_INLINE void sl_att_scores_avx512_body(const float *q, const void *k_pool, const void *v_pool,
                                                          const int f16, const int NQ, const int32_t *block_table,
                                                          int block_size, int n_ctx, int n_head_kv, int kvh,
                                                          int head_dim, float scale, float *scores) {
    /* inlined with f16 and NQ (the query's 16-lane chunks; 0: head_dim's) constant, so the loops hold no type
     * branch and, for the common head sizes, the query stays in registers */
    const int kv_type = f16 ? SL_DTYPE_F16 : SL_DTYPE_F32;
    const int n16 = head_dim & ~15, nq = NQ ? NQ : n16 / 16;
    const __m512i l1a = SL_IDX16(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                  l1b = SL_IDX16(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31),
                  l2a = SL_IDX16(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27),
                  l2b = SL_IDX16(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31),
                  l3a = SL_IDX16(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29),
                  l3b = SL_IDX16(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31),
                  l4a = SL_IDX16(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
                  l4b = SL_IDX16(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 qv[SL_K_ROPE_MAX_ROT / 16]; /* head_dim <= 1024: the query's 16-lane chunks */
    for (int i = 0; i < nq; i++) qv[i] = _mm512_loadu_ps(q + 16 * i);
    /* with NQ <= 8 constant, the chunks in named registers (an array that size stays in memory) */
    const __m512 z = _mm512_setzero_ps();
    const __m512 q0 = NQ > 0 ? qv[0] : z, q1 = NQ > 1 ? qv[1] : z, q2 = NQ > 2 ? qv[2] : z, q3 = NQ > 3 ? qv[3] : z,
                 q4 = NQ > 4 ? qv[4] : z, q5 = NQ > 5 ? qv[5] : z, q6 = NQ > 6 ? qv[6] : z, q7 = NQ > 7 ? qv[7] : z;
    /* the lane sums of q . K row at `at`: chunks in order, fused multiply-adds from zero */
#define SL_DOT16(at_)                                                                                             \
    (NQ == 0 ? sl_att_dot16_any(qv, nq, k_pool, kv_type, at_)                                                     \
             : sl_att_dot16_8(q0, q1, q2, q3, q4, q5, q6, q7, NQ, k_pool, kv_type, at_))
    /* The cache rows of a step's sequences come from L3 or memory (the whole cache outgrows L2): while one batch
     * of 16 keys is folded, the next batch's K rows and this batch's V rows (for the values pass) are
     * prefetched, so the misses overlap the arithmetic instead of following one another. */
    const size_t el = kv_type == SL_DTYPE_F16 ? 2 : 4, row_bytes = (size_t)head_dim * el;
    sl_att_it ahead = sl_att_begin(block_table, block_size, n_head_kv, kvh, head_dim);
    size_t nat[16];
    int n_nat = 0; /* keys [t, t + n_nat) have their offsets in nat */
    int t = 0;
    if (nq > 0) {
        n_nat = n_ctx < 16 ? n_ctx : 16;
        for (int j = 0; j < n_nat; j++) nat[j] = sl_att_next(&ahead);
    }
    for (; t + 16 <= n_ctx && nq > 0; t += 16) {
        __m512 a[8];
        size_t at[16];
        memcpy(at, nat, sizeof at);
        n_nat = n_ctx - (t + 16) < 16 ? n_ctx - (t + 16) : 16;
        for (int j = 0; j < n_nat; j++) {
            nat[j] = sl_att_next(&ahead);
            for (size_t off = 0; off < row_bytes; off += 64)
                _mm_prefetch((const char *)k_pool + nat[j] * el + off, _MM_HINT_T0);
        }
        for (int j = 0; j < 16; j++)
            for (size_t off = 0; off < row_bytes; off += 64)
                _mm_prefetch((const char *)v_pool + at[j] * el + off, _MM_HINT_T0);
        /* Two halves of 8 keys, each folded on its own: 8 accumulators leave room for the query and the index
         * vectors (16 did not, and spilled). The last level pairs the one level-3 register with itself: lanes
         * 0..7 then hold the 8 keys' sums, made of the same additions as the 16-key fold. */
        float sv[16];
        for (int half = 0; half < 2; half++) {
            SL_UNROLL
            for (int j = 0; j < 8; j++) a[j] = SL_DOT16(at[8 * half + j]);
            __m512 r1[4], r2[2];
            SL_UNROLL
            for (int k = 0; k < 4; k++)
                r1[k] = _mm512_add_ps(_mm512_permutex2var_ps(a[2 * k], l1a, a[2 * k + 1]),
                                      _mm512_permutex2var_ps(a[2 * k], l1b, a[2 * k + 1]));
            SL_UNROLL
            for (int k = 0; k < 2; k++)
                r2[k] = _mm512_add_ps(_mm512_permutex2var_ps(r1[2 * k], l2a, r1[2 * k + 1]),
                                      _mm512_permutex2var_ps(r1[2 * k], l2b, r1[2 * k + 1]));
            const __m512 r3 = _mm512_add_ps(_mm512_permutex2var_ps(r2[0], l3a, r2[1]),
                                            _mm512_permutex2var_ps(r2[0], l3b, r2[1]));
            const __m512 h = _mm512_add_ps(_mm512_permutex2var_ps(r3, l4a, r3), _mm512_permutex2var_ps(r3, l4b, r3));
            _mm256_storeu_ps(sv + 8 * half, _mm512_castps512_ps256(h));
        }
        for (int j = 0; j < 16; j++) {
            float x = sv[j];
            for (int d = n16; d < head_dim; d++) x = fmaf(q[d], sl_kv_get(k_pool, kv_type, at[j] + d), x);
            scores[t + j] = x * scale;
        }
    }
    for (int j = 0; t < n_ctx; t++, j++) { /* the rest: one key at a time, the fold within the register */
        const size_t at = j < n_nat ? nat[j] : sl_att_next(&ahead);
        const __m512 a = nq > 0 ? SL_DOT16(at) : z;
        float x = sl__fold16_avx2(_mm512_castps512_ps256(a),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
        for (int d = n16; d < head_dim; d++) x = fmaf(q[d], sl_kv_get(k_pool, kv_type, at + d), x);
        scores[t] = x * scale;
    }
#undef SL_DOT16
    sl__avx512_clean();
}

SL_TARGET_AVX512 static void sl_att_scores_avx512(const float *q, const void *k_pool, const void *v_pool,
                                                  int kv_type, const int32_t *block_table, int block_size, int n_ctx,
                                                  int n_head_kv, int kvh, int head_dim, float scale, float *scores) {
#define SL_SPASS(F, N)                                                                                           \
    sl_att_scores_avx512_body(q, k_pool, v_pool, F, N, block_table, block_size, n_ctx, n_head_kv, kvh, head_dim, \
                              scale, scores)
    const int f16 = kv_type == SL_DTYPE_F16, nq = head_dim / 16;
    if (f16) {
        if (nq == 4) SL_SPASS(1, 4); else if (nq == 8) SL_SPASS(1, 8); else SL_SPASS(1, 0);
    } else {
        if (nq == 4) SL_SPASS(0, 4); else if (nq == 8) SL_SPASS(0, 8); else SL_SPASS(0, 0);
    }
#undef SL_SPASS
}

/* The values pass on zmm: 16 lanes, nv <= 4 (64 dims) per pass. */
SL_ATT_VPASS_DEFINE(sl_att_vpass_avx512, SL_TARGET_AVX512, __m512, 16, _mm512_setzero_ps, _mm512_set1_ps,
                    _mm512_fmadd_ps, sl_kv_load16_avx512, _mm512_storeu_ps)
SL_ATT_VALUES_DEFINE(sl_att_values_avx512, SL_TARGET_AVX512, sl_att_vpass_avx512, 16, sl__avx512_clean)
#undef SL_ATT_VALUES_DEFINE
#undef SL_ATT_VPASS_DEFINE
#endif

/* The largest score, vectorized (an order-free reduction: any grouping gives the same value). */
#if SL_KCPU_X86
SL_TARGET_AVX2 static float sl_att_max_avx2(const float *x, int n) {
    __m256 m = _mm256_set1_ps(x[0]);
    int t = 0;
    /* max_ps(a, b) gives b when either is NaN: a NaN score is skipped, as the scalar loop skips it (only a
     * NaN first score, which m starts from, stays), so the value is the scalar loop's */
    for (; t + 8 <= n; t += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + t), m);
    float v[8], r = x[0];
    _mm256_storeu_ps(v, m);
    SL_AVX2_LEAVE();
    for (int l = 0; l < 8; l++) r = v[l] > r ? v[l] : r;
    for (; t < n; t++) r = x[t] > r ? x[t] : r;
    return r;
}
#endif

static float sl_att_max(const float *x, int n) {
#if SL_KCPU_X86
    if (sl__kcpu_level() >= SL_SIMD_AVX2) return sl_att_max_avx2(x, n);
#endif
    float r = x[0];
    for (int t = 1; t < n; t++) r = x[t] > r ? x[t] : r;
    return r;
}

void sl_k_attention(const float *q, float *out, int h0, int h1, int n_head, int n_head_kv, int head_dim,
                    const void *k_pool, const void *v_pool, int kv_type, const int32_t *block_table,
                    int block_size, int n_ctx, float scale, float *scratch) {
    if (n_head_kv <= 0 || head_dim <= 0 || block_size <= 0) return;
    h0 = h0 < 0 ? 0 : h0;
    h1 = h1 > n_head ? n_head : h1;
    const int group = n_head / n_head_kv > 0 ? n_head / n_head_kv : 1; /* query heads per KV head */
#if SL_KCPU_X86
    const int use_avx512 = sl__kcpu_level() == SL_SIMD_AVX512 && head_dim <= SL_K_ROPE_MAX_ROT;
    const int use_avx2 = sl__kcpu_level() >= SL_SIMD_AVX2;
#endif
    for (int h = h0; h < h1; h++) {
        const float *qh = q + (size_t)h * head_dim;
        float *oh = out + (size_t)h * head_dim;
        const int kvh = h / group;
        if (n_ctx <= 0) { /* nothing visible: a zero output rather than 0/0 */
            memset(oh, 0, sizeof(float) * (size_t)head_dim);
            continue;
        }
        int d = 0;
#if SL_KCPU_X86
        if (use_avx512) {
            sl_att_scores_avx512(qh, k_pool, v_pool, kv_type, block_table, block_size, n_ctx, n_head_kv, kvh, head_dim,
                                 scale, scratch);
        } else if (use_avx2) {
            sl_att_scores_avx2(qh, k_pool, kv_type, block_table, block_size, n_ctx, n_head_kv, kvh, head_dim, scale,
                               scratch);
        } else
#endif
        {
            sl_att_it it = sl_att_begin(block_table, block_size, n_head_kv, kvh, head_dim);
            for (int t = 0; t < n_ctx; t++) scratch[t] = sl_att_dot_scalar(qh, k_pool, kv_type, sl_att_next(&it), head_dim) * scale;
        }
        const float max = sl_att_max(scratch, n_ctx);
        const float inv = 1.0f / sl__exp_sum(scratch, n_ctx, max);
#if SL_KCPU_X86
        if (use_avx512)
            d = sl_att_values_avx512(scratch, v_pool, kv_type, block_table, block_size, n_ctx, n_head_kv, kvh, head_dim,
                                     oh);
        else if (use_avx2)
            d = sl_att_values_avx2(scratch, v_pool, kv_type, block_table, block_size, n_ctx, n_head_kv, kvh, head_dim,
                                   oh);
#endif
        for (; d < head_dim; d++) {
            float acc = 0.0f;
            sl_att_it it = sl_att_begin(block_table, block_size, n_head_kv, kvh, head_dim);
            for (int t = 0; t < n_ctx; t++) acc = fmaf(scratch[t], sl_kv_get(v_pool, kv_type, sl_att_next(&it) + d), acc);
            oh[d] = acc;
        }
        sl__scale(oh, head_dim, inv);
    }
}

void sl_k_kv_store(void *pool, int kv_type, int64_t slot, const float *src, int n_head_kv, int head_dim) {
    const size_t n = (size_t)n_head_kv * (size_t)head_dim;
    const size_t at = (size_t)slot * n;
    if (kv_type == SL_DTYPE_F32) {
        memcpy((float *)pool + at, src, n * sizeof(float));
    } else if (kv_type == SL_DTYPE_F16) {
        sl_k_quantize_row(SL_DTYPE_F16, src, (sl_fp16_t *)pool + at, (int64_t)n);
    }
}
