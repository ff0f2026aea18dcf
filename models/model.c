/*
 * model.c — loading a GGUF into a model: hyperparameters (checked against sane bounds, since a file can
 * claim anything), the architecture's weights on a backend, the tokenizer and the chat template. Also the
 * text functions of model.h, which forward to the tokenizer and the template.
 */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "chat.h"
#include "comm.h"
#include "gguf.h"
#include "kcpu.h"
#include "llama.h"
#include "model.h"
#include "sl_util.h"
#include "tokenizer.h"

/* Tensor-parallel ranks of one model: the configuration's bound (include/sluice/config.h). */
#define SL_MODEL_MAX_TP 64

struct sl_model {
    sl_gguf *gguf;
    sl_model_hparams hp;
    int max_len;
    sl_backend backend;         /* tp = 1; unused (no iface) under tensor parallelism, each rank has its own */
    int tp;                     /* tensor-parallel ranks, >= 1 */
    int devices[SL_MODEL_MAX_TP]; /* [tp] each rank's device (SL_DEVICE_CPU or a CUDA ordinal) */
    const sl_model_iface *iface;
    void *ctx;
    sl_tokenizer *tok;
    sl_chat_template *chat; /* NULL when the model has none and no override was given */
};

/* Bounds on what a file may claim: generous for any real llama-family model, tight enough that sizes
 * computed from them cannot overflow (n_embd * n_ff * n_layer fits comfortably in 64 bits). */
#define SL_MAX_EMBD 65536
#define SL_MAX_LAYERS 512
#define SL_MAX_HEADS 1024
#define SL_MAX_HEAD_DIM SL_K_MAX_HEAD_DIM /* the kernels' bound (kcpu.h) */
#define SL_MAX_FF (1 << 20)
#define SL_MAX_VOCAB (1 << 22)
#define SL_MAX_CTX (1 << 24)

static sl_status read_u32(const sl_gguf *g, const char *key, int required, uint32_t dflt, uint32_t lo, uint32_t hi,
                          int *out) {
    uint32_t v = dflt;
    sl_status st = sl_gguf_get_u32(g, key, &v);
    if (st == SL_NOT_FOUND && !required) st = SL_OK;
    if (st == SL_NOT_FOUND) return sl__errorf(SL_BAD_FORMAT, "metadata key '%s' is missing", key);
    if (st != SL_OK) return sl__error_prefix(st, "metadata key '%s'", key);
    if (v < lo || v > hi) return sl__errorf(SL_BAD_FORMAT, "%s = %u is outside [%u, %u]", key, v, lo, hi);
    *out = (int)v;
    return SL_OK;
}

static sl_status read_f32(const sl_gguf *g, const char *key, float dflt, float lo, float hi, float *out) {
    float v = dflt;
    sl_status st = sl_gguf_get_f32(g, key, &v);
    if (st == SL_NOT_FOUND) st = SL_OK;
    if (st != SL_OK) return sl__error_prefix(st, "metadata key '%s'", key);
    if (!(v >= lo && v <= hi)) return sl__errorf(SL_BAD_FORMAT, "%s = %g is outside [%g, %g]", key, v, lo, hi);
    *out = v;
    return SL_OK;
}

