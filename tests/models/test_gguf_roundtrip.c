/*
 * test_gguf_roundtrip.c — what goes into a GGUF file comes back out.
 *
 * Two producers, one reader: our writer (every metadata setter, tensors of F32/F16/BF16/Q8_0/Q4_0/Q4_1 in
 * 1-D to 4-D shapes, values recovered within each type's quantization error) and llama.cpp's own gguf-py
 * (tests/data/gguf_alltypes.gguf from tests/gen_gguf_fixtures.py: every metadata value type with boundary
 * values, arrays of every element type, arrays of arrays, alignment 64), whose tensor bytes our writer must
 * reproduce exactly from the same values. Also the typed getters' contract (integer widening, range and type
 * errors) and the writer's refusals.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kcpu.h"
#include "kdtype.h"
#include "testutil.h"

/* A fresh temporary path (the file is created empty; the writer overwrites it). Malloc'd. */
static char *tmp_gguf_path(void) {
    const char *dir = getenv("TMPDIR");
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/sl_gguf_test_XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(p);
    cr_assert(fd >= 0, "mkstemp failed");
    close(fd);
    return p;
}

/* Opens a file through the memory path on an exact-size heap copy (so ASan sees any over-read). */
static sl_gguf *open_copy(const char *path, unsigned char **buf_out, size_t *len_out) {
    size_t len = 0;
    char *file = sl_test_read_file(path, &len);
    cr_assert(file, "cannot read %s", path);
    unsigned char *buf = malloc(len ? len : 1);
    memcpy(buf, file, len);
    free(file);
    sl_gguf *g = NULL;
    sl_status st = sl_gguf_open_memory(buf, len, &g);
    cr_assert_eq(st, SL_OK, "open %s: %s", path, sl_last_error());
    *buf_out = buf;
    *len_out = len;
    return g;
}

/* Largest |error| a round trip through `type` may show for a block of values with this range. */
static float quant_bound(int type, float amax, float vmin, float vmax) {
    switch (type) {
    case SL_DTYPE_F32: return 0.0f;
    case SL_DTYPE_F16: return amax * (1.0f / 1024.0f) + 1e-7f; /* 10-bit mantissa: half an ulp, doubled */
    case SL_DTYPE_BF16: return amax * (1.0f / 128.0f) + 1e-7f; /* 7-bit mantissa */
    case SL_DTYPE_Q8_0: return amax / 127.0f + 1e-6f;          /* step amax/127, scale in fp16 */
    case SL_DTYPE_Q4_0: return amax / 8.0f * 1.01f + 1e-6f;    /* step amax/8; +amax clamps to 7/8 of it */
    case SL_DTYPE_Q4_1: return (vmax - vmin) / 15.0f + 1e-3f * amax + 1e-6f; /* step range/15, fp16 d and m */
    default: cr_assert_fail("no bound for type %d", type); return 0;
    }
}

/* Dequantizes every row of t and compares with want (n values), block by block (32 values; the plain types
 * use the same blocks for their bound). Returns the largest error seen. */
static float check_tensor_values(const sl_gguf_tensor *t, const float *want) {
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3], rows = n / t->ne[0];
    size_t row_bytes = sl_dtype_row_bytes(t->type, t->ne[0]);
    cr_assert_eq(t->n_bytes, row_bytes * (size_t)rows, "tensor %.*s: n_bytes %llu, want %zu", (int)t->name.len,
                 t->name.data, (unsigned long long)t->n_bytes, row_bytes * (size_t)rows);
    float *got = malloc((size_t)n * sizeof *got);
    for (int64_t r = 0; r < rows; r++)
        sl_k_dequantize_row(t->type, (const uint8_t *)t->data + r * row_bytes, got + r * t->ne[0], t->ne[0]);
    float worst = 0;
    for (int64_t b = 0; b < n; b += 32) {
        float amax = 0, vmin = INFINITY, vmax = -INFINITY;
        int64_t e = b + 32 < n ? b + 32 : n;
        for (int64_t i = b; i < e; i++) {
            amax = fmaxf(amax, fabsf(want[i]));
            vmin = fminf(vmin, want[i]);
            vmax = fmaxf(vmax, want[i]);
        }
        float bound = quant_bound(t->type, amax, vmin, vmax);
        for (int64_t i = b; i < e; i++) {
            float err = fabsf(got[i] - want[i]);
            worst = fmaxf(worst, err);
            cr_assert(err <= bound, "tensor %.*s (%s): element %lld is %g, want %g (error %g > bound %g)",
                      (int)t->name.len, t->name.data, sl_dtype_name(t->type), (long long)i, got[i], want[i], err,
                      bound);
        }
    }
    free(got);
    return worst;
}

