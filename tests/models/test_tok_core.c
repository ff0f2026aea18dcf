/*
 * test_tok_core.c — the tokenizer core on tiny vocabularies written here as plain arrays (no file): merge
 * order, byte handling, special tokens, flags, decoding, bad specs, allocation failures, threads.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl_util.h"
#include "tokenizer.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
/* In ASan builds, a leak fails the test instead of being printed after it passed. */
#define CHECK_NO_LEAKS() cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)")
#else
#define CHECK_NO_LEAKS() ((void)0)
#endif

/* ---- helpers ---- */

typedef struct vocab {
    const char *tokens[600];
    size_t lens[600];
    int32_t types[600];
    float scores[600];
    int32_t n;
    const char *merges[64];
    size_t merge_lens[64];
    int64_t n_merges;
    char bytes[256][8]; /* storage for generated token texts */
} vocab;

static int32_t add_tok(vocab *v, const char *text, int32_t type, float score) {
    v->tokens[v->n] = text;
    v->lens[v->n] = strlen(text);
    v->types[v->n] = type;
    v->scores[v->n] = score;
    return v->n++;
}

static void add_merge(vocab *v, const char *m) {
    v->merges[v->n_merges] = m;
    v->merge_lens[v->n_merges] = strlen(m);
    v->n_merges++;
}

static void spec_of(vocab *v, sl_vocab_spec *spec, const char *model, const char *pre) {
    sl_vocab_spec_init(spec);
    spec->model = model;
    spec->pre = pre;
    spec->n_tokens = v->n;
    spec->tokens = v->tokens;
    spec->token_lens = v->lens;
    spec->types = v->types;
    spec->scores = v->scores;
    spec->n_merges = v->n_merges;
    spec->merges = v->merges;
    spec->merge_lens = v->merge_lens;
}

/* A byte-level BPE vocabulary: ids 0-255 are GPT-2's byte-level characters of bytes 0-255 (so "a" is 97 and
 * " " is the character of byte 32, "Ġ"), then a few merges and two control tokens. */
static vocab *bpe_vocab(void) {
    vocab *v = calloc(1, sizeof(*v));
    int next = 0x100;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : next++;
        char *s = v->bytes[b];
        if (cp < 0x80) {
            s[0] = (char)cp;
        } else {
            s[0] = (char)(0xC0 | (cp >> 6));
            s[1] = (char)(0x80 | (cp & 0x3F));
        }
        add_tok(v, s, SL_TOKEN_TYPE_NORMAL, 0);
    }
    add_tok(v, "ab", SL_TOKEN_TYPE_NORMAL, 0);        /* 256 */
    add_tok(v, "bc", SL_TOKEN_TYPE_NORMAL, 0);        /* 257 */
    add_tok(v, "abc", SL_TOKEN_TYPE_NORMAL, 0);       /* 258 */
    add_tok(v, "\xc4\xa0" "a", SL_TOKEN_TYPE_NORMAL, 0); /* 259 "Ġa" */
    add_tok(v, "<|end|>", SL_TOKEN_TYPE_CONTROL, 0);  /* 260 */
    add_tok(v, "<|en", SL_TOKEN_TYPE_CONTROL, 0);     /* 261: a shorter special that overlaps 260 */
    add_tok(v, "<|im_end|>", SL_TOKEN_TYPE_NORMAL, 0); /* 262: EOG text, marked CONTROL by the loader */
    add_tok(v, "12", SL_TOKEN_TYPE_NORMAL, 0);        /* 263 */
    add_merge(v, "b c");  /* rank 0: beats "a b" */
    add_merge(v, "a b");  /* rank 1 */
    add_merge(v, "a bc"); /* rank 2 */
    add_merge(v, "\xc4\xa0 a");
    add_merge(v, "1 2");
    return v;
}

