/*
 * test_gguf_robust.c — the reader against damaged files, in bulk: every truncation of a small model, 5000
 * seeded random corruptions of it, and allocation failures at every allocation of open and of the writer.
 *
 * The small model is written by our writer (metadata of several types, string/f32/i32 arrays, tensors of
 * Q4_0, Q8_0, F16 and F32, the last ending exactly at the end of the file so that every truncation cuts
 * something the reader needs). Each damaged file is opened from an exact-size heap copy, so the Asan build
 * turns any read past the end into a failure; it must either fail with a status and a message, or open
 * with every tensor, key and string inside the buffer (checked, and every byte of them read).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kdtype.h"
#include "sl_util.h"
#include "testutil.h"

/* Criterion ignores a worker's exit status once its tests passed, so LeakSanitizer's report at exit would
 * not fail the test: under ASan, each test asks for a leak check itself before it ends. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define ASSERT_NO_LEAKS() cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaks: see LeakSanitizer's report")
#else
#define ASSERT_NO_LEAKS() ((void)0)
#endif

/* ---- the small model ------------------------------------------------------------------------------------ */
static sl_status write_small_model(const char *path) {
    sl_gguf_writer *w = NULL;
    sl_status st = sl_gguf_writer_create(&w);
    if (st) return st;
    const char *toks[] = {"<unk>", "<s>", "</s>", "a", "\xc4\xa0the"};
    const float scores[] = {0, -1, -2, -3.5f, -4};
    const int32_t types[] = {2, 3, 3, 1, 1};
    float v[64];
    for (int i = 0; i < 64; i++) v[i] = (float)(i % 13) * 0.25f - 1.5f;
    if (!(st = sl_gguf_writer_set_str(w, "general.architecture", "llama")) &&
        !(st = sl_gguf_writer_set_u32(w, "llama.embedding_length", 32)) &&
        !(st = sl_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)) &&
        !(st = sl_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1)) &&
        !(st = sl_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 5)) &&
        !(st = sl_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, 5)) &&
        !(st = sl_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, 5)) &&
        !(st = sl_gguf_writer_add_tensor_f32(w, "blk.0.attn_q.weight", 2, (int64_t[]){32, 2}, SL_DTYPE_Q4_0, v)) &&
        !(st = sl_gguf_writer_add_tensor_f32(w, "token_embd.weight", 1, (int64_t[]){64}, SL_DTYPE_Q8_0, v)) &&
        !(st = sl_gguf_writer_add_tensor_f32(w, "blk.0.ffn_up.weight", 2, (int64_t[]){16, 2}, SL_DTYPE_F16, v)) &&
        !(st = sl_gguf_writer_add_tensor_f32(w, "output_norm.weight", 1, (int64_t[]){8}, SL_DTYPE_F32, v)))
        st = sl_gguf_writer_write_file(w, path);
    sl_gguf_writer_free(w);
    return st;
}

static unsigned char *small_model(size_t *len) {
    char path[] = "/tmp/sl_gguf_small_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(write_small_model(path), SL_OK, "%s", sl_last_error());
    unsigned char *buf = (unsigned char *)sl_test_read_file(path, len);
    cr_assert(buf);
    unlink(path);
    return buf;
}

/* Opens the first len bytes of src from an exact-size copy; on success checks that everything the reader
 * hands out lies inside the copy and reads it all. Returns the status. */