static void assert_str(sl_gguf_str s, const char *want, const char *what) {
    cr_assert(sl_gguf_str_eq(s, want), "%s: got '%.*s' (%llu bytes), want '%s'", what, (int)s.len, s.data,
              (unsigned long long)s.len, want);
}

/* ---- our writer -> our reader --------------------------------------------------------------------------- */
Test(gguf_roundtrip, writer_metadata_every_setter) {
    char *path = tmp_gguf_path();
    sl_gguf_writer *w = NULL;
    cr_assert_eq(sl_gguf_writer_create(&w), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_str(w, "general.architecture", "llama"), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_u32(w, "r.u32", 4000000000u), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_i32(w, "r.i32", -7), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_u64(w, "r.u64", 1ull << 40), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_f32(w, "r.f32", -1.5f), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_bool(w, "r.true", 1), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_bool(w, "r.false", 0), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_str(w, "r.str", "hello, \xd0\xbc\xd0\xb8\xd1\x80"), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_str(w, "r.empty", ""), SL_OK);
    /* Setting a key again replaces its value and type: the file has one entry. */
    cr_assert_eq(sl_gguf_writer_set_u32(w, "r.replaced", 1), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_str(w, "r.replaced", "second"), SL_OK);
    const char *small[] = {"", "a", "bc", "\xe6\x97\xa5\xe6\x9c\xac"};
    cr_assert_eq(sl_gguf_writer_set_arr_str(w, "r.arr_str", small, 4), SL_OK);
    enum { N_TOK = 3000 };
    char **toks = malloc(N_TOK * sizeof *toks);
    for (int i = 0; i < N_TOK; i++) {
        toks[i] = malloc(32);
        snprintf(toks[i], 32, "tok%d%s", i, i % 7 ? "" : "_long_suffix");
    }
    cr_assert_eq(sl_gguf_writer_set_arr_str(w, "r.tokens", (const char *const *)toks, N_TOK), SL_OK);
    float fv[] = {0.5f, -1e-30f, 3.4e38f, -0.0f};
    cr_assert_eq(sl_gguf_writer_set_arr_f32(w, "r.arr_f32", fv, 4), SL_OK);
    int32_t iv[] = {-1, 0, INT32_MAX, INT32_MIN};
    cr_assert_eq(sl_gguf_writer_set_arr_i32(w, "r.arr_i32", iv, 4), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_arr_i32(w, "r.arr_empty", NULL, 0), SL_OK);
    cr_assert_eq(sl_gguf_writer_write_file(w, path), SL_OK, "%s", sl_last_error());
    sl_gguf_writer_free(w);

    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open(path, &g), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_gguf_version(g), 3);
    cr_assert_eq(sl_gguf_alignment(g), 32);
    cr_assert_eq(sl_gguf_n_kv(g), 15);
    cr_assert_eq(sl_gguf_n_tensors(g), 0);
    /* File order is the order first set. */
    cr_assert(sl_gguf_str_eq(sl_gguf_kv_at(g, 0)->key, "general.architecture"));
    cr_assert(sl_gguf_str_eq(sl_gguf_kv_at(g, 9)->key, "r.replaced"));
    cr_assert_null(sl_gguf_kv_at(g, 15));
    cr_assert_null(sl_gguf_kv_at(g, -1));

    uint32_t u32;
    int64_t i64;
    float f32;
    int b;
    sl_gguf_str s;
    cr_assert_eq(sl_gguf_get_u32(g, "r.u32", &u32), SL_OK);
    cr_assert_eq(u32, 4000000000u);
    cr_assert_eq(sl_gguf_get_i64(g, "r.u32", &i64), SL_OK);
    cr_assert_eq(i64, 4000000000ll);
    cr_assert_eq(sl_gguf_get_i64(g, "r.i32", &i64), SL_OK);
    cr_assert_eq(i64, -7);
    cr_assert_eq(sl_gguf_get_u32(g, "r.i32", &u32), SL_BAD_FORMAT, "a negative value must not read as u32");
    cr_assert_eq(sl_gguf_get_i64(g, "r.u64", &i64), SL_OK);
    cr_assert_eq(i64, 1ll << 40);
    cr_assert_eq(sl_gguf_get_u32(g, "r.u64", &u32), SL_BAD_FORMAT, "2^40 does not fit in u32");
    cr_assert(strstr(sl_last_error(), "r.u64"), "message names the key: %s", sl_last_error());
    cr_assert_eq(sl_gguf_get_f32(g, "r.f32", &f32), SL_OK);
    cr_assert_eq(f32, -1.5f);
    cr_assert_eq(sl_gguf_get_bool(g, "r.true", &b), SL_OK);
    cr_assert_eq(b, 1);
    cr_assert_eq(sl_gguf_get_bool(g, "r.false", &b), SL_OK);
    cr_assert_eq(b, 0);
    cr_assert_eq(sl_gguf_get_str(g, "r.str", &s), SL_OK);
    assert_str(s, "hello, \xd0\xbc\xd0\xb8\xd1\x80", "r.str");
    cr_assert_eq(sl_gguf_get_str(g, "r.empty", &s), SL_OK);
    cr_assert_eq(s.len, 0);
    cr_assert_eq(sl_gguf_get_str(g, "r.replaced", &s), SL_OK);
    assert_str(s, "second", "r.replaced");
    cr_assert_eq(sl_gguf_get_str(g, "r.u32", &s), SL_BAD_FORMAT);
    cr_assert_eq(sl_gguf_get_u32(g, "r.nope", &u32), SL_NOT_FOUND);
    cr_assert(strstr(sl_last_error(), "r.nope"), "%s", sl_last_error());

    sl_gguf_type et;
    uint64_t len;
    cr_assert_eq(sl_gguf_get_arr(g, "r.arr_str", &et, &len), SL_OK);
    cr_assert_eq(et, SL_GGUF_STRING);
    cr_assert_eq(len, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(sl_gguf_arr_str(g, "r.arr_str", (uint64_t)i, &s), SL_OK);
        assert_str(s, small[i], "r.arr_str");
    }
    cr_assert_eq(sl_gguf_arr_str(g, "r.arr_str", 4, &s), SL_INVALID_ARGUMENT, "index past the end");
    cr_assert_eq(sl_gguf_get_arr(g, "r.tokens", &et, &len), SL_OK);
    cr_assert_eq(len, N_TOK);
    /* Random access in any order (the offset table), not a walk from the start. */
    for (int i = N_TOK - 1; i >= 0; i -= 13) {
        cr_assert_eq(sl_gguf_arr_str(g, "r.tokens", (uint64_t)i, &s), SL_OK);
        assert_str(s, toks[i], "r.tokens");
    }
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(sl_gguf_arr_f32(g, "r.arr_f32", (uint64_t)i, &f32), SL_OK);
        cr_assert_eq(memcmp(&f32, &fv[i], 4), 0, "r.arr_f32[%d] = %g, want %g", i, f32, fv[i]);
        int32_t x;
        cr_assert_eq(sl_gguf_arr_i32(g, "r.arr_i32", (uint64_t)i, &x), SL_OK);
        cr_assert_eq(x, iv[i]);
    }
    cr_assert_eq(sl_gguf_arr_f32(g, "r.arr_i32", 0, &f32), SL_BAD_FORMAT, "element type mismatch");
    cr_assert_eq(sl_gguf_arr_i32(g, "r.u32", 0, &(int32_t){0}), SL_BAD_FORMAT, "not an array");
    cr_assert_eq(sl_gguf_get_arr(g, "r.arr_empty", &et, &len), SL_OK);
    cr_assert_eq(et, SL_GGUF_INT32);
    cr_assert_eq(len, 0);
    sl_gguf_close(g);
    for (int i = 0; i < N_TOK; i++) free(toks[i]);
    free(toks);
    unlink(path);
    free(path);
}

