/*
 * matmul_k.c — fast-mode products for the types added with the K-quants: Q5_0 and IQ4_NL with Q8_0
 * activations, Q5_1 with Q8_1, and Q2_K .. Q6_K with Q8_K. This file holds the scalar reference and the
 * dispatcher; matmul_k_x86.c has the x86 variants (AVX2, AVX-VNNI, AVX512-VNNI), which reproduce the
 * reference bit for bit.
 *
 * The 32-element types follow the canonical quantized dot of kcpu_impl.h unchanged (8 lanes per block, each
 * the exact int32 sum of 4 consecutive products, acc_j = fma(d_w * d_x, isum_j, acc_j); Q5_1's offsets in
 * their own chain ms = fma(m_w, s_x, ms), as Q4_1's).
 *
 * The K-quant recipe, per 256-element super-block, on the unpacked shape of quant_k.c (levels u, sub-block
 * scales S and mins M per 16 elements, level offset K) and the Q8_K block (levels q, sums of 16 bsum):
 *   P_j   = sum over chunks v = 0..7 of S[2v + (j >= 4)] * (sum of u[e] q[e] for e = 32v + 4j .. 32v + 4j + 3)
 *   isum_j = P_j - K * (S[2j] bsum[2j] + S[2j+1] bsum[2j+1])                       (exact int32, j = 0..7)
 *   min_j  = M[2j] bsum[2j] + M[2j+1] bsum[2j+1]                                   (exact int32)
 *   acc_j  = fma(d_w * d_x, isum_j, acc_j);   macc_j = fma(dmin_w * d_x, min_j, macc_j)
 * and the result is fold8(acc) - fold8(macc) (fold8(acc) for the types without mins). The lanes are what
 * pmaddubsw + pmaddwd produce on a 32-byte chunk with the chunk's two sub-block scales as the word operand,
 * so the AVX2 code needs no shuffles to follow it; the levels are kept unsigned (the offset K comes back
 * through the activation sums) because pmaddubsw wants one unsigned operand. Bounds: |P_j| <= 8 x 128 x
 * 4 x 63 x 127 < 2^25 and pmaddubsw's pairs stay under 2 x 63 x 127 < 2^15, so nothing saturates.
 */
#include "kcpu_impl.h"

int sl__matmul_k_handles(int wtype) {
    return wtype == SL_DTYPE_Q5_0 || wtype == SL_DTYPE_Q5_1 || wtype == SL_DTYPE_IQ4_NL || sl__is_kquant(wtype);
}

/* One (row, output) pair of a 32-element type: nb blocks of w and of the Q8_0/Q8_1 activation row x. */
static float sl_kdot32_scalar(int wtype, const uint8_t *w, const uint8_t *x, int nb) {
    float acc[8] = {0}, ms = 0.0f;
    const size_t wbs = sl_dtype_block_bytes(wtype);
    for (int b = 0; b < nb; b++, w += wbs) {
        int8_t wq[32]; /* the block's weights as signed integers, element order */
        float dw;
        if (wtype == SL_DTYPE_IQ4_NL) {
            const sl_block_iq4_nl *wb = (const sl_block_iq4_nl *)w;
            for (int j = 0; j < 16; j++) {
                wq[j] = sl__iq4nl_values[wb->qs[j] & 0xF];
                wq[j + 16] = sl__iq4nl_values[wb->qs[j] >> 4];
            }
            dw = sl_fp16_to_f32(wb->d);
        } else {
            uint8_t u[32];
            sl__q5_levels(wtype, w, u);
            const int zero = wtype == SL_DTYPE_Q5_0 ? 16 : 0; /* Q5_0 is centred on 16, Q5_1 has m instead */
            for (int j = 0; j < 32; j++) wq[j] = (int8_t)(u[j] - zero);
            dw = sl_fp16_to_f32(((const sl_block_q5_0 *)w)->d); /* d comes first in both layouts */
        }
        const int8_t *xq;
        float dx;
        if (wtype == SL_DTYPE_Q5_1) {
            const sl_block_q8_1 *xb = (const sl_block_q8_1 *)x + b;
            xq = xb->qs;
            dx = sl_fp16_to_f32(xb->d);
            ms = fmaf(sl_fp16_to_f32(((const sl_block_q5_1 *)w)->m), sl_fp16_to_f32(xb->s), ms);
        } else {
            const sl_block_q8_0 *xb = (const sl_block_q8_0 *)x + b;
            xq = xb->qs;
            dx = sl_fp16_to_f32(xb->d);
        }
        const float dd = dw * dx;
        for (int j = 0; j < 8; j++) {
            int32_t isum = 0;
            for (int i = 4 * j; i < 4 * j + 4; i++) isum += wq[i] * xq[i];
            acc[j] = fmaf(dd, (float)isum, acc[j]);
        }
    }
    return wtype == SL_DTYPE_Q5_1 ? sl__fold8(acc) + ms : sl__fold8(acc);
}

