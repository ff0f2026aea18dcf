/*
 * test_kernel_ops.c — RMS norm, RoPE, SwiGLU, add, softmax, dot product and the canonical exp.
 *
 * Each kernel: every SIMD variant equals the scalar reference bit for bit (memcmp), and the scalar reference
 * is within a stated bound of a float64 computation. Bounds, with u = 2^-24 (float's unit roundoff):
 *   dot:      |y - ref| <= gamma_m sum |a_k b_k|, m = n/16 + 19 (chain per lane + folds + tail; Higham 3.1)
 *   rms_norm: relative <= gamma_m / 2 + 4u per element: the sum of squares has no cancellation, so its
 *             relative error is at most gamma_m; the square root halves it; mean, +eps, sqrt, divide and two
 *             multiplies add one rounding each
 *   rope:     |y - ref| <= 3u (|x0| + |x1|): cos and sin rounded to float once each, then products exact in
 *             double and one final rounding. An angle computed in float would miss this by 1e4x at pos 32768
 *   exp:      relative <= 2 ulp (2 * 2^-23) over the whole range of normal results; absolute <= 2^-149 below
 *   swiglu:   relative <= 8u: exp's 2 ulp (4u), then add, divide, multiply
 *   softmax:  relative <= u |x - max| + 8u + gamma_m per element: the rounding of x - max is amplified by exp
 *             into a relative error of that size, then exp, the sum and the scaling
 *   add:      exact (one rounding, as float64 rounded)
 */
#include <criterion/criterion.h>

#include <float.h>

#include "test_kernel_util.h"

static const double U = 5.9604644775390625e-08; /* 2^-24 */

/* Runs fn on every variant, each time from the same input, and asserts identical output. fn writes
 * out[0..n) from in[0..n) (and anything else it captures). */
typedef void (*kt_op)(const float *in, float *out, int n, const void *ctx);
static void same_on_every_variant(kt_op fn, const float *in, int n, const void *ctx, const char *what) {
    float *ref = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
    sl_kcpu_set_simd(SL_SIMD_SCALAR);
    fn(in, ref, n, ctx);
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        fn(in, got, n, ctx);
        cr_assert(!memcmp(got, ref, sizeof(float) * (size_t)n), "%s n=%d: variant %s differs", what, n, vs[k].name);
    }
    kt_restore();
    free(ref);
    free(got);
}

static const int k_sizes[] = {1, 7, 15, 16, 17, 64, 576, 1000, 4128};

/* ---- dot ------------------------------------------------------------------------------------------------- */

static void op_dot(const float *in, float *out, int n, const void *ctx) {
    const float *b = ctx;
    for (int i = 0; i < 4; i++) out[i] = sl_k_dot_f32(in + i, b, n - 4); /* misaligned starts too */
    for (int i = 4; i < n; i++) out[i] = 0;
}

Test(kernel_ops, dot) {
    for (size_t s = 0; s < sizeof k_sizes / sizeof *k_sizes; s++) {
        const int n = k_sizes[s];
        float *a = malloc(sizeof(float) * (n + 8)), *b = malloc(sizeof(float) * (n + 8));
        uint64_t rng = 10 + (uint64_t)n;
        kt_fill(a, (size_t)n + 8, &rng, -1, 1);
        kt_fill(b, (size_t)n + 8, &rng, -1, 1);
        double ref = 0, abs_sum = 0;
        for (int k = 0; k < n; k++) ref += (double)a[k] * b[k], abs_sum += fabs((double)a[k] * b[k]);
        sl_kcpu_set_simd(SL_SIMD_SCALAR);
        const float y = sl_k_dot_f32(a, b, n);
        kt_restore();
        cr_assert(fabs(y - ref) <= kt_gamma(n / 16 + 19) * abs_sum, "n=%d: %g vs %g", n, y, ref);
        if (n > 4) same_on_every_variant(op_dot, a, n + 4, b, "dot");
        free(a);
        free(b);
    }
    cr_assert_eq(sl_k_dot_f32(NULL, NULL, 0), 0.0f);
}

