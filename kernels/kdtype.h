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
    SL_DTYPE_Q8_0 = 8,
    SL_DTYPE_Q8_1 = 9, /* activations only: Q8_0 plus the block's scaled sum, for Q4_1 products */
    SL_DTYPE_BF16 = 30,
    SL_DTYPE_COUNT = 40, /* bound on ids, for tables indexed by type */
} sl_dtype;

#define SL_QK4_0 32
#define SL_QK4_1 32
#define SL_QK8_0 32
#define SL_QK8_1 32

typedef uint16_t sl_fp16_t; /* IEEE half, raw bits */
typedef uint16_t sl_bf16_t; /* bfloat16, raw bits */

/* Block layouts, exactly as GGUF stores them (GGML's). */
typedef struct { sl_fp16_t d; uint8_t qs[SL_QK4_0 / 2]; } sl_block_q4_0;           /* x = (q - 8) * d */
typedef struct { sl_fp16_t d, m; uint8_t qs[SL_QK4_1 / 2]; } sl_block_q4_1;        /* x = q * d + m */
typedef struct { sl_fp16_t d; int8_t qs[SL_QK8_0]; } sl_block_q8_0;                /* x = q * d */
typedef struct { sl_fp16_t d, s; int8_t qs[SL_QK8_1]; } sl_block_q8_1;             /* s = d * sum(q) */
/* Nibble order inside qs: element j (j < 16) is the low nibble of qs[j], element j + 16 the high nibble. */

/* Name ("q4_1"), elements per block (1 for plain types), bytes per block; NULL/0 for unknown ids. */
const char *sl_dtype_name(int type);
int sl_dtype_block_elems(int type);
size_t sl_dtype_block_bytes(int type);
/* Bytes of a row of n elements, or 0 if n is not a multiple of the block size or the type is unknown. */
size_t sl_dtype_row_bytes(int type, int64_t n);
/* 1 if the kernels can compute with this type (as weights). */
int sl_dtype_supported(int type);

#endif /* SL_KDTYPE_H */
