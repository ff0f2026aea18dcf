/*
 * matmul_f32.c — exact-mode matrix products: weights of any type times f32 activations.
 *
 * Every output is the canonical f32 dot product (kcpu_impl.h) of an activation row with the weight row as
 * f32: y[r][o] == sl_k_dot_f32(x[r], dequantized w[o], n_in), bit for bit, on every SIMD level and whatever
 * rows or outputs shared the call. Weights other than F32 are dequantized, a few rows at a time, into a
 * buffer on the stack (kernels do not allocate), then multiplied in register tiles (matmul_f32_x86.c).
 *
 * Why not OpenBLAS's sgemm: it is not batch invariant. With OpenBLAS 0.3.21 (the Debian 12 build, SkylakeX
 * kernels, one thread) a row's outputs differ in the last bits between an n_rows = 1 call and n_rows = 17 or
 * 64 calls at every n_in tried (32 to 4128), and already at n_rows = 3 for n_in = 4128: its kernels reduce
 * in an order that depends on the matrix shape. Our tiles reach most of its speed at the model's shapes.
 */
#include "kcpu_impl.h"

/* 16384 floats = 64 KiB: a weight tile that stays in L2 while the activation rows pass over it, and a
 * stack frame far below the thread stacks it runs on (glibc's default, which the runtime's pool keeps, is
 * 8 MiB; any thread calling the kernels needs at least 256 KiB). Rows up to 16384 elements (every layer of
 * the common models up to 8B parameters) are dequantized once per call; longer rows take the chunked path. */
#define SL_MM_WBUF_FLOATS 16384

static void sl_f32_tile_scalar_1x1(const float *const *x, const float *const *w, int n16, float (*acc)[16]) {
    for (int k = 0; k < n16; k += 16)
        for (int l = 0; l < 16; l++) acc[0][l] = fmaf(x[0][k + l], w[0][k + l], acc[0][l]);
}

static const sl__f32_tiles sl_f32_tiles_scalar = {
    1, 1, {{sl_f32_tile_scalar_1x1, sl_f32_tile_scalar_1x1}, {sl_f32_tile_scalar_1x1, sl_f32_tile_scalar_1x1}}};

const sl__f32_tiles *sl__f32_tiles_get(void) {
#if SL_KCPU_X86
    switch (sl__kcpu_level()) {
    case SL_SIMD_AVX512: return &sl__f32_tiles_avx512;
    case SL_SIMD_AVX2: return &sl__f32_tiles_avx2;
    default: break;
    }
#endif
    return &sl_f32_tiles_scalar;
}

/* y[r][c] for c in [0, nw): weight row c (f32, n_in elements) at wbase + c * wstride bytes. y points at the
 * first output column. */
static void sl_mm_rows(const sl__f32_tiles *t, const uint8_t *wbase, size_t wstride, int nw, int n_in,
                       const float *x, int ldx, int n_rows, float *y, int ldy) {
    const int n16 = n_in & ~15;
    for (int c0 = 0; c0 < nw; c0 += t->ct) {
        const int nc = nw - c0 < t->ct ? nw - c0 : t->ct;
        const int full = nc == t->ct;
        const float *wp[SL_F32_TILE_MAX];
        for (int c = 0; c < nc; c++) wp[c] = (const float *)(wbase + (size_t)(c0 + c) * wstride);
        for (int r0 = 0; r0 < n_rows;) {
            const int multi = n_rows - r0 >= t->rt;
            const int nr = multi ? t->rt : 1;
            const float *xp[SL_F32_TILE_MAX];
            for (int r = 0; r < nr; r++) xp[r] = x + (size_t)(r0 + r) * ldx;
            float acc[SL_F32_TILE_MAX][16];
            memset(acc, 0, sizeof(float) * 16 * (size_t)(nr * nc));
            if (full) {
                t->fn[multi][1](xp, wp, n16, acc);
            } else {
                float acc1[SL_F32_TILE_MAX][16];
                for (int c = 0; c < nc; c++) {
                    memset(acc1, 0, sizeof(float) * 16 * (size_t)nr);
                    t->fn[multi][0](xp, wp + c, n16, acc1);
                    for (int r = 0; r < nr; r++) memcpy(acc[r * nc + c], acc1[r], sizeof acc1[r]);
                }
            }
            for (int r = 0; r < nr; r++)
                for (int c = 0; c < nc; c++)
                    y[(size_t)(r0 + r) * ldy + c0 + c] =
                        sl__dot_tail(xp[r], wp[c], n16, n_in, sl__fold16(acc[r * nc + c]));
            r0 += nr;
        }
    }
}

