/*
 * test_cuda_ops.c — every operation of the CUDA backend against the CPU backend (DESIGN.md §5), label gpu.
 *
 * Each test makes a CPU backend (the reference) and a CUDA backend on device 0, feeds both the same random
 * inputs of awkward sizes (1, 3 and 17 rows; dims that are not multiples of 32 where the op allows), poisons
 * the GPU output with NaN before the run, and bounds the normalized error ‖gpu − cpu‖ / ‖cpu‖ (every element
 * must also be finite, so an element left unwritten fails). Where the two compute the same correctly rounded
 * operations (add, the f32 and f16 KV stores, the f32/f16 embedding rows) the results must be bit-identical.
 *
 * Without a CUDA device (a build without CUDA, or a machine without a GPU or driver) every test says so with
 * cr_skip_test, visibly: ctest then shows them as skipped in the log, never as silently passing work.
 *
 * Criterion runs each test in its own process, and no CUDA call happens before a test starts, so the fault
 * test's broken context cannot leak into another test.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "kcpu.h"
#include "sl_util.h"
#include "testutil.h"

#define SKIP_WITHOUT_CUDA()                                                                                  \
    do {                                                                                                     \
        if (sl_backend_cuda_device_count() < 1)                                                              \
            cr_skip_test("no CUDA device (a build without CUDA, or no GPU or driver here): CUDA ops not run"); \
    } while (0)

/* Longest attention context in these tests (tokens). */
#define T_MAX_CTX 256

static sl_backend g_cpu, g_gpu;

static void make_backends(void) {
    sl_backend_cpu_params cp = {.n_threads = 2, .precision = SL_PRECISION_EXACT, .max_ctx = T_MAX_CTX};
    cr_assert_eq(sl_backend_cpu_create(&cp, &g_cpu), SL_OK, "%s", sl_last_error());
    sl_backend_cuda_params gp = {.device = 0, .precision = SL_PRECISION_EXACT, .max_ctx = T_MAX_CTX};
    cr_assert_eq(sl_backend_cuda_create(&gp, &g_gpu), SL_OK, "%s", sl_last_error());
}

static void free_backends(void) {
    sl_backend_free(&g_gpu);
    sl_backend_free(&g_cpu);
}

static float *rand_vec(size_t n, uint64_t *rng, float lo, float hi) {
    float *p = malloc(n * sizeof(float));
    cr_assert(p);
    for (size_t i = 0; i < n; i++) p[i] = sl_test_rand_f32(rng, lo, hi);
    return p;
}

/* A device buffer holding host[n] floats (host NULL: n NaNs, the poison). */
static float *dev_floats(const float *host, size_t n) {
    void *d = NULL;
    cr_assert_eq(sl_backend_alloc(&g_gpu, n * sizeof(float), &d), SL_OK, "%s", sl_last_error());
    float *tmp = NULL;
    if (!host) {
        tmp = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) tmp[i] = NAN;
        host = tmp;
    }
    cr_assert_eq(sl_backend_upload(&g_gpu, d, host, n * sizeof(float)), SL_OK, "%s", sl_last_error());
    free(tmp);
    return d;
}

static float *host_of(const float *dev, size_t n) {
    float *h = malloc(n * sizeof(float));
    cr_assert_eq(sl_backend_download(&g_gpu, h, dev, n * sizeof(float)), SL_OK, "%s", sl_last_error());
    return h;
}

/* ‖a − ref‖ / ‖ref‖ over n elements; every element of a must be finite (the NaN poison overwritten). */
static double rel_err(const float *a, const float *ref, size_t n, const char *what) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(isfinite(a[i]), "%s: element %zu is %f (not written, or overflowed)", what, i, (double)a[i]);
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * (double)ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void expect_close(const float *gpu_dev, const float *ref, size_t n, double bound, const char *what) {
    float *g = host_of(gpu_dev, n);
    double e = rel_err(g, ref, n, what);
    cr_expect(e <= bound, "%s: normalized error %.3g > bound %.3g", what, e, bound);
    free(g);
}

