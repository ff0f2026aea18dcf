/*
 * test_kernel_matmul.c — the two matrix products, on every SIMD variant of the machine.
 *
 * What a user would notice, and how it is checked:
 *   - every variant computes what the scalar reference computes, bit for bit (memcmp), at awkward sizes
 *     (n_in 32 .. 4128, n_rows 1 .. 17 (every register tile's row count and mixes of them), output ranges
 *     that start and end off the register tiles); for Q4_0/Q4_1/Q8_0 the variants run on packed weights
 *     (sl_k_pack_q) and the reference on the file's rows, so the packing is checked with them;
 *   - the scalar reference is accurate: each output is within the classic rounding-error bound of a float64
 *     computation of the same sum, |y - ref| <= gamma_m * sum |terms| with m the longest chain of rounded
 *     operations behind it (Higham 3.1), the strongest bound that holds for any input;
 *   - a sequence's results do not depend on its batch: row r of a 17-row call equals a 1-row call on that
 *     row, and splitting the outputs across calls (as the thread pool does) changes nothing;
 *   - fast mode (quantized activations) stays close to exact mode: normalized error below 2e-2. Q8 rounding
 *     moves each activation by up to d / 2 = amax / 254, a relative error of about 0.4% for uniform data,
 *     and the products inherit it (measured 3-4e-3), so 2e-2 leaves a factor ~5 while still catching a
 *     wrong scale, offset or nibble order (errors of order 1).
 */
#include <criterion/criterion.h>

#include "test_kernel_util.h"

static const int k_n_in[] = {32, 96, 576, 1536, 4096 + 32};
static const int k_n_rows[] = {1, 2, 3, 5, 8, 12, 17};
enum { N_OUT = 37 }; /* not a multiple of any tile width */

typedef struct problem {
    int wtype, n_in, n_out, n_rows;
    uint8_t *w;     /* [n_out] rows of w_row_bytes, wtype */
    size_t w_row_bytes;
    float *wf;      /* [n_out][n_in] f32, the dequantized weights */
    float *x;       /* [n_rows][n_in] f32 */
    uint8_t *xq;    /* [n_rows] rows of xq_row_bytes, sl_k_act_type(wtype) (quantized types only) */
    size_t xq_row_bytes;
    uint8_t *packed; /* w in sl_k_pack_q's layout (Q4_0, Q4_1, Q8_0), or NULL */
} problem;

static problem problem_make(int wtype, int n_in, int n_out, int n_rows, uint64_t seed) {
    problem p = {wtype, n_in, n_out, n_rows, NULL, 0, NULL, NULL, NULL, 0, NULL};
    uint64_t rng = seed;
    float *wsrc = malloc(sizeof(float) * (size_t)n_out * n_in);
    kt_fill(wsrc, (size_t)n_out * n_in, &rng, -1.0f, 1.0f);
    /* rows with a positive bias and a larger scale, so Q4_1's offsets and varied d's are exercised */
    for (int o = 0; o < n_out; o += 3)
        for (int k = 0; k < n_in; k++) wsrc[(size_t)o * n_in + k] = wsrc[(size_t)o * n_in + k] * 3.0f + 1.0f;
    p.w_row_bytes = sl_dtype_row_bytes(wtype, n_in);
    p.w = malloc(p.w_row_bytes * n_out);
    p.wf = malloc(sizeof(float) * (size_t)n_out * n_in);
    for (int o = 0; o < n_out; o++) {
        sl_k_quantize_row(wtype, wsrc + (size_t)o * n_in, p.w + o * p.w_row_bytes, n_in);
        sl_k_dequantize_row(wtype, p.w + o * p.w_row_bytes, p.wf + (size_t)o * n_in, n_in);
    }
    free(wsrc);
    p.x = malloc(sizeof(float) * (size_t)n_rows * n_in);
    kt_fill(p.x, (size_t)n_rows * n_in, &rng, -1.0f, 1.0f);
    const int at = sl_k_act_type(wtype);
    if (at >= 0) {
        p.xq_row_bytes = sl_k_act_row_bytes(wtype, n_in);
        p.xq = malloc(p.xq_row_bytes * n_rows);
        for (int r = 0; r < n_rows; r++) sl_k_quantize_act_row(wtype, p.x + (size_t)r * n_in, p.xq + r * p.xq_row_bytes, n_in);
    }
    if (sl_k_pack_supported(wtype)) {
        p.packed = malloc(sl_k_packed_bytes(wtype, n_out, n_in));
        sl_k_pack_q(wtype, p.w, p.w_row_bytes, n_out, n_in, p.packed);
    }
    return p;
}

