/*
 * test_tok_vocab.c — real vocabularies from GGUF files against llama.cpp's expected ids: GPT-2 (byte-level
 * BPE) and Phi-3 (SentencePiece), 46 strings each (tests/data/ggml-vocab-*.gguf.inp/.out), plus pieces,
 * round trips, invalid UTF-8, and the 260K llama's small SentencePiece vocabulary.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "sl_util.h"
#include "testutil.h"
#include "tok_testutil.h"
#include "tokenizer.h"

#define MAX_CASES 64
#define MAX_IDS 512

typedef struct cases {
    char *inp, *out;            /* file contents, cut in place */
    const char *text[MAX_CASES];
    size_t len[MAX_CASES];
    int32_t ids[MAX_CASES][MAX_IDS];
    size_t n_ids[MAX_CASES];
    size_t n;
} cases;

/* The .inp format: texts separated by lines reading exactly "__ggml_vocab_test__", each text without the
 * newline before its separator. The .out: one line of space-separated ids per text. */
static cases *load_cases(const char *vocab) {
    static const char sep[] = "\n__ggml_vocab_test__\n";
    cases *c = calloc(1, sizeof(*c));
    char name[128];
    snprintf(name, sizeof(name), "%s.inp", vocab);
    char *path = sl_test_data_path(name);
    size_t len;
    c->inp = sl_test_read_file(path, &len);
    cr_assert_not_null(c->inp, "cannot read %s", path);
    free(path);
    for (char *p = c->inp; p < c->inp + len;) {
        char *end = strstr(p, sep);
        cr_assert_not_null(end, "%s: text without separator", name);
        cr_assert_lt(c->n, MAX_CASES);
        c->text[c->n] = p;
        c->len[c->n] = (size_t)(end - p);
        c->n++;
        p = end + strlen(sep);
    }
    snprintf(name, sizeof(name), "%s.out", vocab);
    path = sl_test_data_path(name);
    c->out = sl_test_read_file(path, &len);
    cr_assert_not_null(c->out, "cannot read %s", path);
    free(path);
    size_t line = 0;
    for (char *p = c->out; *p; line++) {
        cr_assert_lt(line, c->n, "%s has more lines than the .inp has texts", name);
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        for (char *q = p; *q;) {
            char *e;
            long v = strtol(q, &e, 10);
            if (e == q) break;
            cr_assert_lt(c->n_ids[line], MAX_IDS);
            c->ids[line][c->n_ids[line]++] = (int32_t)v;
            q = e;
        }
        if (!nl) {
            line++;
            break;
        }
        p = nl + 1;
    }
    cr_assert_eq(line, c->n, "%s: %zu lines for %zu texts", name, line, c->n);
    return c;
}

static void free_cases(cases *c) {
    free(c->inp);
    free(c->out);
    free(c);
}

static sl_tokenizer *load_vocab(const char *name, sl_gguf **g_out) {
    char *path = sl_test_data_path(name);
    sl_gguf *g = NULL;
    cr_assert_eq(sl_gguf_open(path, &g), SL_OK, "open %s: %s", path, sl_last_error());
    free(path);
    sl_tokenizer *t = NULL;
    cr_assert_eq(sl_tokenizer_load(g, &t), SL_OK, "load %s: %s", name, sl_last_error());
    if (g_out) {
        *g_out = g;
    } else {
        sl_gguf_close(g); /* the tokenizer keeps its own copy of everything */
    }
    return t;
}

