/*
 * backend_cuda.c — the CUDA backend: the model's operations on one GPU, behind sl_backend (DESIGN.md §4, §5).
 *
 * One backend is one device, one stream and one cuBLAS handle; every operation is enqueued on that stream and
 * returns at once, so a forward runs on the GPU without the host waiting until the logits are downloaded
 * (download and synchronize wait). The matrix products are cuBLAS GEMMs (cublasGemmEx, f32 accumulation, tensor
 * cores); everything else is a kernel of kernels/cuda (kcuda.h).
 *
 * Weights are placed once by upload_weight: f32 and f16 weights are kept in their type; every other type
 * (the quantized ones, bf16) is dequantized on the host row by row (sl_k_dequantize_row) into f16 in a pinned
 * staging buffer, then copied over. A product with f16 weights converts its f32 input to f16 once (one pass
 * for Q, K and V together), and cuBLAS multiplies f16 x f16 into an f32 output: the fast mode (an f16 input
 * rounds to 11 significant bits, relative error 2^-11 per element, which the logit tests bound). The exact mode
 * keeps its promise of f32 activations: every weight is placed in f32 (twice the memory of f16) and the
 * products run f32 x f32 with f32 compute (no TF32).
 *
 * Index arrays (backend.h) are host memory. begin_step packs every array of the step (tokens, positions, slots,
 * row_seq, row_n_ctx and the block tables, made dense as [n_seqs][max_blocks]) into one pinned buffer and
 * copies it over with one asynchronous copy; each later operation maps the host pointer it receives (or a
 * pointer inside one of those arrays) to its device copy.
 *
 * Errors: every CUDA and cuBLAS call is checked. A failure becomes SL_DEVICE with a message naming what was
 * being done and CUDA's error string, and the backend is then out of service: every later call returns
 * SL_DEVICE (a CUDA context that saw an illegal address is unusable anyway; the replica leaves service and the
 * others go on, DESIGN.md §4). A cudaMalloc that finds no room is the exception: SL_OUT_OF_MEMORY, and the
 * backend stays usable (CUDA's out-of-memory error is not sticky), so a caller may size a pool by trying.
 *
 * A CUDA-enabled binary must start on a machine without a GPU or a driver: cudart is linked statically and
 * cudaGetDeviceCount's error then means "no devices"; cuBLAS (libcublas, which such a machine may not have
 * either) is loaded with dlopen when the first CUDA backend is made, and its absence is a status then. NVML is
 * not used here.
 */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "kcpu.h"
#include "kcuda.h"
#include "sl_util.h"

/* ---- cuBLAS, loaded at run time ------------------------------------------------------------------------------
 * The four entry points used, typed from cublas_v2.h itself (cublasCreate etc. are macros for the _v2 names).
 * Looked up in the library of the toolkit this was built with (its major version), first by name through the
 * loader's path, then in the toolkit's library folder known at build time (SL_CUBLAS_DIR). */
#define SL_STR_(x) #x
#define SL_STR(x) SL_STR_(x)
typedef struct sl_cublas_api {
    __typeof__(cublasCreate_v2) *create;
    __typeof__(cublasDestroy_v2) *destroy;
    __typeof__(cublasSetStream_v2) *set_stream;
    __typeof__(cublasGemmEx) *gemm_ex;
    int ok;
    char error[512];
} sl_cublas_api;
static sl_cublas_api sl__cublas;
static pthread_once_t sl__cublas_once = PTHREAD_ONCE_INIT;

static void sl__cublas_load(void) {
    const char *names[] = {"libcublas.so." SL_STR(CUBLAS_VER_MAJOR),
#ifdef SL_CUBLAS_DIR
                           SL_CUBLAS_DIR "/libcublas.so." SL_STR(CUBLAS_VER_MAJOR),
#endif
                           "libcublas.so"};
    void *h = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        snprintf(sl__cublas.error, sizeof sl__cublas.error, "cuBLAS (%s) cannot be loaded: %s", names[0],
                 why ? why : "not found");
        return;
    }
    sl__cublas.create = (__typeof__(cublasCreate_v2) *)dlsym(h, "cublasCreate_v2");
    sl__cublas.destroy = (__typeof__(cublasDestroy_v2) *)dlsym(h, "cublasDestroy_v2");
    sl__cublas.set_stream = (__typeof__(cublasSetStream_v2) *)dlsym(h, "cublasSetStream_v2");
    sl__cublas.gemm_ex = (__typeof__(cublasGemmEx) *)dlsym(h, "cublasGemmEx");
    if (!sl__cublas.create || !sl__cublas.destroy || !sl__cublas.set_stream || !sl__cublas.gemm_ex) {
        snprintf(sl__cublas.error, sizeof sl__cublas.error, "cuBLAS (%s) lacks an entry point Sluice uses", names[0]);
        return; /* the handle stays open: harmless, and the library may be in use elsewhere */
    }
    sl__cublas.ok = 1;
}

