/*
 * gguf.c — the GGUF reader: maps a file, validates every byte of its header, metadata and tensor table, and
 * builds the indexes the loaders use (see gguf.h for the contract).
 *
 * Layout of a GGUF file (v2 and v3 are identical on disk; v1 had 32-bit counts and is refused):
 *   "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x      { str key | u32 type | value }            str = u64 length + bytes (no NUL)
 *   n_tensors x { str name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset }
 *   padding to general.alignment (default 32)              <- data section starts here
 *   tensor data, each tensor at data start + its offset (a multiple of the alignment)
 * Everything is little-endian; a big-endian file shows up as a byte-swapped version field and is refused.
 *
 * Why it is shaped so: the file is untrusted input that reaches the server, so parsing is one forward pass
 * of a bounds-checked cursor (every read asks the cursor first; values are memcpy'd, never dereferenced in
 * place, because the mapping gives no alignment guarantees to a fuzzer's buffer), and every count is checked
 * against the bytes that could possibly hold it before anything is allocated. Nothing is copied out of the
 * file: keys, names, strings and tensor data are pointers into the mapping. What the loaders need fast is
 * indexed once at open: keys and tensor names in sorted indexes for binary search (the model loader looks
 * up hundreds of names) and every string array as a table of element offsets (the tokenizer reads 50k strings
 * by index), so lookups afterwards are O(log n) and O(1).
 */
#include "gguf.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kdtype.h"
#include "sl_util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF is little-endian and values are read as in memory");

/* ---- bounds ---------------------------------------------------------------------------------------------- */
/* "GGUF" + u32 version + u64 n_tensors + u64 n_kv. */
#define GGUF_HEADER_BYTES 24u
/* Smallest possible kv: u64 key length + a 1-byte key + u32 type + a 1-byte value (u8/i8/bool). Used to
 * refuse a count that the rest of the file could not hold before allocating for it. */
#define GGUF_MIN_KV_BYTES (8u + 1u + 4u + 1u)
/* Smallest possible tensor info: u64 name length + 1-byte name + u32 n_dims + one u64 dim + u32 type +
 * u64 offset. */
#define GGUF_MIN_TENSOR_INFO_BYTES (8u + 1u + 4u + 8u + 4u + 8u)
/* Keys and tensor names are identifiers ("blk.12.attn_q.weight"; llama.cpp itself caps names at 64 bytes);
 * 64 KiB is far above any real one and keeps a hostile length from turning into a huge message or hash. */
#define GGUF_MAX_NAME_BYTES (64u * 1024u)
/* Real models carry < 100 keys and < 10k tensors (the largest MoE checkpoints a few thousand); 1M of each
 * keeps the index allocations bounded even for a multi-GiB file that claims millions of tiny entries. */
#define GGUF_MAX_KV (1u << 20)
#define GGUF_MAX_TENSORS (1u << 20)
/* Arrays of arrays exist in the format but no model uses them; they are validated and skipped. The depth
 * bound keeps the recursion (one C frame per level) small whatever the file says. */
#define GGUF_MAX_ARRAY_DEPTH 8
/* general.alignment is a power of two; 16 MiB is above any page size, huge pages (2 MiB) included, so a real
 * file never hits it, and it keeps "offset rounded up to the alignment" far from overflow. */
#define GGUF_MAX_ALIGNMENT (16u * 1024u * 1024u)
#define GGUF_DEFAULT_ALIGNMENT 32u
/* Names in messages are clipped so the message (1 KiB, see runtime/status.c) keeps its tail. */
#define GGUF_MSG_NAME_MAX 96

/* GGML's type names for ids 0..39, so a message can say "q4_K" for a real type we cannot compute with
 * (ids 4, 5, 31..33, 36..38 were removed from GGML). kdtype.h owns the types we do support. */
static const char *const gguf_ggml_type_names[40] = {
    "f32",     "f16",    "q4_0",    "q4_1",  "q4_2 (removed)", "q4_3 (removed)", "q5_0",  "q5_1",
    "q8_0",    "q8_1",   "q2_K",    "q3_K",  "q4_K",           "q5_K",           "q6_K",  "q8_K",
    "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl",         "iq3_s",          "iq2_s", "iq4_xs",
    "i8",      "i16",    "i32",     "i64",   "f64",            "iq1_m",          "bf16",  "q4_0_4_4 (removed)",
    "q4_0_4_8 (removed)", "q4_0_8_8 (removed)", "tq1_0", "tq2_0", "iq4_nl_4_4 (removed)", "iq4_nl_4_8 (removed)",
    "iq4_nl_8_8 (removed)", "mxfp4",
};

static const char *const gguf_value_type_names[SL_GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool",  "string", "array", "uint64", "int64", "float64",
};

