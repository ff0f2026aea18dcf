/*
 * tokenizer.c — building a tokenizer (from arrays or from a GGUF), special tokens, and decoding.
 *
 * The rules are llama.cpp's (llama-vocab.cpp), since GGUF files are converted for it:
 *   - token types become attributes; tokens whose text llama.cpp knows as end-of-generation ("<|im_end|>",
 *     "<|endoftext|>", ...) are marked EOG and, like llama.cpp does, CONTROL even when the file says NORMAL;
 *   - with SL_TOKENIZE_PARSE_SPECIAL, the text is first cut at occurrences of CONTROL, USER_DEFINED and
 *     UNKNOWN tokens, one token at a time from the longest text to the shortest (llama.cpp's
 *     tokenizer_st_partition); the raw pieces between them go to the model's encoder (tok_bpe.c, tok_spm.c);
 *   - every token's decoded bytes ("piece") are computed once at creation, so decoding is concatenation.
 * Deliberate differences, each for the server's sake: USER_DEFINED text is matched only with
 * PARSE_SPECIAL (llama.cpp always matches it), so client text can never smuggle in a special token;
 * decoding never applies llama.cpp's clean_up_tokenization_spaces, so decode(encode(s)) == s.
 */
#include <stdlib.h>
#include <string.h>

#include "sl_util.h"
#include "tok_impl.h"

/* DeepSeek's "<｜end▁of▁sentence｜>" (fullwidth bars, U+2581 for spaces); octal escapes, since a hex escape
 * would swallow the letters after it. */
#define SL_TOK_DEEPSEEK_EOS "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>"

/* Texts llama.cpp treats as the end-of-turn token when the file names none, in the order we prefer them
 * (llama.cpp takes whichever its hash map yields first). */
static const char *const sl_eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", SL_TOK_DEEPSEEK_EOS, "<end_of_utterance>",
};
/* Texts of tokens that end generation (llama.cpp's special_eog_ids list, less its model-specific hacks). */
static const char *const sl_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
    "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
    SL_TOK_DEEPSEEK_EOS,
};

uint64_t sl__tok_hash(const char *s, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull; /* FNV-1a 64-bit prime */
    }
    return h;
}

sl_status sl__tok_ids_push(sl_tok_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64; /* doubling: amortized O(1) per id from any start */
        int32_t *v = sl__realloc(ids->v, cap * sizeof(*v));
        if (!v) return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: %zu token ids", cap);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return SL_OK;
}

static inline const char *tok_text(const sl_tokenizer *t, int32_t id, size_t *len) {
    *len = t->text_off[id + 1] - t->text_off[id] - 1; /* each text is followed by its NUL */
    return t->text + t->text_off[id];
}

int32_t sl__tok_lookup(const sl_tokenizer *t, const char *s, size_t n) {
    if (n > t->max_token_len) return -1;
    uint64_t h = sl__tok_hash(s, n, SL_TOK_HASH_SEED);
    for (uint32_t i = (uint32_t)(h ^ (h >> 32)) & t->tok_mask;; i = (i + 1) & t->tok_mask) {
        int32_t id = t->tok_slots[i];
        if (id < 0) return -1;
        size_t len;
        const char *txt = tok_text(t, id, &len);
        if (len == n && memcmp(txt, s, n) == 0) return id;
    }
}

uint32_t sl__tok_table_size(uint64_t n) {
    uint64_t size = 16;
    while (size < 2 * n) size *= 2;
    return size > (1ull << 31) ? 0 : (uint32_t)size;
}

void sl_vocab_spec_init(sl_vocab_spec *spec) {
    memset(spec, 0, sizeof(*spec));
    spec->bos = spec->eos = spec->eot = spec->unk = -1;
    spec->add_bos = spec->add_eos = spec->add_space_prefix = -1;
}

void sl_tokenizer_free(sl_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->score);
    free(t->attr);
    free(t->tok_slots);
    free(t->piece);
    free(t->piece_off);
    free(t->merge_text);
    free(t->merge_off);
    free(t->merge_left_len);
    free(t->merge_slots);
    free(t->special);
    free(t);
}

