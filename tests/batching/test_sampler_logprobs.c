/*
 * test_sampler_logprobs.c — logprobs are the log-softmax of the raw logits (they sum to one, the top list is
 * ordered, penalties and temperature do not change them); broken rows (NaN, +-inf) and bad arguments give a
 * token or a status, never a crash; and sampling allocates nothing per call.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "sampler.h"
#include "sampler_testutil.h"
#include "sl_util.h"
#include "testutil.h"

#define VOCAB 49152

Test(sampler_logprobs, whole_small_vocabulary_sums_to_one_and_is_ordered) {
    float l[20];
    uint64_t seed = 99;
    for (int i = 0; i < 20; i++) l[i] = sl_test_rand_f32(&seed, -5.0f, 5.0f);
    l[3] = l[11] = 6.0f; /* a tie at the top: lower id first */
    sl_sampling_params p = params_default();
    p.temperature = 0.7f;
    p.presence_penalty = 1.5f; /* processing must not leak into logprobs */
    sl_logit_bias bias = {5, 50.0f};
    p.logit_bias = &bias;
    p.n_logit_bias = 1;
    int32_t output[2] = {3, 5};
    sl_sample_input in = input_of(l, 20, &p);
    in.output = output;
    in.n_output = 2;
    in.n_top_logprobs = 20;
    sl_sampler_scratch *s = NULL;
    cr_assert_eq(sl_sampler_scratch_create(20, &s), SL_OK);
    sl_rng rng;
    sl_rng_seed(&rng, 5, 0);
    sl_sample_output out;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK);
    cr_assert_eq(out.token, 5, "the +50 bias decides the draw");
    cr_assert_eq(out.n_top, 20);
    double sum = 0.0, m = -INFINITY, z = 0.0;
    for (int i = 0; i < 20; i++) m = fmax(m, l[i]);
    for (int i = 0; i < 20; i++) z += exp(l[i] - m);
    for (int j = 0; j < 20; j++) {
        sum += exp(out.top[j].logprob);
        double want = l[out.top[j].token] - m - log(z);
        cr_assert(fabs(out.top[j].logprob - want) < 1e-5, "token %d: %f vs %f", out.top[j].token,
                  (double)out.top[j].logprob, want);
        if (j) cr_assert_geq(out.top[j - 1].logprob, out.top[j].logprob);
    }
    cr_assert(fabs(sum - 1.0) < 1e-5, "sum %f", sum);
    cr_assert_eq(out.top[0].token, 3);
    cr_assert_eq(out.top[1].token, 11);
    cr_assert(fabs(out.logprob - (l[5] - m - log(z))) < 1e-5, "sampled token's logprob is the raw one");
    sl_sampler_scratch_free(s);
}

Test(sampler_logprobs, full_vocabulary_top_k_matches_a_reference) {
    float *l = malloc(VOCAB * sizeof *l);
    uint64_t seed = 123;
    for (int i = 0; i < VOCAB; i++) l[i] = sl_test_rand_f32(&seed, -10.0f, 10.0f);
    sl_sampling_params p = params_default();
    sl_sample_input in = input_of(l, VOCAB, &p);
    in.n_top_logprobs = 5;
    sl_sampler_scratch *s = NULL;
    cr_assert_eq(sl_sampler_scratch_create(VOCAB, &s), SL_OK);
    sl_rng rng;
    sl_rng_seed(&rng, 5, 0);
    sl_sample_output out;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK);
    cr_assert_eq(out.n_top, 5);
    double m = -INFINITY, z = 0.0;
    for (int i = 0; i < VOCAB; i++) m = fmax(m, l[i]);
    for (int i = 0; i < VOCAB; i++) z += exp(l[i] - m);
    int32_t used[5];
    for (int j = 0; j < 5; j++) { /* reference: j-th best by repeated scan */
        int best = -1;
        for (int i = 0; i < VOCAB; i++) {
            int taken = 0;
            for (int q = 0; q < j; q++) taken |= used[q] == i;
            if (!taken && (best < 0 || l[i] > l[best])) best = i;
        }
        used[j] = best;
        cr_assert_eq(out.top[j].token, best);
        cr_assert(fabs(out.top[j].logprob - (l[best] - m - log(z))) < 1e-4);
    }
    cr_assert(fabs(out.logprob - (l[out.token] - m - log(z))) < 1e-4);
    /* k = 0: only the sampled token's logprob */
    in.n_top_logprobs = 0;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK);
    cr_assert_eq(out.n_top, 0);
    cr_assert(out.logprob < 0.0f && isfinite(out.logprob));
    sl_sampler_scratch_free(s);
    free(l);
}

