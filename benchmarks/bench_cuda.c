/*
 * bench_cuda.c — how close the CUDA backend's forward comes to what the GPU allows (issue #7's goal numbers).
 *
 *   sluice-bench-cuda [--shape 8b|default] [--layers N] [--ctx TOKENS] [--steps N] [--prefill TOKENS]
 *
 * A llama-shaped forward is run through the backend's own entry points (sl_backend_*, the calls models/llama.c
 * makes, in the same order) on synthetic f16 weights placed with upload_weight: --shape 8b is hidden 4096,
 * 32 layers, 32 heads, 8 KV heads, ffn 14336, vocab 32000; default is SmolLM2-135M's shape. Going through the
 * backend rather than a GGUF file keeps the benchmark independent of the model loader's device placement and
 * of the time it takes to write and read a 16 GB file (the weights are random: upload_weight of f16 data is a
 * copy, so the device work per step is exactly that of a real f16 model).
 *
 * Printed:
 *   - decode step time at batch 1/8/32 (every sequence at --ctx tokens of context) against the memory roofline:
 *     (weight bytes + KV bytes read per step) / the device's copy bandwidth, measured here with a large
 *     device-to-device cudaMemcpy (read + write bytes); the goal is >= 75% of roofline at batch 1 on 8b.
 *   - host time per step (enqueueing every operation) vs device time (CUDA events around the step on the
 *     backend's stream); the goal is host < 10% of device.
 *   - prefill tokens/s of a --prefill-token chunk, and its achieved TFLOP/s against a plain GEMM's through the
 *     same backend (the FFN's up projection at the same row count).
 * Without a CUDA device it says so and exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "kcpu.h"
#include "sl_util.h"

#ifdef SL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

typedef struct shape {
    const char *name;
    int E, L, H, KVH, hd, F, V;
} shape;

static const shape k_8b = {"8b", 4096, 32, 32, 8, 128, 14336, 32000};
static const shape k_default = {"default (SmolLM2-135M)", 576, 30, 9, 3, 64, 1536, 49152};

#define BLOCK 16

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CK(call)                                                                                              \
    do {                                                                                                      \
        sl_status st_ = (call);                                                                               \
        if (st_ != SL_OK) {                                                                                   \
            fprintf(stderr, "bench_cuda: %s failed: %s\n", #call, sl_last_error());                           \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)

typedef struct layer {
    sl_weight wq, wk, wv, wo, wg, wu, wd;
    float *attn_norm, *ffn_norm;
    void *k_pool, *v_pool;
} layer;

typedef struct bench {
    sl_backend be;
    shape s;
    layer *layers;
    sl_weight tok, out;
    float *out_norm;
    /* activations, [T_max][...] f32 device */
    float *x, *xb, *xb2, *q, *k, *v, *att, *ffg, *ffu, *logits;
    int T_max;
    size_t weight_bytes;
} bench;

/* An f16 weight of n_out x n_in from a shared random f16 source (>= n_in * n_out elements). */
static sl_weight mk_weight(bench *b, const sl_fp16_t *src, int n_in, int n_out) {
    sl_weight h = {.data = src, .type = SL_DTYPE_F16, .n_in = n_in, .n_out = n_out,
                   .row_bytes = (size_t)n_in * 2}, d;
    CK(sl_backend_upload_weight(&b->be, &h, &d));
    b->weight_bytes += (size_t)n_in * n_out * 2;
    return d;
}

static float *mk_buf(bench *b, size_t n_floats, const float *init) {
    void *p;
    CK(sl_backend_alloc(&b->be, n_floats * sizeof(float), &p));
    if (init) CK(sl_backend_upload(&b->be, p, init, n_floats * sizeof(float)));
    return p;
}

