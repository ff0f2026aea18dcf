/*
 * gguf_writer.c — writes GGUF version 3 files: the synthetic models of tests and benchmarks, of any shape and
 * of every tensor type the kernels compute with.
 *
 * Each metadata value is serialized into its on-disk bytes when it is set (so keys and strings are copied and
 * the caller's buffers may go at once), and each tensor is quantized when it is added; write_file then only
 * streams header, key-values, tensor infos and the aligned data out through one buffered FILE. Quantization
 * goes through the kernels' sl_k_quantize_row, which rounds as GGML does, so what we write is what llama.cpp
 * would write for the same values (and the reader's tests then check the kernels' round trip as a side effect).
 *
 * The writer refuses what the reader would refuse (empty or duplicate tensor names, bad shapes, rows that are
 * not whole blocks, an alignment that is not a power of two): a file it writes always opens.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kcpu.h"
#include "kdtype.h"
#include "sl_util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF is little-endian and values are written as in memory");

/* Same bounds as the reader (gguf.c), so every file written here opens there. */
#define GGUF_W_MAX_NAME_BYTES (64u * 1024u)
#define GGUF_W_MAX_ALIGNMENT (16u * 1024u * 1024u)
#define GGUF_W_DEFAULT_ALIGNMENT 32u

typedef struct gguf_wkv {
    char *key;        /* NUL-terminated copy */
    sl_gguf_type type;
    uint8_t *value;   /* [value_len] the value exactly as it follows the type field on disk */
    size_t value_len;
} gguf_wkv;

typedef struct gguf_wtensor {
    char *name;       /* NUL-terminated copy */
    int n_dims;
    int64_t ne[SL_GGUF_MAX_DIMS];
    int type;
    uint8_t *data;    /* [n_bytes] rows of ne[0] elements in `type`, row-major over ne[1..3] */
    uint64_t n_bytes;
} gguf_wtensor;

struct sl_gguf_writer {
    gguf_wkv *kvs; /* [n_kv] (cap_kv allocated), in the order first set */
    size_t n_kv, cap_kv;
    gguf_wtensor *tensors; /* [n_tensors] (cap_tensors allocated), in the order added */
    size_t n_tensors, cap_tensors;
};

sl_status sl_gguf_writer_create(sl_gguf_writer **out) {
    if (!out) return sl__errorf(SL_INVALID_ARGUMENT, "sl_gguf_writer_create: out is NULL");
    *out = sl__calloc(1, sizeof **out);
    if (!*out) return sl__errorf(SL_OUT_OF_MEMORY, "out of memory creating a GGUF writer");
    return SL_OK;
}

void sl_gguf_writer_free(sl_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].value);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->kvs);
    free(w->tensors);
    free(w);
}

/* ---- metadata ------------------------------------------------------------------------------------------- */
static sl_status gguf_w_check_name(const char *name, const char *what) {
    if (!name || !name[0]) return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: %s is NULL or empty", what);
    size_t n = strnlen(name, GGUF_W_MAX_NAME_BYTES + 1);
    if (n > GGUF_W_MAX_NAME_BYTES)
        return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: %s '%.64s...' is longer than %u bytes", what, name,
                          GGUF_W_MAX_NAME_BYTES);
    return SL_OK;
}

/* Grows *p (elements of `size` bytes, *cap allocated) to hold one more than n. */
static int gguf_w_grow(void **p, size_t *cap, size_t n, size_t size) {
    if (n < *cap) return 1;
    size_t new_cap = *cap ? *cap * 2 : 8, bytes;
    if (!sl__mul_size(new_cap, size, &bytes)) return 0;
    void *q = sl__realloc(*p, bytes);
    if (!q) return 0;
    *p = q;
    *cap = new_cap;
    return 1;
}

/* Takes ownership of value (freed on failure): replaces the value of an existing key, else appends. */
static sl_status gguf_w_set(sl_gguf_writer *w, const char *key, sl_gguf_type type, uint8_t *value, size_t value_len) {
    sl_status st = SL_OK;
    if (!w) {
        st = sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer is NULL");
        goto fail;
    }
    if ((st = gguf_w_check_name(key, "metadata key"))) goto fail;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            free(w->kvs[i].value);
            w->kvs[i].type = type;
            w->kvs[i].value = value;
            w->kvs[i].value_len = value_len;
            return SL_OK;
        }
    }
    char *k = sl__strdup(key);
    if (!k || !gguf_w_grow((void **)&w->kvs, &w->cap_kv, w->n_kv, sizeof *w->kvs)) {
        free(k);
        st = sl__errorf(SL_OUT_OF_MEMORY, "GGUF writer: out of memory setting '%s'", key);
        goto fail;
    }
    w->kvs[w->n_kv++] = (gguf_wkv){k, type, value, value_len};
    return SL_OK;