/* Registers the index arrays of a step on both backends (the CPU backend ignores them). */
static void begin_step(const sl_step_index *ix) {
    cr_assert_eq(sl_backend_begin_step(&g_cpu, ix), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_backend_begin_step(&g_gpu, ix), SL_OK, "%s", sl_last_error());
}

static const int k_rows[] = {1, 3, 17};

/* ---- element and row operations ------------------------------------------------------------------------- */

/* RMSNorm: f32 throughout on both, only the sum's order differs: ~dim * 2^-24 at worst, 1e-5 is ~10x that
 * at dim 1000 and far below any wrong scale or row. Also in place (y = x), as the model calls it. */
Test(cuda_ops, rms_norm, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    uint64_t rng = 11;
    const int dims[] = {1, 37, 576, 1000};
    for (size_t di = 0; di < SL_ARRAY_LEN(dims); di++)
        for (size_t ri = 0; ri < SL_ARRAY_LEN(k_rows); ri++) {
            const int dim = dims[di], rows = k_rows[ri];
            const size_t n = (size_t)rows * dim;
            float *x = rand_vec(n, &rng, -3, 3), *w = rand_vec((size_t)dim, &rng, 0.5f, 1.5f);
            float *ref = malloc(n * sizeof(float));
            cr_assert_eq(sl_backend_rms_norm(&g_cpu, x, w, ref, rows, dim, 1e-5f), SL_OK);
            float *dx = dev_floats(x, n), *dw = dev_floats(w, (size_t)dim), *dy = dev_floats(NULL, n);
            cr_assert_eq(sl_backend_rms_norm(&g_gpu, dx, dw, dy, rows, dim, 1e-5f), SL_OK, "%s", sl_last_error());
            expect_close(dy, ref, n, 1e-5, "rms_norm");
            cr_assert_eq(sl_backend_rms_norm(&g_gpu, dx, dw, dx, rows, dim, 1e-5f), SL_OK, "%s", sl_last_error());
            expect_close(dx, ref, n, 1e-5, "rms_norm in place");
            sl_backend_buf_free(&g_gpu, dx, n * 4);
            sl_backend_buf_free(&g_gpu, dw, (size_t)dim * 4);
            sl_backend_buf_free(&g_gpu, dy, n * 4);
            free(x), free(w), free(ref);
        }
    free_backends();
}

/* RoPE: both take the angle in double and round cos, sin and the rotated pair once to float; the GPU's
 * double pow/sincos may differ from glibc's in the last bit of a double, far below float rounding, so the
 * results agree to ~1 float ulp: bound 1e-6. Positions up to 4000, a partial rotation (n_rot < head_dim)
 * and head_dim 80 (not a multiple of 32) included. */
Test(cuda_ops, rope, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    uint64_t rng = 12;
    const struct { int n_heads, head_dim, n_rot; float base, scale; } cs[] = {
        {9, 64, 64, 10000.0f, 1.0f}, {3, 80, 32, 500000.0f, 0.25f}, {1, 6, 6, 10000.0f, 1.0f}};
    for (size_t ci = 0; ci < SL_ARRAY_LEN(cs); ci++)
        for (size_t ri = 0; ri < SL_ARRAY_LEN(k_rows); ri++) {
            const int rows = k_rows[ri];
            const size_t n = (size_t)rows * cs[ci].n_heads * cs[ci].head_dim;
            float *x = rand_vec(n, &rng, -2, 2), *ref = malloc(n * sizeof(float));
            memcpy(ref, x, n * sizeof(float));
            int32_t *pos = malloc(sizeof(int32_t) * rows);
            for (int r = 0; r < rows; r++) pos[r] = (int32_t)(sl_test_rand_u64(&rng) % 4000);
            sl_step_index ix = {.n_rows = rows, .pos = pos};
            begin_step(&ix);
            cr_assert_eq(sl_backend_rope(&g_cpu, ref, pos, rows, cs[ci].n_heads, cs[ci].head_dim, cs[ci].n_rot,
                                         cs[ci].base, cs[ci].scale), SL_OK);
            float *dx = dev_floats(x, n);
            cr_assert_eq(sl_backend_rope(&g_gpu, dx, pos, rows, cs[ci].n_heads, cs[ci].head_dim, cs[ci].n_rot,
                                         cs[ci].base, cs[ci].scale), SL_OK, "%s", sl_last_error());
            expect_close(dx, ref, n, 1e-6, "rope");
            sl_backend_buf_free(&g_gpu, dx, n * 4);
            free(x), free(ref), free(pos);
        }
    free_backends();
}

