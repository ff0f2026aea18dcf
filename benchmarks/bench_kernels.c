/*
 * bench_kernels.c — single-thread throughput of the CPU matrix products at the default model's shapes.
 *
 *   sluice-bench-kernels [--quick] [--kquants]   (SLUICE_SIMD=scalar|avx2|avx512 caps the SIMD level)
 *
 * For each weight type and shape (SmolLM2-135M: 576x576 attention, 1536x576 gate/up, 576x1536 down, 49152x576
 * the tied output head; "n_out x n_in") and 1 or 16 activation rows, it times the fast-mode products
 * (sl_k_matmul_qp on packed weights for Q4_0/Q4_1/Q8_0, as the CPU backend runs them; sl_k_matmul_q for the
 * other quantized types) and sl_k_matmul_f32 (exact mode) and prints GB/s of weight bytes read and GFLOP/s
 * (2 * rows * n_out * n_in per call), twice:
 *   hot:  the same matrix again and again, resident in L2 (what a kernel can do once its data is close)
 *   cold: a new copy of the matrix each call, from a pool larger than the last-level cache, so the weights
 *         stream from DRAM as they do in decode of a model bigger than the cache
 * Reference lines first: memcpy and plain read bandwidth over the same pool size, the int8 ceiling (512-bit
 * vpdpbusd per second, where the CPU has AVX512-VNNI), and OpenBLAS sgemm on one thread. After the products:
 * attention as a 16-stream decode step calls it (40 and 512 keys, KV hot or from memory) and one sampler draw
 * over a 49152-token vocabulary.
 * Each figure is the best of several timed batches (the machine is shared; the best is the least disturbed).
 *
 * The types of the K-quants family (and Q5_0, Q5_1, IQ4_NL) follow in a second table at the shapes of a
 * 1B-class llama (2048 hidden, 5632 ffn: rows must be whole 256-element super-blocks, which SmolLM2's 576 are
 * not), with Q4_0 and Q8_0 measured at the same shapes as the baseline. --kquants runs that table alone.
 */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kcpu.h"
#include "kdtype.h"
#include "sampler.h"

