/*
 * ops.c — the element-wise and row operations of a transformer layer: RMS norm, RoPE, SwiGLU, residual
 * add, softmax, and the f32 dot product.
 *
 * Reductions use the canonical orders of kcpu_impl.h (the dot product is the 1 x 1 tile of the f32 matmul,
 * so a norm's sum of squares, an attention score and a product output are computed alike) and exp is the
 * canonical one, so the AVX2 loops here give the scalar bits. These loops are memory-light and short (one
 * row of a few thousand values), so AVX-512 adds nothing over AVX2 and the AVX-512 level runs the AVX2 code.
 */
#include <float.h>

#include "kcpu_impl.h"

#if SL_KCPU_X86
static int sl_ops_avx2(void) { return sl__kcpu_level() >= SL_SIMD_AVX2; }
#endif

float sl_k_dot_f32(const float *a, const float *b, int n) {
    if (n <= 0) return 0.0f;
    const int n16 = n & ~15;
    float acc[1][16] = {{0}};
    sl__f32_tiles_get()->fn[0][0](&a, &b, n16, acc);
    return sl__dot_tail(a, b, n16, n, sl__fold16(acc[0]));
}

/* ---- RMS norm ------------------------------------------------------------------------------------------ */

static void sl_scale_mul_scalar(const float *x, float s, const float *w, float *y, int n) {
    for (int i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

#if SL_KCPU_X86
SL_TARGET_AVX2 static void sl_scale_mul_avx2(const float *x, float s, const float *w, float *y, int n) {
    const __m256 vs = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(w + i)));
    SL_AVX2_LEAVE();
    for (; i < n; i++) y[i] = x[i] * s * w[i];
}
#endif

void sl_k_rms_norm(const float *x, const float *w, float *y, int n, float eps) {
    if (n <= 0) return;
    const float mean = sl_k_dot_f32(x, x, n) / (float)n;
    const float s = 1.0f / sqrtf(mean + eps);
#if SL_KCPU_X86
    if (sl_ops_avx2()) {
        sl_scale_mul_avx2(x, s, w, y, n);
        return;
    }
#endif
    sl_scale_mul_scalar(x, s, w, y, n);
}

/* ---- RoPE ------------------------------------------------------------------------------------------------ */

/* cos and sin of pair i's angle. The angle in double: a float angle pos * theta_i is off by up to pos * 2^-24
 * rad (2e-3 rad at pos 32768, moving a rotated pair by 0.2% of its length); cos and sin are rounded once. */
static inline void sl_rope_cs(int32_t pos, int i, int n_rot, float freq_base, float freq_scale, float *c, float *s) {
    const double theta = (double)pos * (double)freq_scale * pow((double)freq_base, -2.0 * i / (double)n_rot);
    double sd, cd;
    sincos(theta, &sd, &cd);
    *c = (float)cd;
    *s = (float)sd;
}

/* Rotates pair i of every head by (c, s). */
static inline void sl_rope_pair(float *x, int n_heads, int head_dim, int i, float c, float s) {
    for (int h = 0; h < n_heads; h++) {
        float *p = x + (size_t)h * head_dim + 2 * i;
        const double x0 = p[0], x1 = p[1];
        /* float x float products are exact in double, so fused or not, every machine rounds once */
        p[0] = (float)(x0 * c - x1 * s);
        p[1] = (float)(x0 * s + x1 * c);
    }
}

void sl_k_rope_angles(int32_t pos, int n_rot, float freq_base, float freq_scale, float *cs) {
    for (int i = 0; i < n_rot / 2; i++) sl_rope_cs(pos, i, n_rot, freq_base, freq_scale, &cs[2 * i], &cs[2 * i + 1]);
}

void sl_k_rope_apply(float *x, int n_heads, int head_dim, int n_rot, const float *cs) {
    if (n_rot > head_dim) n_rot = head_dim;
    for (int i = 0; i < n_rot / 2; i++) sl_rope_pair(x, n_heads, head_dim, i, cs[2 * i], cs[2 * i + 1]);
}

/* Pair by pair, with no angle buffer: any n_rot (the two-step form above takes at most SL_K_ROPE_MAX_ROT). */
void sl_k_rope(float *x, int n_heads, int head_dim, int n_rot, int32_t pos, float freq_base, float freq_scale) {
    if (n_rot > head_dim) n_rot = head_dim;
    for (int i = 0; i < n_rot / 2; i++) {
        float c, s;
        sl_rope_cs(pos, i, n_rot, freq_base, freq_scale, &c, &s);
        sl_rope_pair(x, n_heads, head_dim, i, c, s);
    }
}