/* RoPE without begin_step: the positions are a host array the GPU has no copy of; the backend must refuse
 * rather than read host memory from the device. */
Test(cuda_ops, index_array_not_registered, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    int32_t pos[2] = {0, 1};
    float *dx = dev_floats(NULL, 2 * 64);
    sl_step_index ix = {.n_rows = 0};
    begin_step(&ix);
    cr_assert_eq(sl_backend_rope(&g_gpu, dx, pos, 2, 1, 64, 64, 10000.0f, 1.0f), SL_INVALID_ARGUMENT);
    free_backends();
}

/* SwiGLU: expf of CUDA vs the CPU's canonical exp, each within a few ulp: bound 1e-6. In place too. */
Test(cuda_ops, swiglu, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    uint64_t rng = 13;
    const int ns[] = {1, 37, 1536};
    for (size_t ni = 0; ni < SL_ARRAY_LEN(ns); ni++)
        for (size_t ri = 0; ri < SL_ARRAY_LEN(k_rows); ri++) {
            const size_t n = (size_t)k_rows[ri] * ns[ni];
            float *g = rand_vec(n, &rng, -8, 8), *u = rand_vec(n, &rng, -2, 2), *ref = malloc(n * 4);
            cr_assert_eq(sl_backend_swiglu(&g_cpu, g, u, ref, k_rows[ri], ns[ni]), SL_OK);
            float *dg = dev_floats(g, n), *du = dev_floats(u, n), *dy = dev_floats(NULL, n);
            cr_assert_eq(sl_backend_swiglu(&g_gpu, dg, du, dy, k_rows[ri], ns[ni]), SL_OK, "%s", sl_last_error());
            expect_close(dy, ref, n, 1e-6, "swiglu");
            cr_assert_eq(sl_backend_swiglu(&g_gpu, dg, du, dg, k_rows[ri], ns[ni]), SL_OK, "%s", sl_last_error());
            expect_close(dg, ref, n, 1e-6, "swiglu in place");
            sl_backend_buf_free(&g_gpu, dg, n * 4);
            sl_backend_buf_free(&g_gpu, du, n * 4);
            sl_backend_buf_free(&g_gpu, dy, n * 4);
            free(g), free(u), free(ref);
        }
    free_backends();
}

/* add: one correctly rounded f32 addition per element on both: bit-identical. */
Test(cuda_ops, add, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    uint64_t rng = 14;
    const size_t ns[] = {1, 37, 576 * 17, 100003};
    for (size_t ni = 0; ni < SL_ARRAY_LEN(ns); ni++) {
        const size_t n = ns[ni];
        float *y = rand_vec(n, &rng, -5, 5), *x = rand_vec(n, &rng, -5, 5);
        float *dy = dev_floats(y, n), *dx = dev_floats(x, n);
        cr_assert_eq(sl_backend_add(&g_cpu, y, x, n), SL_OK);
        cr_assert_eq(sl_backend_add(&g_gpu, dy, dx, n), SL_OK, "%s", sl_last_error());
        float *g = host_of(dy, n);
        cr_expect(memcmp(g, y, n * sizeof(float)) == 0, "add: not bit-identical to the CPU at n = %zu", n);
        sl_backend_buf_free(&g_gpu, dy, n * 4);
        sl_backend_buf_free(&g_gpu, dx, n * 4);
        free(y), free(x), free(g);
    }
    free_backends();
}

