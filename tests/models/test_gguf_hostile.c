/*
 * test_gguf_hostile.c — hand-built files, each wrong in exactly one way, each refused with a status and a
 * message that names the problem.
 *
 * Files are assembled byte by byte here (not with our writer, which refuses to write most of these), from one
 * valid baseline: general.architecture = "llama", and tensors "a" (f32 [8], 32 bytes at offset 0) and "b"
 * (f32 [8, 2], 64 bytes at offset 32). Every test that expects a refusal changes one thing of that baseline,
 * and the baseline itself must open (a control that keeps these tests honest).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "kdtype.h"
#include "testutil.h"

/* Criterion ignores a worker's exit status once its tests passed, so LeakSanitizer's report at exit would
 * not fail the test: under ASan, each case asks for a leak check itself. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define ASSERT_NO_LEAKS() cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaks: see LeakSanitizer's report")
#else
#define ASSERT_NO_LEAKS() ((void)0)
#endif

/* ---- a byte builder ------------------------------------------------------------------------------------- */
typedef struct bytes {
    unsigned char *p;
    size_t len, cap;
} bytes;

static void put(bytes *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert(b->p);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void put_u32(bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_str(bytes *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_header(bytes *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void put_kv_str(bytes *b, const char *key, const char *v) {
    put_str(b, key);
    put_u32(b, SL_GGUF_STRING);
    put_str(b, v);
}
static void put_kv_u32(bytes *b, const char *key, uint32_t v) {
    put_str(b, key);
    put_u32(b, SL_GGUF_UINT32);
    put_u32(b, v);
}
static void put_tensor(bytes *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) put_u64(b, ne[d]);
    put_u32(b, type);
    put_u64(b, off);
}
/* Pads to `align` then appends n data bytes (a recognizable ramp). */
static void put_data(bytes *b, size_t align, size_t n) {
    while (b->len % align) put(b, "", 1);
    for (size_t i = 0; i < n; i++) put(b, &(unsigned char){(unsigned char)i}, 1);
}

static void put_baseline_kvs(bytes *b) { put_kv_str(b, "general.architecture", "llama"); }
static void put_baseline_tensors(bytes *b) {
    put_tensor(b, "a", 1, (uint64_t[]){8}, SL_DTYPE_F32, 0);
    put_tensor(b, "b", 2, (uint64_t[]){8, 2}, SL_DTYPE_F32, 32);
}
static void put_baseline(bytes *b) {
    put_header(b, 3, 2, 1);
    put_baseline_kvs(b);
    put_baseline_tensors(b);
    put_data(b, 32, 96);
}

/* Opens b through an exact-size heap copy (ASan flags any byte read past it). */
static sl_status open_bytes(const bytes *b, sl_gguf **g) {
    unsigned char *copy = malloc(b->len ? b->len : 1);
    memcpy(copy, b->p, b->len);
    *g = (sl_gguf *)1;
    sl_status st = sl_gguf_open_memory(copy, b->len, g);
    if (st != SL_OK) cr_assert_null(*g, "a failed open leaves *out NULL");
    sl_gguf_close(*g); /* before the buffer it points into */
    *g = NULL;
    free(copy);
    return st;
}

static void expect_fail(bytes *b, sl_status want, const char *fragment) {
    sl_gguf *g;
    sl_status st = open_bytes(b, &g);
    cr_assert_eq(st, want, "status %s, want %s (message: %s)", sl_status_name(st), sl_status_name(want),
                 sl_last_error());
    cr_assert(strstr(sl_last_error(), fragment), "message '%s' does not mention '%s'", sl_last_error(), fragment);
    cr_log_info("%s", sl_last_error()); /* --verbose shows what a user would read */
    free(b->p);
    ASSERT_NO_LEAKS();
}

static void expect_ok(bytes *b) {
    sl_gguf *g;
    sl_status st = open_bytes(b, &g);
    cr_assert_eq(st, SL_OK, "%s", sl_last_error());
    free(b->p);
    ASSERT_NO_LEAKS();
}

/* ---- the control ---------------------------------------------------------------------------------------- */
Test(gguf_hostile, baseline_opens) {
    bytes b = {0};
    put_baseline(&b);
    unsigned char *copy = malloc(b.len);
    memcpy(copy, b.p, b.len);
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open_memory(copy, b.len, &g), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_gguf_n_tensors(g), 2);
    const sl_gguf_tensor *t = sl_gguf_find_tensor(g, "b");
    cr_assert_eq(t->n_bytes, 64);
    cr_assert_eq(((const unsigned char *)t->data)[0], 32, "b's data starts 32 bytes into the data ramp");
    sl_gguf_close(g);
    free(copy);
    free(b.p);
}

Test(gguf_hostile, version_2_opens) {
    bytes b = {0};
    put_header(&b, 2, 2, 1);
    put_baseline_kvs(&b);
    put_baseline_tensors(&b);
    put_data(&b, 32, 96);
    expect_ok(&b);
}

/* ---- header --------------------------------------------------------------------------------------------- */
Test(gguf_hostile, bad_magic) {
    bytes b = {0};
    put_baseline(&b);
    memcpy(b.p, "GGML", 4);
    expect_fail(&b, SL_BAD_FORMAT, "not a GGUF file");
}

Test(gguf_hostile, version_1) {
    bytes b = {0};
    put_header(&b, 1, 0, 0);
    expect_fail(&b, SL_UNSUPPORTED, "version 1");
}

Test(gguf_hostile, version_4) {
    bytes b = {0};
    put_header(&b, 4, 0, 0);
    expect_fail(&b, SL_UNSUPPORTED, "version 4");
}

Test(gguf_hostile, big_endian) {
    bytes b = {0};
    put_baseline(&b);
    uint32_t be3 = 0x03000000u; /* version 3 written big-endian */
    memcpy(b.p + 4, &be3, 4);
    expect_fail(&b, SL_UNSUPPORTED, "big-endian");
}

Test(gguf_hostile, huge_n_tensors) {
    bytes b = {0};
    put_header(&b, 3, UINT64_MAX / 2, 1);
    put_baseline_kvs(&b);
    put_baseline_tensors(&b);
    put_data(&b, 32, 96);
    expect_fail(&b, SL_BAD_FORMAT, "tensor count");
}

Test(gguf_hostile, huge_n_kv) {
    bytes b = {0};
    put_header(&b, 3, 2, 1ull << 40);
    put_baseline_kvs(&b);
    put_baseline_tensors(&b);
    put_data(&b, 32, 96);
    expect_fail(&b, SL_BAD_FORMAT, "metadata key count");
}

/* ---- metadata ------------------------------------------------------------------------------------------- */
Test(gguf_hostile, huge_string_length) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "general.name");
    put_u32(&b, SL_GGUF_STRING);
    put_u64(&b, UINT64_MAX - 3);
    put(&b, "abc", 3);
    expect_fail(&b, SL_BAD_FORMAT, "string value");
}

