/*
 * attention.cu — paged attention on the GPU: one block per (query row, head).
 *
 * The KV cache is a pool of token slots reached through each sequence's block table (models/model.h), so the
 * kernel gathers K and V rows slot by slot, as the CPU kernel does. A block of SL_KC_ATT_WARPS warps splits
 * the row's visible tokens round-robin between its warps; each warp keeps an online softmax (running max m,
 * running sum l, accumulator acc rescaled whenever m grows), its 32 lanes holding head_dim / 32 elements of q
 * and acc each, a token's score being the warp-wide sum of the lanes' partial dots. At the end the warps'
 * states merge through shared memory (acc_w * exp(m_w - M), summed, divided by the merged l).
 *
 * One code path serves decode (n_ctx large, one row per sequence) and prefill chunks (many rows of one
 * sequence, each with its own n_ctx = position + 1, which is the causal mask). It is the simple, correct
 * version first: no split-K over the context and no sharing of K/V loads between the query heads of a GQA
 * group; at decode these reads are small next to the weights a step streams.
 */
#include <cuda_fp16.h>
#include <math.h>

#include "kcuda.h"

/* 4 warps per (row, head): enough tokens in flight per block to hide a gather's latency at short contexts,
 * and the merge's shared memory (4 x 256 floats) stays at 4 KB. */
#define SL_KC_ATT_WARPS 4
#define SL_KC_ATT_PER_LANE (SL_KC_ATT_MAX_HEAD_DIM / 32)

template <typename T> static __device__ __forceinline__ float sl_att_load(const T *p, size_t i);
template <> __device__ __forceinline__ float sl_att_load<float>(const float *p, size_t i) { return p[i]; }
template <> __device__ __forceinline__ float sl_att_load<__half>(const __half *p, size_t i) {
    return __half2float(p[i]);
}

template <typename T>
static __global__ void k_attention(const float *q, float *out, int n_head, int n_head_kv, int head_dim,
                                   const T *k_pool, const T *v_pool, const int32_t *block_tables, int max_blocks,
                                   int block_size, const int32_t *row_seq, const int32_t *row_n_ctx, float scale) {
    __shared__ float sm_m[SL_KC_ATT_WARPS];
    __shared__ float sm_l[SL_KC_ATT_WARPS];
    __shared__ float sm_acc[SL_KC_ATT_WARPS][SL_KC_ATT_MAX_HEAD_DIM];

    const int r = blockIdx.x, h = blockIdx.y; /* rows on x: up to 2^31 - 1 of them */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int group = n_head / n_head_kv > 0 ? n_head / n_head_kv : 1;
    const int kvh = h / group;
    const int n_ctx = row_n_ctx[r];
    const int32_t *bt = block_tables + (size_t)row_seq[r] * (size_t)max_blocks;
    const size_t qo = ((size_t)r * n_head + h) * (size_t)head_dim;

    float qv[SL_KC_ATT_PER_LANE], acc[SL_KC_ATT_PER_LANE];
#pragma unroll
    for (int j = 0; j < SL_KC_ATT_PER_LANE; j++) {
        const int d = lane + 32 * j;
        qv[j] = d < head_dim ? q[qo + d] : 0.0f;
        acc[j] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int t = warp; t < n_ctx; t += SL_KC_ATT_WARPS) {
        const int64_t slot = (int64_t)bt[t / block_size] * block_size + t % block_size;
        const size_t at = ((size_t)slot * (size_t)n_head_kv + (size_t)kvh) * (size_t)head_dim;
        float part = 0.0f;
#pragma unroll
        for (int j = 0; j < SL_KC_ATT_PER_LANE; j++) {
            const int d = lane + 32 * j;
            if (d < head_dim) part = fmaf(qv[j], sl_att_load<T>(k_pool, at + d), part);
        }
        for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
        const float sc = part * scale;
        const float m_new = fmaxf(m, sc);
        const float corr = expf(m - m_new); /* m = -inf on the first token: exp(-inf) = 0, acc and l are 0 */
        const float p = expf(sc - m_new);
        l = l * corr + p;
#pragma unroll
        for (int j = 0; j < SL_KC_ATT_PER_LANE; j++) {
            const int d = lane + 32 * j;
            if (d < head_dim) acc[j] = fmaf(p, sl_att_load<T>(v_pool, at + d), acc[j] * corr);
        }
        m = m_new;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < SL_KC_ATT_PER_LANE; j++) {
        const int d = lane + 32 * j;
        if (d < head_dim) sm_acc[warp][d] = acc[j];
    }
    __syncthreads();
    float big = -INFINITY;
    for (int w = 0; w < SL_KC_ATT_WARPS; w++) big = fmaxf(big, sm_m[w]);
    float wt[SL_KC_ATT_WARPS], total = 0.0f;
    for (int w = 0; w < SL_KC_ATT_WARPS; w++) {
        /* a warp that saw no token (n_ctx < warps) has m = -inf and l = 0: weight 0, never exp(-inf + inf) */
        wt[w] = sm_m[w] == -INFINITY ? 0.0f : expf(sm_m[w] - big);
        total += sm_l[w] * wt[w];
    }
    const float inv = total > 0.0f ? 1.0f / total : 0.0f; /* n_ctx = 0: zeros, as the CPU kernel */
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < SL_KC_ATT_WARPS; w++) o = fmaf(sm_acc[w][d], wt[w], o);
        out[qo + d] = o * inv;
    }
}

extern "C" cudaError_t sl_kc_attention(cudaStream_t s, const float *q, float *out, int n_rows, int n_head,
                                       int n_head_kv, int head_dim, const void *k_pool, const void *v_pool,
                                       int kv_type, const int32_t *block_tables, int max_blocks, int block_size,
                                       const int32_t *row_seq, const int32_t *row_n_ctx, float scale) {
    if (n_rows <= 0 || n_head <= 0) return cudaSuccess;
    if (head_dim <= 0 || head_dim > SL_KC_ATT_MAX_HEAD_DIM || n_head_kv <= 0 || block_size <= 0 || max_blocks < 0 ||
        n_head > 65535) /* gridDim.y's limit */
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)n_rows, (unsigned)n_head);
    const unsigned threads = 32 * SL_KC_ATT_WARPS;
    if (kv_type == SL_DTYPE_F32)
        k_attention<float><<<grid, threads, 0, s>>>(q, out, n_head, n_head_kv, head_dim, (const float *)k_pool,
                                                    (const float *)v_pool, block_tables, max_blocks, block_size,
                                                    row_seq, row_n_ctx, scale);
    else if (kv_type == SL_DTYPE_F16)
        k_attention<__half><<<grid, threads, 0, s>>>(q, out, n_head, n_head_kv, head_dim, (const __half *)k_pool,
                                                     (const __half *)v_pool, block_tables, max_blocks, block_size,
                                                     row_seq, row_n_ctx, scale);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}