/* ---- weights: matmul and the embedding lookup ------------------------------------------------------------- */
typedef struct host_weight {
    sl_weight w;
    void *data;
} host_weight;

static host_weight make_weight(int type, int n_in, int n_out, uint64_t *rng) {
    host_weight h = {0};
    h.w.type = type;
    h.w.n_in = n_in;
    h.w.n_out = n_out;
    h.w.row_bytes = sl_dtype_row_bytes(type, n_in);
    cr_assert(h.w.row_bytes > 0);
    h.data = malloc(h.w.row_bytes * (size_t)n_out);
    float *row = malloc(sizeof(float) * n_in);
    for (int o = 0; o < n_out; o++) {
        for (int i = 0; i < n_in; i++) row[i] = sl_test_rand_f32(rng, -1, 1);
        if (type == SL_DTYPE_F32)
            memcpy((uint8_t *)h.data + (size_t)o * h.w.row_bytes, row, sizeof(float) * n_in);
        else
            sl_k_quantize_row(type, row, (uint8_t *)h.data + (size_t)o * h.w.row_bytes, n_in);
    }
    free(row);
    h.w.data = h.data;
    return h;
}

/* Bound of a product with these weights. f32 weights: f32 products with f32 accumulation on both (cuBLAS
 * COMPUTE_32F, no TF32), only the order differs: 1e-5. Everything else runs as f16 weights x f16 activations
 * on the GPU: each of the two roundings is a relative error up to 2^-11 (4.9e-4) per element, random in sign,
 * so a dot product of random terms carries about 2^-11 normalized error; 3e-3 leaves a factor ~5 and is
 * still ~100x below a wrong row, column or scale. (f16 weights: only the activation rounding, same bound.) */
static double matmul_bound(int type) { return type == SL_DTYPE_F32 ? 1e-5 : 3e-3; }

Test(cuda_ops, matmul, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    uint64_t rng = 15;
    const int types[] = {SL_DTYPE_F32, SL_DTYPE_F16, SL_DTYPE_Q4_0, SL_DTYPE_Q4_1, SL_DTYPE_Q8_0};
    const struct { int n_in, n_out; } shapes[] = {{64, 1}, {96, 37}, {576, 200}, {256, 1000}};
    for (size_t ti = 0; ti < SL_ARRAY_LEN(types); ti++)
        for (size_t si = 0; si < SL_ARRAY_LEN(shapes); si++)
            for (size_t ri = 0; ri < SL_ARRAY_LEN(k_rows); ri++) {
                const int n_in = shapes[si].n_in, n_out = shapes[si].n_out, rows = k_rows[ri];
                host_weight hw = make_weight(types[ti], n_in, n_out, &rng);
                sl_weight dw;
                cr_assert_eq(sl_backend_upload_weight(&g_gpu, &hw.w, &dw), SL_OK, "%s", sl_last_error());
                float *x = rand_vec((size_t)rows * n_in, &rng, -1, 1);
                float *ref = malloc(sizeof(float) * rows * n_out);
                cr_assert_eq(sl_backend_matmul(&g_cpu, &hw.w, x, rows, ref), SL_OK);
                float *dx = dev_floats(x, (size_t)rows * n_in), *dy = dev_floats(NULL, (size_t)rows * n_out);
                cr_assert_eq(sl_backend_matmul(&g_gpu, &dw, dx, rows, dy), SL_OK, "%s", sl_last_error());
                char what[96];
                snprintf(what, sizeof what, "matmul %s %d rows x %d -> %d", sl_dtype_name(types[ti]), rows, n_in,
                         n_out);
                expect_close(dy, ref, (size_t)rows * n_out, matmul_bound(types[ti]), what);
                sl_backend_weight_free(&g_gpu, &dw);
                sl_backend_buf_free(&g_gpu, dx, 0);
                sl_backend_buf_free(&g_gpu, dy, 0);
                free(hw.data), free(x), free(ref);
            }
    free_backends();
}

