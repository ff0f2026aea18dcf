/*
 * matmul_q.c — fast-mode matrix products of Q4_0, Q4_1 and Q8_0 weights: quantized weights times quantized
 * activations, on integers.
 *
 * Recipe (the one order of float operations every path follows, kcpu_impl.h): per (row, output) and per
 * 32-element block b in order, isum_b = the exact int32 sum of w_i * x_i over the block (w the weight's signed
 * level: q - 8 for Q4_0, q for Q4_1, q for Q8_0; x the activation's int8 level), then
 *     acc = fma(d_w * d_x, (float)isum_b, acc)          (isum_b is exact in float: |isum_b| < 2^24)
 * and for Q4_1 a second chain ms = fma(m_w, s_x, ms) with the activation block's s = d_x * sum(x) (Q8_1), the
 * result being acc + ms; otherwise acc. One chain per pair and one float multiply-add per block: the integer
 * units do the rest, which is what makes batched steps fast.
 *
 * Weights run from the packed layout (sl_k_pack_q, below), made once at load: 16 output rows interleaved per
 * block, so one 512-bit vpdpbusd multiplies 4 consecutive elements of 16 outputs by 4 activation bytes
 * broadcast, and 8 of them give 16 outputs' exact block sums in 16 lanes. Activations are Q8_1 for Q4_1
 * weights and Q8_0S (Q8_0 with the exact sum of its levels) for Q4_0 and Q8_0, whose products run on
 * unsigned x signed bytes and subtract 8 * sum(x) (Q4_0's offset) or 128 * sum(x) (Q8_0 shifted to unsigned).
 *
 * sl_k_matmul_q on rows as GGUF stores them computes the same recipe in scalar code: the reference the tests
 * compare the packed paths against (production runs the packed ones). The types added later (Q5_0, Q5_1,
 * IQ4_NL, the K-quants) have their own products and recipes in matmul_k.c.
 */
#include "kcpu_impl.h"

