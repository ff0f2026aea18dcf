/*
 * tokenizer.h — text to token ids and back, for the two families GGUF models use: byte-level BPE (GPT-2,
 * SmolLM, Llama-3 style vocabularies; tokenizer.ggml.model "gpt2") and SentencePiece BPE (Llama-2, Phi-3;
 * "llama"). The semantics follow llama.cpp's llama-vocab.cpp, which is what every GGUF was converted for,
 * and tests compare against its published expected ids and against the `tokenizers` library.
 *
 * Two layers: the core is built from plain arrays (sl_vocab_spec: token strings, scores, types, merges,
 * special ids), so it can be tested without any file; sl_tokenizer_load() is the thin loader that fills a
 * spec from a GGUF's tokenizer.ggml.* keys. The tokenizer copies what it needs, so the GGUF may be closed
 * after loading.
 *
 * After creation a tokenizer is immutable: encode, decode, piece and the queries may be called from several
 * threads at once on one tokenizer (every call keeps its scratch to itself).
 */
#ifndef SL_TOKENIZER_H
#define SL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "sluice/sluice.h"

typedef struct sl_tokenizer sl_tokenizer;

/* Token types as GGUF stores them in tokenizer.ggml.token_type (llama.cpp's llama_token_type). */
typedef enum sl_token_type {
    SL_TOKEN_TYPE_UNDEFINED = 0,
    SL_TOKEN_TYPE_NORMAL = 1,
    SL_TOKEN_TYPE_UNKNOWN = 2,
    SL_TOKEN_TYPE_CONTROL = 3,
    SL_TOKEN_TYPE_USER_DEFINED = 4,
    SL_TOKEN_TYPE_UNUSED = 5,
    SL_TOKEN_TYPE_BYTE = 6,
} sl_token_type;

/* Everything the core needs, as plain arrays. Strings are (pointer, length) pairs, not NUL-terminated, and
 * are copied by sl_tokenizer_create(). */
typedef struct sl_vocab_spec {
    const char *model;           /* "gpt2" (byte-level BPE) or "llama" (SentencePiece) */
    const char *pre;             /* BPE pre-tokenizer: "gpt-2"/"gpt2"/"default" or "smollm"; NULL = "default" */
    int32_t n_tokens;
    const char *const *tokens;   /* [n_tokens] token texts as stored in the vocabulary */
    const size_t *token_lens;    /* [n_tokens] */
    const float *scores;         /* [n_tokens] SentencePiece merge scores; NULL = all 0 */
    const int32_t *types;        /* [n_tokens] sl_token_type values; NULL = all NORMAL */
    int64_t n_merges;            /* BPE only: merges in rank order, each "left right" */
    const char *const *merges;   /* [n_merges] */
    const size_t *merge_lens;    /* [n_merges] */
    int32_t bos, eos, eot, unk;  /* ids, -1 = none (eot -1: found by text, e.g. "<|im_end|>") */
    int add_bos, add_eos;        /* -1 = the model's default (llama: BOS yes; gpt2: no), else 0/1 */
    int add_space_prefix;        /* SentencePiece: -1 = default (yes), else 0/1 */
} sl_vocab_spec;

/* Fills *spec with "no value" defaults (ids -1, flags -1, everything else 0/NULL). */
void sl_vocab_spec_init(sl_vocab_spec *spec);
/* Builds a tokenizer from arrays. SL_UNSUPPORTED for an unknown model or pre-tokenizer (the message names
 * it), SL_BAD_FORMAT for inconsistent data (duplicate tokens, malformed merges, bad ids). */
sl_status sl_tokenizer_create(const sl_vocab_spec *spec, sl_tokenizer **out);
/* Reads tokenizer.ggml.{model, pre, tokens, scores, token_type, merges, bos_token_id, eos_token_id,
 * eot_token_id, unknown_token_id, add_bos_token, add_eos_token, add_space_prefix} and creates the tokenizer.
 * A missing or malformed key, or an unsupported model or pre-tokenizer, is an error that names it. */
sl_status sl_tokenizer_load(const sl_gguf *g, sl_tokenizer **out);
void sl_tokenizer_free(sl_tokenizer *t);

int sl_tokenizer_n_vocab(const sl_tokenizer *t);
int32_t sl_tokenizer_bos(const sl_tokenizer *t); /* -1 if none */
int32_t sl_tokenizer_eos(const sl_tokenizer *t); /* -1 if none */
/* The end-of-turn token (tokenizer.ggml.eot_token_id, else the first present of "<|eot_id|>", "<|im_end|>",
 * "<|end|>", "<end_of_turn>", "<|endoftext|>", ...), -1 if none. */
int32_t sl_tokenizer_eot(const sl_tokenizer *t);
/* Whether prompts get BOS prepended (tokenizer.ggml.add_bos_token; default 1 for llama, 0 for gpt2). */
int sl_tokenizer_add_bos(const sl_tokenizer *t);
/* CONTROL tokens (BOS, EOS, "<|im_start|>", ...); 0 for ids out of range. */
int sl_tokenizer_is_control(const sl_tokenizer *t, int32_t id);
/* Tokens that end generation: EOS, the end-of-turn token, and llama.cpp's list of end-of-generation texts
 * ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", ...). */
int sl_tokenizer_is_eog(const sl_tokenizer *t, int32_t id);

/* Text to ids. flags: SL_TOKENIZE_ADD_SPECIAL (BOS first if add_bos, EOS last if add_eos),
 * SL_TOKENIZE_PARSE_SPECIAL (the text of CONTROL, USER_DEFINED and UNKNOWN tokens becomes those tokens,
 * longest first; without it such text is ordinary text). Any bytes are accepted: invalid UTF-8 is kept
 * byte by byte. *ids_out is allocated with sl__malloc (release with free/sl_free), even when *n_out is 0. */
sl_status sl_tokenizer_encode(const sl_tokenizer *t, const char *text, size_t len, unsigned flags,
                              int32_t **ids_out, size_t *n_out);
/* The bytes a token stands for: byte-level decoded for BPE; for SentencePiece "▁" becomes ' ' and <0xXX>
 * byte tokens that byte; CONTROL, UNKNOWN and USER_DEFINED tokens their text ("<|im_end|>"); UNUSED
 * tokens nothing. Never NULL for a valid id (*len may be 0); NULL and *len 0 for an id out of range. The
 * bytes live as long as the tokenizer and may be an incomplete piece of a UTF-8 sequence. */
const char *sl_tokenizer_piece(const sl_tokenizer *t, int32_t id, size_t *len);
/* Ids to text: the pieces concatenated. SL_DETOKENIZE_SKIP_SPECIAL drops CONTROL and UNKNOWN tokens. For
 * SentencePiece with add_space_prefix, the leading space of the first piece is removed (the prefix that
 * encoding added). An id out of range is SL_INVALID_ARGUMENT. *text_out is allocated (NUL-terminated;
 * release with free/sl_free). */
sl_status sl_tokenizer_decode(const sl_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                              char **text_out, size_t *len_out);
/* Exact lookup of a vocabulary entry by its stored text (e.g. "<|im_end|>", or "Ġthe" for byte-level BPE);
 * -1 if absent. */
int32_t sl_tokenizer_token_id(const sl_tokenizer *t, const char *text, size_t len);

#endif /* SL_TOKENIZER_H */
