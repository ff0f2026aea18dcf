/*
 * kcpu.h — the CPU kernels: leaf compute on raw pointers, sizes and strides.
 *
 * Kernels never allocate, never spawn threads and know nothing of requests or tensors. The CPU backend in
 * runtime/ splits work across its thread pool by calling a kernel on disjoint ranges (output rows of a
 * product, heads of attention), so every kernel here takes the range it must cover.
 *
 * Batch invariance: the value computed for one (row, output) pair never depends on how many rows share the
 * call, which range a thread got, or which SIMD path ran for the *other* rows. Each dot product is reduced in
 * a fixed order (block by block, fixed lane folding). The batching engine relies on this so that a sequence
 * produces the same tokens alone and in a batch.
 *
 * SIMD: AVX-512 and AVX2/FMA paths are chosen at run time (sl_kcpu_init reads CPUID once); a scalar path
 * exists for every kernel and is the reference the tests compare against. All paths of one kernel give
 * results within the stated tolerance of the scalar one; the path is fixed per process, so invariance holds.
 */
#ifndef SL_KCPU_H
#define SL_KCPU_H

#include <stddef.h>
#include <stdint.h>

#include "kdtype.h"

/* SIMD level in use. */
typedef enum sl_simd_level {
    SL_SIMD_SCALAR = 0,
    SL_SIMD_AVX2 = 1,   /* AVX2 + FMA + F16C */
    SL_SIMD_AVX512 = 2, /* AVX-512 F/BW/VL (+VNNI when present) */
} sl_simd_level;

/* Detects the CPU once (thread-safe, idempotent). The environment variable SLUICE_SIMD=scalar|avx2|avx512
 * caps the level (tests use it to compare paths). */
void sl_kcpu_init(void);
sl_simd_level sl_kcpu_simd(void);
const char *sl_kcpu_simd_name(void);
/* Forces a level for tests (clamped to what the CPU has); returns the level now in use. */
sl_simd_level sl_kcpu_set_simd(sl_simd_level level);

/* ---- conversions ---------------------------------------------------------------------------------- */
float sl_fp16_to_f32(sl_fp16_t h);
sl_fp16_t sl_f32_to_fp16(float f); /* round to nearest even */
float sl_bf16_to_f32(sl_bf16_t h);
sl_bf16_t sl_f32_to_bf16(float f); /* round to nearest even */

/* Dequantizes one row of n elements of `type` (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL,
 * Q2_K .. Q6_K, Q8_K) into f32. */
void sl_k_dequantize_row(int type, const void *src, float *dst, int64_t n);
/* Quantizes one row of n f32 values into `type` (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K .. Q6_K,
 * Q8_K, IQ4_NL) with GGML's reference algorithms (IQ4_NL: llama-quantize's, see quant_k.c),
 * so files written by our GGUF writer match what llama.cpp would write. n must be a multiple of the block. */
void sl_k_quantize_row(int type, const float *src, void *dst, int64_t n);

/* ---- matrix products -------------------------------------------------------------------------------- */
/*
 * Y = X · Wᵀ over a range of weight rows:
 *   W:  [n_out][n_in] in `wtype`, rows w_row_bytes apart (a GGUF weight "ne0 = n_in, ne1 = n_out")
 *   X:  [n_rows][n_in], f32, rows ldx floats apart
 *   Y:  [n_rows][n_out], f32, rows ldy floats apart; only columns [o0, o1) are written
 */
void sl_k_matmul_f32(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in,
                     const float *x, int ldx, int n_rows, float *y, int ldy);

/* Fast mode for quantized weights: activations are first quantized once per row into the type returned by
 * sl_k_act_type(wtype) (Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL weights, Q8_1 for Q4_1/Q5_1, Q8_K for Q2_K .. Q6_K),
 * then products run on integers. */
int sl_k_act_type(int wtype);
/*   XQ: [n_rows] rows of sl_dtype_row_bytes(sl_k_act_type(wtype), n_in) bytes, xq_row_bytes apart.
 * For Q4_0, Q4_1 and Q8_0 this is the scalar reference of the recipe (matmul_q.c); their fast products run
 * on packed weights (sl_k_matmul_qp). The other types compute here at full speed. */
void sl_k_matmul_q(int wtype, const void *w, size_t w_row_bytes, int o0, int o1, int n_in,
                   const void *xq, size_t xq_row_bytes, int n_rows, float *y, int ldy);

/* Packed weights (Q4_0, Q4_1, Q8_0): groups of SL_QP_GROUP output rows interleaved block by block (layout in
 * matmul_q.c), made once at load; the same number of bytes as the GGUF rows, padded to whole groups. */
#define SL_QP_GROUP 16
int sl_k_pack_supported(int wtype);
/* Bytes of the packed form of an [n_out][n_in] weight (0 for an unsupported type or shape). */
size_t sl_k_packed_bytes(int wtype, int n_out, int n_in);
/* packed = w ([n_out] GGUF rows, w_row_bytes apart) in the packed layout. */
void sl_k_pack_q(int wtype, const void *w, size_t w_row_bytes, int n_out, int n_in, void *packed);
/* GGUF row `row` of a packed weight back into out (sl_dtype_row_bytes(wtype, n_in) bytes). */
void sl_k_unpack_q_row(int wtype, const void *packed, int n_in, int row, void *out);
/* Activation rows for the fast products of wtype: the sl_k_act_type(wtype) blocks of the row, and for a type
 * with packed products (sl_k_pack_supported) then one f32 pair per block: the block's d and (Q8_1) s, the f16
 * fields converted (exactly), so a register tile broadcasts them straight from memory instead of converting
 * them per block and row. sl_k_matmul_q reads the blocks alone, so one such row serves both. */
