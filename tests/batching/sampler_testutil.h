/* sampler_testutil.h — what the sampler tests share: default parameters (the public init, so the tests see
 * exactly what a request gets) and a sampler input over a logits row. */
#ifndef SL_SAMPLER_TESTUTIL_H
#define SL_SAMPLER_TESTUTIL_H

#include <string.h>

#include "sampler.h"
#include "sluice/sluice.h"

static inline sl_sampling_params params_default(void) {
    sl_sampling_params p;
    sl_sampling_params_init(&p);
    return p;
}

static inline sl_sample_input input_of(const float *logits, int n, const sl_sampling_params *p) {
    sl_sample_input in;
    memset(&in, 0, sizeof in);
    in.logits = logits;
    in.n_vocab = n;
    in.params = p;
    in.n_top_logprobs = -1;
    return in;
}

#endif