/* Index arrays of one step: tokens, pos, slots, row_seq, row_n_ctx, and the block-table array. */
#define SL_CUDA_N_IX 6
/* Host staging for weights: a weight is dequantized and copied over in pieces of at most this many bytes, so
 * the pinned buffer stays small (64 MiB: a few rows of the largest embedding matrix, large enough that each
 * copy runs at the bus's full speed). */
#define SL_CUDA_STAGE_BYTES ((size_t)64 << 20)
/* Each index array starts at a multiple of this in the packed step buffer (the widest element, int64). */
#define SL_CUDA_IX_ALIGN 16

typedef struct sl_ix_map {
    const void *host; /* the host array given to begin_step */
    size_t bytes;
    size_t off;       /* its copy's offset in ix_dev */
} sl_ix_map;

typedef struct sl_cuda_ctx {
    int device;
    sl_precision precision;
    int max_ctx;
    cudaStream_t stream;
    cublasHandle_t blas;
    int failed;              /* 1 after any device error: every call refuses */
    char failed_msg[256];
    /* f16 copy of a product's input: [n_rows][n_in] f16, grown to the largest step seen */
    sl_fp16_t *x16;
    size_t x16_cap;          /* elements */
    /* the step's index arrays: packed on the host (pinned) and on the device, same layout */
    uint8_t *ix_host;
    uint8_t *ix_dev;
    size_t ix_cap;           /* bytes of each */
    cudaEvent_t ix_copied;   /* recorded after the copy: the pinned buffer may be rewritten once it completes */
    int ix_pending;
    sl_ix_map ix[SL_CUDA_N_IX];
    int bt_width;            /* max_blocks of the dense block table */
    int n_seqs;
    /* weight staging: pinned, SL_CUDA_STAGE_BYTES; float scratch of one row for dequantization */
    void *stage;
    float *row_f32;
    int row_f32_cap;
} sl_cuda_ctx;

/* ---- errors ------------------------------------------------------------------------------------------------ */
static sl_status cu_fail(sl_cuda_ctx *c, const char *what, const char *err) {
    if (!c->failed) {
        c->failed = 1;
        snprintf(c->failed_msg, sizeof c->failed_msg, "%s: %s", what, err);
    }
    return sl__errorf(SL_DEVICE, "CUDA device %d: %s: %s", c->device, what, err);
}

static sl_status cu_check(sl_cuda_ctx *c, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return SL_OK;
    (void)cudaGetLastError(); /* clear a non-sticky error; the backend is out of service either way */
    return cu_fail(c, what, cudaGetErrorString(e));
}

static const char *cublas_str(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "cuBLAS error";
    }
}

static sl_status blas_check(sl_cuda_ctx *c, cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return SL_OK;
    return cu_fail(c, what, cublas_str(s));
}

#define CU(call, what)                                                                                        \
    do {                                                                                                      \
        sl_status st_ = cu_check(c, (call), (what));                                                          \
        if (st_ != SL_OK) return st_;                                                                         \
    } while (0)

/* Every entry: refuse once failed; make this backend's device current for the calling thread (several
 * backends on several devices may share a thread, and a thread starts on device 0). */
static sl_status cu_enter(sl_cuda_ctx *c) {
    if (c->failed)
        return sl__errorf(SL_DEVICE, "CUDA device %d is out of service after an earlier error (%s)", c->device,
                          c->failed_msg);
    CU(cudaSetDevice(c->device), "selecting the device");
    return SL_OK;
}

#define ENTER(c)                                                                                              \
    do {                                                                                                      \
        sl_status st_ = cu_enter(c);                                                                          \
        if (st_ != SL_OK) return st_;                                                                         \
    } while (0)