/* One forward over T rows (the order of models/llama.c); logits for the last n_logits rows. */
static void forward(bench *b, const sl_step_index *ix, int n_logits) {
    const shape *s = &b->s;
    const int T = ix->n_rows;
    sl_backend *be = &b->be;
    CK(sl_backend_begin_step(be, ix));
    sl_attn_args aa = {.kv_type = SL_DTYPE_F16, .n_head = s->H, .n_head_kv = s->KVH, .head_dim = s->hd,
                       .block_size = BLOCK, .scale = 0.088f, .block_tables = ix->block_tables,
                       .row_seq = ix->row_seq, .row_n_ctx = ix->row_n_ctx};
    CK(sl_backend_get_rows(be, &b->tok, ix->tokens, T, b->x));
    for (int l = 0; l < s->L; l++) {
        layer *L = &b->layers[l];
        CK(sl_backend_rms_norm(be, b->x, L->attn_norm, b->xb, T, s->E, 1e-5f));
        const sl_weight *qkv[] = {&L->wq, &L->wk, &L->wv};
        float *const qkv_out[] = {b->q, b->k, b->v};
        CK(sl_backend_matmul_multi(be, 3, qkv, b->xb, T, qkv_out));
        CK(sl_backend_rope(be, b->q, ix->pos, T, s->H, s->hd, s->hd, 10000.0f, 1.0f));
        CK(sl_backend_rope(be, b->k, ix->pos, T, s->KVH, s->hd, s->hd, 10000.0f, 1.0f));
        CK(sl_backend_kv_store(be, L->k_pool, L->v_pool, SL_DTYPE_F16, b->k, b->v, ix->slots, T, s->KVH, s->hd));
        aa.k_pool = L->k_pool;
        aa.v_pool = L->v_pool;
        CK(sl_backend_attention(be, b->q, b->att, T, &aa));
        CK(sl_backend_matmul(be, &L->wo, b->att, T, b->xb2));
        CK(sl_backend_add(be, b->x, b->xb2, (size_t)T * s->E));
        CK(sl_backend_rms_norm(be, b->x, L->ffn_norm, b->xb, T, s->E, 1e-5f));
        const sl_weight *gu[] = {&L->wg, &L->wu};
        float *const gu_out[] = {b->ffg, b->ffu};
        CK(sl_backend_matmul_multi(be, 2, gu, b->xb, T, gu_out));
        CK(sl_backend_swiglu(be, b->ffg, b->ffu, b->ffg, T, s->F));
        CK(sl_backend_matmul(be, &L->wd, b->ffg, T, b->xb2));
        CK(sl_backend_add(be, b->x, b->xb2, (size_t)T * s->E));
    }
    CK(sl_backend_rms_norm(be, b->x + (size_t)(T - n_logits) * s->E, b->out_norm, b->xb, n_logits, s->E, 1e-5f));
    CK(sl_backend_matmul(be, &b->out, b->xb, n_logits, b->logits));
}


