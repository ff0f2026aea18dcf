/*
 * sampler.h — picking the next token from one position's logits, and the per-choice random generator.
 *
 * sl_sample() runs on the engine thread for every generated token of every sequence, so it never allocates:
 * the caller creates one sl_sampler_scratch for the model's vocabulary size and reuses it for every call (it
 * is not thread-safe; one per engine thread). Semantics follow vLLM/OpenAI:
 *   1. logprobs (of the sampled token and of the k best alternatives) are the log-softmax of the RAW logits,
 *      before any of the processing below (vLLM's default, "raw_logprobs");
 *   2. logit_bias is added; the repetition penalty (HF/llama.cpp: positive logits divided, negative ones
 *      multiplied, once per distinct token of prompt + output); presence/frequency penalties (OpenAI:
 *      logit -= presence * [count > 0] + frequency * count, over generated tokens); banned tokens -> -inf;
 *   3. temperature 0 -> argmax (ties: lowest id); otherwise temperature, top-k, top-p (nucleus, keeps at least
 *      one token), min-p (relative to the most likely token), then a draw from the rng.
 * NaN logits are treated as -inf and +inf as the largest float, so a broken row cannot crash the engine.
 * A given (seed, stream) gives the same tokens every time (with one build: libm's expf is part of the
 * arithmetic).
 */
#ifndef SL_SAMPLER_H
#define SL_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/sluice.h"

/* xoshiro256** (Blackman & Vigna): 256 bits of state, fast, and good enough for sampling. */
typedef struct sl_rng {
    uint64_t s[4];
} sl_rng;

/* Seeds from (seed, stream): stream is the choice index, so the n choices of one request draw independent
 * sequences from one seed. The state is expanded with splitmix64, as the xoshiro authors recommend. */
void sl_rng_seed(sl_rng *r, uint64_t seed, uint64_t stream);
uint64_t sl_rng_next(sl_rng *r);
double sl_rng_uniform(sl_rng *r); /* [0, 1), 53 random bits */

typedef struct sl_sampler_scratch sl_sampler_scratch;

/* Sized once for n_vocab (> 0); ~16 bytes per vocabulary entry. */
sl_status sl_sampler_scratch_create(int n_vocab, sl_sampler_scratch **out);
void sl_sampler_scratch_free(sl_sampler_scratch *s);

/* OpenAI's top_logprobs maximum. */
#define SL_SAMPLE_MAX_TOP 20

typedef struct sl_sample_input {
    const float *logits;         /* [n_vocab] raw logits of one position, f32 */
    int n_vocab;                 /* must not exceed the scratch's */
    const sl_sampling_params *params;
    const int32_t *prompt;       /* [n_prompt] prompt token ids: repetition penalty only */
    size_t n_prompt;
    const int32_t *output;       /* [n_output] tokens generated so far: presence, frequency, repetition */
    size_t n_output;
    const int32_t *banned;       /* [n_banned] tokens masked to -inf (EOS/stop ids before min_tokens) */
    size_t n_banned;
    int n_top_logprobs;          /* -1: no logprobs wanted; 0..SL_SAMPLE_MAX_TOP: the sampled one and k best */
} sl_sample_input;

typedef struct sl_sample_output {
    int32_t token;
    float logprob;                          /* of token under the raw logits; 0 when none were asked */
    sl_top_logprob top[SL_SAMPLE_MAX_TOP];  /* [n_top], most likely first (ties: lowest id first) */
    int n_top;
} sl_sample_output;

/* Picks one token. SL_INVALID_ARGUMENT for out-of-range ids (bias, prompt, output, banned), parameters out of
 * range (temperature < 0, top_p outside (0, 1], min_p outside [0, 1], repetition_penalty <= 0, NaNs), or
 * when no token is left with a finite logit (all NaN, -inf or banned). */
sl_status sl_sample(const sl_sample_input *in, sl_rng *rng, sl_sampler_scratch *s, sl_sample_output *out);

#endif /* SL_SAMPLER_H */
