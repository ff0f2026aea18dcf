/*
 * test_kernel_kquants.c — the products of the types added with the K-quants (Q5_0, Q5_1, IQ4_NL with Q8_0 /
 * Q8_1 activations; Q2_K .. Q6_K with Q8_K), on every SIMD variant of the machine.
 *
 * What a user would notice, and how it is checked:
 *   - every variant computes what the scalar reference computes, bit for bit (memcmp), at awkward sizes
 *     (n_in 256 .. 4352, i.e. 1 .. 17 super-blocks; 1, 3 and 17 rows; output ranges off the tiles), and at
 *     every row count 1 .. 19 with output ranges of 1, 7, 9 and 11 (so every register tile of every variant,
 *     its half-height and 1-row forms, and a zmm tile holding a lone output all run);
 *   - the scalar reference computes the right number: within gamma_m * sum |terms| of a float64 sum of the
 *     same weights and activations (each element's exact value, from the blocks' integers and fp16 scales);
 *   - a row's results do not depend on its batch or on how the outputs were split across calls;
 *   - exact mode on these weights is the canonical f32 dot of the dequantized row, bit for bit;
 *   - fast mode stays within 2e-2 (normalized) of exact mode, which catches a wrong scale, min or level.
 * Weights are random bytes with finite fp16 scales, so every level, packed scale, min and high bit occurs
 * (including Q6_K's scale -128 and Q3_K's -32), not only what a quantizer happens to write.
 */
#include <criterion/criterion.h>

#include "test_kernel_util.h"

static const int k_types[] = {SL_DTYPE_Q5_0, SL_DTYPE_Q5_1, SL_DTYPE_IQ4_NL, SL_DTYPE_Q2_K,
                              SL_DTYPE_Q3_K, SL_DTYPE_Q4_K, SL_DTYPE_Q5_K, SL_DTYPE_Q6_K};
#define N_TYPES ((int)(sizeof k_types / sizeof k_types[0]))
static const int k_n_in[] = {256, 512, 1536, 4352};
static const int k_n_rows[] = {1, 3, 17};
enum { N_OUT = 11, O0 = 1, O1 = 10 }; /* outputs [1, 10) computed, the others must stay untouched */

#define SENTINEL (-12345.0f)

/* Byte offsets of a block's fp16 scales (d, dmin / m) per type; -1 when absent. */
static void scale_offsets(int type, int off[2]) {
    off[1] = -1;
    switch (type) {
    case SL_DTYPE_Q2_K: off[0] = offsetof(sl_block_q2_K, d), off[1] = offsetof(sl_block_q2_K, dmin); break;
    case SL_DTYPE_Q3_K: off[0] = offsetof(sl_block_q3_K, d); break;
    case SL_DTYPE_Q6_K: off[0] = offsetof(sl_block_q6_K, d); break;
    case SL_DTYPE_Q4_K: case SL_DTYPE_Q5_K: case SL_DTYPE_Q5_1: off[0] = 0, off[1] = 2; break;
    default: off[0] = 0; break; /* Q5_0, IQ4_NL */
    }
}

/* Random blocks with fp16 scales of magnitude 2^-12 .. 2^-4 and either sign. */
static void random_blocks(int type, uint8_t *dst, size_t n_blocks, uint64_t *rng) {
    const size_t bb = sl_dtype_block_bytes(type);
    int off[2];
    scale_offsets(type, off);
    for (size_t b = 0; b < n_blocks; b++) {
        uint8_t *blk = dst + b * bb;
        for (size_t i = 0; i < bb; i++) blk[i] = (uint8_t)sl_test_rand_u64(rng);
        for (int k = 0; k < 2; k++) {
            if (off[k] < 0) continue;
            float mag = ldexpf(sl_test_rand_f32(rng, 1.0f, 2.0f), -4 - (int)(sl_test_rand_u64(rng) % 9));
            sl_fp16_t h = sl_f32_to_fp16(sl_test_rand_u64(rng) % 2 ? mag : -mag);
            memcpy(blk + off[k], &h, sizeof h);
        }
    }
}

typedef struct problem {
    int wtype, n_in, n_rows;
    uint8_t *w; /* [N_OUT] rows of w_row_bytes, wtype */
    size_t w_row_bytes;
    float *wf;  /* [N_OUT][n_in] f32, the dequantized weights */
    float *x;   /* [n_rows][n_in] f32 */
    uint8_t *xq; /* [n_rows] rows of xq_row_bytes, sl_k_act_type(wtype) */
    size_t xq_row_bytes;
} problem;

