/*
 * test_kernel_util.h — what the kernel tests share: the list of SIMD variants this machine can run, random
 * inputs, and error measures. Header-only (static functions), included by each tests/kernels/test_kernel_*.c.
 *
 * Variants: every level up to the CPU's (scalar, AVX2, AVX-512), each with VNNI forbidden and, where the CPU
 * has it, allowed, so the pmaddubsw and vpdpbusd integer paths are both exercised on a VNNI machine. The
 * kernels promise bit-identical results across variants (kernels/cpu/kcpu_impl.h), so tests compare variants
 * with memcmp, and compare the scalar reference with float64 computations under stated bounds.
 */
#ifndef SL_TEST_KERNEL_UTIL_H
#define SL_TEST_KERNEL_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcpu.h"
#include "kcpu_impl.h"
#include "testutil.h"

#define KT_UNUSED __attribute__((unused))

typedef struct kt_variant {
    sl_simd_level level;
    int vnni;
    char name[32];
} kt_variant;

/* Fills out[] with the variants this CPU runs; returns the count (>= 1: scalar always exists). */
KT_UNUSED static int kt_variants(kt_variant out[8]) {
    int n = 0;
    sl_kcpu_init();
    for (int l = SL_SIMD_SCALAR; l <= SL_SIMD_AVX512; l++) {
        if (sl_kcpu_set_simd((sl_simd_level)l) != (sl_simd_level)l) continue;
        for (int v = 0; v <= (l == SL_SIMD_SCALAR ? 0 : 1); v++) {
            sl__kcpu_allow_vnni(v);
            if (v && !sl__kcpu_use_vnni512() && !sl__kcpu_use_avxvnni()) continue;
            out[n].level = (sl_simd_level)l;
            out[n].vnni = v;
            snprintf(out[n].name, sizeof out[n].name, "%s", sl_kcpu_simd_name());
            n++;
        }
    }
    sl__kcpu_allow_vnni(1);
    sl_kcpu_set_simd(SL_SIMD_AVX512);
    return n;
}

KT_UNUSED static void kt_use(const kt_variant *v) {
    sl_kcpu_set_simd(v->level);
    sl__kcpu_allow_vnni(v->vnni);
}

KT_UNUSED static void kt_restore(void) {
    sl__kcpu_allow_vnni(1);
    sl_kcpu_set_simd(SL_SIMD_AVX512);
}

KT_UNUSED static void kt_fill(float *x, size_t n, uint64_t *rng, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = sl_test_rand_f32(rng, lo, hi);
}

/* ||a - ref|| / ||ref|| in double. */
KT_UNUSED static double kt_norm_err(const float *a, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* gamma_m = m u / (1 - m u), u = 2^-24: the classic bound on the relative error of m chained float ops
 * (Higham, Accuracy and Stability of Numerical Algorithms, 3.1). */
KT_UNUSED static double kt_gamma(int m) {
    const double u = ldexp(1.0, -24);
    return m * u / (1 - m * u);
}

#endif /* SL_TEST_KERNEL_UTIL_H */