static sl_status read_hparams(const sl_gguf *g, const char *path, sl_model_hparams *hp) {
    sl_gguf_str s;
    memset(hp, 0, sizeof *hp);
    if (sl_gguf_get_str(g, "general.architecture", &s) != SL_OK)
        return sl__errorf(SL_BAD_FORMAT, "general.architecture is missing");
    if (!sl_gguf_str_eq(s, "llama"))
        return sl__errorf(SL_UNSUPPORTED, "architecture '%.*s' is not supported (supported: llama)",
                          (int)SL_MIN(s.len, 64), s.data);
    snprintf(hp->architecture, sizeof hp->architecture, "llama");
    if (sl_gguf_get_str(g, "general.name", &s) == SL_OK && s.len > 0) {
        snprintf(hp->name, sizeof hp->name, "%.*s", (int)SL_MIN(s.len, sizeof hp->name - 1), s.data);
    } else {
        const char *base = strrchr(path, '/');
        snprintf(hp->name, sizeof hp->name, "%s", base ? base + 1 : path);
    }
    sl_status st;
#define U32(key, req, dflt, lo, hi, field)                                                                           \
    if ((st = read_u32(g, key, req, dflt, lo, hi, &hp->field)) != SL_OK) return st
    U32("llama.embedding_length", 1, 0, 1, SL_MAX_EMBD, n_embd);
    U32("llama.block_count", 1, 0, 1, SL_MAX_LAYERS, n_layer);
    U32("llama.attention.head_count", 1, 0, 1, SL_MAX_HEADS, n_head);
    U32("llama.attention.head_count_kv", 0, (uint32_t)hp->n_head, 1, SL_MAX_HEADS, n_head_kv);
    U32("llama.feed_forward_length", 1, 0, 1, SL_MAX_FF, n_ff);
    U32("llama.context_length", 0, 2048, 1, SL_MAX_CTX, n_ctx_train);
    U32("llama.attention.key_length", 0, (uint32_t)(hp->n_embd / hp->n_head), 2, SL_MAX_HEAD_DIM, head_dim);
    U32("llama.rope.dimension_count", 0, (uint32_t)hp->head_dim, 2, (uint32_t)hp->head_dim, n_rot);
#undef U32
    if (hp->n_head % hp->n_head_kv != 0)
        return sl__errorf(SL_BAD_FORMAT, "head_count %d is not a multiple of head_count_kv %d", hp->n_head,
                          hp->n_head_kv);
    if (hp->head_dim % 2 != 0 || hp->n_rot % 2 != 0)
        return sl__errorf(SL_BAD_FORMAT, "head dimension %d / rope dimension %d must be even", hp->head_dim, hp->n_rot);
    uint32_t vlen;
    if ((st = read_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f, 0.0f, 1.0f, &hp->rms_eps)) != SL_OK)
        return st;
    if ((st = read_f32(g, "llama.rope.freq_base", 10000.0f, 1.0f, 1e12f, &hp->rope_freq_base)) != SL_OK) return st;
    hp->rope_freq_scale = 1.0f;
    if (sl_gguf_get_str(g, "llama.rope.scaling.type", &s) == SL_OK && !sl_gguf_str_eq(s, "none")) {
        if (!sl_gguf_str_eq(s, "linear"))
            return sl__errorf(SL_UNSUPPORTED, "rope scaling '%.*s' is not supported (none, linear)",
                              (int)SL_MIN(s.len, 64), s.data);
        float factor = 1.0f;
        if ((st = read_f32(g, "llama.rope.scaling.factor", 1.0f, 1.0f, 1024.0f, &factor)) != SL_OK) return st;
        hp->rope_freq_scale = 1.0f / factor;
    }
    sl_gguf_type et;
    uint64_t n_tokens;
    if (sl_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_tokens) != SL_OK || et != SL_GGUF_STRING)
        return sl__errorf(SL_BAD_FORMAT, "tokenizer.ggml.tokens (string array) is missing");
    if (n_tokens < 1 || n_tokens > SL_MAX_VOCAB)
        return sl__errorf(SL_BAD_FORMAT, "vocabulary of %llu tokens is outside [1, %d]", (unsigned long long)n_tokens,
                          SL_MAX_VOCAB);
    hp->n_vocab = (int)n_tokens;
    if (sl_gguf_get_u32(g, "llama.vocab_size", &vlen) == SL_OK && vlen != n_tokens)
        return sl__errorf(SL_BAD_FORMAT, "llama.vocab_size %u differs from the %d tokens of the vocabulary", vlen,
                          hp->n_vocab);
    for (int64_t i = 0; i < sl_gguf_n_tensors(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        hp->n_params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        hp->weight_bytes += t->n_bytes;
    }
    return SL_OK;
}

/* A tensor-parallel size must split the heads, the KV heads and the MLP rows evenly (llama.c's top comment). */
static sl_status check_tp(const sl_model_hparams *hp, int tp) {
    if (tp < 0) return sl__errorf(SL_INVALID_ARGUMENT, "tensor parallel size %d is negative", tp);
    if (tp <= 1) return SL_OK;
    if (tp > SL_MODEL_MAX_TP)
        return sl__errorf(SL_INVALID_ARGUMENT, "tensor parallel size %d is above %d", tp, SL_MODEL_MAX_TP);
    if (hp->n_head % tp != 0 || hp->n_head_kv % tp != 0 || hp->n_ff % tp != 0)
        return sl__errorf(SL_INVALID_ARGUMENT,
                          "tensor parallel size %d does not divide the model's %d attention heads, %d KV heads and "
                          "%d feed-forward rows (each must be a multiple of it)",
                          tp, hp->n_head, hp->n_head_kv, hp->n_ff);
    return SL_OK;
}