static sl_status open_and_check(const unsigned char *src, size_t len) {
    unsigned char *buf = malloc(len ? len : 1);
    memcpy(buf, src, len);
    sl__error_clear();
    sl_gguf *g = (sl_gguf *)1;
    sl_status st = sl_gguf_open_memory(buf, len, &g);
    if (st != SL_OK) {
        cr_assert_null(g);
        cr_assert(sl_last_error()[0], "status %s without a message", sl_status_name(st));
        free(buf);
        return st;
    }
    const unsigned char *end = buf + len;
    unsigned sum = 0;
    for (int64_t i = 0; i < sl_gguf_n_tensors(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        const unsigned char *d = t->data;
        cr_assert(d >= buf && d <= end && t->n_bytes <= (uint64_t)(end - d),
                  "tensor %lld: data [%td .. +%llu) outside the %zu-byte buffer", (long long)i, d - buf,
                  (unsigned long long)t->n_bytes, len);
        cr_assert((const unsigned char *)t->name.data >= buf && t->name.len <= (uint64_t)(end - (const unsigned char *)t->name.data));
        for (uint64_t k = 0; k < t->n_bytes; k++) sum += d[k];
        if (t->ne[0] > 0) /* the size the reader computed is the size the kernels will assume */
            cr_assert_eq(t->n_bytes, sl_dtype_row_bytes(t->type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]));
    }
    char text[512];
    for (int64_t i = 0; i < sl_gguf_n_kv(g); i++) {
        const sl_gguf_kv *kv = sl_gguf_kv_at(g, i);
        const unsigned char *k = (const unsigned char *)kv->key.data;
        cr_assert(k >= buf && kv->key.len <= (uint64_t)(end - k));
        sl_gguf_kv_format(kv, text, sizeof text);
        if (kv->type == SL_GGUF_ARRAY && kv->arr_type == SL_GGUF_STRING) {
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.data);
            for (uint64_t j = 0; j < kv->arr_len; j++) {
                sl_gguf_str s;
                cr_assert_eq(sl_gguf_arr_str(g, key, j, &s), SL_OK, "%s", sl_last_error());
                const unsigned char *p = (const unsigned char *)s.data;
                cr_assert(p >= buf && s.len <= (uint64_t)(end - p));
                for (uint64_t c = 0; c < s.len; c++) sum += p[c];
            }
        }
    }
    (void)sum;
    sl_gguf_close(g);
    free(buf);
    return SL_OK;
}

Test(gguf_robust, every_truncation_fails_cleanly) {
    size_t len;
    unsigned char *file = small_model(&len);
    /* The premise: the last tensor's data ends the file, so no prefix holds everything. */
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open_memory(file, len, &g), SL_OK, "%s", sl_last_error());
    const sl_gguf_tensor *last = sl_gguf_tensor_at(g, sl_gguf_n_tensors(g) - 1);
    cr_assert_eq((const unsigned char *)last->data + last->n_bytes, file + len);
    sl_gguf_close(g);
    cr_assert_eq(open_and_check(file, len), SL_OK);

    for (size_t n = 0; n < len; n++) {
        sl_status st = open_and_check(file, n);
        cr_assert_eq(st, SL_BAD_FORMAT, "prefix of %zu of %zu bytes: %s (%s)", n, len, sl_status_name(st),
                     sl_last_error());
    }
    cr_log_info("%zu truncations of a %zu-byte model all refused", len, len);
    free(file);
    ASSERT_NO_LEAKS();
}

/* Positions and widths of the fields worth aiming at (counts, lengths, types, dims, offsets). */
typedef struct field {
    size_t pos;
    int width; /* 4 or 8 */
    int kind;  /* 0 count/length, 1 tensor type, 2 tensor offset, 3 n_dims, 4 dimension, 5 value type */
} field;

static int collect_fields(const unsigned char *buf, size_t len, field *f, int cap) {
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open_memory(buf, len, &g), SL_OK);
    int n = 0;
#define ADD(p, w, k)                                                                                              \
    do {                                                                                                          \
        cr_assert(n < cap);                                                                                       \
        f[n++] = (field){(size_t)((const unsigned char *)(p) - buf), (w), (k)};                                   \
    } while (0)
    ADD(buf + 8, 8, 0);
    ADD(buf + 16, 8, 0);
    for (int64_t i = 0; i < sl_gguf_n_kv(g); i++) {
        const sl_gguf_kv *kv = sl_gguf_kv_at(g, i);
        ADD(kv->key.data - 8, 8, 0);
        ADD(kv->key.data + kv->key.len, 4, 5);
        if (kv->type == SL_GGUF_STRING) ADD(kv->data, 8, 0);
        if (kv->type == SL_GGUF_ARRAY) {
            ADD(kv->data - 12, 4, 5);
            ADD(kv->data - 8, 8, 0);
            if (kv->arr_type == SL_GGUF_STRING) {
                char key[256];
                snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.data);
                for (uint64_t j = 0; j < kv->arr_len; j++) {
                    sl_gguf_str s;
                    cr_assert_eq(sl_gguf_arr_str(g, key, j, &s), SL_OK);
                    ADD(s.data - 8, 8, 0);
                }
            }
        }
    }
    for (int64_t i = 0; i < sl_gguf_n_tensors(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        const unsigned char *p = (const unsigned char *)t->name.data;
        ADD(p - 8, 8, 0);
        p += t->name.len;
        ADD(p, 4, 3);
        p += 4;
        for (int d = 0; d < t->n_dims; d++, p += 8) ADD(p, 8, 4);
        ADD(p, 4, 1);
        ADD(p + 4, 8, 2);
    }
#undef ADD
    sl_gguf_close(g);
    return n;
}

