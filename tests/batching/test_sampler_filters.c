/*
 * test_sampler_filters.c — each knob of the sampler changes the choice the way its documentation says:
 * greedy is argmax (ties to the lowest id), top-k, top-p (also a nucleus of thousands of tokens in a full
 * 49152-token vocabulary), min-p, logit_bias, the ban, and the repetition / presence / frequency penalties.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "sampler.h"
#include "sampler_testutil.h"
#include "testutil.h"

#define VOCAB 49152 /* the default model's */

static sl_sampler_scratch *scratch(int n) {
    sl_sampler_scratch *s = NULL;
    cr_assert_eq(sl_sampler_scratch_create(n, &s), SL_OK);
    return s;
}

static int32_t sample1(const sl_sample_input *in, sl_rng *rng, sl_sampler_scratch *s) {
    sl_sample_output out;
    cr_assert_eq(sl_sample(in, rng, s, &out), SL_OK, "%s", sl_last_error());
    return out.token;
}

/* Draws `draws` tokens from a small vocabulary and counts them. */
static void histogram(const sl_sample_input *in, int draws, uint64_t seed, int *counts) {
    sl_sampler_scratch *s = scratch(in->n_vocab);
    sl_rng rng;
    sl_rng_seed(&rng, seed, 0);
    memset(counts, 0, sizeof(int) * (size_t)in->n_vocab);
    for (int i = 0; i < draws; i++) counts[sample1(in, &rng, s)]++;
    sl_sampler_scratch_free(s);
}

static float *random_logits(uint64_t seed) {
    float *l = malloc(VOCAB * sizeof *l);
    for (int i = 0; i < VOCAB; i++) l[i] = sl_test_rand_f32(&seed, -8.0f, 8.0f);
    return l;
}

Test(sampler_filters, greedy_is_argmax_with_ties_to_lowest_id) {
    float *l = random_logits(7);
    int best = 0;
    for (int i = 1; i < VOCAB; i++)
        if (l[i] > l[best]) best = i;
    sl_sampling_params p = params_default();
    p.temperature = 0.0f;
    p.top_k = 5; /* irrelevant when greedy */
    sl_sample_input in = input_of(l, VOCAB, &p);
    sl_sampler_scratch *s = scratch(VOCAB);
    sl_rng rng;
    sl_rng_seed(&rng, 1, 0);
    cr_assert_eq(sample1(&in, &rng, s), best);
    l[40000] = l[best] + 1.0f; /* a tie between two ids above everything else: the lower one wins */
    l[30000] = l[40000];
    cr_assert_eq(sample1(&in, &rng, s), 30000);
    sl_sampler_scratch_free(s);
    free(l);
}

Test(sampler_filters, top_k_1_equals_greedy) {
    float *l = random_logits(11);
    sl_sampling_params p = params_default();
    sl_sampler_scratch *s = scratch(VOCAB);
    sl_rng rng;
    sl_rng_seed(&rng, 2, 0);
    p.temperature = 0.0f;
    sl_sample_input in = input_of(l, VOCAB, &p);
    int32_t greedy = sample1(&in, &rng, s);
    p.temperature = 1.5f;
    p.top_k = 1;
    for (int i = 0; i < 50; i++) cr_assert_eq(sample1(&in, &rng, s), greedy);
    sl_sampler_scratch_free(s);
    free(l);
}

Test(sampler_filters, top_k_keeps_the_k_best) {
    /* probabilities .4 .3 .2 .1 as logits */
    float l[4] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f)};
    sl_sampling_params p = params_default();
    p.top_k = 2;
    sl_sample_input in = input_of(l, 4, &p);
    int c[4];
    histogram(&in, 2000, 3, c);
    cr_assert(c[0] > 0 && c[1] > 0 && c[2] == 0 && c[3] == 0, "%d %d %d %d", c[0], c[1], c[2], c[3]);
}

Test(sampler_filters, tiny_top_p_keeps_only_the_best) {
    float *l = random_logits(13);
    sl_sampling_params p = params_default();
    sl_sampler_scratch *s = scratch(VOCAB);
    sl_rng rng;
    sl_rng_seed(&rng, 4, 0);
    p.temperature = 0.0f;
    sl_sample_input in = input_of(l, VOCAB, &p);
    int32_t greedy = sample1(&in, &rng, s);
    p.temperature = 1.0f;
    p.top_p = 1e-6f;
    for (int i = 0; i < 50; i++) cr_assert_eq(sample1(&in, &rng, s), greedy);
    sl_sampler_scratch_free(s);
    free(l);
}