/* ---- rms norm -------------------------------------------------------------------------------------------- */

static void op_rms(const float *in, float *out, int n, const void *ctx) {
    sl_k_rms_norm(in, (const float *)ctx, out, n, 1e-5f);
}

Test(kernel_ops, rms_norm) {
    for (size_t s = 0; s < sizeof k_sizes / sizeof *k_sizes; s++) {
        const int n = k_sizes[s];
        float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        uint64_t rng = 20 + (uint64_t)n;
        kt_fill(x, (size_t)n, &rng, -4, 4);
        kt_fill(w, (size_t)n, &rng, 0.5f, 1.5f);
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        const double inv = 1.0 / sqrt(ss / n + (double)1e-5f);
        sl_kcpu_set_simd(SL_SIMD_SCALAR);
        op_rms(x, y, n, w);
        kt_restore();
        const double rel = kt_gamma(n / 16 + 19) / 2 + 4 * U;
        for (int i = 0; i < n; i++) {
            const double ref = x[i] * inv * w[i];
            cr_assert(fabs(y[i] - ref) <= rel * fabs(ref) + 1e-30, "n=%d i=%d: %g vs %g", n, i, y[i], ref);
        }
        same_on_every_variant(op_rms, x, n, w, "rms_norm");
        memcpy(y, x, sizeof(float) * n); /* y may alias x */
        float *z = malloc(sizeof(float) * n);
        sl_k_rms_norm(x, w, z, n, 1e-5f);
        sl_k_rms_norm(y, w, y, n, 1e-5f);
        cr_assert(!memcmp(y, z, sizeof(float) * n), "in-place rms_norm differs");
        free(x), free(w), free(y), free(z);
    }
}

/* ---- rope ------------------------------------------------------------------------------------------------ */

Test(kernel_ops, rope) {
    const int32_t positions[] = {0, 1, 7, 1000, 4097, 32767, 32768};
    const struct {
        int n_heads, head_dim, n_rot;
        float base, scale;
    } cfg[] = {{9, 64, 64, 100000.0f, 1.0f}, {3, 64, 32, 10000.0f, 1.0f}, {2, 48, 48, 10000.0f, 0.25f}};
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++)
        for (size_t p = 0; p < sizeof positions / sizeof *positions; p++) {
            const int n = cfg[c].n_heads * cfg[c].head_dim;
            float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
            uint64_t rng = 30 + c * 100 + p;
            kt_fill(x, (size_t)n, &rng, -2, 2);
            memcpy(y, x, sizeof(float) * n);
            sl_k_rope(y, cfg[c].n_heads, cfg[c].head_dim, cfg[c].n_rot, positions[p], cfg[c].base, cfg[c].scale);
            for (int h = 0; h < cfg[c].n_heads; h++) {
                const float *xh = x + h * cfg[c].head_dim, *yh = y + h * cfg[c].head_dim;
                for (int i = 0; i < cfg[c].n_rot / 2; i++) {
                    const double th = (double)positions[p] * cfg[c].scale * pow(cfg[c].base, -2.0 * i / cfg[c].n_rot);
                    const double x0 = xh[2 * i], x1 = xh[2 * i + 1];
                    const double r0 = x0 * cos(th) - x1 * sin(th), r1 = x0 * sin(th) + x1 * cos(th);
                    const double bound = 3 * U * (fabs(x0) + fabs(x1));
                    cr_assert(fabs(yh[2 * i] - r0) <= bound && fabs(yh[2 * i + 1] - r1) <= bound,
                              "pos %d head %d pair %d: (%g, %g) vs (%g, %g)", positions[p], h, i, yh[2 * i],
                              yh[2 * i + 1], r0, r1);
                }
                for (int d = cfg[c].n_rot; d < cfg[c].head_dim; d++) cr_assert_eq(yh[d], xh[d], "unrotated dim moved");
            }
            if (positions[p] == 0) cr_assert(!memcmp(x, y, sizeof(float) * n), "position 0 is the identity");
            free(x), free(y);
        }
}