/* ---- memory ------------------------------------------------------------------------------------------------ */
static sl_status cuda_alloc(void *ctx, size_t bytes, void **out) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    *out = NULL;
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 1);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        return sl__errorf(SL_OUT_OF_MEMORY, "CUDA device %d: cannot allocate %zu bytes of device memory", c->device,
                          bytes);
    }
    CU(e, "allocating device memory");
    return SL_OK;
}

static void cuda_buf_free(void *ctx, void *ptr, size_t bytes) {
    sl_cuda_ctx *c = ctx;
    (void)bytes;
    if (!ptr) return;
    if (cudaSetDevice(c->device) != cudaSuccess || cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

static sl_status cuda_upload(void *ctx, void *dst, const void *src, size_t bytes) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    if (bytes == 0) return SL_OK;
    /* The caller may reuse src on return: the stream is synchronized (uploads are set-up time, not steps). */
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "copying host to device");
    CU(cudaStreamSynchronize(c->stream), "waiting for a host-to-device copy");
    return SL_OK;
}

static sl_status cuda_download(void *ctx, void *dst, const void *src, size_t bytes) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    if (bytes == 0) return SL_OK;
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "copying device to host");
    CU(cudaStreamSynchronize(c->stream), "waiting for a device-to-host copy (or the work before it)");
    return SL_OK;
}

static sl_status cuda_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    if (bytes == 0) return SL_OK;
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream), "copying device to device");
    return SL_OK;
}

static sl_status cuda_synchronize(void *ctx) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    CU(cudaStreamSynchronize(c->stream), "running the step's work");
    return SL_OK;
}

static sl_status cuda_mem_info(void *ctx, size_t *free_bytes, size_t *total_bytes) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    CU(cudaMemGetInfo(free_bytes, total_bytes), "reading the device's free memory");
    return SL_OK;
}

/* ---- weights ----------------------------------------------------------------------------------------------- */
static sl_status cuda_upload_weight(void *ctx, const sl_weight *host, sl_weight *dev) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    /* exact mode: f32 weights (and so f32 activations, SGEMM-class products); fast mode: f16 */
    const int exact = c->precision == SL_PRECISION_EXACT;
    const int keep = host->type == SL_DTYPE_F32 || (!exact && host->type == SL_DTYPE_F16);
    const int dtype = keep ? host->type : exact ? SL_DTYPE_F32 : SL_DTYPE_F16;
    const size_t esize = dtype == SL_DTYPE_F32 ? 4 : 2;
    if (host->n_in <= 0 || host->n_out <= 0)
        return sl__errorf(SL_INVALID_ARGUMENT, "weight of %d x %d", host->n_out, host->n_in);
    if (!keep && !sl_dtype_supported(host->type))
        return sl__errorf(SL_UNSUPPORTED, "CUDA backend: weights of type %s",
                          sl_dtype_name(host->type) ? sl_dtype_name(host->type) : "unknown");
    const size_t row_dev = (size_t)host->n_in * esize; /* device rows are packed: lda = n_in */
    if (row_dev > SL_CUDA_STAGE_BYTES) return sl__errorf(SL_UNSUPPORTED, "weight rows of %d elements", host->n_in);
    if (!keep && host->n_in > c->row_f32_cap) {
        float *p = sl__realloc(c->row_f32, (size_t)host->n_in * sizeof(float));
        if (!p) return sl__errorf(SL_OUT_OF_MEMORY, "dequantization row of %d elements", host->n_in);
        c->row_f32 = p;
        c->row_f32_cap = host->n_in;
    }
    void *d = NULL;
    sl_status st = cuda_alloc(c, row_dev * (size_t)host->n_out, &d);
    if (st != SL_OK) return st;
    const int rows_per_chunk = (int)SL_MIN((size_t)host->n_out, SL_CUDA_STAGE_BYTES / row_dev);
    for (int r0 = 0; r0 < host->n_out; r0 += rows_per_chunk) {
        const int nr = SL_MIN(rows_per_chunk, host->n_out - r0);
        /* the previous chunk's copy read the staging buffer: wait for it before rewriting it */
        cudaError_t e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess) {
            st = cu_check(c, e, "uploading a weight");
            goto fail;
        }
        for (int r = 0; r < nr; r++) {
            const uint8_t *src = (const uint8_t *)host->data + (size_t)(r0 + r) * host->row_bytes;
            uint8_t *dst = (uint8_t *)c->stage + (size_t)r * row_dev;
            if (keep) {
                memcpy(dst, src, row_dev);
            } else if (dtype == SL_DTYPE_F32) {
                sl_k_dequantize_row(host->type, src, (float *)dst, host->n_in);
            } else {
                sl_k_dequantize_row(host->type, src, c->row_f32, host->n_in);
                sl_k_quantize_row(SL_DTYPE_F16, c->row_f32, dst, host->n_in);
            }
        }
        e = cudaMemcpyAsync((uint8_t *)d + (size_t)r0 * row_dev, c->stage, (size_t)nr * row_dev,
                            cudaMemcpyHostToDevice, c->stream);
        if (e != cudaSuccess) {
            st = cu_check(c, e, "uploading a weight");
            goto fail;
        }
    }
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        st = cu_check(c, e, "uploading a weight");
        goto fail;
    }
    dev->data = d;
    dev->type = dtype;
    dev->n_in = host->n_in;
    dev->n_out = host->n_out;
    dev->row_bytes = row_dev;
    dev->packed = 0;
    return SL_OK;