static uint8_t attr_of_type(int32_t type) {
    switch (type) {
    case SL_TOKEN_TYPE_NORMAL: return SL_TOK_ATTR_NORMAL;
    case SL_TOKEN_TYPE_UNKNOWN: return SL_TOK_ATTR_UNKNOWN;
    case SL_TOKEN_TYPE_CONTROL: return SL_TOK_ATTR_CONTROL;
    case SL_TOKEN_TYPE_USER_DEFINED: return SL_TOK_ATTR_USER_DEFINED;
    case SL_TOKEN_TYPE_UNUSED: return SL_TOK_ATTR_UNUSED;
    case SL_TOKEN_TYPE_BYTE: return SL_TOK_ATTR_BYTE;
    default: return SL_TOK_ATTR_UNDEFINED;
    }
}

/* Copies the token texts, types and scores, and indexes the texts. */
static sl_status build_tokens(sl_tokenizer *t, const sl_vocab_spec *spec) {
    int32_t n = spec->n_tokens;
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!spec->tokens[i] && spec->token_lens[i])
            return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: token %d has no text", i);
        /* One token text of 4 GiB or more is not a vocabulary; the bound keeps lengths in 32 bits. */
        if (spec->token_lens[i] >= UINT32_MAX || !sl__add_size(total, spec->token_lens[i] + 1, &total))
            return sl__errorf(SL_BAD_FORMAT, "tokenizer: token texts are too large");
    }
    t->text = sl__malloc(total);
    t->text_off = sl__malloc(((size_t)n + 1) * sizeof(*t->text_off));
    t->score = sl__calloc((size_t)n, sizeof(*t->score));
    t->attr = sl__malloc((size_t)n);
    uint32_t slots = sl__tok_table_size((uint64_t)n);
    if (!slots) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %d tokens are too many", n);
    t->tok_mask = slots - 1;
    t->tok_slots = sl__malloc((size_t)slots * sizeof(*t->tok_slots));
    if (!t->text || !t->text_off || !t->score || !t->attr || !t->tok_slots)
        return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: vocabulary of %d tokens", n);
    memset(t->tok_slots, 0xff, ((size_t)t->tok_mask + 1) * sizeof(*t->tok_slots)); /* all -1 */

    size_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t len = spec->token_lens[i];
        t->text_off[i] = off;
        if (len) memcpy(t->text + off, spec->tokens[i], len);
        t->text[off + len] = 0;
        off += len + 1;
        if (len > t->max_token_len) t->max_token_len = len;
        t->score[i] = spec->scores ? spec->scores[i] : 0.0f;
        t->attr[i] = spec->types ? attr_of_type(spec->types[i]) : SL_TOK_ATTR_NORMAL;
    }
    t->text_off[n] = off;

    for (int32_t i = 0; i < n; i++) {
        size_t len;
        const char *txt = tok_text(t, i, &len);
        if (len == 0) continue; /* an empty entry can never be produced or looked up */
        uint64_t h = sl__tok_hash(txt, len, SL_TOK_HASH_SEED);
        uint32_t s = (uint32_t)(h ^ (h >> 32)) & t->tok_mask;
        for (; t->tok_slots[s] >= 0; s = (s + 1) & t->tok_mask) {
            size_t olen;
            const char *other = tok_text(t, t->tok_slots[s], &olen);
            if (olen == len && memcmp(other, txt, len) == 0)
                return sl__errorf(SL_BAD_FORMAT, "tokenizer: duplicate token in vocabulary: '%.*s' has ids %d and %d",
                                  (int)SL_MIN(len, SL_TOK_ERR_QUOTE), txt, t->tok_slots[s], i);
        }
        t->tok_slots[s] = i;
    }
    return SL_OK;
}