/* Shapes that matter: a vector, a matrix, 3-D and 4-D stacks, and a matrix of several rows per block row. */
static const struct {
    int n_dims;
    int64_t ne[4];
} k_shapes[] = {
    {1, {64, 1, 1, 1}}, {2, {64, 3, 1, 1}}, {3, {32, 2, 3, 1}}, {4, {32, 1, 2, 2}}, {2, {256, 5, 1, 1}},
};
static const int k_types[] = {SL_DTYPE_F32, SL_DTYPE_F16, SL_DTYPE_BF16, SL_DTYPE_Q8_0, SL_DTYPE_Q4_0, SL_DTYPE_Q4_1};

static void roundtrip_tensors(uint32_t alignment) {
    enum { NS = sizeof k_shapes / sizeof k_shapes[0], NT = sizeof k_types / sizeof k_types[0] };
    char *path = tmp_gguf_path();
    sl_gguf_writer *w = NULL;
    cr_assert_eq(sl_gguf_writer_create(&w), SL_OK);
    if (alignment) cr_assert_eq(sl_gguf_writer_set_u32(w, "general.alignment", alignment), SL_OK);
    float *vals[NT][NS];
    uint64_t rng = 0x5eed0001 + alignment;
    for (int t = 0; t < NT; t++) {
        for (int s = 0; s < NS; s++) {
            int64_t n = k_shapes[s].ne[0] * k_shapes[s].ne[1] * k_shapes[s].ne[2] * k_shapes[s].ne[3];
            vals[t][s] = malloc((size_t)n * sizeof(float));
            /* Per-block scales vary over three decades, so each block's own scale is what gets tested. */
            for (int64_t i = 0; i < n; i++) {
                float scale = powf(10.0f, (float)((i / 32) % 3) - 1.0f);
                vals[t][s][i] = sl_test_rand_f32(&rng, -2.0f, 2.0f) * scale;
            }
            char name[64];
            snprintf(name, sizeof name, "t.%s.%dd.%d", sl_dtype_name(k_types[t]), k_shapes[s].n_dims, s);
            cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, name, k_shapes[s].n_dims, k_shapes[s].ne, k_types[t],
                                                       vals[t][s]),
                         SL_OK, "%s: %s", name, sl_last_error());
        }
    }
    cr_assert_eq(sl_gguf_writer_write_file(w, path), SL_OK, "%s", sl_last_error());
    sl_gguf_writer_free(w);

    unsigned char *buf;
    size_t len;
    sl_gguf *g = open_copy(path, &buf, &len);
    uint64_t align = alignment ? alignment : 32;
    cr_assert_eq(sl_gguf_alignment(g), align);
    cr_assert_eq(sl_gguf_n_tensors(g), NT * NS);
    for (int t = 0; t < NT; t++) {
        for (int s = 0; s < NS; s++) {
            char name[64];
            snprintf(name, sizeof name, "t.%s.%dd.%d", sl_dtype_name(k_types[t]), k_shapes[s].n_dims, s);
            const sl_gguf_tensor *x = sl_gguf_find_tensor(g, name);
            cr_assert_not_null(x, "tensor %s not found", name);
            cr_assert_eq(x, sl_gguf_tensor_at(g, t * NS + s), "file order is insertion order");
            cr_assert_eq(x->type, k_types[t]);
            cr_assert_eq(x->n_dims, k_shapes[s].n_dims);
            for (int d = 0; d < 4; d++) cr_assert_eq(x->ne[d], k_shapes[s].ne[d], "%s ne[%d]", name, d);
            cr_assert_eq(x->offset % align, 0);
            size_t at = (size_t)((const unsigned char *)x->data - buf);
            cr_assert_eq(at % align, 0, "%s: data at file offset %zu is not %llu-aligned", name, at,
                         (unsigned long long)align);
            cr_assert(at + x->n_bytes <= len);
            check_tensor_values(x, vals[t][s]);
            free(vals[t][s]);
        }
    }
    cr_assert_null(sl_gguf_find_tensor(g, "t.f32.1d"), "a prefix of a name is not the name");
    cr_assert_null(sl_gguf_find_tensor(g, "missing"));
    sl_gguf_close(g);
    free(buf);
    unlink(path);
    free(path);
}