Test(sampler_logprobs, nan_and_inf_logits_do_not_break_sampling) {
    float l[8] = {NAN, 1.0f, NAN, 2.0f, -INFINITY, NAN, 0.5f, NAN};
    sl_sampling_params p = params_default();
    sl_sample_input in = input_of(l, 8, &p);
    in.n_top_logprobs = 8;
    sl_sampler_scratch *s = NULL;
    cr_assert_eq(sl_sampler_scratch_create(8, &s), SL_OK);
    sl_rng rng;
    sl_rng_seed(&rng, 9, 0);
    for (int i = 0; i < 500; i++) {
        sl_sample_output out;
        cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK);
        cr_assert(out.token == 1 || out.token == 3 || out.token == 6, "token %d", out.token);
        cr_assert(isfinite(out.logprob));
        cr_assert_eq(out.n_top, 3, "NaN and -inf tokens are not alternatives");
    }
    p.temperature = 0.0f;
    sl_sample_output out;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK);
    cr_assert_eq(out.token, 3);

    /* +inf wins, and its logprob is 0 */
    l[6] = INFINITY;
    p.temperature = 1.0f;
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK);
        cr_assert_eq(out.token, 6);
        cr_assert(fabs(out.logprob) < 1e-6);
    }
    /* nothing finite: a status */
    float bad[8];
    for (int i = 0; i < 8; i++) bad[i] = i % 2 ? NAN : -INFINITY;
    in.logits = bad;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    p.temperature = 0.0f;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    sl_sampler_scratch_free(s);
}

Test(sampler_logprobs, bad_arguments_are_statuses) {
    float l[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    sl_sampler_scratch *s = NULL;
    cr_assert_eq(sl_sampler_scratch_create(4, &s), SL_OK);
    sl_rng rng;
    sl_rng_seed(&rng, 1, 0);
    sl_sample_output out;
    sl_sampling_params p = params_default();
    sl_sample_input in = input_of(l, 4, &p);
    int32_t bad_id = 4;
    sl_logit_bias bad_bias = {-1, 1.0f};
    in.output = &bad_id, in.n_output = 1;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "out of range"), "%s", sl_last_error());
    in.output = NULL, in.n_output = 0;
    in.banned = &bad_id, in.n_banned = 1;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    in.banned = NULL, in.n_banned = 0;
    in.prompt = &bad_id, in.n_prompt = 1;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    in.prompt = NULL, in.n_prompt = 0;
    p.logit_bias = &bad_bias, p.n_logit_bias = 1;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    p = params_default();
    in.n_top_logprobs = 21;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    in.n_top_logprobs = -1;
    in.n_vocab = 5; /* larger than the scratch */
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    in.n_vocab = 4;
    const float bad_values[] = {-1.0f, NAN, INFINITY};
    for (size_t i = 0; i < 3; i++) {
        p = params_default();
        p.temperature = bad_values[i];
        cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT, "temperature %f", (double)bad_values[i]);
        p = params_default();
        p.repetition_penalty = bad_values[i];
        cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
        p = params_default();
        p.min_p = bad_values[i] < 0 ? 1.5f : bad_values[i];
        cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    }
    p = params_default();
    p.top_p = 0.0f;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    p.top_p = 1.0f;
    p.top_k = -1;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_INVALID_ARGUMENT);
    p.top_k = 0;
    cr_assert_eq(sl_sample(&in, &rng, s, &out), SL_OK); /* and it still works after all that */
    sl_sampler_scratch_free(s);
    sl_sampler_scratch *none = (sl_sampler_scratch *)1;
    cr_assert_eq(sl_sampler_scratch_create(0, &none), SL_INVALID_ARGUMENT);
    cr_assert_null(none);
}

Test(sampler_logprobs, sampling_allocates_nothing) {
    float *l = malloc(VOCAB * sizeof *l);
    uint64_t seed = 5;
    for (int i = 0; i < VOCAB; i++) l[i] = sl_test_rand_f32(&seed, -10.0f, 10.0f);
    sl_sampler_scratch *s = NULL;
    cr_assert_eq(sl_sampler_scratch_create(VOCAB, &s), SL_OK);
    sl_sampling_params p = params_default();
    p.top_k = 50, p.top_p = 0.9f, p.min_p = 0.05f, p.repetition_penalty = 1.1f, p.frequency_penalty = 0.5f;
    int32_t prompt[3] = {1, 2, 3}, output[3] = {4, 4, 5};
    sl_sample_input in = input_of(l, VOCAB, &p);
    in.prompt = prompt, in.n_prompt = 3, in.output = output, in.n_output = 3, in.n_top_logprobs = 20;
    sl_rng rng;
    sl_rng_seed(&rng, 3, 0);
    sl__alloc_fail_after(0); /* any allocation through the project's allocator fails from here */
    sl_status st = SL_OK;
    for (int i = 0; i < 20 && st == SL_OK; i++) {
        sl_sample_output out;
        st = sl_sample(&in, &rng, s, &out);
    }
    sl__alloc_fail_after(-1);
    cr_assert_eq(st, SL_OK, "%s", sl_last_error());
    sl_sampler_scratch_free(s);
    /* and creating the scratch under allocation failure is a status */
    for (long k = 0; k <= 6; k++) { /* six allocations: the struct and its five arrays */
        sl__alloc_fail_after(k);
        sl_sampler_scratch *t = NULL;
        st = sl_sampler_scratch_create(VOCAB, &t);
        sl__alloc_fail_after(-1);
        cr_assert_eq(st, k < 6 ? SL_OUT_OF_MEMORY : SL_OK, "k=%ld: %s", k, sl_status_name(st));
        cr_assert(k < 6 ? t == NULL : t != NULL);
        sl_sampler_scratch_free(t);
    }
    free(l);
}