/* ---- exp, swiglu, add, softmax --------------------------------------------------------------------------- */

Test(kernel_ops, exp_canonical_accuracy) {
    double worst = 0;
    for (int i = 0; i <= 2000000; i++) {
        const float x = -103.0f + 192.0f * (float)i / 2000000.0f;
        const double ref = exp((double)x);
        const float y = sl__exp_canon(x);
        if (ref < 1.1754943508222875e-38) {
            cr_assert(fabs(y - ref) <= ldexp(1, -149), "exp(%a) = %a, want %a", x, y, ref);
        } else if (ref > 3.4028234663852886e38) {
            cr_assert(isinf(y) && y > 0, "exp(%a) should overflow", x);
        } else {
            const double rel = fabs(y - ref) / ref;
            worst = rel > worst ? rel : worst;
            cr_assert(rel <= 2 * 2 * U, "exp(%a) = %a, want %a (rel %g)", x, y, ref, rel);
        }
    }
    cr_assert_eq(sl__exp_canon(0.0f), 1.0f);
    cr_assert_eq(sl__exp_canon(-INFINITY), 0.0f);
    cr_assert(isinf(sl__exp_canon(INFINITY)));
    cr_assert(isnan(sl__exp_canon(NAN)));
    cr_log_info("canonical exp: worst relative error %g (%.2f ulp)", worst, worst / (2 * U));
}

static void op_swiglu(const float *in, float *out, int n, const void *ctx) {
    sl_k_swiglu(in, (const float *)ctx, out, n);
}

Test(kernel_ops, swiglu) {
    for (size_t s = 0; s < sizeof k_sizes / sizeof *k_sizes; s++) {
        const int n = k_sizes[s];
        float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        uint64_t rng = 40 + (uint64_t)n;
        kt_fill(g, (size_t)n, &rng, -12, 12);
        kt_fill(u, (size_t)n, &rng, -3, 3);
        if (n > 4) g[1] = -100.0f, g[2] = 100.0f, g[3] = 0.0f; /* exp overflows / silu ~ identity / zero */
        sl_kcpu_set_simd(SL_SIMD_SCALAR);
        op_swiglu(g, y, n, u);
        kt_restore();
        for (int i = 0; i < n; i++) {
            const double ref = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            cr_assert(fabs(y[i] - ref) <= 8 * U * fabs(ref) + 1e-37, "n=%d i=%d g=%g: %g vs %g", n, i, g[i], y[i], ref);
        }
        same_on_every_variant(op_swiglu, g, n, u, "swiglu");
        float *z = malloc(sizeof(float) * n); /* out may alias gate */
        memcpy(z, g, sizeof(float) * n);
        sl_k_swiglu(z, u, z, n);
        sl_k_swiglu(g, u, y, n);
        cr_assert(!memcmp(z, y, sizeof(float) * n));
        free(g), free(u), free(y), free(z);
    }
}

static void op_add(const float *in, float *out, int n, const void *ctx) {
    memcpy(out, ctx, sizeof(float) * n);
    sl_k_add(out, in, n);
}

Test(kernel_ops, add) {
    for (size_t s = 0; s < sizeof k_sizes / sizeof *k_sizes; s++) {
        const int n = k_sizes[s];
        float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * n);
        uint64_t rng = 50 + (uint64_t)n;
        kt_fill(x, (size_t)n, &rng, -3, 3);
        kt_fill(y, (size_t)n, &rng, -3, 3);
        op_add(x, z, n, y);
        for (int i = 0; i < n; i++) cr_assert_eq(z[i], (float)((double)x[i] + y[i]));
        same_on_every_variant(op_add, x, n, y, "add");
        free(x), free(y), free(z);
    }
}