fail:
    free(value);
    return st;
}

static sl_status gguf_w_set_scalar(sl_gguf_writer *w, const char *key, sl_gguf_type type, const void *v, size_t n) {
    uint8_t *value = sl__malloc(n);
    if (!value) return sl__errorf(SL_OUT_OF_MEMORY, "GGUF writer: out of memory setting '%s'", key ? key : "");
    memcpy(value, v, n);
    return gguf_w_set(w, key, type, value, n);
}

sl_status sl_gguf_writer_set_u32(sl_gguf_writer *w, const char *key, uint32_t v) {
    return gguf_w_set_scalar(w, key, SL_GGUF_UINT32, &v, sizeof v);
}
sl_status sl_gguf_writer_set_i32(sl_gguf_writer *w, const char *key, int32_t v) {
    return gguf_w_set_scalar(w, key, SL_GGUF_INT32, &v, sizeof v);
}
sl_status sl_gguf_writer_set_u64(sl_gguf_writer *w, const char *key, uint64_t v) {
    return gguf_w_set_scalar(w, key, SL_GGUF_UINT64, &v, sizeof v);
}
sl_status sl_gguf_writer_set_f32(sl_gguf_writer *w, const char *key, float v) {
    return gguf_w_set_scalar(w, key, SL_GGUF_FLOAT32, &v, sizeof v);
}
sl_status sl_gguf_writer_set_bool(sl_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return gguf_w_set_scalar(w, key, SL_GGUF_BOOL, &b, 1);
}

sl_status sl_gguf_writer_set_str(sl_gguf_writer *w, const char *key, const char *v) {
    if (!v) return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: NULL string for '%s'", key ? key : "");
    uint64_t len = strlen(v);
    uint8_t *value = sl__malloc(8 + len); /* u64 length + bytes */
    if (!value) return sl__errorf(SL_OUT_OF_MEMORY, "GGUF writer: out of memory setting '%s'", key ? key : "");
    memcpy(value, &len, 8);
    memcpy(value + 8, v, len);
    return gguf_w_set(w, key, SL_GGUF_STRING, value, 8 + len);
}

sl_status sl_gguf_writer_set_arr_str(sl_gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    /* u32 element type + u64 count + for each: u64 length + bytes */
    size_t total = 12;
    for (uint64_t i = 0; i < n; i++) {
        if (!v || !v[i])
            return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: '%s': string %" PRIu64 " is NULL", key ? key : "", i);
        if (!sl__add_size(total, 8 + strlen(v[i]), &total))
            return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: '%s': array too large", key ? key : "");
    }
    uint8_t *value = sl__malloc(total), *p = value;
    if (!value) return sl__errorf(SL_OUT_OF_MEMORY, "GGUF writer: out of memory setting '%s'", key ? key : "");
    uint32_t et = SL_GGUF_STRING;
    memcpy(p, &et, 4);
    memcpy(p + 4, &n, 8);
    p += 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = strlen(v[i]);
        memcpy(p, &len, 8);
        memcpy(p + 8, v[i], len);
        p += 8 + len;
    }
    return gguf_w_set(w, key, SL_GGUF_ARRAY, value, total);
}

/* An array of n 4-byte elements of element type et. */
static sl_status gguf_w_set_arr4(sl_gguf_writer *w, const char *key, sl_gguf_type et, const void *v, uint64_t n) {
    size_t bytes, total;
    if (n && !v) return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: '%s': NULL array", key ? key : "");
    if (n > SIZE_MAX || !sl__mul_size((size_t)n, 4, &bytes) || !sl__add_size(bytes, 12, &total))
        return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: '%s': array of %" PRIu64 " elements too large",
                          key ? key : "", n);
    uint8_t *value = sl__malloc(total);
    if (!value) return sl__errorf(SL_OUT_OF_MEMORY, "GGUF writer: out of memory setting '%s'", key ? key : "");
    uint32_t et32 = (uint32_t)et;
    memcpy(value, &et32, 4);
    memcpy(value + 4, &n, 8);
    if (bytes) memcpy(value + 12, v, bytes);
    return gguf_w_set(w, key, SL_GGUF_ARRAY, value, total);
}

