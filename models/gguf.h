/*
 * gguf.h — reading and writing GGUF files (versions 2 and 3).
 *
 * The reader maps the file read-only and parses the header, metadata and tensor table into an index; tensor
 * data is never copied (pointers into the mapping). It trusts nothing the file says: every count, length,
 * dimension, product, offset, alignment and type id is checked against the file's size and sane bounds
 * before use, so a truncated or hostile file gets SL_BAD_FORMAT (or SL_UNSUPPORTED for a valid but unknown
 * tensor type) with a message naming the problem, never a crash or an over-read.
 *
 * The writer builds a file in memory-light fashion (metadata and tensor infos first, then data, aligned) and
 * is what tests and benchmarks use to make synthetic models of any shape and type.
 */
#ifndef SL_GGUF_H
#define SL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/sluice.h"

typedef enum sl_gguf_type {
    SL_GGUF_UINT8 = 0,
    SL_GGUF_INT8 = 1,
    SL_GGUF_UINT16 = 2,
    SL_GGUF_INT16 = 3,
    SL_GGUF_UINT32 = 4,
    SL_GGUF_INT32 = 5,
    SL_GGUF_FLOAT32 = 6,
    SL_GGUF_BOOL = 7,
    SL_GGUF_STRING = 8,
    SL_GGUF_ARRAY = 9,
    SL_GGUF_UINT64 = 10,
    SL_GGUF_INT64 = 11,
    SL_GGUF_FLOAT64 = 12,
    SL_GGUF_TYPE_COUNT
} sl_gguf_type;

#define SL_GGUF_MAX_DIMS 4

typedef struct sl_gguf_str {
    const char *data; /* points into the mapping: NOT NUL-terminated */
    uint64_t len;
} sl_gguf_str;

typedef struct sl_gguf_kv {
    sl_gguf_str key;
    sl_gguf_type type;
    sl_gguf_type arr_type;  /* element type when type == ARRAY */
    uint64_t arr_len;       /* elements when type == ARRAY */
    const uint8_t *data;    /* scalar value, or the first array element, inside the mapping */
} sl_gguf_kv;

typedef struct sl_gguf_tensor {
    sl_gguf_str name;
    int n_dims;
    int64_t ne[SL_GGUF_MAX_DIMS]; /* ne[0] is the row length (fastest-varying); unused dims are 1 */
    int type;                     /* GGML type id (see kernels/kdtype.h) */
    uint64_t offset;              /* relative to the data section */
    uint64_t n_bytes;
    const void *data;             /* inside the mapping */
} sl_gguf_tensor;

typedef struct sl_gguf sl_gguf;

/* Opens and validates a GGUF file. On failure *out is NULL and sl_last_error() names the problem. */
sl_status sl_gguf_open(const char *path, sl_gguf **out);
/* Same, over a buffer the caller keeps alive (fuzzing, tests). */
sl_status sl_gguf_open_memory(const void *buf, size_t len, sl_gguf **out);
void sl_gguf_close(sl_gguf *g);

uint32_t sl_gguf_version(const sl_gguf *g);
uint64_t sl_gguf_alignment(const sl_gguf *g);
uint64_t sl_gguf_file_size(const sl_gguf *g);

int64_t sl_gguf_n_kv(const sl_gguf *g);
const sl_gguf_kv *sl_gguf_kv_at(const sl_gguf *g, int64_t i);
const sl_gguf_kv *sl_gguf_find_kv(const sl_gguf *g, const char *key); /* NULL if absent */

/* Typed getters. Each returns SL_NOT_FOUND if the key is absent, SL_BAD_FORMAT if it has another type
 * (integer getters accept any integer type whose value fits). */
sl_status sl_gguf_get_u32(const sl_gguf *g, const char *key, uint32_t *out);
sl_status sl_gguf_get_i64(const sl_gguf *g, const char *key, int64_t *out);
sl_status sl_gguf_get_f32(const sl_gguf *g, const char *key, float *out);
sl_status sl_gguf_get_bool(const sl_gguf *g, const char *key, int *out);
sl_status sl_gguf_get_str(const sl_gguf *g, const char *key, sl_gguf_str *out);
/* Array access: element type and length; element i of a string array; element i of a numeric array. */
sl_status sl_gguf_get_arr(const sl_gguf *g, const char *key, sl_gguf_type *elem_type, uint64_t *len);
sl_status sl_gguf_arr_str(const sl_gguf *g, const char *key, uint64_t i, sl_gguf_str *out);
sl_status sl_gguf_arr_f32(const sl_gguf *g, const char *key, uint64_t i, float *out);  /* FLOAT32 arrays */
sl_status sl_gguf_arr_i32(const sl_gguf *g, const char *key, uint64_t i, int32_t *out); /* INT32/UINT32 arrays */
/* Strings in arrays are reached in O(1): the reader indexes every string array once at open. */

int64_t sl_gguf_n_tensors(const sl_gguf *g);
const sl_gguf_tensor *sl_gguf_tensor_at(const sl_gguf *g, int64_t i);
const sl_gguf_tensor *sl_gguf_find_tensor(const sl_gguf *g, const char *name); /* NULL if absent */

/* Helpers. */
int sl_gguf_str_eq(sl_gguf_str s, const char *cstr);
const char *sl_gguf_type_name(sl_gguf_type t);
/* Writes a readable rendering of a kv's value into buf (arrays abbreviated), for `sluice info`. */
void sl_gguf_kv_format(const sl_gguf_kv *kv, char *buf, size_t buf_size);

/* ---- writer --------------------------------------------------------------------------------------------- */
typedef struct sl_gguf_writer sl_gguf_writer;

sl_status sl_gguf_writer_create(sl_gguf_writer **out);
void sl_gguf_writer_free(sl_gguf_writer *w);
/* Metadata; keys and strings are copied. */
sl_status sl_gguf_writer_set_u32(sl_gguf_writer *w, const char *key, uint32_t v);
sl_status sl_gguf_writer_set_i32(sl_gguf_writer *w, const char *key, int32_t v);
sl_status sl_gguf_writer_set_u64(sl_gguf_writer *w, const char *key, uint64_t v);
sl_status sl_gguf_writer_set_f32(sl_gguf_writer *w, const char *key, float v);
sl_status sl_gguf_writer_set_bool(sl_gguf_writer *w, const char *key, int v);
sl_status sl_gguf_writer_set_str(sl_gguf_writer *w, const char *key, const char *v);
sl_status sl_gguf_writer_set_arr_str(sl_gguf_writer *w, const char *key, const char *const *v, uint64_t n);
sl_status sl_gguf_writer_set_arr_f32(sl_gguf_writer *w, const char *key, const float *v, uint64_t n);
sl_status sl_gguf_writer_set_arr_i32(sl_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
/* Adds a tensor from f32 values, quantized to `type` (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL) by the writer, with GGML's reference rounding.
 * ne[0] is the row length. The data is copied (quantized) at once. */
sl_status sl_gguf_writer_add_tensor_f32(sl_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
                                        int type, const float *values);
/* Writes version 3 with 32-byte alignment (or general.alignment if set as u32). */
sl_status sl_gguf_writer_write_file(sl_gguf_writer *w, const char *path);

#endif /* SL_GGUF_H */