fail:
    cuda_buf_free(c, d, 0);
    return st;
}

static void cuda_weight_free(void *ctx, sl_weight *dev) {
    cuda_buf_free(ctx, (void *)dev->data, 0);
    dev->data = NULL;
}

/* ---- step index arrays ------------------------------------------------------------------------------------- */
static size_t ix_align(size_t n) { return (n + SL_CUDA_IX_ALIGN - 1) & ~(size_t)(SL_CUDA_IX_ALIGN - 1); }

static sl_status cuda_begin_step(void *ctx, const sl_step_index *ix) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    const size_t n = ix->n_rows > 0 ? (size_t)ix->n_rows : 0;
    /* Every check before anything of c->ix changes: a refused step leaves the last good mapping in place (and
     * a bad argument is a status, not a device error: the backend stays in service). */
    if (ix->block_tables && (!ix->row_seq || !ix->row_n_ctx || ix->block_size <= 0))
        return sl__errorf(SL_INVALID_ARGUMENT, "block tables without rows' sequences, contexts or a block size");
    /* dense block tables: as wide as the longest context any row of a sequence needs */
    int width = 1;
    if (ix->block_tables) {
        for (size_t r = 0; r < n; r++) {
            if (ix->row_seq[r] < 0 || ix->row_seq[r] >= ix->n_seqs)
                return sl__errorf(SL_INVALID_ARGUMENT, "row %zu: sequence %d outside [0, %d)", r, ix->row_seq[r],
                                  ix->n_seqs);
            if (ix->row_n_ctx[r] < 0 || ix->row_n_ctx[r] > c->max_ctx)
                return sl__errorf(SL_INVALID_ARGUMENT, "row %zu: attention context %d outside [0, %d]", r,
                                  ix->row_n_ctx[r], c->max_ctx);
            if (!ix->block_tables[ix->row_seq[r]])
                return sl__errorf(SL_INVALID_ARGUMENT, "sequence %d has no block table", ix->row_seq[r]);
            const int nb = (ix->row_n_ctx[r] + ix->block_size - 1) / ix->block_size;
            width = SL_MAX(width, nb);
        }
    }
    const int n_seqs = ix->block_tables ? SL_MAX(ix->n_seqs, 0) : 0;
    const void *hosts[SL_CUDA_N_IX] = {ix->tokens, ix->pos, ix->slots, ix->row_seq, ix->row_n_ctx,
                                       (const void *)ix->block_tables};
    const size_t bytes[SL_CUDA_N_IX] = {n * 4, n * 4, n * 8, n * 4, n * 4, (size_t)n_seqs * (size_t)width * 4};
    size_t total = 0;
    for (int i = 0; i < SL_CUDA_N_IX; i++) {
        c->ix[i].host = hosts[i];
        c->ix[i].bytes = hosts[i] ? bytes[i] : 0;
        c->ix[i].off = total;
        total += ix_align(c->ix[i].bytes);
    }
    /* the previous step's copy must have read the pinned buffer before it is rewritten */
    if (c->ix_pending) {
        CU(cudaEventSynchronize(c->ix_copied), "waiting for the previous step's index copy");
        c->ix_pending = 0;
    }
    if (total > c->ix_cap) {
        /* grows to the largest step seen (bounded by max_num_batched_tokens), then never again */
        size_t cap = SL_MAX(total, 2 * c->ix_cap);
        if (c->ix_host) (void)cudaFreeHost(c->ix_host);
        if (c->ix_dev) {
            CU(cudaStreamSynchronize(c->stream), "waiting before growing the index buffer");
            (void)cudaFree(c->ix_dev);
        }
        c->ix_host = NULL;
        c->ix_dev = NULL;
        c->ix_cap = 0;
        /* running out of memory here is a status, not a device failure (the backend stays usable) */
        cudaError_t e = cudaMallocHost((void **)&c->ix_host, cap);
        if (e == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();
            c->ix_host = NULL;
            return sl__errorf(SL_OUT_OF_MEMORY, "CUDA: cannot pin %zu bytes for a step's index arrays", cap);
        }
        CU(e, "allocating the pinned index buffer");
        void *dev = NULL;
        sl_status st = cuda_alloc(c, cap, &dev);
        if (st != SL_OK) {
            (void)cudaFreeHost(c->ix_host);
            c->ix_host = NULL;
            return st;
        }
        c->ix_dev = dev;
        c->ix_cap = cap;
    }
    for (int i = 0; i < SL_CUDA_N_IX - 1; i++)
        if (c->ix[i].bytes) memcpy(c->ix_host + c->ix[i].off, c->ix[i].host, c->ix[i].bytes);
    if (c->ix[5].bytes) {
        int32_t *dense = (int32_t *)(c->ix_host + c->ix[5].off);
        memset(dense, 0, c->ix[5].bytes); /* entries past a sequence's need are never read */
        for (size_t r = 0; r < n; r++) {
            const int s = ix->row_seq[r];
            const int nb = (ix->row_n_ctx[r] + ix->block_size - 1) / ix->block_size; /* checked above */
            /* rows of one sequence rewrite the same prefix: harmless */
            memcpy(dense + (size_t)s * (size_t)width, ix->block_tables[s], (size_t)SL_MAX(nb, 0) * 4);
        }
    }
    c->bt_width = width;
    c->n_seqs = n_seqs;
    if (total) {
        CU(cudaMemcpyAsync(c->ix_dev, c->ix_host, total, cudaMemcpyHostToDevice, c->stream), "copying the step's index arrays");
        CU(cudaEventRecord(c->ix_copied, c->stream), "recording the index copy");
        c->ix_pending = 1;
    }
    return SL_OK;
}