Test(gguf_roundtrip, tensors_every_type_and_shape) { roundtrip_tensors(0); }
Test(gguf_roundtrip, tensors_alignment_64) { roundtrip_tensors(64); }

/* A zero-sized tensor and a vocab-only file (no tensors): both legal, both open. */
Test(gguf_roundtrip, empty_tensors_and_no_tensors) {
    char *path = tmp_gguf_path();
    sl_gguf_writer *w = NULL;
    cr_assert_eq(sl_gguf_writer_create(&w), SL_OK);
    float one[32] = {1};
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "empty", 2, (int64_t[]){32, 0}, SL_DTYPE_Q8_0, NULL), SL_OK,
                 "%s", sl_last_error());
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "one", 1, (int64_t[]){32}, SL_DTYPE_F32, one), SL_OK);
    cr_assert_eq(sl_gguf_writer_write_file(w, path), SL_OK, "%s", sl_last_error());
    sl_gguf_writer_free(w);
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open(path, &g), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_gguf_find_tensor(g, "empty")->n_bytes, 0);
    cr_assert_eq(((const float *)sl_gguf_find_tensor(g, "one")->data)[0], 1.0f);
    sl_gguf_close(g);

    cr_assert_eq(sl_gguf_writer_create(&w), SL_OK);
    cr_assert_eq(sl_gguf_writer_write_file(w, path), SL_OK);
    sl_gguf_writer_free(w);
    cr_assert_eq(sl_gguf_open(path, &g), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_gguf_n_kv(g), 0);
    cr_assert_eq(sl_gguf_n_tensors(g), 0);
    /* Like llama.cpp's vocab-only files: no padding when no data follows, so the aligned data section would
     * start past the end of the file. */
    cr_assert_eq(sl_gguf_file_size(g), 24);
    sl_gguf_close(g);
    unlink(path);
    free(path);
}

