/*
 * tok_impl.h — the inside of sl_tokenizer, shared by tokenizer.c (building, special tokens, decoding) and the
 * two encoders, tok_bpe.c (byte-level BPE) and tok_spm.c (SentencePiece). Nothing outside those files uses it.
 *
 * Everything here is written once by sl_tokenizer_create() and only read afterwards, which is what makes
 * concurrent encode/decode calls safe. Strings live in a few arenas indexed by offset arrays rather than in
 * one allocation per token: 49152 tokens are 3 allocations, not 49152.
 */
#ifndef SL_TOK_IMPL_H
#define SL_TOK_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef enum sl_tok_kind {
    SL_TOK_BPE = 0, /* byte-level BPE ("gpt2") */
    SL_TOK_SPM = 1, /* SentencePiece BPE ("llama") */
} sl_tok_kind;

typedef enum sl_tok_pre {
    SL_TOK_PRE_GPT2 = 0,   /* GPT-2's pattern */
    SL_TOK_PRE_SMOLLM = 1, /* every \p{N} split off first, then GPT-2's pattern */
} sl_tok_pre;

/* Per-token attribute bits: the token type as one bit (llama.cpp's llama_token_attr), plus EOG. */
#define SL_TOK_ATTR_UNDEFINED 0x00u
#define SL_TOK_ATTR_NORMAL 0x01u
#define SL_TOK_ATTR_UNKNOWN 0x02u
#define SL_TOK_ATTR_CONTROL 0x04u
#define SL_TOK_ATTR_USER_DEFINED 0x08u
#define SL_TOK_ATTR_UNUSED 0x10u
#define SL_TOK_ATTR_BYTE 0x20u
#define SL_TOK_ATTR_EOG 0x40u
/* Tokens whose text the special-token splitter looks for (with SL_TOKENIZE_PARSE_SPECIAL). */
#define SL_TOK_ATTR_SPECIAL (SL_TOK_ATTR_CONTROL | SL_TOK_ATTR_USER_DEFINED | SL_TOK_ATTR_UNKNOWN)

struct sl_tokenizer {
    sl_tok_kind kind;
    sl_tok_pre pre;
    int32_t n_tokens;

    char *text;          /* token texts back to back, each NUL-terminated, as stored in the vocabulary */
    size_t *text_off;    /* [n_tokens + 1]: token i is text[text_off[i] .. text_off[i+1] - 1) */
    size_t max_token_len;
    float *score;        /* [n_tokens] SentencePiece scores (0 for BPE) */
    uint8_t *attr;       /* [n_tokens] SL_TOK_ATTR_* */
    int32_t *tok_slots;  /* [tok_mask + 1] open-addressing hash of token text -> id, -1 = empty */
    uint32_t tok_mask;

    char *piece;         /* the bytes each token decodes to, back to back (not NUL-terminated) */
    size_t *piece_off;   /* [n_tokens + 1] */

    /* Byte-level BPE. Merge i (its rank) is "left right": merge_text[merge_off[i] .. merge_off[i+1]), with
     * the left part its first merge_left_len[i] bytes, then one space, then the right part. */
    int64_t n_merges;
    char *merge_text;
    size_t *merge_off;      /* [n_merges + 1] */
    uint32_t *merge_left_len; /* [n_merges] */
    int32_t *merge_slots;   /* [merge_mask + 1] hash of (left, right) -> rank, -1 = empty */
    uint32_t merge_mask;
    size_t max_merge_len;   /* longest left + right, in bytes */
    char byte_enc[256][2];  /* GPT-2's bytes_to_unicode: byte b is the UTF-8 byte_enc[b][0 .. byte_enc_len[b]) */
    uint8_t byte_enc_len[256];
    int16_t byte_dec[0x144]; /* the inverse, by codepoint (the mapping's image is below U+0144); -1 = none */

    /* SentencePiece: the token for each byte (<0xXX>, else the one-byte text, else unk; -1 = none). */
    int32_t byte_tok[256];
    int add_space_prefix;

    int32_t *special;       /* ids with SL_TOK_ATTR_SPECIAL, longest text first (ties: lower id first) */
    int32_t n_special;

    int32_t bos, eos, eot, unk;
    int add_bos, add_eos;
};

/* A growable array of ids (encode's output). */
typedef struct sl_tok_ids {
    int32_t *v;
    size_t n, cap;
} sl_tok_ids;

/* A piece of the input after special-token splitting: raw text [off, off + len), or one token. */
typedef struct sl_tok_frag {
    size_t off, len;
    int32_t token; /* -1 for raw text */
} sl_tok_frag;

/* Most bytes of a token or merge text quoted in an error message: enough to recognise it, short enough for
 * one log line. */
#define SL_TOK_ERR_QUOTE 48

sl_status sl__tok_ids_push(sl_tok_ids *ids, int32_t id);
uint64_t sl__tok_hash(const char *s, size_t n, uint64_t h);
#define SL_TOK_HASH_SEED 0xcbf29ce484222325ull /* FNV-1a 64-bit offset basis */
/* Slots of an open-addressing table for n keys: the smallest power of two >= 2n (a load factor of at most
 * 1/2 keeps linear probing short), at least 16; 0 if that exceeds 2^31. */
uint32_t sl__tok_table_size(uint64_t n);
/* Token id of an exact text, -1 if none. */
int32_t sl__tok_lookup(const sl_tokenizer *t, const char *s, size_t n);

/* Build the encoder-specific tables (called by sl_tokenizer_create after the token table exists). */
sl_status sl__tok_bpe_init(sl_tokenizer *t, const sl_vocab_spec *spec);
sl_status sl__tok_spm_init(sl_tokenizer *t);
/* Encode the fragments of text in order, appending to *out. */
sl_status sl__tok_bpe_encode(const sl_tokenizer *t, const char *text, const sl_tok_frag *frags, size_t n_frags,
                             sl_tok_ids *out);
sl_status sl__tok_spm_encode(const sl_tokenizer *t, const char *text, const sl_tok_frag *frags, size_t n_frags,
                             sl_tok_ids *out);
/* Writes the byte-level decoding of token id's text into buf (room for the token's length suffices: decoding
 * never grows it); returns the length. */
size_t sl__tok_bpe_piece(const sl_tokenizer *t, int32_t id, char *buf);

/* A candidate merge of two adjacent symbols, in the min-heap both merge loops (BPE, SentencePiece) share:
 * the lowest key merges first (BPE: the merge's rank; SentencePiece: the merged token's score, negated), ties
 * to the leftmost pair. Ranks are below 2^24, so a float key holds them exactly. */
typedef struct sl_tok_pair {
    float key;
    int32_t left, right; /* symbol indices */
    int32_t size;        /* left.n + right.n when the pair was made: a mismatch later means it is stale */
} sl_tok_pair;

/* heap: [*n] pairs in heap order, with room for one more on push. */
void sl_tok_heap_push(sl_tok_pair *heap, size_t *n, sl_tok_pair p);
sl_tok_pair sl_tok_heap_pop(sl_tok_pair *heap, size_t *n);

#endif /* SL_TOK_IMPL_H */
