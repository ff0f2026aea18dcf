/* sampler.c — placeholder, being written. */
typedef int sl__placeholder_sampler;