static problem problem_make(int wtype, int n_in, int n_rows, uint64_t seed) {
    problem p = {wtype, n_in, n_rows, NULL, 0, NULL, NULL, NULL, 0};
    uint64_t rng = seed;
    p.w_row_bytes = sl_dtype_row_bytes(wtype, n_in);
    p.w = malloc(p.w_row_bytes * N_OUT);
    random_blocks(wtype, p.w, (size_t)N_OUT * (size_t)(n_in / sl_dtype_block_elems(wtype)), &rng);
    p.wf = malloc(sizeof(float) * (size_t)N_OUT * n_in);
    for (int o = 0; o < N_OUT; o++) sl_k_dequantize_row(wtype, p.w + o * p.w_row_bytes, p.wf + (size_t)o * n_in, n_in);
    p.x = malloc(sizeof(float) * (size_t)n_rows * n_in);
    kt_fill(p.x, (size_t)n_rows * n_in, &rng, -1.0f, 1.0f);
    for (int k = 0; k < n_in; k += 64) p.x[k] = 3.0f; /* a few large activations, as after a norm */
    const int at = sl_k_act_type(wtype);
    p.xq_row_bytes = sl_dtype_row_bytes(at, n_in);
    p.xq = malloc(p.xq_row_bytes * n_rows);
    for (int r = 0; r < n_rows; r++) sl_k_quantize_row(at, p.x + (size_t)r * n_in, p.xq + r * p.xq_row_bytes, n_in);
    return p;
}

static void problem_free(problem *p) {
    free(p->w);
    free(p->wf);
    free(p->x);
    free(p->xq);
}

static float *run_q(const problem *p, int o0, int o1) {
    float *y = malloc(sizeof(float) * (size_t)p->n_rows * N_OUT);
    for (size_t i = 0; i < (size_t)p->n_rows * N_OUT; i++) y[i] = SENTINEL;
    sl_k_matmul_q(p->wtype, p->w, p->w_row_bytes, o0, o1, p->n_in, p->xq, p->xq_row_bytes, p->n_rows, y, N_OUT);
    return y;
}

/* Float64 value of one fast-mode (row, output) product: the weights' exact values (from their integers and
 * scales, i.e. the dequantized floats, which are exact for these types but for the rounding of d * sc)
 * times the activations' exact values, and the sum of the magnitudes of the terms the kernel rounds. */
static double qdot_ref(const problem *p, int r, int o, double *abs_sum) {
    const uint8_t *w = p->w + o * p->w_row_bytes, *x = p->xq + r * p->xq_row_bytes;
    double s = 0, a = 0;
    if (sl__is_kquant(p->wtype)) {
        const int K = sl__kquant_offset(p->wtype);
        for (int b = 0; b < p->n_in / 256; b++) {
            const uint8_t *wb = w + b * sl_dtype_block_bytes(p->wtype);
            sl_block_q8_K xb;
            memcpy(&xb, x + b * sizeof xb, sizeof xb);
            int16_t S[16], M[16];
            float d, dmin;
            uint8_t u[256];
            sl__k_scales(p->wtype, wb, S, M, &d, &dmin);
            sl__k_levels(p->wtype, wb, u);
            for (int e = 0; e < 256; e++) {
                double t = (double)d * S[e / 16] * (u[e] - K) * xb.d * xb.qs[e];
                double m = (double)dmin * M[e / 16] * xb.d * xb.qs[e];
                s += t - m;
                a += fabs(t) + fabs(m);
            }
        }
    } else {
        float wf[32];
        for (int b = 0; b < p->n_in / 32; b++) {
            const uint8_t *wb = w + b * sl_dtype_block_bytes(p->wtype);
            double ms = 0;
            const int8_t *xs;
            double dx;
            /* Q5_1's elements are q * d + m: the product's q * d part times x, plus m times s */
            if (p->wtype == SL_DTYPE_Q5_1) {
                uint8_t u[32];
                sl__q5_levels(p->wtype, wb, u);
                for (int j = 0; j < 32; j++) wf[j] = (float)u[j] * sl_fp16_to_f32(((const sl_block_q5_1 *)wb)->d);
                const sl_block_q8_1 *xb = (const sl_block_q8_1 *)x + b;
                xs = xb->qs;
                dx = sl_fp16_to_f32(xb->d);
                ms = (double)sl_fp16_to_f32(((const sl_block_q5_1 *)wb)->m) * sl_fp16_to_f32(xb->s);
            } else {
                sl_k_dequantize_row(p->wtype, wb, wf, 32);
                const sl_block_q8_0 *xb = (const sl_block_q8_0 *)x + b;
                xs = xb->qs;
                dx = sl_fp16_to_f32(xb->d);
            }
            for (int j = 0; j < 32; j++) {
                double t = (double)wf[j] * dx * xs[j];
                s += t;
                a += fabs(t);
            }
            s += ms;
            a += fabs(ms);
        }
    }
    *abs_sum = a;
    return s;
}

