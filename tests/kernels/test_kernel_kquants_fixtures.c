/*
 * test_kernel_kquants_fixtures.c — the types added with the K-quants (Q5_0, Q5_1, IQ4_NL, Q2_K .. Q6_K)
 * against llama.cpp's reference code as the `gguf` Python package implements it (fixtures written by
 * tests/gen_kquant_fixtures.py): random blocks of every type dequantize to the package's floats bit for bit,
 * and for the types the package can quantize (Q5_0, Q5_1) our quantizer writes its bytes. Every SIMD variant
 * of the machine is checked. Also here: the dtype table's new rows, and the quantizers' round-trip error on
 * Gaussian rows, which catches a quantizer that writes well-formed but poor blocks.
 */
#include <criterion/criterion.h>

#include "test_kernel_util.h"

enum { N_BLOCKS = 32 }; /* as written by gen_kquant_fixtures.py */

static void *read_fixture(const char *name, size_t want) {
    char *path = sl_test_data_path(name);
    size_t len = 0;
    void *buf = sl_test_read_file(path, &len);
    cr_assert_not_null(buf, "missing %s: run tests/gen_kquant_fixtures.py", path);
    cr_assert_eq(len, want, "%s: %zu bytes, want %zu", path, len, want);
    free(path);
    return buf;
}

Test(kernel_kquants_fixtures, dtype_table) {
    static const struct { int type; const char *name; int elems; size_t bytes; int act; } t[] = {
        {SL_DTYPE_Q5_0, "q5_0", 32, 22, SL_DTYPE_Q8_0},   {SL_DTYPE_Q5_1, "q5_1", 32, 24, SL_DTYPE_Q8_1},
        {SL_DTYPE_IQ4_NL, "iq4_nl", 32, 18, SL_DTYPE_Q8_0}, {SL_DTYPE_Q2_K, "q2_K", 256, 84, SL_DTYPE_Q8_K},
        {SL_DTYPE_Q3_K, "q3_K", 256, 110, SL_DTYPE_Q8_K}, {SL_DTYPE_Q4_K, "q4_K", 256, 144, SL_DTYPE_Q8_K},
        {SL_DTYPE_Q5_K, "q5_K", 256, 176, SL_DTYPE_Q8_K}, {SL_DTYPE_Q6_K, "q6_K", 256, 210, SL_DTYPE_Q8_K},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        cr_assert_str_eq(sl_dtype_name(t[i].type), t[i].name);
        cr_assert_eq(sl_dtype_block_elems(t[i].type), t[i].elems, "%s", t[i].name);
        cr_assert_eq(sl_dtype_block_bytes(t[i].type), t[i].bytes, "%s", t[i].name);
        cr_assert(sl_dtype_supported(t[i].type), "%s", t[i].name);
        cr_assert_eq(sl_k_act_type(t[i].type), t[i].act, "%s", t[i].name);
    }
    cr_assert_eq(sl_dtype_row_bytes(SL_DTYPE_Q4_K, 576), 0); /* not whole super-blocks */
    cr_assert_eq(sl_dtype_row_bytes(SL_DTYPE_Q6_K, 1536), 6 * 210);
    cr_assert_str_eq(sl_dtype_name(SL_DTYPE_Q8_K), "q8_K");
    cr_assert(!sl_dtype_supported(SL_DTYPE_Q8_K)); /* activations only */
    cr_assert_null(sl_dtype_name(16));             /* IQ2_XXS: still not a type we read */
}

/* Random blocks of `name` read back to gguf's floats on every variant. */
static void check_dequant(int type, const char *name) {
    char fname[64];
    const size_t bb = sl_dtype_block_bytes(type);
    const int be = sl_dtype_block_elems(type), n = N_BLOCKS * be;
    snprintf(fname, sizeof fname, "kquant_%s.bin", name);
    uint8_t *q = read_fixture(fname, bb * N_BLOCKS);
    snprintf(fname, sizeof fname, "kquant_%s.deq.f32", name);
    float *want = read_fixture(fname, sizeof(float) * (size_t)n);
    float *got = malloc(sizeof(float) * (size_t)n);
    kt_variant vs[8];
    int nv = kt_variants(vs);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        sl_k_dequantize_row(type, q, got, n);
        for (int i = 0; i < n; i++)
            cr_assert(sl__f32_bits(got[i]) == sl__f32_bits(want[i]), "%s [%s] element %d: %a, gguf read %a", name,
                      vs[k].name, i, got[i], want[i]);
        /* and a middle range alone, as the exact-mode product dequantizes chunks */
        sl__dequantize_range(type, q, 2 * be, 5 * be, got);
        cr_assert(memcmp(got, want + 2 * be, sizeof(float) * 3 * (size_t)be) == 0, "%s [%s] range", name,
                  vs[k].name);
    }
    kt_restore();
    free(q);
    free(want);
    free(got);
}

Test(kernel_kquants_fixtures, dequant_q2_K) { check_dequant(SL_DTYPE_Q2_K, "q2_K"); }
Test(kernel_kquants_fixtures, dequant_q3_K) { check_dequant(SL_DTYPE_Q3_K, "q3_K"); }
Test(kernel_kquants_fixtures, dequant_q4_K) { check_dequant(SL_DTYPE_Q4_K, "q4_K"); }
Test(kernel_kquants_fixtures, dequant_q5_K) { check_dequant(SL_DTYPE_Q5_K, "q5_K"); }
Test(kernel_kquants_fixtures, dequant_q6_K) { check_dequant(SL_DTYPE_Q6_K, "q6_K"); }
Test(kernel_kquants_fixtures, dequant_iq4_nl) { check_dequant(SL_DTYPE_IQ4_NL, "iq4_nl"); }
Test(kernel_kquants_fixtures, dequant_q5_0) { check_dequant(SL_DTYPE_Q5_0, "q5_0"); }
Test(kernel_kquants_fixtures, dequant_q5_1) { check_dequant(SL_DTYPE_Q5_1, "q5_1"); }