static void op_softmax(const float *in, float *out, int n, const void *ctx) {
    memcpy(out, in, sizeof(float) * n);
    sl_k_softmax(out, n);
}

Test(kernel_ops, softmax) {
    const float spans[] = {1.0f, 10.0f, 80.0f}; /* logits spread: mild, typical, extreme */
    for (size_t sp = 0; sp < 3; sp++)
        for (size_t s = 0; s < sizeof k_sizes / sizeof *k_sizes; s++) {
            const int n = k_sizes[s];
            float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
            uint64_t rng = 60 + (uint64_t)n + 1000 * sp;
            kt_fill(x, (size_t)n, &rng, -spans[sp], spans[sp]);
            sl_kcpu_set_simd(SL_SIMD_SCALAR);
            op_softmax(x, y, n, NULL);
            kt_restore();
            double max = x[0], sum = 0, total = 0;
            for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
            for (int i = 0; i < n; i++) sum += exp((double)x[i] - max);
            for (int i = 0; i < n; i++) {
                const double ref = exp((double)x[i] - max) / sum;
                const double rel = U * fabs(x[i] - max) + 8 * U + kt_gamma(n / 16 + 19);
                cr_assert(fabs(y[i] - ref) <= rel * ref + 1e-38, "n=%d i=%d: %g vs %g", n, i, y[i], ref);
                total += y[i];
            }
            cr_assert(fabs(total - 1) < 1e-5, "softmax sums to %g", total);
            same_on_every_variant(op_softmax, x, n, NULL, "softmax");
            free(x), free(y);
        }
}

/* ---- the sampler's passes: weights with chunk sums, argmax ----------------------------------------------- */

typedef struct { float m, inv_t, floor_e; } sw_ctx;

Test(kernel_ops, sample_weights) {
    const int sizes[] = {1, 15, 255, 256, 257, 1000, 4128, 12345};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const int nw = sizes[s];
        float *x = calloc((size_t)nw, sizeof(float)), *y = calloc((size_t)nw, sizeof(float));
        uint64_t rng = 900 + (uint64_t)nw;
        kt_fill(x, (size_t)nw, &rng, -12.0f, 3.0f);
        if (nw > 1) x[nw / 2] = -INFINITY; /* a banned token weighs nothing */
        if (nw > 3) x[nw / 3] = 0.0f;
        float m = -INFINITY;
        for (int i = 0; i < nw; i++) m = x[i] > m ? x[i] : m;
        for (int f = 0; f < 2; f++) {
            sw_ctx c = {m, 1.0f / 0.7f, f ? 0.05f : 0.0f};
            sl_kcpu_set_simd(SL_SIMD_SCALAR);
            float chunk[64];
            double z = sl_k_sample_weights(x, nw, c.m, c.inv_t, c.floor_e, y, chunk);
            kt_restore();
            /* each weight within a few ulps of exp in float64, floored, and the banned one 0 */
            double want_z = 0;
            for (int i = 0; i < nw; i++) {
                const double ref = exp(((double)x[i] - m) * (double)c.inv_t);
                if (ref < c.floor_e * (1 - 1e-5)) {
                    cr_assert_eq(y[i], 0.0f, "n=%d i=%d: %g under the floor %g kept", nw, i, y[i], c.floor_e);
                    continue;
                }
                if (ref < c.floor_e * (1 + 1e-5)) continue; /* at the floor, rounding decides */
                cr_assert(fabs(y[i] - ref) <= 1e-5 * ref + 1e-38, "n=%d i=%d: %g vs %g", nw, i, y[i], ref);
                want_z += y[i];
            }
            if (nw > 1) cr_assert_eq(y[nw / 2], 0.0f);
            cr_assert(fabs(z - want_z) <= 1e-5 * want_z + 1e-3, "n=%d: total %g vs %g", nw, z, want_z);
            double zc = 0;
            for (int k = 0; k < (nw + SL_K_SAMPLE_CHUNK - 1) / SL_K_SAMPLE_CHUNK; k++) {
                double want = 0;
                for (int i = k * SL_K_SAMPLE_CHUNK; i < nw && i < (k + 1) * SL_K_SAMPLE_CHUNK; i++) want += y[i];
                cr_assert(fabs(chunk[k] - want) <= 1e-5 * want + 1e-30, "n=%d chunk %d: %g vs %g", nw, k, chunk[k], want);
                zc += chunk[k];
            }
            cr_assert_eq(z, zc, "the total is the chunks added in order");
            /* and the same bits on every SIMD variant */
            kt_variant vs[8];
            const int nv = kt_variants(vs);
            float *got = malloc(sizeof(float) * (size_t)nw), gchunk[64];
            for (int k = 0; k < nv; k++) {
                kt_use(&vs[k]);
                double gz = sl_k_sample_weights(x, nw, c.m, c.inv_t, c.floor_e, got, gchunk);
                cr_assert(!memcmp(got, y, sizeof(float) * (size_t)nw), "n=%d: weights differ on %s", nw, vs[k].name);
                cr_assert(!memcmp(gchunk, chunk, sizeof(float) * (size_t)((nw + 255) / 256)), "n=%d: chunk sums differ on %s",
                          nw, vs[k].name);
                cr_assert_eq(gz, z, "n=%d: total differs on %s", nw, vs[k].name);
            }
            kt_restore();
            free(got);
        }
        free(x), free(y);
    }
}

