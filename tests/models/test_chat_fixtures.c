/*
 * test_chat_fixtures.c — models/chat.c against jinja2: every template source in tests/data/chat_fixtures.txt
 * (written by tests/gen_chat_fixtures.py with Hugging Face's jinja2 settings) must be recognised under its
 * name, render every conversation byte for byte as jinja2 did, and refuse exactly where jinja2 raised.
 *
 * The fixture format is length-prefixed fields ("KEY LEN\n", LEN bytes, "\n"); see the generator.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "testutil.h"

typedef struct fx_reader {
    const char *p, *end;
} fx_reader;

typedef struct fx_field {
    char key[16];
    const char *val; /* not NUL-terminated */
    size_t len;
} fx_field;

/* Reads the next field; 0 at the end of the file. A malformed file fails the test. */
static int fx_next(fx_reader *r, fx_field *f) {
    while (r->p < r->end && *r->p == '#') { /* comment lines at the top */
        const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
        r->p = nl ? nl + 1 : r->end;
    }
    if (r->p >= r->end) return 0;
    const char *sp = memchr(r->p, ' ', (size_t)(r->end - r->p));
    cr_assert(sp && sp - r->p < (long)sizeof f->key, "fixture: bad field header");
    memcpy(f->key, r->p, (size_t)(sp - r->p));
    f->key[sp - r->p] = 0;
    char *num_end;
    unsigned long long len = strtoull(sp + 1, &num_end, 10);
    cr_assert(num_end < r->end && *num_end == '\n', "fixture: bad length for field %s", f->key);
    f->val = num_end + 1;
    f->len = (size_t)len;
    cr_assert(f->len < (size_t)(r->end - f->val) && f->val[f->len] == '\n', "fixture: field %s overruns", f->key);
    r->p = f->val + f->len + 1;
    return 1;
}

static char *fx_strdup(const fx_field *f) {
    char *s = malloc(f->len + 1);
    memcpy(s, f->val, f->len);
    s[f->len] = 0;
    return s;
}

static void fx_expect(fx_reader *r, fx_field *f, const char *key) {
    cr_assert(fx_next(r, f), "fixture: missing field %s", key);
    cr_assert_str_eq(f->key, key, "fixture: expected field %s, got %s", key, f->key);
}

#define FX_MAX_MSGS 16

Test(chat_fixtures, jinja2_renderings_match_byte_for_byte) {
    char *path = sl_test_data_path("chat_fixtures.txt");
    size_t size = 0;
    char *data = sl_test_read_file(path, &size);
    cr_assert(data, "cannot read %s (run tests/gen_chat_fixtures.py)", path);
    fx_reader r = {data, data + size};
    fx_field f;
    sl_chat_template *t = NULL;
    char *tname = NULL;
    int n_templates = 0, n_cases = 0, n_refused = 0;
    while (fx_next(&r, &f)) {
        if (strcmp(f.key, "template") == 0) {
            sl_chat_template_free(t);
            free(tname);
            tname = fx_strdup(&f);
            fx_expect(&r, &f, "source");
            char *source = fx_strdup(&f);
            fx_expect(&r, &f, "bos");
            char *bos = fx_strdup(&f);
            fx_expect(&r, &f, "eos");
            char *eos = fx_strdup(&f);
            sl_status st = sl_chat_template_create(source, NULL, bos, eos, &t);
            cr_assert_eq(st, SL_OK, "template %s not recognised: %s", tname, sl_last_error());
            cr_assert_str_eq(sl_chat_template_name(t), tname);
            free(source);
            free(bos);
            free(eos);
            n_templates++;
            continue;
        }
        cr_assert_str_eq(f.key, "case", "fixture: expected a case, got %s", f.key);
        cr_assert(t, "fixture: case before any template");
        char *label = fx_strdup(&f);
        fx_expect(&r, &f, "add_gen");
        int add_gen = f.len == 1 && f.val[0] == '1';
        fx_expect(&r, &f, "n_msgs");
        char *nbuf = fx_strdup(&f);
        size_t n = (size_t)strtoul(nbuf, NULL, 10);
        free(nbuf);
        cr_assert(n <= FX_MAX_MSGS);
        sl_chat_message msgs[FX_MAX_MSGS];
        char *owned[2 * FX_MAX_MSGS];
        for (size_t i = 0; i < n; i++) {
            fx_expect(&r, &f, "role");
            owned[2 * i] = fx_strdup(&f);
            fx_expect(&r, &f, "content");
            owned[2 * i + 1] = fx_strdup(&f);
            msgs[i].role = owned[2 * i];
            msgs[i].content = owned[2 * i + 1];
        }
        cr_assert(fx_next(&r, &f), "fixture: case without a result");
        char *got = NULL;
        sl_status st = sl_chat_render(t, msgs, n, add_gen, &got);
        if (strcmp(f.key, "expect") == 0) {
            cr_assert_eq(st, SL_OK, "%s / %s: refused: %s", tname, label, sl_last_error());
            cr_assert(strlen(got) == f.len && memcmp(got, f.val, f.len) == 0,
                      "%s / %s:\n  got      [%s]\n  expected [%.*s]", tname, label, got, (int)f.len, f.val);
        } else {
            cr_assert_str_eq(f.key, "error");
            cr_assert_eq(st, SL_INVALID_ARGUMENT, "%s / %s: jinja2 raised (%.*s) but we gave %s [%s]", tname, label,
                         (int)f.len, f.val, sl_status_name(st), got ? got : "");
            cr_assert_null(got);
            cr_assert(strlen(sl_last_error()) > 0);
            n_refused++;
        }
        sl_free(got);
        for (size_t i = 0; i < 2 * n; i++) free(owned[i]);
        free(label);
        n_cases++;
    }
    sl_chat_template_free(t);
    free(tname);
    free(data);
    free(path);
    /* 7 sources x 20 conversations x add_generation_prompt on/off; a shrunken file would pass vacuously. */
    cr_assert_eq(n_templates, 7);
    cr_assert_eq(n_cases, 7 * 20 * 2);
    cr_assert_gt(n_refused, 0);
}