static void poke(unsigned char *buf, const field *f, uint64_t v) {
    if (f->width == 8) memcpy(buf + f->pos, &v, 8);
    else memcpy(buf + f->pos, &(uint32_t){(uint32_t)v}, 4);
}

/* Values that sit on the edges of every check: zero, one, sign bits, wrap-around points, the file size. */
static uint64_t interesting(uint64_t *rng, size_t len) {
    static const uint64_t v[] = {0,          1,          2,          3,           4,           31,
                                 32,         33,         64,         255,         65535,       65536,
                                 65537,      0x7fffffff, 0x80000000, 0xffffffff,  1ull << 32,  1ull << 62,
                                 1ull << 63, UINT64_MAX, UINT64_MAX - 1, UINT64_MAX - 31, UINT64_MAX / 2 + 1, UINT64_MAX / 33};
    uint64_t r = sl_test_rand_u64(rng);
    switch (r % 4) {
    case 0: return len + (r >> 8) % 8 - 4;
    case 1: return (r >> 8) % (len + 1);
    default: return v[(r >> 8) % (sizeof v / sizeof v[0])];
    }
}

static void mutate(unsigned char *buf, size_t len, const field *fields, int n_fields, uint64_t *rng) {
    uint64_t r = sl_test_rand_u64(rng);
    const field *f = &fields[(r >> 8) % (uint64_t)n_fields];
    switch (r % 6) {
    case 0: /* flip 1..4 bits anywhere */
        for (uint64_t k = 0, n = 1 + (r >> 32) % 4; k < n; k++) {
            uint64_t x = sl_test_rand_u64(rng);
            buf[x % len] ^= (unsigned char)(1u << ((x >> 32) % 8));
        }
        break;
    case 1: /* 1..4 random bytes anywhere */
        for (uint64_t k = 0, n = 1 + (r >> 32) % 4; k < n; k++) {
            uint64_t x = sl_test_rand_u64(rng);
            buf[x % len] = (unsigned char)(x >> 32);
        }
        break;
    case 2: /* a count, length, dimension or offset set to an edge value */
        poke(buf, f, interesting(rng, len));
        break;
    case 3: { /* a tensor type id: every GGML id, and some that are none */
        for (int i = 0; i < n_fields; i++) {
            const field *t = &fields[((r >> 8) + (uint64_t)i) % (uint64_t)n_fields];
            if (t->kind != 1) continue;
            uint64_t x = sl_test_rand_u64(rng) % 48;
            poke(buf, t, x < 42 ? x : x == 42 ? 99 : x == 43 ? 0xffffffffu : 1000 + x);
            break;
        }
        break;
    }
    case 4: { /* a tensor offset moved a little (misaligned) or onto another tensor's */
        for (int i = 0; i < n_fields; i++) {
            const field *t = &fields[((r >> 8) + (uint64_t)i) % (uint64_t)n_fields];
            if (t->kind != 2) continue;
            uint64_t off;
            memcpy(&off, buf + t->pos, 8);
            uint64_t x = sl_test_rand_u64(rng);
            if (x % 2) off += (x >> 8) % 64 - 32;
            else off = (x >> 8) % 4 * 32;
            poke(buf, t, off);
            break;
        }
        break;
    }
    default: { /* a value type, n_dims or element type set to nearby or absurd values */
        for (int i = 0; i < n_fields; i++) {
            const field *t = &fields[((r >> 8) + (uint64_t)i) % (uint64_t)n_fields];
            if (t->kind != 3 && t->kind != 5) continue;
            uint64_t x = sl_test_rand_u64(rng) % 20;
            poke(buf, t, x < 16 ? x : 0x7fffffff + x);
            break;
        }
        break;
    }
    }
}