Test(kernel_kquants, variants_match_scalar_and_float64) {
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    for (int t = 0; t < N_TYPES; t++)
        for (size_t i = 0; i < sizeof k_n_in / sizeof k_n_in[0]; i++)
            for (size_t j = 0; j < sizeof k_n_rows / sizeof k_n_rows[0]; j++) {
                problem p = problem_make(k_types[t], k_n_in[i], k_n_rows[j], 1000 + 31 * (uint64_t)(t * 16 + i * 4 + j));
                const char *tn = sl_dtype_name(p.wtype);
                kt_use(&vs[0]); /* scalar */
                float *ref = run_q(&p, O0, O1);
                for (int r = 0; r < p.n_rows; r++)
                    for (int o = 0; o < N_OUT; o++) {
                        const float got = ref[r * N_OUT + o];
                        if (o < O0 || o >= O1) {
                            cr_assert_eq(got, SENTINEL, "%s wrote outside its range: row %d col %d", tn, r, o);
                            continue;
                        }
                        double abs_sum, want = qdot_ref(&p, r, o, &abs_sum);
                        const int nb = p.n_in / sl_dtype_block_elems(p.wtype);
                        /* per term: d_w * d_x, the int -> float conversion and the fma; then the chain over
                         * blocks and the 8 -> 1 fold (and Q5_1's second chain) */
                        const double bound = kt_gamma(nb + 8) * abs_sum + 1e-30;
                        cr_assert(fabs(got - want) <= bound, "%s n_in %d row %d out %d: %.9g vs float64 %.9g (bound %.3g)",
                                  tn, p.n_in, r, o, got, want, bound);
                    }
                for (int k = 1; k < nv; k++) {
                    kt_use(&vs[k]);
                    float *y = run_q(&p, O0, O1);
                    cr_assert(memcmp(y, ref, sizeof(float) * (size_t)p.n_rows * N_OUT) == 0,
                              "%s [%s] n_in %d rows %d differs from scalar", tn, vs[k].name, p.n_in, p.n_rows);
                    free(y);
                }
                kt_restore();
                free(ref);
                problem_free(&p);
            }
}

/* Every row count 1 .. 19 and output ranges that leave every tile shape a remainder: the AVX2 tile is 4 rows
 * (2 in its half form), the AVX-512 one 8 rows x 2 outputs (4 x 2 half), the 1-row tiles 4 outputs. The
 * scalar reference works row by row, so one 19-row reference serves every count. */
Test(kernel_kquants, variants_match_scalar_every_row_count) {
    static const int n_ins[] = {256, 768, 2304};
    static const int ranges[][2] = {{5, 6}, {2, 9}, {1, 10}, {0, 11}};
    enum { MAX_ROWS = 19 };
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    cr_log_info("variants: %d (%s .. %s)", nv, vs[0].name, vs[nv - 1].name);
    for (int t = 0; t < N_TYPES; t++)
        for (size_t i = 0; i < sizeof n_ins / sizeof n_ins[0]; i++) {
            problem p = problem_make(k_types[t], n_ins[i], MAX_ROWS, 4000 + 17 * (uint64_t)(t * 4 + i));
            const char *tn = sl_dtype_name(p.wtype);
            kt_use(&vs[0]); /* scalar */
            float *ref = run_q(&p, 0, N_OUT);
            for (int k = 1; k < nv; k++) {
                kt_use(&vs[k]);
                for (int n_rows = 1; n_rows <= MAX_ROWS; n_rows++)
                    for (size_t g = 0; g < sizeof ranges / sizeof ranges[0]; g++) {
                        const int o0 = ranges[g][0], o1 = ranges[g][1];
                        float y[MAX_ROWS * N_OUT];
                        for (int e = 0; e < MAX_ROWS * N_OUT; e++) y[e] = SENTINEL;
                        sl_k_matmul_q(p.wtype, p.w, p.w_row_bytes, o0, o1, p.n_in, p.xq, p.xq_row_bytes, n_rows, y,
                                      N_OUT);
                        for (int r = 0; r < MAX_ROWS; r++)
                            for (int o = 0; o < N_OUT; o++) {
                                const int inside = r < n_rows && o >= o0 && o < o1;
                                const float want = inside ? ref[r * N_OUT + o] : SENTINEL;
                                cr_assert(sl__f32_bits(y[r * N_OUT + o]) == sl__f32_bits(want),
                                          "%s [%s] n_in %d, %d rows, outputs [%d, %d): row %d out %d is %a, scalar %a",
                                          tn, vs[k].name, p.n_in, n_rows, o0, o1, r, o, y[r * N_OUT + o], want);
                            }
                    }
            }
            kt_restore();
            free(ref);
            problem_free(&p);
        }
}

