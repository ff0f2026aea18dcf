/*
 * kdtype.h — element types of tensors, shared by every kernel family (cpu/, cuda/) and the layers above.
 *
 * The numeric values are GGML's type ids, so a GGUF tensor's type field maps onto sl_dtype without a table.
 * Quantized types store rows as a sequence of blocks; a row's length must be a multiple of the block size.
 */
#ifndef SL_KDTYPE_H
#define SL_KDTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum sl_dtype {
    SL_DTYPE_F32 = 0,
    SL_DTYPE_F16 = 1,
    SL_DTYPE_Q4_0 = 2,
    SL_DTYPE_Q4_1 = 3,
    SL_DTYPE_Q5_0 = 6, /* ids 4 and 5 were GGML's Q4_2 and Q4_3, removed in 2023 */
    SL_DTYPE_Q5_1 = 7,
    SL_DTYPE_Q8_0 = 8,
    SL_DTYPE_Q8_1 = 9, /* activations only: Q8_0 plus the block's scaled sum, for Q4_1/Q5_1 products */
    SL_DTYPE_Q2_K = 10,
    SL_DTYPE_Q3_K = 11,
    SL_DTYPE_Q4_K = 12,
    SL_DTYPE_Q5_K = 13,
    SL_DTYPE_Q6_K = 14,
    SL_DTYPE_Q8_K = 15, /* activations only: the K-quants' products */
    SL_DTYPE_IQ4_NL = 20,
    SL_DTYPE_BF16 = 30,
    SL_DTYPE_Q8_0S = 40, /* ours, activations only (an id past GGML's): Q8_0 plus the exact sum of its levels,
                          * for Q4_0/Q8_0 products on unsigned x signed integer instructions */
    SL_DTYPE_COUNT = 48, /* bound on ids, for tables indexed by type */
} sl_dtype;

#define SL_QK4_0 32
#define SL_QK4_1 32
#define SL_QK8_0 32
#define SL_QK8_1 32
#define SL_QK5_0 32
#define SL_QK5_1 32
#define SL_QK4_NL 32
#define SL_QK_K 256 /* super-block of the K-quants */

typedef uint16_t sl_fp16_t; /* IEEE half, raw bits */
typedef uint16_t sl_bf16_t; /* bfloat16, raw bits */

/* Block layouts, exactly as GGUF stores them (GGML's). */
typedef struct { sl_fp16_t d; uint8_t qs[SL_QK4_0 / 2]; } sl_block_q4_0;           /* x = (q - 8) * d */
typedef struct { sl_fp16_t d, m; uint8_t qs[SL_QK4_1 / 2]; } sl_block_q4_1;        /* x = q * d + m */
typedef struct { sl_fp16_t d; int8_t qs[SL_QK8_0]; } sl_block_q8_0;                /* x = q * d */
typedef struct { sl_fp16_t d, s; int8_t qs[SL_QK8_1]; } sl_block_q8_1;             /* s = d * sum(q) */
typedef struct { sl_fp16_t d; int16_t sum; int8_t qs[SL_QK8_0]; } sl_block_q8_0s;  /* sum = sum(q), exact */
/* Nibble order inside qs: element j (j < 16) is the low nibble of qs[j], element j + 16 the high nibble. */
typedef struct { sl_fp16_t d; uint8_t qh[4]; uint8_t qs[SL_QK5_0 / 2]; } sl_block_q5_0; /* x = (q - 16) * d */
typedef struct { sl_fp16_t d, m; uint8_t qh[4]; uint8_t qs[SL_QK5_1 / 2]; } sl_block_q5_1; /* x = q * d + m */
/* Q5: low 4 bits as Q4's nibbles; bit 4 of element j is bit j of qh (read as a little-endian uint32). */
typedef struct { sl_fp16_t d; uint8_t qs[SL_QK4_NL / 2]; } sl_block_iq4_nl; /* x = d * kvalues[q], Q4 nibbles */

/*
 * K-quants: super-blocks of 256 elements in sub-blocks of 16 or 32, each sub-block with its own small integer
 * scale (and min) that multiply the super-block's fp16 d (and dmin). Element order inside a super-block, per
 * 128-element half h and 32-element chunk c of it (element 128 h + 32 c + l, l < 32):
 *   Q2_K: level (qs[32 h + l] >> 2c) & 3; sub-block scale scales[e / 16] & 15, min scales[e / 16] >> 4;
 *         x = d * sc * q - dmin * m
 *   Q3_K: level ((qs[32 h + l] >> 2c) & 3) - (hmask[l] bit (4 h + c) ? 0 : 4); 16 6-bit scales packed in 12
 *         bytes (low 4 bits in bytes 0-7, nibbles of e/16 and e/16 - 8; high 2 bits in bytes 8-11), minus 32;
 *         x = d * (sc - 32) * q
 *   Q4_K/Q5_K: chunks 2p and 2p + 1 take the low and high nibbles of qs[32 p + l]; Q5_K's bit 4 of chunk v
 *         is bit v of qh[l]; 8 6-bit scales and mins packed in 12 bytes (get_scale_min_k4);
 *         x = d * sc * q - dmin * m
 *   Q6_K: chunk c of half h: low 4 bits from ql[64 h + l] (c = 0), ql[64 h + 32 + l] (c = 1), their high
 *         nibbles (c = 2, 3); high 2 bits (qh[32 h + l] >> 2c) & 3; int8 scale scales[e / 16];
 *         x = d * sc * (q - 32)
 *   Q8_K: x = d * q; bsums[k] = sum of q over elements 16 k .. 16 k + 15
 */
typedef struct { uint8_t scales[SL_QK_K / 16]; uint8_t qs[SL_QK_K / 4]; sl_fp16_t d, dmin; } sl_block_q2_K;
typedef struct { uint8_t hmask[SL_QK_K / 8]; uint8_t qs[SL_QK_K / 4]; uint8_t scales[12]; sl_fp16_t d; } sl_block_q3_K;
typedef struct { sl_fp16_t d, dmin; uint8_t scales[12]; uint8_t qs[SL_QK_K / 2]; } sl_block_q4_K;
typedef struct { sl_fp16_t d, dmin; uint8_t scales[12]; uint8_t qh[SL_QK_K / 8]; uint8_t qs[SL_QK_K / 2]; } sl_block_q5_K;
typedef struct { uint8_t ql[SL_QK_K / 2]; uint8_t qh[SL_QK_K / 4]; int8_t scales[SL_QK_K / 16]; sl_fp16_t d; } sl_block_q6_K;
typedef struct { float d; int8_t qs[SL_QK_K]; int16_t bsums[SL_QK_K / 16]; } sl_block_q8_K;

/* Name ("q4_1"), elements per block (1 for plain types), bytes per block; NULL/0 for unknown ids. */
const char *sl_dtype_name(int type);
int sl_dtype_block_elems(int type);
size_t sl_dtype_block_bytes(int type);
/* Bytes of a row of n elements, or 0 if n is not a multiple of the block size or the type is unknown. */
size_t sl_dtype_row_bytes(int type, int64_t n);
/* 1 if the kernels can compute with this type (as weights). */
int sl_dtype_supported(int type);

#endif /* SL_KDTYPE_H */