/* End-of-turn and end-of-generation tokens, as llama.cpp finds them. */
static void mark_eog(sl_tokenizer *t) {
    if (t->eot < 0) {
        for (size_t i = 0; i < SL_ARRAY_LEN(sl_eot_texts) && t->eot < 0; i++)
            t->eot = sl__tok_lookup(t, sl_eot_texts[i], strlen(sl_eot_texts[i]));
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(sl_eog_texts); i++) {
        int32_t id = sl__tok_lookup(t, sl_eog_texts[i], strlen(sl_eog_texts[i]));
        /* llama.cpp: a control-looking token that is not CONTROL is a conversion bug; it becomes CONTROL. */
        if (id >= 0) t->attr[id] |= SL_TOK_ATTR_EOG | SL_TOK_ATTR_CONTROL;
    }
    if (t->eot >= 0) t->attr[t->eot] |= SL_TOK_ATTR_EOG | SL_TOK_ATTR_CONTROL;
    if (t->eos >= 0) t->attr[t->eos] |= SL_TOK_ATTR_EOG;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static sl_status build_specials(sl_tokenizer *t) {
    int32_t n = 0;
    for (int32_t i = 0; i < t->n_tokens; i++)
        if ((t->attr[i] & SL_TOK_ATTR_SPECIAL) && t->text_off[i + 1] - t->text_off[i] > 1) n++;
    /* Sort keys: (UINT32_MAX - text length) in the high half, the id in the low half, so ascending order is
     * longest first, then lowest id. Token texts longer than 4 GiB do not exist (build_tokens bounds them). */
    uint64_t *keys = sl__malloc((size_t)(n ? n : 1) * sizeof(*keys));
    t->special = sl__malloc((size_t)(n ? n : 1) * sizeof(*t->special));
    if (!keys || !t->special) {
        free(keys);
        return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: %d special tokens", n);
    }
    t->n_special = 0;
    for (int32_t i = 0; i < t->n_tokens; i++) {
        size_t len = t->text_off[i + 1] - t->text_off[i] - 1;
        if ((t->attr[i] & SL_TOK_ATTR_SPECIAL) && len > 0)
            keys[t->n_special++] = (uint64_t)(UINT32_MAX - (uint32_t)len) << 32 | (uint32_t)i;
    }
    qsort(keys, (size_t)t->n_special, sizeof(*keys), cmp_u64);
    for (int32_t i = 0; i < t->n_special; i++) t->special[i] = (int32_t)(keys[i] & 0xffffffffu);
    free(keys);
    return SL_OK;
}

/* "<0xAB>" -> 0xAB; -1 if the text is not of that form. */
static int parse_byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* The bytes every token decodes to, computed once (llama.cpp's cache_token_to_piece). */
static sl_status build_pieces(sl_tokenizer *t) {
    /* Decoding never makes a token longer (byte-level chars and "▁" shrink, <0xXX> becomes one byte). */
    t->piece = sl__malloc(t->text_off[t->n_tokens] ? t->text_off[t->n_tokens] : 1);
    t->piece_off = sl__malloc(((size_t)t->n_tokens + 1) * sizeof(*t->piece_off));
    if (!t->piece || !t->piece_off) return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: token pieces");
    size_t off = 0;
    for (int32_t id = 0; id < t->n_tokens; id++) {
        size_t len;
        const char *txt = tok_text(t, id, &len);
        char *dst = t->piece + off;
        uint8_t a = t->attr[id];
        t->piece_off[id] = off;
        if (a & SL_TOK_ATTR_SPECIAL) {
            memcpy(dst, txt, len);
            off += len;
        } else if (a & SL_TOK_ATTR_NORMAL) {
            if (t->kind == SL_TOK_BPE) {
                off += sl__tok_bpe_piece(t, id, dst);
            } else {
                for (size_t i = 0; i < len; i++) {
                    if (i + 3 <= len && memcmp(txt + i, "\xe2\x96\x81", 3) == 0) { /* U+2581 "▁" */
                        dst[0] = ' ';
                        i += 2;
                    } else {
                        dst[0] = txt[i];
                    }
                    dst++;
                    off++;
                }
            }
        } else if (a & SL_TOK_ATTR_BYTE) {
            int byte = parse_byte_token(txt, len);
            if (byte >= 0) {
                dst[0] = (char)byte;
                off += 1;
            } else {
                memcpy(dst, txt, len);
                off += len;
            }
        }
        /* UNUSED and UNDEFINED tokens decode to nothing, as in llama.cpp. */
    }
    t->piece_off[t->n_tokens] = off;
    return SL_OK;
}

static int id_ok(int32_t id, int32_t n) { return id >= -1 && id < n; }

sl_status sl_tokenizer_create(const sl_vocab_spec *spec, sl_tokenizer **out) {
    if (!out) return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: NULL out");
    *out = NULL;
    if (!spec || !spec->model) return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: no model name");
    if (spec->n_tokens <= 0 || !spec->tokens || !spec->token_lens)
        return sl__errorf(SL_BAD_FORMAT, "tokenizer: the vocabulary is empty");
    if (spec->n_tokens == INT32_MAX) return sl__errorf(SL_BAD_FORMAT, "tokenizer: too many tokens");
    if (!id_ok(spec->bos, spec->n_tokens) || !id_ok(spec->eos, spec->n_tokens) ||
        !id_ok(spec->eot, spec->n_tokens) || !id_ok(spec->unk, spec->n_tokens))
        return sl__errorf(SL_BAD_FORMAT, "tokenizer: a special token id (bos %d, eos %d, eot %d, unk %d) is outside "
                          "the vocabulary of %d tokens", spec->bos, spec->eos, spec->eot, spec->unk, spec->n_tokens);

    sl_tokenizer *t = sl__calloc(1, sizeof(*t));
    if (!t) return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer");
    sl_status st;
    if (strcmp(spec->model, "gpt2") == 0) {
        t->kind = SL_TOK_BPE;
        const char *pre = spec->pre ? spec->pre : "default";
        if (!strcmp(pre, "gpt-2") || !strcmp(pre, "gpt2") || !strcmp(pre, "default")) {
            t->pre = SL_TOK_PRE_GPT2;
        } else if (!strcmp(pre, "smollm")) {
            t->pre = SL_TOK_PRE_SMOLLM;
        } else {
            st = sl__errorf(SL_UNSUPPORTED, "tokenizer: pre-tokenizer '%s' is not supported (supported: gpt-2, default, "
                            "smollm)", pre);
            goto fail;
        }
    } else if (strcmp(spec->model, "llama") == 0) {
        t->kind = SL_TOK_SPM;
    } else {
        st = sl__errorf(SL_UNSUPPORTED, "tokenizer: model '%s' is not supported (supported: gpt2 = byte-level BPE, "
                        "llama = SentencePiece)", spec->model);
        goto fail;
    }
    t->n_tokens = spec->n_tokens;
    t->bos = spec->bos;
    t->eos = spec->eos;
    t->eot = spec->eot;
    t->unk = spec->unk;
    t->add_bos = spec->add_bos >= 0 ? !!spec->add_bos : t->kind == SL_TOK_SPM;
    t->add_eos = spec->add_eos >= 0 ? !!spec->add_eos : 0;
    t->add_space_prefix = t->kind == SL_TOK_SPM && (spec->add_space_prefix < 0 || spec->add_space_prefix);
    if (t->add_bos && t->bos < 0) {
        st = sl__errorf(SL_BAD_FORMAT, "tokenizer: add_bos_token is true but there is no BOS token");
        goto fail;
    }
    if (t->add_eos && t->eos < 0) {
        st = sl__errorf(SL_BAD_FORMAT, "tokenizer: add_eos_token is true but there is no EOS token");
        goto fail;
    }

    if ((st = build_tokens(t, spec)) != SL_OK) goto fail;
    mark_eog(t);
    if ((st = build_specials(t)) != SL_OK) goto fail;
    st = t->kind == SL_TOK_BPE ? sl__tok_bpe_init(t, spec) : sl__tok_spm_init(t);
    if (st != SL_OK) goto fail;
    if ((st = build_pieces(t)) != SL_OK) goto fail;
    *out = t;
    return SL_OK;
fail:
    sl_tokenizer_free(t);
    return st;
}

/* ---- GGUF loader -------------------------------------------------------------------------------------- */

/* Reads an optional id key: -1 when absent or outside the vocabulary (llama.cpp warns and ignores those). */
static sl_status load_id(const sl_gguf *g, const char *key, int32_t n_tokens, int32_t *id) {
    int64_t v;
    sl_status st = sl_gguf_get_i64(g, key, &v);
    if (st == SL_NOT_FOUND) return SL_OK;
    if (st != SL_OK) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s is not an integer", key);
    *id = v >= 0 && v < n_tokens ? (int32_t)v : -1;
    return SL_OK;
}

static sl_status load_flag(const sl_gguf *g, const char *key, int *flag) {
    int v;
    sl_status st = sl_gguf_get_bool(g, key, &v);
    if (st == SL_NOT_FOUND) return SL_OK;
    if (st != SL_OK) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s is not a boolean", key);
    *flag = !!v;
    return SL_OK;
}

/* A string array's elements as (pointer, length) pairs into the mapping (*strs and *lens allocated); more
 * than n_max elements is an error. */
static sl_status load_str_array(const sl_gguf *g, const char *key, uint64_t n_max, const char ***strs,
                                size_t **lens, uint64_t *n_out) {
    sl_gguf_type et;
    uint64_t n;
    sl_status st = sl_gguf_get_arr(g, key, &et, &n);
    if (st == SL_NOT_FOUND) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s is missing", key);
    if (st != SL_OK || et != SL_GGUF_STRING) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s is not an array of strings", key);
    if (n > n_max) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s has %llu entries (at most %llu)", key,
                                     (unsigned long long)n, (unsigned long long)n_max);
    *strs = sl__malloc((size_t)(n ? n : 1) * sizeof(**strs));
    *lens = sl__malloc((size_t)(n ? n : 1) * sizeof(**lens));
    if (!*strs || !*lens) return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: %s", key);
    for (uint64_t i = 0; i < n; i++) {
        sl_gguf_str s;
        if (sl_gguf_arr_str(g, key, i, &s) != SL_OK)
            return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s[%llu] is unreadable", key, (unsigned long long)i);
        (*strs)[i] = s.data;
        (*lens)[i] = (size_t)s.len;
    }
    *n_out = n;
    return SL_OK;
}

/* A numeric array of at least n elements, converted to float (scores) or int32 (types). */
static sl_status load_num_array(const sl_gguf *g, const char *key, int32_t n, float *f, int32_t *i32) {
    sl_gguf_type et;
    uint64_t len;
    sl_status st = sl_gguf_get_arr(g, key, &et, &len);
    if (st != SL_OK) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s is not an array", key);
    if (len < (uint64_t)n)
        return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s has %llu entries for %d tokens", key, (unsigned long long)len, n);
    int is_f32 = et == SL_GGUF_FLOAT32, is_i32 = et == SL_GGUF_INT32 || et == SL_GGUF_UINT32;
    if (f ? !(is_f32 || is_i32) : !is_i32) /* scores may be int32 (llama.cpp accepts both); types are int32 */
        return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s has elements of type %s", key, sl_gguf_type_name(et));
    for (int32_t k = 0; k < n; k++) {
        float fv = 0;
        int32_t iv = 0;
        st = is_f32 ? sl_gguf_arr_f32(g, key, (uint64_t)k, &fv) : sl_gguf_arr_i32(g, key, (uint64_t)k, &iv);
        if (st != SL_OK) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s[%d] is unreadable", key, k);
        if (f) f[k] = is_f32 ? fv : (float)iv;
        else i32[k] = iv;
    }
    return SL_OK;
}

/* A string key as a NUL-terminated copy in buf (truncated to its size); *present = 0 if absent. */
static sl_status load_name(const sl_gguf *g, const char *key, char *buf, size_t size, int *present) {
    sl_gguf_str s;
    sl_status st = sl_gguf_get_str(g, key, &s);
    *present = 0;
    if (st == SL_NOT_FOUND) return SL_OK;
    if (st != SL_OK) return sl__errorf(SL_BAD_FORMAT, "tokenizer: %s is not a string", key);
    size_t n = SL_MIN((size_t)s.len, size - 1);
    memcpy(buf, s.data, n);
    buf[n] = 0;
    *present = 1;
    return SL_OK;
}

sl_status sl_tokenizer_load(const sl_gguf *g, sl_tokenizer **out) {
    if (!out) return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: NULL out");
    *out = NULL;
    if (!g) return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: NULL gguf");

    /* Model and pre-tokenizer names are short identifiers ("gpt2", "smollm"); 64 bytes quote any of them. */
    char model[64], pre[64];
    int has_model, has_pre;
    sl_vocab_spec spec;
    sl_vocab_spec_init(&spec);
    const char **tokens = NULL, **merges = NULL;
    size_t *token_lens = NULL, *merge_lens = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    uint64_t n_tokens = 0, n_merges = 0;
    sl_status st;

    if ((st = load_name(g, "tokenizer.ggml.model", model, sizeof(model), &has_model)) != SL_OK) goto done;
    if (!has_model) {
        st = sl__errorf(SL_BAD_FORMAT, "tokenizer: tokenizer.ggml.model is missing (the file has no tokenizer)");
        goto done;
    }
    if ((st = load_name(g, "tokenizer.ggml.pre", pre, sizeof(pre), &has_pre)) != SL_OK) goto done;
    spec.model = model;
    spec.pre = has_pre ? pre : NULL;
    /* Refuse an unknown model before reading 100k strings for nothing. */
    if (strcmp(model, "gpt2") != 0 && strcmp(model, "llama") != 0) {
        st = sl__errorf(SL_UNSUPPORTED, "tokenizer: model '%s' is not supported (supported: gpt2 = byte-level BPE, "
                        "llama = SentencePiece)", model);
        goto done;
    }

    /* Ids are int32 and one value stays free for "none". */
    if ((st = load_str_array(g, "tokenizer.ggml.tokens", INT32_MAX - 1, &tokens, &token_lens, &n_tokens)) != SL_OK)
        goto done;
    if (n_tokens == 0) {
        st = sl__errorf(SL_BAD_FORMAT, "tokenizer: tokenizer.ggml.tokens is empty");
        goto done;
    }
    spec.n_tokens = (int32_t)n_tokens;
    spec.tokens = tokens;
    spec.token_lens = token_lens;

    if (sl_gguf_find_kv(g, "tokenizer.ggml.scores")) {
        if (!(scores = sl__malloc(n_tokens * sizeof(*scores)))) {
            st = sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: scores");
            goto done;
        }
        if ((st = load_num_array(g, "tokenizer.ggml.scores", spec.n_tokens, scores, NULL)) != SL_OK) goto done;
        spec.scores = scores;
    }
    if (sl_gguf_find_kv(g, "tokenizer.ggml.token_type")) {
        if (!(types = sl__malloc(n_tokens * sizeof(*types)))) {
            st = sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: token types");
            goto done;
        }
        if ((st = load_num_array(g, "tokenizer.ggml.token_type", spec.n_tokens, NULL, types)) != SL_OK) goto done;
        spec.types = types;
    }
    if (strcmp(model, "gpt2") == 0) {
        if ((st = load_str_array(g, "tokenizer.ggml.merges", INT32_MAX - 1, &merges, &merge_lens, &n_merges)) != SL_OK)
            goto done;
        spec.n_merges = (int64_t)n_merges;
        spec.merges = merges;
        spec.merge_lens = merge_lens;
    } else {
        /* llama.cpp's defaults for SentencePiece vocabularies that do not name their special tokens. */
        spec.unk = 0;
        spec.bos = spec.n_tokens > 1 ? 1 : -1;
        spec.eos = spec.n_tokens > 2 ? 2 : -1;
    }
    if ((st = load_id(g, "tokenizer.ggml.bos_token_id", spec.n_tokens, &spec.bos)) != SL_OK ||
        (st = load_id(g, "tokenizer.ggml.eos_token_id", spec.n_tokens, &spec.eos)) != SL_OK ||
        (st = load_id(g, "tokenizer.ggml.eot_token_id", spec.n_tokens, &spec.eot)) != SL_OK ||
        (st = load_id(g, "tokenizer.ggml.unknown_token_id", spec.n_tokens, &spec.unk)) != SL_OK ||
        (st = load_flag(g, "tokenizer.ggml.add_bos_token", &spec.add_bos)) != SL_OK ||
        (st = load_flag(g, "tokenizer.ggml.add_eos_token", &spec.add_eos)) != SL_OK ||
        (st = load_flag(g, "tokenizer.ggml.add_space_prefix", &spec.add_space_prefix)) != SL_OK)
        goto done;

    st = sl_tokenizer_create(&spec, out);
done:
    free(tokens);
    free(token_lens);
    free(merges);
    free(merge_lens);
    free(scores);
    free(types);
    return st;
}

/* ---- queries ------------------------------------------------------------------------------------------ */

int sl_tokenizer_n_vocab(const sl_tokenizer *t) { return t->n_tokens; }
int32_t sl_tokenizer_bos(const sl_tokenizer *t) { return t->bos; }
int32_t sl_tokenizer_eos(const sl_tokenizer *t) { return t->eos; }
int32_t sl_tokenizer_eot(const sl_tokenizer *t) { return t->eot; }
int sl_tokenizer_add_bos(const sl_tokenizer *t) { return t->add_bos; }

int sl_tokenizer_is_control(const sl_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_tokens && (t->attr[id] & SL_TOK_ATTR_CONTROL);
}

int sl_tokenizer_is_eog(const sl_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_tokens && (t->attr[id] & SL_TOK_ATTR_EOG);
}

int32_t sl_tokenizer_token_id(const sl_tokenizer *t, const char *text, size_t len) {
    if (!text || len == 0) return -1;
    return sl__tok_lookup(t, text, len);
}

const char *sl_tokenizer_piece(const sl_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_tokens) {
        *len = 0;
        return NULL;
    }
    *len = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece + t->piece_off[id];
}

