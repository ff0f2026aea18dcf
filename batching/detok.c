/* detok.c — incremental detokenization with stop-string hold-back (see detok.h). */
#include "detok.h"

#include <string.h>

#include "sl_util.h"

void sl_detok_init(sl_detok *d) { memset(d, 0, sizeof *d); }

void sl_detok_free(sl_detok *d) {
    free(d->pending);
    free(d->out);
    memset(d, 0, sizeof *d);
}

static sl_status reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return SL_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    char *p = sl__realloc(*buf, n);
    if (!p) return sl__errorf(SL_OUT_OF_MEMORY, "detokenizer buffer");
    *buf = p;
    *cap = n;
    return SL_OK;
}

/* Length of the UTF-8 sequence starting with lead byte c, or 0 if c cannot start one. */
static int utf8_seq_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

/* Checks the continuation bytes of a sequence (including the narrower second-byte ranges of E0, ED, F0, F4
 * that exclude overlongs and surrogates). Returns how many bytes of s[0..n) are a valid prefix (1..len). */
static int utf8_valid_prefix(const unsigned char *s, size_t n, int len) {
    int k = 1;
    for (; k < len && (size_t)k < n; k++) {
        unsigned char lo = 0x80, hi = 0xBF;
        if (k == 1) {
            if (s[0] == 0xE0) lo = 0xA0;
            if (s[0] == 0xED) hi = 0x9F;
            if (s[0] == 0xF0) lo = 0x90;
            if (s[0] == 0xF4) hi = 0x8F;
        }
        if (s[k] < lo || s[k] > hi) break;
    }
    return k;
}

/* Copies s[0..n) into d->out as valid UTF-8 (invalid bytes become U+FFFD). If hold_incomplete, an incomplete
 * but so far valid sequence at the very end is not consumed. Returns bytes of s consumed. */
static size_t sanitize(sl_detok *d, const char *src, size_t n, int hold_incomplete, size_t *out_len) {
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0, i = 0;
    if (reserve(&d->out, &d->out_cap, n * 3 + 1) != SL_OK) {
        *out_len = 0;
        return 0;
    }
    while (i < n) {
        int len = utf8_seq_len(s[i]);
        if (len == 0) {
            memcpy(d->out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
            continue;
        }
        int ok = utf8_valid_prefix(s + i, n - i, len);
        if (ok == len) {
            memcpy(d->out + o, s + i, (size_t)len);
            o += (size_t)len;
            i += (size_t)len;
        } else if (i + (size_t)ok == n && hold_incomplete) {
            break; /* may still complete with the next token */
        } else {
            memcpy(d->out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += (size_t)ok;
        }
    }
    d->out[o] = 0;
    *out_len = o;
    return i;
}

static void consume(sl_detok *d, size_t n) {
    memmove(d->pending, d->pending + n, d->n_pending - n);
    d->n_pending -= n;
}

sl_status sl_detok_push(sl_detok *d, const char *bytes, size_t n, const char *const *stops, size_t n_stops,
                        sl_detok_result *r) {
    r->text = "";
    r->len = 0;
    r->stop_index = -1;
    sl_status st = reserve(&d->pending, &d->cap, d->n_pending + n + 1);
    if (st != SL_OK) return st;
    memcpy(d->pending + d->n_pending, bytes, n);
    d->n_pending += n;

    /* A stop string inside the pending bytes: the earliest match wins. */
    size_t best_pos = (size_t)-1;
    for (size_t k = 0; k < n_stops; k++) {
        size_t sl = strlen(stops[k]);
        if (sl == 0 || sl > d->n_pending) continue;
        const char *hit = memmem(d->pending, d->n_pending, stops[k], sl);
        if (hit && (size_t)(hit - d->pending) < best_pos) {
            best_pos = (size_t)(hit - d->pending);
            r->stop_index = (int)k;
        }
    }
    if (r->stop_index >= 0) {
        size_t len;
        sanitize(d, d->pending, best_pos, 0, &len);
        d->n_pending = 0;
        r->text = d->out;
        r->len = len;
        return SL_OK;
    }
    /* Hold back the longest suffix that is a proper prefix of some stop string. */
    size_t hold = 0;
    for (size_t k = 0; k < n_stops; k++) {
        size_t sl = strlen(stops[k]);
        size_t max = SL_MIN(sl - (sl > 0), d->n_pending);
        for (size_t h = max; h > hold; h--) {
            if (memcmp(d->pending + d->n_pending - h, stops[k], h) == 0) {
                hold = h;
                break;
            }
        }
    }
    size_t len;
    size_t used = sanitize(d, d->pending, d->n_pending - hold, 1, &len);
    consume(d, used);
    r->text = d->out ? d->out : "";
    r->len = len;
    return SL_OK;
}

sl_status sl_detok_flush(sl_detok *d, sl_detok_result *r) {
    r->stop_index = -1;
    size_t len;
    sanitize(d, d->pending ? d->pending : "", d->n_pending, 0, &len);
    d->n_pending = 0;
    r->text = d->out ? d->out : "";
    r->len = d->out ? len : 0;
    return SL_OK;
}