/* matmul_multi: Q, K and V shapes sharing the input (one f16 conversion of x on the GPU), mixed f32 and
 * quantized weights in one call; each output under its type's bound. */
Test(cuda_ops, matmul_multi, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    uint64_t rng = 16;
    const int n_in = 576, outs[3] = {576, 192, 192}, types[3] = {SL_DTYPE_Q4_1, SL_DTYPE_F32, SL_DTYPE_Q8_0};
    for (size_t ri = 0; ri < SL_ARRAY_LEN(k_rows); ri++) {
        const int rows = k_rows[ri];
        host_weight hw[3];
        sl_weight dw[3];
        const sl_weight *hws[3], *dws[3];
        float *refs[3], *dys[3];
        for (int i = 0; i < 3; i++) {
            hw[i] = make_weight(types[i], n_in, outs[i], &rng);
            cr_assert_eq(sl_backend_upload_weight(&g_gpu, &hw[i].w, &dw[i]), SL_OK, "%s", sl_last_error());
            hws[i] = &hw[i].w;
            dws[i] = &dw[i];
            refs[i] = malloc(sizeof(float) * rows * outs[i]);
            dys[i] = dev_floats(NULL, (size_t)rows * outs[i]);
        }
        float *x = rand_vec((size_t)rows * n_in, &rng, -1, 1), *dx = dev_floats(x, (size_t)rows * n_in);
        cr_assert_eq(sl_backend_matmul_multi(&g_cpu, 3, hws, x, rows, refs), SL_OK);
        cr_assert_eq(sl_backend_matmul_multi(&g_gpu, 3, dws, dx, rows, dys), SL_OK, "%s", sl_last_error());
        for (int i = 0; i < 3; i++) {
            expect_close(dys[i], refs[i], (size_t)rows * outs[i], matmul_bound(types[i]), "matmul_multi");
            sl_backend_weight_free(&g_gpu, &dw[i]);
            sl_backend_buf_free(&g_gpu, dys[i], 0);
            free(hw[i].data), free(refs[i]);
        }
        sl_backend_buf_free(&g_gpu, dx, 0);
        free(x);
    }
    free_backends();
}

/* get_rows: f32 and f16 tables are kept as they are, so rows come back bit-identical; quantized tables are
 * f16 on the device (2^-11 relative rounding per element of the exact dequantized value): bound 1e-3.
 * A token id outside the table is SL_INVALID_ARGUMENT, as on the CPU. */
Test(cuda_ops, get_rows, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    uint64_t rng = 17;
    const int types[] = {SL_DTYPE_F32, SL_DTYPE_F16, SL_DTYPE_Q8_0, SL_DTYPE_Q4_1};
    const int n_in = 96, n_out = 50;
    for (size_t ti = 0; ti < SL_ARRAY_LEN(types); ti++)
        for (size_t ri = 0; ri < SL_ARRAY_LEN(k_rows); ri++) {
            const int n = k_rows[ri];
            host_weight hw = make_weight(types[ti], n_in, n_out, &rng);
            sl_weight dw;
            cr_assert_eq(sl_backend_upload_weight(&g_gpu, &hw.w, &dw), SL_OK, "%s", sl_last_error());
            int32_t *ids = malloc(sizeof(int32_t) * n);
            for (int i = 0; i < n; i++) ids[i] = (int32_t)(sl_test_rand_u64(&rng) % n_out);
            sl_step_index ix = {.n_rows = n, .tokens = ids};
            begin_step(&ix);
            float *ref = malloc(sizeof(float) * n * n_in), *dy = dev_floats(NULL, (size_t)n * n_in);
            cr_assert_eq(sl_backend_get_rows(&g_cpu, &hw.w, ids, n, ref), SL_OK);
            cr_assert_eq(sl_backend_get_rows(&g_gpu, &dw, ids, n, dy), SL_OK, "%s", sl_last_error());
            if (types[ti] == SL_DTYPE_F32 || types[ti] == SL_DTYPE_F16) {
                float *g = host_of(dy, (size_t)n * n_in);
                cr_expect(memcmp(g, ref, sizeof(float) * n * n_in) == 0, "get_rows %s: not bit-identical",
                          sl_dtype_name(types[ti]));
                free(g);
            } else {
                expect_close(dy, ref, (size_t)n * n_in, 1e-3, "get_rows (quantized table)");
            }
            ids[0] = n_out; /* one past the end */
            begin_step(&ix);
            cr_expect_eq(sl_backend_get_rows(&g_gpu, &dw, ids, n, dy), SL_INVALID_ARGUMENT);
            sl_backend_weight_free(&g_gpu, &dw);
            sl_backend_buf_free(&g_gpu, dy, 0);
            free(hw.data), free(ids), free(ref);
        }
    free_backends();
}

