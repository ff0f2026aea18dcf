/*
 * quant_k.c — the types most downloaded GGUF files mix: the K-quants (Q2_K .. Q6_K, their Q8_K activations),
 * the 5-bit legacy quants (Q5_0, Q5_1) and IQ4_NL. Dequantization, quantization, and the unpacking that the
 * products (matmul_k.c) share.
 *
 * Dequantization performs GGML's float operations in GGML's order (dequantize_row_q4_K etc.: d * sc first,
 * then times the level, then minus dmin * m), so a row reads back to the floats llama.cpp and the `gguf`
 * package's numpy code read, bit for bit. Quantization ports GGML's reference quantizers
 * (quantize_row_q4_K_ref, make_qkx2_quants, make_qx_quants, make_q3_quants, nearest_int's magic-number
 * rounding) operation for operation, without fused multiply-adds (SL_EXACT_FP), so the bytes we write are the
 * bytes llama.cpp writes without an importance matrix.
 *
 * Every K-quant super-block unpacks to one shape (sl__k_unpack): 256 unsigned levels u in element order, a
 * signed integer scale and an unsigned min per 16 elements, the level offset K of the type, and d, dmin; an
 * element is then (d * S) * (u - K) - dmin * M. The scalar product reference and the SIMD paths are written
 * on that shape (see matmul_k.c for the recipe).
 */
#include <float.h>
#include <stdbool.h>

#include "kcpu_impl.h"

/* IQ4_NL's 16 non-linear levels (GGML's kvalues_iq4nl). */
const int8_t sl__iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

int sl__is_kquant(int type) {
    return type == SL_DTYPE_Q2_K || type == SL_DTYPE_Q3_K || type == SL_DTYPE_Q4_K || type == SL_DTYPE_Q5_K ||
           type == SL_DTYPE_Q6_K;
}

int sl__kquant_offset(int type) {
    return type == SL_DTYPE_Q3_K ? 4 : type == SL_DTYPE_Q6_K ? 32 : 0;
}

int sl__kquant_has_min(int type) {
    return type == SL_DTYPE_Q2_K || type == SL_DTYPE_Q4_K || type == SL_DTYPE_Q5_K;
}

/* GGML's get_scale_min_k4: scale and min of 32-element sub-block j (0..7) from the 12 packed bytes. */
static inline void sl_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

void sl__k_scales(int type, const void *blk, int16_t S[16], int16_t M[16], float *d, float *dmin) {
    switch (type) {
    case SL_DTYPE_Q2_K: {
        const sl_block_q2_K *b = blk;
        for (int k = 0; k < 16; k++) {
            S[k] = b->scales[k] & 0xF;
            M[k] = b->scales[k] >> 4;
        }
        *d = sl_fp16_to_f32(b->d);
        *dmin = sl_fp16_to_f32(b->dmin);
        return;
    }
    case SL_DTYPE_Q3_K: {
        const sl_block_q3_K *b = blk;
        for (int k = 0; k < 16; k++) {
            int lo = k < 8 ? b->scales[k] & 0xF : b->scales[k - 8] >> 4;
            int hi = (b->scales[8 + k % 4] >> (2 * (k / 4))) & 3;
            S[k] = (int16_t)((lo | (hi << 4)) - 32);
            M[k] = 0;
        }
        *d = sl_fp16_to_f32(b->d);
        *dmin = 0.0f;
        return;
    }
    case SL_DTYPE_Q4_K:
    case SL_DTYPE_Q5_K: {
        /* Q4_K and Q5_K share their first 16 bytes' layout: d, dmin, scales[12] */
        const sl_block_q4_K *b = blk;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            sl_scale_min_k4(j, b->scales, &sc, &m);
            S[2 * j] = S[2 * j + 1] = sc;
            M[2 * j] = M[2 * j + 1] = m;
        }
        *d = sl_fp16_to_f32(b->d);
        *dmin = sl_fp16_to_f32(b->dmin);
        return;
    }
    default: { /* Q6_K */
        const sl_block_q6_K *b = blk;
        for (int k = 0; k < 16; k++) {
            S[k] = b->scales[k];
            M[k] = 0;
        }
        *d = sl_fp16_to_f32(b->d);
        *dmin = 0.0f;
        return;
    }
    }
}

