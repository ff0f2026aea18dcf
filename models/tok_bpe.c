/*
 * tok_bpe.c — byte-level BPE (tokenizer.ggml.model "gpt2"): GPT-2's pre-tokenizer, byte-to-unicode
 * mapping and merges by rank, as llama.cpp's llm_tokenizer_bpe_session does it.
 *
 * Encoding a raw fragment goes:
 *   1. decode to codepoints with their class (letter, number, whitespace, or other); a byte that is not
 *      valid UTF-8 stays one "other" character, so it keeps its own byte-level token and decodes back to
 *      itself (llama.cpp would turn it into U+FFFD);
 *   2. split into words: for "smollm" every \p{N} codepoint alone first, then GPT-2's pattern
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      hand-coded after llama.cpp's unicode_regex_split_custom_gpt2 (no regex engine);
 *   3. map each byte of a word to its GPT-2 byte-level character, one symbol per byte, and merge the adjacent
 *      pair of lowest merge rank (leftmost among equals) until no pair has a rank; a binary heap of candidate
 *      pairs makes this O(n log n) per word, with stale candidates recognised by their size and skipped;
 *   4. each final symbol is a token; if not (a merge whose result is missing from the vocabulary), its
 *      characters are looked up one by one.
 * Merge ranks live in a hash of (left, right) strings built at creation: the file's merges are strings, and
 * nothing guarantees their parts are tokens.
 *
 * Pre-tokenizers: "gpt-2"/"gpt2" and "default" get GPT-2's pattern, "smollm" the digit split first. (For
 * "default", llama.cpp runs a longer chain -- punctuation runs, then GPT-2's pattern, then digit runs and
 * triples -- that no fixture covers; files converted this century name their pre-tokenizer.)
 */
#include <stdlib.h>
#include <string.h>

#include "sl_util.h"
#include "tok_impl.h"
#include "unicode.h"

/* Class bit of every codepoint inside the range being split, so "other" characters are told apart from
 * positions outside the range (llama.cpp's flags.as_uint() != 0). */
#define CLS_IN 8u
/* What cp_at() reports outside the range; distinct from every codepoint and from SL_UTF8_INVALID. */
#define CP_OUTSIDE 0xFFFFFFFEu

/* ---- creation ------------------------------------------------------------------------------------------ */

static uint64_t merge_hash(const char *l, size_t ln, const char *r, size_t rn) {
    uint64_t h = sl__tok_hash(l, ln, SL_TOK_HASH_SEED);
    h = (h ^ ln) * 0x100000001b3ull; /* the split point, so ("ab","c") and ("a","bc") hash apart */
    return sl__tok_hash(r, rn, h);
}

static int32_t merge_rank(const sl_tokenizer *t, const char *l, size_t ln, const char *r, size_t rn) {
    uint64_t h = merge_hash(l, ln, r, rn);
    for (uint32_t i = (uint32_t)(h ^ (h >> 32)) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        int32_t m = t->merge_slots[i];
        if (m < 0) return -1;
        const char *mt = t->merge_text + t->merge_off[m];
        size_t mln = t->merge_left_len[m], mrn = t->merge_off[m + 1] - t->merge_off[m] - mln - 1;
        if (mln == ln && mrn == rn && memcmp(mt, l, ln) == 0 && memcmp(mt + ln + 1, r, rn) == 0) return m;
    }
}

/* GPT-2's bytes_to_unicode(): the 188 printable bytes of Latin-1 stand for themselves, the other 68 are
 * given U+0100, U+0101, ... in byte order, so every byte is a visible character. */
static void build_byte_map(sl_tokenizer *t) {
    uint32_t next = 0x100;
    for (size_t i = 0; i < SL_ARRAY_LEN(t->byte_dec); i++) t->byte_dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        uint32_t cp = printable ? (uint32_t)b : next++;
        char enc[4];
        size_t n = sl_utf8_encode(cp, enc);
        SL_ASSERT(n <= 2 && cp < SL_ARRAY_LEN(t->byte_dec));
        memcpy(t->byte_enc[b], enc, n);
        t->byte_enc_len[b] = (uint8_t)n;
        t->byte_dec[cp] = (int16_t)b;
    }
}