/* ---- KV store and paged attention -------------------------------------------------------------------------- */
typedef struct attn_case {
    int n_head, n_head_kv, head_dim, block_size, kv_type;
} attn_case;

/* Three sequences of 1, 17 and 45 tokens (crossing block boundaries at block size 16 or 7) in blocks taken
 * from a shuffled pool, every token's K/V stored through kv_store on both backends; then attention for a
 * mixed step: seq 0's only token (decode at position 0), seq 1's last token (decode), and a prefill chunk of
 * seq 2's last 5 positions (each its own causal context).
 *
 * Bounds. The stored pools must be bit-identical (a copy, or f32 -> f16 round to nearest even on both).
 * Attention reads the same K/V values; the GPU's online softmax rescales partial sums and uses CUDA's expf
 * where the CPU makes two passes with its canonical exp, both in f32: differences of a few ulp per weight,
 * averaged over the context, so 2e-5 normalized (the CPU kernel's own test measures ~4e-7 against float64). */
static void run_attention_case(attn_case ac, uint64_t seed) {
    uint64_t rng = seed;
    const int lens[3] = {1, 17, 45}, n_seqs = 3;
    const int bs = ac.block_size, row = ac.n_head_kv * ac.head_dim, qrow = ac.n_head * ac.head_dim;
    int n_blocks_total = 0, nb[3];
    for (int s = 0; s < n_seqs; s++) n_blocks_total += nb[s] = (lens[s] + bs - 1) / bs;
    n_blocks_total += 3; /* spare blocks nobody owns: a kernel reading past a table would find garbage */
    int32_t *perm = malloc(sizeof(int32_t) * n_blocks_total);
    for (int b = 0; b < n_blocks_total; b++) perm[b] = b;
    for (int b = n_blocks_total - 1; b > 0; b--) {
        int j = (int)(sl_test_rand_u64(&rng) % (uint64_t)(b + 1));
        int32_t t = perm[b];
        perm[b] = perm[j];
        perm[j] = t;
    }
    int32_t *tables[3];
    for (int s = 0, k = 0; s < n_seqs; s++) {
        tables[s] = malloc(sizeof(int32_t) * nb[s]);
        for (int b = 0; b < nb[s]; b++) tables[s][b] = perm[k++];
    }
    const size_t esz = ac.kv_type == SL_DTYPE_F16 ? 2 : 4;
    const size_t pool_bytes = (size_t)n_blocks_total * bs * row * esz;
    void *ck, *cv, *gk, *gv;
    cr_assert_eq(sl_backend_alloc(&g_cpu, pool_bytes, &ck), SL_OK);
    cr_assert_eq(sl_backend_alloc(&g_cpu, pool_bytes, &cv), SL_OK);
    cr_assert_eq(sl_backend_alloc(&g_gpu, pool_bytes, &gk), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_backend_alloc(&g_gpu, pool_bytes, &gv), SL_OK, "%s", sl_last_error());

    /* step 1: store every token of every sequence (rows in sequence order) */
    int n_tok = 0;
    for (int s = 0; s < n_seqs; s++) n_tok += lens[s];
    int64_t *slots = malloc(sizeof(int64_t) * n_tok);
    for (int s = 0, r = 0; s < n_seqs; s++)
        for (int p = 0; p < lens[s]; p++, r++) slots[r] = (int64_t)tables[s][p / bs] * bs + p % bs;
    float *k = malloc(sizeof(float) * n_tok * row), *v = malloc(sizeof(float) * n_tok * row);
    for (int r = 0; r < n_tok; r++)
        for (int h = 0; h < ac.n_head_kv; h++)
            for (int d = 0; d < ac.head_dim; d++) { /* each KV head offset differently: a wrong head shows */
                k[(size_t)r * row + h * ac.head_dim + d] = sl_test_rand_f32(&rng, -1, 1) + 1.5f * h;
                v[(size_t)r * row + h * ac.head_dim + d] = sl_test_rand_f32(&rng, -1, 1) - 2.0f * h;
            }
    sl_step_index ix1 = {.n_rows = n_tok, .slots = slots};
    begin_step(&ix1);
    cr_assert_eq(sl_backend_kv_store(&g_cpu, ck, cv, ac.kv_type, k, v, slots, n_tok, ac.n_head_kv, ac.head_dim), SL_OK);
    float *dk = dev_floats(k, (size_t)n_tok * row), *dv = dev_floats(v, (size_t)n_tok * row);
    cr_assert_eq(sl_backend_kv_store(&g_gpu, gk, gv, ac.kv_type, dk, dv, slots, n_tok, ac.n_head_kv, ac.head_dim),
                 SL_OK, "%s", sl_last_error());
    uint8_t *gk_h = malloc(pool_bytes), *gv_h = malloc(pool_bytes);
    cr_assert_eq(sl_backend_download(&g_gpu, gk_h, gk, pool_bytes), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_backend_download(&g_gpu, gv_h, gv, pool_bytes), SL_OK, "%s", sl_last_error());
    for (int r = 0; r < n_tok; r++) {
        size_t at = (size_t)slots[r] * row * esz;
        cr_expect(memcmp(gk_h + at, (uint8_t *)ck + at, row * esz) == 0, "K slot %lld differs", (long long)slots[r]);
        cr_expect(memcmp(gv_h + at, (uint8_t *)cv + at, row * esz) == 0, "V slot %lld differs", (long long)slots[r]);
    }

    /* step 2: attention rows */
    const int n_rows = 7;
    int32_t row_seq[7] = {0, 1, 2, 2, 2, 2, 2}, row_n_ctx[7] = {1, 17, 41, 42, 43, 44, 45};
    const int32_t *bts[3] = {tables[0], tables[1], tables[2]};
    sl_step_index ix2 = {.n_rows = n_rows, .row_seq = row_seq, .row_n_ctx = row_n_ctx, .n_seqs = n_seqs,
                         .block_tables = bts, .block_size = bs};
    begin_step(&ix2);
    sl_attn_args a = {.kv_type = ac.kv_type, .n_head = ac.n_head, .n_head_kv = ac.n_head_kv, .head_dim = ac.head_dim,
                      .block_size = bs, .scale = 1.0f / sqrtf((float)ac.head_dim), .block_tables = bts,
                      .row_seq = row_seq, .row_n_ctx = row_n_ctx};
    float *q = rand_vec((size_t)n_rows * qrow, &rng, -1, 1), *ref = malloc(sizeof(float) * n_rows * qrow);
    a.k_pool = ck;
    a.v_pool = cv;
    cr_assert_eq(sl_backend_attention(&g_cpu, q, ref, n_rows, &a), SL_OK, "%s", sl_last_error());
    float *dq = dev_floats(q, (size_t)n_rows * qrow), *dout = dev_floats(NULL, (size_t)n_rows * qrow);
    a.k_pool = gk;
    a.v_pool = gv;
    cr_assert_eq(sl_backend_attention(&g_gpu, dq, dout, n_rows, &a), SL_OK, "%s", sl_last_error());
    char what[96];
    snprintf(what, sizeof what, "attention %d/%d heads, head_dim %d, block %d, %s KV", ac.n_head, ac.n_head_kv,
             ac.head_dim, bs, sl_dtype_name(ac.kv_type));
    expect_close(dout, ref, (size_t)n_rows * qrow, 2e-5, what);

    sl_backend_buf_free(&g_gpu, gk, pool_bytes);
    sl_backend_buf_free(&g_gpu, gv, pool_bytes);
    sl_backend_buf_free(&g_cpu, ck, pool_bytes);
    sl_backend_buf_free(&g_cpu, cv, pool_bytes);
    for (int s = 0; s < n_seqs; s++) free(tables[s]);
    free(perm), free(slots), free(k), free(v), free(gk_h), free(gv_h), free(q), free(ref);
}