/* Our quantizer writes gguf's bytes for the rows of quant_input.f32, and they read back to gguf's floats. */
static void check_quant(int type, const char *name) {
    enum { ROWS = 4, COLS = 256 };
    char fname[64];
    float *x = read_fixture("quant_input.f32", sizeof(float) * ROWS * COLS);
    const size_t rb = sl_dtype_row_bytes(type, COLS);
    snprintf(fname, sizeof fname, "kquant_%s.q.bin", name);
    uint8_t *want_q = read_fixture(fname, rb * ROWS);
    snprintf(fname, sizeof fname, "kquant_%s.q.deq.f32", name);
    float *want_deq = read_fixture(fname, sizeof(float) * ROWS * COLS);
    uint8_t got_q[COLS];
    float got_deq[COLS];
    kt_variant vs[8];
    int nv = kt_variants(vs);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        for (int r = 0; r < ROWS; r++) {
            sl_k_quantize_row(type, x + r * COLS, got_q, COLS);
            for (size_t i = 0; i < rb; i++)
                cr_assert_eq(got_q[i], want_q[r * rb + i], "%s [%s] row %d byte %zu: %02x, gguf wrote %02x", name,
                             vs[k].name, r, i, got_q[i], want_q[r * rb + i]);
            sl_k_dequantize_row(type, got_q, got_deq, COLS);
            cr_assert(memcmp(got_deq, want_deq + r * COLS, sizeof got_deq) == 0, "%s [%s] row %d read back", name,
                      vs[k].name, r);
        }
    }
    kt_restore();
    free(x);
    free(want_q);
    free(want_deq);
}

Test(kernel_kquants_fixtures, quant_q5_0) { check_quant(SL_DTYPE_Q5_0, "q5_0"); }
Test(kernel_kquants_fixtures, quant_q5_1) { check_quant(SL_DTYPE_Q5_1, "q5_1"); }

/* Quantize -> dequantize on Gaussian rows: relative RMS error under each type's bound. The bounds sit at
 * ~1.5x what the quantizers reach on such data (measured: Q2_K 0.32, Q3_K 0.17, Q4_K 0.078, Q5_K 0.039,
 * Q6_K 0.020, Q5_0 0.052, Q5_1 0.041, IQ4_NL 0.086; Q4_0 0.10 for comparison); a wrong packing or scale
 * shows as an error near 1, a quantizer that lost its scale search as a clearly larger one. */
Test(kernel_kquants_fixtures, round_trip_error) {
    static const struct { int type; double bound; } t[] = {
        {SL_DTYPE_Q2_K, 0.48}, {SL_DTYPE_Q3_K, 0.25}, {SL_DTYPE_Q4_K, 0.12}, {SL_DTYPE_Q5_K, 0.06},
        {SL_DTYPE_Q6_K, 0.03}, {SL_DTYPE_Q5_0, 0.078}, {SL_DTYPE_Q5_1, 0.062}, {SL_DTYPE_IQ4_NL, 0.13},
    };
    enum { N = 4096 };
    static float x[N], back[N];
    static uint8_t q[N * 2];
    static double ref[N];
    uint64_t rng = 99;
    for (int i = 0; i < N; i++) { /* Gaussian by Box-Muller, with a few large outliers as real weights have */
        double u1 = (sl_test_rand_u64(&rng) >> 11) * 0x1.0p-53 + 0x1.0p-60, u2 = (sl_test_rand_u64(&rng) >> 11) * 0x1.0p-53;
        x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2) * (i % 97 == 0 ? 4.0 : 1.0));
        ref[i] = x[i];
    }
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        sl_k_quantize_row(t[k].type, x, q, N);
        sl_k_dequantize_row(t[k].type, q, back, N);
        double e = kt_norm_err(back, ref, N);
        cr_assert(e < t[k].bound, "%s: relative RMS error %.4f, bound %.3f", sl_dtype_name(t[k].type), e, t[k].bound);
    }
}

/* Q8_K activations: d * q reads back within half a level, the largest magnitude maps to -127 exactly, and
 * bsums are the sums of 16 levels. A zero block is all zeros. */
Test(kernel_kquants_fixtures, q8_K) {
    enum { N = 512 };
    float x[N], back[N];
    sl_block_q8_K b[2];
    uint64_t rng = 5;
    kt_fill(x, N, &rng, -3.0f, 3.0f);
    x[77] = 5.0f;
    sl_k_quantize_row(SL_DTYPE_Q8_K, x, b, N);
    sl_k_dequantize_row(SL_DTYPE_Q8_K, b, back, N);
    cr_assert_eq(b[0].qs[77], -127);
    cr_assert_float_eq(b[0].d, -5.0f / 127, 1e-9f);
    for (int i = 0; i < N; i++) cr_assert(fabsf(back[i] - x[i]) <= 0.5f * fabsf(b[i / 256].d) * 1.0001f, "element %d", i);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += b[k].qs[16 * j + i];
            cr_assert_eq(b[k].bsums[j], s);
        }
    memset(x, 0, sizeof x);
    memset(b, 0x5a, sizeof b);
    sl_k_quantize_row(SL_DTYPE_Q8_K, x, b, 256);
    cr_assert(b[0].d == 0.0f && b[0].qs[3] == 0 && b[0].bsums[15] == 0);
}