Test(gguf_hostile, huge_key_length) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_u64(&b, 1ull << 62);
    put(&b, "general.name", 12);
    expect_fail(&b, SL_BAD_FORMAT, "metadata key");
}

Test(gguf_hostile, key_too_long) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    char *key = malloc(70001);
    memset(key, 'k', 70000);
    key[70000] = 0;
    put_kv_u32(&b, key, 1);
    free(key);
    expect_fail(&b, SL_BAD_FORMAT, "exceeds the limit");
}

Test(gguf_hostile, key_with_nul) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_kv_u32(&b, "general.xalignment", 32);
    b.p[24 + 8 + 8] = 0; /* "general.\0alignment" */
    expect_fail(&b, SL_BAD_FORMAT, "NUL");
}

Test(gguf_hostile, empty_key) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_kv_u32(&b, "", 1);
    expect_fail(&b, SL_BAD_FORMAT, "empty");
}

Test(gguf_hostile, unknown_value_type) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, 13);
    put_u32(&b, 0);
    expect_fail(&b, SL_BAD_FORMAT, "unknown value type 13");
}

Test(gguf_hostile, duplicate_key) {
    bytes b = {0};
    put_header(&b, 3, 2, 2);
    put_baseline_kvs(&b);
    put_kv_str(&b, "general.architecture", "gpt2");
    put_baseline_tensors(&b);
    put_data(&b, 32, 96);
    expect_fail(&b, SL_BAD_FORMAT, "duplicate metadata key 'general.architecture'");
}

