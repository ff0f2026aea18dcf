/*
 * test_tok_smollm2.c — the default model's tokenizer (byte-level BPE, "smollm" pre-tokenizer) loaded from
 * its GGUF, against ids from an independent implementation: tests/data/tok_smollm2.jsonl, written by
 * tests/gen_tokenizer_fixtures.py with the `tokenizers` library. Also: round trips, special tokens with and
 * without PARSE_SPECIAL, invalid UTF-8, and a long text.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "sl_util.h"
#include "testutil.h"
#include "tok_testutil.h"
#include "tokenizer.h"
#include "unicode.h"

static sl_gguf *g_file;
static sl_tokenizer *g_tok;

static void setup(void) {
    char *path = sl_test_default_model_path();
    cr_assert(access(path, R_OK) == 0,
              "the default model is missing at %s: run the setup step that fetches it (see README)", path);
    cr_assert_eq(sl_gguf_open(path, &g_file), SL_OK, "open %s: %s", path, sl_last_error());
    free(path);
    cr_assert_eq(sl_tokenizer_load(g_file, &g_tok), SL_OK, "load: %s", sl_last_error());
}

static void teardown(void) {
    sl_tokenizer_free(g_tok);
    sl_gguf_close(g_file);
}

/* ---- a reader for the fixture's lines: {"text": "...", "ids": [...], "lossless": true} ---- */

static int hex4(const char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        *v = *v * 16 + (unsigned)d;
    }
    return 1;
}

/* Decodes the JSON string starting at *p (just after its opening quote) into out; returns its length and
 * leaves *p after the closing quote. Python's json.dumps(ensure_ascii=True) is all this needs to read. */
static size_t json_string(const char **p, char *out) {
    const char *s = *p;
    size_t n = 0;
    while (*s != '"') {
        cr_assert(*s, "unterminated string");
        if (*s != '\\') {
            out[n++] = *s++;
            continue;
        }
        s++;
        unsigned cp;
        switch (*s) {
        case 'n': out[n++] = '\n'; s++; break;
        case 't': out[n++] = '\t'; s++; break;
        case 'r': out[n++] = '\r'; s++; break;
        case 'b': out[n++] = '\b'; s++; break;
        case 'f': out[n++] = '\f'; s++; break;
        case 'u':
            cr_assert(hex4(s + 1, &cp), "bad \\u escape");
            s += 5;
            if (cp >= 0xD800 && cp < 0xDC00) { /* a surrogate pair */
                unsigned lo;
                cr_assert(s[0] == '\\' && s[1] == 'u' && hex4(s + 2, &lo) && lo >= 0xDC00 && lo < 0xE000);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                s += 6;
            }
            n += sl_utf8_encode(cp, out + n);
            break;
        default: out[n++] = *s++; break; /* \" \\ \/ */
        }
    }
    *p = s + 1;
    return n;
}

typedef struct fixture_row {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n_ids;
    int lossless;
} fixture_row;

static fixture_row *load_fixture(size_t *n_rows) {
    char *path = sl_test_data_path("tok_smollm2.jsonl");
    size_t size;
    char *data = sl_test_read_file(path, &size);
    cr_assert_not_null(data, "cannot read %s (tests/gen_tokenizer_fixtures.py writes it)", path);
    free(path);
    size_t cap = 1024, n = 0;
    fixture_row *rows = calloc(cap, sizeof(*rows));
    for (const char *p = data; *p;) {
        const char *eol = strchr(p, '\n');
        size_t line_len = eol ? (size_t)(eol - p) : strlen(p);
        cr_assert_lt(n, cap);
        fixture_row *r = &rows[n++];
        const char *q = strstr(p, "\"text\": \"");
        cr_assert(q && q < p + line_len, "line %zu: no text", n);
        q += 9;
        r->text = malloc(line_len + 1); /* escapes only shrink: \uXXXX (6) -> at most 3 bytes */
        r->len = json_string(&q, r->text);
        q = strstr(q, "\"ids\": [");
        cr_assert(q && q < p + line_len, "line %zu: no ids", n);
        q += 8;
        r->ids = malloc((line_len / 2 + 1) * sizeof(*r->ids));
        while (*q != ']') {
            char *e;
            long v = strtol(q, &e, 10);
            cr_assert(e != q, "line %zu: bad id list", n);
            r->ids[r->n_ids++] = (int32_t)v;
            q = e;
            if (*q == ',') q++;
            while (*q == ' ') q++;
        }
        q = strstr(q, "\"lossless\": ");
        cr_assert(q && q < p + line_len, "line %zu: no lossless flag", n);
        r->lossless = strncmp(q + 12, "true", 4) == 0;
        p = eol ? eol + 1 : p + line_len;
    }
    free(data);
    *n_rows = n;
    return rows;
}