static void check_fixture(const char *vocab) {
    cases *c = load_cases(vocab);
    cr_assert_eq(c->n, 46, "%s: %zu texts", vocab, c->n);
    sl_tokenizer *t = load_vocab(vocab, NULL);
    for (size_t k = 0; k < c->n; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        cr_assert_eq(sl_tokenizer_encode(t, c->text[k], c->len[k], 0, &ids, &n), SL_OK, "%s", sl_last_error());
        int same = n == c->n_ids[k];
        for (size_t i = 0; same && i < n; i++) same = ids[i] == c->ids[k][i];
        if (!same) {
            char got[2048] = "", want[2048] = "";
            for (size_t i = 0; i < n && strlen(got) < 2000; i++) snprintf(got + strlen(got), 12, " %d", ids[i]);
            for (size_t i = 0; i < c->n_ids[k] && strlen(want) < 2000; i++)
                snprintf(want + strlen(want), 12, " %d", c->ids[k][i]);
            cr_assert_fail("%s text %zu '%s':\n got %s\nwant %s", vocab, k, tok_show(c->text[k], c->len[k]), got, want);
        }
        /* The text comes back from the ids. */
        char *back = NULL;
        size_t blen = 0;
        cr_assert_eq(sl_tokenizer_decode(t, ids, n, 0, &back, &blen), SL_OK);
        cr_assert(blen == c->len[k] && memcmp(back, c->text[k], blen) == 0, "%s text %zu: decode gives '%s'", vocab,
                  k, tok_show(back, blen));
        free(back);
        free(ids);
    }
    sl_tokenizer_free(t);
    free_cases(c);
}

Test(tok_vocab, gpt2_matches_llama_cpp) { check_fixture("ggml-vocab-gpt-2.gguf"); }

Test(tok_vocab, phi3_matches_llama_cpp) { check_fixture("ggml-vocab-phi-3.gguf"); }

Test(tok_vocab, gpt2_pieces_concatenate_to_the_text) {
    cases *c = load_cases("ggml-vocab-gpt-2.gguf");
    sl_tokenizer *t = load_vocab("ggml-vocab-gpt-2.gguf", NULL);
    for (size_t k = 0; k < c->n; k++) {
        /* The expected ids (llama.cpp's, not ours), piece by piece. */
        char buf[4096];
        size_t len = 0;
        for (size_t i = 0; i < c->n_ids[k]; i++) {
            size_t pl;
            const char *p = sl_tokenizer_piece(t, c->ids[k][i], &pl);
            cr_assert_not_null(p, "id %d has no piece", c->ids[k][i]);
            cr_assert_leq(len + pl, sizeof(buf));
            memcpy(buf + len, p, pl);
            len += pl;
        }
        cr_assert(len == c->len[k] && memcmp(buf, c->text[k], len) == 0, "text %zu: pieces give '%s'", k,
                  tok_show(buf, len));
    }
    sl_tokenizer_free(t);
    free_cases(c);
}

Test(tok_vocab, gpt2_metadata) {
    sl_tokenizer *t = load_vocab("ggml-vocab-gpt-2.gguf", NULL);
    cr_assert_eq(sl_tokenizer_n_vocab(t), 50257);
    cr_assert_eq(sl_tokenizer_bos(t), 50256);
    cr_assert_eq(sl_tokenizer_eos(t), 50256);
    cr_assert_eq(sl_tokenizer_eot(t), 50256, "<|endoftext|>");
    cr_assert(!sl_tokenizer_add_bos(t), "byte-level BPE adds no BOS unless the file says so");
    cr_assert(sl_tokenizer_is_control(t, 50256));
    cr_assert(sl_tokenizer_is_eog(t, 50256));
    cr_assert(!sl_tokenizer_is_eog(t, 198));
    cr_assert_eq(sl_tokenizer_token_id(t, "\xc4\xa0" "the", 5), 262, "\"Ġthe\"");
    int32_t *ids = NULL;
    size_t n = 0;
    /* With PARSE_SPECIAL the text of <|endoftext|> is that token; without it, ordinary text. */
    const char *s = "a<|endoftext|>b";
    cr_assert_eq(sl_tokenizer_encode(t, s, strlen(s), SL_TOKENIZE_PARSE_SPECIAL, &ids, &n), SL_OK);
    cr_assert(n == 3 && ids[0] == 64 && ids[1] == 50256 && ids[2] == 65, "got %zu ids", n);
    free(ids);
    cr_assert_eq(sl_tokenizer_encode(t, s, strlen(s), 0, &ids, &n), SL_OK);
    cr_assert_gt(n, 3);
    for (size_t i = 0; i < n; i++) cr_assert_neq(ids[i], 50256);
    free(ids);
    sl_tokenizer_free(t);
}