/* ---- SwiGLU, add, softmax: the AVX2 loops do whole vectors and return where the scalar tail starts ------ */

#if SL_KCPU_X86
SL_TARGET_AVX2 static int64_t sl_swiglu_avx2(const float *gate, const float *up, float *out, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = sl__exp8_avx2(_mm256_xor_ps(g, sign));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    SL_AVX2_LEAVE();
    return i;
}

SL_TARGET_AVX2 static int64_t sl_add_avx2(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    SL_AVX2_LEAVE();
    return i;
}

/* x[i] = exp(x[i] - max) for whole vectors; returns the canonical lanes' partial sums folded (over the first
 * n16 values) through *sum and the count done. */
SL_TARGET_AVX2 static int sl_exp_sum_avx2(float *x, int n, float max, float *sum) {
    const __m256 vmax = _mm256_set1_ps(max);
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 a = sl__exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        const __m256 b = sl__exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vmax));
        _mm256_storeu_ps(x + i, a);
        _mm256_storeu_ps(x + i + 8, b);
        lo = _mm256_add_ps(lo, a);
        hi = _mm256_add_ps(hi, b);
    }
    *sum = sl__fold16_avx2(lo, hi);
    /* the tail's exps too (the caller adds them one by one): masked, so nothing past n is read or written */
    for (int j = i; j < n; j += 8) {
        const int left = n - j < 8 ? n - j : 8;
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256 e = sl__exp8_avx2(_mm256_sub_ps(_mm256_maskload_ps(x + j, mask), vmax));
        _mm256_maskstore_ps(x + j, mask, e);
    }
    SL_AVX2_LEAVE();
    return i;
}

SL_TARGET_AVX2 static int sl_scale_avx2(float *x, int n, float s) {
    const __m256 vs = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
    SL_AVX2_LEAVE();
    return i;
}
#endif

void sl_k_swiglu(const float *gate, const float *up, float *out, int64_t n) {
    int64_t i = 0;
#if SL_KCPU_X86
    if (sl_ops_avx2()) i = sl_swiglu_avx2(gate, up, out, n);
#endif
    for (; i < n; i++) out[i] = gate[i] / (1.0f + sl__exp_canon(-gate[i])) * up[i];
}

void sl_k_add(float *y, const float *x, int64_t n) {
    int64_t i = 0;
#if SL_KCPU_X86
    if (sl_ops_avx2()) i = sl_add_avx2(y, x, n);
#endif
    for (; i < n; i++) y[i] += x[i];
}

float sl__exp_sum(float *x, int n, float max) {
    int i = 0, tail_done = 0;
    float sum;
#if SL_KCPU_X86
    if (sl_ops_avx2()) {
        i = sl_exp_sum_avx2(x, n, max, &sum);
        tail_done = 1;
    } else
#endif
    {
        float acc[16] = {0};
        for (; i + 16 <= n; i += 16)
            for (int l = 0; l < 16; l++) {
                x[i + l] = sl__exp_canon(x[i + l] - max);
                acc[l] += x[i + l];
            }
        sum = sl__fold16(acc);
    }
    for (; i < n; i++) {
        if (!tail_done) x[i] = sl__exp_canon(x[i] - max);
        sum += x[i];
    }
    return sum;
}

/* ---- sampling weights and argmax (the sampler's passes over the vocabulary) ------------------------------------ */

static inline float sl_sample_w(float x, float m, float inv_t, float floor_e) {
    const float e = sl__exp_canon((x - m) * inv_t);
    return e >= floor_e ? e : 0.0f;
}

#if SL_KCPU_X86
/* One whole chunk on 16 lanes (two ymm): the scalar lanes' order exactly. */
SL_TARGET_AVX2 static float sl_sample_chunk_avx2(const float *x, float m, float inv_t, float floor_e, float *e) {
    const __m256 vm = _mm256_set1_ps(m), vt = _mm256_set1_ps(inv_t), vf = _mm256_set1_ps(floor_e);
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int i = 0; i < SL_K_SAMPLE_CHUNK; i += 16) {
        __m256 a = sl__exp8_avx2(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vt));
        __m256 b = sl__exp8_avx2(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm), vt));
        a = _mm256_and_ps(a, _mm256_cmp_ps(a, vf, _CMP_GE_OQ));
        b = _mm256_and_ps(b, _mm256_cmp_ps(b, vf, _CMP_GE_OQ));
        _mm256_storeu_ps(e + i, a);
        _mm256_storeu_ps(e + i + 8, b);
        lo = _mm256_add_ps(lo, a);
        hi = _mm256_add_ps(hi, b);
    }
    const float s = sl__fold16_avx2(lo, hi);
    SL_AVX2_LEAVE();
    return s;
}

