/*
 * test_tok_bad.c — bad vocabularies in GGUF files load with a clear error, never a crash: files written with
 * sl_gguf_writer with one defect each (unknown model or pre-tokenizer, tokens missing or mistyped, merges
 * missing or malformed, short score arrays, ...), and damaged copies of a real vocabulary opened from memory.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "sl_util.h"
#include "testutil.h"
#include "tokenizer.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
/* In ASan builds, a leak on an error path fails the test instead of being printed after it passed. */
#define CHECK_NO_LEAKS() cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)")
#else
#define CHECK_NO_LEAKS() ((void)0)
#endif

/* A small byte-level BPE vocabulary: the 256 byte-level characters, "ab", and "<|endoftext|>". */
typedef struct bad_vocab {
    const char *model;     /* NULL: key absent */
    const char *pre;       /* NULL: key absent */
    int tokens;            /* 0: absent, 1: strings, 2: an f32 array instead */
    int merges;            /* 0: absent, 1: good, 2: one without a separator */
    int scores;            /* 0: absent, 1: one per token, 2: one short */
    int types;             /* 0: absent, 1: int32 per token, 2: strings instead */
    int duplicate;         /* 1: token 257 repeats token 256's text */
    int64_t bos;           /* < 0: absent */
    int add_bos;           /* < 0: absent */
} bad_vocab;

static char g_byte_tok[256][4];
static const char *g_tokens[258];
static const char *const g_merges_good[] = {"a b"};
static const char *const g_merges_bad[] = {"a b", "ab"};

static bad_vocab good_vocab(void) {
    return (bad_vocab){"gpt2", "gpt-2", 1, 1, 0, 1, 0, 257, -1};
}

/* Writes the vocabulary to a fresh temporary file and opens it. */
static sl_gguf *write_vocab(const bad_vocab *v) {
    int next = 0x100;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : next++;
        memset(g_byte_tok[b], 0, sizeof(g_byte_tok[b]));
        if (cp < 0x80) {
            g_byte_tok[b][0] = (char)cp;
        } else {
            g_byte_tok[b][0] = (char)(0xC0 | (cp >> 6));
            g_byte_tok[b][1] = (char)(0x80 | (cp & 0x3F));
        }
        g_tokens[b] = g_byte_tok[b];
    }
    g_tokens[256] = "ab";
    g_tokens[257] = v->duplicate ? "ab" : "<|endoftext|>";
    const uint64_t n = 258;

    sl_gguf_writer *w = NULL;
    cr_assert_eq(sl_gguf_writer_create(&w), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_str(w, "general.architecture", "llama"), SL_OK);
    if (v->model) cr_assert_eq(sl_gguf_writer_set_str(w, "tokenizer.ggml.model", v->model), SL_OK);
    if (v->pre) cr_assert_eq(sl_gguf_writer_set_str(w, "tokenizer.ggml.pre", v->pre), SL_OK);
    if (v->tokens == 1) cr_assert_eq(sl_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", g_tokens, n), SL_OK);
    float scores[258] = {0};
    if (v->tokens == 2) cr_assert_eq(sl_gguf_writer_set_arr_f32(w, "tokenizer.ggml.tokens", scores, n), SL_OK);
    if (v->merges == 1) cr_assert_eq(sl_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", g_merges_good, 1), SL_OK);
    if (v->merges == 2) cr_assert_eq(sl_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", g_merges_bad, 2), SL_OK);
    if (v->scores) cr_assert_eq(sl_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, n - (v->scores == 2)), SL_OK);
    int32_t types[258];
    for (int i = 0; i < 258; i++) types[i] = i == 257 ? 3 : 1;
    if (v->types == 1) cr_assert_eq(sl_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, n), SL_OK);
    if (v->types == 2) cr_assert_eq(sl_gguf_writer_set_arr_str(w, "tokenizer.ggml.token_type", g_tokens, n), SL_OK);
    if (v->bos >= 0) cr_assert_eq(sl_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos), SL_OK);
    if (v->add_bos >= 0) cr_assert_eq(sl_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos), SL_OK);

    char path[] = "/tmp/sluice_tok_bad_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(sl_gguf_writer_write_file(w, path), SL_OK, "%s", sl_last_error());
    sl_gguf_writer_free(w);
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open(path, &g), SL_OK, "%s", sl_last_error());
    unlink(path); /* the mapping stays valid */
    return g;
}

/* Loads v, expects status st and a message containing each of the needles. */
static void expect_load(const bad_vocab *v, sl_status st, const char *needle) {
    sl_gguf *g = write_vocab(v);
    sl_tokenizer *t = (sl_tokenizer *)g; /* any non-NULL value: a failed load must reset it */
    sl_status got = sl_tokenizer_load(g, &t);
    cr_assert_eq(got, st, "status %s, want %s (%s)", sl_status_name(got), sl_status_name(st), sl_last_error());
    if (st != SL_OK) {
        cr_assert_null(t);
        cr_assert(strstr(sl_last_error(), needle), "message '%s' does not mention '%s'", sl_last_error(), needle);
    }
    sl_tokenizer_free(t);
    sl_gguf_close(g);
}

