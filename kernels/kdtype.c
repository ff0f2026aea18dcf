/*
 * kdtype.c — the table behind kdtype.h: name, block shape and byte size of each element type.
 *
 * One row per type we know, indexed by GGML's type id (so a GGUF tensor's type field indexes it directly);
 * every other id reads as unknown (NULL name, zero sizes), which is how callers detect a type they cannot
 * load. Sizes come from the block structs themselves, so the table cannot drift from the layouts.
 */
#include "kdtype.h"

typedef struct sl_dtype_info {
    const char *name; /* NULL: unknown id */
    int block_elems;  /* elements per block; 1 for plain types */
    size_t block_bytes;
    int weight_ok; /* 1 if the kernels compute with it as weights (Q8_1 is an activation format only) */
} sl_dtype_info;

static const sl_dtype_info sl_dtype_table[SL_DTYPE_COUNT] = {
    [SL_DTYPE_F32] = {"f32", 1, sizeof(float), 1},
    [SL_DTYPE_F16] = {"f16", 1, sizeof(sl_fp16_t), 1},
    [SL_DTYPE_BF16] = {"bf16", 1, sizeof(sl_bf16_t), 1},
    [SL_DTYPE_Q4_0] = {"q4_0", SL_QK4_0, sizeof(sl_block_q4_0), 1},
    [SL_DTYPE_Q4_1] = {"q4_1", SL_QK4_1, sizeof(sl_block_q4_1), 1},
    [SL_DTYPE_Q8_0] = {"q8_0", SL_QK8_0, sizeof(sl_block_q8_0), 1},
    [SL_DTYPE_Q8_1] = {"q8_1", SL_QK8_1, sizeof(sl_block_q8_1), 0},
    [SL_DTYPE_Q8_0S] = {"q8_0s", SL_QK8_0, sizeof(sl_block_q8_0s), 0},
    [SL_DTYPE_Q5_0] = {"q5_0", SL_QK5_0, sizeof(sl_block_q5_0), 1},
    [SL_DTYPE_Q5_1] = {"q5_1", SL_QK5_1, sizeof(sl_block_q5_1), 1},
    [SL_DTYPE_Q2_K] = {"q2_K", SL_QK_K, sizeof(sl_block_q2_K), 1},
    [SL_DTYPE_Q3_K] = {"q3_K", SL_QK_K, sizeof(sl_block_q3_K), 1},
    [SL_DTYPE_Q4_K] = {"q4_K", SL_QK_K, sizeof(sl_block_q4_K), 1},
    [SL_DTYPE_Q5_K] = {"q5_K", SL_QK_K, sizeof(sl_block_q5_K), 1},
    [SL_DTYPE_Q6_K] = {"q6_K", SL_QK_K, sizeof(sl_block_q6_K), 1},
    [SL_DTYPE_Q8_K] = {"q8_K", SL_QK_K, sizeof(sl_block_q8_K), 0},
    [SL_DTYPE_IQ4_NL] = {"iq4_nl", SL_QK4_NL, sizeof(sl_block_iq4_nl), 1},
};

/* GGUF stores these structs byte for byte; padding would silently break every file. */
_Static_assert(sizeof(sl_block_q4_0) == 2 + SL_QK4_0 / 2, "q4_0 block must be 18 bytes");
_Static_assert(sizeof(sl_block_q4_1) == 4 + SL_QK4_1 / 2, "q4_1 block must be 20 bytes");
_Static_assert(sizeof(sl_block_q8_0) == 2 + SL_QK8_0, "q8_0 block must be 34 bytes");
_Static_assert(sizeof(sl_block_q8_1) == 4 + SL_QK8_1, "q8_1 block must be 36 bytes");
_Static_assert(sizeof(sl_block_q8_0s) == 4 + SL_QK8_0, "q8_0s block must be 36 bytes");
_Static_assert(sizeof(sl_block_q5_0) == 22, "q5_0 block must be 22 bytes");
_Static_assert(sizeof(sl_block_q5_1) == 24, "q5_1 block must be 24 bytes");
_Static_assert(sizeof(sl_block_iq4_nl) == 18, "iq4_nl block must be 18 bytes");
_Static_assert(sizeof(sl_block_q2_K) == 84, "q2_K block must be 84 bytes");
_Static_assert(sizeof(sl_block_q3_K) == 110, "q3_K block must be 110 bytes");
_Static_assert(sizeof(sl_block_q4_K) == 144, "q4_K block must be 144 bytes");
_Static_assert(sizeof(sl_block_q5_K) == 176, "q5_K block must be 176 bytes");
_Static_assert(sizeof(sl_block_q6_K) == 210, "q6_K block must be 210 bytes");
_Static_assert(sizeof(sl_block_q8_K) == 292, "q8_K block must be 292 bytes");

static const sl_dtype_info *sl_dtype_info_get(int type) {
    if (type < 0 || type >= SL_DTYPE_COUNT || !sl_dtype_table[type].name) return NULL;
    return &sl_dtype_table[type];
}

const char *sl_dtype_name(int type) {
    const sl_dtype_info *t = sl_dtype_info_get(type);
    return t ? t->name : NULL;
}

int sl_dtype_block_elems(int type) {
    const sl_dtype_info *t = sl_dtype_info_get(type);
    return t ? t->block_elems : 0;
}

size_t sl_dtype_block_bytes(int type) {
    const sl_dtype_info *t = sl_dtype_info_get(type);
    return t ? t->block_bytes : 0;
}

size_t sl_dtype_row_bytes(int type, int64_t n) {
    const sl_dtype_info *t = sl_dtype_info_get(type);
    if (!t || n < 0 || n % t->block_elems != 0) return 0;
    uint64_t n_blocks = (uint64_t)(n / t->block_elems);
    size_t bytes;
    if (__builtin_mul_overflow(n_blocks, t->block_bytes, &bytes)) return 0; /* checks the narrowing too */
    return bytes;
}

int sl_dtype_supported(int type) {
    const sl_dtype_info *t = sl_dtype_info_get(type);
    return t ? t->weight_ok : 0;
}