/* Row r of a 17-row call equals a 1-row call on row r; outputs split over two calls equal one call. */
Test(kernel_kquants, batch_invariance) {
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    for (int t = 0; t < N_TYPES; t++) {
        problem p = problem_make(k_types[t], 1536, 17, 77 + (uint64_t)t);
        for (int k = 0; k < nv; k++) {
            kt_use(&vs[k]);
            float *all = run_q(&p, O0, O1);
            float *split = malloc(sizeof(float) * 17 * N_OUT);
            for (int i = 0; i < 17 * N_OUT; i++) split[i] = SENTINEL;
            sl_k_matmul_q(p.wtype, p.w, p.w_row_bytes, O0, 4, p.n_in, p.xq, p.xq_row_bytes, 17, split, N_OUT);
            sl_k_matmul_q(p.wtype, p.w, p.w_row_bytes, 4, O1, p.n_in, p.xq, p.xq_row_bytes, 17, split, N_OUT);
            cr_assert(memcmp(all, split, sizeof(float) * 17 * N_OUT) == 0, "%s [%s]: split outputs differ",
                      sl_dtype_name(p.wtype), vs[k].name);
            for (int r = 0; r < 17; r++) {
                float one[N_OUT];
                for (int o = 0; o < N_OUT; o++) one[o] = SENTINEL;
                sl_k_matmul_q(p.wtype, p.w, p.w_row_bytes, O0, O1, p.n_in, p.xq + r * p.xq_row_bytes, p.xq_row_bytes,
                              1, one, N_OUT);
                cr_assert(memcmp(one, all + r * N_OUT, sizeof one) == 0, "%s [%s]: row %d alone differs from batch",
                          sl_dtype_name(p.wtype), vs[k].name, r);
            }
            free(all);
            free(split);
        }
        kt_restore();
        problem_free(&p);
    }
}

/* Exact mode: y = canonical dot of x with the dequantized row, bit for bit, on every variant (and through the
 * chunked path for rows longer than the kernel's stack buffer); fast mode close to it. */
Test(kernel_kquants, exact_mode_and_fast_close_to_exact) {
    kt_variant vs[8];
    const int nv = kt_variants(vs);
    const int sizes[] = {4352, 16384 + 512};
    for (int t = 0; t < N_TYPES; t++)
        for (int si = 0; si < 2; si++) {
            const int n_rows = si ? 2 : 5;
            problem p = problem_make(k_types[t], sizes[si], n_rows, 500 + (uint64_t)t);
            const char *tn = sl_dtype_name(p.wtype);
            double num = 0, den = 0;
            for (int k = 0; k < nv; k++) {
                kt_use(&vs[k]);
                float y[5 * N_OUT];
                for (int i = 0; i < 5 * N_OUT; i++) y[i] = SENTINEL;
                sl_k_matmul_f32(p.wtype, p.w, p.w_row_bytes, O0, O1, p.n_in, p.x, p.n_in, n_rows, y, N_OUT);
                float *fast = k == 0 ? run_q(&p, O0, O1) : NULL;
                for (int r = 0; r < n_rows; r++)
                    for (int o = O0; o < O1; o++) {
                        const float want = sl_k_dot_f32(p.x + (size_t)r * p.n_in, p.wf + (size_t)o * p.n_in, p.n_in);
                        cr_assert(sl__f32_bits(y[r * N_OUT + o]) == sl__f32_bits(want),
                                  "%s [%s] n_in %d row %d out %d: exact %a, canonical dot %a", tn, vs[k].name, p.n_in,
                                  r, o, y[r * N_OUT + o], want);
                        if (fast) {
                            const double d = (double)fast[r * N_OUT + o] - want;
                            num += d * d;
                            den += (double)want * want;
                        }
                    }
                free(fast);
            }
            kt_restore();
            cr_assert(sqrt(num / den) < 2e-2, "%s n_in %d: fast vs exact normalized error %.3g", tn, p.n_in,
                      sqrt(num / den));
            problem_free(&p);
        }
}
