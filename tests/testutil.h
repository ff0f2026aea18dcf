/*
 * testutil.h — what every C test needs: paths to test data and to the default model, and small helpers.
 */
#ifndef SL_TESTUTIL_H
#define SL_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* tests/data/<name> (static buffer per call site is not needed: returns a malloc'd string). */
char *sl_test_data_path(const char *name);
/* The default model's path: $SLUICE_MODEL if set, else the setup step's cache
 * ($SLUICE_CACHE_DIR or $XDG_CACHE_HOME/sluice or ~/.cache/sluice)/models/SmolLM2-135M-Instruct.Q4_1.gguf.
 * Malloc'd. Tests that need it fail with a message naming the setup step when it is missing. */
char *sl_test_default_model_path(void);
/* Reads a whole file (malloc'd, NUL-terminated); NULL if it cannot. */
char *sl_test_read_file(const char *path, size_t *len_out);
/* Deterministic pseudo-random numbers for tests (splitmix64). */
uint64_t sl_test_rand_u64(uint64_t *state);
float sl_test_rand_f32(uint64_t *state, float lo, float hi);

#endif
