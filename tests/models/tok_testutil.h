/*
 * tok_testutil.h — what the tokenizer tests share (tests/models/test_tok_*.c): printable failure messages and
 * the encode -> decode round trip.
 */
#ifndef SL_TOK_TESTUTIL_H
#define SL_TOK_TESTUTIL_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

/* Escapes a text for failure messages (non-printable bytes as \xNN); one static buffer, so one use per message. */
static inline const char *tok_show(const char *s, size_t n) {
    static char buf[600];
    size_t k = 0;
    for (size_t i = 0; i < n && k + 8 < sizeof(buf); i++) {
        unsigned char ch = (unsigned char)s[i];
        k += (size_t)(ch >= 0x20 && ch < 0x7f ? snprintf(buf + k, sizeof(buf) - k, "%c", ch)
                                              : snprintf(buf + k, sizeof(buf) - k, "\\x%02x", ch));
    }
    buf[k] = 0;
    return buf;
}

/* Encodes s[0..n) without special handling, decodes the ids, and asserts the same bytes come back; returns
 * the number of tokens. */
static inline size_t tok_assert_roundtrip(const sl_tokenizer *t, const char *s, size_t n) {
    int32_t *ids = NULL;
    size_t n_ids = 0;
    cr_assert_eq(sl_tokenizer_encode(t, s, n, 0, &ids, &n_ids), SL_OK);
    char *back = NULL;
    size_t blen = 0;
    cr_assert_eq(sl_tokenizer_decode(t, ids, n_ids, 0, &back, &blen), SL_OK);
    char shown[600];
    snprintf(shown, sizeof shown, "%s", tok_show(s, n));
    cr_assert(blen == n && memcmp(back, s, blen) == 0, "'%s' comes back as '%s'", shown, tok_show(back, blen));
    free(back);
    free(ids);
    return n_ids;
}

#endif /* SL_TOK_TESTUTIL_H */
