/*
 * test_kernel_attention.c — attention over the paged KV cache, and the store of a token's K/V.
 *
 * The pool's tokens are scattered: the block table is a permutation of the pool's blocks, with an odd block
 * size, so a kernel that assumed contiguous tokens or mixed up slots would read the wrong rows. Query heads
 * share KV heads (GQA: 9 query heads over 3 KV heads, as the default model), and KV heads are made very
 * different from each other, so a wrong head mapping shows as a large error.
 *
 * Reference: float64 from the values actually in the pool (after F16 rounding for F16 pools). Bound on the
 * normalized error of each head's output, 2e-6. Justification: scores carry the canonical dot's error, at
 * most gamma_m sum |q k| with m = head_dim/16 + 19 (~1e-6 relative to the score magnitudes used here,
 * which are O(1)), and exp turns an absolute score error into the same relative error in a weight; the
 * weighted sum of V over n_ctx tokens adds at most gamma_{n_ctx} relative to sum p |v|, which for random V is
 * a random walk far below its worst case. Measured: at most 4.3e-7 over these cases, so the bound leaves a
 * factor ~5, and sits ~1e4 below what any wrong slot, head or scale gives. Every SIMD variant must equal
 * the scalar bits.
 */
#include <criterion/criterion.h>

#include "test_kernel_util.h"

typedef struct att_case {
    int n_head, n_head_kv, head_dim, block_size, n_blocks, kv_type;
} att_case;

typedef struct att_fixture {
    att_case c;
    void *k, *v;       /* [n_blocks * block_size][n_head_kv][head_dim], kv_type */
    int32_t *table;    /* block table: a permutation of the pool's blocks */
    float *q;          /* [n_head][head_dim] */
} att_fixture;

static att_fixture att_make(att_case c, uint64_t seed) {
    att_fixture f = {c, NULL, NULL, NULL, NULL};
    const int n_slots = c.n_blocks * c.block_size, row = c.n_head_kv * c.head_dim;
    const size_t esz = c.kv_type == SL_DTYPE_F16 ? 2 : 4;
    f.k = calloc((size_t)n_slots * row, esz);
    f.v = calloc((size_t)n_slots * row, esz);
    f.table = malloc(sizeof(int32_t) * c.n_blocks);
    uint64_t rng = seed;
    for (int b = 0; b < c.n_blocks; b++) f.table[b] = b;
    for (int b = c.n_blocks - 1; b > 0; b--) { /* Fisher-Yates */
        int j = (int)(sl_test_rand_u64(&rng) % (uint64_t)(b + 1));
        int32_t t = f.table[b];
        f.table[b] = f.table[j];
        f.table[j] = t;
    }
    float *tok = malloc(sizeof(float) * row);
    for (int s = 0; s < n_slots; s++) {
        for (int h = 0; h < c.n_head_kv; h++) /* each KV head its own offset: a wrong head shows */
            for (int d = 0; d < c.head_dim; d++) tok[h * c.head_dim + d] = sl_test_rand_f32(&rng, -1, 1) + 2.0f * h;
        sl_k_kv_store(f.k, c.kv_type, s, tok, c.n_head_kv, c.head_dim);
        for (int h = 0; h < c.n_head_kv; h++)
            for (int d = 0; d < c.head_dim; d++) tok[h * c.head_dim + d] = sl_test_rand_f32(&rng, -1, 1) - 3.0f * h;
        sl_k_kv_store(f.v, c.kv_type, s, tok, c.n_head_kv, c.head_dim);
    }
    free(tok);
    f.q = malloc(sizeof(float) * c.n_head * c.head_dim);
    kt_fill(f.q, (size_t)c.n_head * c.head_dim, &rng, -1, 1);
    return f;
}

static void att_free(att_fixture *f) {
    free(f->k), free(f->v), free(f->table), free(f->q);
}