static void problem_free(problem *p) {
    free(p->w);
    free(p->wf);
    free(p->x);
    free(p->xq);
    free(p->packed);
}

#define SENTINEL (-12345.0f)

/* y: [n_rows][ldy] filled with SENTINEL, outputs [o0, o1) computed. */
static float *run_q(const problem *p, int o0, int o1, int ldy) {
    float *y = malloc(sizeof(float) * (size_t)p->n_rows * ldy);
    for (size_t i = 0; i < (size_t)p->n_rows * ldy; i++) y[i] = SENTINEL;
    sl_k_matmul_q(p->wtype, p->w, p->w_row_bytes, o0, o1, p->n_in, p->xq, p->xq_row_bytes, p->n_rows, y, ldy);
    return y;
}

/* The same on the packed weights (o0 a multiple of SL_QP_GROUP). */
static float *run_qp(const problem *p, int o0, int o1, int ldy) {
    float *y = malloc(sizeof(float) * (size_t)p->n_rows * ldy);
    for (size_t i = 0; i < (size_t)p->n_rows * ldy; i++) y[i] = SENTINEL;
    sl_k_matmul_qp(p->wtype, p->packed, o0, o1, p->n_in, p->xq, p->xq_row_bytes, p->n_rows, y, ldy);
    return y;
}

static float *run_f32(const problem *p, int o0, int o1, int ldy) {
    float *y = malloc(sizeof(float) * (size_t)p->n_rows * ldy);
    for (size_t i = 0; i < (size_t)p->n_rows * ldy; i++) y[i] = SENTINEL;
    sl_k_matmul_f32(p->wtype, p->w, p->w_row_bytes, o0, o1, p->n_in, p->x, p->n_in, p->n_rows, y, ldy);
    return y;
}

static void assert_untouched(const float *y, int n_rows, int ldy, int o0, int o1, const char *what) {
    for (int r = 0; r < n_rows; r++)
        for (int o = 0; o < ldy; o++)
            if (o < o0 || o >= o1)
                cr_assert_eq(y[(size_t)r * ldy + o], SENTINEL, "%s wrote outside its range: row %d col %d", what, r, o);
}

/* Float64 value of one quantized (row, output) product from the same integers and fp16 scales, and the sum
 * of the magnitudes of its terms (for the error bound). */