Test(cuda_ops, attention_f32_kv, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    run_attention_case((attn_case){9, 3, 64, 16, SL_DTYPE_F32}, 21);   /* the default model's shape */
    run_attention_case((attn_case){8, 2, 40, 7, SL_DTYPE_F32}, 22);    /* head_dim not a multiple of 32 */
    run_attention_case((attn_case){4, 4, 128, 16, SL_DTYPE_F32}, 23);  /* no GQA, larger heads */
    free_backends();
}

Test(cuda_ops, attention_f16_kv, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    run_attention_case((attn_case){9, 3, 64, 16, SL_DTYPE_F16}, 31);
    run_attention_case((attn_case){8, 2, 40, 7, SL_DTYPE_F16}, 32);
    run_attention_case((attn_case){32, 8, 256, 16, SL_DTYPE_F16}, 33); /* the largest head_dim taken */
    free_backends();
}

/* ---- the failure path --------------------------------------------------------------------------------------- */
/* A CUDA error (a copy to an address that is no device memory) surfaces as SL_DEVICE with a message, and the
 * backend then refuses everything, even calls that would have worked: the replica leaves service. */
Test(cuda_ops, device_error_is_sticky, .timeout = 60) {
    SKIP_WITHOUT_CUDA();
    make_backends();
    float host[64] = {0}, *dy = dev_floats(host, 64);
    sl_status st = sl_backend_upload(&g_gpu, (void *)(uintptr_t)0x10, host, sizeof host);
    if (st == SL_OK) st = sl_backend_synchronize(&g_gpu); /* an asynchronous failure shows at the next sync */
    cr_assert_eq(st, SL_DEVICE, "a copy to a bogus device address returned %s", sl_status_str(st));
    cr_expect(strstr(sl_last_error(), "CUDA device 0") != NULL, "message: %s", sl_last_error());
    cr_expect_eq(sl_backend_add(&g_gpu, dy, dy, 64), SL_DEVICE);
    cr_expect(strstr(sl_last_error(), "out of service") != NULL, "message: %s", sl_last_error());
    void *p = NULL;
    cr_expect_eq(sl_backend_alloc(&g_gpu, 64, &p), SL_DEVICE);
    cr_expect_eq(sl_backend_synchronize(&g_gpu), SL_DEVICE);
    free_backends();
}

/* Without a device the backend cannot be created, and says which device. */
Test(cuda_ops, create_reports_missing_device, .timeout = 60) {
    int n = sl_backend_cuda_device_count();
    sl_backend b;
    sl_backend_cuda_params gp = {.device = n, .precision = SL_PRECISION_EXACT, .max_ctx = 16};
    sl_status st = sl_backend_cuda_create(&gp, &b);
    cr_assert_neq(st, SL_OK);
    cr_expect(st == SL_DEVICE || st == SL_UNSUPPORTED, "status %s", sl_status_str(st));
    cr_expect(b.iface == NULL);
}