sl_status sl__tok_bpe_init(sl_tokenizer *t, const sl_vocab_spec *spec) {
    build_byte_map(t);
    int64_t n = spec->n_merges;
    if (n < 0 || n >= INT32_MAX || (n && (!spec->merges || !spec->merge_lens)))
        return sl__errorf(SL_BAD_FORMAT, "tokenizer: bad number of merges (%lld)", (long long)n);
    /* The merge heap keys ranks as floats (tok_impl.h), exact below 2^24; real vocabularies have < 1M merges. */
    if (n > (1 << 24))
        return sl__errorf(SL_BAD_FORMAT, "tokenizer: %lld merges (at most %d)", (long long)n, 1 << 24);
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (spec->merge_lens[i] >= UINT32_MAX || !sl__add_size(total, spec->merge_lens[i], &total))
            return sl__errorf(SL_BAD_FORMAT, "tokenizer: merges are too large");
    }
    t->n_merges = n;
    t->merge_text = sl__malloc(total ? total : 1);
    t->merge_off = sl__malloc(((size_t)n + 1) * sizeof(*t->merge_off));
    t->merge_left_len = sl__malloc((size_t)(n ? n : 1) * sizeof(*t->merge_left_len));
    uint32_t size = sl__tok_table_size((uint64_t)n);
    if (!size) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %lld merges are too many", (long long)n);
    t->merge_mask = size - 1;
    t->merge_slots = sl__malloc((size_t)size * sizeof(*t->merge_slots));
    if (!t->merge_text || !t->merge_off || !t->merge_left_len || !t->merge_slots)
        return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: %lld merges", (long long)n);
    memset(t->merge_slots, 0xff, (size_t)size * sizeof(*t->merge_slots)); /* all -1 */

    size_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *m = spec->merges[i];
        size_t len = spec->merge_lens[i];
        /* "left right", split at the first space after the first byte (llama.cpp: word.find(' ', 1)). */
        const char *sp = len > 1 && m ? memchr(m + 1, ' ', len - 1) : NULL;
        if (!sp || sp == m + len - 1)
            return sl__errorf(SL_BAD_FORMAT, "tokenizer: tokenizer.ggml.merges[%lld] ('%.*s') is not two parts "
                              "separated by a space", (long long)i, (int)SL_MIN(len, SL_TOK_ERR_QUOTE), m ? m : "");
        size_t ln = (size_t)(sp - m), rn = len - ln - 1;
        t->merge_off[i] = off;
        t->merge_left_len[i] = (uint32_t)ln;
        memcpy(t->merge_text + off, m, len);
        off += len;
        if (ln + rn > t->max_merge_len) t->max_merge_len = ln + rn;

        /* A repeated pair keeps its first (lowest) rank, as llama.cpp's bpe_ranks.emplace does. */
        uint64_t h = merge_hash(m, ln, sp + 1, rn);
        uint32_t s = (uint32_t)(h ^ (h >> 32)) & t->merge_mask;
        int dup = 0;
        for (; t->merge_slots[s] >= 0; s = (s + 1) & t->merge_mask) {
            int32_t o = t->merge_slots[s];
            size_t oln = t->merge_left_len[o], olen = t->merge_off[o + 1] - t->merge_off[o];
            if (oln == ln && olen == len && memcmp(t->merge_text + t->merge_off[o], m, len) == 0) {
                dup = 1;
                break;
            }
        }
        t->merge_off[i + 1] = off; /* merge i's extent must be known before a later probe compares with it */
        if (!dup) t->merge_slots[s] = (int32_t)i;
    }
    t->merge_off[n] = off;
    return SL_OK;
}