/* The device copy of a host index pointer (or of a pointer inside one of the step's arrays). The block tables
 * (ix[5]) match by their start only: the host array is n_seqs row pointers, while bytes is the dense copy's size,
 * so a range test there would take in memory that is not the array. */
static sl_status ix_map(sl_cuda_ctx *c, const void *host, const char *what, const void **dev) {
    for (int i = 0; i < SL_CUDA_N_IX; i++) {
        const uint8_t *h = c->ix[i].host;
        const int inside = i == 5 ? (const uint8_t *)host == h
                                  : (const uint8_t *)host >= h && (const uint8_t *)host < h + c->ix[i].bytes;
        if (h && c->ix[i].bytes && inside) {
            *dev = c->ix_dev + c->ix[i].off + (size_t)((const uint8_t *)host - h);
            return SL_OK;
        }
    }
    return sl__errorf(SL_INVALID_ARGUMENT, "CUDA backend: %s (%p) is not an index array given to begin_step", what,
                      host);
}

#define MAP(host, what, out)                                                                                  \
    do {                                                                                                      \
        sl_status st_ = ix_map(c, (host), (what), (const void **)(out));                                      \
        if (st_ != SL_OK) return st_;                                                                         \
    } while (0)

/* ---- matmul ------------------------------------------------------------------------------------------------ */
/* y[n_rows][n_out] = x[n_rows][n_in] · Wᵀ. cuBLAS is column-major: there W (row-major [n_out][n_in]) reads as
 * the n_in x n_out matrix Wᵀ, x as n_in x n_rows, y as n_out x n_rows; so y = op(W)·x with op = transpose. */