/* A SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces with scores. */
static vocab *spm_vocab(void) {
    vocab *v = calloc(1, sizeof(*v));
    add_tok(v, "<unk>", SL_TOKEN_TYPE_UNKNOWN, 0);
    add_tok(v, "<s>", SL_TOKEN_TYPE_CONTROL, 0);
    add_tok(v, "</s>", SL_TOKEN_TYPE_CONTROL, 0);
    for (int b = 0; b < 256; b++) {
        snprintf(v->bytes[b], sizeof(v->bytes[b]), "<0x%02X>", b);
        add_tok(v, v->bytes[b], SL_TOKEN_TYPE_BYTE, 0);
    }
    add_tok(v, "\xe2\x96\x81", SL_TOKEN_TYPE_NORMAL, -1.0f);           /* 259 "▁" */
    add_tok(v, "h", SL_TOKEN_TYPE_NORMAL, -2.0f);                       /* 260 */
    add_tok(v, "i", SL_TOKEN_TYPE_NORMAL, -2.0f);                       /* 261 */
    add_tok(v, "hi", SL_TOKEN_TYPE_NORMAL, -3.0f);                      /* 262 */
    add_tok(v, "\xe2\x96\x81" "x", SL_TOKEN_TYPE_NORMAL, -6.0f);        /* 263 "▁x" */
    add_tok(v, "\xe2\x96\x81" "h", SL_TOKEN_TYPE_NORMAL, -0.5f);        /* 264 "▁h": best score */
    add_tok(v, "x", SL_TOKEN_TYPE_NORMAL, -2.0f);                       /* 265 */
    add_tok(v, "y", SL_TOKEN_TYPE_NORMAL, -2.0f);                       /* 266 */
    add_tok(v, "z", SL_TOKEN_TYPE_NORMAL, -2.0f);                       /* 267 */
    add_tok(v, "xy", SL_TOKEN_TYPE_NORMAL, -5.0f);                      /* 268 */
    add_tok(v, "yz", SL_TOKEN_TYPE_NORMAL, -5.0f);                      /* 269: same score as xy: leftmost wins */
    return v;
}

static sl_tokenizer *make(vocab *v, const char *model, const char *pre) {
    sl_vocab_spec spec;
    spec_of(v, &spec, model, pre);
    if (strcmp(model, "llama") == 0) { /* spm_vocab's <unk> <s> </s> */
        spec.unk = 0;
        spec.bos = 1;
        spec.eos = 2;
    }
    sl_tokenizer *t = NULL;
    sl_status st = sl_tokenizer_create(&spec, &t);
    cr_assert_eq(st, SL_OK, "create: %s", sl_last_error());
    return t;
}

static size_t enc(const sl_tokenizer *t, const char *s, unsigned flags, int32_t *out, size_t cap) {
    int32_t *ids = NULL;
    size_t n = 0;
    sl_status st = sl_tokenizer_encode(t, s, strlen(s), flags, &ids, &n);
    cr_assert_eq(st, SL_OK, "encode '%s': %s", s, sl_last_error());
    cr_assert_leq(n, cap, "encode '%s': %zu ids", s, n);
    memcpy(out, ids, n * sizeof(*ids));
    free(ids);
    return n;
}

static void expect_ids(const sl_tokenizer *t, const char *s, unsigned flags, const int32_t *want, size_t n_want) {
    int32_t got[64];
    size_t n = enc(t, s, flags, got, 64);
    cr_assert_eq(n, n_want, "'%s': %zu ids, want %zu", s, n, n_want);
    for (size_t i = 0; i < n; i++) cr_assert_eq(got[i], want[i], "'%s' id %zu: %d, want %d", s, i, got[i], want[i]);
}

#define EXPECT(t, s, flags, ...)                                                                           \
    do {                                                                                                   \
        const int32_t want_[] = {__VA_ARGS__};                                                             \
        expect_ids(t, s, flags, want_, sizeof(want_) / sizeof(want_[0]));                                  \
    } while (0)

static char *dec(const sl_tokenizer *t, const int32_t *ids, size_t n, unsigned flags) {
    char *text = NULL;
    size_t len = 0;
    sl_status st = sl_tokenizer_decode(t, ids, n, flags, &text, &len);
    cr_assert_eq(st, SL_OK, "decode: %s", sl_last_error());
    cr_assert_eq(strlen(text), len);
    return text;
}

/* ---- byte-level BPE ---- */