/* One (row, output) pair of a K-quant: nb super-blocks of w and of the Q8_K activation row x. */
static float sl_kdot256_scalar(int wtype, const uint8_t *w, const uint8_t *x, int nb) {
    float acc[8] = {0}, macc[8] = {0};
    const size_t wbs = sl_dtype_block_bytes(wtype);
    const int K = sl__kquant_offset(wtype);
    for (int b = 0; b < nb; b++, w += wbs) {
        sl_block_q8_K xb;
        memcpy(&xb, x + (size_t)b * sizeof xb, sizeof xb); /* activation rows need not be 4-byte aligned */
        int16_t S[16], M[16];
        float dw, dmin;
        uint8_t u[256];
        sl__k_scales(wtype, w, S, M, &dw, &dmin);
        sl__k_levels(wtype, w, u);
        const float dd = dw * xb.d, dm = dmin * xb.d;
        for (int j = 0; j < 8; j++) {
            int32_t p = 0;
            for (int v = 0; v < 8; v++) {
                int32_t s4 = 0;
                for (int e = 32 * v + 4 * j; e < 32 * v + 4 * j + 4; e++) s4 += u[e] * xb.qs[e];
                p += S[2 * v + (j >= 4)] * s4;
            }
            const int32_t isum = p - K * (S[2 * j] * xb.bsums[2 * j] + S[2 * j + 1] * xb.bsums[2 * j + 1]);
            const int32_t imin = M[2 * j] * xb.bsums[2 * j] + M[2 * j + 1] * xb.bsums[2 * j + 1];
            acc[j] = fmaf(dd, (float)isum, acc[j]);
            macc[j] = fmaf(dm, (float)imin, macc[j]);
        }
    }
    return sl__kquant_has_min(wtype) ? sl__fold8(acc) - sl__fold8(macc) : sl__fold8(acc);
}

static void sl_matmul_k_scalar(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in,
                               const void *xq, size_t xq_row_bytes, int n_rows, float *y, int ldy) {
    const int is_k = sl__is_kquant(wtype);
    for (int r = 0; r < n_rows; r++) {
        const uint8_t *x = (const uint8_t *)xq + (size_t)r * xq_row_bytes;
        for (int o = o0; o < o1; o++) {
            const uint8_t *wr = (const uint8_t *)w + (size_t)o * w_row_bytes;
            y[(size_t)r * ldy + o] = is_k ? sl_kdot256_scalar(wtype, wr, x, n_in / 256)
                                          : sl_kdot32_scalar(wtype, wr, x, n_in / 32);
        }
    }
}

void sl__matmul_k(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const void *xq,
                  size_t xq_row_bytes, int n_rows, float *y, int ldy) {
#if SL_KCPU_X86
    const sl_simd_level level = sl__kcpu_level();
    if (level == SL_SIMD_AVX512 && sl__kcpu_use_vnni512()) {
        sl__matmul_k_avx512vnni(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        return;
    }
    if (level >= SL_SIMD_AVX2) { /* AVX-512 without VNNI runs the AVX2 code, as matmul_q.c does */
        if (sl__kcpu_use_avxvnni())
            sl__matmul_k_avxvnni(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        else
            sl__matmul_k_avx2(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        return;
    }
#endif
    sl_matmul_k_scalar(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
}