/* ---- encoding ----------------------------------------------------------------------------------------- */

typedef struct frag_list {
    sl_tok_frag *v;
    size_t n, cap;
} frag_list;

static sl_status frag_push(frag_list *l, size_t off, size_t len, int32_t token) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        sl_tok_frag *v = sl__realloc(l->v, cap * sizeof(*v));
        if (!v) return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: %zu text fragments", cap);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (sl_tok_frag){off, len, token};
    return SL_OK;
}

/* Cuts the text at special tokens, each token in turn from the longest (llama.cpp's tokenizer_st_partition:
 * a later, shorter token is looked for only in the raw text that earlier ones left). *frags is allocated. */
static sl_status split_specials(const sl_tokenizer *t, const char *text, size_t len, int parse_special,
                                frag_list *frags) {
    frag_list cur = {0}, next = {0};
    sl_status st = SL_OK;
    uint8_t *pairs = NULL;
    if (len == 0) goto out;
    if ((st = frag_push(&cur, 0, len, -1)) != SL_OK) goto out;
    if (!parse_special || t->n_special == 0) goto out;

    /* Which byte pairs occur in the text (a 64 Kibit set): a special token whose first two bytes never occur
     * together cannot be there, which skips most of the hundreds of reserved tokens some vocabularies have. */
    pairs = sl__calloc(65536 / 8, 1);
    if (!pairs) {
        st = sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: special-token scan");
        goto out;
    }
    for (size_t i = 0; i + 1 < len; i++) {
        unsigned p = (unsigned)(unsigned char)text[i] << 8 | (unsigned char)text[i + 1];
        pairs[p >> 3] |= (uint8_t)(1u << (p & 7));
    }
    for (int32_t k = 0; k < t->n_special; k++) {
        size_t tl;
        const char *tt = tok_text(t, t->special[k], &tl);
        if (tl > len) continue;
        if (tl >= 2) {
            unsigned p = (unsigned)(unsigned char)tt[0] << 8 | (unsigned char)tt[1];
            if (!(pairs[p >> 3] & (1u << (p & 7)))) continue;
        }
        next.n = 0;
        for (size_t f = 0; f < cur.n; f++) {
            sl_tok_frag fr = cur.v[f];
            if (fr.token >= 0) {
                if ((st = frag_push(&next, fr.off, fr.len, fr.token)) != SL_OK) goto out;
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            const char *hit;
            while (end - pos >= tl && (hit = memmem(text + pos, end - pos, tt, tl)) != NULL) {
                size_t at = (size_t)(hit - text);
                if (at > pos && (st = frag_push(&next, pos, at - pos, -1)) != SL_OK) goto out;
                if ((st = frag_push(&next, at, tl, t->special[k])) != SL_OK) goto out;
                pos = at + tl;
            }
            if (end > pos && (st = frag_push(&next, pos, end - pos, -1)) != SL_OK) goto out;
        }
        frag_list tmp = cur;
        cur = next;
        next = tmp;
    }
out:
    free(pairs);
    free(next.v);
    if (st != SL_OK) {
        free(cur.v);
        cur = (frag_list){0};
    }
    *frags = cur;
    return st;
}

/* Texts longer than this are refused: symbol indices inside the encoders are int32. */
#define SL_TOK_MAX_TEXT ((size_t)INT32_MAX / 4)

sl_status sl_tokenizer_encode(const sl_tokenizer *t, const char *text, size_t len, unsigned flags,
                              int32_t **ids_out, size_t *n_out) {
    if (!ids_out || !n_out) return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: NULL output");
    *ids_out = NULL;
    *n_out = 0;
    if (!t || (!text && len)) return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: NULL tokenizer or text");
    if (len > SL_TOK_MAX_TEXT)
        return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: text of %zu bytes is too long (at most %zu)", len,
                          SL_TOK_MAX_TEXT);

    sl_tok_ids ids = {0};
    frag_list frags = {0};
    sl_status st = split_specials(t, text, len, !!(flags & SL_TOKENIZE_PARSE_SPECIAL), &frags);
    if (st != SL_OK) goto fail;
    if ((flags & SL_TOKENIZE_ADD_SPECIAL) && t->add_bos && (st = sl__tok_ids_push(&ids, t->bos)) != SL_OK) goto fail;
    st = t->kind == SL_TOK_BPE ? sl__tok_bpe_encode(t, text, frags.v, frags.n, &ids)
                               : sl__tok_spm_encode(t, text, frags.v, frags.n, &ids);
    if (st != SL_OK) goto fail;
    if ((flags & SL_TOKENIZE_ADD_SPECIAL) && t->add_eos && (st = sl__tok_ids_push(&ids, t->eos)) != SL_OK) goto fail;
    if (!ids.v && !(ids.v = sl__malloc(sizeof(int32_t)))) {
        st = sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: ids");
        goto fail;
    }
    free(frags.v);
    *ids_out = ids.v;
    *n_out = ids.n;
    return SL_OK;
fail:
    free(frags.v);
    free(ids.v);
    return st;
}