Test(kernel_ops, argmax) {
    const int sizes[] = {1, 7, 8, 9, 31, 576, 49152};
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const int n = sizes[s];
        float *x = malloc(sizeof(float) * (size_t)n);
        uint64_t rng = 77 + (uint64_t)n;
        for (int trial = 0; trial < 6; trial++) {
            kt_fill(x, (size_t)n, &rng, -5.0f, 5.0f);
            int want = -1;
            if (trial == 1) x[n - 1] = 100.0f; /* the last one, in the scalar tail */
            if (trial == 2 && n > 3) x[1] = x[n - 2] = 100.0f; /* a tie: the first wins */
            if (trial == 3) for (int i = 0; i < n; i++) x[i] = -INFINITY; /* none */
            if (trial == 4) for (int i = 0; i < n; i++) x[i] = (i % 5) == 3 ? NAN : -INFINITY; /* NaN never wins */
            if (trial == 5) for (int i = 0; i < n; i++) x[i] = 1.0f; /* all equal: 0 */
            float bv = -INFINITY;
            for (int i = 0; i < n; i++)
                if (x[i] > bv) bv = x[i], want = i;
            for (int k = 0; k < nv; k++) {
                kt_use(&vs[k]);
                cr_assert_eq(sl_k_argmax(x, n), want, "n=%d trial %d on %s", n, trial, vs[k].name);
            }
            kt_restore();
        }
        free(x);
    }
}

Test(kernel_ops, clean_logits) {
    const int n = 37;
    float x[37], y[37];
    uint64_t rng = 5;
    kt_fill(x, (size_t)n, &rng, -30.0f, 30.0f);
    x[0] = NAN, x[3] = INFINITY, x[9] = -INFINITY, x[12] = -NAN, x[20] = FLT_MAX, x[33] = INFINITY, x[36] = NAN;
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        sl_k_clean_logits(x, y, n);
        for (int i = 0; i < n; i++) {
            const float want = x[i] != x[i] ? -INFINITY : x[i] > FLT_MAX ? FLT_MAX : x[i];
            cr_assert(!memcmp(&y[i], &want, sizeof want), "i=%d on %s: %g from %g, want %g", i, vs[k].name, y[i], x[i],
                      want);
        }
    }
    kt_restore();
    memcpy(y, x, sizeof x);
    sl_k_clean_logits(y, y, n); /* in place */
    cr_assert_eq(y[0], -INFINITY);
    cr_assert_eq(y[3], FLT_MAX);
}