static sl_status gemm(sl_cuda_ctx *c, const sl_weight *w, const void *x, int x_f16, int n_rows, float *y) {
    const float one = 1.0f, zero = 0.0f;
    const int lda = (int)(w->row_bytes / (w->type == SL_DTYPE_F32 ? 4 : 2));
    cudaDataType_t wt = w->type == SL_DTYPE_F32 ? CUDA_R_32F : CUDA_R_16F;
    cudaDataType_t xt = x_f16 ? CUDA_R_16F : CUDA_R_32F;
    return blas_check(c,
                      sl__cublas.gemm_ex(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->n_out, n_rows, w->n_in, &one, w->data, wt, lda,
                                   x, xt, w->n_in, &zero, y, CUDA_R_32F, w->n_out, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
                      "matrix product (cublasGemmEx)");
}

static sl_status cuda_matmul_multi(void *ctx, int n, const sl_weight *const *ws, const float *x, int n_rows,
                                   float *const *ys) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    if (n_rows <= 0 || n <= 0) return SL_OK;
    int any_f16 = 0;
    for (int i = 0; i < n; i++) {
        if (ws[i]->type != SL_DTYPE_F16 && ws[i]->type != SL_DTYPE_F32)
            return sl__errorf(SL_INVALID_ARGUMENT, "CUDA matmul: weight of type %d was not placed by upload_weight",
                              ws[i]->type);
        any_f16 |= ws[i]->type == SL_DTYPE_F16;
    }
    const int n_in = ws[0]->n_in;
    if (any_f16) {
        const size_t need = (size_t)n_rows * (size_t)n_in;
        if (need > c->x16_cap) {
            /* grows to the largest step seen, then never again (cudaFree waits for work using the old one) */
            if (c->x16) CU(cudaFree(c->x16), "freeing the f16 activation buffer");
            c->x16 = NULL;
            c->x16_cap = 0;
            cudaError_t e = cudaMalloc((void **)&c->x16, need * sizeof(sl_fp16_t));
            if (e == cudaErrorMemoryAllocation) {
                (void)cudaGetLastError();
                return sl__errorf(SL_OUT_OF_MEMORY, "CUDA device %d: f16 activations of %zu elements", c->device, need);
            }
            CU(e, "allocating the f16 activation buffer");
            c->x16_cap = need;
        }
        CU(sl_kc_f32_to_f16(c->stream, x, c->x16, need), "converting activations to f16");
    }
    for (int i = 0; i < n; i++) {
        const int f16 = ws[i]->type == SL_DTYPE_F16;
        sl_status st = gemm(c, ws[i], f16 ? (const void *)c->x16 : (const void *)x, f16, n_rows, ys[i]);
        if (st != SL_OK) return st;
    }
    return SL_OK;
}

static sl_status cuda_matmul(void *ctx, const sl_weight *w, const float *x, int n_rows, float *y) {
    return cuda_matmul_multi(ctx, 1, &w, x, n_rows, &y);
}

static sl_status cuda_get_rows(void *ctx, const sl_weight *w, const int32_t *ids, int n, float *out) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    /* ids are host memory too: checked here, as the CPU backend does, before the device reads its copy */
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= w->n_out)
            return sl__errorf(SL_INVALID_ARGUMENT, "token id %d outside the vocabulary [0, %d)", ids[i], w->n_out);
    if (n <= 0) return SL_OK;
    const int32_t *d_ids;
    MAP(ids, "token ids", &d_ids);
    const size_t esize = w->type == SL_DTYPE_F32 ? 4 : 2;
    CU(sl_kc_get_rows(c->stream, w->data, w->type, w->row_bytes / esize, w->n_in, d_ids, n, out),
       "embedding lookup");
    return SL_OK;
}

/* ---- row operations ---------------------------------------------------------------------------------------- */
static sl_status cuda_rms_norm(void *ctx, const float *x, const float *weight, float *y, int n_rows, int dim,
                               float eps) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    CU(sl_kc_rms_norm(c->stream, x, weight, y, n_rows, dim, eps), "RMSNorm");
    return SL_OK;
}

static sl_status cuda_rope(void *ctx, float *x, const int32_t *pos, int n_rows, int n_heads, int head_dim, int n_rot,
                           float freq_base, float freq_scale) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    if (n_rows <= 0) return SL_OK;
    const int32_t *d_pos;
    MAP(pos, "positions", &d_pos);
    CU(sl_kc_rope(c->stream, x, d_pos, n_rows, n_heads, head_dim, n_rot, freq_base, freq_scale), "RoPE");
    return SL_OK;
}