Test(tok_vocab, gpt2_invalid_utf8_round_trips) {
    sl_tokenizer *t = load_vocab("ggml-vocab-gpt-2.gguf", NULL);
#define TEXT(s) {s, sizeof(s) - 1}
    static const struct {
        const char *s;
        size_t n;
    } texts[] = {
        TEXT("\xff"), TEXT("\x80"), TEXT("abc\xc3"), TEXT("\xc3("), TEXT("\xe2\x82"), TEXT("\xe2\x82 x"),
        TEXT("\xf0\x9f\x98"), TEXT("\xed\xa0\x80 surrogate"), TEXT("\xc0\xaf overlong"),
        TEXT("\xf4\x90\x80\x80 too high"), TEXT("ok \xfe\xff ok"), TEXT("\x00\x01\x02"), TEXT("caf\xe9 latin-1"),
        TEXT("\xf0\x9f\x9a\x80\xf0\x9f\x9a"),
    };
#undef TEXT
    for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
        cr_assert_gt(tok_assert_roundtrip(t, texts[k].s, texts[k].n), 0);
    }
    /* A stray byte is its own token: "\xff" alone is the byte-level character of 0xFF, "ÿ". */
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(sl_tokenizer_encode(t, "\xff", 1, 0, &ids, &n), SL_OK);
    cr_assert(n == 1 && ids[0] == sl_tokenizer_token_id(t, "\xc3\xbf", 2));
    free(ids);
    sl_tokenizer_free(t);
}

Test(tok_vocab, phi3_metadata_and_special_tokens) {
    sl_tokenizer *t = load_vocab("ggml-vocab-phi-3.gguf", NULL);
    cr_assert_eq(sl_tokenizer_n_vocab(t), 32064);
    cr_assert_eq(sl_tokenizer_bos(t), 1);
    cr_assert_eq(sl_tokenizer_eos(t), 32000);
    cr_assert_eq(sl_tokenizer_eot(t), 32007, "<|end|>");
    cr_assert(sl_tokenizer_add_bos(t));
    cr_assert(sl_tokenizer_is_eog(t, 32000) && sl_tokenizer_is_eog(t, 32007));
    int32_t *ids = NULL;
    size_t n = 0;
    const char *s = "<|user|>\nHi<|end|>";
    cr_assert_eq(sl_tokenizer_encode(t, s, strlen(s), SL_TOKENIZE_PARSE_SPECIAL | SL_TOKENIZE_ADD_SPECIAL, &ids, &n),
                 SL_OK);
    cr_assert_geq(n, 4);
    cr_assert_eq(ids[0], 1, "BOS first");
    cr_assert_eq(ids[1], 32010, "<|user|>");
    cr_assert_eq(ids[n - 1], 32007, "<|end|>");
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(sl_tokenizer_decode(t, ids, n, 0, &text, &len), SL_OK);
    /* The space prefix after <|user|> is part of the SentencePiece text, as in llama.cpp. */
    cr_assert_str_eq(text, "<s><|user|> \nHi<|end|>");
    free(text);
    cr_assert_eq(sl_tokenizer_decode(t, ids, n, SL_DETOKENIZE_SKIP_SPECIAL, &text, &len), SL_OK);
    cr_assert_str_eq(text, "\nHi", "control tokens dropped, the leading prefix space removed");
    free(text);
    free(ids);
    sl_tokenizer_free(t);
}

Test(tok_vocab, stories260k_spm_round_trip) {
    sl_tokenizer *t = load_vocab("stories260K.gguf", NULL);
    cr_assert_eq(sl_tokenizer_n_vocab(t), 512);
    cr_assert_eq(sl_tokenizer_bos(t), 1);
    cr_assert_eq(sl_tokenizer_eos(t), 2);
    cr_assert_eq(sl_tokenizer_eot(t), -1, "no end-of-turn token in this vocabulary");
    const char *s = "Once upon a time, there was a little girl named Lily. \xe2\x9c\x93 100%!";
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(sl_tokenizer_encode(t, s, strlen(s), SL_TOKENIZE_ADD_SPECIAL, &ids, &n), SL_OK);
    cr_assert_eq(ids[0], 1);
    cr_assert_lt(n, strlen(s), "merges happened");
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(sl_tokenizer_decode(t, ids, n, SL_DETOKENIZE_SKIP_SPECIAL, &text, &len), SL_OK);
    cr_assert_str_eq(text, s);
    free(text);
    free(ids);
    sl_tokenizer_free(t);
}