size_t sl__tok_bpe_piece(const sl_tokenizer *t, int32_t id, char *buf) {
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_off[id + 1] - t->text_off[id] - 1, out = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = sl_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (cp < SL_ARRAY_LEN(t->byte_dec) && t->byte_dec[cp] >= 0) {
            buf[out++] = (char)t->byte_dec[cp];
        } else {
            /* Not a byte-level character (llama.cpp prints "[UNK_BYTE_...]"): keep the bytes as they are. */
            memcpy(buf + out, s + i, k);
            out += k;
        }
        i += k;
    }
    return out;
}

/* ---- encoding ------------------------------------------------------------------------------------------ */

typedef struct bpe_sym {
    int32_t start; /* byte offset of the symbol's text in the scratch word buffer */
    int32_t n;     /* its length in bytes; 0 once merged into its left neighbour */
    int32_t prev, next;
} bpe_sym;

/* Per-call scratch, grown to the largest fragment and word of the call, freed at its end. */
typedef struct bpe_scratch {
    uint32_t *cp;        /* [n_cp] codepoints of the fragment (SL_UTF8_INVALID for a stray byte) */
    uint32_t *off;       /* [n_cp + 1] byte offset of each codepoint within the fragment */
    uint8_t *cls;        /* [n_cp] SL_UCLASS_* | CLS_IN */
    int32_t *word_end;   /* [n_cp] codepoint index where each word ends */
    size_t cap_cp;
    size_t n_words;
    char *wbuf;          /* [2 * word bytes] the word in byte-level characters */
    bpe_sym *sym;        /* [word bytes] */
    sl_tok_pair *heap;      /* [3 * word bytes]: n - 1 initial pairs plus at most 2 per merge */
    size_t cap_word, n_heap;
} bpe_scratch;

static void scratch_free(bpe_scratch *s) {
    free(s->cp);
    free(s->off);
    free(s->cls);
    free(s->word_end);
    free(s->wbuf);
    free(s->sym);
    free(s->heap);
}

static sl_status scratch_fragment(bpe_scratch *s, size_t n) {
    if (n <= s->cap_cp) return SL_OK;
    free(s->cp);
    free(s->off);
    free(s->cls);
    free(s->word_end);
    s->cp = sl__malloc(n * sizeof(*s->cp));
    s->off = sl__malloc((n + 1) * sizeof(*s->off));
    s->cls = sl__malloc(n);
    s->word_end = sl__malloc(n * sizeof(*s->word_end));
    s->cap_cp = n;
    if (!s->cp || !s->off || !s->cls || !s->word_end) {
        s->cap_cp = 0;
        return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: scratch for %zu bytes", n);
    }
    return SL_OK;
}

static sl_status scratch_word(bpe_scratch *s, size_t n) {
    if (n <= s->cap_word) return SL_OK;
    free(s->wbuf);
    free(s->sym);
    free(s->heap);
    s->wbuf = sl__malloc(2 * n);
    s->sym = sl__malloc(n * sizeof(*s->sym));
    s->heap = sl__malloc(3 * n * sizeof(*s->heap));
    s->cap_word = n;
    if (!s->wbuf || !s->sym || !s->heap) {
        s->cap_word = 0;
        return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: scratch for a word of %zu bytes", n);
    }
    return SL_OK;
}

/* ---- pre-tokenizer ---- */

typedef struct split_range {
    const bpe_scratch *s;
    int32_t lo, hi; /* the codepoint range being split: lookups outside it see nothing */
} split_range;

static inline unsigned cls_at(const split_range *r, int32_t i) { return i >= r->lo && i < r->hi ? r->s->cls[i] : 0; }
static inline uint32_t cp_at(const split_range *r, int32_t i) { return i >= r->lo && i < r->hi ? r->s->cp[i] : CP_OUTSIDE; }

/* GPT-2's pattern over codepoints [lo, hi), appending word ends (llama.cpp's unicode_regex_split_custom_gpt2,
 * branch for branch). */