static sl_status cuda_swiglu(void *ctx, const float *gate, const float *up, float *out, int n_rows, int n) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    if (n_rows <= 0 || n <= 0) return SL_OK;
    CU(sl_kc_swiglu(c->stream, gate, up, out, (size_t)n_rows * (size_t)n), "SwiGLU");
    return SL_OK;
}

static sl_status cuda_add(void *ctx, float *y, const float *x, size_t n) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    CU(sl_kc_add(c->stream, y, x, n), "add");
    return SL_OK;
}

/* ---- KV cache and attention -------------------------------------------------------------------------------- */
static sl_status cuda_kv_store(void *ctx, void *k_pool, void *v_pool, int kv_type, const float *k, const float *v,
                               const int64_t *slots, int n_rows, int n_head_kv, int head_dim) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    if (n_rows <= 0) return SL_OK;
    if (kv_type != SL_DTYPE_F32 && kv_type != SL_DTYPE_F16)
        return sl__errorf(SL_INVALID_ARGUMENT, "KV cache of type %d", kv_type);
    const int64_t *d_slots;
    MAP(slots, "KV slots", &d_slots);
    CU(sl_kc_kv_store(c->stream, k_pool, v_pool, kv_type, k, v, d_slots, n_rows, n_head_kv, head_dim), "KV store");
    return SL_OK;
}

static sl_status cuda_attention(void *ctx, const float *q, float *out, int n_rows, const sl_attn_args *a) {
    sl_cuda_ctx *c = ctx;
    ENTER(c);
    if (n_rows <= 0) return SL_OK;
    for (int r = 0; r < n_rows; r++)
        if (a->row_n_ctx[r] < 1 || a->row_n_ctx[r] > c->max_ctx)
            return sl__errorf(SL_INVALID_ARGUMENT, "attention context %d outside [1, %d]", a->row_n_ctx[r], c->max_ctx);
    if (a->head_dim > SL_KC_ATT_MAX_HEAD_DIM)
        return sl__errorf(SL_UNSUPPORTED, "CUDA attention: head_dim %d > %d", a->head_dim, SL_KC_ATT_MAX_HEAD_DIM);
    if (a->kv_type != SL_DTYPE_F32 && a->kv_type != SL_DTYPE_F16)
        return sl__errorf(SL_INVALID_ARGUMENT, "KV cache of type %d", a->kv_type);
    if (a->n_head_kv <= 0 || a->n_head % a->n_head_kv != 0)
        return sl__errorf(SL_INVALID_ARGUMENT, "%d query heads over %d KV heads", a->n_head, a->n_head_kv);
    if (a->block_size <= 0) return sl__errorf(SL_INVALID_ARGUMENT, "KV block size %d", a->block_size);
    if ((const void *)a->block_tables != c->ix[5].host)
        return sl__errorf(SL_INVALID_ARGUMENT, "CUDA attention: block tables not given to begin_step");
    for (int r = 0; r < n_rows; r++)
        if ((a->row_n_ctx[r] + a->block_size - 1) / a->block_size > c->bt_width)
            return sl__errorf(SL_INVALID_ARGUMENT, "attention row %d: context %d beyond the step's block tables", r,
                              a->row_n_ctx[r]);
    const int32_t *d_seq, *d_nctx, *d_bt;
    MAP(a->row_seq, "row_seq", &d_seq);
    MAP(a->row_n_ctx, "row_n_ctx", &d_nctx);
    MAP(a->block_tables, "block tables", &d_bt);
    CU(sl_kc_attention(c->stream, q, out, n_rows, a->n_head, a->n_head_kv, a->head_dim, a->k_pool, a->v_pool,
                       a->kv_type, d_bt, c->bt_width, a->block_size, d_seq, d_nctx, a->scale),
       "paged attention");
    return SL_OK;
}

