/*
 * tok_spm.c — SentencePiece BPE (tokenizer.ggml.model "llama"), as llama.cpp's llm_tokenizer_spm_session.
 *
 * A raw fragment gets "▁" (U+2581) in place of every space, plus one in front when add_space_prefix is set
 * and the fragment starts the text or follows a special token. It is then cut into UTF-8 characters (an
 * invalid byte alone), and
 * adjacent symbols are merged while some adjacent pair spells a vocabulary token, always the pair whose token
 * has the highest score (leftmost among equals); a binary heap of candidate pairs keeps that O(n log n).
 * Symbols left that are not tokens fall back to byte tokens <0xXX>.
 *
 * llama.cpp also keeps a rev_merge map to re-split symbols that are not tokens; every merged symbol spells a
 * token by construction, so only unmerged characters ever miss, and those go to bytes either way.
 */
#include <stdlib.h>
#include <string.h>

#include "sl_util.h"
#include "tok_impl.h"
#include "unicode.h"

#define SPM_SPACE "\xe2\x96\x81" /* U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible space */
#define SPM_SPACE_LEN 3

sl_status sl__tok_spm_init(sl_tokenizer *t) {
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        /* llama.cpp's byte_to_token: "<0xAB>", else the byte itself as a one-byte token; we add unk before
         * giving up (llama.cpp throws there). */
        char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        char one = (char)b;
        int32_t id = sl__tok_lookup(t, name, sizeof(name));
        if (id < 0) id = sl__tok_lookup(t, &one, 1);
        if (id < 0) id = t->unk;
        t->byte_tok[b] = id;
    }
    return SL_OK;
}

typedef struct spm_sym {
    int32_t start, n; /* bytes of the escaped text; n = 0 once merged into the left neighbour */
    int32_t prev, next;
} spm_sym;

typedef struct spm_scratch {
    char *buf;      /* [escaped bytes] the fragment with each space as "▁" (3 bytes), plus the prefix */
    spm_sym *sym;   /* [escaped bytes] */
    sl_tok_pair *heap; /* [3 * escaped bytes]: n - 1 initial pairs plus at most 2 per merge */
    size_t cap, n_heap;
} spm_scratch;

static sl_status scratch_reserve(spm_scratch *s, size_t escaped) {
    if (escaped <= s->cap) return SL_OK;
    free(s->buf);
    free(s->sym);
    free(s->heap);
    s->buf = sl__malloc(escaped);
    s->sym = sl__malloc(escaped * sizeof(*s->sym));
    s->heap = sl__malloc(3 * escaped * sizeof(*s->heap));
    s->cap = escaped;
    if (!s->buf || !s->sym || !s->heap) {
        s->cap = 0;
        return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: scratch for %zu bytes", escaped);
    }
    return SL_OK;
}

static void add_pair(const sl_tokenizer *t, spm_scratch *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const spm_sym *l = &s->sym[left], *r = &s->sym[right];
    size_t n = (size_t)l->n + (size_t)r->n;
    /* Symbols are contiguous in buf, so the pair's text is one span starting at the left symbol. */
    int32_t id = sl__tok_lookup(t, s->buf + l->start, n);
    if (id < 0) return;
    SL_ASSERT(s->n_heap < 3 * s->cap);
    sl_tok_heap_push(s->heap, &s->n_heap, (sl_tok_pair){-t->score[id], left, right, (int32_t)n});
}

static sl_status encode_fragment(const sl_tokenizer *t, spm_scratch *s, const char *text, size_t len, int prefix,
                                 sl_tok_ids *out) {
    size_t n_spaces = 0;
    for (size_t i = 0; i < len; i++) n_spaces += text[i] == ' ';
    size_t n = len + (SPM_SPACE_LEN - 1) * n_spaces + (prefix ? SPM_SPACE_LEN : 0);
    sl_status st = scratch_reserve(s, n);
    if (st != SL_OK) return st;
    size_t k = 0;
    if (prefix) {
        memcpy(s->buf, SPM_SPACE, SPM_SPACE_LEN);
        k = SPM_SPACE_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s->buf + k, SPM_SPACE, SPM_SPACE_LEN);
            k += SPM_SPACE_LEN;
        } else {
            s->buf[k++] = text[i];
        }
    }
    SL_ASSERT(k == n);

    /* One symbol per character. llama.cpp sizes a character by its first byte alone, so a stray lead byte
     * swallows the next bytes, "▁" included, and the text comes back altered; decoding strictly gives valid
     * text the same symbols and keeps every invalid byte on its own. */
    int32_t n_sym = 0;
    for (size_t i = 0; i < n; n_sym++) {
        uint32_t cp;
        size_t cl = sl_utf8_decode((const unsigned char *)s->buf + i, n - i, &cp);
        s->sym[n_sym] = (spm_sym){(int32_t)i, (int32_t)cl, n_sym - 1, i + cl < n ? n_sym + 1 : -1};
        i += cl;
    }
    s->n_heap = 0;
    for (int32_t i = 1; i < n_sym; i++) add_pair(t, s, i - 1, i);
    while (s->n_heap > 0) {
        sl_tok_pair p = sl_tok_heap_pop(s->heap, &s->n_heap);
        spm_sym *l = &s->sym[p.left], *r = &s->sym[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->sym[r->next].prev = p.left;
        add_pair(t, s, l->prev, p.left);
        add_pair(t, s, p.left, l->next);
    }
    for (int32_t i = n_sym > 0 ? 0 : -1; i >= 0; i = s->sym[i].next) {
        const spm_sym *y = &s->sym[i];
        int32_t id = sl__tok_lookup(t, s->buf + y->start, (size_t)y->n);
        if (id >= 0) {
            if ((st = sl__tok_ids_push(out, id)) != SL_OK) return st;
            continue;
        }
        for (int32_t b = 0; b < y->n; b++) {
            int32_t bid = t->byte_tok[(unsigned char)s->buf[y->start + b]];
            if (bid >= 0 && (st = sl__tok_ids_push(out, bid)) != SL_OK) return st;
        }
    }
    return SL_OK;
}

sl_status sl__tok_spm_encode(const sl_tokenizer *t, const char *text, const sl_tok_frag *frags, size_t n_frags,
                             sl_tok_ids *out) {
    spm_scratch s = {0};
    sl_status st = SL_OK;
    int prev_special = 1; /* the text's start counts as "after a special token": it gets the prefix */
    for (size_t f = 0; f < n_frags && st == SL_OK; f++) {
        if (frags[f].token >= 0) {
            st = sl__tok_ids_push(out, frags[f].token);
            prev_special = 1;
        } else {
            st = encode_fragment(t, &s, text + frags[f].off, frags[f].len, t->add_space_prefix && prev_special, out);
            prev_special = 0;
        }
    }
    free(s.buf);
    free(s.sym);
    free(s.heap);
    return st;
}
