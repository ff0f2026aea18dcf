/*
 * detok.h — incremental detokenization and stop-string matching for one choice.
 *
 * Tokens arrive one at a time as raw bytes (a byte-level BPE token may be half of a UTF-8 character). The
 * detokenizer holds back (1) an incomplete UTF-8 sequence at the end, and (2) the longest suffix that could
 * still grow into a stop string, and emits the rest as a text delta. So a streamed choice never shows a broken
 * character nor any part of a stop string, and the joined deltas equal the non-streamed text. Bytes that can
 * never become valid UTF-8 are emitted as U+FFFD.
 */
#ifndef SL_DETOK_H
#define SL_DETOK_H

#include <stddef.h>

#include "sluice/sluice.h"

typedef struct sl_detok {
    char *pending;   /* bytes received but not yet emitted */
    size_t n_pending;
    size_t cap;
    char *out;       /* the last delta (valid UTF-8), owned here; valid until the next call */
    size_t out_cap;
} sl_detok;

typedef struct sl_detok_result {
    const char *text;  /* delta to emit now (may be empty) */
    size_t len;
    int stop_index;    /* index of the stop string matched, or -1 */
} sl_detok_result;

void sl_detok_init(sl_detok *d);
void sl_detok_free(sl_detok *d);
/* Adds a token's bytes; the result's text is what may be emitted now. When a stop string matches, the text
 * before it is emitted, the rest discarded, and stop_index set: the choice is finished. */
sl_status sl_detok_push(sl_detok *d, const char *bytes, size_t n, const char *const *stops, size_t n_stops,
                        sl_detok_result *r);
/* At the end of a choice: everything still held back (an incomplete character becomes U+FFFD). */
sl_status sl_detok_flush(sl_detok *d, sl_detok_result *r);

#endif