int sl_k_act_type(int wtype) {
    switch (wtype) {
    case SL_DTYPE_Q4_0:
    case SL_DTYPE_Q8_0: return SL_DTYPE_Q8_0S;
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

size_t sl_k_act_row_bytes(int wtype, int n_in) {
    const int at = sl_k_act_type(wtype);
    if (at < 0) return 0;
    const size_t blocks = sl_dtype_row_bytes(at, n_in);
    return sl_k_pack_supported(wtype) ? blocks + (size_t)(n_in / 32) * 2 * sizeof(float) : blocks;
}

void sl_k_quantize_act_row(int wtype, const float *x, void *dst, int n_in) {
    const int at = sl_k_act_type(wtype);
    if (at < 0) return;
    sl_k_quantize_row(at, x, dst, n_in);
    if (!sl_k_pack_supported(wtype)) return;
    /* the f32 pairs after the blocks (Q8_1 and Q8_0S blocks: d, then s or the levels' sum, then 32 levels) */
    const int nb = n_in / 32;
    const uint8_t *blk = dst;
    float *f = (float *)(void *)((uint8_t *)dst + sl_dtype_row_bytes(at, n_in));
    for (int b = 0; b < nb; b++) {
        const sl_block_q8_1 *xb = (const sl_block_q8_1 *)(const void *)blk + b;
        f[2 * b] = sl_fp16_to_f32(xb->d);
        f[2 * b + 1] = at == SL_DTYPE_Q8_1 ? sl_fp16_to_f32(xb->s) : 0.0f;
    }
}

/* The signed levels of block b of a GGUF weight row, element order; returns d_w (and *m_w for Q4_1). */
static float sl_q_levels(int wtype, const uint8_t *w, int b, int8_t wq[32], float *m_w) {
    if (wtype == SL_DTYPE_Q8_0) {
        const sl_block_q8_0 *wb = (const sl_block_q8_0 *)w + b;
        memcpy(wq, wb->qs, 32);
        return sl_fp16_to_f32(wb->d);
    }
    const uint8_t *qs;
    int zero; /* the level that means 0: Q4_0 is centred on 8, Q4_1 has an offset m instead */
    float d;
    if (wtype == SL_DTYPE_Q4_0) {
        const sl_block_q4_0 *wb = (const sl_block_q4_0 *)w + b;
        qs = wb->qs;
        d = sl_fp16_to_f32(wb->d);
        zero = 8;
    } else {
        const sl_block_q4_1 *wb = (const sl_block_q4_1 *)w + b;
        qs = wb->qs;
        d = sl_fp16_to_f32(wb->d);
        *m_w = sl_fp16_to_f32(wb->m);
        zero = 0;
    }
    for (int j = 0; j < 16; j++) {
        wq[j] = (int8_t)((qs[j] & 0x0f) - zero);
        wq[j + 16] = (int8_t)((qs[j] >> 4) - zero);
    }
    return d;
}

/* One block of the recipe: the levels wq and scales of a weight block against activation block xb. */
static inline void sl_q_step(int wtype, float dw, float m_w, const int8_t wq[32], const uint8_t *x, int b,
                             float *acc, float *ms) {
    /* Q8_1 and Q8_0S share the layout: d, a 16-bit word (s or the sum), the levels */
    const sl_block_q8_1 *xb = (const sl_block_q8_1 *)x + b;
    int32_t isum = 0;
    for (int i = 0; i < 32; i++) isum += wq[i] * xb->qs[i];
    *acc = fmaf(dw * sl_fp16_to_f32(xb->d), (float)isum, *acc);
    if (wtype == SL_DTYPE_Q4_1) *ms = fmaf(m_w, sl_fp16_to_f32(xb->s), *ms);
}

/* One (row, output) pair by the recipe: GGUF weight row w, activation row x of nb blocks each. */
static float sl_qdot_scalar(int wtype, const uint8_t *w, const uint8_t *x, int nb) {
    float acc = 0.0f, ms = 0.0f;
    for (int b = 0; b < nb; b++) {
        int8_t wq[32];
        float m_w = 0.0f;
        const float dw = sl_q_levels(wtype, w, b, wq, &m_w);
        sl_q_step(wtype, dw, m_w, wq, x, b, &acc, &ms);
    }
    return wtype == SL_DTYPE_Q4_1 ? acc + ms : acc;
}

static void sl_matmul_q_scalar(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in,
                               const void *xq, size_t xq_row_bytes, int n_rows, float *y, int ldy) {
    for (int r = 0; r < n_rows; r++) {
        const uint8_t *x = (const uint8_t *)xq + (size_t)r * xq_row_bytes;
        for (int o = o0; o < o1; o++)
            y[(size_t)r * ldy + o] = sl_qdot_scalar(wtype, (const uint8_t *)w + (size_t)o * w_row_bytes, x, n_in / 32);
    }
}

/* ---- the packed layout ------------------------------------------------------------------------------------- */
/* Per group of 16 output rows (the last one padded with zero rows) and per block b, sl__qp_block_bytes bytes:
 *   d[16]  fp16, the rows' block scales                                  (32 bytes)
 *   m[16]  fp16, the rows' block offsets (Q4_1 only)                     (32 bytes)
 *   quants: Q4: 4 chunks of 64 bytes; chunk i holds, for row l = 0..15, the 4 bytes qs[4i .. 4i+3] of the
 *           row's block: their low nibbles are elements 4i..4i+3, their high nibbles elements 16+4i..16+4i+3
 *           (so masking a chunk gives step i and shifting it step i + 4 of the block's 8 steps);
 *           Q8_0: 8 chunks of 64 bytes; chunk k holds row l's elements 4k..4k+3 at bytes 4l..4l+3.
 * Groups follow each other, each nb blocks long: the same bytes as the GGUF rows (16 x 18, 16 x 20, 16 x 34). */
int sl_k_pack_supported(int wtype) {
    return wtype == SL_DTYPE_Q4_0 || wtype == SL_DTYPE_Q4_1 || wtype == SL_DTYPE_Q8_0;
}

size_t sl__qp_block_bytes(int wtype) {
    return 32 + (wtype == SL_DTYPE_Q4_1 ? 32 : 0) + (wtype == SL_DTYPE_Q8_0 ? 512 : 256);
}

size_t sl_k_packed_bytes(int wtype, int n_out, int n_in) {
    if (!sl_k_pack_supported(wtype) || n_out <= 0 || n_in <= 0 || n_in % 32) return 0;
    return (size_t)((n_out + SL_QP_GROUP - 1) / SL_QP_GROUP) * (size_t)(n_in / 32) * sl__qp_block_bytes(wtype);
}

void sl_k_pack_q(int wtype, const void *w, size_t w_row_bytes, int n_out, int n_in, void *packed) {
    const int nb = n_in / 32, n_groups = (n_out + SL_QP_GROUP - 1) / SL_QP_GROUP;
    const size_t gbs = sl__qp_block_bytes(wtype), wbs = sl_dtype_block_bytes(wtype);
    const size_t qo = wtype == SL_DTYPE_Q4_1 ? 64 : 32; /* where the quants start in a packed block */
    const size_t so = wtype == SL_DTYPE_Q4_1 ? 4 : 2;   /* where they start in a GGUF block */
    const int chunks = wtype == SL_DTYPE_Q8_0 ? 8 : 4;
    uint8_t *out = packed;
    memset(out, 0, sl_k_packed_bytes(wtype, n_out, n_in));
    for (int g = 0; g < n_groups; g++)
        for (int b = 0; b < nb; b++) {
            uint8_t *pb = out + ((size_t)g * nb + b) * gbs;
            for (int l = 0; l < SL_QP_GROUP && g * SL_QP_GROUP + l < n_out; l++) {
                const uint8_t *blk = (const uint8_t *)w + (size_t)(g * SL_QP_GROUP + l) * w_row_bytes + b * wbs;
                memcpy(pb + 2 * l, blk, 2);                                   /* d */
                if (wtype == SL_DTYPE_Q4_1) memcpy(pb + 32 + 2 * l, blk + 2, 2); /* m */
                for (int i = 0; i < chunks; i++) memcpy(pb + qo + 64 * i + 4 * l, blk + so + 4 * i, 4);
            }
        }
}

/* Block b of GGUF row `row` (nb blocks a row) out of the packed layout, into blk (one GGUF block). */
static void sl_qp_unpack_block(int wtype, const uint8_t *packed, int nb, int row, int b, uint8_t *blk) {
    const int g = row / SL_QP_GROUP, l = row % SL_QP_GROUP, chunks = wtype == SL_DTYPE_Q8_0 ? 8 : 4;
    const size_t qo = wtype == SL_DTYPE_Q4_1 ? 64 : 32, so = wtype == SL_DTYPE_Q4_1 ? 4 : 2;
    const uint8_t *pb = packed + ((size_t)g * nb + b) * sl__qp_block_bytes(wtype);
    memcpy(blk, pb + 2 * l, 2);
    if (wtype == SL_DTYPE_Q4_1) memcpy(blk + 2, pb + 32 + 2 * l, 2);
    for (int i = 0; i < chunks; i++) memcpy(blk + so + 4 * i, pb + qo + 64 * i + 4 * l, 4);
}

void sl_k_unpack_q_row(int wtype, const void *packed, int n_in, int row, void *out) {
    const int nb = n_in / 32;
    const size_t wbs = sl_dtype_block_bytes(wtype);
    for (int b = 0; b < nb; b++) sl_qp_unpack_block(wtype, packed, nb, row, b, (uint8_t *)out + b * wbs);
}

/* The packed product in scalar code, by the recipe (other architectures, SLUICE_SIMD=scalar, an o0 off a group
 * boundary): each block unpacked back to the GGUF form, then the reference's own step (sl_q_step). */
static void sl_matmul_qp_scalar(int wtype, const void *packed, int o0, int o1, int n_in, const void *xq,
                                size_t xq_row_bytes, int n_rows, float *y, int ldy) {
    const int nb = n_in / 32;
    for (int o = o0; o < o1; o++) {
        for (int r = 0; r < n_rows; r++) {
            const uint8_t *x = (const uint8_t *)xq + (size_t)r * xq_row_bytes;
            float acc = 0.0f, ms = 0.0f;
            for (int b = 0; b < nb; b++) {
                uint8_t blk[36]; /* one GGUF block of Q4_0 (18), Q4_1 (20) or Q8_0 (34) bytes */
                int8_t wq[32];
                float m_w = 0.0f;
                sl_qp_unpack_block(wtype, packed, nb, o, b, blk);
                const float d_w = sl_q_levels(wtype, blk, 0, wq, &m_w);
                sl_q_step(wtype, d_w, m_w, wq, x, b, &acc, &ms);
            }
            y[(size_t)r * ldy + o] = wtype == SL_DTYPE_Q4_1 ? acc + ms : acc;
        }
    }
}

void sl_k_matmul_qp(int wtype, const void *packed, int o0, int o1, int n_in, const void *xq, size_t xq_row_bytes,
                    int n_rows, float *y, int ldy) {
    if (!sl_k_pack_supported(wtype) || o0 >= o1 || n_rows <= 0 || n_in <= 0) return;
#if SL_KCPU_X86
    if (o0 % SL_QP_GROUP != 0) { /* the SIMD tiles start at a group's first lane: the scalar code takes any o0 */
        sl_matmul_qp_scalar(wtype, packed, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        return;
    }
    sl_simd_level level = sl__kcpu_level();
    if (level == SL_SIMD_AVX512 && sl__kcpu_use_vnni512()) {
        sl__matmul_qp_avx512vnni(wtype, packed, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        return;
    }
    if (level >= SL_SIMD_AVX2) {
        if (sl__kcpu_use_avxvnni())
            sl__matmul_qp_avxvnni(wtype, packed, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        else
            sl__matmul_qp_avx2(wtype, packed, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        return;
    }
#endif
    sl_matmul_qp_scalar(wtype, packed, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
}

void sl_k_matmul_q(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const void *xq,
                   size_t xq_row_bytes, int n_rows, float *y, int ldy) {
    if (sl_k_act_type(wtype) < 0 || o0 >= o1 || n_rows <= 0 || n_in <= 0) return;
    if (sl__matmul_k_handles(wtype)) { /* the types added with the K-quants: matmul_k.c */
        sl__matmul_k(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
        return;
    }
    sl_matmul_q_scalar(wtype, w, w_row_bytes, o0, o1, n_in, xq, xq_row_bytes, n_rows, y, ldy);
}