/* Bytes of one scalar of a metadata type; 0 for STRING and ARRAY (variable size). */
static size_t gguf_value_size(sl_gguf_type t) {
    switch (t) {
    case SL_GGUF_UINT8: case SL_GGUF_INT8: case SL_GGUF_BOOL: return 1;
    case SL_GGUF_UINT16: case SL_GGUF_INT16: return 2;
    case SL_GGUF_UINT32: case SL_GGUF_INT32: case SL_GGUF_FLOAT32: return 4;
    case SL_GGUF_UINT64: case SL_GGUF_INT64: case SL_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---- the opened file ------------------------------------------------------------------------------------ */
/* Names sorted for binary search. A sorted index rather than a hash table because the names come from the
 * file: an unkeyed hash lets a hostile file put a million names in one probe chain (quadratic open), while
 * sorting is O(n log n) whatever the names are, and a lookup (log2(272) = 9 compares for the default model)
 * costs about what hashing the name would. Duplicates end up adjacent, which is how they are found. */
typedef struct gguf_name_ref {
    const char *data; /* the name, inside the file */
    uint64_t len;
    int64_t i;        /* index into kvs[] or tensors[] */
} gguf_name_ref;

typedef struct gguf_index {
    gguf_name_ref *refs; /* [n], sorted by name bytes (then length), then by index */
    int64_t n;
} gguf_index;

struct sl_gguf {
    const uint8_t *base; /* [size] bytes of the file: the mapping, or the caller's buffer */
    uint64_t size;
    void *map;           /* mmap'd region (NULL for open_memory) */
    size_t map_len;

    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset; /* start of the data section: aligned end of the tensor infos (may be > size when
                             a file without tensor data ends right after its infos) */

    int64_t n_kv;
    sl_gguf_kv *kvs;            /* [n_kv], in file order */
    uint64_t *kv_str_first;     /* [n_kv]: for string arrays, the index of element 0 in str_pos */
    uint64_t *str_pos;          /* [n_str]: file offset of each string-array element's u64 length prefix */
    uint64_t n_str;
    gguf_index kv_index;

    int64_t n_tensors;
    sl_gguf_tensor *tensors;    /* [n_tensors], in file order */
    gguf_index tensor_index;
};

/* ---- bounds-checked cursor ------------------------------------------------------------------------------ */
typedef struct gguf_cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
} gguf_cursor;

static uint64_t gguf_remaining(const gguf_cursor *c) { return c->size - c->pos; }

static sl_status gguf_need(const gguf_cursor *c, uint64_t n, const char *what) {
    if (n > gguf_remaining(c))
        return sl__errorf(SL_BAD_FORMAT,
                          "truncated: %s at offset %" PRIu64 " needs %" PRIu64 " bytes, only %" PRIu64
                          " remain (file size %" PRIu64 ")",
                          what, c->pos, n, gguf_remaining(c), c->size);
    return SL_OK;
}

static sl_status gguf_read_u32(gguf_cursor *c, uint32_t *out, const char *what) {
    sl_status st = gguf_need(c, 4, what);
    if (st) return st;
    memcpy(out, c->base + c->pos, 4);
    c->pos += 4;
    return SL_OK;
}

static sl_status gguf_read_u64(gguf_cursor *c, uint64_t *out, const char *what) {
    sl_status st = gguf_need(c, 8, what);
    if (st) return st;
    memcpy(out, c->base + c->pos, 8);
    c->pos += 8;
    return SL_OK;
}

/* A string: u64 length then that many bytes, checked against the remaining bytes and max_len. */
static sl_status gguf_read_str(gguf_cursor *c, sl_gguf_str *out, uint64_t max_len, const char *what) {
    uint64_t start = c->pos, len;
    sl_status st = gguf_read_u64(c, &len, what);
    if (st) return st;
    if (len > max_len)
        return sl__errorf(SL_BAD_FORMAT, "%s at offset %" PRIu64 ": length %" PRIu64 " exceeds the limit of %" PRIu64,
                          what, start, len, max_len);
    if (len > gguf_remaining(c))
        return sl__errorf(SL_BAD_FORMAT,
                          "truncated: %s at offset %" PRIu64 " has length %" PRIu64 " but only %" PRIu64
                          " bytes remain (file size %" PRIu64 ")",
                          what, start, len, gguf_remaining(c), c->size);
    out->data = (const char *)c->base + c->pos;
    out->len = len;
    c->pos += len;
    return SL_OK;
}

/* Keys and tensor names: non-empty, capped, no NUL (lookups compare against C strings). */
static sl_status gguf_read_name(gguf_cursor *c, sl_gguf_str *out, const char *what) {
    uint64_t start = c->pos;
    sl_status st = gguf_read_str(c, out, GGUF_MAX_NAME_BYTES, what);
    if (st) return st;
    if (out->len == 0) return sl__errorf(SL_BAD_FORMAT, "%s at offset %" PRIu64 " is empty", what, start);
    if (memchr(out->data, 0, out->len))
        return sl__errorf(SL_BAD_FORMAT, "%s at offset %" PRIu64 " ('%.*s') contains a NUL byte", what, start,
                          (int)SL_MIN(out->len, GGUF_MSG_NAME_MAX), out->data);
    return SL_OK;
}

/* ---- name index --------------------------------------------------------------------------------------- */
static int gguf_name_cmp(const char *a, uint64_t a_len, const char *b, uint64_t b_len) {
    int c = memcmp(a, b, SL_MIN(a_len, b_len));
    if (c) return c;
    return (a_len > b_len) - (a_len < b_len);
}

static int gguf_ref_cmp(const void *x, const void *y) {
    const gguf_name_ref *a = x, *b = y;
    int c = gguf_name_cmp(a->data, a->len, b->data, b->len);
    return c ? c : (a->i > b->i) - (a->i < b->i);
}

static int gguf_str_eq_n(sl_gguf_str a, const char *b, uint64_t b_len) {
    return a.len == b_len && memcmp(a.data, b, b_len) == 0;
}

/* Sorts the n names (each `stride` bytes after the last); a duplicate is SL_BAD_FORMAT naming it as a `what`
 * found in two of the `items` ("metadata key" in "key-values", "tensor name" in "tensors"). */
static sl_status gguf_index_build(gguf_index *ix, const sl_gguf_str *names, size_t stride, int64_t n, const char *what,
                                  const char *items) {
    ix->refs = sl__malloc((size_t)(n ? n : 1) * sizeof *ix->refs);
    if (!ix->refs) return sl__errorf(SL_OUT_OF_MEMORY, "out of memory for an index of %" PRId64 " names", n);
    ix->n = n;
    for (int64_t i = 0; i < n; i++) {
        const sl_gguf_str *s = (const sl_gguf_str *)((const char *)names + (size_t)i * stride);
        ix->refs[i] = (gguf_name_ref){s->data, s->len, i};
    }
    qsort(ix->refs, (size_t)n, sizeof *ix->refs, gguf_ref_cmp);
    for (int64_t i = 1; i < n; i++) {
        const gguf_name_ref *a = &ix->refs[i - 1], *b = &ix->refs[i];
        if (a->len == b->len && memcmp(a->data, b->data, a->len) == 0)
            return sl__errorf(SL_BAD_FORMAT, "duplicate %s '%.*s' (%s %" PRId64 " and %" PRId64 ")", what,
                              (int)SL_MIN(b->len, GGUF_MSG_NAME_MAX), b->data, items, a->i, b->i);
    }
    return SL_OK;
}

static int64_t gguf_index_find(const gguf_index *ix, const char *name) {
    if (!ix->refs || !name) return -1;
    uint64_t len = strlen(name);
    int64_t lo = 0, hi = ix->n; /* the name, if present, is in refs[lo .. hi) */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = gguf_name_cmp(ix->refs[mid].data, ix->refs[mid].len, name, len);
        if (c == 0) return ix->refs[mid].i;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* ---- metadata values ------------------------------------------------------------------------------------ */
/* Validates and skips one value of type t (the type field already read). Arrays: elements of fixed size are
 * checked as one span (length x size, overflow-safe); strings and nested arrays one by one, after checking
 * that the element count could fit at all, so the loop is bounded by the bytes. *n_str counts the elements
 * of top-level string arrays (depth 0), for the index. */
static sl_status gguf_skip_value(gguf_cursor *c, sl_gguf_type t, int depth, uint64_t *n_str);

static sl_status gguf_skip_array(gguf_cursor *c, int depth, uint64_t *n_str,
                                 sl_gguf_type *elem_type_out, uint64_t *len_out) {
    uint64_t start = c->pos;
    uint32_t et;
    uint64_t len;
    sl_status st = gguf_read_u32(c, &et, "array element type");
    if (st) return st;
    if ((st = gguf_read_u64(c, &len, "array length"))) return st;
    if (et >= SL_GGUF_TYPE_COUNT)
        return sl__errorf(SL_BAD_FORMAT, "array at offset %" PRIu64 " has unknown element type %" PRIu32, start, et);
    if (elem_type_out) *elem_type_out = (sl_gguf_type)et;
    if (len_out) *len_out = len;
    size_t esize = gguf_value_size((sl_gguf_type)et);
    if (esize) {
        if (len > gguf_remaining(c) / esize)
            return sl__errorf(SL_BAD_FORMAT,
                              "truncated: array of %" PRIu64 " %s values at offset %" PRIu64 " needs more than the %" PRIu64
                              " bytes that remain",
                              len, gguf_value_type_names[et], start, gguf_remaining(c));
        c->pos += len * esize;
        return SL_OK;
    }
    /* A string element takes at least its 8-byte length; a nested array its 4-byte type and 8-byte length. */
    uint64_t min_elem = et == SL_GGUF_STRING ? 8 : 12;
    if (len > gguf_remaining(c) / min_elem)
        return sl__errorf(SL_BAD_FORMAT,
                          "truncated: array of %" PRIu64 " %s values at offset %" PRIu64 " cannot fit in the %" PRIu64
                          " bytes that remain",
                          len, gguf_value_type_names[et], start, gguf_remaining(c));
    if (et == SL_GGUF_ARRAY && depth + 1 >= GGUF_MAX_ARRAY_DEPTH)
        return sl__errorf(SL_BAD_FORMAT, "arrays nested deeper than %d levels", GGUF_MAX_ARRAY_DEPTH);
    for (uint64_t i = 0; i < len; i++) {
        if ((st = gguf_skip_value(c, (sl_gguf_type)et, depth + 1, NULL))) return st;
    }
    if (et == SL_GGUF_STRING && depth == 0 && n_str) *n_str += len;
    return SL_OK;
}

static sl_status gguf_skip_value(gguf_cursor *c, sl_gguf_type t, int depth, uint64_t *n_str) {
    if (t == SL_GGUF_STRING) {
        sl_gguf_str s;
        return gguf_read_str(c, &s, UINT64_MAX, "string value");
    }
    if (t == SL_GGUF_ARRAY) return gguf_skip_array(c, depth, n_str, NULL, NULL);
    size_t n = gguf_value_size(t);
    sl_status st = gguf_need(c, n, "metadata value");
    if (st) return st;
    c->pos += n;
    return SL_OK;
}

/* An integer-typed value as sign and magnitude, so every integer type (INT64_MIN and UINT64_MAX included) is
 * range-checked exactly against the getter's type. Returns 0 for non-integer types. */
static int gguf_int_value(const sl_gguf_kv *kv, uint64_t *mag, int *neg) {
    *neg = 0;
    switch (kv->type) {
    case SL_GGUF_UINT8: { uint8_t v; memcpy(&v, kv->data, 1); *mag = v; return 1; }
    case SL_GGUF_UINT16: { uint16_t v; memcpy(&v, kv->data, 2); *mag = v; return 1; }
    case SL_GGUF_UINT32: { uint32_t v; memcpy(&v, kv->data, 4); *mag = v; return 1; }
    case SL_GGUF_UINT64: { uint64_t v; memcpy(&v, kv->data, 8); *mag = v; return 1; }
    case SL_GGUF_INT8: { int8_t v; memcpy(&v, kv->data, 1); *neg = v < 0; *mag = (uint64_t)(v < 0 ? -(int64_t)v : v); return 1; }
    case SL_GGUF_INT16: { int16_t v; memcpy(&v, kv->data, 2); *neg = v < 0; *mag = (uint64_t)(v < 0 ? -(int64_t)v : v); return 1; }
    case SL_GGUF_INT32: { int32_t v; memcpy(&v, kv->data, 4); *neg = v < 0; *mag = (uint64_t)(v < 0 ? -(int64_t)v : v); return 1; }
    case SL_GGUF_INT64: {
        int64_t v;
        memcpy(&v, kv->data, 8);
        *neg = v < 0;
        *mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v; /* INT64_MIN's magnitude fits in u64 */
        return 1;
    }
    default: return 0;
    }
}

/* ---- open ----------------------------------------------------------------------------------------------- */
static sl_status gguf_parse_header(sl_gguf *g, gguf_cursor *c, uint64_t *n_tensors, uint64_t *n_kv) {
    if (c->size < 4 || memcmp(c->base, "GGUF", 4) != 0) {
        char shown[16] = "";
        for (uint64_t i = 0; i < SL_MIN(c->size, (uint64_t)4); i++)
            snprintf(shown + 3 * i, sizeof shown - 3 * i, "%02x ", c->base[i]);
        return sl__errorf(SL_BAD_FORMAT, "not a GGUF file: the magic is [ %s] (%" PRIu64 " bytes), expected \"GGUF\"",
                          shown, c->size);
    }
    c->pos = 4;
    uint32_t v;
    sl_status st = gguf_read_u32(c, &v, "version");
    if (st) return st;
    if ((v & 0xffffu) == 0 && v != 0) {
        /* A small version number with its bytes swapped: the file was written big-endian. */
        uint32_t sw = __builtin_bswap32(v);
        return sl__errorf(SL_UNSUPPORTED,
                          "big-endian GGUF file (version field reads 0x%08" PRIx32 ", i.e. version %" PRIu32
                          " byte-swapped): only little-endian files are supported",
                          v, sw);
    }
    if (v == 1)
        return sl__errorf(SL_UNSUPPORTED,
                          "GGUF version 1 is not supported (it used 32-bit counts): re-convert the model with a "
                          "current llama.cpp");
    if (v == 0) return sl__errorf(SL_BAD_FORMAT, "GGUF version 0 is not a valid version");
    if (v > 3)
        return sl__errorf(SL_UNSUPPORTED, "GGUF version %" PRIu32 " is not supported (this reader knows versions 2 and 3)",
                          v);
    g->version = v;
    if ((st = gguf_read_u64(c, n_tensors, "tensor count"))) return st;
    if ((st = gguf_read_u64(c, n_kv, "metadata key count"))) return st;

    /* Each entry takes at least its minimum size: refuse counts the rest of the file cannot hold. */
    uint64_t rem = gguf_remaining(c);
    if (*n_kv > rem / GGUF_MIN_KV_BYTES)
        return sl__errorf(SL_BAD_FORMAT,
                          "metadata key count %" PRIu64 " cannot fit in the %" PRIu64 " bytes after the header "
                          "(each key-value takes at least %u bytes)",
                          *n_kv, rem, GGUF_MIN_KV_BYTES);
    if (*n_tensors > (rem - *n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_INFO_BYTES)
        return sl__errorf(SL_BAD_FORMAT,
                          "tensor count %" PRIu64 " cannot fit in the %" PRIu64 " bytes after the header and %" PRIu64
                          " key-values (each tensor info takes at least %u bytes)",
                          *n_tensors, rem, *n_kv, GGUF_MIN_TENSOR_INFO_BYTES);
    if (*n_kv > GGUF_MAX_KV)
        return sl__errorf(SL_BAD_FORMAT, "metadata key count %" PRIu64 " exceeds the limit of %u", *n_kv, GGUF_MAX_KV);
    if (*n_tensors > GGUF_MAX_TENSORS)
        return sl__errorf(SL_BAD_FORMAT, "tensor count %" PRIu64 " exceeds the limit of %u", *n_tensors,
                          GGUF_MAX_TENSORS);
    return SL_OK;
}


static sl_status gguf_parse_kvs(sl_gguf *g, gguf_cursor *c) {
    sl_status st;
    for (int64_t i = 0; i < g->n_kv; i++) {
        sl_gguf_kv *kv = &g->kvs[i];
        if ((st = gguf_read_name(c, &kv->key, "metadata key"))) return sl__error_prefix(st, "key-value %" PRId64, i);
        /* NUL-terminated copy of the key, clipped, for the messages of the value parser. */
        char key[GGUF_MSG_NAME_MAX + 1];
        snprintf(key, sizeof key, "%.*s", (int)SL_MIN(kv->key.len, GGUF_MSG_NAME_MAX), kv->key.data);
        uint32_t t;
        if ((st = gguf_read_u32(c, &t, "value type"))) return sl__error_prefix(st, "key '%s'", key);
        if (t >= SL_GGUF_TYPE_COUNT)
            return sl__errorf(SL_BAD_FORMAT, "key '%s': unknown value type %" PRIu32 " at offset %" PRIu64, key, t,
                              c->pos - 4);
        kv->type = (sl_gguf_type)t;
        if (kv->type == SL_GGUF_ARRAY) {
            uint64_t start = c->pos;
            g->kv_str_first[i] = g->n_str;
            if ((st = gguf_skip_array(c, 0, &g->n_str, &kv->arr_type, &kv->arr_len)))
                return sl__error_prefix(st, "key '%s'", key);
            /* The first element follows the array's element type (u32) and length (u64). */
            kv->data = c->base + start + 12;
        } else {
            kv->data = c->base + c->pos;
            if ((st = gguf_skip_value(c, kv->type, 0, NULL))) return sl__error_prefix(st, "key '%s'", key);
        }
    }
    return SL_OK;
}

/* Second pass over the (already validated) string arrays: the offset of every element, for O(1) access. */
static sl_status gguf_index_strings(sl_gguf *g) {
    g->str_pos = sl__calloc(g->n_str ? g->n_str : 1, sizeof *g->str_pos);
    if (!g->str_pos)
        return sl__errorf(SL_OUT_OF_MEMORY, "out of memory for the index of %" PRIu64 " metadata strings", g->n_str);
    for (int64_t i = 0; i < g->n_kv; i++) {
        const sl_gguf_kv *kv = &g->kvs[i];
        if (kv->type != SL_GGUF_ARRAY || kv->arr_type != SL_GGUF_STRING) continue;
        uint64_t pos = (uint64_t)(kv->data - g->base), *out = g->str_pos + g->kv_str_first[i];
        for (uint64_t j = 0; j < kv->arr_len; j++) {
            uint64_t len;
            memcpy(&len, g->base + pos, 8);
            out[j] = pos;
            pos += 8 + len;
        }
    }
    return SL_OK;
}

static sl_status gguf_build_kv_index(sl_gguf *g) {
    return gguf_index_build(&g->kv_index, &g->kvs[0].key, sizeof *g->kvs, g->n_kv, "metadata key", "key-values");
}

static sl_status gguf_read_alignment(sl_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const sl_gguf_kv *kv = sl_gguf_find_kv(g, "general.alignment");
    if (!kv) return SL_OK;
    uint64_t a;
    int neg;
    if (!gguf_int_value(kv, &a, &neg))
        return sl__errorf(SL_BAD_FORMAT, "general.alignment has type %s, expected an unsigned integer",
                          sl_gguf_type_name(kv->type));
    if (neg) return sl__errorf(SL_BAD_FORMAT, "general.alignment is negative (-%" PRIu64 ")", a);
    if (a == 0 || (a & (a - 1)) != 0)
        return sl__errorf(SL_BAD_FORMAT, "general.alignment %" PRIu64 " is not a non-zero power of two", a);
    if (a > GGUF_MAX_ALIGNMENT)
        return sl__errorf(SL_BAD_FORMAT, "general.alignment %" PRIu64 " exceeds the limit of %u", a, GGUF_MAX_ALIGNMENT);
    g->alignment = a;
    return SL_OK;
}

static const char *gguf_ggml_type_name(uint32_t type) {
    return type < SL_ARRAY_LEN(gguf_ggml_type_names) ? gguf_ggml_type_names[type] : NULL;
}

/* One tensor info: name, shape, type and offset, with the shape's size computed without overflow. */
static sl_status gguf_parse_tensor_info(sl_gguf *g, gguf_cursor *c, int64_t i, sl_gguf_tensor *t) {
    sl_status st = gguf_read_name(c, &t->name, "tensor name");
    if (st) return sl__error_prefix(st, "tensor info %" PRId64, i);
    int nl = (int)SL_MIN(t->name.len, GGUF_MSG_NAME_MAX);
    const char *nm = t->name.data;
    uint32_t n_dims;
    if ((st = gguf_read_u32(c, &n_dims, "tensor n_dims"))) return sl__error_prefix(st, "tensor '%.*s'", nl, nm);
    if (n_dims < 1 || n_dims > SL_GGUF_MAX_DIMS)
        return sl__errorf(SL_BAD_FORMAT, "tensor '%.*s': n_dims %" PRIu32 " is outside 1..%d", nl, nm, n_dims,
                          SL_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < SL_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (int d = 0; d < t->n_dims; d++) {
        uint64_t v;
        if ((st = gguf_read_u64(c, &v, "tensor dimension"))) return sl__error_prefix(st, "tensor '%.*s'", nl, nm);
        if (v > (uint64_t)INT64_MAX)
            return sl__errorf(SL_BAD_FORMAT, "tensor '%.*s': dimension %d is negative (%" PRId64 ")", nl, nm, d,
                              (int64_t)v);
        t->ne[d] = (int64_t)v;
    }
    uint32_t type;
    if ((st = gguf_read_u32(c, &type, "tensor type"))) return sl__error_prefix(st, "tensor '%.*s'", nl, nm);
    if ((st = gguf_read_u64(c, &t->offset, "tensor offset"))) return sl__error_prefix(st, "tensor '%.*s'", nl, nm);
    t->type = (int)type;

    int64_t n_elems = 1;
    for (int d = 0; d < t->n_dims; d++) {
        if (__builtin_mul_overflow(n_elems, t->ne[d], &n_elems))
            return sl__errorf(SL_BAD_FORMAT,
                              "tensor '%.*s': shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                              "] has more than 2^63 elements",
                              nl, nm, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    }
    if (type > INT32_MAX || !sl_dtype_name((int)type) || sl_dtype_block_elems((int)type) <= 0 ||
        sl_dtype_block_bytes((int)type) == 0) {
        const char *gname = gguf_ggml_type_name(type);
        if (gname)
            return sl__errorf(SL_UNSUPPORTED, "tensor '%.*s': type %s (GGML type id %" PRIu32 ") is not supported",
                              nl, nm, gname, type);
        return sl__errorf(SL_UNSUPPORTED, "tensor '%.*s': unknown GGML type id %" PRIu32, nl, nm, type);
    }
    int64_t be = sl_dtype_block_elems(t->type);
    uint64_t bb = sl_dtype_block_bytes(t->type);
    if (t->ne[0] % be != 0)
        return sl__errorf(SL_BAD_FORMAT, "tensor '%.*s': row length %" PRId64 " is not a multiple of the %s block size %"
                          PRId64, nl, nm, t->ne[0], sl_dtype_name(t->type), be);
    /* Bytes = blocks per row x bytes per block x rows; each step checked (the elements fit in 2^63, but the
     * byte count of a type wider than its block could still overflow). */
    uint64_t row_bytes, n_bytes;
    if (__builtin_mul_overflow((uint64_t)(t->ne[0] / be), bb, &row_bytes) ||
        __builtin_mul_overflow(row_bytes, (uint64_t)(t->ne[0] ? n_elems / t->ne[0] : 0), &n_bytes))
        return sl__errorf(SL_BAD_FORMAT, "tensor '%.*s': its size in bytes overflows 64 bits", nl, nm);
    /* A zero-sized shape (some dimension 0) still has rows of ne[0]; its byte count is 0 either way. */
    if (n_elems == 0) n_bytes = 0;
    t->n_bytes = n_bytes;
    if (t->offset % g->alignment != 0)
        return sl__errorf(SL_BAD_FORMAT, "tensor '%.*s': data offset %" PRIu64 " is not a multiple of the alignment %"
                          PRIu64, nl, nm, t->offset, g->alignment);
    return SL_OK;
}

static sl_status gguf_build_tensor_index(sl_gguf *g) {
    return gguf_index_build(&g->tensor_index, &g->tensors[0].name, sizeof *g->tensors, g->n_tensors, "tensor name",
                            "tensors");
}

/* Sorting tensors by offset, for the overlap check. */
static int gguf_cmp_offset(const void *a, const void *b) {
    const sl_gguf_tensor *x = *(const sl_gguf_tensor *const *)a, *y = *(const sl_gguf_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return (x->n_bytes > y->n_bytes) - (x->n_bytes < y->n_bytes);
}

/* Every tensor's bytes inside the data section and the file, and no two tensors sharing a byte. */
static sl_status gguf_place_tensors(sl_gguf *g) {
    uint64_t data_size = g->size > g->data_offset ? g->size - g->data_offset : 0;
    const sl_gguf_tensor **sorted = NULL; /* [n_nonempty] pointers into tensors[], by offset */
    int64_t n_sorted = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        sl_gguf_tensor *t = &g->tensors[i];
        int nl = (int)SL_MIN(t->name.len, GGUF_MSG_NAME_MAX);
        if (t->offset > data_size || t->n_bytes > data_size - t->offset) {
            uint64_t start, end;
            if (__builtin_add_overflow(g->data_offset, t->offset, &start) ||
                __builtin_add_overflow(start, t->n_bytes, &end))
                return sl__errorf(SL_BAD_FORMAT,
                                  "tensor '%.*s': data offset %" PRIu64 " + %" PRIu64 " bytes lies beyond the end of "
                                  "the file (size %" PRIu64 ")",
                                  nl, t->name.data, t->offset, t->n_bytes, g->size);
            return sl__errorf(SL_BAD_FORMAT, "tensor '%.*s': data [%" PRIu64 " .. %" PRIu64 ") exceeds file size %" PRIu64,
                              nl, t->name.data, start, end, g->size);
        }
        /* In range; a zero-byte tensor of a file that ends before its aligned data section points at the end. */
        t->data = g->base + SL_MIN(g->data_offset + t->offset, g->size);
        if (t->n_bytes) n_sorted++;
    }
    if (n_sorted < 2) return SL_OK;
    sorted = sl__malloc((size_t)n_sorted * sizeof *sorted);
    if (!sorted) return sl__errorf(SL_OUT_OF_MEMORY, "out of memory sorting %" PRId64 " tensors", n_sorted);
    int64_t k = 0;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].n_bytes) sorted[k++] = &g->tensors[i];
    qsort(sorted, (size_t)n_sorted, sizeof *sorted, gguf_cmp_offset);
    sl_status st = SL_OK;
    for (int64_t i = 1; i < n_sorted; i++) {
        const sl_gguf_tensor *a = sorted[i - 1], *b = sorted[i];
        if (a->offset + a->n_bytes > b->offset) { /* both inside the file: no overflow */
            uint64_t a0 = g->data_offset + a->offset, b0 = g->data_offset + b->offset;
            st = sl__errorf(SL_BAD_FORMAT,
                            "tensors '%.*s' (data [%" PRIu64 " .. %" PRIu64 ")) and '%.*s' (data [%" PRIu64 " .. %" PRIu64
                            ")) overlap",
                            (int)SL_MIN(a->name.len, GGUF_MSG_NAME_MAX), a->name.data, a0, a0 + a->n_bytes,
                            (int)SL_MIN(b->name.len, GGUF_MSG_NAME_MAX), b->name.data, b0, b0 + b->n_bytes);
            break;
        }
    }
    free(sorted);
    return st;
}

/* Parses g->base[0 .. g->size) into g. On failure the caller closes g (everything allocated hangs off it). */
static sl_status gguf_parse(sl_gguf *g) {
    gguf_cursor c = {g->base, g->size, 0};
    uint64_t n_tensors, n_kv;
    sl_status st = gguf_parse_header(g, &c, &n_tensors, &n_kv);
    if (st) return st;

    g->n_kv = (int64_t)n_kv;
    g->kvs = sl__calloc(n_kv ? n_kv : 1, sizeof *g->kvs);
    g->kv_str_first = sl__calloc(n_kv ? n_kv : 1, sizeof *g->kv_str_first);
    if (!g->kvs || !g->kv_str_first)
        return sl__errorf(SL_OUT_OF_MEMORY, "out of memory for %" PRIu64 " metadata entries", n_kv);
    if ((st = gguf_parse_kvs(g, &c))) return st;
    if ((st = gguf_build_kv_index(g))) return st;
    if ((st = gguf_index_strings(g))) return st;
    if ((st = gguf_read_alignment(g))) return st;

    /* The kvs took real bytes: check the tensor count again against what is left now. */
    if (n_tensors > gguf_remaining(&c) / GGUF_MIN_TENSOR_INFO_BYTES)
        return sl__errorf(SL_BAD_FORMAT,
                          "tensor count %" PRIu64 " cannot fit in the %" PRIu64 " bytes after the metadata (each tensor "
                          "info takes at least %u bytes)",
                          n_tensors, gguf_remaining(&c), GGUF_MIN_TENSOR_INFO_BYTES);
    g->n_tensors = (int64_t)n_tensors;
    g->tensors = sl__calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    if (!g->tensors) return sl__errorf(SL_OUT_OF_MEMORY, "out of memory for %" PRIu64 " tensor infos", n_tensors);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        if ((st = gguf_parse_tensor_info(g, &c, i, &g->tensors[i]))) return st;
    }
    if ((st = gguf_build_tensor_index(g))) return st;

    /* c.pos <= size and alignment <= 16 MiB: the rounding cannot overflow. */
    g->data_offset = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    return gguf_place_tensors(g);
}

sl_status sl_gguf_open_memory(const void *buf, size_t len, sl_gguf **out) {
    if (!out) return sl__errorf(SL_INVALID_ARGUMENT, "sl_gguf_open_memory: out is NULL");
    *out = NULL;
    if (!buf && len) return sl__errorf(SL_INVALID_ARGUMENT, "sl_gguf_open_memory: NULL buffer of %zu bytes", len);
    sl_gguf *g = sl__calloc(1, sizeof *g);
    if (!g) return sl__errorf(SL_OUT_OF_MEMORY, "out of memory opening a GGUF buffer");
    g->base = buf ? buf : (const uint8_t *)"";
    g->size = len;
    sl_status st = gguf_parse(g);
    if (st) {
        sl_gguf_close(g);
        return st;
    }
    *out = g;
    return SL_OK;
}

sl_status sl_gguf_open(const char *path, sl_gguf **out) {
    if (!out) return sl__errorf(SL_INVALID_ARGUMENT, "sl_gguf_open: out is NULL");
    *out = NULL;
    if (!path) return sl__errorf(SL_INVALID_ARGUMENT, "sl_gguf_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sl__errorf(errno == ENOENT ? SL_NOT_FOUND : SL_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        sl_status st = sl__errorf(SL_IO, "%s: fstat: %s", path, strerror(errno));
        close(fd);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sl__errorf(SL_IO, "%s: not a regular file", path);
    }
    sl_gguf *g = sl__calloc(1, sizeof *g);
    if (!g) {
        close(fd);
        return sl__errorf(SL_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    g->size = (uint64_t)sb.st_size;
    g->base = (const uint8_t *)"";
    if (sb.st_size > 0) {
        if ((uint64_t)sb.st_size > SIZE_MAX) {
            close(fd);
            sl_gguf_close(g);
            return sl__errorf(SL_UNSUPPORTED, "%s: file too large to map", path);
        }
        /* Read-only and private: the tensors are used in place and nobody may write through the mapping. */
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            sl_status st = sl__errorf(SL_IO, "%s: mmap of %" PRIu64 " bytes: %s", path, g->size, strerror(errno));
            close(fd);
            sl_gguf_close(g);
            return st;
        }
        g->map = m;
        g->map_len = (size_t)sb.st_size;
        g->base = m;
    }
    close(fd); /* the mapping keeps the file */
    sl_status st = gguf_parse(g);
    if (st) {
        sl_gguf_close(g);
        return sl__error_prefix(st, "%s", path);
    }
    *out = g;
    return SL_OK;
}

void sl_gguf_close(sl_gguf *g) {
    if (!g) return;
    if (g->map) munmap(g->map, g->map_len);
    free(g->kvs);
    free(g->kv_str_first);
    free(g->str_pos);
    free(g->kv_index.refs);
    free(g->tensors);
    free(g->tensor_index.refs);
    free(g);
}

/* ---- accessors ------------------------------------------------------------------------------------------ */
uint32_t sl_gguf_version(const sl_gguf *g) { return g->version; }
uint64_t sl_gguf_alignment(const sl_gguf *g) { return g->alignment; }
uint64_t sl_gguf_file_size(const sl_gguf *g) { return g->size; }
int64_t sl_gguf_n_kv(const sl_gguf *g) { return g->n_kv; }
int64_t sl_gguf_n_tensors(const sl_gguf *g) { return g->n_tensors; }

const sl_gguf_kv *sl_gguf_kv_at(const sl_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_kv ? &g->kvs[i] : NULL;
}

const sl_gguf_tensor *sl_gguf_tensor_at(const sl_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const sl_gguf_kv *sl_gguf_find_kv(const sl_gguf *g, const char *key) {
    if (!g) return NULL;
    int64_t i = gguf_index_find(&g->kv_index, key);
    return i < 0 ? NULL : &g->kvs[i];
}

const sl_gguf_tensor *sl_gguf_find_tensor(const sl_gguf *g, const char *name) {
    if (!g) return NULL;
    int64_t i = gguf_index_find(&g->tensor_index, name);
    return i < 0 ? NULL : &g->tensors[i];
}

/* ---- typed getters -------------------------------------------------------------------------------------- */
static sl_status gguf_lookup(const sl_gguf *g, const char *key, const sl_gguf_kv **kv) {
    if (!g || !key) return sl__errorf(SL_INVALID_ARGUMENT, "GGUF lookup with a NULL file or key");
    *kv = sl_gguf_find_kv(g, key);
    if (!*kv) return sl__errorf(SL_NOT_FOUND, "metadata key '%s' not found", key);
    return SL_OK;
}

static sl_status gguf_wrong_type(const sl_gguf_kv *kv, const char *key, const char *expected) {
    if (kv->type == SL_GGUF_ARRAY)
        return sl__errorf(SL_BAD_FORMAT, "metadata key '%s' is an array of %s, expected %s", key,
                          sl_gguf_type_name(kv->arr_type), expected);
    return sl__errorf(SL_BAD_FORMAT, "metadata key '%s' has type %s, expected %s", key, sl_gguf_type_name(kv->type),
                      expected);
}

sl_status sl_gguf_get_u32(const sl_gguf *g, const char *key, uint32_t *out) {
    const sl_gguf_kv *kv;
    sl_status st = gguf_lookup(g, key, &kv);
    if (st) return st;
    uint64_t mag;
    int neg;
    if (!gguf_int_value(kv, &mag, &neg)) return gguf_wrong_type(kv, key, "an integer");
    if (neg || mag > UINT32_MAX)
        return sl__errorf(SL_BAD_FORMAT, "metadata key '%s': value %s%" PRIu64 " does not fit in uint32", key,
                          neg ? "-" : "", mag);
    *out = (uint32_t)mag;
    return SL_OK;
}

sl_status sl_gguf_get_i64(const sl_gguf *g, const char *key, int64_t *out) {
    const sl_gguf_kv *kv;
    sl_status st = gguf_lookup(g, key, &kv);
    if (st) return st;
    uint64_t mag;
    int neg;
    if (!gguf_int_value(kv, &mag, &neg)) return gguf_wrong_type(kv, key, "an integer");
    if (!neg && mag > (uint64_t)INT64_MAX)
        return sl__errorf(SL_BAD_FORMAT, "metadata key '%s': value %" PRIu64 " does not fit in int64", key, mag);
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag; /* 0 - mag wraps to the two's complement value */
    return SL_OK;
}

sl_status sl_gguf_get_f32(const sl_gguf *g, const char *key, float *out) {
    const sl_gguf_kv *kv;
    sl_status st = gguf_lookup(g, key, &kv);
    if (st) return st;
    if (kv->type == SL_GGUF_FLOAT32) {
        memcpy(out, kv->data, 4);
        return SL_OK;
    }
    if (kv->type == SL_GGUF_FLOAT64) { /* some converters write f64; the loaders want f32 either way */
        double d;
        memcpy(&d, kv->data, 8);
        *out = (float)d;
        return SL_OK;
    }
    return gguf_wrong_type(kv, key, "float32");
}

sl_status sl_gguf_get_bool(const sl_gguf *g, const char *key, int *out) {
    const sl_gguf_kv *kv;
    sl_status st = gguf_lookup(g, key, &kv);
    if (st) return st;
    if (kv->type != SL_GGUF_BOOL) return gguf_wrong_type(kv, key, "bool");
    *out = kv->data[0] != 0;
    return SL_OK;
}

/* A string stored at p: u64 length, then the bytes (validated at open). */
static sl_gguf_str gguf_str_at(const uint8_t *p) {
    sl_gguf_str s;
    memcpy(&s.len, p, 8);
    s.data = (const char *)p + 8;
    return s;
}

sl_status sl_gguf_get_str(const sl_gguf *g, const char *key, sl_gguf_str *out) {
    const sl_gguf_kv *kv;
    sl_status st = gguf_lookup(g, key, &kv);
    if (st) return st;
    if (kv->type != SL_GGUF_STRING) return gguf_wrong_type(kv, key, "string");
    *out = gguf_str_at(kv->data);
    return SL_OK;
}

sl_status sl_gguf_get_arr(const sl_gguf *g, const char *key, sl_gguf_type *elem_type, uint64_t *len) {
    const sl_gguf_kv *kv;
    sl_status st = gguf_lookup(g, key, &kv);
    if (st) return st;
    if (kv->type != SL_GGUF_ARRAY) return gguf_wrong_type(kv, key, "an array");
    if (elem_type) *elem_type = kv->arr_type;
    if (len) *len = kv->arr_len;
    return SL_OK;
}

/* The array under key, of one of the element types a/b, with i in range. */
static sl_status gguf_arr_elem(const sl_gguf *g, const char *key, uint64_t i, sl_gguf_type a, sl_gguf_type b,
                               const char *expected, const sl_gguf_kv **kv) {
    sl_status st = gguf_lookup(g, key, kv);
    if (st) return st;
    if ((*kv)->type != SL_GGUF_ARRAY || ((*kv)->arr_type != a && (*kv)->arr_type != b))
        return gguf_wrong_type(*kv, key, expected);
    if (i >= (*kv)->arr_len)
        return sl__errorf(SL_INVALID_ARGUMENT, "metadata key '%s': index %" PRIu64 " out of range (length %" PRIu64 ")",
                          key, i, (*kv)->arr_len);
    return SL_OK;
}

sl_status sl_gguf_arr_str(const sl_gguf *g, const char *key, uint64_t i, sl_gguf_str *out) {
    const sl_gguf_kv *kv;
    sl_status st = gguf_arr_elem(g, key, i, SL_GGUF_STRING, SL_GGUF_STRING, "an array of string", &kv);
    if (st) return st;
    *out = gguf_str_at(g->base + g->str_pos[g->kv_str_first[kv - g->kvs] + i]);
    return SL_OK;
}

sl_status sl_gguf_arr_f32(const sl_gguf *g, const char *key, uint64_t i, float *out) {
    const sl_gguf_kv *kv;
    sl_status st = gguf_arr_elem(g, key, i, SL_GGUF_FLOAT32, SL_GGUF_FLOAT32, "an array of float32", &kv);
    if (st) return st;
    memcpy(out, kv->data + 4 * i, 4);
    return SL_OK;
}

sl_status sl_gguf_arr_i32(const sl_gguf *g, const char *key, uint64_t i, int32_t *out) {
    const sl_gguf_kv *kv;
    sl_status st = gguf_arr_elem(g, key, i, SL_GGUF_INT32, SL_GGUF_UINT32, "an array of int32", &kv);
    if (st) return st;
    if (kv->arr_type == SL_GGUF_UINT32) {
        uint32_t u;
        memcpy(&u, kv->data + 4 * i, 4);
        if (u > INT32_MAX)
            return sl__errorf(SL_BAD_FORMAT, "metadata key '%s': element %" PRIu64 " (%" PRIu32 ") does not fit in int32",
                              key, i, u);
        *out = (int32_t)u;
        return SL_OK;
    }
    memcpy(out, kv->data + 4 * i, 4);
    return SL_OK;
}

/* ---- helpers -------------------------------------------------------------------------------------------- */
int sl_gguf_str_eq(sl_gguf_str s, const char *cstr) { return cstr && gguf_str_eq_n(s, cstr, strlen(cstr)); }

const char *sl_gguf_type_name(sl_gguf_type t) {
    return (unsigned)t < SL_GGUF_TYPE_COUNT ? gguf_value_type_names[t] : "unknown";
}

/* Appends to a fixed buffer, silently clipping; buf stays NUL-terminated. */
typedef struct gguf_fmt {
    char *buf;
    size_t size, len;
} gguf_fmt;

static void gguf_fmt_add(gguf_fmt *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gguf_fmt_add(gguf_fmt *f, const char *fmt, ...) {
    if (f->len + 1 >= f->size) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(f->buf + f->len, f->size - f->len, fmt, ap);
    va_end(ap);
    if (n > 0) f->len = SL_MIN(f->len + (size_t)n, f->size - 1);
}

/* A string value, quoted, control bytes escaped, at most max_bytes of it shown. */
static void gguf_fmt_str(gguf_fmt *f, sl_gguf_str s, uint64_t max_bytes) {
    gguf_fmt_add(f, "\"");
    for (uint64_t i = 0; i < s.len && i < max_bytes && f->len + 1 < f->size; i++) {
        unsigned char ch = (unsigned char)s.data[i];
        if (ch == '"' || ch == '\\') gguf_fmt_add(f, "\\%c", ch);
        else if (ch == '\n') gguf_fmt_add(f, "\\n");
        else if (ch < 0x20 || ch == 0x7f) gguf_fmt_add(f, "\\x%02x", ch);
        else gguf_fmt_add(f, "%c", ch);
    }
    gguf_fmt_add(f, s.len > max_bytes ? "\"..." : "\"");
}

/* One scalar of type t at p (validated at open). */
static void gguf_fmt_scalar(gguf_fmt *f, sl_gguf_type t, const uint8_t *p, uint64_t max_str) {
    switch (t) {
    case SL_GGUF_UINT8: gguf_fmt_add(f, "%u", (unsigned)p[0]); break;
    case SL_GGUF_INT8: gguf_fmt_add(f, "%d", (int)(int8_t)p[0]); break;
    case SL_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); gguf_fmt_add(f, "%u", (unsigned)v); break; }
    case SL_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); gguf_fmt_add(f, "%d", (int)v); break; }
    case SL_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); gguf_fmt_add(f, "%" PRIu32, v); break; }
    case SL_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); gguf_fmt_add(f, "%" PRId32, v); break; }
    case SL_GGUF_UINT64: { uint64_t v; memcpy(&v, p, 8); gguf_fmt_add(f, "%" PRIu64, v); break; }
    case SL_GGUF_INT64: { int64_t v; memcpy(&v, p, 8); gguf_fmt_add(f, "%" PRId64, v); break; }
    case SL_GGUF_FLOAT32: { float v; memcpy(&v, p, 4); gguf_fmt_add(f, "%g", (double)v); break; }
    case SL_GGUF_FLOAT64: { double v; memcpy(&v, p, 8); gguf_fmt_add(f, "%g", v); break; }
    case SL_GGUF_BOOL: gguf_fmt_add(f, "%s", p[0] ? "true" : "false"); break;
    case SL_GGUF_STRING: gguf_fmt_str(f, gguf_str_at(p), max_str); break;
    default: gguf_fmt_add(f, "?"); break;
    }
}