sl_status sl_model_load(const sl_model_params *p, sl_model **out) {
    *out = NULL;
    if (!p->path || !*p->path) return sl__errorf(SL_INVALID_ARGUMENT, "no model path given");
    sl_model *m = sl__calloc(1, sizeof *m);
    if (!m) return sl__errorf(SL_OUT_OF_MEMORY, "model");
    sl_status st = sl_gguf_open(p->path, &m->gguf);
    if (st != SL_OK) goto fail;
    if ((st = read_hparams(m->gguf, p->path, &m->hp)) != SL_OK) goto fail;
    m->max_len = p->max_model_len > 0 ? p->max_model_len : m->hp.n_ctx_train;
    if (m->max_len > m->hp.n_ctx_train) {
        st = sl__errorf(SL_INVALID_ARGUMENT, "max_model_len %d exceeds the model's training context %d", m->max_len,
                        m->hp.n_ctx_train);
        goto fail;
    }
    if ((st = check_tp(&m->hp, p->tp_size)) != SL_OK) goto fail;
    m->tp = p->tp_size > 1 ? p->tp_size : 1;
    for (int r = 0; r < m->tp; r++) m->devices[r] = p->devices ? p->devices[r] : SL_DEVICE_CPU;
    if (m->tp > 1) {
        sl_llama_tp_params tpp = {.tp = m->tp, .devices = p->devices, .n_threads = p->n_threads,
                                  .precision = p->precision, .max_ctx = m->max_len};
        m->iface = &sl_llama_tp_iface;
        if ((st = sl_llama_tp_load(m->gguf, &m->hp, &tpp, &m->ctx)) != SL_OK) goto fail;
    } else {
        if (p->devices && p->devices[0] != SL_DEVICE_CPU) {
            sl_backend_cuda_params cp = {.device = p->devices[0], .precision = p->precision, .max_ctx = m->max_len};
            st = sl_backend_cuda_create(&cp, &m->backend);
        } else {
            sl_backend_cpu_params bp = {.n_threads = p->n_threads, .precision = p->precision, .max_ctx = m->max_len};
            st = sl_backend_cpu_create(&bp, &m->backend);
        }
        if (st != SL_OK) goto fail;
        m->iface = &sl_llama_iface;
        if ((st = sl_llama_load(m->gguf, &m->hp, &m->backend, &m->ctx)) != SL_OK) goto fail;
    }
    if ((st = sl_tokenizer_load(m->gguf, &m->tok)) != SL_OK) goto fail;

    sl_gguf_str tmpl = {0};
    char *tmpl_src = NULL;
    if (sl_gguf_get_str(m->gguf, "tokenizer.chat_template", &tmpl) == SL_OK) {
        tmpl_src = sl__strndup(tmpl.data, (size_t)tmpl.len);
        if (!tmpl_src) {
            st = sl__errorf(SL_OUT_OF_MEMORY, "chat template");
            goto fail;
        }
    }
    if (tmpl_src || p->chat_template) {
        char bos[256] = "", eos[256] = "";
        size_t n;
        const char *piece;
        if (sl_tokenizer_bos(m->tok) >= 0 && (piece = sl_tokenizer_piece(m->tok, sl_tokenizer_bos(m->tok), &n)))
            snprintf(bos, sizeof bos, "%.*s", (int)SL_MIN(n, sizeof bos - 1), piece);
        if (sl_tokenizer_eos(m->tok) >= 0 && (piece = sl_tokenizer_piece(m->tok, sl_tokenizer_eos(m->tok), &n)))
            snprintf(eos, sizeof eos, "%.*s", (int)SL_MIN(n, sizeof eos - 1), piece);
        st = sl_chat_template_create(tmpl_src, p->chat_template, bos, eos, &m->chat);
        free(tmpl_src);
        if (st != SL_OK) goto fail;
    }
    *out = m;
    return SL_OK;
fail:
    sl__error_prefix(st, "loading %s", p->path);
    sl_model_free(m);
    return st;
}

void sl_model_free(sl_model *m) {
    if (!m) return;
    if (m->ctx) m->iface->free(m->ctx);
    sl_backend_free(&m->backend);
    sl_tokenizer_free(m->tok);
    sl_chat_template_free(m->chat);
    sl_gguf_close(m->gguf);
    free(m);
}

const sl_model_hparams *sl_model_get_hparams(const sl_model *m) { return &m->hp; }
int sl_model_max_len(const sl_model *m) { return m->max_len; }

int sl_model_tp_size(const sl_model *m) { return m->tp; }

