/*
 * ops.cu — the row and element operations of the CUDA backend: conversions, the embedding gather, RMSNorm,
 * RoPE, SwiGLU, add and the KV-cache store (launchers declared in kcuda.h).
 *
 * These are memory-bound and small next to the matrix products, so each is the plainest kernel that reads
 * and writes every element once: element-wise ones run a grid-stride loop over a capped grid, RMSNorm one
 * block per row with a shared-memory reduction. Formulas follow kernels/cpu/ops.c, in f32.
 */
#include <cuda_fp16.h>
#include <math.h>

#include "kcuda.h"

/* 256 threads: a multiple of the warp, enough to hide latency, small enough for any register budget here. */
#define SL_KC_THREADS 256
/* Cap of an element-wise grid: 132 SMs x 16 resident blocks of 256 would be ~2100; 4096 keeps every SM busy
 * on any current part while the grid-stride loop covers larger sizes. */
#define SL_KC_MAX_BLOCKS 4096

static unsigned sl_kc_blocks(size_t n) {
    size_t b = (n + SL_KC_THREADS - 1) / SL_KC_THREADS;
    return (unsigned)(b > SL_KC_MAX_BLOCKS ? SL_KC_MAX_BLOCKS : (b == 0 ? 1 : b));
}

#define SL_KC_GRID_STRIDE(i, n)                                                                              \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ---- conversions ---------------------------------------------------------------------------------------- */
static __global__ void k_f32_to_f16(const float *src, __half *dst, size_t n) {
    SL_KC_GRID_STRIDE(i, n) dst[i] = __float2half_rn(src[i]);
}

static __global__ void k_f16_to_f32(const __half *src, float *dst, size_t n) {
    SL_KC_GRID_STRIDE(i, n) dst[i] = __half2float(src[i]);
}

extern "C" cudaError_t sl_kc_f32_to_f16(cudaStream_t s, const float *src, sl_fp16_t *dst, size_t n) {
    if (n == 0) return cudaSuccess;
    k_f32_to_f16<<<sl_kc_blocks(n), SL_KC_THREADS, 0, s>>>(src, (__half *)dst, n);
    return cudaGetLastError();
}

extern "C" cudaError_t sl_kc_f16_to_f32(cudaStream_t s, const sl_fp16_t *src, float *dst, size_t n) {
    if (n == 0) return cudaSuccess;
    k_f16_to_f32<<<sl_kc_blocks(n), SL_KC_THREADS, 0, s>>>((const __half *)src, dst, n);
    return cudaGetLastError();
}

/* ---- embedding gather ----------------------------------------------------------------------------------- */
template <typename T> static __device__ __forceinline__ float sl_kc_load(const T *p, size_t i);
template <> __device__ __forceinline__ float sl_kc_load<float>(const float *p, size_t i) { return p[i]; }
template <> __device__ __forceinline__ float sl_kc_load<__half>(const __half *p, size_t i) { return __half2float(p[i]); }

template <typename T>
static __global__ void k_get_rows(const T *w, size_t w_stride, int n_in, const int32_t *ids, int n, float *out) {
    const size_t total = (size_t)n * (size_t)n_in;
    SL_KC_GRID_STRIDE(i, total) {
        const size_t r = i / (size_t)n_in, c = i % (size_t)n_in;
        out[i] = sl_kc_load<T>(w, (size_t)ids[r] * w_stride + c);
    }
}

extern "C" cudaError_t sl_kc_get_rows(cudaStream_t s, const void *w, int wtype, size_t w_stride, int n_in,
                                      const int32_t *ids, int n, float *out) {
    const size_t total = (size_t)n * (size_t)(n_in > 0 ? n_in : 0);
    if (total == 0) return cudaSuccess;
    if (wtype == SL_DTYPE_F32)
        k_get_rows<float><<<sl_kc_blocks(total), SL_KC_THREADS, 0, s>>>((const float *)w, w_stride, n_in, ids, n, out);
    else if (wtype == SL_DTYPE_F16)
        k_get_rows<__half><<<sl_kc_blocks(total), SL_KC_THREADS, 0, s>>>((const __half *)w, w_stride, n_in, ids, n,
                                                                         out);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}

/* ---- RMSNorm: one block per row ------------------------------------------------------------------------- */
static __global__ void k_rms_norm(const float *x, const float *weight, float *y, int dim, float eps) {
    __shared__ float warp_sums[SL_KC_THREADS / 32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) total += warp_sums[w]; /* every thread, same order */
    const float scale = 1.0f / sqrtf(total / (float)dim + eps);
    /* All reads of xr happened before the barrier above, so y may alias x. */
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * scale * weight[i];
}

extern "C" cudaError_t sl_kc_rms_norm(cudaStream_t s, const float *x, const float *weight, float *y, int n_rows,
                                      int dim, float eps) {
    if (n_rows <= 0 || dim <= 0) return cudaSuccess;
    k_rms_norm<<<(unsigned)n_rows, SL_KC_THREADS, 0, s>>>(x, weight, y, dim, eps);
    return cudaGetLastError();
}