static void split_gpt2(bpe_scratch *s, int32_t lo, int32_t hi) {
    const split_range r = {s, lo, hi};
    const unsigned L = SL_UCLASS_LETTER, N = SL_UCLASS_NUMBER, W = SL_UCLASS_SPACE;
    int32_t pos = lo;
    while (pos < hi) {
        uint32_t c = cp_at(&r, pos);
        unsigned f = cls_at(&r, pos);
        /* 's|'t|'re|'ve|'m|'ll|'d */
        if (c == '\'' && pos + 1 < hi) {
            uint32_t c1 = cp_at(&r, pos + 1);
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                pos += 2;
                s->word_end[s->n_words++] = pos;
                continue;
            }
            if (pos + 2 < hi) {
                uint32_t c2 = cp_at(&r, pos + 2);
                if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                    pos += 3;
                    s->word_end[s->n_words++] = pos;
                    continue;
                }
            }
        }
        unsigned f2 = c == ' ' ? cls_at(&r, pos + 1) : f;
        /* ' ?\p{L}+' and ' ?\p{N}+' */
        if (f2 & (L | N)) {
            unsigned want = f2 & L ? L : N;
            pos += c == ' ';
            while (cls_at(&r, pos) & want) pos++;
            s->word_end[s->n_words++] = pos;
            continue;
        }
        /* ' ?[^\s\p{L}\p{N}]+' */
        if (!(f2 & (W | L | N)) && (f2 & CLS_IN)) {
            pos += c == ' ';
            while (!(f2 & (W | L | N)) && (f2 & CLS_IN)) f2 = cls_at(&r, ++pos);
            s->word_end[s->n_words++] = pos;
            continue;
        }
        int32_t n_ws = 0;
        while (cls_at(&r, pos + n_ws) & W) n_ws++;
        /* '\s+(?!\S)': a run of whitespace followed by more text leaves its last character to the next word */
        if (n_ws > 1 && cp_at(&r, pos + n_ws) != CP_OUTSIDE) {
            pos += n_ws - 1;
            s->word_end[s->n_words++] = pos;
            continue;
        }
        /* '\s+' */
        if (n_ws > 0) {
            pos += n_ws;
            s->word_end[s->n_words++] = pos;
            continue;
        }
        /* Unreachable with the classes above (every codepoint in range matches a branch); kept as in llama.cpp
         * so the loop always advances. */
        s->word_end[s->n_words++] = ++pos;
    }
}

/* Words of codepoints [0, n): smollm first isolates every \p{N} codepoint (tokenizers'
 * Digits(individual_digits=True)), then GPT-2's pattern runs inside each remaining stretch. */
static void split_words(const sl_tokenizer *t, bpe_scratch *s, int32_t n) {
    s->n_words = 0;
    if (t->pre == SL_TOK_PRE_GPT2) {
        split_gpt2(s, 0, n);
        return;
    }
    int32_t start = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!(s->cls[i] & SL_UCLASS_NUMBER)) continue;
        if (i > start) split_gpt2(s, start, i);
        s->word_end[s->n_words++] = i + 1;
        start = i + 1;
    }
    if (n > start) split_gpt2(s, start, n);
}

/* ---- merges ---- */

static void add_pair(const sl_tokenizer *t, bpe_scratch *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const bpe_sym *l = &s->sym[left], *r = &s->sym[right];
    if ((size_t)l->n + (size_t)r->n > t->max_merge_len) return; /* no merge is that long */
    int32_t rank = merge_rank(t, s->wbuf + l->start, (size_t)l->n, s->wbuf + r->start, (size_t)r->n);
    if (rank < 0) return;
    SL_ASSERT(s->n_heap < 3 * s->cap_word);
    sl_tok_heap_push(s->heap, &s->n_heap, (sl_tok_pair){(float)rank, left, right, l->n + r->n});
}

