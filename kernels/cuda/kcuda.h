/*
 * kcuda.h — our CUDA kernels, behind C-callable launchers (DESIGN.md §2: kernels/ is leaf compute).
 *
 * Every launcher takes the stream to run on, raw device pointers and sizes, enqueues its kernel(s) and returns
 * the launch's cudaError_t (cudaGetLastError after the launch): errors of the kernel's execution surface at
 * the caller's next synchronization, as with any asynchronous CUDA work. No launcher allocates, synchronizes
 * or touches host memory; an empty problem (a zero size) launches nothing and returns cudaSuccess.
 *
 * Each one computes what its CPU twin in kernels/cpu computes (same layouts, same formulas), in f32 with f32
 * accumulation; the runtime's CUDA backend (runtime/backend_cuda.c) is the only caller, and the backend tests
 * (tests/runtime/test_cuda_ops.c) hold them to the CPU backend with normalized error bounds.
 *
 * Half-precision buffers are typed sl_fp16_t (raw IEEE half bits, kdtype.h) so that C callers need no CUDA
 * half header; the kernels read them as __half.
 */
#ifndef SL_KCUDA_H
#define SL_KCUDA_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "kdtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest head_dim the attention kernel takes: each lane of a warp holds head_dim / 32 elements of the query
 * and of its accumulator in registers (8 at 256), which covers every llama-family model (64, 80, 96, 128, 256). */
#define SL_KC_ATT_MAX_HEAD_DIM 256

/* dst[i] = (half)src[i], round to nearest even (as sl_f32_to_fp16); n elements. */
cudaError_t sl_kc_f32_to_f16(cudaStream_t s, const float *src, sl_fp16_t *dst, size_t n);
/* dst[i] = (float)src[i] (exact); n elements. */
cudaError_t sl_kc_f16_to_f32(cudaStream_t s, const sl_fp16_t *src, float *dst, size_t n);

/* The embedding lookup: out[i][0..n_in) = row ids[i] of w, as f32.
 *   w:   [n_w_rows][w_stride] in wtype (SL_DTYPE_F32 or SL_DTYPE_F16), w_stride >= n_in elements
 *   ids: [n] device memory, every id already checked to lie in [0, n_w_rows) by the caller
 *   out: [n][n_in] f32 */
cudaError_t sl_kc_get_rows(cudaStream_t s, const void *w, int wtype, size_t w_stride, int n_in, const int32_t *ids,
                           int n, float *out);

/* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, x and y [n_rows][dim] f32 (y may alias x), weight [dim] f32. */
cudaError_t sl_kc_rms_norm(cudaStream_t s, const float *x, const float *weight, float *y, int n_rows, int dim,
                           float eps);

/* RoPE in place on x [n_rows][n_heads][head_dim] f32, row r at position pos[r] (device [n_rows]): the pairs
 * (2i, 2i + 1), i < n_rot / 2, of every head rotate by pos * freq_scale * freq_base^(-2i / n_rot) (the adjacent-
 * pair layout of kernels/cpu/ops.c sl_k_rope; the angle in double, as there); elements past n_rot are kept. */
cudaError_t sl_kc_rope(cudaStream_t s, float *x, const int32_t *pos, int n_rows, int n_heads, int head_dim,
                       int n_rot, float freq_base, float freq_scale);

/* out[i] = silu(gate[i]) * up[i] over n elements (out may alias gate or up). */
cudaError_t sl_kc_swiglu(cudaStream_t s, const float *gate, const float *up, float *out, size_t n);

/* y[i] += x[i] over n elements (also the reduction step of the single-GPU communicator). */
cudaError_t sl_kc_add(cudaStream_t s, float *y, const float *x, size_t n);

/* Stores row r of k and v ([n_rows][n_head_kv * head_dim] f32) into slot slots[r] (device [n_rows]) of the pools
 * ([n_slots][n_head_kv][head_dim] in kv_type: SL_DTYPE_F32, or SL_DTYPE_F16 rounded to nearest even). */
cudaError_t sl_kc_kv_store(cudaStream_t s, void *k_pool, void *v_pool, int kv_type, const float *k, const float *v,
                           const int64_t *slots, int n_rows, int n_head_kv, int head_dim);

/* Paged attention, one query row per token (decode steps and prefill chunks alike).
 *   q, out:       [n_rows][n_head][head_dim] f32
 *   k/v_pool:     [n_slots][n_head_kv][head_dim] in kv_type (F32 or F16)
 *   block_tables: [n_seqs][max_blocks] int32, dense (unused entries never read)
 *   row_seq:      [n_rows] sequence (row of block_tables) of each query row
 *   row_n_ctx:    [n_rows] tokens the row attends to, positions [0, n_ctx) of its sequence; 0 gives zeros
 * Query head h reads KV head h / (n_head / n_head_kv) (GQA). head_dim <= SL_KC_ATT_MAX_HEAD_DIM, else
 * cudaErrorInvalidValue. All index arrays are device memory. */
cudaError_t sl_kc_attention(cudaStream_t s, const float *q, float *out, int n_rows, int n_head, int n_head_kv,
                            int head_dim, const void *k_pool, const void *v_pool, int kv_type,
                            const int32_t *block_tables, int max_blocks, int block_size, const int32_t *row_seq,
                            const int32_t *row_n_ctx, float scale);

#ifdef __cplusplus
}
#endif

#endif /* SL_KCUDA_H */