sl_status sl_gguf_writer_set_arr_f32(sl_gguf_writer *w, const char *key, const float *v, uint64_t n) {
    return gguf_w_set_arr4(w, key, SL_GGUF_FLOAT32, v, n);
}
sl_status sl_gguf_writer_set_arr_i32(sl_gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    return gguf_w_set_arr4(w, key, SL_GGUF_INT32, v, n);
}

/* ---- tensors -------------------------------------------------------------------------------------------- */
sl_status sl_gguf_writer_add_tensor_f32(sl_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
                                        int type, const float *values) {
    if (!w) return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer is NULL");
    sl_status st = gguf_w_check_name(name, "tensor name");
    if (st) return st;
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: duplicate tensor name '%.128s'", name);
    if (n_dims < 1 || n_dims > SL_GGUF_MAX_DIMS)
        return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: tensor '%.128s': n_dims %d is outside 1..%d", name, n_dims,
                          SL_GGUF_MAX_DIMS);
    if (!ne) return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: tensor '%.128s': NULL shape", name);
    switch (type) {
    case SL_DTYPE_F32: case SL_DTYPE_F16: case SL_DTYPE_BF16: case SL_DTYPE_Q4_0: case SL_DTYPE_Q4_1:
    case SL_DTYPE_Q5_0: case SL_DTYPE_Q5_1: case SL_DTYPE_Q8_0: case SL_DTYPE_Q2_K: case SL_DTYPE_Q3_K:
    case SL_DTYPE_Q4_K: case SL_DTYPE_Q5_K: case SL_DTYPE_Q6_K: case SL_DTYPE_IQ4_NL:
        break; /* what sl_k_quantize_row writes */
    default:
        return sl__errorf(SL_UNSUPPORTED, "GGUF writer: tensor '%.128s': cannot write type %s (id %d)", name,
                          sl_dtype_name(type) ? sl_dtype_name(type) : "unknown", type);
    }
    int64_t n_elems = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0 || __builtin_mul_overflow(n_elems, ne[d], &n_elems))
            return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: tensor '%.128s': bad dimension %d (%" PRId64 ")", name,
                              d, ne[d]);
    }
    int64_t be = sl_dtype_block_elems(type);
    if (be <= 0 || ne[0] % be != 0)
        return sl__errorf(SL_INVALID_ARGUMENT,
                          "GGUF writer: tensor '%.128s': row length %" PRId64 " is not a multiple of the %s block size %"
                          PRId64, name, ne[0], sl_dtype_name(type), be);
    if (n_elems && !values) return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: tensor '%.128s': NULL values", name);
    size_t row_bytes = ne[0] ? sl_dtype_row_bytes(type, ne[0]) : 0, n_rows = ne[0] ? (size_t)(n_elems / ne[0]) : 0,
           n_bytes;
    /* sl_dtype_row_bytes says 0 when a row's bytes overflow size_t. */
    if ((ne[0] && !row_bytes) || !sl__mul_size(row_bytes, n_rows, &n_bytes))
        return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: tensor '%.128s': too large", name);

    gguf_wtensor t = {0};
    t.name = sl__strdup(name);
    t.data = sl__malloc(n_bytes);
    if (!t.name || !t.data || !gguf_w_grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors, sizeof *w->tensors)) {
        free(t.name);
        free(t.data);
        return sl__errorf(SL_OUT_OF_MEMORY, "GGUF writer: out of memory adding tensor '%.128s' (%zu bytes)", name,
                          n_bytes);
    }
    t.n_dims = n_dims;
    t.type = type;
    t.n_bytes = n_bytes;
    for (int d = 0; d < SL_GGUF_MAX_DIMS; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    for (size_t r = 0; r < n_rows; r++) {
        const float *src = values + r * (size_t)ne[0];
        uint8_t *dst = t.data + r * row_bytes;
        if (type == SL_DTYPE_F32) memcpy(dst, src, row_bytes);
        else sl_k_quantize_row(type, src, dst, ne[0]);
    }
    w->tensors[w->n_tensors++] = t;
    return SL_OK;
}

/* ---- output --------------------------------------------------------------------------------------------- */
typedef struct gguf_wfile {
    FILE *f;
    int failed; /* a write failed: errno was kept in err */
    int err;
} gguf_wfile;

static void gguf_w_put(gguf_wfile *o, const void *p, size_t n) {
    if (o->failed || n == 0) return;
    if (fwrite(p, 1, n, o->f) != n) {
        o->failed = 1;
        o->err = errno ? errno : EIO;
    }
}