void sl__k_levels(int type, const void *blk, uint8_t u[256]) {
    switch (type) {
    case SL_DTYPE_Q2_K: {
        const sl_block_q2_K *b = blk;
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) u[128 * h + 32 * c + l] = (b->qs[32 * h + l] >> (2 * c)) & 3;
        return;
    }
    case SL_DTYPE_Q3_K: {
        const sl_block_q3_K *b = blk;
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++)
                    u[128 * h + 32 * c + l] = (uint8_t)(((b->qs[32 * h + l] >> (2 * c)) & 3) |
                                                        (((b->hmask[l] >> (4 * h + c)) & 1) << 2));
        return;
    }
    case SL_DTYPE_Q4_K: {
        const sl_block_q4_K *b = blk;
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) {
                u[64 * p + l] = b->qs[32 * p + l] & 0xF;
                u[64 * p + 32 + l] = b->qs[32 * p + l] >> 4;
            }
        return;
    }
    case SL_DTYPE_Q5_K: {
        const sl_block_q5_K *b = blk;
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) {
                u[64 * p + l] = (uint8_t)((b->qs[32 * p + l] & 0xF) | (((b->qh[l] >> (2 * p)) & 1) << 4));
                u[64 * p + 32 + l] = (uint8_t)((b->qs[32 * p + l] >> 4) | (((b->qh[l] >> (2 * p + 1)) & 1) << 4));
            }
        return;
    }
    default: { /* Q6_K */
        const sl_block_q6_K *b = blk;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
            uint8_t *o = u + 128 * h;
            for (int l = 0; l < 32; l++) {
                o[l] = (uint8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4));
                o[32 + l] = (uint8_t)((ql[32 + l] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                o[64 + l] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                o[96 + l] = (uint8_t)((ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4));
            }
        }
        return;
    }
    }
}