Test(gguf_hostile, huge_array_of_u32) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "a");
    put_u32(&b, SL_GGUF_ARRAY);
    put_u32(&b, SL_GGUF_UINT32);
    put_u64(&b, (1ull << 62) + 1); /* x 4 bytes wraps to 4 in 64 bits: the check must not multiply */
    put_u32(&b, 7);
    expect_fail(&b, SL_BAD_FORMAT, "array of");
}

Test(gguf_hostile, huge_array_of_strings) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, SL_GGUF_ARRAY);
    put_u32(&b, SL_GGUF_STRING);
    put_u64(&b, 1ull << 40);
    put_str(&b, "a");
    expect_fail(&b, SL_BAD_FORMAT, "cannot fit");
}

Test(gguf_hostile, array_unknown_element_type) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "a");
    put_u32(&b, SL_GGUF_ARRAY);
    put_u32(&b, 77);
    put_u64(&b, 1);
    put_u32(&b, 0);
    expect_fail(&b, SL_BAD_FORMAT, "unknown element type 77");
}

/* Arrays of arrays, 100 levels deep: refused before the recursion goes deep. */
Test(gguf_hostile, arrays_nested_too_deep) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "a");
    put_u32(&b, SL_GGUF_ARRAY);
    for (int i = 0; i < 100; i++) {
        put_u32(&b, SL_GGUF_ARRAY);
        put_u64(&b, 1);
    }
    put_u32(&b, SL_GGUF_UINT8);
    put_u64(&b, 0);
    expect_fail(&b, SL_BAD_FORMAT, "nested deeper");
}

Test(gguf_hostile, arrays_of_arrays_open) {
    bytes b = {0};
    put_header(&b, 3, 0, 2);
    put_str(&b, "nested");
    put_u32(&b, SL_GGUF_ARRAY);
    put_u32(&b, SL_GGUF_ARRAY);
    put_u64(&b, 2);
    put_u32(&b, SL_GGUF_STRING); /* [["x", "yz"], []] */
    put_u64(&b, 2);
    put_str(&b, "x");
    put_str(&b, "yz");
    put_u32(&b, SL_GGUF_FLOAT64);
    put_u64(&b, 0);
    put_kv_u32(&b, "after", 5);
    unsigned char *copy = malloc(b.len);
    memcpy(copy, b.p, b.len);
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open_memory(copy, b.len, &g), SL_OK, "%s", sl_last_error());
    sl_gguf_type et;
    uint64_t n;
    cr_assert_eq(sl_gguf_get_arr(g, "nested", &et, &n), SL_OK);
    cr_assert_eq(et, SL_GGUF_ARRAY);
    cr_assert_eq(n, 2);
    uint32_t u;
    cr_assert_eq(sl_gguf_get_u32(g, "after", &u), SL_OK);
    cr_assert_eq(u, 5);
    sl_gguf_close(g);
    free(copy);
    free(b.p);
}

/* ---- alignment ------------------------------------------------------------------------------------------ */
static void alignment_case(int type, uint64_t value, sl_status want, const char *fragment) {
    bytes b = {0};
    put_header(&b, 3, 2, 2);
    put_baseline_kvs(&b);
    put_str(&b, "general.alignment");
    put_u32(&b, (uint32_t)type);
    if (type == SL_GGUF_STRING) put_str(&b, "32");
    else if (type == SL_GGUF_UINT64) put_u64(&b, value);
    else put_u32(&b, (uint32_t)value);
    put_baseline_tensors(&b);
    put_data(&b, 32, 96);
    if (want == SL_OK) expect_ok(&b);
    else expect_fail(&b, want, fragment);
}

Test(gguf_hostile, alignment_3) { alignment_case(SL_GGUF_UINT32, 3, SL_BAD_FORMAT, "not a non-zero power of two"); }
Test(gguf_hostile, alignment_0) { alignment_case(SL_GGUF_UINT32, 0, SL_BAD_FORMAT, "not a non-zero power of two"); }
Test(gguf_hostile, alignment_huge) { alignment_case(SL_GGUF_UINT64, 1ull << 40, SL_BAD_FORMAT, "exceeds the limit"); }
Test(gguf_hostile, alignment_negative) { alignment_case(SL_GGUF_INT32, (uint32_t)-32, SL_BAD_FORMAT, "negative"); }
Test(gguf_hostile, alignment_string) { alignment_case(SL_GGUF_STRING, 0, SL_BAD_FORMAT, "general.alignment has type string"); }
Test(gguf_hostile, alignment_16_opens) { alignment_case(SL_GGUF_UINT32, 16, SL_OK, ""); }