Test(tok_core, bpe_merges_follow_rank_not_position) {
    vocab *v = bpe_vocab();
    sl_tokenizer *t = make(v, "gpt2", "gpt2");
    /* "abc": b+c (rank 0) before a+b (rank 1), then a+bc (rank 2). */
    EXPECT(t, "abc", 0, 258);
    /* "abd": only a+b applies. */
    EXPECT(t, "abd", 0, 256, 'd');
    /* " a" merges the byte-level space with a; GPT-2's pattern keeps " a" one word. */
    EXPECT(t, "x a", 0, 'x', 259);
    /* Digits stay together under "gpt2" ... */
    EXPECT(t, "12", 0, 263);
    sl_tokenizer_free(t);
    /* ... and are split one by one under "smollm". */
    t = make(v, "gpt2", "smollm");
    EXPECT(t, "12", 0, '1', '2');
    EXPECT(t, "abc", 0, 258);
    sl_tokenizer_free(t);
    free(v);
}

Test(tok_core, bpe_every_byte_round_trips) {
    vocab *v = bpe_vocab();
    sl_tokenizer *t = make(v, "gpt2", NULL);
    char all[256];
    for (int i = 0; i < 256; i++) all[i] = (char)(255 - i); /* includes NUL, invalid UTF-8, lone leads */
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(sl_tokenizer_encode(t, all, sizeof(all), 0, &ids, &n), SL_OK);
    cr_assert_eq(n, 256, "every byte is its own token here (no merges apply), got %zu", n);
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(sl_tokenizer_decode(t, ids, n, 0, &text, &len), SL_OK);
    cr_assert_eq(len, sizeof(all));
    cr_assert(memcmp(text, all, len) == 0, "decode(encode(bytes)) differs");
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = sl_tokenizer_piece(t, ids[i], &pl);
        cr_assert(p && pl == 1 && p[0] == all[i], "piece of byte %zu", i);
    }
    free(ids);
    free(text);
    sl_tokenizer_free(t);
    free(v);
}

Test(tok_core, bpe_pieces_and_lookup) {
    vocab *v = bpe_vocab();
    sl_tokenizer *t = make(v, "gpt2", "gpt2");
    size_t len;
    const char *p = sl_tokenizer_piece(t, 259, &len);
    cr_assert(len == 2 && memcmp(p, " a", 2) == 0, "the piece of \"Ġa\" is \" a\"");
    p = sl_tokenizer_piece(t, 260, &len);
    cr_assert(len == 7 && memcmp(p, "<|end|>", 7) == 0, "a control token's piece is its text");
    cr_assert_null(sl_tokenizer_piece(t, -1, &len));
    cr_assert_eq(len, 0);
    cr_assert_null(sl_tokenizer_piece(t, v->n, &len));
    cr_assert_eq(sl_tokenizer_token_id(t, "\xc4\xa0" "a", 3), 259);
    cr_assert_eq(sl_tokenizer_token_id(t, " a", 2), -1, "lookup is by stored text, not decoded text");
    cr_assert_eq(sl_tokenizer_token_id(t, "<|end|>", 7), 260);
    cr_assert_eq(sl_tokenizer_token_id(t, "", 0), -1);
    cr_assert_eq(sl_tokenizer_n_vocab(t), v->n);
    sl_tokenizer_free(t);
    free(v);
}

/* ---- special tokens ---- */