/* 5-bit levels of a Q5_0 / Q5_1 block (0..31, element order). */
static void sl_q5_levels(const uint8_t qh4[4], const uint8_t qs[16], uint8_t u[32]) {
    uint32_t qh = (uint32_t)qh4[0] | (uint32_t)qh4[1] << 8 | (uint32_t)qh4[2] << 16 | (uint32_t)qh4[3] << 24;
    for (int j = 0; j < 16; j++) {
        u[j] = (uint8_t)((qs[j] & 0xF) | (((qh >> j) & 1) << 4));
        u[j + 16] = (uint8_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
}

void sl__q5_levels(int type, const void *blk, uint8_t u[32]) {
    if (type == SL_DTYPE_Q5_0) {
        const sl_block_q5_0 *b = blk;
        sl_q5_levels(b->qh, b->qs, u);
    } else {
        const sl_block_q5_1 *b = blk;
        sl_q5_levels(b->qh, b->qs, u);
    }
}

/* ---- dequantization -------------------------------------------------------------------------------------- */

/* Elements [k0, k1) of a row of one of this file's types; k0, k1 multiples of the type's block. */
SL_EXACT_FP void sl__dequantize_k_range(int type, const void *row, int64_t k0, int64_t k1, float *dst) {
#if SL_KCPU_X86
    if (sl__kcpu_level() >= SL_SIMD_AVX2 && sl__dequantize_k_avx2(type, row, k0, k1, dst)) return;
#endif
    const int64_t be = sl_dtype_block_elems(type);
    const size_t bb = sl_dtype_block_bytes(type);
    const uint8_t *p = (const uint8_t *)row + (size_t)(k0 / be) * bb;
    for (int64_t b = 0; b < (k1 - k0) / be; b++, p += bb, dst += be) {
        switch (type) {
        case SL_DTYPE_Q5_0: {
            const sl_block_q5_0 *blk = (const sl_block_q5_0 *)p;
            uint8_t u[32];
            sl__q5_levels(type, blk, u);
            const float d = sl_fp16_to_f32(blk->d);
            for (int j = 0; j < 32; j++) dst[j] = (float)(u[j] - 16) * d;
            break;
        }
        case SL_DTYPE_Q5_1: {
            const sl_block_q5_1 *blk = (const sl_block_q5_1 *)p;
            uint8_t u[32];
            sl__q5_levels(type, blk, u);
            const float d = sl_fp16_to_f32(blk->d), m = sl_fp16_to_f32(blk->m);
            for (int j = 0; j < 32; j++) dst[j] = (float)u[j] * d + m;
            break;
        }
        case SL_DTYPE_IQ4_NL: {
            const sl_block_iq4_nl *blk = (const sl_block_iq4_nl *)p;
            const float d = sl_fp16_to_f32(blk->d);
            for (int j = 0; j < 16; j++) {
                dst[j] = d * (float)sl__iq4nl_values[blk->qs[j] & 0xF];
                dst[j + 16] = d * (float)sl__iq4nl_values[blk->qs[j] >> 4];
            }
            break;
        }
        case SL_DTYPE_Q8_K: {
            const sl_block_q8_K *blk = (const sl_block_q8_K *)p;
            for (int j = 0; j < 256; j++) dst[j] = blk->d * (float)blk->qs[j];
            break;
        }
        default: { /* the K-quants: (d * S) * (u - K) - dmin * M, as GGML */
            int16_t S[16], M[16];
            float d, dmin;
            uint8_t u[256];
            sl__k_scales(type, p, S, M, &d, &dmin);
            sl__k_levels(type, p, u);
            const int K = sl__kquant_offset(type), has_min = sl__kquant_has_min(type);
            for (int s = 0; s < 16; s++) {
                const float dl = d * (float)S[s], ml = dmin * (float)M[s];
                for (int l = 16 * s; l < 16 * s + 16; l++)
                    dst[l] = has_min ? dl * (float)(u[l] - K) - ml : dl * (float)(u[l] - K);
            }
            break;
        }
        }
    }
}

/* ---- quantization: GGML's reference functions ------------------------------------------------------------- */

#define SL_GROUP_MAX_EPS 1e-15f /* GGML's GROUP_MAX_EPS: a group below it is all zero */

/* GGML's nearest_int: adding 1.5 * 2^23 leaves round(x) (ties to even) in the low mantissa bits; valid for
 * |x| <= 2^22 - 1, which every caller's clamped levels satisfy. */
SL_EXACT_FP static inline int sl_nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int sl_imax(int a, int b) { return a > b ? a : b; }
static inline int sl_imin(int a, int b) { return a < b ? a : b; }

/* GGML's make_qx_quants with rmse_type 1 and no importance weights: symmetric levels -nmax .. nmax-1 in L
 * (stored + nmax), and the scale that minimizes the x²-weighted error over 19 candidate iscales. */
SL_EXACT_FP static float sl_make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max;
    if (sl__absmax(x, n, &max) < SL_GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = sl_nearest_int(iscale * x[i]);
        l = sl_imax(-nmax, sl_imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) { /* iscale nudged by +-0.1 .. 0.9 levels */
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = sl_nearest_int(iscale * x[i]);
            l = sl_imax(-nmax, sl_imin(nmax - 1, l));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = sl_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + sl_imax(-nmax, sl_imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* GGML's make_q3_quants with do_rmse: levels refined one at a time (at most 5 passes). */
SL_EXACT_FP static float sl_make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max;
    if (sl__absmax(x, n, &max) < SL_GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = sl_nearest_int(iscale * x[i]);
        l = sl_imax(-nmax, sl_imin(nmax - 1, l));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = sl_nearest_int(x[i] * sl2 / slx);
                new_l = sl_imax(-nmax, sl_imin(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* GGML's make_qkx2_quants: asymmetric levels 0..nmax with a min, the (scale, min) pair of least weighted
 * error over nstep + 1 candidate iscales (least squares for each). */
SL_EXACT_FP static float sl_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                                             float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                                             bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = sl_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)sl_imax(0, sl_imin(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = sl_nearest_int(iscale * (x[i] - min));
            l = sl_imax(0, sl_imin(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

SL_EXACT_FP static void sl_quantize_q5_0_ref(const float *x, sl_block_q5_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float max;
        sl__absmax(x, 32, &max);
        const float d = max / -16; /* max maps to -16, the level without a positive twin */
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = sl_f32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
            const float x0 = x[j] * id, x1 = x[j + 16] * id;
            const uint8_t xi0 = (uint8_t)sl_imin(31, (int8_t)(x0 + 16.5f)); /* truncation, as GGML */
            const uint8_t xi1 = (uint8_t)sl_imin(31, (int8_t)(x1 + 16.5f));
            y[i].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << j;
            qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
        }
        for (int k = 0; k < 4; k++) y[i].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}

SL_EXACT_FP static void sl_quantize_q5_1_ref(const float *x, sl_block_q5_1 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31; /* 32 levels */
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = sl_f32_to_fp16(d);
        y[i].m = sl_f32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
            const float x0 = (x[j] - min) * id, x1 = (x[j + 16] - min) * id;
            const uint8_t xi0 = (uint8_t)(x0 + 0.5f), xi1 = (uint8_t)(x1 + 0.5f);
            y[i].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << j;
            qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
        }
        for (int k = 0; k < 4; k++) y[i].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}

SL_EXACT_FP static void sl_quantize_q2_K_ref(const float *x, sl_block_q2_K *y, int64_t nb) {
    uint8_t L[256], Laux[16];
    float weights[16], mins[16], scales[16];
    const float q4scale = 15.f; /* sub-block scales and mins are 4-bit */
    for (int64_t i = 0; i < nb; i++, x += 256) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = sl_make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15,
                                            true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < 16; ++j) y[i].scales[j] = (uint8_t)sl_nearest_int(iscale * scales[j]);
            y[i].d = sl_f32_to_fp16(max_scale / q4scale);
        } else {
            for (int j = 0; j < 16; ++j) y[i].scales[j] = 0;
            y[i].d = sl_f32_to_fp16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < 16; ++j) y[i].scales[j] |= (uint8_t)(sl_nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = sl_f32_to_fp16(max_min / q4scale);
        } else {
            y[i].dmin = sl_f32_to_fp16(0.f);
        }
        for (int j = 0; j < 16; ++j) {
            const float d = sl_fp16_to_f32(y[i].d) * (y[i].scales[j] & 0xF);
            if (!d) continue;
            const float dm = sl_fp16_to_f32(y[i].dmin) * (y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ++ii) {
                int l = sl_nearest_int((x[16 * j + ii] + dm) / d);
                L[16 * j + ii] = (uint8_t)sl_imax(0, sl_imin(3, l));
            }
        }
        for (int j = 0; j < 256; j += 128)
            for (int l = 0; l < 32; ++l)
                y[i].qs[j / 4 + l] =
                    (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
}

SL_EXACT_FP static void sl_quantize_q3_K_ref(const float *x, sl_block_q3_K *y, int64_t nb) {
    int8_t L[256];
    float scales[16];
    for (int64_t i = 0; i < nb; i++, x += 256) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = sl_make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        memset(y[i].scales, 0, 12);
        if (max_scale) {
            float iscale = -32.f / max_scale; /* 6-bit signed sub-block scales */
            for (int j = 0; j < 16; ++j) {
                int8_t l = (int8_t)sl_nearest_int(iscale * scales[j]);
                l = (int8_t)(sl_imax(-32, sl_imin(31, l)) + 32);
                if (j < 8) y[i].scales[j] = l & 0xF;
                else y[i].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
                l >>= 4;
                y[i].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
            }
            y[i].d = sl_f32_to_fp16(1 / iscale);
        } else {
            y[i].d = sl_f32_to_fp16(0.f);
        }
        for (int j = 0; j < 16; ++j) {
            int8_t sc = (int8_t)(j < 8 ? y[i].scales[j] & 0xF : y[i].scales[j - 8] >> 4);
            sc = (int8_t)((sc | (((y[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
            float d = sl_fp16_to_f32(y[i].d) * sc;
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = sl_nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(sl_imax(-4, sl_imin(3, l)) + 4);
            }
        }
        memset(y[i].hmask, 0, 32);
        int m = 0;
        uint8_t hm = 1; /* the high bit of element j goes to bit j / 32 of hmask[j % 32] */
        for (int j = 0; j < 256; ++j) {
            if (L[j] > 3) {
                y[i].hmask[m] |= hm;
                L[j] = (int8_t)(L[j] - 4);
            }
            if (++m == 32) {
                m = 0;
                hm = (uint8_t)(hm << 1);
            }
        }
        for (int j = 0; j < 256; j += 128)
            for (int l = 0; l < 32; ++l)
                y[i].qs[j / 4 + l] =
                    (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
}

/* Q4_K and Q5_K share everything but the level count (nmax 15 or 31) and the packing of the levels. */
SL_EXACT_FP static void sl_quantize_q45_K_ref(const float *x, void *dst, int64_t nb, int is_q5) {
    uint8_t L[256], Laux[32];
    float weights[32], mins[8], scales[8];
    const int nmax = is_q5 ? 31 : 15;
    for (int64_t i = 0; i < nb; i++, x += 256) {
        sl_block_q4_K *y4 = (sl_block_q4_K *)dst + i; /* only one of y4, y5 is used */
        sl_block_q5_K *y5 = (sl_block_q5_K *)dst + i;
        uint8_t *ysc = is_q5 ? y5->scales : y4->scales;
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; ++j) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
            scales[j] = is_q5 ? sl_make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f,
                                                    0.1f, 15, false)
                              : sl_make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f,
                                                    0.1f, 20, false);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f; /* 6-bit scales and mins */
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < 8; ++j) {
            uint8_t ls = (uint8_t)sl_nearest_int(inv_scale * scales[j]);
            uint8_t lm = (uint8_t)sl_nearest_int(inv_min * mins[j]);
            ls = ls < 63 ? ls : 63;
            lm = lm < 63 ? lm : 63;
            if (j < 4) {
                ysc[j] = ls;
                ysc[j + 4] = lm;
            } else {
                ysc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
                ysc[j - 4] |= (uint8_t)((ls >> 4) << 6);
                ysc[j - 0] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        const sl_fp16_t hd = sl_f32_to_fp16(max_scale / 63.f), hdmin = sl_f32_to_fp16(max_min / 63.f);
        if (is_q5) {
            y5->d = hd;
            y5->dmin = hdmin;
        } else {
            y4->d = hd;
            y4->dmin = hdmin;
        }
        for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            sl_scale_min_k4(j, ysc, &sc, &m);
            const float d = sl_fp16_to_f32(hd) * sc;
            if (!d) continue;
            const float dm = sl_fp16_to_f32(hdmin) * m;
            for (int ii = 0; ii < 32; ++ii) {
                int l = sl_nearest_int((x[32 * j + ii] + dm) / d);
                L[32 * j + ii] = (uint8_t)sl_imax(0, sl_imin(nmax, l));
            }
        }
        if (!is_q5) {
            uint8_t *q = y4->qs;
            for (int j = 0; j < 256; j += 64, q += 32)
                for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        } else {
            uint8_t *qh = y5->qh, *ql = y5->qs;
            memset(qh, 0, 32);
            uint8_t m1 = 1, m2 = 2;
            for (int n = 0; n < 256; n += 64, ql += 32) {
                for (int j = 0; j < 32; ++j) {
                    int l1 = L[n + j];
                    if (l1 > 15) {
                        l1 -= 16;
                        qh[j] |= m1;
                    }
                    int l2 = L[n + j + 32];
                    if (l2 > 15) {
                        l2 -= 16;
                        qh[j] |= m2;
                    }
                    ql[j] = (uint8_t)(l1 | (l2 << 4));
                }
                m1 = (uint8_t)(m1 << 2);
                m2 = (uint8_t)(m2 << 2);
            }
        }
    }
}

SL_EXACT_FP static void sl_quantize_q6_K_ref(const float *x, sl_block_q6_K *y, int64_t nb) {
    int8_t L[256];
    float scales[16];
    for (int64_t i = 0; i < nb; i++, x += 256) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < 16; ++ib) {
            const float scale = sl_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if (max_abs_scale < SL_GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float iscale = -128.f / max_scale; /* int8 sub-block scales */
        y[i].d = sl_f32_to_fp16(1 / iscale);
        for (int ib = 0; ib < 16; ++ib) y[i].scales[ib] = (int8_t)sl_imin(127, sl_nearest_int(iscale * scales[ib]));
        for (int j = 0; j < 16; ++j) {
            float d = sl_fp16_to_f32(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = sl_nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(sl_imax(-32, sl_imin(31, l)) + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < 256; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

/* GGML's quantize_row_q8_K_ref: d = max / -127 (the largest magnitude maps to -127), levels rounded by
 * nearest_int; bsums are the sums of 16 levels, which carry the weights' mins and offsets. */
SL_EXACT_FP static void sl_quantize_q8_K_ref(const float *x, sl_block_q8_K *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 256) {
        float max;
        if (!sl__absmax(x, 256, &max)) {
            memset(&y[i], 0, sizeof y[i]); /* GGML leaves bsums unset here; zero is their value */
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < 256; ++j) y[i].qs[j] = (int8_t)sl_imin(127, sl_nearest_int(iscale * x[j]));
        for (int j = 0; j < 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* Index of the IQ4_NL level nearest to x (GGML's best_index_int8, the bisection form: ties go up). */
static int sl_iq4nl_index(float x) {
    const int8_t *val = sl__iq4nl_values;
    if (x <= val[0]) return 0;
    if (x >= val[15]) return 15;
    int ml = 0, mu = 15;
    while (mu - ml > 1) {
        int mav = (ml + mu) / 2;
        if (x < val[mav]) mu = mav;
        else ml = mav;
    }
    return x - val[mu - 1] < val[mu] - x ? mu - 1 : mu;
}

/* IQ4_NL as llama.cpp's quantize_iq4_nl writes it without an importance matrix (quantize_row_iq4_nl_impl with
 * blocks of 32, weights x², ntry 7): the scale of least weighted error over 15 candidates, then the levels
 * requantized with it. Not byte-checked against an independent implementation (the `gguf` package cannot
 * quantize IQ4_NL, and llama.cpp's quantize_row_iq4_nl_ref of late 2024 on runs a cheaper ntry -1 variant),
 * so only its round-trip error is tested. */
SL_EXACT_FP static void sl_quantize_iq4_nl(const float *x, sl_block_iq4_nl *y, int64_t nb) {
    const int8_t *values = sl__iq4nl_values;
    const int ntry = 7; /* candidate iscales (itry + values[0]) / max for itry in -7 .. 7 */
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float weight[32];
        uint8_t L[32];
        float scale = 0;
        for (int j = 0; j < 32; ++j) weight[j] = x[j] * x[j];
        float max;
        if (sl__absmax(x, 32, &max) >= SL_GROUP_MAX_EPS) {
            float d = -max / values[0];
            float id = 1 / d;
            float sumqx = 0, sumq2 = 0;
            for (int j = 0; j < 32; ++j) {
                int l = sl_iq4nl_index(id * x[j]);
                float q = values[l], w = weight[j];
                sumqx += w * q * x[j];
                sumq2 += w * q * q;
            }
            d = sumqx / sumq2;
            float best = d * sumqx;
            for (int itry = -ntry; itry <= ntry; ++itry) {
                id = (itry + values[0]) / max;
                sumqx = sumq2 = 0;
                for (int j = 0; j < 32; ++j) {
                    int l = sl_iq4nl_index(id * x[j]);
                    float q = values[l], w = weight[j];
                    sumqx += w * q * x[j];
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
            scale = d;
        }
        y[i].d = sl_f32_to_fp16(scale);
        const float id = scale ? 1 / scale : 0;
        for (int j = 0; j < 32; ++j) L[j] = (uint8_t)sl_iq4nl_index(id * x[j]);
        for (int j = 0; j < 16; ++j) y[i].qs[j] = (uint8_t)(L[j] | (L[16 + j] << 4));
    }
}

int sl__quantize_k_row(int type, const float *src, void *dst, int64_t n) {
    switch (type) {
    case SL_DTYPE_Q5_0: sl_quantize_q5_0_ref(src, dst, n / 32); return 1;
    case SL_DTYPE_Q5_1: sl_quantize_q5_1_ref(src, dst, n / 32); return 1;
    case SL_DTYPE_Q2_K: sl_quantize_q2_K_ref(src, dst, n / 256); return 1;
    case SL_DTYPE_Q3_K: sl_quantize_q3_K_ref(src, dst, n / 256); return 1;
    case SL_DTYPE_Q4_K: sl_quantize_q45_K_ref(src, dst, n / 256, 0); return 1;
    case SL_DTYPE_Q5_K: sl_quantize_q45_K_ref(src, dst, n / 256, 1); return 1;
    case SL_DTYPE_Q6_K: sl_quantize_q6_K_ref(src, dst, n / 256); return 1;
    case SL_DTYPE_Q8_K: sl_quantize_q8_K_ref(src, dst, n / 256); return 1;
    case SL_DTYPE_IQ4_NL: sl_quantize_iq4_nl(src, dst, n / 32); return 1;
    default: return 0;
    }
}