/* Alignment 64: the data section moves to the next multiple of 64, and offset 32 is no longer aligned. */
Test(gguf_hostile, alignment_64_misaligns_offset_32) {
    alignment_case(SL_GGUF_UINT32, 64, SL_BAD_FORMAT, "tensor 'b': data offset 32 is not a multiple of the alignment 64");
}

/* ---- tensor infos --------------------------------------------------------------------------------------- */
static void one_tensor_case(uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off, size_t data_bytes,
                            sl_status want, const char *fragment) {
    bytes b = {0};
    put_header(&b, 3, 1, 1);
    put_baseline_kvs(&b);
    put_tensor(&b, "blk.0.attn_q.weight", n_dims, ne, type, off);
    put_data(&b, 32, data_bytes);
    if (want == SL_OK) expect_ok(&b);
    else expect_fail(&b, want, fragment);
}

Test(gguf_hostile, n_dims_5) {
    one_tensor_case(5, (uint64_t[]){8, 1, 1, 1, 1}, SL_DTYPE_F32, 0, 32, SL_BAD_FORMAT, "n_dims 5 is outside 1..4");
}
Test(gguf_hostile, n_dims_0) { one_tensor_case(0, NULL, SL_DTYPE_F32, 0, 32, SL_BAD_FORMAT, "n_dims 0"); }
Test(gguf_hostile, dim_product_overflow) {
    one_tensor_case(3, (uint64_t[]){1ull << 32, 1ull << 32, 2}, SL_DTYPE_F32, 0, 32, SL_BAD_FORMAT, "2^63");
}
Test(gguf_hostile, bytes_overflow) {
    /* 2^62 elements fit in int64, but 2^62 f32 values are 2^64 bytes. */
    one_tensor_case(2, (uint64_t[]){1ull << 31, 1ull << 31}, SL_DTYPE_F32, 0, 32, SL_BAD_FORMAT, "overflows");
}
Test(gguf_hostile, negative_dim) {
    one_tensor_case(2, (uint64_t[]){8, (uint64_t)-4}, SL_DTYPE_F32, 0, 32, SL_BAD_FORMAT, "dimension 1 is negative");
}
Test(gguf_hostile, unknown_type_99) {
    one_tensor_case(1, (uint64_t[]){32}, 99, 0, 32, SL_UNSUPPORTED, "unknown GGML type id 99");
}
Test(gguf_hostile, iq2_xxs_unsupported) {
    one_tensor_case(2, (uint64_t[]){256, 2}, 16, 0, 132, SL_UNSUPPORTED, "iq2_xxs");
}
Test(gguf_hostile, removed_type_4) {
    one_tensor_case(1, (uint64_t[]){32}, 4, 0, 32, SL_UNSUPPORTED, "q4_2");
}
Test(gguf_hostile, row_not_whole_blocks) {
    one_tensor_case(2, (uint64_t[]){33, 2}, SL_DTYPE_Q4_0, 0, 64, SL_BAD_FORMAT,
                    "row length 33 is not a multiple of the q4_0 block size 32");
}
Test(gguf_hostile, misaligned_offset) {
    one_tensor_case(1, (uint64_t[]){8}, SL_DTYPE_F32, 4, 64, SL_BAD_FORMAT, "not a multiple of the alignment 32");
}
Test(gguf_hostile, data_past_end_of_file) {
    /* 256 bytes of data declared, 255 present: the message gives absolute file offsets and the file size. */
    bytes b = {0};
    put_header(&b, 3, 1, 1);
    put_baseline_kvs(&b);
    put_tensor(&b, "blk.0.attn_q.weight", 2, (uint64_t[]){8, 8}, SL_DTYPE_F32, 0);
    put_data(&b, 32, 255);
    size_t data_start = b.len - 255;
    char want[160];
    snprintf(want, sizeof want, "tensor 'blk.0.attn_q.weight': data [%zu .. %zu) exceeds file size %zu", data_start,
             data_start + 256, b.len);
    expect_fail(&b, SL_BAD_FORMAT, want);
}
Test(gguf_hostile, offset_huge) {
    one_tensor_case(1, (uint64_t[]){8}, SL_DTYPE_F32, UINT64_MAX - 31, 32, SL_BAD_FORMAT, "beyond the end of the file");
}
Test(gguf_hostile, zero_sized_tensor_opens) {
    one_tensor_case(2, (uint64_t[]){32, 0}, SL_DTYPE_Q8_0, 0, 0, SL_OK, "");
}
Test(gguf_hostile, empty_tensor_name) {
    one_tensor_case(1, (uint64_t[]){8}, SL_DTYPE_F32, 0, 32, SL_OK, ""); /* control for the case below */
    bytes b = {0};
    put_header(&b, 3, 1, 1);
    put_baseline_kvs(&b);
    put_tensor(&b, "", 1, (uint64_t[]){8}, SL_DTYPE_F32, 0);
    put_data(&b, 32, 32);
    expect_fail(&b, SL_BAD_FORMAT, "tensor name at offset");
}
Test(gguf_hostile, tensor_name_with_nul) {
    bytes b = {0};
    put_header(&b, 3, 1, 1);
    put_baseline_kvs(&b);
    size_t at = b.len + 8;
    put_tensor(&b, "ab", 1, (uint64_t[]){8}, SL_DTYPE_F32, 0);
    b.p[at + 1] = 0;
    put_data(&b, 32, 32);
    expect_fail(&b, SL_BAD_FORMAT, "NUL");
}