/* Larger than the last-level cache of current server parts (up to ~500 MiB on some), so "cold" reads DRAM. */
#define POOL_BYTES ((size_t)1 << 30)

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rng_state = 12345;
static float rand_f32(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((z >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

typedef struct bench_case {
    int wtype, n_out, n_in, n_rows, fast;
    const uint8_t *w; /* pool of copies, each w_bytes apart */
    size_t w_row_bytes, w_bytes;
    int n_copies;
    const float *x;
    const uint8_t *xq;
    size_t xq_row_bytes;
    float *y;
} bench_case;

static void run_once(const bench_case *c, int copy) {
    const uint8_t *w = c->w + (size_t)copy * c->w_bytes;
    if (c->fast && sl_k_pack_supported(c->wtype)) /* the pool holds packed copies then (fill_pool) */
        sl_k_matmul_qp(c->wtype, w, 0, c->n_out, c->n_in, c->xq, c->xq_row_bytes, c->n_rows, c->y, c->n_out);
    else if (c->fast)
        sl_k_matmul_q(c->wtype, w, c->w_row_bytes, 0, c->n_out, c->n_in, c->xq, c->xq_row_bytes, c->n_rows, c->y,
                      c->n_out);
    else
        sl_k_matmul_f32(c->wtype, w, c->w_row_bytes, 0, c->n_out, c->n_in, c->x, c->n_in, c->n_rows, c->y, c->n_out);
}

/* Fills the pool with copies of the weight rows (GGUF layout; or, packed != 0, the layout the fast products of
 * Q4_0/Q4_1/Q8_0 run on, which the CPU backend makes at load). Returns the number of copies. */
static int fill_pool(uint8_t *pool, const float *src, int wtype, int n_out, int n_in, int packed) {
    const size_t row_bytes = sl_dtype_row_bytes(wtype, n_in), w_bytes = row_bytes * (size_t)n_out;
    for (int o = 0; o < n_out; o++) sl_k_quantize_row(wtype, src + (size_t)o * n_in, pool + o * row_bytes, n_in);
    if (packed) { /* the same byte count for these shapes (n_out a multiple of 16) */
        if (sl_k_packed_bytes(wtype, n_out, n_in) != w_bytes) {
            fprintf(stderr, "bench shape %dx%d: packed size differs from the rows' (n_out not a multiple of 16)\n",
                    n_out, n_in);
            exit(1);
        }
        uint8_t *tmp = malloc(w_bytes);
        sl_k_pack_q(wtype, pool, row_bytes, n_out, n_in, tmp);
        memcpy(pool, tmp, w_bytes);
        free(tmp);
    }
    int n_copies = (int)(POOL_BYTES / w_bytes);
    for (int c = 1; c < n_copies; c++) memcpy(pool + (size_t)c * w_bytes, pool, w_bytes);
    return n_copies;
}

/* Best seconds per call over `batches` batches of about min_s each. hot: always copy 0. */
static double time_case(const bench_case *c, int hot, double min_s, int batches) {
    int iters = 1;
    double t0 = now_s();
    run_once(c, 0);
    double one = now_s() - t0;
    if (one > 0) iters = (int)(min_s / one) + 1;
    double best = 1e30;
    int copy = 1 % c->n_copies;
    for (int b = 0; b < batches; b++) {
        t0 = now_s();
        for (int i = 0; i < iters; i++) {
            run_once(c, hot ? 0 : copy);
            if (++copy == c->n_copies) copy = 0;
        }
        double t = (now_s() - t0) / iters;
        best = t < best ? t : best;
    }
    return best;
}

static void bench_memcpy(uint8_t *pool) {
    uint8_t *dst = malloc(POOL_BYTES / 2);
    if (!dst) return;
    memset(dst, 1, POOL_BYTES / 2);
    double best = 1e30;
    for (int i = 0; i < 5; i++) {
        double t0 = now_s();
        memcpy(dst, pool + (i & 1) * (POOL_BYTES / 2), POOL_BYTES / 2);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    printf("memcpy %4zu MiB:   %6.1f GB/s copied (%.1f GB/s of reads + writes)\n", POOL_BYTES / 2 >> 20,
           (double)(POOL_BYTES / 2) / best * 1e-9, 2.0 * (double)(POOL_BYTES / 2) / best * 1e-9);
    free(dst);
}

static volatile uint64_t bench_sink; /* keeps the read loop's sums alive */

/* Plain streaming read: the ceiling for "cold" weight rows, which are read once and never written. */
static void bench_read(const uint8_t *pool) {
    const uint64_t *p = (const uint64_t *)pool;
    const size_t n = POOL_BYTES / sizeof(uint64_t);
    double best = 1e30;
    uint64_t sink = 0;
    for (int i = 0; i < 5; i++) {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0; /* four chains so the adds never limit the loads */
        double t0 = now_s();
        for (size_t j = 0; j < n; j += 4) {
            s0 += p[j];
            s1 += p[j + 1];
            s2 += p[j + 2];
            s3 += p[j + 3];
        }
        double t = now_s() - t0;
        sink += s0 + s1 + s2 + s3;
        best = t < best ? t : best;
    }
    bench_sink = sink;
    printf("read   %4zu MiB:   %6.1f GB/s (one thread, plain loads)\n", POOL_BYTES >> 20, (double)POOL_BYTES / best * 1e-9);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
/* The integer ceiling of the fast products: independent 512-bit vpdpbusd (12 accumulator chains, more than its
 * latency times its issue rate), as many per second as one core retires; 64 multiply-adds each. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double vnni_loop(long n) {
    const __m512i u = _mm512_set1_epi8(3), v = _mm512_set1_epi8(5);
    __m512i a0 = _mm512_set1_epi32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
            a9 = a0, a10 = a0, a11 = a0;
    double t0 = now_s();
    for (long k = 0; k < n; k++) {
        a0 = _mm512_dpbusd_epi32(a0, u, v), a1 = _mm512_dpbusd_epi32(a1, u, v), a2 = _mm512_dpbusd_epi32(a2, u, v);
        a3 = _mm512_dpbusd_epi32(a3, u, v), a4 = _mm512_dpbusd_epi32(a4, u, v), a5 = _mm512_dpbusd_epi32(a5, u, v);
        a6 = _mm512_dpbusd_epi32(a6, u, v), a7 = _mm512_dpbusd_epi32(a7, u, v), a8 = _mm512_dpbusd_epi32(a8, u, v);
        a9 = _mm512_dpbusd_epi32(a9, u, v), a10 = _mm512_dpbusd_epi32(a10, u, v), a11 = _mm512_dpbusd_epi32(a11, u, v);
        /* keeps the chains in registers and the loop from being folded away */
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7),
                         "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    }
    const double t = now_s() - t0;
    __m512i x = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                 _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    x = _mm512_add_epi32(x, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
    bench_sink = (uint64_t)_mm512_reduce_add_epi32(x);
    _mm256_zeroupper();
    return t;
}

static void bench_vnni_peak(void) {
    if (!__builtin_cpu_supports("avx512vnni")) return;
    const long n = 20000000;
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t = vnni_loop(n);
        best = t < best ? t : best;
    }
    const double per_s = 12.0 * (double)n / best;
    printf("vpdpbusd zmm peak, 1 thread: %6.2f G instructions/s = %6.1f GMAC/s (int8)\n", per_s * 1e-9, per_s * 64e-9);
}
#else
static void bench_vnni_peak(void) {}
#endif

static void bench_sgemm(int m, int n, int k) {
    float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)n * k);
    float *c = malloc(sizeof(float) * (size_t)m * n);
    for (size_t i = 0; i < (size_t)m * k; i++) a[i] = rand_f32();
    for (size_t i = 0; i < (size_t)n * k; i++) b[i] = rand_f32();
    double best = 1e30;
    for (int r = 0; r < 7; r++) {
        int iters = 20;
        double t0 = now_s();
        for (int i = 0; i < iters; i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        double t = (now_s() - t0) / iters;
        best = t < best ? t : best;
    }
    printf("openblas sgemm %5d x %5d x %5d (rows x n_out x n_in), 1 thread: %7.1f GFLOP/s\n", m, n, k,
           2.0 * m * n * k / best * 1e-9);
    free(a), free(b), free(c);
}

/* One table: every type x shape x {1, 16} rows, fast mode (types with a fast product) and, where want_exact
 * says so, exact mode; hot and cold. x, xq, y, src: buffers for the largest shape and 16 rows. */
static void bench_table(uint8_t *pool, const int *types, size_t n_types, const int (*shapes)[2], size_t n_shapes,
                        int (*want_exact)(int wtype, size_t shape), float *x, uint8_t *xq, float *y, float *src,
                        double min_s, int batches) {
    static const int rows[] = {1, 16};
    const int max_rows = 16;
    printf("\n%-6s %-11s %4s %-5s | %9s %8s %8s | %9s %8s %8s\n", "type", "n_out x n_in", "rows", "mode", "hot us",
           "GB/s", "GFLOP/s", "cold us", "GB/s", "GFLOP/s");
    printf("-----------------------------------+-----------------------------+-----------------------------\n");
    for (size_t t = 0; t < n_types; t++)
        for (size_t s = 0; s < n_shapes; s++) {
            const int wtype = types[t], n_out = shapes[s][0], n_in = shapes[s][1];
            const size_t row_bytes = sl_dtype_row_bytes(wtype, n_in), w_bytes = row_bytes * (size_t)n_out;
            for (size_t i = 0; i < (size_t)n_out * n_in; i++) src[i] = rand_f32();
            const int at = sl_k_act_type(wtype);
            const size_t xq_row_bytes = at >= 0 ? sl_k_act_row_bytes(wtype, n_in) : 0;
            if (at >= 0)
                for (int r = 0; r < max_rows; r++) sl_k_quantize_act_row(wtype, x + r * n_in, xq + r * xq_row_bytes, n_in);
            for (size_t r = 0; r < 2; r++)
                for (int fast = at >= 0; fast >= (at < 0 || want_exact(wtype, s) ? 0 : 1); fast--) {
                    const int n_copies = fill_pool(pool, src, wtype, n_out, n_in, fast && sl_k_pack_supported(wtype));
                    bench_case c = {wtype, n_out, n_in, rows[r], fast, pool, row_bytes, w_bytes, n_copies, x, xq,
                                    xq_row_bytes, y};
                    const double hot = time_case(&c, 1, min_s, batches), cold = time_case(&c, 0, min_s, batches);
                    const double flop = 2.0 * rows[r] * n_out * n_in;
                    char shape[32];
                    snprintf(shape, sizeof shape, "%dx%d", n_out, n_in);
                    printf("%-6s %-11s %4d %-5s | %9.1f %8.1f %8.1f | %9.1f %8.1f %8.1f\n", sl_dtype_name(wtype),
                           shape, rows[r], fast ? "fast" : "exact", hot * 1e6, (double)w_bytes / hot * 1e-9,
                           flop / hot * 1e-9, cold * 1e6, (double)w_bytes / cold * 1e-9, flop / cold * 1e-9);
                    fflush(stdout);
                }
        }
}

static int exact_always(int wtype, size_t shape) {
    (void)wtype, (void)shape;
    return 1;
}

/* The K-quant table measures the exact mode once, for Q4_K at its first shape: the f32 products read every type
 * the same way (dequantize, then the canonical f32 dot). */
static int exact_q4_k_first(int wtype, size_t shape) { return wtype == SL_DTYPE_Q4_K && shape == 0; }

/* The second table: the types with 256-element blocks and their cousins, at 1B-class shapes. */
static void bench_kquants(uint8_t *pool, double min_s, int batches) {
    static const int shapes[][2] = {{2048, 2048}, {5632, 2048}, {2048, 5632}};
    static const int types[] = {SL_DTYPE_Q4_0, SL_DTYPE_Q8_0, SL_DTYPE_Q4_K, SL_DTYPE_Q5_K, SL_DTYPE_Q6_K,
                                SL_DTYPE_Q2_K, SL_DTYPE_Q3_K, SL_DTYPE_Q5_0, SL_DTYPE_Q5_1, SL_DTYPE_IQ4_NL};
    const int max_rows = 16, max_in = 5632, max_out = 5632;
    float *x = malloc(sizeof(float) * max_rows * max_in);
    for (int i = 0; i < max_rows * max_in; i++) x[i] = rand_f32();
    /* the largest activation row of any type: Q8 blocks with their f32 scales (44 bytes per 32), or Q8_K */
    size_t xq_row = sl_k_act_row_bytes(SL_DTYPE_Q4_1, max_in);
    if (sl_k_act_row_bytes(SL_DTYPE_Q4_K, max_in) > xq_row) xq_row = sl_k_act_row_bytes(SL_DTYPE_Q4_K, max_in);
    uint8_t *xq = malloc(xq_row * max_rows);
    float *y = malloc(sizeof(float) * (size_t)max_rows * max_out);
    float *src = malloc(sizeof(float) * (size_t)max_out * max_in);
    if (!x || !xq || !y || !src) {
        fprintf(stderr, "out of memory\n");
        free(x), free(xq), free(y), free(src);
        return;
    }
    bench_table(pool, types, sizeof types / sizeof *types, shapes, sizeof shapes / sizeof *shapes, exact_q4_k_first,
                x, xq, y, src, min_s, batches);
    double best = 1e30; /* what fast mode adds per call for these types: quantizing an activation row */
    for (int b = 0; b < batches; b++) {
        const int iters = 5000;
        double t0 = now_s();
        for (int i = 0; i < iters; i++) sl_k_quantize_row(SL_DTYPE_Q8_K, x, xq, 2048);
        double tt = (now_s() - t0) / iters;
        best = tt < best ? tt : best;
    }
    printf("\nquantize one activation row to q8_K, n_in 2048: %.2f us\n", best * 1e6);
    free(x), free(xq), free(y), free(src);
}

/* Attention as a 16-stream decode step calls it: 16 rows x the default model's 9 query / 3 KV heads of 64
 * dims, each row over its own sequence of n_ctx keys in f16, blocks of 16 scattered over the pool; one layer
 * (hot: KV in L2) or 30 layers in turn (the model's KV, from memory). Microseconds per layer-call, one thread. */
static void bench_attention(double min_s, int batches) {
    enum { ROWS = 16, H = 9, HKV = 3, D = 64, BS = 16 };
    const int ctxs[] = {40, 512};
    printf("\nattention, %d rows x %d heads (%d KV) x %d dims, f16 KV, one thread: us per layer\n", ROWS, H, HKV, D);
    for (size_t ci = 0; ci < 2; ci++) {
        const int n_ctx = ctxs[ci], nb = (n_ctx + BS - 1) / BS;
        for (int layers = 1; layers <= 30; layers += 29) {
            const size_t slots = (size_t)ROWS * nb * BS, pool_bytes = slots * HKV * D * sizeof(sl_fp16_t);
            uint8_t **kp = malloc(sizeof *kp * layers), **vp = malloc(sizeof *vp * layers);
            for (int l = 0; l < layers; l++) {
                kp[l] = malloc(pool_bytes), vp[l] = malloc(pool_bytes);
                memset(kp[l], 0x31, pool_bytes), memset(vp[l], 0x31, pool_bytes); /* small finite halves */
            }
            int32_t *bt = malloc(sizeof *bt * (size_t)ROWS * nb);
            for (int r = 0; r < ROWS; r++)
                for (int b = 0; b < nb; b++) bt[r * nb + b] = b * ROWS + r; /* sequences interleaved by block */
            float q[H * D], out[H * D], *scratch = malloc(sizeof(float) * (size_t)n_ctx);
            for (int i = 0; i < H * D; i++) q[i] = rand_f32();
            double best = 1e30;
            for (int bi = 0; bi < batches; bi++) {
                long calls = 0;
                const double t0 = now_s();
                do {
                    for (int l = 0; l < layers; l++, calls++)
                        for (int r = 0; r < ROWS; r++)
                            for (int g = 0; g < HKV; g++)
                                sl_k_attention(q, out, g * (H / HKV), (g + 1) * (H / HKV), H, HKV, D, kp[l], vp[l],
                                               SL_DTYPE_F16, bt + r * nb, BS, n_ctx, 0.125f, scratch);
                } while (now_s() - t0 < min_s);
                const double per = (now_s() - t0) / (double)calls;
                best = per < best ? per : best;
            }
            printf("  %4d keys, %2d layer%s: %8.1f us\n", n_ctx, layers, layers > 1 ? "s" : " ", best * 1e6);
            for (int l = 0; l < layers; l++) free(kp[l]), free(vp[l]);
            free(kp), free(vp), free(bt), free(scratch);
        }
    }
}

/* One sampler draw over the default model's 49152-token vocabulary, temperature 0.7, nothing else set (the
 * engine's common case): microseconds per draw, one thread. */
static void bench_draw(int batches) {
    enum { V = 49152 };
    float *logits = malloc(sizeof(float) * V);
    for (int i = 0; i < V; i++) logits[i] = 10.0f * rand_f32();
    sl_sampler_scratch *s = NULL;
    if (sl_sampler_scratch_create(V, &s) != SL_OK) return;
    sl_sampling_params p;
    sl_sampling_params_init(&p);
    p.temperature = 0.7f;
    sl_sample_input in = {.logits = logits, .n_vocab = V, .params = &p, .n_top_logprobs = -1};
    sl_rng rng;
    sl_rng_seed(&rng, 1, 0);
    double best = 1e30;
    for (int b = 0; b < batches; b++) {
        const int iters = 500;
        sl_sample_output o;
        const double t0 = now_s();
        for (int i = 0; i < iters; i++) sl_sample(&in, &rng, s, &o);
        const double per = (now_s() - t0) / iters;
        best = per < best ? per : best;
    }
    printf("\nsampler draw, %d-token vocabulary, temperature 0.7: %.1f us\n", V, best * 1e6);
    sl_sampler_scratch_free(s);
    free(logits);
}

int main(int argc, char **argv) {
    int quick = 0, kquants_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--kquants")) kquants_only = 1;
    }
    const double min_s = quick ? 0.02 : 0.1;
    const int batches = quick ? 3 : 5;
    openblas_set_num_threads(1);
    sl_kcpu_init();
    printf("sluice kernel benchmark: SIMD %s, one thread\n\n", sl_kcpu_simd_name());

    uint8_t *pool = malloc(POOL_BYTES);
    if (!pool) {
        fprintf(stderr, "cannot allocate %zu MiB\n", POOL_BYTES >> 20);
        return 1;
    }
    memset(pool, 0x5a, POOL_BYTES); /* not 0: malloc + memset 0 may become calloc, whose untouched pages all
                                      * map the one zero page, and reads of it come from cache */
    if (kquants_only) {
        bench_kquants(pool, min_s, batches);
        free(pool);
        return 0;
    }
    bench_memcpy(pool);
    bench_read(pool);
    bench_vnni_peak();
    bench_sgemm(16, 576, 576);
    bench_sgemm(16, 1536, 576);
    bench_sgemm(1, 1536, 576);

    static const int shapes[][2] = {{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
    static const int types[] = {SL_DTYPE_Q4_1, SL_DTYPE_Q4_0, SL_DTYPE_Q8_0, SL_DTYPE_F16, SL_DTYPE_BF16, SL_DTYPE_F32};
    const int max_rows = 16, max_in = 1536;
    float *x = malloc(sizeof(float) * max_rows * max_in);
    for (int i = 0; i < max_rows * max_in; i++) x[i] = rand_f32();
    uint8_t *xq = malloc(sl_k_act_row_bytes(SL_DTYPE_Q4_1, max_in) * max_rows); /* the largest rows: blocks + scales */
    float *y = malloc(sizeof(float) * (size_t)max_rows * 49152);
    float *src = malloc(sizeof(float) * (size_t)49152 * 576);

    bench_table(pool, types, sizeof types / sizeof *types, shapes, sizeof shapes / sizeof *shapes, exact_always, x,
                xq, y, src, min_s, batches);

    /* What fast mode adds per call: quantizing the activation rows. */
    for (int n_in = 576; n_in <= 1536; n_in += 960) {
        double best = 1e30;
        for (int b = 0; b < batches; b++) {
            const int iters = 20000;
            double t0 = now_s();
            for (int i = 0; i < iters; i++) sl_k_quantize_row(SL_DTYPE_Q8_1, x, xq, n_in);
            double tt = (now_s() - t0) / iters;
            best = tt < best ? tt : best;
        }
        printf("\nquantize one activation row to q8_1, n_in %d: %.2f us", n_in, best * 1e6);
    }
    printf("\n");
    free(x), free(xq), free(y), free(src);
    bench_attention(min_s, batches);
    bench_draw(batches);
    bench_kquants(pool, min_s, batches);
    free(pool);
    return 0;
}
