/*
 * host_vec.h — vector passes over host arrays for the layers above runtime/ (the sampler's passes over the
 * vocabulary), which may not include kernels/ (DESIGN.md §2): each forwards to the CPU kernel of the same
 * name in kernels/cpu/kcpu.h, whose comments give the exact semantics (every SIMD level gives the same bits).
 */
#ifndef SL_HOST_VEC_H
#define SL_HOST_VEC_H

#include <stdint.h>

/* Elements per chunk sum of sl_host_sample_weights. */
#define SL_HOST_SAMPLE_CHUNK 256

/* e[i] = exp((x[i] - m) * inv_t), 0 below floor_e; chunk[k] = float sum of chunk k; returns the total. */
double sl_host_sample_weights(const float *x, int n, float m, float inv_t, float floor_e, float *e, float *chunk);
/* y[i] = x[i], NaN made -inf and +inf made FLT_MAX (y may alias x). */
void sl_host_clean_logits(const float *x, float *y, int n);
/* Index of the first largest of x[0, n); -1 when none exceeds -inf. */
int32_t sl_host_argmax(const float *x, int n);

#endif