/* ---- RoPE: one thread per (row, pair), looping over heads (the angle is computed once per pair) -------- */
static __global__ void k_rope(float *x, const int32_t *pos, int n_rows, int n_heads, int head_dim, int n_pairs,
                              int n_rot, double freq_base, double freq_scale) {
    const size_t total = (size_t)n_rows * (size_t)n_pairs;
    SL_KC_GRID_STRIDE(idx, total) {
        const int r = (int)(idx / (size_t)n_pairs), i = (int)(idx % (size_t)n_pairs);
        /* double, as the CPU kernel: a float angle is off by up to pos * 2^-24 rad */
        const double theta = (double)pos[r] * freq_scale * pow(freq_base, -2.0 * i / (double)n_rot);
        double sd, cd;
        sincos(theta, &sd, &cd);
        const float c = (float)cd, sn = (float)sd;
        float *row = x + (size_t)r * (size_t)n_heads * (size_t)head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *p = row + (size_t)h * head_dim + 2 * i;
            const double x0 = p[0], x1 = p[1];
            p[0] = (float)(x0 * c - x1 * sn);
            p[1] = (float)(x0 * sn + x1 * c);
        }
    }
}

extern "C" cudaError_t sl_kc_rope(cudaStream_t s, float *x, const int32_t *pos, int n_rows, int n_heads,
                                  int head_dim, int n_rot, float freq_base, float freq_scale) {
    if (n_rot > head_dim) n_rot = head_dim;
    const int n_pairs = n_rot / 2;
    const size_t total = (size_t)(n_rows > 0 ? n_rows : 0) * (size_t)(n_pairs > 0 ? n_pairs : 0);
    if (total == 0 || n_heads <= 0) return cudaSuccess;
    k_rope<<<sl_kc_blocks(total), SL_KC_THREADS, 0, s>>>(x, pos, n_rows, n_heads, head_dim, n_pairs, n_rot,
                                                         (double)freq_base, (double)freq_scale);
    return cudaGetLastError();
}

/* ---- SwiGLU and add ------------------------------------------------------------------------------------- */
static __global__ void k_swiglu(const float *gate, const float *up, float *out, size_t n) {
    SL_KC_GRID_STRIDE(i, n) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" cudaError_t sl_kc_swiglu(cudaStream_t s, const float *gate, const float *up, float *out, size_t n) {
    if (n == 0) return cudaSuccess;
    k_swiglu<<<sl_kc_blocks(n), SL_KC_THREADS, 0, s>>>(gate, up, out, n);
    return cudaGetLastError();
}

static __global__ void k_add(float *y, const float *x, size_t n) {
    SL_KC_GRID_STRIDE(i, n) y[i] += x[i];
}

extern "C" cudaError_t sl_kc_add(cudaStream_t s, float *y, const float *x, size_t n) {
    if (n == 0) return cudaSuccess;
    k_add<<<sl_kc_blocks(n), SL_KC_THREADS, 0, s>>>(y, x, n);
    return cudaGetLastError();
}

/* ---- KV store ------------------------------------------------------------------------------------------- */
/* f as the pool's element type (round to nearest even for half). */
template <typename T> static __device__ __forceinline__ T sl_kc_from_f32(float f);
template <> __device__ __forceinline__ float sl_kc_from_f32<float>(float f) { return f; }
template <> __device__ __forceinline__ __half sl_kc_from_f32<__half>(float f) { return __float2half_rn(f); }

template <typename T>
static __global__ void k_kv_store(T *k_pool, T *v_pool, const float *k, const float *v, const int64_t *slots,
                                  int n_rows, int row) {
    const size_t total = (size_t)n_rows * (size_t)row;
    SL_KC_GRID_STRIDE(i, total) {
        const size_t r = i / (size_t)row, c = i % (size_t)row;
        const size_t at = (size_t)slots[r] * (size_t)row + c;
        k_pool[at] = sl_kc_from_f32<T>(k[i]);
        v_pool[at] = sl_kc_from_f32<T>(v[i]);
    }
}

extern "C" cudaError_t sl_kc_kv_store(cudaStream_t s, void *k_pool, void *v_pool, int kv_type, const float *k,
                                      const float *v, const int64_t *slots, int n_rows, int n_head_kv, int head_dim) {
    const int row = n_head_kv * head_dim;
    const size_t total = (size_t)(n_rows > 0 ? n_rows : 0) * (size_t)(row > 0 ? row : 0);
    if (total == 0) return cudaSuccess;
    if (kv_type == SL_DTYPE_F32)
        k_kv_store<float><<<sl_kc_blocks(total), SL_KC_THREADS, 0, s>>>((float *)k_pool, (float *)v_pool, k, v, slots,
                                                                        n_rows, row);
    else if (kv_type == SL_DTYPE_F16)
        k_kv_store<__half><<<sl_kc_blocks(total), SL_KC_THREADS, 0, s>>>((__half *)k_pool, (__half *)v_pool, k, v,
                                                                         slots, n_rows, row);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}