/* ---- decoding ----------------------------------------------------------------------------------------- */

sl_status sl_tokenizer_decode(const sl_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                              char **text_out, size_t *len_out) {
    if (!text_out || !len_out) return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: NULL output");
    *text_out = NULL;
    *len_out = 0;
    if (!t || (!ids && n)) return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: NULL tokenizer or ids");
    int skip = !!(flags & SL_DETOKENIZE_SKIP_SPECIAL);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_tokens)
            return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: token id %d at position %zu is outside the vocabulary "
                              "of %d tokens", ids[i], i, t->n_tokens);
        if (!sl__add_size(total, t->piece_off[ids[i] + 1] - t->piece_off[ids[i]], &total) || total == SIZE_MAX)
            return sl__errorf(SL_INVALID_ARGUMENT, "tokenizer: decoded text too large");
    }
    char *buf = sl__malloc(total + 1);
    if (!buf) return sl__errorf(SL_OUT_OF_MEMORY, "tokenizer: %zu bytes of text", total + 1);
    size_t len = 0;
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip && (t->attr[id] & (SL_TOK_ATTR_CONTROL | SL_TOK_ATTR_UNKNOWN))) continue;
        size_t pl;
        const char *p = sl_tokenizer_piece(t, id, &pl);
        if (first && t->add_space_prefix && pl > 0 && p[0] == ' ') {
            p++;
            pl--;
        }
        first = 0;
        memcpy(buf + len, p, pl);
        len += pl;
    }
    buf[len] = 0;
    *text_out = buf;
    *len_out = len;
    return SL_OK;
}

/* ---- the merge heap both tokenizers share (tok_impl.h) ---- */
static inline int sl__pair_before(const sl_tok_pair *a, const sl_tok_pair *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

void sl_tok_heap_push(sl_tok_pair *heap, size_t *n, sl_tok_pair p) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!sl__pair_before(&p, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = p;
}

sl_tok_pair sl_tok_heap_pop(sl_tok_pair *heap, size_t *n) {
    sl_tok_pair top = heap[0], last = heap[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && sl__pair_before(&heap[c + 1], &heap[c])) c++;
        if (!sl__pair_before(&heap[c], &last)) break;
        heap[i] = heap[c];
        i = c;
    }
    if (m > 0) heap[i] = last;
    return top;
}