static void gguf_w_put_u32(gguf_wfile *o, uint32_t v) { gguf_w_put(o, &v, 4); }
static void gguf_w_put_u64(gguf_wfile *o, uint64_t v) { gguf_w_put(o, &v, 8); }
static void gguf_w_put_str(gguf_wfile *o, const char *s) {
    uint64_t n = strlen(s);
    gguf_w_put_u64(o, n);
    gguf_w_put(o, s, n);
}

static void gguf_w_pad(gguf_wfile *o, uint64_t n) {
    static const uint8_t zeros[4096];
    while (n) {
        size_t k = (size_t)SL_MIN(n, (uint64_t)sizeof zeros);
        gguf_w_put(o, zeros, k);
        n -= k;
    }
}

static uint64_t gguf_w_align(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* The alignment the file will use: general.alignment when set (as u32, as the reader expects), else 32. */
static sl_status gguf_w_alignment(const sl_gguf_writer *w, uint64_t *out) {
    *out = GGUF_W_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, "general.alignment") != 0) continue;
        if (w->kvs[i].type != SL_GGUF_UINT32)
            return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: general.alignment must be set as u32, not %s",
                              sl_gguf_type_name(w->kvs[i].type));
        uint32_t a;
        memcpy(&a, w->kvs[i].value, 4);
        if (a == 0 || (a & (a - 1)) != 0 || a > GGUF_W_MAX_ALIGNMENT)
            return sl__errorf(SL_INVALID_ARGUMENT, "GGUF writer: general.alignment %" PRIu32
                              " is not a power of two in 1..%u", a, GGUF_W_MAX_ALIGNMENT);
        *out = a;
    }
    return SL_OK;
}

sl_status sl_gguf_writer_write_file(sl_gguf_writer *w, const char *path) {
    if (!w || !path) return sl__errorf(SL_INVALID_ARGUMENT, "sl_gguf_writer_write_file: NULL writer or path");
    uint64_t align;
    sl_status st = gguf_w_alignment(w, &align);
    if (st) return st;
    gguf_wfile o = {fopen(path, "wb"), 0, 0};
    if (!o.f) return sl__errorf(SL_IO, "%s: %s", path, strerror(errno));

    uint64_t pos = 0; /* bytes written so far, for the padding before the data section */
    gguf_w_put(&o, "GGUF", 4);
    gguf_w_put_u32(&o, 3);
    gguf_w_put_u64(&o, w->n_tensors);
    gguf_w_put_u64(&o, w->n_kv);
    pos += 24;
    for (size_t i = 0; i < w->n_kv; i++) {
        gguf_w_put_str(&o, w->kvs[i].key);
        gguf_w_put_u32(&o, (uint32_t)w->kvs[i].type);
        gguf_w_put(&o, w->kvs[i].value, w->kvs[i].value_len);
        pos += 8 + strlen(w->kvs[i].key) + 4 + w->kvs[i].value_len;
    }
    uint64_t offset = 0; /* each tensor's data starts at an aligned offset of the data section */
    for (size_t i = 0; i < w->n_tensors; i++) {
        const gguf_wtensor *t = &w->tensors[i];
        gguf_w_put_str(&o, t->name);
        gguf_w_put_u32(&o, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) gguf_w_put_u64(&o, (uint64_t)t->ne[d]);
        gguf_w_put_u32(&o, (uint32_t)t->type);
        gguf_w_put_u64(&o, offset);
        pos += 8 + strlen(t->name) + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
        offset = gguf_w_align(offset + t->n_bytes, align);
    }
    /* No data, no padding: the file ends after the infos, as llama.cpp's vocab-only files do. */
    if (w->n_tensors) gguf_w_pad(&o, gguf_w_align(pos, align) - pos);
    for (size_t i = 0; i < w->n_tensors; i++) {
        const gguf_wtensor *t = &w->tensors[i];
        gguf_w_put(&o, t->data, t->n_bytes);
        gguf_w_pad(&o, gguf_w_align(t->n_bytes, align) - t->n_bytes);
    }
    if (fclose(o.f) != 0 && !o.failed) {
        o.failed = 1;
        o.err = errno;
    }
    if (o.failed) {
        unlink(path); /* no half-written model left behind */
        return sl__errorf(SL_IO, "%s: write failed: %s", path, strerror(o.err));
    }
    return SL_OK;
}