Test(gguf_hostile, overlapping_tensors) {
    bytes b = {0};
    put_header(&b, 3, 2, 1);
    put_baseline_kvs(&b);
    put_tensor(&b, "a", 2, (uint64_t[]){8, 2}, SL_DTYPE_F32, 0); /* [0 .. 64) */
    put_tensor(&b, "b", 1, (uint64_t[]){8}, SL_DTYPE_F32, 32);   /* [32 .. 64) */
    put_data(&b, 32, 96);
    expect_fail(&b, SL_BAD_FORMAT, "overlap");
}

Test(gguf_hostile, same_offset_tensors) {
    bytes b = {0};
    put_header(&b, 3, 2, 1);
    put_baseline_kvs(&b);
    put_tensor(&b, "b", 1, (uint64_t[]){8}, SL_DTYPE_F32, 32);
    put_tensor(&b, "a", 1, (uint64_t[]){8}, SL_DTYPE_F32, 32);
    put_data(&b, 32, 96);
    expect_fail(&b, SL_BAD_FORMAT, "overlap");
}

Test(gguf_hostile, duplicate_tensor_name) {
    bytes b = {0};
    put_header(&b, 3, 2, 1);
    put_baseline_kvs(&b);
    put_tensor(&b, "blk.0.ffn_up.weight", 1, (uint64_t[]){8}, SL_DTYPE_F32, 0);
    put_tensor(&b, "blk.0.ffn_up.weight", 1, (uint64_t[]){8}, SL_DTYPE_F32, 32);
    put_data(&b, 32, 64);
    expect_fail(&b, SL_BAD_FORMAT, "duplicate tensor name 'blk.0.ffn_up.weight'");
}

/* A vocab-only file that ends right after its infos opens; one whose tensor needs bytes it lacks does not. */
Test(gguf_hostile, file_ends_before_data_section) {
    bytes b = {0};
    put_header(&b, 3, 0, 1);
    put_baseline_kvs(&b);
    cr_assert(b.len % 32 != 0, "the case needs a file whose end is not aligned");
    expect_ok(&b);
    bytes c = {0};
    put_header(&c, 3, 1, 1);
    put_baseline_kvs(&c);
    put_tensor(&c, "a", 1, (uint64_t[]){8}, SL_DTYPE_F32, 0);
    expect_fail(&c, SL_BAD_FORMAT, "exceeds file size");
}

Test(gguf_hostile, null_arguments) {
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open_memory(NULL, 10, &g), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_open_memory("GGUF", 4, NULL), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_open_memory(NULL, 0, &g), SL_BAD_FORMAT);
    cr_assert_null(g);
    cr_assert_eq(sl_gguf_open(NULL, &g), SL_INVALID_ARGUMENT);
    sl_gguf_close(NULL);
    cr_assert_null(sl_gguf_find_kv(NULL, "x"));
    cr_assert_null(sl_gguf_find_tensor(NULL, "x"));
}