size_t sl_k_act_row_bytes(int wtype, int n_in);
void sl_k_quantize_act_row(int wtype, const float *x, void *dst, int n_in);
/* sl_k_matmul_q on packed weights, xq rows made by sl_k_quantize_act_row, outputs [o0, o1) (o1 <= n_out). An o0
 * that is a multiple of SL_QP_GROUP takes the SIMD tiles; another runs the scalar code (same bits). */
void sl_k_matmul_qp(int wtype, const void *packed, int o0, int o1, int n_in, const void *xq, size_t xq_row_bytes,
                    int n_rows, float *y, int ldy);

/* ---- element-wise and row operations -------------------------------------------------------------- */
/* y = x / sqrt(mean(x²) + eps) * w, for one row of n (y may alias x). */
void sl_k_rms_norm(const float *x, const float *w, float *y, int n, float eps);
/* In-place RoPE, llama "normal" layout: within each head, adjacent pairs (2i, 2i+1) rotate by
 * pos * freq_scale * base^(-2i/n_rot). x: [n_heads][head_dim]; only the first n_rot dims rotate. */
void sl_k_rope(float *x, int n_heads, int head_dim, int n_rot, int32_t pos, float freq_base, float freq_scale);
/* The same in two halves, so the angles of a position are computed once for every layer and head:
 * cs[2i], cs[2i + 1] = cos, sin of pair i's angle (n_rot <= SL_K_ROPE_MAX_ROT), then the rotation. */
#define SL_K_MAX_HEAD_DIM 1024 /* the largest head_dim the kernels take (RoPE's angles, attention's query
                                * registers); models/model.c refuses larger heads with this bound */
#define SL_K_ROPE_MAX_ROT SL_K_MAX_HEAD_DIM
void sl_k_rope_angles(int32_t pos, int n_rot, float freq_base, float freq_scale, float *cs);
void sl_k_rope_apply(float *x, int n_heads, int head_dim, int n_rot, const float *cs);
/* out = silu(gate) * up, n elements (out may alias gate). */
void sl_k_swiglu(const float *gate, const float *up, float *out, int64_t n);
/* y += x, n elements. */
void sl_k_add(float *y, const float *x, int64_t n);
/* In-place softmax over n values; returns nothing, max-subtracted for stability. */
void sl_k_softmax(float *x, int n);
/* Sampling weights of a temperature draw (batching/sampler.c): e[i] = exp((x[i] - m) * inv_t) with the
 * canonical exp (x[i] = -inf gives 0), set to 0 where it falls below floor_e (min-p; 0 keeps all). chunk[k] =
 * the sum of e over elements [k * SL_K_SAMPLE_CHUNK, (k + 1) * SL_K_SAMPLE_CHUNK) in float, as 16 lane sums
 * (lane l takes the elements i = l mod 16 in order) folded canonically, then the tail one by one; returns the
 * total, the chunks added in order in double. Every SIMD level gives the same bits. chunk holds
 * ceil(n / SL_K_SAMPLE_CHUNK) entries; m must be >= every x[i] (the values are <= 0 before exp). */
#define SL_K_SAMPLE_CHUNK 256
double sl_k_sample_weights(const float *x, int n, float m, float inv_t, float floor_e, float *e, float *chunk);
/* y[i] = x[i] with NaN made -inf and +inf made FLT_MAX (the sampler's clean logits; y may alias x). */
void sl_k_clean_logits(const float *x, float *y, int n);
/* Index of the largest of x[0, n) (the first on ties; NaN never wins), -1 when none exceeds -inf. */
int32_t sl_k_argmax(const float *x, int n);
/* Dot product of two f32 vectors (fixed reduction order). */
float sl_k_dot_f32(const float *a, const float *b, int n);

/* ---- attention over the paged KV cache -------------------------------------------------------------- */
/*
 * The KV cache of one layer is a pool of token slots: K and V are [n_slots][n_head_kv][head_dim] in kv_type
 * (F32 or F16). A sequence's token t lives in slot block_table[t / block_size] * block_size + t % block_size.
 * (Layout documented once in batching/kv_layout.h; this kernel only sees slots.)
 *
 * For one query token: out[h] = softmax(q[h] · K[0..n_ctx)ᵀ * scale) · V[0..n_ctx), for heads [h0, h1),
 * with query head h reading KV head h / (n_head / n_head_kv) (grouped-query attention).
 *   q:   [n_head][head_dim] f32        out: [n_head][head_dim] f32 (only heads [h0, h1) written)
 *   scratch: at least n_ctx floats
 * The query sees tokens [0, n_ctx) of its sequence (causality is the caller's choice of n_ctx).
 */
void sl_k_attention(const float *q, float *out, int h0, int h1, int n_head, int n_head_kv, int head_dim,
                    const void *k_pool, const void *v_pool, int kv_type, const int32_t *block_table,
                    int block_size, int n_ctx, float scale, float *scratch);
/* Writes one token's K or V ([n_head_kv][head_dim] f32) into its slot of a pool of kv_type. */
void sl_k_kv_store(void *pool, int kv_type, int64_t slot, const float *src, int n_head_kv, int head_dim);

#endif /* SL_KCPU_H */