/* The maximum of x[0, n) in two passes, with no loop-carried blend (a blend chain per vector was the cost):
 * the largest value with four independent max chains (max_ps(v, m) returns m when v is NaN, so NaN is
 * skipped, and max is order-free), then the first index holding it, eight at a time with an early exit.
 * Returns that index, or -1 when nothing exceeds -inf: the strict scalar scan's answer. */
SL_TARGET_AVX2 static int32_t sl_argmax_avx2(const float *x, int n) {
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
        m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
        m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
    }
    for (; i + 8 <= n; i += 8) m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    float mv[8];
    _mm256_storeu_ps(mv, _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
    float best = -INFINITY;
    for (int l = 0; l < 8; l++) best = mv[l] > best ? mv[l] : best;
    for (; i < n; i++) best = x[i] > best ? x[i] : best;
    int32_t at = -1;
    if (best > -INFINITY) {
        const __m256 vb = _mm256_set1_ps(best);
        int j = 0;
        for (; j + 8 <= n; j += 8) {
            const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), vb, _CMP_EQ_OQ));
            if (mask) {
                at = j + __builtin_ctz((unsigned)mask);
                break;
            }
        }
        for (; at < 0 && j < n; j++)
            if (x[j] == best) at = j;
    }
    SL_AVX2_LEAVE();
    return at;
}
#endif

#if SL_KCPU_X86
SL_TARGET_AVX2 static int sl_clean_logits_avx2(const float *x, float *y, int n) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY), big = _mm256_set1_ps(FLT_MAX);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 c = _mm256_min_ps(v, big); /* +inf -> FLT_MAX; NaN gives FLT_MAX here, replaced next */
        _mm256_storeu_ps(y + i, _mm256_blendv_ps(c, ninf, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    }
    SL_AVX2_LEAVE();
    return i;
}
#endif

void sl_k_clean_logits(const float *x, float *y, int n) {
    int i = 0;
#if SL_KCPU_X86
    if (sl_ops_avx2()) i = sl_clean_logits_avx2(x, y, n);
#endif
    for (; i < n; i++) {
        const float v = x[i] == x[i] ? x[i] : -INFINITY;
        y[i] = v > FLT_MAX ? FLT_MAX : v;
    }
}

double sl_k_sample_weights(const float *x, int n, float m, float inv_t, float floor_e, float *e, float *chunk) {
    double z = 0.0;
    int i = 0, k = 0;
    for (; i + SL_K_SAMPLE_CHUNK <= n; i += SL_K_SAMPLE_CHUNK, k++) {
        float s;
#if SL_KCPU_X86
        if (sl_ops_avx2()) {
            s = sl_sample_chunk_avx2(x + i, m, inv_t, floor_e, e + i);
        } else
#endif
        {
            float acc[16] = {0};
            for (int j = 0; j < SL_K_SAMPLE_CHUNK; j++) {
                e[i + j] = sl_sample_w(x[i + j], m, inv_t, floor_e);
                acc[j % 16] += e[i + j];
            }
            s = sl__fold16(acc);
        }
        chunk[k] = s;
        z += (double)s;
    }
    if (i < n) {
        float s = 0.0f;
        for (; i < n; i++) {
            e[i] = sl_sample_w(x[i], m, inv_t, floor_e);
            s += e[i];
        }
        chunk[k] = s;
        z += (double)s;
    }
    return z;
}

int32_t sl_k_argmax(const float *x, int n) {
#if SL_KCPU_X86
    if (sl_ops_avx2()) return sl_argmax_avx2(x, n);
#endif
    int32_t best = -1;
    float bv = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > bv) bv = x[i], best = i; /* strict: ties keep the lowest id; NaN never compares greater */
    return best;
}

void sl__scale(float *x, int n, float s) {
    int i = 0;
#if SL_KCPU_X86
    if (sl_ops_avx2()) i = sl_scale_avx2(x, n, s);
#endif
    for (; i < n; i++) x[i] *= s;
}

void sl_k_softmax(float *x, int n) {
    if (n <= 0) return;
    float max = x[0];
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    sl__scale(x, n, 1.0f / sl__exp_sum(x, n, max));
}
