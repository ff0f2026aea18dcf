/*
 * matmul_q.c — fast-mode matrix products: quantized weights times quantized activations, on integers.
 *
 * Like llama.cpp's ggml_vec_dot_q4_0_q8_0 / q4_1_q8_1 / q8_0_q8_0, each 32-element block contributes an
 * exact integer dot product scaled by the two blocks' fp16 scales, accumulated in float. Q4_1 blocks carry
 * an offset m, which meets the activation block's precomputed s = d * sum(q) in one extra multiply-add per
 * block, so activations for Q4_1 weights are Q8_1.
 *
 * The order of the float accumulation is the canonical one of kcpu_impl.h (8 lanes per block, each the
 * exact int32 sum of 4 consecutive products; Q4_1's offset terms in their own chain), so this scalar code
 * and the SIMD variants in matmul_q_x86.c give identical bits, whatever the tile a (row, output) pair fell
 * into. This file holds the scalar reference and the dispatcher; the types added later (Q5_0, Q5_1, IQ4_NL,
 * the K-quants) have theirs in matmul_k.c.
 */
#include "kcpu_impl.h"

int sl_k_act_type(int wtype) {
    switch (wtype) {
    case SL_DTYPE_Q4_0:
    case SL_DTYPE_Q8_0: return SL_DTYPE_Q8_0;
    case SL_DTYPE_Q4_1: return SL_DTYPE_Q8_1;
    case SL_DTYPE_Q5_0:
    case SL_DTYPE_IQ4_NL: return SL_DTYPE_Q8_0;
    case SL_DTYPE_Q5_1: return SL_DTYPE_Q8_1;
    case SL_DTYPE_Q2_K:
    case SL_DTYPE_Q3_K:
    case SL_DTYPE_Q4_K:
    case SL_DTYPE_Q5_K:
    case SL_DTYPE_Q6_K: return SL_DTYPE_Q8_K;
    default: return -1;
    }
}

/* One (row, output) pair: weight row w and activation row x of nb blocks each. */
static float sl_qdot_scalar(int wtype, const void *w, const void *x, int nb) {
    float acc[8] = {0}, ms = 0.0f;
    for (int b = 0; b < nb; b++) {
        int8_t wq[32]; /* the block's weights as signed integers, element order */
        const int8_t *xq;
        float dw, dx;
        if (wtype == SL_DTYPE_Q8_0) {
            const sl_block_q8_0 *wb = (const sl_block_q8_0 *)w + b;
            memcpy(wq, wb->qs, 32);
            dw = sl_fp16_to_f32(wb->d);
        } else {
            const uint8_t *qs;
            int zero; /* the level that means 0: Q4_0 is centred on 8, Q4_1 has an offset m instead */
            if (wtype == SL_DTYPE_Q4_0) {
                const sl_block_q4_0 *wb = (const sl_block_q4_0 *)w + b;
                qs = wb->qs;
                dw = sl_fp16_to_f32(wb->d);
                zero = 8;
            } else {
                const sl_block_q4_1 *wb = (const sl_block_q4_1 *)w + b;
                qs = wb->qs;
                dw = sl_fp16_to_f32(wb->d);
                zero = 0;
            }
            for (int j = 0; j < 16; j++) {
                wq[j] = (int8_t)((qs[j] & 0x0f) - zero);
                wq[j + 16] = (int8_t)((qs[j] >> 4) - zero);
            }
        }
        if (wtype == SL_DTYPE_Q4_1) {
            const sl_block_q8_1 *xb = (const sl_block_q8_1 *)x + b;
            xq = xb->qs;
            dx = sl_fp16_to_f32(xb->d);
            ms = fmaf(sl_fp16_to_f32(((const sl_block_q4_1 *)w)[b].m), sl_fp16_to_f32(xb->s), ms);
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
    return wtype == SL_DTYPE_Q4_1 ? sl__fold8(acc) + ms : sl__fold8(acc);
}

static void sl_matmul_q_scalar(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in,
                               const void *xq, size_t xq_row_bytes, int n_rows, float *y, int ldy) {
    for (int r = 0; r < n_rows; r++) {
        const uint8_t *x = (const uint8_t *)xq + (size_t)r * xq_row_bytes;
        for (int o = o0; o < o1; o++)
            y[(size_t)r * ldy + o] = sl_qdot_scalar(wtype, (const uint8_t *)w + (size_t)o * w_row_bytes, x, n_in / 32);
    }
}

void sl_k_matmul_q(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const void *xq,
                   size_t xq_row_bytes, int n_rows, float *y, int ldy) {
    if (sl_k_act_type(wtype) < 0 || o0 >= o1 || n_rows <= 0 || n_in <= 0) return;
    if (sl__matmul_k_handles(wtype)) { /* the types added with the K-quants: matmul_k.c */
        sl__matmul_k(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        return;
    }
#if SL_KCPU_X86
    sl_simd_level level = sl__kcpu_level();
    if (level == SL_SIMD_AVX512 && sl__kcpu_use_vnni512()) {
        sl__matmul_q_avx512vnni(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        return;
    }
    if (level >= SL_SIMD_AVX2) { /* AVX-512 without VNNI gains little over AVX2 here: same integer lanes */
        if (sl__kcpu_use_avxvnni())
            sl__matmul_q_avxvnni(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        else
            sl__matmul_q_avx2(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        return;
    }
#endif
    sl_matmul_q_scalar(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
}