uint64_t sl_model_rank_weight_bytes(const sl_model *m, int r) {
    if (r < 0 || r >= m->tp) return 0;
    return m->tp > 1 ? sl_llama_tp_rank_weight_bytes(m->ctx, r) : sl_llama_layer_weight_bytes(m->ctx);
}

sl_status sl_model_comm_stats(const sl_model *m, int r, struct sl_comm_stats *out) {
    memset(out, 0, sizeof *out);
    if (r < 0 || r >= m->tp) return sl__errorf(SL_INVALID_ARGUMENT, "rank %d outside [0, %d)", r, m->tp);
    if (m->tp > 1) *out = *sl_llama_tp_comm_stats(m->ctx, r);
    return SL_OK;
}

/* The bytes of one block over all ranks: each rank holds n_head_kv / tp of the heads, tp ranks. */
size_t sl_model_kv_block_bytes(const sl_model *m, int block_size, sl_kv_dtype dtype) {
    return sl_llama_kv_block_bytes(&m->hp, block_size, dtype == SL_KV_F16 ? SL_DTYPE_F16 : SL_DTYPE_F32);
}

sl_status sl_model_kv_alloc(sl_model *m, int n_blocks, int block_size, sl_kv_dtype dtype) {
    if (n_blocks < 1 || block_size < 1) return sl__errorf(SL_INVALID_ARGUMENT, "KV cache of %d blocks", n_blocks);
    int kv_type = dtype == SL_KV_F16 ? SL_DTYPE_F16 : SL_DTYPE_F32;
    if (m->tp > 1) return sl_llama_tp_kv_alloc(m->ctx, n_blocks, block_size, kv_type);
    return sl_llama_kv_alloc(m->ctx, n_blocks, block_size, kv_type);
}

int sl_model_cuda_device_count(void) { return sl_backend_cuda_device_count(); }

void sl_model_fault_tag_set(int tag) { sl_backend_fault_tag_set(tag); }

sl_status sl_model_kv_device_budget(sl_model *m, double fraction, uint64_t *bytes) {
    *bytes = 0;
    if (!(fraction > 0 && fraction <= 1))
        return sl__errorf(SL_INVALID_ARGUMENT, "device memory fraction %g outside (0, 1]", fraction);
    const int tp = m->tp > 1 ? m->tp : 1;
    /* Per rank: the device's room for KV = fraction * total - in use. Ranks sharing a device (the single-GPU
     * communicator) share its room, each rank holding 1/tp of every block. */
    double room_min = -1; /* the smallest room of any rank, bytes (for that rank's share of the pool) */
    for (int r = 0; r < tp; r++) {
        sl_backend *b = tp > 1 ? sl_llama_tp_rank_backend(m->ctx, r) : &m->backend;
        size_t free_b = 0, total_b = 0;
        sl_status st = sl_backend_mem_info(b, &free_b, &total_b);
        if (st != SL_OK) return st;
        int sharing = 0; /* ranks on the same device as rank r */
        for (int q = 0; q < tp; q++) sharing += m->devices[q] == m->devices[r];
        double room = fraction * (double)total_b - (double)(total_b - free_b);
        if (room <= 0) room = 0;
        double per_rank = room / sharing;
        if (room_min < 0 || per_rank < room_min) room_min = per_rank;
    }
    /* every rank holds 1/tp of the pool: the pool is tp times the smallest rank's room */
    *bytes = (uint64_t)(room_min * tp);
    return SL_OK;
}

/* The backend whose host threads serve host work between steps: the model's own, or rank 0's under tensor
 * parallelism (the engine thread drives rank 0; its pool is idle between steps). */
static sl_backend *host_backend(const sl_model *m) {
    if (m->tp > 1) return sl_llama_tp_rank0_backend(m->ctx);
    return m->backend.iface ? (sl_backend *)&m->backend : NULL;
}

int sl_model_host_threads(const sl_model *m) {
    sl_backend *b = host_backend(m);
    return b ? sl_backend_host_threads(b) : 1;
}

void sl_model_host_parallel(sl_model *m, void (*fn)(void *arg, int ith, int nth), void *arg) {
    sl_backend *b = host_backend(m);
    if (b)
        sl_backend_parallel_for(b, fn, arg);
    else
        fn(arg, 0, 1);
}

sl_status sl_model_forward(sl_model *m, const sl_batch *b) {
    /* Token ids are checked once per step where they are used: the embedding lookup (get_rows) refuses ids
     * outside the vocabulary; the engine already refused them at submission. */
    return m->iface->forward(m->ctx, b);
}