static double pool_get(const att_fixture *f, const void *pool, int t, int kvh, int d) {
    const att_case *c = &f->c;
    const int64_t slot = (int64_t)f->table[t / c->block_size] * c->block_size + t % c->block_size;
    const size_t i = ((size_t)slot * c->n_head_kv + kvh) * c->head_dim + d;
    return c->kv_type == SL_DTYPE_F16 ? sl_fp16_to_f32(((const sl_fp16_t *)pool)[i]) : ((const float *)pool)[i];
}

static void att_reference(const att_fixture *f, int n_ctx, float scale, double *out) {
    const att_case *c = &f->c;
    double *p = malloc(sizeof(double) * n_ctx);
    for (int h = 0; h < c->n_head; h++) {
        const int kvh = h / (c->n_head / c->n_head_kv);
        double max = -INFINITY, sum = 0;
        for (int t = 0; t < n_ctx; t++) {
            double s = 0;
            for (int d = 0; d < c->head_dim; d++) s += (double)f->q[h * c->head_dim + d] * pool_get(f, f->k, t, kvh, d);
            p[t] = s * scale;
            max = p[t] > max ? p[t] : max;
        }
        for (int t = 0; t < n_ctx; t++) sum += (p[t] = exp(p[t] - max));
        for (int d = 0; d < c->head_dim; d++) {
            double acc = 0;
            for (int t = 0; t < n_ctx; t++) acc += p[t] * pool_get(f, f->v, t, kvh, d);
            out[h * c->head_dim + d] = acc / sum;
        }
    }
    free(p);
}

static void run_case(att_case c) {
    const int n_ctxs[] = {1, 5, 16, 17, 100, 301};
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    att_fixture f = att_make(c, 77 + (uint64_t)c.head_dim * 3 + (uint64_t)c.kv_type);
    const int n_out = c.n_head * c.head_dim;
    float *ref = malloc(sizeof(float) * n_out), *got = malloc(sizeof(float) * n_out);
    float *scratch = malloc(sizeof(float) * 512);
    double *want = malloc(sizeof(double) * n_out);
    const float scale = 1.0f / sqrtf((float)c.head_dim);
    double worst = 0;
    for (size_t i = 0; i < sizeof n_ctxs / sizeof *n_ctxs; i++) {
        const int n_ctx = n_ctxs[i];
        cr_assert(n_ctx <= c.n_blocks * c.block_size);
        sl_kcpu_set_simd(SL_SIMD_SCALAR);
        sl_k_attention(f.q, ref, 0, c.n_head, c.n_head, c.n_head_kv, c.head_dim, f.k, f.v, c.kv_type, f.table,
                       c.block_size, n_ctx, scale, scratch);
        att_reference(&f, n_ctx, scale, want);
        for (int h = 0; h < c.n_head; h++) {
            const double err = kt_norm_err(ref + h * c.head_dim, want + h * c.head_dim, (size_t)c.head_dim);
            worst = err > worst ? err : worst;
            cr_assert(err < 2e-6, "%s head_dim %d n_ctx %d head %d: normalized error %g", sl_dtype_name(c.kv_type),
                      c.head_dim, n_ctx, h, err);
        }
        for (int k = 0; k < nv; k++) {
            kt_use(&vs[k]);
            /* heads in two ranges, as two threads would do them; only the range's heads are written */
            for (int j = 0; j < n_out; j++) got[j] = -777.0f;
            const int split = c.n_head / 2 + 1;
            sl_k_attention(f.q, got, split, c.n_head, c.n_head, c.n_head_kv, c.head_dim, f.k, f.v, c.kv_type, f.table,
                           c.block_size, n_ctx, scale, scratch);
            for (int j = 0; j < split * c.head_dim; j++) cr_assert_eq(got[j], -777.0f, "head outside [h0, h1) written");
            sl_k_attention(f.q, got, 0, split, c.n_head, c.n_head_kv, c.head_dim, f.k, f.v, c.kv_type, f.table,
                           c.block_size, n_ctx, scale, scratch);
            cr_assert(!memcmp(got, ref, sizeof(float) * n_out), "%s head_dim %d n_ctx %d: variant %s differs",
                      sl_dtype_name(c.kv_type), c.head_dim, n_ctx, vs[k].name);
            /* each head alone equals the heads computed in one call (whatever grouping a kernel does inside) */
            for (int j = 0; j < n_out; j++) got[j] = -777.0f;
            for (int h = 0; h < c.n_head; h++)
                sl_k_attention(f.q, got, h, h + 1, c.n_head, c.n_head_kv, c.head_dim, f.k, f.v, c.kv_type, f.table,
                               c.block_size, n_ctx, scale, scratch);
            cr_assert(!memcmp(got, ref, sizeof(float) * n_out), "%s head_dim %d n_ctx %d: heads alone differ on %s",
                      sl_dtype_name(c.kv_type), c.head_dim, n_ctx, vs[k].name);
        }
        kt_restore();
    }
    cr_log_info("%s head_dim %d: worst normalized error %g", sl_dtype_name(c.kv_type), c.head_dim, worst);
    /* nothing visible: zeros, not NaN */
    sl_k_attention(f.q, got, 0, c.n_head, c.n_head, c.n_head_kv, c.head_dim, f.k, f.v, c.kv_type, f.table,
                   c.block_size, 0, scale, scratch);
    for (int j = 0; j < n_out; j++) cr_assert_eq(got[j], 0.0f);
    free(ref), free(got), free(scratch), free(want);
    att_free(&f);
}

