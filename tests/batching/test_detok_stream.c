/*
 * test_detok_stream.c — incremental detokenization: no broken UTF-8 ever leaves it, stop strings spanning
 * several tokens are held back and never sent, and the joined deltas equal the whole text.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "detok.h"

/* Pushes pieces; returns the joined output and the stop index seen (or -1). */
static int run(const char *const *pieces, size_t n, const char *const *stops, size_t n_stops, char *out) {
    sl_detok d;
    sl_detok_init(&d);
    size_t o = 0;
    int stop = -1;
    for (size_t i = 0; i < n && stop < 0; i++) {
        sl_detok_result r;
        cr_assert_eq(sl_detok_push(&d, pieces[i], strlen(pieces[i]), stops, n_stops, &r), SL_OK);
        /* every delta is complete UTF-8 on its own: no dangling lead byte at its end */
        if (r.len) {
            unsigned char last = (unsigned char)r.text[r.len - 1];
            cr_assert(last < 0x80 || (last & 0xC0) == 0x80, "delta ends inside a character");
        }
        memcpy(out + o, r.text, r.len);
        o += r.len;
        stop = r.stop_index;
    }
    if (stop < 0) {
        sl_detok_result r;
        sl_detok_flush(&d, &r);
        memcpy(out + o, r.text, r.len);
        o += r.len;
    }
    out[o] = 0;
    sl_detok_free(&d);
    return stop;
}

Test(detok_stream, utf8_split_across_tokens) {
    /* "é" = C3 A9 and "😀" = F0 9F 98 80, each split over tokens */
    const char *pieces[] = {"caf", "\xC3", "\xA9 ", "\xF0\x9F", "\x98", "\x80", "!"};
    char out[64];
    cr_assert_eq(run(pieces, 7, NULL, 0, out), -1);
    cr_assert_str_eq(out, "caf\xC3\xA9 \xF0\x9F\x98\x80!");
}

Test(detok_stream, invalid_bytes_become_replacement) {
    const char *pieces[] = {"a", "\xFF", "b", "\xC3"}; /* 0xFF never valid; a lone lead byte at the end */
    char out[64];
    run(pieces, 4, NULL, 0, out);
    cr_assert_str_eq(out, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
}

Test(detok_stream, stop_string_spanning_tokens_is_never_sent) {
    const char *pieces[] = {"Hello", " wor", "ld", " and", " more"};
    const char *stops[] = {"world and"};
    char out[64];
    cr_assert_eq(run(pieces, 5, stops, 1, out), 0);
    cr_assert_str_eq(out, "Hello ");
}

Test(detok_stream, held_prefix_released_when_it_does_not_match) {
    const char *pieces[] = {"a <", "|im", "_x", "y"};
    const char *stops[] = {"<|im_end|>"};
    char out[64];
    cr_assert_eq(run(pieces, 4, stops, 1, out), -1);
    cr_assert_str_eq(out, "a <|im_xy");
}

Test(detok_stream, earliest_of_several_stops_wins) {
    const char *pieces[] = {"one two three"};
    const char *stops[] = {"three", "two"};
    char out[64];
    cr_assert_eq(run(pieces, 1, stops, 2, out), 1);
    cr_assert_str_eq(out, "one ");
}
