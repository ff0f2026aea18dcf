/*
 * test_kernel_convert.c — element types: the dtype table, fp16/bf16 conversions (known bit patterns, every
 * fp16 value, round-to-nearest-even on random floats), and quantize -> dequantize round trips with per-type
 * error bounds, on every SIMD variant of the machine.
 */
#include <criterion/criterion.h>
#include <float.h>

#include "test_kernel_util.h"

Test(kernel_convert, dtype_table) {
    cr_assert_str_eq(sl_dtype_name(SL_DTYPE_Q4_1), "q4_1");
    cr_assert_str_eq(sl_dtype_name(SL_DTYPE_BF16), "bf16");
    cr_assert_null(sl_dtype_name(5)); /* Q4_3, removed from GGML: not a type we read */
    cr_assert_null(sl_dtype_name(-1));
    cr_assert_null(sl_dtype_name(1000));
    cr_assert_eq(sl_dtype_block_elems(SL_DTYPE_Q8_0), 32);
    cr_assert_eq(sl_dtype_block_elems(SL_DTYPE_F16), 1);
    cr_assert_eq(sl_dtype_block_bytes(SL_DTYPE_Q4_0), 18);
    cr_assert_eq(sl_dtype_block_bytes(SL_DTYPE_Q4_1), 20);
    cr_assert_eq(sl_dtype_block_bytes(SL_DTYPE_Q8_0), 34);
    cr_assert_eq(sl_dtype_block_bytes(SL_DTYPE_Q8_1), 36);
    cr_assert_eq(sl_dtype_row_bytes(SL_DTYPE_Q4_1, 576), 360); /* the default model's rows */
    cr_assert_eq(sl_dtype_row_bytes(SL_DTYPE_Q4_1, 577), 0);
    cr_assert_eq(sl_dtype_row_bytes(SL_DTYPE_F32, 7), 28);
    cr_assert_eq(sl_dtype_row_bytes(SL_DTYPE_BF16, 3), 6);
    cr_assert_eq(sl_dtype_row_bytes(SL_DTYPE_F32, -32), 0);
    cr_assert_eq(sl_dtype_row_bytes(SL_DTYPE_F32, (int64_t)1 << 62), 0); /* 2^64 bytes overflow size_t */
    cr_assert_eq(sl_dtype_row_bytes(77, 32), 0);
    cr_assert(sl_dtype_supported(SL_DTYPE_Q4_0) && sl_dtype_supported(SL_DTYPE_BF16));
    cr_assert(!sl_dtype_supported(SL_DTYPE_Q8_1) && !sl_dtype_supported(SL_DTYPE_Q8_K) && !sl_dtype_supported(16));
    cr_assert_eq(sl_k_act_type(SL_DTYPE_Q4_1), SL_DTYPE_Q8_1);
    cr_assert_eq(sl_k_act_type(SL_DTYPE_Q4_0), SL_DTYPE_Q8_0S);
    cr_assert_eq(sl_k_act_type(SL_DTYPE_Q8_0), SL_DTYPE_Q8_0S);
    cr_assert_eq(sl_k_act_type(SL_DTYPE_Q5_0), SL_DTYPE_Q8_0);
    cr_assert_eq(sl_dtype_block_bytes(SL_DTYPE_Q8_0S), 36);
    cr_assert(!sl_dtype_supported(SL_DTYPE_Q8_0S), "an activation format only");
    cr_assert_eq(sl_k_act_type(SL_DTYPE_F16), -1);
}

static float f_bits(uint32_t u) { return sl__f32_from_bits(u); }

