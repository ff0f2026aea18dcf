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
 * Grouped-query attention: query head h reads KV head h / (n_head / n_head_kv). The AVX2 loops give the
 * scalar bits; head_dim that is not a multiple of 16 (scores) or 8 (values) is finished with scalar code.
 * Rows are read as F32 or F16 (converted exactly on load).
 */
#include "kcpu_impl.h"

/* Element offset of (token t, kv head) in a pool. */
static inline size_t sl_att_row(const int32_t *block_table, int block_size, int t, int n_head_kv, int kvh,
                                int head_dim) {
    const int64_t slot = (int64_t)block_table[t / block_size] * block_size + t % block_size;
    return ((size_t)slot * (size_t)n_head_kv + (size_t)kvh) * (size_t)head_dim;
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
    for (int t = 0; t < n_ctx; t++) {
        const size_t at = sl_att_row(block_table, block_size, t, n_head_kv, kvh, head_dim);
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

/* out[d] = sum over t of p[t] * V[t][d] in token order, for d in [0, head_dim & ~7); returns that bound.
 * Eight ymm accumulators (64 dims, the common head size) per pass over the tokens. */
SL_TARGET_AVX2 static int sl_att_values_avx2(const float *p, const void *v_pool, int kv_type,
                                             const int32_t *block_table, int block_size, int n_ctx, int n_head_kv,
                                             int kvh, int head_dim, float *out) {
    const int n8 = head_dim & ~7;
    for (int d0 = 0; d0 < n8; d0 += 64) {
        const int nv = (n8 - d0 < 64 ? n8 - d0 : 64) / 8;
        __m256 acc[8];
        for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
        for (int t = 0; t < n_ctx; t++) {
            const size_t at = sl_att_row(block_table, block_size, t, n_head_kv, kvh, head_dim) + (size_t)d0;
            const __m256 pt = _mm256_set1_ps(p[t]);
            for (int j = 0; j < nv; j++) acc[j] = _mm256_fmadd_ps(pt, sl_kv_load8_avx2(v_pool, kv_type, at + 8 * j), acc[j]);
        }
        for (int j = 0; j < nv; j++) _mm256_storeu_ps(out + d0 + 8 * j, acc[j]);
    }
    SL_AVX2_LEAVE();
    return n8;
}
#endif

void sl_k_attention(const float *q, float *out, int h0, int h1, int n_head, int n_head_kv, int head_dim,
                    const void *k_pool, const void *v_pool, int kv_type, const int32_t *block_table,
                    int block_size, int n_ctx, float scale, float *scratch) {
    if (n_head_kv <= 0 || head_dim <= 0 || block_size <= 0) return;
    h0 = h0 < 0 ? 0 : h0;
    h1 = h1 > n_head ? n_head : h1;
    const int group = n_head / n_head_kv > 0 ? n_head / n_head_kv : 1; /* query heads per KV head */
#if SL_KCPU_X86
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
        if (use_avx2) {
            sl_att_scores_avx2(qh, k_pool, kv_type, block_table, block_size, n_ctx, n_head_kv, kvh, head_dim, scale,
                               scratch);
        } else
#endif
        {
            for (int t = 0; t < n_ctx; t++)
                scratch[t] = sl_att_dot_scalar(qh, k_pool, kv_type,
                                               sl_att_row(block_table, block_size, t, n_head_kv, kvh, head_dim),
                                               head_dim) * scale;
        }
        float max = scratch[0];
        for (int t = 1; t < n_ctx; t++) max = scratch[t] > max ? scratch[t] : max;
        const float inv = 1.0f / sl__exp_sum(scratch, n_ctx, max);
#if SL_KCPU_X86
        if (use_avx2)
            d = sl_att_values_avx2(scratch, v_pool, kv_type, block_table, block_size, n_ctx, n_head_kv, kvh, head_dim,
                                   oh);
#endif
        for (; d < head_dim; d++) {
            float acc = 0.0f;
            for (int t = 0; t < n_ctx; t++)
                acc = fmaf(scratch[t],
                           sl_kv_get(v_pool, kv_type, sl_att_row(block_table, block_size, t, n_head_kv, kvh, head_dim) + d),
                           acc);
            oh[d] = acc;
        }
        for (d = 0; d < head_dim; d++) oh[d] *= inv;
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
