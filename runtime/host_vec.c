/* host_vec.c — see host_vec.h. */
#include "host_vec.h"

#include "kcpu.h"

_Static_assert(SL_HOST_SAMPLE_CHUNK == SL_K_SAMPLE_CHUNK, "host_vec.h and kcpu.h disagree on the chunk size");

double sl_host_sample_weights(const float *x, int n, float m, float inv_t, float floor_e, float *e, float *chunk) {
    return sl_k_sample_weights(x, n, m, inv_t, floor_e, e, chunk);
}

void sl_host_clean_logits(const float *x, float *y, int n) { sl_k_clean_logits(x, y, n); }

int32_t sl_host_argmax(const float *x, int n) { return sl_k_argmax(x, n); }