static void free_fixture(fixture_row *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(rows[i].text);
        free(rows[i].ids);
    }
    free(rows);
}

TestSuite(tok_smollm2, .init = setup, .fini = teardown);

Test(tok_smollm2, metadata) {
    cr_assert_eq(sl_tokenizer_n_vocab(g_tok), 49152);
    cr_assert_eq(sl_tokenizer_bos(g_tok), 1);
    cr_assert_eq(sl_tokenizer_eos(g_tok), 2);
    cr_assert_eq(sl_tokenizer_eot(g_tok), 2, "<|im_end|>");
    cr_assert(!sl_tokenizer_add_bos(g_tok), "SmolLM2 adds no BOS");
    cr_assert(sl_tokenizer_is_eog(g_tok, 2), "<|im_end|>");
    cr_assert(sl_tokenizer_is_eog(g_tok, 0), "<|endoftext|>");
    cr_assert(!sl_tokenizer_is_eog(g_tok, 1), "<|im_start|>");
    cr_assert(sl_tokenizer_is_control(g_tok, 1));
    cr_assert(!sl_tokenizer_is_control(g_tok, 100));
    size_t len;
    const char *p = sl_tokenizer_piece(g_tok, 2, &len);
    cr_assert(len == 10 && memcmp(p, "<|im_end|>", 10) == 0);
    cr_assert_eq(sl_tokenizer_token_id(g_tok, "<|im_start|>", 12), 1);
}

Test(tok_smollm2, matches_the_tokenizers_library) {
    size_t n_rows;
    fixture_row *rows = load_fixture(&n_rows);
    cr_assert_geq(n_rows, 300, "the fixture has %zu strings", n_rows);
    size_t n_lossless = 0;
    for (size_t k = 0; k < n_rows; k++) {
        const fixture_row *r = &rows[k];
        int32_t *ids = NULL;
        size_t n = 0;
        cr_assert_eq(sl_tokenizer_encode(g_tok, r->text, r->len, 0, &ids, &n), SL_OK, "%s", sl_last_error());
        int same = n == r->n_ids;
        for (size_t i = 0; same && i < n; i++) same = ids[i] == r->ids[i];
        if (!same) {
            char got[1024] = "", want[1024] = "";
            for (size_t i = 0; i < n && strlen(got) < 1000; i++) snprintf(got + strlen(got), 12, " %d", ids[i]);
            for (size_t i = 0; i < r->n_ids && strlen(want) < 1000; i++)
                snprintf(want + strlen(want), 12, " %d", r->ids[i]);
            cr_assert_fail("string %zu '%s':\n got %s\nwant %s", k, tok_show(r->text, r->len), got, want);
        }
        if (r->lossless) {
            char *back = NULL;
            size_t blen = 0;
            cr_assert_eq(sl_tokenizer_decode(g_tok, ids, n, 0, &back, &blen), SL_OK);
            cr_assert(blen == r->len && memcmp(back, r->text, blen) == 0, "string %zu: decode gives '%s'", k,
                      tok_show(back, blen));
            free(back);
            n_lossless++;
        }
        free(ids);
    }
    cr_assert_geq(n_lossless + 5, n_rows, "almost every string round-trips (%zu of %zu)", n_lossless, n_rows);
    free_fixture(rows, n_rows);
}