Test(gguf_roundtrip, writer_refusals) {
    sl_gguf_writer *w = NULL;
    cr_assert_eq(sl_gguf_writer_create(&w), SL_OK);
    float v[64] = {0};
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "a", 1, (int64_t[]){64}, SL_DTYPE_F32, v), SL_OK);
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "a", 1, (int64_t[]){64}, SL_DTYPE_F32, v), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "duplicate"), "%s", sl_last_error());
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "", 1, (int64_t[]){64}, SL_DTYPE_F32, v), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "b", 0, (int64_t[]){64}, SL_DTYPE_F32, v), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "b", 5, (int64_t[]){1, 1, 1, 1, 1}, SL_DTYPE_F32, v),
                 SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "b", 1, (int64_t[]){-1}, SL_DTYPE_F32, v), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "b", 1, (int64_t[]){33}, SL_DTYPE_Q4_0, v), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "block size 32"), "%s", sl_last_error());
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "b", 1, (int64_t[]){256}, 16 /* iq2_xxs */, v), SL_UNSUPPORTED);
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "b", 1, (int64_t[]){64}, SL_DTYPE_F32, NULL), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "b", 1, NULL, SL_DTYPE_F32, v), SL_INVALID_ARGUMENT);
    /* 2^62 f32 elements fit in int64 but not their bytes in size_t: refused before anything is written. */
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, "b", 1, (int64_t[]){1ll << 62}, SL_DTYPE_F32, v),
                 SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_set_u32(w, "", 1), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_set_u32(w, NULL, 1), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_set_str(w, "k", NULL), SL_INVALID_ARGUMENT);
    const char *with_null[] = {"a", NULL};
    cr_assert_eq(sl_gguf_writer_set_arr_str(w, "k", with_null, 2), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_write_file(w, "/nonexistent-dir/x.gguf"), SL_IO);
    cr_assert(strstr(sl_last_error(), "/nonexistent-dir/x.gguf"), "%s", sl_last_error());
    /* The reader takes general.alignment as u32: any other type, or a non-power of two, would be a file the
     * reader refuses, so the writer refuses to write it. */
    cr_assert_eq(sl_gguf_writer_set_u32(w, "general.alignment", 48), SL_OK);
    cr_assert_eq(sl_gguf_writer_write_file(w, "/tmp/never-written.gguf"), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_writer_set_u64(w, "general.alignment", 64), SL_OK);
    cr_assert_eq(sl_gguf_writer_write_file(w, "/tmp/never-written.gguf"), SL_INVALID_ARGUMENT);
    cr_assert_eq(access("/tmp/never-written.gguf", F_OK), -1);
    sl_gguf_writer_free(w);
}

/* ---- gguf-py -> our reader ------------------------------------------------------------------------------ */
/* Raw element i of an array kv of fixed-size elements. */
static void arr_raw(const sl_gguf_kv *kv, size_t esize, uint64_t i, void *out) {
    memcpy(out, kv->data + esize * i, esize);
}

static const sl_gguf_kv *kv_typed(const sl_gguf *g, const char *key, sl_gguf_type type, sl_gguf_type arr_type,
                                  uint64_t arr_len) {
    const sl_gguf_kv *kv = sl_gguf_find_kv(g, key);
    cr_assert_not_null(kv, "key %s missing", key);
    cr_assert_eq(kv->type, type, "%s: type %s", key, sl_gguf_type_name(kv->type));
    if (type == SL_GGUF_ARRAY) {
        cr_assert_eq(kv->arr_type, arr_type, "%s: element type %s", key, sl_gguf_type_name(kv->arr_type));
        cr_assert_eq(kv->arr_len, arr_len, "%s: length %llu", key, (unsigned long long)kv->arr_len);
    }
    return kv;
}