/* ---- lifetime ---------------------------------------------------------------------------------------------- */
static void cuda_free(void *ctx) {
    sl_cuda_ctx *c = ctx;
    if (!c) return;
    /* Best effort: after a device error these may fail too, and nothing more can be done about it. */
    if (cudaSetDevice(c->device) == cudaSuccess) {
        if (c->stream) (void)cudaStreamSynchronize(c->stream);
        if (c->blas) (void)sl__cublas.destroy(c->blas);
        if (c->x16) (void)cudaFree(c->x16);
        if (c->ix_dev) (void)cudaFree(c->ix_dev);
        if (c->ix_host) (void)cudaFreeHost(c->ix_host);
        if (c->stage) (void)cudaFreeHost(c->stage);
        if (c->ix_copied) (void)cudaEventDestroy(c->ix_copied);
        if (c->stream) (void)cudaStreamDestroy(c->stream);
    }
    (void)cudaGetLastError();
    free(c->row_f32);
    free(c);
}

static const sl_backend_iface sl_cuda_iface = {
    .name = "cuda",
    .free = cuda_free,
    .alloc = cuda_alloc,
    .buf_free = cuda_buf_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .synchronize = cuda_synchronize,
    .weights_in_host_memory = 0,
    .copy = cuda_copy,
    .upload_weight = cuda_upload_weight,
    .weight_free = cuda_weight_free,
    .begin_step = cuda_begin_step,
    .mem_info = cuda_mem_info,
    .matmul = cuda_matmul,
    .matmul_multi = cuda_matmul_multi,
    .get_rows = cuda_get_rows,
    .rms_norm = cuda_rms_norm,
    .rope = cuda_rope,
    .swiglu = cuda_swiglu,
    .add = cuda_add,
    .kv_store = cuda_kv_store,
    .attention = cuda_attention,
};

int sl_backend_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the non-sticky error */
        return 0;
    }
    return n;
}

sl_status sl_backend_cuda_create(const sl_backend_cuda_params *p, sl_backend *out) {
    out->iface = NULL;
    out->ctx = NULL;
    if (p->max_ctx < 1) return sl__errorf(SL_INVALID_ARGUMENT, "cuda backend: max_ctx %d < 1", p->max_ctx);
    const int n_dev = sl_backend_cuda_device_count();
    if (p->device < 0 || p->device >= n_dev)
        return sl__errorf(SL_DEVICE, "CUDA device %d does not exist (%d usable device%s)", p->device, n_dev,
                          n_dev == 1 ? "" : "s");
    sl_kcpu_init(); /* the dequantization of upload_weight runs on the host */
    sl_cuda_ctx *c = sl__calloc(1, sizeof *c);
    if (!c) return sl__errorf(SL_OUT_OF_MEMORY, "cuda backend");
    c->device = p->device;
    c->precision = p->precision;
    c->max_ctx = p->max_ctx;
    sl_status st;
    cudaError_t e;
    if ((e = cudaSetDevice(c->device)) != cudaSuccess) {
        st = cu_check(c, e, "selecting the device");
        goto fail;
    }
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        st = cu_check(c, e, "creating the stream");
        goto fail;
    }
    if ((e = cudaEventCreateWithFlags(&c->ix_copied, cudaEventDisableTiming)) != cudaSuccess) {
        st = cu_check(c, e, "creating an event");
        goto fail;
    }
    if ((e = cudaMallocHost(&c->stage, SL_CUDA_STAGE_BYTES)) != cudaSuccess) {
        st = cu_check(c, e, "allocating the pinned weight staging buffer");
        goto fail;
    }
    pthread_once(&sl__cublas_once, sl__cublas_load);
    if (!sl__cublas.ok) {
        st = sl__errorf(SL_UNSUPPORTED, "CUDA device %d: %s", c->device, sl__cublas.error);
        goto fail;
    }
    cublasStatus_t bs = sl__cublas.create(&c->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        st = blas_check(c, bs, "creating the cuBLAS handle");
        goto fail;
    }
    if ((bs = sl__cublas.set_stream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS) {
        st = blas_check(c, bs, "binding cuBLAS to the stream");
        goto fail;
    }
    out->iface = &sl_cuda_iface;
    out->ctx = c;
    return SL_OK;
fail:
    cuda_free(c);
    return st;
}

void *sl__backend_cuda_stream(const sl_backend *b) {
    if (!b || b->iface != &sl_cuda_iface) return NULL;
    return (void *)((const sl_cuda_ctx *)b->ctx)->stream;
}

int sl__backend_cuda_device(const sl_backend *b) {
    if (!b || b->iface != &sl_cuda_iface) return -1;
    return ((const sl_cuda_ctx *)b->ctx)->device;
}