/* ---- text ------------------------------------------------------------------------------------------------------------ */
sl_status sl_model_tokenize(const sl_model *m, const char *text, size_t len, unsigned flags, int32_t **ids, size_t *n) {
    return sl_tokenizer_encode(m->tok, text, len, flags, ids, n);
}

sl_status sl_model_detokenize(const sl_model *m, const int32_t *ids, size_t n, unsigned flags, char **text,
                              size_t *len) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->hp.n_vocab)
            return sl__errorf(SL_INVALID_ARGUMENT, "token id %d outside the vocabulary [0, %d)", ids[i], m->hp.n_vocab);
    return sl_tokenizer_decode(m->tok, ids, n, flags, text, len);
}

const char *sl_model_token_piece(const sl_model *m, int32_t id, size_t *len) {
    if (id < 0 || id >= m->hp.n_vocab) return NULL;
    return sl_tokenizer_piece(m->tok, id, len);
}

int sl_model_token_is_control(const sl_model *m, int32_t id) { return sl_tokenizer_is_control(m->tok, id); }
int sl_model_token_is_eog(const sl_model *m, int32_t id) { return sl_tokenizer_is_eog(m->tok, id); }
int32_t sl_model_bos(const sl_model *m) { return sl_tokenizer_bos(m->tok); }
int32_t sl_model_eos(const sl_model *m) { return sl_tokenizer_eos(m->tok); }
int sl_model_add_bos(const sl_model *m) { return sl_tokenizer_add_bos(m->tok); }
int sl_model_has_chat_template(const sl_model *m) { return m->chat != NULL; }

sl_status sl_model_render_chat(const sl_model *m, const sl_chat_message *msgs, size_t n, int add_generation_prompt,
                               char **text) {
    if (!m->chat)
        return sl__errorf(SL_UNSUPPORTED, "the model has no chat template; set the chat_template setting (--chat-template NAME: chatml, llama3, mistral, ...)");
    return sl_chat_render(m->chat, msgs, n, add_generation_prompt, text);
}

/* ---- sluice info --------------------------------------------------------------------------------------------------- */
sl_status sl_model_describe_file(const char *path, char **text) {
    *text = NULL;
    sl_gguf *g;
    sl_status st = sl_gguf_open(path, &g);
    if (st != SL_OK) return sl__error_prefix(st, "%s", path);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        sl_gguf_close(g);
        return sl__errorf(SL_OUT_OF_MEMORY, "describing %s", path);
    }
    fprintf(f, "file: %s\nGGUF version: %u, alignment: %llu, size: %llu bytes\n", path, sl_gguf_version(g),
            (unsigned long long)sl_gguf_alignment(g), (unsigned long long)sl_gguf_file_size(g));
    fprintf(f, "\nmetadata (%lld keys):\n", (long long)sl_gguf_n_kv(g));
    char val[512];
    for (int64_t i = 0; i < sl_gguf_n_kv(g); i++) {
        const sl_gguf_kv *kv = sl_gguf_kv_at(g, i);
        sl_gguf_kv_format(kv, val, sizeof val);
        fprintf(f, "  %-44.*s %s\n", (int)SL_MIN(kv->key.len, 200), kv->key.data, val);
    }
    int64_t n_params = 0;
    uint64_t n_bytes = 0;
    fprintf(f, "\ntensors (%lld):\n", (long long)sl_gguf_n_tensors(g));
    for (int64_t i = 0; i < sl_gguf_n_tensors(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        char shape[96];
        int o = snprintf(shape, sizeof shape, "[%lld", (long long)t->ne[0]);
        for (int d = 1; d < t->n_dims && o < (int)sizeof shape; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, ", %lld", (long long)t->ne[d]);
        if (o < (int)sizeof shape) snprintf(shape + o, sizeof shape - (size_t)o, "]");
        const char *tn = sl_dtype_name(t->type);
        fprintf(f, "  %-36.*s %-6s %-22s %12llu bytes\n", (int)SL_MIN(t->name.len, 200), t->name.data,
                tn ? tn : "?", shape, (unsigned long long)t->n_bytes);
        n_params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        n_bytes += t->n_bytes;
    }
    fprintf(f, "\n%lld parameters, %llu bytes of tensor data (%.2f bits per parameter)\n", (long long)n_params,
            (unsigned long long)n_bytes, n_params ? 8.0 * (double)n_bytes / (double)n_params : 0.0);
    fclose(f);
    sl_gguf_close(g);
    *text = buf;
    return SL_OK;
}