void sl_gguf_kv_format(const sl_gguf_kv *kv, char *buf, size_t buf_size) {
    if (!buf || buf_size == 0) return;
    gguf_fmt f = {buf, buf_size, 0};
    buf[0] = 0;
    if (!kv) return;
    if (kv->type != SL_GGUF_ARRAY) {
        /* A chat template is kilobytes: show its start; `sluice info` is a summary. */
        gguf_fmt_scalar(&f, kv->type, kv->data, 256);
        return;
    }
    gguf_fmt_add(&f, "[%" PRIu64 " x %s]", kv->arr_len, sl_gguf_type_name(kv->arr_type));
    if (kv->arr_type == SL_GGUF_ARRAY || kv->arr_len == 0) return;
    /* The first few elements give the flavour of a 50k-token vocabulary without flooding the terminal. */
    enum { SHOWN = 8 };
    gguf_fmt_add(&f, " [");
    const uint8_t *p = kv->data;
    size_t esize = gguf_value_size(kv->arr_type);
    for (uint64_t i = 0; i < kv->arr_len && i < SHOWN; i++) {
        if (i) gguf_fmt_add(&f, ", ");
        gguf_fmt_scalar(&f, kv->arr_type, p, 32);
        if (esize) p += esize;
        else p += 8 + gguf_str_at(p).len;
    }
    gguf_fmt_add(&f, kv->arr_len > SHOWN ? ", ...]" : "]");
}