Test(gguf_roundtrip, gguf_py_every_metadata_type) {
    char *path = sl_test_data_path("gguf_alltypes.gguf");
    unsigned char *buf;
    size_t len;
    sl_gguf *g = open_copy(path, &buf, &len);
    cr_assert_eq(sl_gguf_version(g), 3);
    cr_assert_eq(sl_gguf_alignment(g), 64);
    cr_assert_eq(sl_gguf_n_kv(g), 33);

    uint32_t u32;
    int64_t i64;
    float f32;
    int b;
    sl_gguf_str s;
    /* Scalars of every type, through the typed getters where one applies and raw otherwise. */
    kv_typed(g, "v.u8", SL_GGUF_UINT8, 0, 0);
    cr_assert_eq(sl_gguf_get_u32(g, "v.u8", &u32), SL_OK);
    cr_assert_eq(u32, 255);
    kv_typed(g, "v.i8", SL_GGUF_INT8, 0, 0);
    cr_assert_eq(sl_gguf_get_i64(g, "v.i8", &i64), SL_OK);
    cr_assert_eq(i64, -128);
    cr_assert_eq(sl_gguf_get_u32(g, "v.i8", &u32), SL_BAD_FORMAT);
    kv_typed(g, "v.u16", SL_GGUF_UINT16, 0, 0);
    cr_assert_eq(sl_gguf_get_u32(g, "v.u16", &u32), SL_OK);
    cr_assert_eq(u32, 65535);
    kv_typed(g, "v.i16", SL_GGUF_INT16, 0, 0);
    cr_assert_eq(sl_gguf_get_i64(g, "v.i16", &i64), SL_OK);
    cr_assert_eq(i64, -32768);
    kv_typed(g, "v.u32", SL_GGUF_UINT32, 0, 0);
    cr_assert_eq(sl_gguf_get_u32(g, "v.u32", &u32), SL_OK);
    cr_assert_eq(u32, UINT32_MAX);
    kv_typed(g, "v.i32", SL_GGUF_INT32, 0, 0);
    cr_assert_eq(sl_gguf_get_i64(g, "v.i32", &i64), SL_OK);
    cr_assert_eq(i64, INT32_MIN);
    kv_typed(g, "v.f32", SL_GGUF_FLOAT32, 0, 0);
    cr_assert_eq(sl_gguf_get_f32(g, "v.f32", &f32), SL_OK);
    cr_assert_eq(f32, 3.5f);
    kv_typed(g, "v.bool_t", SL_GGUF_BOOL, 0, 0);
    cr_assert_eq(sl_gguf_get_bool(g, "v.bool_t", &b), SL_OK);
    cr_assert_eq(b, 1);
    cr_assert_eq(sl_gguf_get_bool(g, "v.bool_f", &b), SL_OK);
    cr_assert_eq(b, 0);
    cr_assert_eq(sl_gguf_get_bool(g, "v.u8", &b), SL_BAD_FORMAT);
    kv_typed(g, "v.str", SL_GGUF_STRING, 0, 0);
    cr_assert_eq(sl_gguf_get_str(g, "v.str", &s), SL_OK);
    assert_str(s, "h\xc3\xa9llo \"world\"\n", "v.str");
    cr_assert_eq(sl_gguf_get_str(g, "v.str_empty", &s), SL_OK);
    cr_assert_eq(s.len, 0);
    kv_typed(g, "v.u64", SL_GGUF_UINT64, 0, 0);
    cr_assert_eq(sl_gguf_get_i64(g, "v.u64", &i64), SL_BAD_FORMAT, "2^64-1 does not fit in int64");
    kv_typed(g, "v.i64", SL_GGUF_INT64, 0, 0);
    cr_assert_eq(sl_gguf_get_i64(g, "v.i64", &i64), SL_OK);
    cr_assert_eq(i64, INT64_MIN);
    cr_assert_eq(sl_gguf_get_u32(g, "v.i64", &u32), SL_BAD_FORMAT);
    kv_typed(g, "v.f64", SL_GGUF_FLOAT64, 0, 0);
    cr_assert_eq(sl_gguf_get_f32(g, "v.f64", &f32), SL_OK);
    cr_assert_eq(f32, 0.125f);
    cr_assert_eq(sl_gguf_get_u32(g, "v.u32_small", &u32), SL_OK);
    cr_assert_eq(u32, 7);
    cr_assert_eq(sl_gguf_get_i64(g, "v.i64_small", &i64), SL_OK);
    cr_assert_eq(i64, -3);
    cr_assert_eq(sl_gguf_get_f32(g, "v.u8", &f32), SL_BAD_FORMAT);
    cr_assert_eq(sl_gguf_get_str(g, "general.architecture", &s), SL_OK);
    assert_str(s, "testarch", "general.architecture");

    /* Arrays of every element type. */
    uint8_t u8v;
    int8_t i8v;
    uint16_t u16v;
    int16_t i16v;
    uint32_t u32v;
    int32_t i32v;
    uint64_t u64v;
    int64_t i64v;
    double f64v;
    const sl_gguf_kv *kv = kv_typed(g, "a.u8", SL_GGUF_ARRAY, SL_GGUF_UINT8, 3);
    arr_raw(kv, 1, 2, &u8v);
    cr_assert_eq(u8v, 255);
    kv = kv_typed(g, "a.i8", SL_GGUF_ARRAY, SL_GGUF_INT8, 3);
    arr_raw(kv, 1, 0, &i8v);
    cr_assert_eq(i8v, -1);
    kv = kv_typed(g, "a.u16", SL_GGUF_ARRAY, SL_GGUF_UINT16, 2);
    arr_raw(kv, 2, 0, &u16v);
    cr_assert_eq(u16v, 65535);
    kv = kv_typed(g, "a.i16", SL_GGUF_ARRAY, SL_GGUF_INT16, 2);
    arr_raw(kv, 2, 0, &i16v);
    cr_assert_eq(i16v, -300);
    kv = kv_typed(g, "a.u32", SL_GGUF_ARRAY, SL_GGUF_UINT32, 2);
    arr_raw(kv, 4, 1, &u32v);
    cr_assert_eq(u32v, 2147483648u);
    cr_assert_eq(sl_gguf_arr_i32(g, "a.u32", 0, &i32v), SL_OK);
    cr_assert_eq(i32v, 1);
    cr_assert_eq(sl_gguf_arr_i32(g, "a.u32", 1, &i32v), SL_BAD_FORMAT, "2^31 does not fit in int32");
    kv_typed(g, "a.i32", SL_GGUF_ARRAY, SL_GGUF_INT32, 3);
    cr_assert_eq(sl_gguf_arr_i32(g, "a.i32", 0, &i32v), SL_OK);
    cr_assert_eq(i32v, -5);
    cr_assert_eq(sl_gguf_arr_i32(g, "a.i32", 2, &i32v), SL_OK);
    cr_assert_eq(i32v, 7);
    kv_typed(g, "a.f32", SL_GGUF_ARRAY, SL_GGUF_FLOAT32, 3);
    cr_assert_eq(sl_gguf_arr_f32(g, "a.f32", 1, &f32), SL_OK);
    cr_assert_eq(f32, -1.25f);
    cr_assert_eq(sl_gguf_arr_f32(g, "a.f32", 2, &f32), SL_OK);
    cr_assert_eq(f32, 1e30f);
    kv = kv_typed(g, "a.bool", SL_GGUF_ARRAY, SL_GGUF_BOOL, 3);
    arr_raw(kv, 1, 1, &u8v);
    cr_assert_eq(u8v, 0);
    kv_typed(g, "a.str", SL_GGUF_ARRAY, SL_GGUF_STRING, 3);
    cr_assert_eq(sl_gguf_arr_str(g, "a.str", 2, &s), SL_OK);
    assert_str(s, "g\xc3\xa4mma", "a.str[2]");
    cr_assert_eq(sl_gguf_arr_str(g, "a.str", 1, &s), SL_OK);
    cr_assert_eq(s.len, 0);
    cr_assert_eq(sl_gguf_arr_str(g, "a.str", 0, &s), SL_OK);
    assert_str(s, "alpha", "a.str[0]");
    kv = kv_typed(g, "a.u64", SL_GGUF_ARRAY, SL_GGUF_UINT64, 1);
    arr_raw(kv, 8, 0, &u64v);
    cr_assert_eq(u64v, UINT64_MAX);
    kv = kv_typed(g, "a.i64", SL_GGUF_ARRAY, SL_GGUF_INT64, 2);
    arr_raw(kv, 8, 0, &i64v);
    cr_assert_eq(i64v, INT64_MIN);
    kv = kv_typed(g, "a.f64", SL_GGUF_ARRAY, SL_GGUF_FLOAT64, 2);
    arr_raw(kv, 8, 1, &f64v);
    cr_assert_eq(f64v, -2.5);
    /* Arrays of arrays: validated and skipped, their shape reported, no element getter. */
    kv_typed(g, "a.nested_i32", SL_GGUF_ARRAY, SL_GGUF_ARRAY, 2);
    kv_typed(g, "a.nested_str", SL_GGUF_ARRAY, SL_GGUF_ARRAY, 2);
    cr_assert_eq(sl_gguf_arr_str(g, "a.nested_str", 0, &s), SL_BAD_FORMAT);
    cr_assert_eq(sl_gguf_get_u32(g, "v.after_nested", &u32), SL_OK, "parsing resumes after nested arrays");
    cr_assert_eq(u32, 42);

    /* kv_format: the rendering `sluice info` prints. */
    char out[256];
    sl_gguf_kv_format(sl_gguf_find_kv(g, "v.str"), out, sizeof out);
    cr_assert_str_eq(out, "\"h\xc3\xa9llo \\\"world\\\"\\n\"");
    sl_gguf_kv_format(sl_gguf_find_kv(g, "a.i32"), out, sizeof out);
    cr_assert_str_eq(out, "[3 x int32] [-5, 6, 7]");
    sl_gguf_kv_format(sl_gguf_find_kv(g, "a.str"), out, sizeof out);
    cr_assert_str_eq(out, "[3 x string] [\"alpha\", \"\", \"g\xc3\xa4mma\"]");
    sl_gguf_kv_format(sl_gguf_find_kv(g, "a.nested_i32"), out, sizeof out);
    cr_assert_str_eq(out, "[2 x array]");
    sl_gguf_kv_format(sl_gguf_find_kv(g, "v.i64"), out, sizeof out);
    cr_assert_str_eq(out, "-9223372036854775808");
    sl_gguf_kv_format(sl_gguf_find_kv(g, "v.bool_t"), out, sizeof out);
    cr_assert_str_eq(out, "true");
    sl_gguf_kv_format(sl_gguf_find_kv(g, "a.str"), out, 6);
    cr_assert_eq(strlen(out), 5, "clipped to the buffer: '%s'", out);
    cr_assert_eq(sl_gguf_type_name(SL_GGUF_FLOAT64)[0], 'f');
    sl_gguf_close(g);
    free(buf);
    free(path);
}