Test(tok_smollm2, parse_special) {
    const char *s = "<|im_start|>user\nhi<|im_end|>";
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(sl_tokenizer_encode(g_tok, s, strlen(s), SL_TOKENIZE_PARSE_SPECIAL, &ids, &n), SL_OK);
    cr_assert_geq(n, 3);
    cr_assert_eq(ids[0], 1, "<|im_start|>");
    cr_assert_eq(ids[n - 1], 2, "<|im_end|>");
    for (size_t i = 1; i + 1 < n; i++) cr_assert(ids[i] != 1 && ids[i] != 2);
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(sl_tokenizer_decode(g_tok, ids, n, 0, &text, &len), SL_OK);
    cr_assert_str_eq(text, s);
    free(text);
    cr_assert_eq(sl_tokenizer_decode(g_tok, ids, n, SL_DETOKENIZE_SKIP_SPECIAL, &text, &len), SL_OK);
    cr_assert_str_eq(text, "user\nhi");
    free(text);
    free(ids);

    /* Without PARSE_SPECIAL the same text is ordinary text: a client cannot forge a turn. */
    cr_assert_eq(sl_tokenizer_encode(g_tok, s, strlen(s), 0, &ids, &n), SL_OK);
    cr_assert_gt(n, 3);
    for (size_t i = 0; i < n; i++) cr_assert(ids[i] != 1 && ids[i] != 2, "id %d at %zu", ids[i], i);
    cr_assert_eq(sl_tokenizer_decode(g_tok, ids, n, 0, &text, &len), SL_OK);
    cr_assert_str_eq(text, s);
    free(text);
    free(ids);

    /* ADD_SPECIAL adds nothing for SmolLM2 (add_bos_token is false). */
    cr_assert_eq(sl_tokenizer_encode(g_tok, "hi", 2, SL_TOKENIZE_ADD_SPECIAL, &ids, &n), SL_OK);
    cr_assert(n == 1 && ids[0] != 1);
    free(ids);
}

Test(tok_smollm2, invalid_utf8_round_trips) {
    /* Stray bytes whose byte-level characters SmolLM2's vocabulary has (it lacks 0xF5-0xFF and a few others:
     * those are dropped, as the reference tokenizer does). */
    static const struct {
        const char *s;
        size_t n;
    } texts[] = {
        {"\x80", 1}, {"abc\xc3", 4}, {"\xc3(x", 3}, {"\xe2\x82 euro", 7}, {"\xf0\x9f\x98 emoji", 9},
        {"\xed\xa0\x80", 3}, {"12\xc3\xc3" "34", 6}, {"<|im_end|>\xe9", 11},
    };
    for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
        tok_assert_roundtrip(g_tok, texts[k].s, texts[k].n);
    }
    /* Bytes the vocabulary cannot express are dropped, never a crash. */
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(sl_tokenizer_encode(g_tok, "a\xff" "b", 3, 0, &ids, &n), SL_OK);
    cr_assert_eq(n, 2);
    free(ids);
}

Test(tok_smollm2, long_text) {
    /* 100 KiB of mixed text: one call, and it decodes back. */
    static const char *parts[] = {"The quick brown fox ", "jumps over 13 lazy dogs. ", "\n\n", "def f(x):\n    return x\n",
                                  "caf\xc3\xa9 ", "\xe4\xb8\xad\xe6\x96\x87 ", "\xf0\x9f\x9a\x80 ", "    ", "a" , "12345 "};
    size_t cap = 100 * 1024, len = 0, k = 0;
    char *text = malloc(cap + 64);
    while (len < cap) {
        const char *s = parts[(k * 7 + k / 3) % 10];
        memcpy(text + len, s, strlen(s));
        len += strlen(s);
        k++;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int64_t t0 = sl_now_us();
    cr_assert_eq(sl_tokenizer_encode(g_tok, text, len, 0, &ids, &n), SL_OK);
    int64_t t1 = sl_now_us();
    cr_assert_gt(n, len / 10);
    char *back = NULL;
    size_t blen = 0;
    cr_assert_eq(sl_tokenizer_decode(g_tok, ids, n, 0, &back, &blen), SL_OK);
    cr_assert(blen == len && memcmp(back, text, len) == 0);
    /* Informational only: timing never decides a test. */
    cr_log_info("encoded %zu bytes into %zu tokens in %.1f ms", len, n, (double)(t1 - t0) / 1000.0);
    free(back);
    free(ids);
    free(text);
}
