/*
 * test_backend_cpu_memory.c — the CPU backend's host memory: large buffers are 2 MiB-aligned mappings whose
 * slack is given back (sizes that are not whole pages included), so allocating and freeing leaves the address
 * space as it was; packed weights come from huge-page arenas and read back as the file's rows.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "kcpu.h"
#include "kdtype.h"

/* Bytes of this process's mappings, from /proc/self/maps. */
static uint64_t mapped_bytes(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert(f);
    char line[512];
    uint64_t total = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long a, b;
        if (sscanf(line, "%llx-%llx", &a, &b) == 2) total += b - a;
    }
    fclose(f);
    return total;
}

static sl_backend make_cpu(void) {
    sl_backend_cpu_params cp = {.n_threads = 1, .precision = SL_PRECISION_FAST, .max_ctx = 16};
    sl_backend b;
    cr_assert_eq(sl_backend_cpu_create(&cp, &b), SL_OK);
    return b;
}

Test(backend_cpu_memory, large_buffers_are_aligned_and_give_everything_back) {
    sl_backend b = make_cpu();
    void *warm;
    cr_assert_eq(sl_backend_alloc(&b, (2u << 20) + 1, &warm), SL_OK); /* any first-use mappings happen here */
    sl_backend_buf_free(&b, warm, (2u << 20) + 1);
    const uint64_t before = mapped_bytes();
    for (int i = 0; i < 64; i++) {
        const size_t n = (1u << 20) + 12345 + (size_t)i * 777; /* over the mapping threshold, not whole pages */
        void *p;
        cr_assert_eq(sl_backend_alloc(&b, n, &p), SL_OK);
        cr_assert_eq((uintptr_t)p % (2u << 20), 0, "a large buffer starts on a 2 MiB boundary");
        memset(p, 1, n); /* all of it is usable */
        sl_backend_buf_free(&b, p, n);
    }
    const uint64_t after = mapped_bytes();
    /* each leaked tail would be up to 2 MiB: 64 of them would show */
    cr_assert(after <= before + (1u << 20), "mappings grew from %llu to %llu bytes", (unsigned long long)before,
              (unsigned long long)after);
    sl_backend_free(&b);
}

Test(backend_cpu_memory, packed_weights_come_from_arenas_and_read_back) {
    sl_backend b = make_cpu();
    const int n_in = 64, n_out = 40;
    const size_t row = sl_dtype_row_bytes(SL_DTYPE_Q8_0, n_in);
    uint8_t *file = calloc((size_t)n_out, row);
    for (int o = 0; o < n_out; o++) { /* Q8_0 rows: an f16 scale of 1.0 per block, then levels o - b */
        for (int blk = 0; blk < n_in / 32; blk++) {
            uint8_t *bp = file + (size_t)o * row + (size_t)blk * 34;
            bp[0] = 0x00, bp[1] = 0x3c; /* 1.0 in f16, little-endian */
            for (int i = 0; i < 32; i++) bp[2 + i] = (uint8_t)(int8_t)(o - i);
        }
    }
    sl_weight host = {.data = file, .type = SL_DTYPE_Q8_0, .n_in = n_in, .n_out = n_out, .row_bytes = row}, dev[3];
    for (int k = 0; k < 3; k++) cr_assert_eq(sl_backend_upload_weight(&b, &host, &dev[k]), SL_OK);
    for (int k = 0; k < 3; k++) {
        cr_assert(dev[k].packed && dev[k].data != file);
        cr_assert_eq((uintptr_t)dev[k].data % 64, 0, "weights are carved 64-byte aligned");
    }
    cr_assert_neq(dev[0].data, dev[1].data);
    int32_t ids[3] = {0, 17, 39};
    float out[3 * 64];
    cr_assert_eq(sl_backend_get_rows(&b, &dev[2], ids, 3, out), SL_OK);
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < n_in; i++)
            cr_assert_eq(out[r * n_in + i], (float)(int8_t)(ids[r] - (i % 32)), "row %d element %d", ids[r], i);
    for (int k = 0; k < 3; k++) sl_backend_weight_free(&b, &dev[k]);
    sl_backend_free(&b);
    free(file);
}

/* A weight larger than an arena gets its own mapping, and the arena in use goes on serving the next small
 * weights: they land right after the small weight before the large one. */
Test(backend_cpu_memory, a_large_weight_does_not_abandon_the_current_arena) {
    sl_backend b = make_cpu();
    const int n_in = 64, small_out = 16, large_out = (40 << 20) / 68 / 16 * 16; /* 40 MiB of Q8_0 rows */
    const size_t row = sl_dtype_row_bytes(SL_DTYPE_Q8_0, n_in);
    uint8_t *file = calloc((size_t)large_out, row);
    for (int o = 0; o < large_out; o++)
        for (int blk = 0; blk < 2; blk++) file[(size_t)o * row + (size_t)blk * 34 + 1] = 0x3c; /* d = 1.0 */
    sl_weight small = {.data = file, .type = SL_DTYPE_Q8_0, .n_in = n_in, .n_out = small_out, .row_bytes = row};
    sl_weight large = small;
    large.n_out = large_out;
    sl_weight d1, d2, d3;
    cr_assert_eq(sl_backend_upload_weight(&b, &small, &d1), SL_OK);
    cr_assert_eq(sl_backend_upload_weight(&b, &large, &d2), SL_OK);
    cr_assert_eq(sl_backend_upload_weight(&b, &small, &d3), SL_OK);
    const size_t small_bytes = (sl_k_packed_bytes(SL_DTYPE_Q8_0, small_out, n_in) + 63) & ~(size_t)63;
    cr_assert_eq((const uint8_t *)d3.data, (const uint8_t *)d1.data + small_bytes,
                 "the next small weight follows the first in the same arena");
    cr_assert((const uint8_t *)d2.data < (const uint8_t *)d1.data ||
              (const uint8_t *)d2.data >= (const uint8_t *)d1.data + (32u << 20), "the large one is elsewhere");
    sl_backend_weight_free(&b, &d1), sl_backend_weight_free(&b, &d2), sl_backend_weight_free(&b, &d3);
    sl_backend_free(&b);
    free(file);
}
