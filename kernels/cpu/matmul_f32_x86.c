/*
 * matmul_f32_x86.c — AVX2 and AVX-512 register tiles of the f32 product (driver: matmul_f32.c).
 *
 * Each (row, output) pair keeps its own 16 canonical lanes (kcpu_impl.h): one zmm register on AVX-512, two
 * ymm registers (lanes 0-7 and 8-15) on AVX2, updated with one fma per element, so both paths give the
 * scalar reference's bits. Tiles: AVX2 3 rows x 2 outputs (12 accumulators + 2 weight vectors + 1 input in
 * the 16 ymm registers: 12 fmas per 10 loads), AVX-512 4 x 4 (16 accumulators + 4 + 1 of 32 registers,
 * 16 fmas per 8 loads), so the loops are bound by fma throughput rather than loads. Output widths are powers
 * of two so that the runtime's 16-column work units split into whole tiles.
 */
#include "kcpu_impl.h"

#if SL_KCPU_X86

#define SL_AVX2_RT 3
#define SL_AVX2_CT 2
#define SL_AVX512_RT 4
#define SL_AVX512_CT 4

SL_TARGET_AVX2 SL_INLINE void sl_f32_tile_avx2(const int R, const int C, const float *const *x, const float *const *w,
                                                int n16, float (*acc)[16]) {
    __m256 lo[SL_AVX2_RT][SL_AVX2_CT], hi[SL_AVX2_RT][SL_AVX2_CT]; /* lanes 0-7 and 8-15 of (r, c) */
    SL_UNROLL
    for (int r = 0; r < R; r++)
        SL_UNROLL
        for (int c = 0; c < C; c++) {
            lo[r][c] = _mm256_loadu_ps(acc[r * C + c]);
            hi[r][c] = _mm256_loadu_ps(acc[r * C + c] + 8);
        }
    for (int k = 0; k < n16; k += 16) {
        __m256 wv[SL_AVX2_CT];
        SL_UNROLL
        for (int c = 0; c < C; c++) wv[c] = _mm256_loadu_ps(w[c] + k);
        SL_UNROLL
        for (int r = 0; r < R; r++) {
            const __m256 xv = _mm256_loadu_ps(x[r] + k);
            SL_UNROLL
            for (int c = 0; c < C; c++) lo[r][c] = _mm256_fmadd_ps(xv, wv[c], lo[r][c]);
        }
        SL_UNROLL
        for (int c = 0; c < C; c++) wv[c] = _mm256_loadu_ps(w[c] + k + 8);
        SL_UNROLL
        for (int r = 0; r < R; r++) {
            const __m256 xv = _mm256_loadu_ps(x[r] + k + 8);
            SL_UNROLL
            for (int c = 0; c < C; c++) hi[r][c] = _mm256_fmadd_ps(xv, wv[c], hi[r][c]);
        }
    }
    SL_UNROLL
    for (int r = 0; r < R; r++)
        SL_UNROLL
        for (int c = 0; c < C; c++) {
            _mm256_storeu_ps(acc[r * C + c], lo[r][c]);
            _mm256_storeu_ps(acc[r * C + c] + 8, hi[r][c]);
        }
    SL_AVX2_LEAVE();
}

SL_TARGET_AVX512 SL_INLINE void sl_f32_tile_avx512(const int R, const int C, const float *const *x,
                                                    const float *const *w, int n16, float (*acc)[16]) {
    __m512 a[SL_AVX512_RT][SL_AVX512_CT];
    SL_UNROLL
    for (int r = 0; r < R; r++)
        SL_UNROLL
        for (int c = 0; c < C; c++) a[r][c] = _mm512_loadu_ps(acc[r * C + c]);
    for (int k = 0; k < n16; k += 16) {
        __m512 wv[SL_AVX512_CT];
        SL_UNROLL
        for (int c = 0; c < C; c++) wv[c] = _mm512_loadu_ps(w[c] + k);
        SL_UNROLL
        for (int r = 0; r < R; r++) {
            const __m512 xv = _mm512_loadu_ps(x[r] + k);
            SL_UNROLL
            for (int c = 0; c < C; c++) a[r][c] = _mm512_fmadd_ps(xv, wv[c], a[r][c]);
        }
    }
    SL_UNROLL
    for (int r = 0; r < R; r++)
        SL_UNROLL
        for (int c = 0; c < C; c++) _mm512_storeu_ps(acc[r * C + c], a[r][c]);
    sl__avx512_clean();
}

#define SL_F32_INSTANCE(ISA, TARGET, R, C)                                                                \
    TARGET static void sl_f32_tile_##ISA##_##R##x##C(const float *const *x, const float *const *w, int n16, \
                                                     float (*acc)[16]) {                                  \
        sl_f32_tile_##ISA(R, C, x, w, n16, acc);                                                          \
    }
SL_F32_INSTANCE(avx2, SL_TARGET_AVX2, 3, 2)
SL_F32_INSTANCE(avx2, SL_TARGET_AVX2, 3, 1)
SL_F32_INSTANCE(avx2, SL_TARGET_AVX2, 1, 2)
SL_F32_INSTANCE(avx2, SL_TARGET_AVX2, 1, 1)
SL_F32_INSTANCE(avx512, SL_TARGET_AVX512, 4, 4)
SL_F32_INSTANCE(avx512, SL_TARGET_AVX512, 4, 1)
SL_F32_INSTANCE(avx512, SL_TARGET_AVX512, 1, 4)
SL_F32_INSTANCE(avx512, SL_TARGET_AVX512, 1, 1)

const sl__f32_tiles sl__f32_tiles_avx2 = {
    SL_AVX2_RT, SL_AVX2_CT,
    {{sl_f32_tile_avx2_1x1, sl_f32_tile_avx2_1x2}, {sl_f32_tile_avx2_3x1, sl_f32_tile_avx2_3x2}},
};
const sl__f32_tiles sl__f32_tiles_avx512 = {
    SL_AVX512_RT, SL_AVX512_CT,
    {{sl_f32_tile_avx512_1x1, sl_f32_tile_avx512_1x4}, {sl_f32_tile_avx512_4x1, sl_f32_tile_avx512_4x4}},
};

#else
typedef int sl__matmul_f32_x86_unused; /* ISO C wants a declaration in every translation unit */
#endif
