/*
 * test_sampler_random.c — the draw is faithful and reproducible: at temperature 1 (and 2) the frequencies of
 * 20000 draws from a known small distribution pass a chi-square test at p = 1e-6 (the seed is fixed, so the
 * test cannot flake; the bound only says the sampler is right), one (seed, stream) always gives the same
 * tokens, and different streams or seeds give different ones.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "sampler.h"
#include "sampler_testutil.h"
#include "testutil.h"

/* Chi-square statistic of `counts` (of n draws) against probabilities `prob`. */
static double chi_square(const int *counts, const double *prob, int k, int n) {
    double chi = 0.0;
    for (int i = 0; i < k; i++) {
        double e = prob[i] * n;
        chi += (counts[i] - e) * (counts[i] - e) / e;
    }
    return chi;
}

/* 4 degrees of freedom: P(chi2 > 33.38) = 1e-6. */
#define CHI2_4DOF_1E6 33.38

Test(sampler_random, frequencies_follow_the_distribution) {
    const double prob[5] = {0.1, 0.2, 0.3, 0.15, 0.25};
    float l[5];
    for (int i = 0; i < 5; i++) l[i] = (float)log(prob[i]) + 3.0f; /* a shift must not matter */
    sl_sampling_params p = params_default();
    sl_sample_input in = input_of(l, 5, &p);
    sl_sampler_scratch *s = NULL;
    cr_assert_eq(sl_sampler_scratch_create(5, &s), SL_OK);
    const int draws = 20000;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 1: temperature 2 flattens p to p^(1/2), renormalised */
        double q[5], z = 0.0;
        p.temperature = pass ? 2.0f : 1.0f;
        for (int i = 0; i < 5; i++) z += q[i] = pow(prob[i], 1.0 / p.temperature);
        for (int i = 0; i < 5; i++) q[i] /= z;
        int counts[5] = {0};
        sl_rng rng;
        sl_rng_seed(&rng, 1234, 0);
        for (int i = 0; i < draws; i++) {
            sl_sample_output out;
            cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK);
            counts[out.token]++;
        }
        double chi = chi_square(counts, q, 5, draws);
        cr_assert_lt(chi, CHI2_4DOF_1E6, "temperature %g: chi2 %.2f (%d %d %d %d %d)", (double)p.temperature, chi,
                     counts[0], counts[1], counts[2], counts[3], counts[4]);
        /* And a wrong hypothesis is rejected: the test has teeth. */
        if (pass) {
            cr_assert_gt(chi_square(counts, prob, 5, draws), CHI2_4DOF_1E6);
        }
    }
    sl_sampler_scratch_free(s);
}

static void draw_sequence(uint64_t seed, uint64_t stream, int32_t *seq, int n) {
    float l[64];
    for (int i = 0; i < 64; i++) l[i] = (float)(i % 7) * 0.1f; /* flat enough that every draw matters */
    sl_sampling_params p = params_default();
    p.top_k = 40;
    p.top_p = 0.95f;
    sl_sample_input in = input_of(l, 64, &p);
    sl_sampler_scratch *s = NULL;
    cr_assert_eq(sl_sampler_scratch_create(64, &s), SL_OK);
    sl_rng rng;
    sl_rng_seed(&rng, seed, stream);
    for (int i = 0; i < n; i++) {
        sl_sample_output out;
        cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK);
        seq[i] = out.token;
    }
    sl_sampler_scratch_free(s);
}

Test(sampler_random, same_seed_same_tokens_other_streams_differ) {
    enum { N = 100 };
    int32_t a[N], b[N], c[N], d[N];
    draw_sequence(42, 0, a, N);
    draw_sequence(42, 0, b, N);
    cr_assert(memcmp(a, b, sizeof a) == 0, "one (seed, stream) must give one sequence");
    draw_sequence(42, 1, c, N);
    draw_sequence(43, 0, d, N);
    int same_c = 0, same_d = 0;
    for (int i = 0; i < N; i++) same_c += a[i] == c[i], same_d += a[i] == d[i];
    /* ~57 tokens in the running: independent sequences agree on a few percent of positions */
    cr_assert_lt(same_c, 20, "stream 1 repeats stream 0 (%d/%d)", same_c, N);
    cr_assert_lt(same_d, 20, "seed 43 repeats seed 42 (%d/%d)", same_d, N);
}

Test(sampler_random, rng_is_reproducible_and_uniform_in_unit_interval) {
    sl_rng r1, r2;
    sl_rng_seed(&r1, 0, 0); /* seed 0 must not be the all-zero state xoshiro cannot leave */
    sl_rng_seed(&r2, 0, 0);
    double sum = 0.0;
    int distinct = 0;
    uint64_t prev = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t x = sl_rng_next(&r1);
        cr_assert_eq(x, sl_rng_next(&r2));
        distinct += x != prev;
        prev = x;
        double u = sl_rng_uniform(&r1);
        sl_rng_uniform(&r2);
        cr_assert(u >= 0.0 && u < 1.0);
        sum += u;
    }
    cr_assert_eq(distinct, 10000);
    cr_assert(fabs(sum / 10000 - 0.5) < 0.02, "mean %f", sum / 10000);
}