static double qdot_ref(const problem *p, int r, int o, double *abs_sum) {
    const uint8_t *w = p->w + o * p->w_row_bytes, *x = p->xq + r * p->xq_row_bytes;
    double s = 0, a = 0;
    for (int b = 0; b < p->n_in / 32; b++) {
        int wq[32];
        double dw, dx, ms = 0;
        const int8_t *xs;
        if (p->wtype == SL_DTYPE_Q8_0) {
            const sl_block_q8_0 *wb = (const sl_block_q8_0 *)w + b;
            for (int j = 0; j < 32; j++) wq[j] = wb->qs[j];
            dw = sl_fp16_to_f32(wb->d);
        } else {
            const uint8_t *qs = p->wtype == SL_DTYPE_Q4_0 ? ((const sl_block_q4_0 *)w)[b].qs : ((const sl_block_q4_1 *)w)[b].qs;
            const int zero = p->wtype == SL_DTYPE_Q4_0 ? 8 : 0;
            for (int j = 0; j < 16; j++) {
                wq[j] = (qs[j] & 15) - zero;
                wq[j + 16] = (qs[j] >> 4) - zero;
            }
            dw = sl_fp16_to_f32(p->wtype == SL_DTYPE_Q4_0 ? ((const sl_block_q4_0 *)w)[b].d : ((const sl_block_q4_1 *)w)[b].d);
        }
        /* Q8_1 (Q4_1) and Q8_0S (the others) share the layout: d, a 16-bit word, the levels */
        const sl_block_q8_1 *xb = (const sl_block_q8_1 *)x + b;
        xs = xb->qs;
        dx = sl_fp16_to_f32(xb->d);
        if (p->wtype == SL_DTYPE_Q4_1) ms = (double)sl_fp16_to_f32(((const sl_block_q4_1 *)w)[b].m) * sl_fp16_to_f32(xb->s);
        long isum = 0, xsum = 0;
        for (int i = 0; i < 32; i++) {
            isum += (long)wq[i] * xs[i];
            xsum += xs[i];
        }
        if (p->wtype != SL_DTYPE_Q4_1) cr_assert_eq(xsum, ((const sl_block_q8_0s *)xb)->sum, "Q8_0S sum");
        s += dw * dx * (double)isum;
        a += fabs(dw * dx * (double)isum);
        s += ms;
        a += fabs(ms);
    }
    *abs_sum = a;
    return s;
}

Test(kernel_matmul, q_variants_match_scalar_and_float64) {
    const int types[] = {SL_DTYPE_Q4_0, SL_DTYPE_Q4_1, SL_DTYPE_Q8_0};
    const int o0 = 3, o1 = N_OUT - 2; /* 32 outputs starting off a tile boundary, plus a remainder */
    const int po0 = SL_QP_GROUP, po1 = N_OUT - 2; /* packed: from a group boundary to inside the last group */
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    for (size_t t = 0; t < 3; t++)
        for (size_t a = 0; a < sizeof k_n_in / sizeof *k_n_in; a++)
            for (size_t b = 0; b < sizeof k_n_rows / sizeof *k_n_rows; b++) {
                problem p = problem_make(types[t], k_n_in[a], N_OUT, k_n_rows[b], 1000 + 10 * t + a);
                sl_kcpu_set_simd(SL_SIMD_SCALAR);
                float *ref = run_q(&p, o0, o1, N_OUT);
                assert_untouched(ref, p.n_rows, N_OUT, o0, o1, "scalar");
                /* the scalar reference within the float bound: a chain of nb fmas, the m * s chain and the
                 * final add, and the rounding of d_w * d_x */
                const double g = kt_gamma(p.n_in / 32 + 6);
                for (int r = 0; r < p.n_rows; r++)
                    for (int o = o0; o < o1; o++) {
                        double abs_sum, want = qdot_ref(&p, r, o, &abs_sum);
                        cr_assert(fabs(ref[r * N_OUT + o] - want) <= g * abs_sum, "%s n_in %d row %d out %d: %g vs %g",
                                  sl_dtype_name(p.wtype), p.n_in, r, o, ref[r * N_OUT + o], want);
                    }
                float *ref_all = run_q(&p, 0, N_OUT, N_OUT);
                for (int k = 0; k < nv; k++) {
                    kt_use(&vs[k]);
                    float *got = run_q(&p, o0, o1, N_OUT);
                    cr_assert(!memcmp(got, ref, sizeof(float) * p.n_rows * N_OUT), "%s [%s] n_in %d n_rows %d differs",
                              sl_dtype_name(p.wtype), vs[k].name, p.n_in, p.n_rows);
                    free(got);
                    float *all = run_qp(&p, 0, N_OUT, N_OUT), *part = run_qp(&p, po0, po1, N_OUT);
                    cr_assert(!memcmp(all, ref_all, sizeof(float) * p.n_rows * N_OUT),
                              "%s packed [%s] n_in %d n_rows %d differs", sl_dtype_name(p.wtype), vs[k].name, p.n_in,
                              p.n_rows);
                    assert_untouched(part, p.n_rows, N_OUT, po0, po1, "packed");
                    for (int r = 0; r < p.n_rows; r++)
                        cr_assert(!memcmp(part + r * N_OUT + po0, ref_all + r * N_OUT + po0, sizeof(float) * (po1 - po0)),
                                  "%s packed range [%s] row %d differs", sl_dtype_name(p.wtype), vs[k].name, r);
                    free(all);
                    free(part);
                }
                free(ref_all);
                kt_restore();
                free(ref);
                problem_free(&p);
            }
}