/* Same formula as tests/gen_gguf_fixtures.py: value(i) = sin(0.37 i + 0.5 t) (1 + 0.25 t), in f64 then f32. */
Test(gguf_roundtrip, gguf_py_tensors) {
    static const struct {
        const char *name;
        int type, n_dims;
        int64_t ne[4];
        uint64_t offset;
    } want[] = {
        {"t.f32", SL_DTYPE_F32, 1, {64, 1, 1, 1}, 0},       {"t.f16", SL_DTYPE_F16, 2, {32, 3, 1, 1}, 256},
        {"t.bf16", SL_DTYPE_BF16, 2, {32, 2, 1, 1}, 448},   {"t.q8_0", SL_DTYPE_Q8_0, 2, {64, 2, 1, 1}, 576},
        {"t.q4_0", SL_DTYPE_Q4_0, 3, {32, 2, 2, 1}, 768},   {"t.q4_1", SL_DTYPE_Q4_1, 2, {32, 4, 1, 1}, 896},
    };
    char *path = sl_test_data_path("gguf_alltypes.gguf");
    unsigned char *buf;
    size_t len;
    sl_gguf *g = open_copy(path, &buf, &len);
    cr_assert_eq(sl_gguf_n_tensors(g), 6);
    for (int t = 0; t < 6; t++) {
        const sl_gguf_tensor *x = sl_gguf_tensor_at(g, t);
        cr_assert(sl_gguf_str_eq(x->name, want[t].name), "tensor %d is %.*s", t, (int)x->name.len, x->name.data);
        cr_assert_eq(sl_gguf_find_tensor(g, want[t].name), x);
        cr_assert_eq(x->type, want[t].type);
        cr_assert_eq(x->n_dims, want[t].n_dims);
        for (int d = 0; d < 4; d++) cr_assert_eq(x->ne[d], want[t].ne[d]);
        cr_assert_eq(x->offset, want[t].offset);
        /* gguf-py put the data section at 1472 (a multiple of 64). */
        cr_assert_eq((const unsigned char *)x->data - buf, 1472 + (long)want[t].offset);
        int64_t n = x->ne[0] * x->ne[1] * x->ne[2];
        float *v = malloc((size_t)n * sizeof *v);
        for (int64_t i = 0; i < n; i++) v[i] = (float)(sin(0.37 * (double)i + 0.5 * t) * (1 + 0.25 * t));
        check_tensor_values(x, v);
        free(v);
    }
    sl_gguf_close(g);
    free(buf);
    free(path);
}