/* Rows longer than the stack buffer: one weight row at a time, dequantized chunk by chunk for each tile of
 * activation rows, with the lanes carried from chunk to chunk (same order as the one-pass path). */
static void sl_mm_rows_chunked(const sl__f32_tiles *t, int wtype, const uint8_t *wrow, int n_in, const float *x,
                               int ldx, int n_rows, float *y, int ldy, float *wbuf) {
    const int chunk = SL_MM_WBUF_FLOATS; /* a multiple of 32 (quant blocks) and 16 (lanes) */
    const int n16 = n_in & ~15;
    for (int r0 = 0; r0 < n_rows;) {
        const int multi = n_rows - r0 >= t->rt;
        const int nr = multi ? t->rt : 1;
        float acc[SL_F32_TILE_MAX][16];
        memset(acc, 0, sizeof(float) * 16 * (size_t)nr);
        float tail[SL_F32_TILE_MAX] = {0}; /* set by the last chunk */
        for (int k0 = 0; k0 < n_in; k0 += chunk) {
            const int k1 = n_in - k0 < chunk ? n_in : k0 + chunk;
            sl__dequantize_range(wtype, wrow, k0, k1, wbuf);
            const int m16 = (k1 < n16 ? k1 : n16) - k0; /* lanes part of this chunk */
            const float *xp[SL_F32_TILE_MAX];
            for (int r = 0; r < nr; r++) xp[r] = x + (size_t)(r0 + r) * ldx + k0;
            const float *wp = wbuf;
            t->fn[multi][0](xp, &wp, m16, acc);
            if (k1 == n_in) /* last chunk: fold, then the tail elements one by one */
                for (int r = 0; r < nr; r++) tail[r] = sl__dot_tail(xp[r], wbuf, m16, k1 - k0, sl__fold16(acc[r]));
        }
        for (int r = 0; r < nr; r++) y[(size_t)(r0 + r) * ldy] = tail[r];
        r0 += nr;
    }
}

void sl_k_matmul_f32(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in, const float *x,
                     int ldx, int n_rows, float *y, int ldy) {
    if (o0 >= o1 || n_rows <= 0 || n_in < 0 || !sl_dtype_supported(wtype)) return;
    const sl__f32_tiles *t = sl__f32_tiles_get();
    const uint8_t *W = (const uint8_t *)w;
    if (wtype == SL_DTYPE_F32) {
        sl_mm_rows(t, W + (size_t)o0 * w_row_bytes, w_row_bytes, o1 - o0, n_in, x, ldx, n_rows, y + o0, ldy);
        return;
    }
    float wbuf[SL_MM_WBUF_FLOATS]; /* [rows of the tile][n_in] f32, or one chunk of one row */
    if (n_in > SL_MM_WBUF_FLOATS) {
        for (int o = o0; o < o1; o++)
            sl_mm_rows_chunked(t, wtype, W + (size_t)o * w_row_bytes, n_in, x, ldx, n_rows, y + o, ldy, wbuf);
        return;
    }
    /* Weight rows dequantized per pass: as many as fit when several row tiles will reuse them; one register
     * tile's worth for a single row tile (decode), so the buffer stays in L1 between write and read. */
    int per_tile = n_in ? SL_MM_WBUF_FLOATS / n_in : o1 - o0;
    if (n_rows <= t->rt && per_tile > t->ct) per_tile = t->ct;
    if (per_tile > t->ct) per_tile -= per_tile % t->ct; /* whole register tiles */
    for (int o = o0; o < o1; o += per_tile) {
        const int nw = o1 - o < per_tile ? o1 - o : per_tile;
        for (int c = 0; c < nw; c++)
            sl__dequantize_range(wtype, W + (size_t)(o + c) * w_row_bytes, 0, n_in, wbuf + (size_t)c * n_in);
        sl_mm_rows(t, (const uint8_t *)wbuf, (size_t)n_in * sizeof(float), nw, n_in, x, ldx, n_rows, y + o, ldy);
    }
}