Test(kernel_matmul, f32_variants_match_scalar_and_float64) {
    const int types[] = {SL_DTYPE_F32, SL_DTYPE_F16, SL_DTYPE_BF16, SL_DTYPE_Q4_0, SL_DTYPE_Q4_1, SL_DTYPE_Q8_0};
    const int o0 = 1, o1 = N_OUT - 4;
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    for (size_t t = 0; t < 6; t++)
        for (size_t a = 0; a < sizeof k_n_in / sizeof *k_n_in; a++)
            for (size_t b = 0; b < sizeof k_n_rows / sizeof *k_n_rows; b++) {
                /* plain types also at lengths that leave a tail after the 16 lanes */
                const int n_in = types[t] <= SL_DTYPE_F16 || types[t] == SL_DTYPE_BF16 ? k_n_in[a] + (int)a * 3 : k_n_in[a];
                problem p = problem_make(types[t], n_in, N_OUT, k_n_rows[b], 2000 + 10 * t + a);
                sl_kcpu_set_simd(SL_SIMD_SCALAR);
                float *ref = run_f32(&p, o0, o1, N_OUT);
                assert_untouched(ref, p.n_rows, N_OUT, o0, o1, "scalar");
                /* n / 16 fmas per lane, 4 folds, up to 15 tail fmas */
                const double g = kt_gamma(n_in / 16 + 19);
                for (int r = 0; r < p.n_rows; r++)
                    for (int o = o0; o < o1; o++) {
                        double want = 0, abs_sum = 0;
                        for (int k = 0; k < n_in; k++) {
                            const double term = (double)p.x[r * n_in + k] * p.wf[(size_t)o * n_in + k];
                            want += term;
                            abs_sum += fabs(term);
                        }
                        const float y = ref[r * N_OUT + o];
                        cr_assert(fabs(y - want) <= g * abs_sum, "%s n_in %d row %d out %d: %g vs %g",
                                  sl_dtype_name(p.wtype), n_in, r, o, y, want);
                        /* exact mode is the canonical dot with the dequantized row */
                        cr_assert(sl__f32_bits(y) == sl__f32_bits(sl__dot_canon(p.x + r * n_in, p.wf + (size_t)o * n_in, n_in)));
                    }
                for (int k = 0; k < nv; k++) {
                    kt_use(&vs[k]);
                    float *got = run_f32(&p, o0, o1, N_OUT);
                    cr_assert(!memcmp(got, ref, sizeof(float) * p.n_rows * N_OUT), "%s [%s] n_in %d n_rows %d differs",
                              sl_dtype_name(p.wtype), vs[k].name, n_in, p.n_rows);
                    for (int r = 0; r < p.n_rows; r++) /* and sl_k_dot_f32 is the same dot */
                        cr_assert(sl__f32_bits(got[r * N_OUT + o0]) ==
                                  sl__f32_bits(sl_k_dot_f32(p.x + r * n_in, p.wf + (size_t)o0 * n_in, n_in)));
                    free(got);
                }
                kt_restore();
                free(ref);
                problem_free(&p);
            }
}