Test(tok_core, special_tokens_only_with_parse_special_longest_first) {
    vocab *v = bpe_vocab();
    sl_tokenizer *t = make(v, "gpt2", "gpt2");
    int32_t ids[64];
    /* With PARSE_SPECIAL, "<|end|>" wins over its prefix "<|en" (longest first), and "<|en" still matches
     * elsewhere. */
    EXPECT(t, "a<|end|>b<|en", SL_TOKENIZE_PARSE_SPECIAL, 'a', 260, 'b', 261);
    /* Without it the text is ordinary: no special id appears. */
    size_t n = enc(t, "a<|end|>b<|en", 0, ids, 64);
    for (size_t i = 0; i < n; i++) cr_assert(ids[i] != 260 && ids[i] != 261, "special id without PARSE_SPECIAL");
    char *text = dec(t, ids, n, 0);
    cr_assert_str_eq(text, "a<|end|>b<|en");
    free(text);
    /* Back to back and at the edges. */
    EXPECT(t, "<|end|><|end|>", SL_TOKENIZE_PARSE_SPECIAL, 260, 260);
    /* "<|im_end|>" is NORMAL in the file but is an end-of-generation text: it becomes CONTROL and EOG. */
    cr_assert(sl_tokenizer_is_control(t, 262));
    cr_assert(sl_tokenizer_is_eog(t, 262));
    cr_assert_eq(sl_tokenizer_eot(t), 262);
    EXPECT(t, "x<|im_end|>", SL_TOKENIZE_PARSE_SPECIAL, 'x', 262);
    cr_assert(sl_tokenizer_is_eog(t, 260), "<|end|> ends generation by its text too");
    cr_assert(!sl_tokenizer_is_control(t, 'a'));
    cr_assert(!sl_tokenizer_is_control(t, -5));
    cr_assert(!sl_tokenizer_is_eog(t, 1 << 30));
    sl_tokenizer_free(t);
    free(v);
}

Test(tok_core, add_special_and_skip_special) {
    vocab *v = bpe_vocab();
    sl_vocab_spec spec;
    spec_of(v, &spec, "gpt2", "gpt2");
    spec.bos = 261;
    spec.eos = 260;
    spec.add_bos = 1;
    spec.add_eos = 1;
    sl_tokenizer *t = NULL;
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_tokenizer_bos(t), 261);
    cr_assert_eq(sl_tokenizer_eos(t), 260);
    cr_assert(sl_tokenizer_add_bos(t));
    cr_assert(sl_tokenizer_is_eog(t, 260), "EOS ends generation");
    EXPECT(t, "ab", SL_TOKENIZE_ADD_SPECIAL, 261, 256, 260);
    EXPECT(t, "ab", 0, 256);
    EXPECT(t, "", SL_TOKENIZE_ADD_SPECIAL, 261, 260);
    int32_t ids[] = {261, 256, 260};
    char *text = dec(t, ids, 3, 0);
    cr_assert_str_eq(text, "<|en" "ab" "<|end|>");
    free(text);
    text = dec(t, ids, 3, SL_DETOKENIZE_SKIP_SPECIAL);
    cr_assert_str_eq(text, "ab");
    free(text);
    sl_tokenizer_free(t);
    /* add_bos without a BOS token is a bad vocabulary, not a crash at encode time. */
    spec.bos = -1;
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_BAD_FORMAT);
    cr_assert_null(t);
    cr_assert(strstr(sl_last_error(), "BOS"), "message: %s", sl_last_error());
    free(v);
}

/* ---- SentencePiece ---- */

Test(tok_core, spm_best_score_first_and_space_prefix) {
    vocab *v = spm_vocab();
    sl_tokenizer *t = make(v, "llama", NULL);
    cr_assert(sl_tokenizer_add_bos(t), "llama vocabularies add BOS by default");
    /* "hi" -> "▁hi": "▁h" (score -0.5) merges before "hi" (-3), then "▁h"+"i" is not a token. */
    EXPECT(t, "hi", 0, 264, 261);
    /* "xyz" -> "▁xyz": "xy" and "yz" tie at -5 and beat "▁x" (-6); the leftmost pair wins. */
    EXPECT(t, "xyz", 0, 259, 268, 267);
    /* Bytes with no piece fall back to <0xXX> (id 3 + byte): "é" is C3 A9. */
    EXPECT(t, "\xc3\xa9", 0, 259, 3 + 0xC3, 3 + 0xA9);
    /* A special token in the middle: the text after it gets the space prefix again. */
    EXPECT(t, "x</s>x", SL_TOKENIZE_PARSE_SPECIAL, 263, 2, 263);
    EXPECT(t, "", 0);
    EXPECT(t, "x", SL_TOKENIZE_ADD_SPECIAL, 1, 263);
    sl_tokenizer_free(t);
    free(v);
}