/* The default model's shape (head_dim 64), then head sizes that leave SIMD tails (40: 32 + 8; 20: 16 + 4). */
Test(kernel_attention, gqa_f32_hd64) { run_case((att_case){9, 3, 64, 7, 50, SL_DTYPE_F32}); }
Test(kernel_attention, gqa_f16_hd64) { run_case((att_case){9, 3, 64, 16, 20, SL_DTYPE_F16}); }
Test(kernel_attention, gqa_f32_hd40) { run_case((att_case){6, 2, 40, 5, 64, SL_DTYPE_F32}); }
Test(kernel_attention, gqa_f16_hd20) { run_case((att_case){4, 1, 20, 3, 101, SL_DTYPE_F16}); }
Test(kernel_attention, mha_f32_hd128) { run_case((att_case){2, 2, 128, 32, 10, SL_DTYPE_F32}); }
/* head_dim 128 in f16 (the AVX-512 scores keep 8 query chunks in registers); head_dim 8, below one 16-lane
 * chunk (the AVX-512 scores take every key one by one) */
Test(kernel_attention, gqa_f16_hd128) { run_case((att_case){4, 2, 128, 16, 20, SL_DTYPE_F16}); }
Test(kernel_attention, gqa_f16_hd8) { run_case((att_case){4, 2, 8, 5, 70, SL_DTYPE_F16}); }

Test(kernel_attention, kv_store) {
    enum { H = 3, D = 64, SLOTS = 4 };
    float src[H * D], back[H * D];
    uint64_t rng = 1;
    kt_fill(src, H * D, &rng, -100, 100);
    float pool32[SLOTS * H * D];
    sl_fp16_t pool16[SLOTS * H * D];
    memset(pool32, 0, sizeof pool32);
    memset(pool16, 0, sizeof pool16);
    sl_k_kv_store(pool32, SL_DTYPE_F32, 2, src, H, D);
    sl_k_kv_store(pool16, SL_DTYPE_F16, 2, src, H, D);
    cr_assert(!memcmp(pool32 + 2 * H * D, src, sizeof src), "f32 slot 2 holds the token");
    for (int s = 0; s < SLOTS; s++)
        if (s != 2)
            for (int i = 0; i < H * D; i++) cr_assert(pool32[s * H * D + i] == 0 && pool16[s * H * D + i] == 0, "other slots untouched");
    sl_k_dequantize_row(SL_DTYPE_F16, pool16 + 2 * H * D, back, H * D);
    for (int i = 0; i < H * D; i++) cr_assert_eq(pool16[2 * H * D + i], sl_f32_to_fp16(src[i]));
    for (int i = 0; i < H * D; i++) cr_assert(fabsf(back[i] - src[i]) <= ldexpf(fabsf(src[i]), -11));
}