/* Row r of a 17-row call == a 1-row call on row r; outputs split [0, k) + [k, n) == [0, n). */
static void check_invariance(int wtype, int fast) {
    enum { ROWS = 17 };
    const int n_in = 576;
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    problem p = problem_make(wtype, n_in, N_OUT, ROWS, 3000 + (uint64_t)wtype);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        float *all = fast ? run_qp(&p, 0, N_OUT, N_OUT) : run_f32(&p, 0, N_OUT, N_OUT);
        for (int r = 0; r < ROWS; r++) {
            float one[N_OUT];
            if (fast)
                sl_k_matmul_qp(wtype, p.packed, 0, N_OUT, n_in, p.xq + r * p.xq_row_bytes, p.xq_row_bytes, 1, one, N_OUT);
            else
                sl_k_matmul_f32(wtype, p.w, p.w_row_bytes, 0, N_OUT, n_in, p.x + r * n_in, n_in, 1, one, N_OUT);
            cr_assert(!memcmp(one, all + r * N_OUT, sizeof one), "%s %s [%s]: row %d alone differs from the batch",
                      sl_dtype_name(wtype), fast ? "fast" : "exact", vs[k].name, r);
        }
        /* packed ranges starting off a group boundary (1, 5, 18, 33) take the scalar code, on a boundary (16, 32)
         * the tiles: either way the same bits */
        const int splits[] = {1, 5, 18, 33, 16, 32};
        for (size_t s = 0; s < sizeof splits / sizeof *splits; s++) {
            float *y = malloc(sizeof(float) * ROWS * N_OUT);
            const int cut = splits[s];
            if (fast) {
                sl_k_matmul_qp(wtype, p.packed, cut, N_OUT, n_in, p.xq, p.xq_row_bytes, ROWS, y, N_OUT);
                sl_k_matmul_qp(wtype, p.packed, 0, cut, n_in, p.xq, p.xq_row_bytes, ROWS, y, N_OUT);
            } else {
                sl_k_matmul_f32(wtype, p.w, p.w_row_bytes, cut, N_OUT, n_in, p.x, n_in, ROWS, y, N_OUT);
                sl_k_matmul_f32(wtype, p.w, p.w_row_bytes, 0, cut, n_in, p.x, n_in, ROWS, y, N_OUT);
            }
            cr_assert(!memcmp(y, all, sizeof(float) * ROWS * N_OUT), "%s %s [%s]: split at %d differs",
                      sl_dtype_name(wtype), fast ? "fast" : "exact", vs[k].name, cut);
            free(y);
        }
        free(all);
    }
    kt_restore();
    problem_free(&p);
}

Test(kernel_matmul, batch_invariance_q4_0) { check_invariance(SL_DTYPE_Q4_0, 1); }
Test(kernel_matmul, batch_invariance_q4_1) { check_invariance(SL_DTYPE_Q4_1, 1); }
Test(kernel_matmul, batch_invariance_q8_0) { check_invariance(SL_DTYPE_Q8_0, 1); }
Test(kernel_matmul, batch_invariance_f32) { check_invariance(SL_DTYPE_F32, 0); }
Test(kernel_matmul, batch_invariance_f16) { check_invariance(SL_DTYPE_F16, 0); }
Test(kernel_matmul, batch_invariance_exact_q4_1) { check_invariance(SL_DTYPE_Q4_1, 0); }

