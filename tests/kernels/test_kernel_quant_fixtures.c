/*
 * test_kernel_quant_fixtures.c — our quantizers against llama.cpp's reference rounding, as implemented by the
 * `gguf` Python package (fixtures written by tests/gen_quant_fixtures.py): sl_k_quantize_row must produce
 * the same bytes, and sl_k_dequantize_row must read the package's bytes back to the same floats, so a GGUF
 * file written by either side means the same numbers to both. Every SIMD variant of the machine is checked.
 */
#include <criterion/criterion.h>

#include "test_kernel_util.h"

enum { ROWS = 4, COLS = 256 }; /* as written by gen_quant_fixtures.py */

static void *read_fixture(const char *name, size_t want) {
    char *path = sl_test_data_path(name);
    size_t len = 0;
    void *buf = sl_test_read_file(path, &len);
    cr_assert_not_null(buf, "missing %s: run tests/gen_quant_fixtures.py", path);
    cr_assert_eq(len, want, "%s: %zu bytes, want %zu", path, len, want);
    free(path);
    return buf;
}

static void check_type(int type, const char *name, int has_deq) {
    char fname[64];
    float *x = read_fixture("quant_input.f32", sizeof(float) * ROWS * COLS);
    const size_t row_bytes = sl_dtype_row_bytes(type, COLS);
    snprintf(fname, sizeof fname, "quant_%s.bin", name);
    uint8_t *want_q = read_fixture(fname, row_bytes * ROWS);
    float *want_deq = NULL;
    if (has_deq) {
        snprintf(fname, sizeof fname, "quant_%s.deq.f32", name);
        want_deq = read_fixture(fname, sizeof(float) * ROWS * COLS);
    }
    uint8_t got_q[COLS * 4];
    float got_deq[COLS];
    kt_variant vs[8];
    int nv = kt_variants(vs);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        for (int r = 0; r < ROWS; r++) {
            sl_k_quantize_row(type, x + r * COLS, got_q, COLS);
            const uint8_t *want = want_q + r * row_bytes;
            for (size_t i = 0; i < row_bytes; i++)
                cr_assert_eq(got_q[i], want[i], "%s [%s] row %d byte %zu: %02x, gguf wrote %02x", name, vs[k].name, r,
                             i, got_q[i], want[i]);
            if (!want_deq) continue;
            sl_k_dequantize_row(type, want, got_deq, COLS);
            for (int i = 0; i < COLS; i++) {
                const float w = want_deq[r * COLS + i];
                cr_assert(sl__f32_bits(got_deq[i]) == sl__f32_bits(w), "%s [%s] row %d element %d: %a, gguf read %a",
                          name, vs[k].name, r, i, got_deq[i], w);
            }
        }
    }
    kt_restore();
    free(x);
    free(want_q);
    free(want_deq);
}

Test(kernel_quant_fixtures, q4_0) { check_type(SL_DTYPE_Q4_0, "q4_0", 1); }
Test(kernel_quant_fixtures, q4_1) { check_type(SL_DTYPE_Q4_1, "q4_1", 1); }
Test(kernel_quant_fixtures, q8_0) { check_type(SL_DTYPE_Q8_0, "q8_0", 1); }
Test(kernel_quant_fixtures, q8_1) { check_type(SL_DTYPE_Q8_1, "q8_1", 0); }
Test(kernel_quant_fixtures, f16) { check_type(SL_DTYPE_F16, "f16", 1); }
Test(kernel_quant_fixtures, bf16) { check_type(SL_DTYPE_BF16, "bf16", 1); }