#ifdef SL_HAVE_CUDA
#define CU(call)                                                                                              \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess) {                                                                              \
            fprintf(stderr, "bench_cuda: %s: %s\n", #call, cudaGetErrorString(e_));                           \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)

/* Device copy bandwidth: a 2 GiB device-to-device copy, best of 5, counting bytes read and written. */
static double copy_bandwidth(void) {
    const size_t n = (size_t)2 << 30;
    void *a, *c;
    CU(cudaMalloc(&a, n));
    CU(cudaMalloc(&c, n));
    CU(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    float best = 1e30f;
    for (int i = 0; i < 6; i++) {
        CU(cudaEventRecord(e0, 0));
        CU(cudaMemcpyAsync(c, a, n, cudaMemcpyDeviceToDevice, 0));
        CU(cudaEventRecord(e1, 0));
        CU(cudaEventSynchronize(e1));
        float ms;
        CU(cudaEventElapsedTime(&ms, e0, e1));
        if (i > 0 && ms < best) best = ms; /* the first is a warm-up */
    }
    CU(cudaFree(a));
    CU(cudaFree(c));
    return 2.0 * (double)n / (best * 1e-3);
}

typedef struct step_arrays {
    int32_t *tokens, *pos, *row_seq, *row_n_ctx;
    int64_t *slots;
    int32_t **tables;
} step_arrays;

/* Rows for `n_seqs` sequences each at position `at` (decode, rows_per_seq = 1) or a chunk of rows_per_seq
 * positions ending at `at` (prefill). Sequence q owns blocks [q * blocks_per_seq, ...). */
static sl_step_index mk_step(step_arrays *a, int n_seqs, int rows_per_seq, int at, int blocks_per_seq, int vocab) {
    int r = 0;
    for (int q = 0; q < n_seqs; q++)
        for (int i = 0; i < rows_per_seq; i++, r++) {
            int p = at - rows_per_seq + 1 + i;
            a->tokens[r] = (int32_t)((q * 7919 + p * 104729) % vocab);
            a->pos[r] = p;
            a->row_seq[r] = q;
            a->row_n_ctx[r] = p + 1;
            a->slots[r] = (int64_t)a->tables[q][p / BLOCK] * BLOCK + p % BLOCK;
        }
    (void)blocks_per_seq;
    return (sl_step_index){.n_rows = r, .tokens = a->tokens, .pos = a->pos, .slots = a->slots, .row_seq = a->row_seq,
                           .row_n_ctx = a->row_n_ctx, .n_seqs = n_seqs, .block_tables = (const int32_t *const *)a->tables,
                           .block_size = BLOCK};
}

static int bench_cuda_run(shape s, int ctx, int steps, int prefill) {
    bench b = {.s = s};
    const int max_batch = 32, max_ctx = SL_MAX(ctx + steps + 1, prefill);
    b.T_max = SL_MAX(max_batch, prefill);
    sl_backend_cuda_params p = {.device = 0, .precision = SL_PRECISION_FAST, .max_ctx = max_ctx};
    CK(sl_backend_cuda_create(&p, &b.be));
    cudaStream_t stream = (cudaStream_t)sl__backend_cuda_stream(&b.be);
    const double bw = copy_bandwidth();
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs; device-to-device copy bandwidth %.0f GB/s (read + write)\n", prop.name,
           prop.multiProcessorCount, bw / 1e9);
    printf("shape %s: hidden %d, %d layers, %d heads / %d KV heads (head_dim %d), ffn %d, vocab %d; f16 weights, "
           "f16 KV\n", s.name, s.E, s.L, s.H, s.KVH, s.hd, s.F, s.V);

    /* weights: one random f16 source as large as the largest matrix, copied into every weight */
    const size_t src_n = SL_MAX((size_t)s.F * s.E, (size_t)s.V * s.E);
    sl_fp16_t *src = malloc(src_n * sizeof(sl_fp16_t));
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < src_n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        src[i] = sl_f32_to_fp16(((float)(x >> 40) / (float)(1 << 24) - 0.5f) * 0.05f);
    }
    const double t_up = now_s();
    float *ones = malloc(sizeof(float) * s.E);
    for (int i = 0; i < s.E; i++) ones[i] = 1.0f;
    const int blocks_per_seq = (max_ctx + BLOCK - 1) / BLOCK;
    const size_t pool_bytes = (size_t)max_batch * blocks_per_seq * BLOCK * s.KVH * s.hd * 2;
    b.layers = calloc((size_t)s.L, sizeof *b.layers);
    b.tok = mk_weight(&b, src, s.E, s.V);
    b.out = mk_weight(&b, src, s.E, s.V);
    b.weight_bytes -= (size_t)s.E * s.V * 2; /* the embedding is gathered, not streamed */
    b.out_norm = mk_buf(&b, (size_t)s.E, ones);
    for (int l = 0; l < s.L; l++) {
        layer *L = &b.layers[l];
        L->wq = mk_weight(&b, src, s.E, s.H * s.hd);
        L->wk = mk_weight(&b, src, s.E, s.KVH * s.hd);
        L->wv = mk_weight(&b, src, s.E, s.KVH * s.hd);
        L->wo = mk_weight(&b, src, s.H * s.hd, s.E);
        L->wg = mk_weight(&b, src, s.E, s.F);
        L->wu = mk_weight(&b, src, s.E, s.F);
        L->wd = mk_weight(&b, src, s.F, s.E);
        L->attn_norm = mk_buf(&b, (size_t)s.E, ones);
        L->ffn_norm = mk_buf(&b, (size_t)s.E, ones);
        CK(sl_backend_alloc(&b.be, pool_bytes, &L->k_pool));
        CK(sl_backend_alloc(&b.be, pool_bytes, &L->v_pool));
        CU(cudaMemset(L->k_pool, 0, pool_bytes)); /* zero f16 = 0.0: finite scores from never-written slots */
        CU(cudaMemset(L->v_pool, 0, pool_bytes));
    }
    free(src);
    printf("weights: %.2f GB streamed per step, placed in %.1f s\n", (double)b.weight_bytes / 1e9, now_s() - t_up);
    const size_t T = (size_t)b.T_max;
    b.x = mk_buf(&b, T * s.E, NULL), b.xb = mk_buf(&b, T * s.E, NULL), b.xb2 = mk_buf(&b, T * s.E, NULL);
    b.q = mk_buf(&b, T * s.H * s.hd, NULL), b.att = mk_buf(&b, T * s.H * s.hd, NULL);
    b.k = mk_buf(&b, T * s.KVH * s.hd, NULL), b.v = mk_buf(&b, T * s.KVH * s.hd, NULL);
    b.ffg = mk_buf(&b, T * s.F, NULL), b.ffu = mk_buf(&b, T * s.F, NULL);
    b.logits = mk_buf(&b, T * s.V, NULL);

    step_arrays a;
    a.tokens = malloc(4 * T), a.pos = malloc(4 * T), a.row_seq = malloc(4 * T), a.row_n_ctx = malloc(4 * T);
    a.slots = malloc(8 * T);
    a.tables = malloc(sizeof(int32_t *) * max_batch);
    for (int q = 0; q < max_batch; q++) {
        a.tables[q] = malloc(sizeof(int32_t) * blocks_per_seq);
        for (int k = 0; k < blocks_per_seq; k++) a.tables[q][k] = q * blocks_per_seq + k;
    }
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));

    printf("\n| decode batch | ctx | step ms (device) | host ms/step | host/device | tokens/s | roofline ms | of roofline |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    const int batches[3] = {1, 8, 32};
    for (int bi = 0; bi < 3; bi++) {
        const int B = batches[bi];
        double dev_ms = 0, host_ms = 0;
        for (int it = -2; it < steps; it++) { /* two warm-up steps */
            sl_step_index ix = mk_step(&a, B, 1, ctx - 1 + SL_MAX(it, 0), blocks_per_seq, s.V);
            CK(sl_backend_synchronize(&b.be));
            const double h0 = now_s();
            CU(cudaEventRecord(e0, stream));
            forward(&b, &ix, B);
            CU(cudaEventRecord(e1, stream));
            const double h1 = now_s();
            CU(cudaEventSynchronize(e1));
            float ms;
            CU(cudaEventElapsedTime(&ms, e0, e1));
            if (it >= 0) dev_ms += ms, host_ms += (h1 - h0) * 1e3;
        }
        dev_ms /= steps, host_ms /= steps;
        const double kv_bytes = (double)B * (ctx + steps / 2) * s.L * 2.0 * s.KVH * s.hd * 2;
        const double roof_ms = ((double)b.weight_bytes + kv_bytes) / bw * 1e3;
        printf("| %d | %d | %.3f | %.3f | %.1f%% | %.0f | %.3f | %.0f%% |\n", B, ctx, dev_ms, host_ms,
               100.0 * host_ms / dev_ms, B * 1e3 / dev_ms, roof_ms, 100.0 * roof_ms / dev_ms);
    }

    /* prefill: one sequence, `prefill` rows at positions 0..prefill-1 */
    {
        sl_step_index ix = mk_step(&a, 1, prefill, prefill - 1, blocks_per_seq, s.V);
        double best = 1e30;
        for (int it = 0; it < 4; it++) {
            CU(cudaEventRecord(e0, stream));
            forward(&b, &ix, 1);
            CU(cudaEventRecord(e1, stream));
            CU(cudaEventSynchronize(e1));
            float ms;
            CU(cudaEventElapsedTime(&ms, e0, e1));
            if (it > 0 && ms < best) best = ms;
        }
        /* 2 flops per weight per row, plus attention (QK and PV: 2 * 2 * hd per visible token per head) */
        const double flops = 2.0 * (double)b.weight_bytes / 2 * prefill +
                             4.0 * s.hd * s.H * s.L * ((double)prefill * (prefill + 1) / 2);
        /* a plain GEMM through the backend: the FFN up projection at the same row count */
        float gemm_best = 1e30f;
        for (int it = 0; it < 4; it++) {
            CU(cudaEventRecord(e0, stream));
            CK(sl_backend_matmul(&b.be, &b.layers[0].wu, b.xb, prefill, b.ffu));
            CU(cudaEventRecord(e1, stream));
            CU(cudaEventSynchronize(e1));
            float ms;
            CU(cudaEventElapsedTime(&ms, e0, e1));
            if (it > 0 && ms < gemm_best) gemm_best = ms;
        }
        const double gemm_tflops = 2.0 * s.E * (double)s.F * prefill / (gemm_best * 1e-3) / 1e12;
        const double got_tflops = flops / (best * 1e-3) / 1e12;
        printf("\n| prefill tokens | ms | tokens/s | TFLOP/s | GEMM TFLOP/s (%d x %d x %d) | of GEMM |\n", prefill, s.E,
               s.F);
        printf("|---|---|---|---|---|---|\n");
        printf("| %d | %.2f | %.0f | %.1f | %.1f | %.0f%% |\n", prefill, best, prefill * 1e3 / best, got_tflops,
               gemm_tflops, 100.0 * got_tflops / gemm_tflops);
    }
    printf("\ngoals (issue #7): >= 75%% of roofline at batch 1 on the 8b shape; host < 10%% of device time\n");
    sl_backend_free(&b.be); /* device memory goes with the process */
    return 0;
}
#endif

int main(int argc, char **argv) {
    shape s = k_8b;
    int layers = -1, ctx = 512, steps = 20, prefill = 512;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            i++;
            s = !strcmp(argv[i], "default") ? k_default : k_8b;
        } else if (!strcmp(argv[i], "--layers") && i + 1 < argc) {
            layers = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) {
            ctx = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--prefill") && i + 1 < argc) {
            prefill = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--shape 8b|default] [--layers N] [--ctx TOKENS] [--steps N] [--prefill N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (layers > 0) s.L = layers;
    if (ctx < 1 || steps < 1 || prefill < 1 || ctx + steps + 1 > 1 << 20) {
        fprintf(stderr, "bench_cuda: bad sizes\n");
        return 2;
    }
    if (sl_backend_cuda_device_count() < 1) {
        printf("sluice-bench-cuda: no CUDA device here (or a build without CUDA): nothing measured\n");
        return 0;
    }
#ifdef SL_HAVE_CUDA
    return bench_cuda_run(s, ctx, steps, prefill);
#else
    return 0;
#endif
}