/* The writer promises files llama.cpp would write: the same values through our writer give the same bytes,
 * tensor for tensor, as gguf-py's reference quantizers gave. */
Test(gguf_roundtrip, writer_bytes_match_gguf_py) {
    char *fixture = sl_test_data_path("gguf_alltypes.gguf");
    char *path = tmp_gguf_path();
    sl_gguf *py = NULL;
    cr_assert_eq(sl_gguf_open(fixture, &py), SL_OK, "%s", sl_last_error());
    sl_gguf_writer *w = NULL;
    cr_assert_eq(sl_gguf_writer_create(&w), SL_OK);
    for (int t = 0; t < sl_gguf_n_tensors(py); t++) {
        const sl_gguf_tensor *x = sl_gguf_tensor_at(py, t);
        int64_t n = x->ne[0] * x->ne[1] * x->ne[2] * x->ne[3];
        float *v = malloc((size_t)n * sizeof *v);
        for (int64_t i = 0; i < n; i++) v[i] = (float)(sin(0.37 * (double)i + 0.5 * t) * (1 + 0.25 * t));
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)x->name.len, x->name.data);
        cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, name, x->n_dims, x->ne, x->type, v), SL_OK, "%s",
                     sl_last_error());
        free(v);
    }
    cr_assert_eq(sl_gguf_writer_write_file(w, path), SL_OK, "%s", sl_last_error());
    sl_gguf_writer_free(w);
    sl_gguf *ours = NULL;
    cr_assert_eq(sl_gguf_open(path, &ours), SL_OK, "%s", sl_last_error());
    for (int t = 0; t < sl_gguf_n_tensors(py); t++) {
        const sl_gguf_tensor *a = sl_gguf_tensor_at(py, t), *b = sl_gguf_tensor_at(ours, t);
        cr_assert_eq(a->n_bytes, b->n_bytes);
        const unsigned char *pa = a->data, *pb = b->data;
        for (uint64_t i = 0; i < a->n_bytes; i++)
            cr_assert_eq(pa[i], pb[i], "%s: byte %llu is %u, gguf-py wrote %u", sl_dtype_name(a->type),
                         (unsigned long long)i, pb[i], pa[i]);
    }
    sl_gguf_close(ours);
    sl_gguf_close(py);
    unlink(path);
    free(path);
    free(fixture);
}