Test(tok_bad, the_good_vocabulary_loads) {
    bad_vocab v = good_vocab();
    sl_gguf *g = write_vocab(&v);
    sl_tokenizer *t = NULL;
    cr_assert_eq(sl_tokenizer_load(g, &t), SL_OK, "%s", sl_last_error());
    sl_gguf_close(g);
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(sl_tokenizer_encode(t, "abc", 3, 0, &ids, &n), SL_OK);
    cr_assert(n == 2 && ids[0] == 256 && ids[1] == 'c', "\"ab\" merged, then 'c'");
    free(ids);
    cr_assert_eq(sl_tokenizer_bos(t), 257);
    cr_assert(sl_tokenizer_is_eog(t, 257), "<|endoftext|> ends generation");
    sl_tokenizer_free(t);
}

Test(tok_bad, unsupported_model_is_named) {
    bad_vocab v = good_vocab();
    v.model = "bert";
    expect_load(&v, SL_UNSUPPORTED, "'bert'");
    v.model = "t5";
    expect_load(&v, SL_UNSUPPORTED, "'t5'");
}

Test(tok_bad, unsupported_pre_tokenizer_is_named) {
    bad_vocab v = good_vocab();
    v.pre = "llama-bpe";
    expect_load(&v, SL_UNSUPPORTED, "'llama-bpe'");
}

Test(tok_bad, missing_or_mistyped_keys) {
    bad_vocab v = good_vocab();
    v.model = NULL;
    expect_load(&v, SL_BAD_FORMAT, "tokenizer.ggml.model");
    v = good_vocab();
    v.tokens = 0;
    expect_load(&v, SL_BAD_FORMAT, "tokenizer.ggml.tokens");
    v.tokens = 2;
    expect_load(&v, SL_BAD_FORMAT, "tokenizer.ggml.tokens");
    v = good_vocab();
    v.merges = 0;
    expect_load(&v, SL_BAD_FORMAT, "tokenizer.ggml.merges");
    v = good_vocab();
    v.types = 2;
    expect_load(&v, SL_BAD_FORMAT, "tokenizer.ggml.token_type");
    v = good_vocab();
    v.scores = 2;
    expect_load(&v, SL_BAD_FORMAT, "tokenizer.ggml.scores");
    CHECK_NO_LEAKS();
}

Test(tok_bad, malformed_merges_and_duplicates) {
    bad_vocab v = good_vocab();
    v.merges = 2;
    expect_load(&v, SL_BAD_FORMAT, "merges[1]");
    v = good_vocab();
    v.duplicate = 1;
    expect_load(&v, SL_BAD_FORMAT, "duplicate");
    CHECK_NO_LEAKS();
}

Test(tok_bad, special_ids) {
    /* An id outside the vocabulary is ignored, as llama.cpp does ... */
    bad_vocab v = good_vocab();
    v.bos = 100000;
    sl_gguf *g = write_vocab(&v);
    sl_tokenizer *t = NULL;
    cr_assert_eq(sl_tokenizer_load(g, &t), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_tokenizer_bos(t), -1);
    sl_tokenizer_free(t);
    sl_gguf_close(g);
    /* ... but asking for BOS without one is an error, not a crash at encode time. */
    v.add_bos = 1;
    expect_load(&v, SL_BAD_FORMAT, "BOS");
    CHECK_NO_LEAKS();
}

/* Damaged copies of a real vocabulary: truncations and flipped bytes. Whatever the reader accepts, the
 * tokenizer either loads (and then encodes and decodes) or refuses with a message. */
Test(tok_bad, damaged_real_vocabulary_never_crashes) {
    char *path = sl_test_data_path("ggml-vocab-gpt-2.gguf");
    size_t size;
    char *orig = sl_test_read_file(path, &size);
    cr_assert_not_null(orig);
    free(path);
    char *buf = malloc(size);
    uint64_t rng = 12345;
    int loaded = 0, refused = 0;
    for (int iter = 0; iter < 24; iter++) {
        memcpy(buf, orig, size);
        size_t len = size;
        if (iter < 8) {
            len = (size_t)(sl_test_rand_u64(&rng) % size); /* truncated */
        } else {
            /* Change printable bytes (token and merge texts, not the little-endian lengths between them, whose
             * bytes are small) to random ones: invalid UTF-8, duplicate tokens, merges without a space. */
            for (int k = 0; k < iter - 7; k++) {
                size_t at;
                do at = (size_t)(sl_test_rand_u64(&rng) % size);
                while (buf[at] < 0x20 || buf[at] > 0x7e);
                buf[at] = (char)sl_test_rand_u64(&rng);
            }
        }
        sl_gguf *g = NULL;
        if (sl_gguf_open_memory(buf, len, &g) != SL_OK) continue;
        sl_tokenizer *t = NULL;
        if (sl_tokenizer_load(g, &t) == SL_OK) {
            int32_t *ids = NULL;
            size_t n = 0;
            const char *s = "Hello, world! 123 <|endoftext|>";
            cr_assert_eq(sl_tokenizer_encode(t, s, strlen(s), SL_TOKENIZE_PARSE_SPECIAL, &ids, &n), SL_OK);
            char *text = NULL;
            size_t tl = 0;
            cr_assert_eq(sl_tokenizer_decode(t, ids, n, 0, &text, &tl), SL_OK);
            free(text);
            free(ids);
            loaded++;
        } else {
            cr_assert_neq(sl_last_error()[0], 0, "a refusal says why");
            refused++;
        }
        sl_tokenizer_free(t);
        sl_gguf_close(g);
    }
    cr_log_info("damaged copies: %d loaded, %d refused by the tokenizer", loaded, refused);
    cr_assert_gt(loaded + refused, 8, "the damage should mostly reach the tokenizer, not stop at the reader");
    free(buf);
    free(orig);
    CHECK_NO_LEAKS();
}