Test(tok_core, spm_decode_strips_the_prefix_once) {
    vocab *v = spm_vocab();
    sl_tokenizer *t = make(v, "llama", NULL);
    const char *cases[] = {"hi", " hi", "  x y  ", "x\ty\n", "\xc3\xa9t\xc3\xa9", "\xff\xfe bytes"};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        int32_t ids[64];
        size_t n = enc(t, cases[c], SL_TOKENIZE_ADD_SPECIAL, ids, 64);
        char *text = dec(t, ids, n, SL_DETOKENIZE_SKIP_SPECIAL);
        cr_assert_str_eq(text, cases[c], "round trip of '%s'", cases[c]);
        free(text);
    }
    /* Without skipping, BOS renders and the space after it stays (llama.cpp's behaviour). */
    int32_t ids[] = {1, 264, 261};
    char *text = dec(t, ids, 3, 0);
    cr_assert_str_eq(text, "<s> hi");
    free(text);
    size_t len;
    const char *p = sl_tokenizer_piece(t, 3 + 'A', &len);
    cr_assert(len == 1 && p[0] == 'A', "byte token piece");
    p = sl_tokenizer_piece(t, 263, &len);
    cr_assert(len == 2 && memcmp(p, " x", 2) == 0, "▁ decodes to a space");
    sl_tokenizer_free(t);
    /* add_space_prefix off: no prefix, nothing stripped. */
    sl_vocab_spec spec;
    spec_of(v, &spec, "llama", NULL);
    spec.add_space_prefix = 0;
    spec.bos = 1;
    spec.eos = 2;
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_OK);
    EXPECT(t, "hi", 0, 262);
    int32_t sp[] = {264, 261};
    text = dec(t, sp, 2, 0);
    cr_assert_str_eq(text, " hi");
    free(text);
    sl_tokenizer_free(t);
    free(v);
}

/* ---- bad specs ---- */

Test(tok_core, bad_specs_are_errors) {
    vocab *v = bpe_vocab();
    sl_vocab_spec spec;
    sl_tokenizer *t = (sl_tokenizer *)&spec; /* must be reset to NULL on failure */

    spec_of(v, &spec, "bert", NULL);
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_UNSUPPORTED);
    cr_assert_null(t);
    cr_assert(strstr(sl_last_error(), "'bert'"), "message names the model: %s", sl_last_error());

    spec_of(v, &spec, "gpt2", "qwen2");
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_UNSUPPORTED);
    cr_assert(strstr(sl_last_error(), "'qwen2'"), "message names the pre-tokenizer: %s", sl_last_error());

    spec_of(v, &spec, "gpt2", NULL);
    spec.n_tokens = 0;
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_BAD_FORMAT);

    spec_of(v, &spec, "gpt2", NULL);
    spec.eos = v->n;
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_BAD_FORMAT, "an id outside the vocabulary");

    const char *saved = v->merges[1];
    v->merges[1] = "ab";
    v->merge_lens[1] = 2;
    spec_of(v, &spec, "gpt2", NULL);
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_BAD_FORMAT);
    cr_assert(strstr(sl_last_error(), "merges[1]"), "message names the merge: %s", sl_last_error());
    v->merges[1] = "a ";
    v->merge_lens[1] = 2;
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_BAD_FORMAT, "a merge with an empty right part");
    v->merges[1] = saved;
    v->merge_lens[1] = strlen(saved);

    v->tokens[257] = "ab"; /* same text as 256 */
    spec_of(v, &spec, "gpt2", NULL);
    cr_assert_eq(sl_tokenizer_create(&spec, &t), SL_BAD_FORMAT);
    cr_assert(strstr(sl_last_error(), "duplicate"), "message: %s", sl_last_error());
    free(v);
}