/* Unpacking a packed weight's rows gives the file's rows back, byte for byte, at row counts off the group. */
Test(kernel_matmul, pack_roundtrip) {
    const int types[] = {SL_DTYPE_Q4_0, SL_DTYPE_Q4_1, SL_DTYPE_Q8_0};
    for (size_t t = 0; t < 3; t++)
        for (int n_out = 1; n_out <= 40; n_out += 13) {
            problem p = problem_make(types[t], 96, n_out, 1, 7000 + t);
            cr_assert_eq(sl_k_packed_bytes(p.wtype, n_out, 96), (size_t)((n_out + 15) / 16) * 16 * p.w_row_bytes);
            uint8_t row[3 * sizeof(sl_block_q8_0)];
            for (int o = 0; o < n_out; o++) {
                sl_k_unpack_q_row(p.wtype, p.packed, 96, o, row);
                cr_assert(!memcmp(row, p.w + (size_t)o * p.w_row_bytes, p.w_row_bytes), "%s row %d of %d",
                          sl_dtype_name(p.wtype), o, n_out);
            }
            problem_free(&p);
        }
    cr_assert_eq(sl_k_packed_bytes(SL_DTYPE_Q4_K, 16, 256), 0, "only Q4_0, Q4_1 and Q8_0 are packed");
}

Test(kernel_matmul, fast_close_to_exact) {
    const int types[] = {SL_DTYPE_Q4_0, SL_DTYPE_Q4_1, SL_DTYPE_Q8_0};
    for (size_t t = 0; t < 3; t++) {
        problem p = problem_make(types[t], 1536, N_OUT, 5, 4000 + t);
        float *fast = run_q(&p, 0, N_OUT, N_OUT), *exact = run_f32(&p, 0, N_OUT, N_OUT);
        double *ref = malloc(sizeof(double) * 5 * N_OUT);
        for (int i = 0; i < 5 * N_OUT; i++) ref[i] = exact[i];
        const double err = kt_norm_err(fast, ref, 5 * N_OUT);
        cr_assert(err < 2e-2, "%s: fast vs exact normalized error %g", sl_dtype_name(p.wtype), err);
        cr_assert(err > 0, "%s: fast mode should see its activation rounding", sl_dtype_name(p.wtype));
        free(ref);
        free(fast);
        free(exact);
        problem_free(&p);
    }
}

/* Rows longer than the kernel's stack tile take the chunked path; same canonical result. */
Test(kernel_matmul, long_rows_chunked) {
    const int n_in = 16384 + 48 + 5, n_out = 5, n_rows = 6;
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    problem p = problem_make(SL_DTYPE_F16, n_in, n_out, n_rows, 5000);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        float *y = run_f32(&p, 0, n_out, n_out);
        for (int r = 0; r < n_rows; r++)
            for (int o = 0; o < n_out; o++)
                cr_assert(sl__f32_bits(y[r * n_out + o]) == sl__f32_bits(sl__dot_canon(p.x + (size_t)r * n_in, p.wf + (size_t)o * n_in, n_in)),
                          "[%s] row %d out %d", vs[k].name, r, o);
        free(y);
    }
    kt_restore();
    problem_free(&p);
}

/* Strided inputs and outputs (ldx, ldy wider than the rows), as the model uses for fused projections. */
Test(kernel_matmul, strides) {
    const int n_in = 96, n_out = 9, n_rows = 3, ldx = 100, ldy = 20;
    problem p = problem_make(SL_DTYPE_Q8_0, n_in, n_out, n_rows, 6000);
    float *xs = calloc((size_t)n_rows * ldx, sizeof(float));
    for (int r = 0; r < n_rows; r++) memcpy(xs + r * ldx, p.x + r * n_in, sizeof(float) * n_in);
    float ys[3 * 20], y[3 * 9];
    sl_k_matmul_f32(p.wtype, p.w, p.w_row_bytes, 0, n_out, n_in, xs, ldx, n_rows, ys, ldy);
    sl_k_matmul_f32(p.wtype, p.w, p.w_row_bytes, 0, n_out, n_in, p.x, n_in, n_rows, y, n_out);
    for (int r = 0; r < n_rows; r++) cr_assert(!memcmp(ys + r * ldy, y + r * n_out, sizeof(float) * n_out));
    free(xs);
    problem_free(&p);
}