Test(kernel_convert, fp16_known_values) {
    static const struct {
        uint32_t f; /* float bits */
        uint16_t h;
    } to_half[] = {
        {0x00000000, 0x0000}, {0x80000000, 0x8000}, {0x3f800000, 0x3c00}, {0xc0000000, 0xc000},
        {0x3f000000, 0x3800}, {0x477fe000, 0x7bff}, /* 65504, the largest half */
        {0x477fefff, 0x7bff},                       /* just under the rounding edge */
        {0x477ff000, 0x7c00},                       /* 65520: a tie, rounds to even = overflow = inf */
        {0x501502f9, 0x7c00},                       /* 1e10 */
        {0x7f800000, 0x7c00}, {0xff800000, 0xfc00}, /* +-inf */
        {0x38800000, 0x0400},                       /* 2^-14, smallest normal half */
        {0x33800000, 0x0001},                       /* 2^-24, smallest subnormal */
        {0x33000000, 0x0000},                       /* 2^-25: tie between 0 and 2^-24, to even 0 */
        {0x33000001, 0x0001},                       /* just above the tie */
        {0x33c00000, 0x0002},                       /* 1.5 * 2^-24: tie, to even 2 */
        {0x34200000, 0x0002},                       /* 2.5 * 2^-24: tie, to even 2 */
        {0x387fc000, 0x03ff},                       /* 1023 * 2^-24, largest subnormal */
        {0x387fe000, 0x0400},                       /* 1023.5 * 2^-24 rounds up into the normals */
        {0x3f801000, 0x3c00},                       /* 1 + 2^-11: tie, to even */
        {0x3f803000, 0x3c02},                       /* 1 + 3 * 2^-11: tie, to even (up) */
        {0x3f801001, 0x3c01},                       /* just above a tie */
        {0x00000001, 0x0000},                       /* float subnormal */
        {0x7fc00000, 0x7e00}, {0x7f800001, 0x7e00}, /* NaNs: made quiet, payload truncated (F16C's rule) */
        {0xff812345, 0xfe09},
    };
    for (size_t i = 0; i < sizeof to_half / sizeof to_half[0]; i++)
        cr_expect_eq(sl_f32_to_fp16(f_bits(to_half[i].f)), to_half[i].h, "f32 %08x -> %04x, want %04x", to_half[i].f,
                     sl_f32_to_fp16(f_bits(to_half[i].f)), to_half[i].h);

    static const struct {
        uint16_t h;
        uint32_t f;
    } to_float[] = {
        {0x0001, 0x33800000}, {0x03ff, 0x387fc000}, {0x0400, 0x38800000}, {0x3c00, 0x3f800000},
        {0x3555, 0x3eaaa000}, {0x7bff, 0x477fe000}, {0x8000, 0x80000000}, {0x7c00, 0x7f800000},
        {0xfc00, 0xff800000}, {0x7e00, 0x7fc00000}, {0x7c01, 0x7fc02000}, {0x8001, 0xb3800000},
    };
    for (size_t i = 0; i < sizeof to_float / sizeof to_float[0]; i++)
        cr_expect_eq(sl__f32_bits(sl_fp16_to_f32(to_float[i].h)), to_float[i].f, "f16 %04x -> %08x, want %08x",
                     to_float[i].h, sl__f32_bits(sl_fp16_to_f32(to_float[i].h)), to_float[i].f);
}

Test(kernel_convert, bf16_known_values) {
    static const struct {
        uint32_t f;
        uint16_t b;
    } to_bf16[] = {
        {0x3f800000, 0x3f80}, {0x80000000, 0x8000}, {0x3f808000, 0x3f80}, /* tie, to even */
        {0x3f818000, 0x3f82},                                             /* tie, to even (up) */
        {0x3f808001, 0x3f81}, {0x7f7fffff, 0x7f80},                       /* FLT_MAX rounds to inf */
        {0x000116c2, 0x0001},                                             /* subnormals round, not flush */
        {0xff800000, 0xff80}, {0x7fc00000, 0x7fc0}, {0x7f800001, 0x7fc0}, /* sNaN made quiet */
        {0xffa12345, 0xffe1},
    };
    for (size_t i = 0; i < sizeof to_bf16 / sizeof to_bf16[0]; i++)
        cr_expect_eq(sl_f32_to_bf16(f_bits(to_bf16[i].f)), to_bf16[i].b, "f32 %08x -> %04x, want %04x", to_bf16[i].f,
                     sl_f32_to_bf16(f_bits(to_bf16[i].f)), to_bf16[i].b);
    cr_expect_eq(sl__f32_bits(sl_bf16_to_f32(0x3f80)), 0x3f800000);
    cr_expect_eq(sl__f32_bits(sl_bf16_to_f32(0x8001)), 0x80010000);
}

/* Every half value: the scalar conversion equals the value's definition, and every variant's row
 * conversion (F16C on AVX2) equals the scalar one bit for bit. */
Test(kernel_convert, fp16_to_f32_every_value) {
    static sl_fp16_t h[65536];
    static float ref[65536], got[65536];
    for (int i = 0; i < 65536; i++) {
        h[i] = (sl_fp16_t)i;
        ref[i] = sl_fp16_to_f32(h[i]);
        int e = (i >> 10) & 0x1f, m = i & 0x3ff;
        double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
        if (i & 0x8000) v = -v;
        if (e == 31 && m)
            cr_assert(isnan(ref[i]));
        else
            cr_assert_eq((double)ref[i], v, "half %04x", i);
    }
    kt_variant vs[8];
    int nv = kt_variants(vs);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        sl_k_dequantize_row(SL_DTYPE_F16, h, got, 65536);
        cr_assert(!memcmp(got, ref, sizeof ref), "variant %s differs from the scalar conversion", vs[k].name);
    }
    kt_restore();
}