Test(sampler_filters, top_p_keeps_the_smallest_nucleus) {
    float l[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    sl_sampling_params p = params_default();
    p.top_p = 0.7f; /* .5 < .7 <= .5 + .3: tokens 0 and 1 */
    sl_sample_input in = input_of(l, 4, &p);
    int c[4];
    histogram(&in, 4000, 5, c);
    cr_assert(c[0] > 0 && c[1] > 0 && c[2] == 0 && c[3] == 0, "%d %d %d %d", c[0], c[1], c[2], c[3]);
    /* renormalised: token 0 has .5/.8 = .625 of the draws */
    cr_assert(fabs(c[0] / 4000.0 - 0.625) < 0.04, "%d", c[0]);
}

Test(sampler_filters, top_p_over_a_flat_full_vocabulary) {
    /* All equal: the nucleus of 0.25 is exactly the first quarter of ids (ties go to the lower id); the
     * sampler's mass-steered selection must stop exactly there, after many partitions. */
    float *l = malloc(VOCAB * sizeof *l);
    for (int i = 0; i < VOCAB; i++) l[i] = 0.5f;
    sl_sampling_params p = params_default();
    p.top_p = 0.25f;
    sl_sample_input in = input_of(l, VOCAB, &p);
    sl_sampler_scratch *s = scratch(VOCAB);
    sl_rng rng;
    sl_rng_seed(&rng, 6, 0);
    int32_t lo = VOCAB, hi = -1;
    for (int i = 0; i < 300; i++) {
        int32_t t = sample1(&in, &rng, s);
        cr_assert_lt(t, VOCAB / 4, "token %d outside the nucleus", t);
        if (t < lo) lo = t;
        if (t > hi) hi = t;
    }
    cr_assert(lo < 1000 && hi > VOCAB / 4 - 1000, "draws span [%d, %d]", lo, hi); /* misses: p ~ e^-24 */
    sl_sampler_scratch_free(s);
    free(l);
}

static const float *g_sort_logits;

static int by_logit_desc(const void *a, const void *b) {
    float x = g_sort_logits[*(const int *)a], y = g_sort_logits[*(const int *)b];
    if (x != y) return x > y ? -1 : 1;
    return *(const int *)a - *(const int *)b;
}

Test(sampler_filters, top_p_matches_a_sorted_reference) {
    /* A realistic spread over the full vocabulary: the nucleus of 0.6 is thousands of tokens. The reference
     * sorts everything; the sampler must draw only inside it, and reach its far end. */
    float *l = random_logits(21);
    int *order = malloc(VOCAB * sizeof *order);
    int *rank = malloc(VOCAB * sizeof *rank);
    for (int i = 0; i < VOCAB; i++) order[i] = i;
    g_sort_logits = l;
    qsort(order, VOCAB, sizeof *order, by_logit_desc);
    double z = 0.0, cum = 0.0;
    float m = l[order[0]];
    for (int i = 0; i < VOCAB; i++) z += exp((double)l[i] - m);
    int nucleus = 0;
    while (nucleus < VOCAB && !(nucleus > 0 && cum >= 0.6 * z)) cum += exp((double)l[order[nucleus++]] - m);
    for (int i = 0; i < VOCAB; i++) rank[order[i]] = i;
    cr_assert_gt(nucleus, 1000, "the test wants a large nucleus, got %d", nucleus);

    sl_sampling_params p = params_default();
    p.top_p = 0.6f;
    sl_sample_input in = input_of(l, VOCAB, &p);
    sl_sampler_scratch *s = scratch(VOCAB);
    sl_rng rng;
    sl_rng_seed(&rng, 22, 0);
    int deepest = 0;
    for (int i = 0; i < 1000; i++) {
        int32_t t = sample1(&in, &rng, s);
        cr_assert_lt(rank[t], nucleus, "token of rank %d outside the nucleus of %d", rank[t], nucleus);
        if (rank[t] > deepest) deepest = rank[t];
    }
    /* The nucleus ends ~0.9 logits below the best, where ~380 tokens share each 1/8 of a logit: losing a
     * slice of its tail would show here. */
    cr_assert_geq(deepest, nucleus - 100, "draws reach rank %d of a %d-token nucleus", deepest, nucleus);
    sl_sampler_scratch_free(s);
    free(rank);
    free(order);
    free(l);
}

Test(sampler_filters, min_p_is_relative_to_the_best) {
    float l[4] = {logf(0.6f), logf(0.25f), logf(0.1f), logf(0.05f)};
    sl_sampling_params p = params_default();
    p.min_p = 0.3f; /* threshold .3 * .6 = .18: keeps .6 and .25 */
    sl_sample_input in = input_of(l, 4, &p);
    int c[4];
    histogram(&in, 4000, 7, c);
    cr_assert(c[0] > 0 && c[1] > 0 && c[2] == 0 && c[3] == 0, "%d %d %d %d", c[0], c[1], c[2], c[3]);
    p.min_p = 0.15f; /* threshold .09: .1 joins */
    histogram(&in, 4000, 7, c);
    cr_assert(c[2] > 0 && c[3] == 0, "%d %d %d %d", c[0], c[1], c[2], c[3]);
}

Test(sampler_filters, logit_bias_forces_and_forbids) {
    float *l = random_logits(17);
    sl_sampling_params p = params_default();
    sl_sampler_scratch *s = scratch(VOCAB);
    sl_rng rng;
    sl_rng_seed(&rng, 8, 0);
    int weakest = 0;
    for (int i = 1; i < VOCAB; i++)
        if (l[i] < l[weakest]) weakest = i;
    sl_logit_bias force = {weakest, 100.0f};
    p.logit_bias = &force;
    p.n_logit_bias = 1;
    sl_sample_input in = input_of(l, VOCAB, &p);
    for (int i = 0; i < 50; i++) cr_assert_eq(sample1(&in, &rng, s), weakest);

    /* -100 on the 3 most likely of a small peaked distribution: never drawn. */
    float small[6] = {9.0f, 8.5f, 8.0f, 1.0f, 0.5f, 0.0f};
    sl_logit_bias forbid[3] = {{0, -100.0f}, {1, -100.0f}, {2, -100.0f}};
    p.logit_bias = forbid;
    p.n_logit_bias = 3;
    in = input_of(small, 6, &p);
    int c[6];
    histogram(&in, 3000, 9, c);
    cr_assert(c[0] == 0 && c[1] == 0 && c[2] == 0 && c[3] + c[4] + c[5] == 3000);
    sl_sampler_scratch_free(s);
    free(l);
}

Test(sampler_filters, banned_tokens_are_never_chosen) {
    float l[6] = {9.0f, 8.5f, 8.0f, 1.0f, 0.5f, 0.0f};
    int32_t banned[2] = {0, 2};
    sl_sampling_params p = params_default();
    sl_sample_input in = input_of(l, 6, &p);
    in.banned = banned;
    in.n_banned = 2;
    int c[6];
    histogram(&in, 3000, 10, c);
    cr_assert(c[0] == 0 && c[2] == 0 && c[1] > 2000, "%d %d %d", c[0], c[1], c[2]);
    p.temperature = 0.0f;
    histogram(&in, 10, 10, c);
    cr_assert_eq(c[1], 10);
    /* Everything banned: a status, not a crash or a made-up token. */
    int32_t all[6] = {0, 1, 2, 3, 4, 5};
    in.banned = all;
    in.n_banned = 6;
    sl_sampler_scratch *s = scratch(6);
    sl_rng rng;
    sl_rng_seed(&rng, 1, 0);
    sl_sample_output out;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    p.temperature = 1.0f;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    sl_sampler_scratch_free(s);
}

/* Greedy choice over two or three logits after penalties. */
static int32_t greedy_with(const float *l, int n, const sl_sampling_params *p0, const int32_t *prompt,
                           size_t n_prompt, const int32_t *output, size_t n_output) {
    sl_sampling_params p = *p0;
    p.temperature = 0.0f;
    sl_sample_input in = input_of(l, n, &p);
    in.prompt = prompt, in.n_prompt = n_prompt, in.output = output, in.n_output = n_output;
    sl_sampler_scratch *s = scratch(n);
    sl_rng rng;
    sl_rng_seed(&rng, 1, 0);
    int32_t t = sample1(&in, &rng, s);
    sl_sampler_scratch_free(s);
    return t;
}

Test(sampler_filters, repetition_penalty_divides_positive_multiplies_negative_once) {
    sl_sampling_params p = params_default();
    p.repetition_penalty = 1.2f;
    const int32_t zero[4] = {0, 0, 0, 0};
    float pos[2] = {2.0f, 1.9f}; /* 2 / 1.2 = 1.67 < 1.9 */
    cr_assert_eq(greedy_with(pos, 2, &p, NULL, 0, NULL, 0), 0);
    cr_assert_eq(greedy_with(pos, 2, &p, NULL, 0, zero, 1), 1);
    cr_assert_eq(greedy_with(pos, 2, &p, zero, 1, NULL, 0), 1); /* the prompt counts too */
    float neg[2] = {-1.0f, -1.1f};                              /* -1 * 1.2 = -1.2 < -1.1 */
    cr_assert_eq(greedy_with(neg, 2, &p, zero, 1, NULL, 0), 1);
    float once[2] = {2.0f, 1.5f}; /* once: 1.67 > 1.5; twice would be 1.39 < 1.5 */
    cr_assert_eq(greedy_with(once, 2, &p, zero, 3, zero, 4), 0);
}

Test(sampler_filters, presence_and_frequency_penalties_count_generated_tokens) {
    sl_sampling_params p = params_default();
    float l[2] = {1.0f, 0.5f};
    const int32_t zero[3] = {0, 0, 0};
    p.presence_penalty = 0.6f; /* 1 - .6 = .4 < .5 */
    cr_assert_eq(greedy_with(l, 2, &p, NULL, 0, zero, 1), 1);
    cr_assert_eq(greedy_with(l, 2, &p, zero, 3, NULL, 0), 0); /* prompt tokens do not count */
    p.presence_penalty = 0.4f;                                /* .6 > .5, however often it occurred */
    cr_assert_eq(greedy_with(l, 2, &p, NULL, 0, zero, 3), 0);
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.2f; /* once: .8 > .5; three times: .4 < .5 */
    cr_assert_eq(greedy_with(l, 2, &p, NULL, 0, zero, 1), 0);
    cr_assert_eq(greedy_with(l, 2, &p, NULL, 0, zero, 3), 1);
    p.frequency_penalty = -1.0f; /* negative penalties encourage repetition */
    float l2[2] = {0.5f, 1.0f};
    cr_assert_eq(greedy_with(l2, 2, &p, NULL, 0, zero, 1), 0);
}

/* A penalty that pushes finite logits past FLT_MAX: the processed logits are clamped again, so two such tokens
 * tie (each weight exp(0) = 1) instead of an infinite total that left the draw to its rounding fallback (which
 * always picked the later one). For the plain draw and the top-p path. */
Test(sampler_filters, penalties_that_overflow_are_clamped) {
    float l[300];
    for (int i = 0; i < 300; i++) l[i] = (float)(i % 7);
    l[3] = l[257] = 3e38f;
    int32_t prompt[2] = {3, 257};
    for (int topp = 0; topp < 2; topp++) {
        sl_sampling_params p = params_default();
        p.temperature = 1.0f;
        p.repetition_penalty = 0.5f; /* 3e38 / 0.5 overflows */
        if (topp) p.top_p = 0.99f;
        sl_sample_input in = input_of(l, 300, &p);
        in.prompt = prompt, in.n_prompt = 2;
        sl_sampler_scratch *s = NULL;
        cr_assert_eq(sl_sampler_scratch_create(300, &s), SL_OK);
        int seen3 = 0, seen257 = 0;
        for (uint64_t seed = 0; seed < 200; seed++) {
            sl_rng rng;
            sl_rng_seed(&rng, seed, 0);
            sl_sample_output out;
            cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK);
            cr_assert(out.token == 3 || out.token == 257, "token %d", out.token);
            seen3 += out.token == 3, seen257 += out.token == 257;
        }
        cr_assert(seen3 > 50 && seen257 > 50, "top_p %d: 3 drawn %d times, 257 %d times of 200", topp, seen3, seen257);
        sl_sampler_scratch_free(s);
    }
}