/* BPE of one word: bytes [w, w + n) of the text. */
static sl_status encode_word(const sl_tokenizer *t, bpe_scratch *s, const unsigned char *w, size_t n,
                             sl_tok_ids *out) {
    sl_status st = scratch_word(s, n);
    if (st != SL_OK) return st;
    int32_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        bpe_sym *y = &s->sym[i];
        y->start = pos;
        y->n = t->byte_enc_len[w[i]];
        y->prev = (int32_t)i - 1;
        y->next = i + 1 < n ? (int32_t)i + 1 : -1;
        memcpy(s->wbuf + pos, t->byte_enc[w[i]], (size_t)y->n);
        pos += y->n;
    }
    s->n_heap = 0;
    for (size_t i = 1; i < n; i++) add_pair(t, s, (int32_t)i - 1, (int32_t)i);
    while (s->n_heap > 0) {
        sl_tok_pair p = sl_tok_heap_pop(s->heap, &s->n_heap);
        bpe_sym *l = &s->sym[p.left], *r = &s->sym[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->sym[r->next].prev = p.left;
        add_pair(t, s, l->prev, p.left);
        add_pair(t, s, p.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next) {
        const bpe_sym *y = &s->sym[i];
        int32_t id = sl__tok_lookup(t, s->wbuf + y->start, (size_t)y->n);
        if (id >= 0) {
            if ((st = sl__tok_ids_push(out, id)) != SL_OK) return st;
            continue;
        }
        /* Not in the vocabulary: its byte-level characters one by one (llama.cpp looks up single raw bytes,
         * which loses every non-ASCII one; characters lose nothing where the vocabulary has all 256). */
        for (int32_t k = 0; k < y->n;) {
            uint32_t cp;
            size_t cl = sl_utf8_decode((const unsigned char *)s->wbuf + y->start + k, (size_t)(y->n - k), &cp);
            int32_t cid = sl__tok_lookup(t, s->wbuf + y->start + k, cl);
            if (cid >= 0 && (st = sl__tok_ids_push(out, cid)) != SL_OK) return st;
            k += (int32_t)cl;
        }
    }
    return SL_OK;
}

static sl_status encode_fragment(const sl_tokenizer *t, bpe_scratch *s, const unsigned char *text, size_t len,
                                 sl_tok_ids *out) {
    sl_status st = scratch_fragment(s, len);
    if (st != SL_OK) return st;
    int32_t n = 0;
    for (size_t i = 0; i < len; n++) {
        uint32_t cp;
        size_t k = sl_utf8_decode(text + i, len - i, &cp);
        s->cp[n] = cp;
        s->off[n] = (uint32_t)i;
        s->cls[n] = (uint8_t)(sl_unicode_class(cp) | CLS_IN); /* a stray byte is class 0: "other" */
        i += k;
    }
    s->off[n] = (uint32_t)len;
    split_words(t, s, n);
    int32_t begin = 0;
    for (size_t w = 0; w < s->n_words; w++) {
        int32_t end = s->word_end[w];
        SL_ASSERT(end > begin && end <= n);
        st = encode_word(t, s, text + s->off[begin], s->off[end] - s->off[begin], out);
        if (st != SL_OK) return st;
        begin = end;
    }
    SL_ASSERT(begin == n);
    return SL_OK;
}

sl_status sl__tok_bpe_encode(const sl_tokenizer *t, const char *text, const sl_tok_frag *frags, size_t n_frags,
                             sl_tok_ids *out) {
    bpe_scratch s = {0};
    sl_status st = SL_OK;
    for (size_t f = 0; f < n_frags && st == SL_OK; f++) {
        if (frags[f].token >= 0) {
            st = sl__tok_ids_push(out, frags[f].token);
        } else {
            st = encode_fragment(t, &s, (const unsigned char *)text + frags[f].off, frags[f].len, out);
        }
    }
    scratch_free(&s);
    return st;
}