/* Random float bit patterns (NaNs, infinities, subnormals included): the scalar conversion is the nearest
 * half with ties to even (checked against its neighbours in double), and every variant agrees. */
Test(kernel_convert, f32_to_fp16_rounding) {
    enum { N = 1 << 18 };
    static float x[N];
    static sl_fp16_t ref[N], got[N];
    uint64_t rng = 7;
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)sl_test_rand_u64(&rng);
        /* a quarter with exponents around the half range (2^-32 .. 2^18), a quarter at its subnormal edge */
        if (i % 4 == 1) u = (u & 0x807fffff) | ((uint32_t)(95 + (u >> 8) % 51) << 23);
        if (i % 4 == 2) u = (u & 0x807fffff) | ((uint32_t)(100 + (u >> 8) % 14) << 23);
        x[i] = f_bits(u);
        ref[i] = sl_f32_to_fp16(x[i]);
    }
    for (int i = 0; i < N; i++) {
        if (isnan(x[i])) {
            cr_assert(isnan(sl_fp16_to_f32(ref[i])));
            continue;
        }
        double v = x[i], r = sl_fp16_to_f32(ref[i]);
        if (isinf(r)) {
            cr_assert(fabs(v) >= 65520.0, "%a became inf", v);
            continue;
        }
        /* neighbours of the result in the half grid */
        uint16_t mag = ref[i] & 0x7fff;
        double up = mag < 0x7bff ? sl_fp16_to_f32((sl_fp16_t)(mag + 1)) : 65536.0;
        double down = mag > 0 ? sl_fp16_to_f32((sl_fp16_t)(mag - 1)) : -(double)sl_fp16_to_f32(1);
        double a = fabs(v), ar = fabs(r);
        double err = fabs(a - ar);
        cr_assert(err <= fabs(a - up) && err <= fabs(a - down), "%a -> %a is not nearest", v, r);
        if (err == fabs(a - up) || err == fabs(a - down)) cr_assert((mag & 1) == 0, "%a: tie not to even", v);
        cr_assert(signbit(v) == signbit(r));
    }
    kt_variant vs[8];
    int nv = kt_variants(vs);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        sl_k_quantize_row(SL_DTYPE_F16, x, got, N);
        cr_assert(!memcmp(got, ref, sizeof ref), "variant %s differs from the scalar conversion", vs[k].name);
    }
    kt_restore();
}

/*
 * Round trips on random rows (uniform in [-1, 1], plus one shifted block for the offset of Q4_1), every
 * variant giving the same bytes and floats as the scalar code. Bounds per element, from the formats:
 *   F16:  |e| <= 2^-11 |x| + 2^-25 (half an ulp of an 11-bit significand, or of the subnormal spacing)
 *   BF16: |e| <= 2^-8 |x|
 *   Q8_0, Q8_1: |e| <= d / 2 + 127 |d - fp16(d)|, d = amax / 127: rounding to the grid, plus the scale's own
 *         rounding to fp16 times the largest level
 *   Q4_1: |e| <= d / 2 + 15 |d - fp16(d)| + |m - fp16(m)|, d = (max - min) / 15
 *   Q4_0: |e| <= |d| + 8 |d - fp16(d)|, d = amax / 8: the level opposite the largest magnitude is clipped to 7,
 *         so values there can be a whole step off, not half
 * and a normalized error ||e|| / ||x|| for a user-facing sense of each format: F16 1e-3, BF16 5e-3, Q8 1e-2,
 * Q4 0.1 (for uniform data the expected values are 2e-4, 2e-3, 4e-3 and 7e-2).
 */