Test(tok_core, encode_and_decode_reject_bad_arguments) {
    vocab *v = bpe_vocab();
    sl_tokenizer *t = make(v, "gpt2", NULL);
    int32_t *ids = NULL;
    size_t n = 7;
    cr_assert_eq(sl_tokenizer_encode(t, NULL, 3, 0, &ids, &n), SL_INVALID_ARGUMENT);
    cr_assert_null(ids);
    cr_assert_eq(n, 0);
    cr_assert_eq(sl_tokenizer_encode(t, NULL, 0, 0, &ids, &n), SL_OK, "NULL with length 0 is the empty text");
    cr_assert_eq(n, 0);
    free(ids);
    int32_t bad[] = {97, -1};
    char *text = NULL;
    size_t len;
    cr_assert_eq(sl_tokenizer_decode(t, bad, 2, 0, &text, &len), SL_INVALID_ARGUMENT);
    cr_assert_null(text);
    bad[1] = v->n;
    cr_assert_eq(sl_tokenizer_decode(t, bad, 2, 0, &text, &len), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "position 1"), "message: %s", sl_last_error());
    cr_assert_eq(sl_tokenizer_decode(t, bad, 0, 0, &text, &len), SL_OK);
    cr_assert_str_eq(text, "");
    free(text);
    sl_tokenizer_free(t);
    sl_tokenizer_free(NULL);
    free(v);
}

/* Every allocation of create, encode and decode may fail: each failure is a clean SL_OUT_OF_MEMORY (ASan
 * builds check nothing leaks), and once allocations succeed again everything works. */
Test(tok_core, allocation_failures_are_clean) {
    vocab *v = bpe_vocab();
    sl_vocab_spec spec;
    spec_of(v, &spec, "gpt2", "smollm");
    const char *text = "ab<|end|> 12 x a\xff";
    int ok = 0;
    for (long k = 0; k < 200 && !ok; k++) {
        sl_tokenizer *t = NULL;
        int32_t *ids = NULL;
        size_t n = 0;
        char *back = NULL;
        size_t len = 0;
        sl__alloc_fail_after(k);
        sl_status st = sl_tokenizer_create(&spec, &t);
        if (st == SL_OK) st = sl_tokenizer_encode(t, text, strlen(text), SL_TOKENIZE_PARSE_SPECIAL, &ids, &n);
        if (st == SL_OK) st = sl_tokenizer_decode(t, ids, n, 0, &back, &len);
        sl__alloc_fail_after(-1);
        if (st == SL_OK) {
            cr_assert_str_eq(back, text);
            ok = 1;
        } else {
            cr_assert_eq(st, SL_OUT_OF_MEMORY, "failure %ld: %s", k, sl_last_error());
            cr_assert_null(back);
        }
        free(ids);
        free(back);
        sl_tokenizer_free(t);
    }
    cr_assert(ok, "never succeeded within 200 allocations");
    free(v);
    CHECK_NO_LEAKS();
}

/* ---- threads ---- */

typedef struct thread_arg {
    const sl_tokenizer *t;
    int seed;
    int failures;
} thread_arg;

static void *encode_many(void *p) {
    thread_arg *a = p;
    char text[256];
    for (int iter = 0; iter < 300; iter++) {
        size_t len = 0;
        unsigned x = (unsigned)(a->seed * 7919 + iter * 104729);
        for (int i = 0; i < 40; i++) {
            x = x * 1103515245u + 12345u;
            const char *parts[] = {"ab", "c", " a", "12", "<|end|>", "\xc3\xa9", " ", "\n", "\xff", "bc"};
            const char *s = parts[(x >> 16) % 10];
            memcpy(text + len, s, strlen(s));
            len += strlen(s);
        }
        int32_t *ids = NULL;
        size_t n = 0;
        char *back = NULL;
        size_t blen = 0;
        if (sl_tokenizer_encode(a->t, text, len, SL_TOKENIZE_PARSE_SPECIAL, &ids, &n) != SL_OK ||
            sl_tokenizer_decode(a->t, ids, n, 0, &back, &blen) != SL_OK || blen != len || memcmp(back, text, len))
            a->failures++;
        free(ids);
        free(back);
    }
    return NULL;
}

Test(tok_core, concurrent_encode_decode_on_one_tokenizer) {
    vocab *v = bpe_vocab();
    sl_tokenizer *t = make(v, "gpt2", "smollm");
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){t, i + 1, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, encode_many, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].failures, 0, "thread %d: %d round trips failed", i, args[i].failures);
    }
    sl_tokenizer_free(t);
    free(v);
}
