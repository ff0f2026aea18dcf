/* testutil.c — helpers shared by the C tests (see testutil.h). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *sl_test_data_path(const char *name) {
    size_t n = strlen(SL_TEST_DATA_DIR) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", SL_TEST_DATA_DIR, name);
    return p;
}

char *sl_test_default_model_path(void) {
    const char *env = getenv("SLUICE_MODEL");
    if (env && *env) return strdup(env);
    char base[4096];
    const char *cache = getenv("SLUICE_CACHE_DIR");
    if (cache && *cache) {
        snprintf(base, sizeof base, "%s", cache);
    } else if ((cache = getenv("XDG_CACHE_HOME")) && *cache) {
        snprintf(base, sizeof base, "%s/sluice", cache);
    } else {
        const char *home = getenv("HOME");
        snprintf(base, sizeof base, "%s/.cache/sluice", home ? home : "/tmp");
    }
    size_t n = strlen(base) + 64;
    char *p = malloc(n);
    snprintf(p, n, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", base);
    return p;
}

char *sl_test_read_file(const char *path, size_t *len_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    if (len_out) *len_out = (size_t)n;
    return buf;
}

uint64_t sl_test_rand_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float sl_test_rand_f32(uint64_t *s, float lo, float hi) {
    return lo + (hi - lo) * (float)((sl_test_rand_u64(s) >> 40) * (1.0 / 16777216.0));
}