static void round_trip(int type, double norm_bound) {
    enum { N = 32 * 70 };
    static float x[N], ref_deq[N], got_deq[N];
    static uint8_t ref_q[N * 4], got_q[N * 4];
    uint64_t rng = 99 + (uint64_t)type;
    kt_fill(x, N, &rng, -1.0f, 1.0f);
    for (int i = 64; i < 96; i++) x[i] += 3.0f;
    const size_t bytes = sl_dtype_row_bytes(type, N);
    sl_kcpu_set_simd(SL_SIMD_SCALAR);
    sl_k_quantize_row(type, x, ref_q, N);
    sl_k_dequantize_row(type, ref_q, ref_deq, N);
    kt_restore();

    double num = 0, den = 0;
    for (int b = 0; b < N / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0, mn = FLT_MAX, mx = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            amax = fmaxf(amax, fabsf(xb[j]));
            mn = fminf(mn, xb[j]);
            mx = fmaxf(mx, xb[j]);
        }
        for (int j = 0; j < 32; j++) {
            const double e = fabs((double)ref_deq[32 * b + j] - xb[j]);
            double bound;
            double d, dq;
            switch (type) {
            case SL_DTYPE_F16: bound = ldexp(fabs(xb[j]), -11) + ldexp(1, -25); break; /* + half a subnormal */
            case SL_DTYPE_BF16: bound = ldexp(fabs(xb[j]), -8); break;
            case SL_DTYPE_Q8_0:
            case SL_DTYPE_Q8_1:
                d = amax / 127.0f, dq = sl_fp16_to_f32(sl_f32_to_fp16((float)d));
                bound = d / 2 + 127 * fabs(d - dq) + 1e-7;
                break;
            case SL_DTYPE_Q4_1:
                d = (mx - mn) / 15.0f, dq = sl_fp16_to_f32(sl_f32_to_fp16((float)d));
                bound = d / 2 + 15 * fabs(d - dq) + fabs(mn - sl_fp16_to_f32(sl_f32_to_fp16(mn))) + 1e-6;
                break;
            default:
                d = amax / 8.0f, dq = sl_fp16_to_f32(sl_f32_to_fp16((float)d));
                bound = d + 8 * fabs(d - dq) + 1e-7;
                break;
            }
            cr_assert(e <= bound, "%s element %d: error %g > bound %g", sl_dtype_name(type), 32 * b + j, e, bound);
            num += e * e;
            den += (double)xb[j] * xb[j];
        }
    }
    cr_assert(sqrt(num / den) <= norm_bound, "%s: normalized error %g > %g", sl_dtype_name(type), sqrt(num / den),
              norm_bound);

    kt_variant vs[8];
    int nv = kt_variants(vs);
    for (int k = 0; k < nv; k++) {
        kt_use(&vs[k]);
        memset(got_q, 0xAA, sizeof got_q);
        sl_k_quantize_row(type, x, got_q, N);
        cr_assert(!memcmp(got_q, ref_q, bytes), "%s quantize: variant %s differs", sl_dtype_name(type), vs[k].name);
        sl_k_dequantize_row(type, ref_q, got_deq, N);
        cr_assert(!memcmp(got_deq, ref_deq, sizeof got_deq), "%s dequantize: variant %s differs", sl_dtype_name(type),
                  vs[k].name);
    }
    kt_restore();
}

Test(kernel_convert, round_trip_f16) { round_trip(SL_DTYPE_F16, 1e-3); }
Test(kernel_convert, round_trip_bf16) { round_trip(SL_DTYPE_BF16, 5e-3); }
Test(kernel_convert, round_trip_q8_0) { round_trip(SL_DTYPE_Q8_0, 1e-2); }
Test(kernel_convert, round_trip_q8_1) { round_trip(SL_DTYPE_Q8_1, 1e-2); }
Test(kernel_convert, round_trip_q4_1) { round_trip(SL_DTYPE_Q4_1, 0.1); }
Test(kernel_convert, round_trip_q4_0) { round_trip(SL_DTYPE_Q4_0, 0.1); }

/* Q8_1's s is d * sum(q) in fp16: what lets Q4_1 products skip a pass over the activations. */
Test(kernel_convert, q8_1_block_sum) {
    float x[64];
    uint64_t rng = 5;
    kt_fill(x, 64, &rng, -3.0f, 2.0f);
    sl_block_q8_1 q[2];
    sl_k_quantize_row(SL_DTYPE_Q8_1, x, q, 64);
    for (int b = 0; b < 2; b++) {
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += q[b].qs[j];
        cr_assert_eq(q[b].s, sl_f32_to_fp16((float)sum * sl_fp16_to_f32(q[b].d)));
    }
}

/* Dequantizing a range of a row gives the same floats as the whole row (the f32 matmul's tiles use it). */
Test(kernel_convert, dequantize_range) {
    enum { N = 32 * 9 };
    float x[N], whole[N], part[N];
    uint8_t q[N * 4];
    uint64_t rng = 11;
    kt_fill(x, N, &rng, -2.0f, 2.0f);
    const int types[] = {SL_DTYPE_F32, SL_DTYPE_F16, SL_DTYPE_BF16, SL_DTYPE_Q4_0, SL_DTYPE_Q4_1, SL_DTYPE_Q8_0};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        sl_k_quantize_row(types[t], x, q, N);
        sl_k_dequantize_row(types[t], q, whole, N);
        sl__dequantize_range(types[t], q, 64, 160, part);
        cr_assert(!memcmp(part, whole + 64, 96 * sizeof(float)), "%s", sl_dtype_name(types[t]));
    }
}