Test(gguf_robust, random_corruptions) {
    size_t len;
    unsigned char *file = small_model(&len);
    field fields[256];
    int n_fields = collect_fields(file, len, fields, 256);
    unsigned char *work = malloc(len);
    uint64_t rng = 0x6775756666757a7aull; /* fixed seed: a failure reproduces */
    int n_ok = 0, n_fail = 0, n_unsupported = 0;
    enum { N_CASES = 5000 };
    for (int i = 0; i < N_CASES; i++) {
        memcpy(work, file, len);
        uint64_t n_mut = 1 + sl_test_rand_u64(&rng) % 3;
        for (uint64_t m = 0; m < n_mut; m++) mutate(work, len, fields, n_fields, &rng);
        /* One case in eight is also cut short. */
        size_t n = sl_test_rand_u64(&rng) % 8 == 0 ? (size_t)(sl_test_rand_u64(&rng) % len) : len;
        sl_status st = open_and_check(work, n);
        cr_assert(st == SL_OK || st == SL_BAD_FORMAT || st == SL_UNSUPPORTED, "case %d: status %s (%s)", i,
                  sl_status_name(st), sl_last_error());
        if (st == SL_OK) n_ok++;
        else if (st == SL_UNSUPPORTED) n_unsupported++;
        else n_fail++;
    }
    cr_log_info("%d corruptions of a %zu-byte model (%d fields aimed at): %d opened, %d malformed, %d unsupported",
                N_CASES, len, n_fields, n_ok, n_fail, n_unsupported);
    /* Both outcomes must occur, or the mutations are not reaching the checks. */
    cr_assert(n_ok > 100 && n_fail > 1000 && n_unsupported > 50, "ok %d, malformed %d, unsupported %d", n_ok,
              n_fail, n_unsupported);
    free(work);
    free(file);
    ASSERT_NO_LEAKS();
}

/* sqlite's OOM loop: fail the 1st, 2nd, ... allocation of an open until it succeeds; each attempt must fail
 * with SL_OUT_OF_MEMORY and leak nothing (the Asan build's leak check). */
Test(gguf_robust, allocation_failures_in_open) {
    size_t len;
    unsigned char *file = small_model(&len);
    char path[] = "/tmp/sl_gguf_oom_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0 && write(fd, file, len) == (ssize_t)len);
    close(fd);
    for (int via_path = 0; via_path < 2; via_path++) {
        int n;
        for (n = 0; n < 100; n++) {
            sl_gguf *g = NULL;
            sl__alloc_fail_after(n);
            sl_status st = via_path ? sl_gguf_open(path, &g) : sl_gguf_open_memory(file, len, &g);
            sl__alloc_fail_after(-1);
            if (st == SL_OK) {
                cr_assert_eq(sl_gguf_n_tensors(g), 4);
                sl_gguf_close(g);
                break;
            }
            cr_assert_eq(st, SL_OUT_OF_MEMORY, "failing allocation %d: %s (%s)", n, sl_status_name(st),
                         sl_last_error());
            cr_assert_null(g);
        }
        cr_assert(n >= 5 && n < 100, "open succeeded after %d failed allocations", n);
    }
    unlink(path);
    free(file);
    ASSERT_NO_LEAKS();
}

Test(gguf_robust, allocation_failures_in_writer) {
    char path[] = "/tmp/sl_gguf_oomw_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    int n;
    for (n = 0; n < 200; n++) {
        sl__alloc_fail_after(n);
        sl_status st = write_small_model(path);
        sl__alloc_fail_after(-1);
        if (st == SL_OK) break;
        cr_assert_eq(st, SL_OUT_OF_MEMORY, "failing allocation %d: %s (%s)", n, sl_status_name(st), sl_last_error());
    }
    cr_assert(n >= 10 && n < 200, "writer succeeded after %d failed allocations", n);
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open(path, &g), SL_OK, "%s", sl_last_error());
    sl_gguf_close(g);
    unlink(path);
    ASSERT_NO_LEAKS();
}
