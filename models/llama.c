/*
 * llama.c — the llama architecture: weights read from GGUF, and forward() over one flat batch.
 *
 * The forward pass treats the whole step as one matrix: every weight of every layer is applied once to all
 * the step's tokens (this is where batching pays), then each token attends to its own sequence through the
 * paged KV cache. Hyperparameters come from `llama.*` keys. RoPE is llama GGUF's "normal" layout (adjacent
 * pairs within a head; the converter permuted Q and K for it). Families with the other RoPE layout (qwen2,
 * ...) and unsupported rope scalings are refused at load with a message.
 *
 * All compute goes through the backend (runtime/backend.h); this file decides shapes and order only. Weights
 * and norm vectors are placed on the backend at load (on the CPU, the file's mapping, or in the fast mode a
 * repacked copy of Q4_0/Q4_1/Q8_0 weights), the activations live in backend memory, and only the outputs asked
 * for come back to the host.
 *
 * Tensor parallelism (DESIGN.md §4): a context here is one RANK of tp ranks (tp = 1: the whole model). A rank
 * holds a contiguous range of the query heads, of the KV heads and of the MLP rows: Q, K, V, gate and up are
 * split by rows (column-parallel: each rank computes its own heads / hidden units), attn_output and ffn_down
 * by columns (row-parallel: each rank's product is a partial sum of the full output), and one all-reduce after
 * each of those two adds the partial sums, so every rank's residual stream stays identical. The embedding,
 * and the norms are not split: every rank keeps them and looks up its own embeddings (on the CPU from the file's
 * rows; only rank 0, which alone computes the outputs, places a tied embedding for its products), and an untied
 * output.weight is placed on rank 0 only (a vocab-parallel output projection is not done yet).
 * llama_tp.c runs the ranks side by side.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "comm.h"
#include "gguf.h"
#include "kcpu.h"
#include "llama.h"
#include "sl_util.h"

/* Shapes are the rank's: n_head, n_head_kv and n_ff below are the rank's shares (the model's / tp). */
typedef struct llama_layer {
    const float *attn_norm; /* [n_embd] */
    const float *ffn_norm;  /* [n_embd] */
    sl_weight wq;           /* [n_head * head_dim][n_embd], the rank's heads (rows of the file's tensor) */
    sl_weight wk;           /* [n_head_kv * head_dim][n_embd] */
    sl_weight wv;           /* [n_head_kv * head_dim][n_embd] */
    sl_weight wo;           /* [n_embd][n_head * head_dim]: the rank's columns, rows are the file's full rows */
    sl_weight w_gate;       /* [n_ff][n_embd] */
    sl_weight w_up;         /* [n_ff][n_embd] */
    sl_weight w_down;       /* [n_embd][n_ff]: the rank's columns, as wo */
} llama_layer;

typedef struct llama_ctx {
    sl_backend *backend;
    const sl_model_hparams *hp;
    int rank, tp;              /* this rank of tp (tp = 1: the whole model) */
    int n_head, n_head_kv, n_ff; /* the rank's shares of hp's */
    sl_comm *comm;             /* the rank's communicator; NULL when tp = 1 */
    uint64_t layer_weight_bytes; /* bytes of the layers' matrices this rank holds (its slices) */
    sl_weight tok_embd;        /* [n_vocab][n_embd] */
    sl_weight output;          /* [n_vocab][n_embd]; the token embedding when tied */
    const float *output_norm;  /* [n_embd] */
    llama_layer *layers;       /* [n_layer] */
    float **owned;             /* norm vectors converted to f32 at load (F16/BF16 files), freed with the model */
    int n_owned;
    void **dev_norms;          /* norm vectors copied to a device backend (not host memory), [n_dev_norms] */
    size_t *dev_norm_bytes;
    int n_dev_norms;

    /* KV cache: per layer, [n_slots][n_head_kv][head_dim] in kv_type */
    void **k_pool, **v_pool;
    size_t pool_bytes;         /* bytes of one pool (one layer's K or V) */
    int kv_type;
    int block_size;
    int64_t n_slots;

    /* Activations in backend memory, each [cap_tokens][width] f32, grown to the largest step seen. */
    int cap_tokens;
    float *x;    /* [T][n_embd] residual stream */
    float *xb;   /* [T][n_embd] normed input of a block */
    float *xb2;  /* [T][n_embd] block output */
    float *q;    /* [T][n_head * head_dim] */
    float *k;    /* [T][n_head_kv * head_dim] */
    float *v;    /* [T][n_head_kv * head_dim] */
    float *att;  /* [T][n_head * head_dim] attention output */
    float *ffg;  /* [T][n_ff] gate, then silu(gate) * up */
    float *ffu;  /* [T][n_ff] up */
    float *logits_dev;  /* [T][n_vocab] logits on a device backend before download; NULL on the CPU */
    int32_t *row_seq;   /* [T] host memory, like every index array (backend.h) */
    int32_t *row_n_ctx; /* [T] */
    int32_t *out_ids;   /* [T] tokens wanting output, compacted */
} llama_ctx;

/* ---- loading ---------------------------------------------------------------------------------------------------- */
static sl_status get_tensor(const sl_gguf *g, const char *name, int64_t ne0, int64_t ne1,
                            const sl_gguf_tensor **out) {
    const sl_gguf_tensor *t = sl_gguf_find_tensor(g, name);
    *out = t;
    if (!t) return sl__errorf(SL_BAD_FORMAT, "tensor '%s' is missing", name);
    int64_t want1 = ne1 > 0 ? ne1 : 1;
    int dims_ok = t->ne[0] == ne0 && t->ne[1] == want1 && t->ne[2] == 1 && t->ne[3] == 1;
    if (!dims_ok)
        return sl__errorf(SL_BAD_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
                          (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                          (long long)ne0, (long long)want1);
    return SL_OK;
}

/* How a layer weight is divided between the ranks of a tensor-parallel group. */
typedef enum split_kind {
    SPLIT_NONE = 0, /* every rank holds all of it */
    SPLIT_ROWS = 1, /* column-parallel: rank r holds rows [r * n_out / tp, (r + 1) * n_out / tp) */
    SPLIT_COLS = 2, /* row-parallel: rank r holds that range of every row's columns */
    SPLIT_NONE_ROWS_ONLY = 3, /* all of it, read by row only (the embedding of ranks > 0): on a host-memory
                               * backend the file's rows serve as they are, with no repacked copy per rank */
} split_kind;

static sl_status load_weight_split(llama_ctx *c, const sl_gguf *g, const char *name, int n_in, int n_out,
                                   split_kind split, sl_weight *w) {
    const sl_gguf_tensor *t;
    sl_status st = get_tensor(g, name, n_in, n_out, &t);
    if (st != SL_OK) return st;
    if (!sl_dtype_supported(t->type))
        return sl__errorf(SL_UNSUPPORTED, "tensor '%s' has type %s, which Sluice cannot compute with yet", name,
                          sl_dtype_name(t->type) ? sl_dtype_name(t->type) : "unknown");
    size_t full_row_bytes = sl_dtype_row_bytes(t->type, n_in);
    if (full_row_bytes == 0)
        return sl__errorf(SL_BAD_FORMAT, "tensor '%s': row length %d is not a multiple of %s's block", name, n_in,
                          sl_dtype_name(t->type));
    sl_weight host = {.data = t->data, .type = t->type, .n_in = n_in, .n_out = n_out, .row_bytes = full_row_bytes};
    if (split == SPLIT_ROWS && c->tp > 1) {
        host.n_out = n_out / c->tp;
        host.data = (const uint8_t *)t->data + (size_t)c->rank * (size_t)host.n_out * full_row_bytes;
    } else if (split == SPLIT_COLS && c->tp > 1) {
        /* A slice of every row: it must start and end on the type's block boundaries, since a quantized
         * block cannot be cut (e.g. Q4_1's 32 values share one scale). */
        int part = n_in / c->tp, col0 = c->rank * part, blk = sl_dtype_block_elems(t->type);
        if (blk <= 0 || part % blk != 0)
            return sl__errorf(SL_UNSUPPORTED,
                              "tensor '%s' (%s): tensor parallel size %d gives each rank %d of its %d columns, not a "
                              "whole number of %s's %d-value blocks",
                              name, sl_dtype_name(t->type), c->tp, part, n_in, sl_dtype_name(t->type), blk);
        host.n_in = part;
        host.data = (const uint8_t *)t->data + (size_t)(col0 / blk) * sl_dtype_block_bytes(t->type);
    }
    if (split == SPLIT_NONE_ROWS_ONLY && c->backend->iface->weights_in_host_memory) {
        *w = host; /* get_rows reads the file's rows; weight_free leaves them alone (packed = 0) */
        return SL_OK;
    }
    st = sl_backend_upload_weight(c->backend, &host, w);
    if (st != SL_OK) {
        memset(w, 0, sizeof *w); /* nothing placed: weight_free must not see the file's pointer */
        return sl__error_prefix(st, "placing tensor '%s'", name);
    }
    return SL_OK;
}

static sl_status load_weight(llama_ctx *c, const sl_gguf *g, const char *name, int n_in, int n_out, sl_weight *w) {
    return load_weight_split(c, g, name, n_in, n_out, SPLIT_NONE, w);
}

/* A norm vector (host memory, f32) placed on the backend: itself on the CPU, a device copy elsewhere. */
static sl_status place_norm(llama_ctx *c, const float *host, int n, const float **out) {
    if (c->backend->iface->weights_in_host_memory) {
        *out = host;
        return SL_OK;
    }
    size_t bytes = (size_t)n * sizeof(float);
    void **v = sl__realloc(c->dev_norms, (size_t)(c->n_dev_norms + 1) * sizeof *v);
    if (v) c->dev_norms = v;
    size_t *nb = v ? sl__realloc(c->dev_norm_bytes, (size_t)(c->n_dev_norms + 1) * sizeof *nb) : NULL;
    if (nb) c->dev_norm_bytes = nb;
    if (!v || !nb) return sl__errorf(SL_OUT_OF_MEMORY, "norm table");
    void *d;
    sl_status st = sl_backend_alloc(c->backend, bytes, &d);
    if (st != SL_OK) return st;
    c->dev_norms[c->n_dev_norms] = d;
    c->dev_norm_bytes[c->n_dev_norms++] = bytes;
    if ((st = sl_backend_upload(c->backend, d, host, bytes)) != SL_OK) return st;
    *out = d;
    return SL_OK;
}

static sl_status load_norm(llama_ctx *c, const sl_gguf *g, const char *name, int n, const float **out) {
    const sl_gguf_tensor *t;
    sl_status st = get_tensor(g, name, n, 1, &t);
    if (st != SL_OK) return st;
    if (t->type == SL_DTYPE_F32) return place_norm(c, t->data, n, out);
    if (t->type != SL_DTYPE_F16 && t->type != SL_DTYPE_BF16)
        return sl__errorf(SL_UNSUPPORTED, "norm tensor '%s' has type %s; expected f32, f16 or bf16", name,
                          sl_dtype_name(t->type) ? sl_dtype_name(t->type) : "unknown");
    float *f = sl__malloc((size_t)n * sizeof(float));
    float **owned = sl__realloc(c->owned, (size_t)(c->n_owned + 1) * sizeof *owned);
    if (!f || !owned) {
        free(f);
        if (owned) c->owned = owned;
        return sl__errorf(SL_OUT_OF_MEMORY, "norm '%s'", name);
    }
    c->owned = owned;
    c->owned[c->n_owned++] = f;
    sl_k_dequantize_row(t->type, t->data, f, n);
    return place_norm(c, f, n, out);
}

/* The activation buffers with their sizes in floats for cap tokens (order shared by alloc and free). */
static int activation_bufs(llama_ctx *c, size_t T, float ***p, size_t *n) {
    const sl_model_hparams *hp = c->hp;
    size_t E = (size_t)hp->n_embd, qd = (size_t)c->n_head * (size_t)hp->head_dim,
           kvd = (size_t)c->n_head_kv * (size_t)hp->head_dim, F = (size_t)c->n_ff;
    float **ptrs[] = {&c->x, &c->xb, &c->xb2, &c->q, &c->k, &c->v, &c->att, &c->ffg, &c->ffu, &c->logits_dev};
    /* logits_dev: only rank 0 computes outputs, and only a device backend needs the staging buffer */
    size_t sizes[] = {T * E, T * E, T * E, T * qd, T * kvd, T * kvd, T * qd, T * F, T * F,
                      c->backend->iface->weights_in_host_memory || c->rank != 0 ? 0 : T * (size_t)hp->n_vocab};
    for (size_t i = 0; i < SL_ARRAY_LEN(ptrs); i++) {
        p[i] = ptrs[i];
        n[i] = sizes[i];
    }
    return (int)SL_ARRAY_LEN(ptrs);
}

static void free_activations(llama_ctx *c) {
    float **p[16];
    size_t n[16];
    int k = activation_bufs(c, (size_t)c->cap_tokens, p, n);
    for (int i = 0; i < k; i++) {
        sl_backend_buf_free(c->backend, *p[i], n[i] * sizeof(float));
        *p[i] = NULL;
    }
}

static void llama_free(void *ctx) {
    llama_ctx *c = ctx;
    if (!c) return;
    sl_backend *b = c->backend;
    if (c->k_pool) {
        for (int l = 0; l < c->hp->n_layer; l++) {
            sl_backend_buf_free(b, c->k_pool[l], c->pool_bytes);
            sl_backend_buf_free(b, c->v_pool[l], c->pool_bytes);
        }
    }
    free(c->k_pool);
    free(c->v_pool);
    free_activations(c);
    free(c->row_seq);
    free(c->row_n_ctx);
    free(c->out_ids);
    for (int i = 0; i < c->n_owned; i++) free(c->owned[i]);
    free(c->owned);
    for (int i = 0; i < c->n_dev_norms; i++) sl_backend_buf_free(b, c->dev_norms[i], c->dev_norm_bytes[i]);
    free(c->dev_norms);
    free(c->dev_norm_bytes);
    if (c->layers) {
        for (int l = 0; l < c->hp->n_layer; l++) {
            llama_layer *L = &c->layers[l];
            sl_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            for (size_t i = 0; i < SL_ARRAY_LEN(ws); i++) sl_backend_weight_free(b, ws[i]);
        }
    }
    if (c->output.data != c->tok_embd.data) sl_backend_weight_free(b, &c->output);
    sl_backend_weight_free(b, &c->tok_embd);
    free(c->layers);
    free(c);
}

sl_status sl_llama_load(const sl_gguf *g, const sl_model_hparams *hp, sl_backend *backend, void **ctx_out) {
    return sl_llama_load_rank(g, hp, backend, 0, 1, NULL, ctx_out);
}

sl_status sl_llama_load_rank(const sl_gguf *g, const sl_model_hparams *hp, sl_backend *backend, int rank, int tp,
                             sl_comm *comm, void **ctx_out) {
    *ctx_out = NULL;
    /* model.c checked the sizes with a message for the user; here they are our own invariants */
    SL_ASSERT(tp >= 1 && rank >= 0 && rank < tp && (tp == 1 || comm));
    SL_ASSERT(hp->n_head % tp == 0 && hp->n_head_kv % tp == 0 && hp->n_ff % tp == 0);
    llama_ctx *c = sl__calloc(1, sizeof *c);
    if (!c) return sl__errorf(SL_OUT_OF_MEMORY, "llama context");
    c->backend = backend;
    c->hp = hp;
    c->rank = rank;
    c->tp = tp;
    c->comm = tp > 1 ? comm : NULL;
    c->n_head = hp->n_head / tp;
    c->n_head_kv = hp->n_head_kv / tp;
    c->n_ff = hp->n_ff / tp;
    sl_status st = SL_OK;
    int E = hp->n_embd, qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
    c->layers = sl__calloc((size_t)hp->n_layer, sizeof *c->layers);
    if (!c->layers) {
        st = sl__errorf(SL_OUT_OF_MEMORY, "llama layers");
        goto fail;
    }
    /* Ranks > 0 only look embeddings up (rank 0 alone runs the output projection, tied or not). */
    const int tied = sl_gguf_find_tensor(g, "output.weight") == NULL;
    if ((st = load_weight_split(c, g, "token_embd.weight", E, hp->n_vocab,
                                c->rank > 0 || !tied ? SPLIT_NONE_ROWS_ONLY : SPLIT_NONE, &c->tok_embd)) != SL_OK)
        goto fail;
    if ((st = load_norm(c, g, "output_norm.weight", E, &c->output_norm)) != SL_OK) goto fail;
    if (!tied) {
        /* only rank 0 runs the output projection (llama_forward): the other ranks do not place it */
        if (c->rank == 0 && (st = load_weight(c, g, "output.weight", E, hp->n_vocab, &c->output)) != SL_OK) goto fail;
    } else {
        c->output = c->tok_embd; /* tied embeddings */
    }
    for (int l = 0; l < hp->n_layer; l++) {
        llama_layer *L = &c->layers[l];
        char name[96];
#define LW(field, suffix, cols, rows, split)                                                                        \
    snprintf(name, sizeof name, "blk.%d." suffix ".weight", l);                                                     \
    if ((st = load_weight_split(c, g, name, cols, rows, split, &L->field)) != SL_OK) goto fail;                      \
    c->layer_weight_bytes += (uint64_t)L->field.n_out * sl_dtype_row_bytes(L->field.type, L->field.n_in)
        LW(wq, "attn_q", E, qd, SPLIT_ROWS);
        LW(wk, "attn_k", E, kvd, SPLIT_ROWS);
        LW(wv, "attn_v", E, kvd, SPLIT_ROWS);
        LW(wo, "attn_output", qd, E, SPLIT_COLS);
        LW(w_gate, "ffn_gate", E, hp->n_ff, SPLIT_ROWS);
        LW(w_up, "ffn_up", E, hp->n_ff, SPLIT_ROWS);
        LW(w_down, "ffn_down", hp->n_ff, E, SPLIT_COLS);
#undef LW
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if ((st = load_norm(c, g, name, E, &L->attn_norm)) != SL_OK) goto fail;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        if ((st = load_norm(c, g, name, E, &L->ffn_norm)) != SL_OK) goto fail;
    }
    *ctx_out = c;
    return SL_OK;
fail:
    llama_free(c);
    return st;
}

/* ---- KV cache ---------------------------------------------------------------------------------------------------- */
size_t sl_llama_kv_block_bytes(const sl_model_hparams *hp, int block_size, int kv_type) {
    size_t el = kv_type == SL_DTYPE_F16 ? 2 : 4;
    return 2 * (size_t)hp->n_layer * (size_t)block_size * (size_t)hp->n_head_kv * (size_t)hp->head_dim * el;
}

sl_status sl_llama_kv_alloc(void *ctx, int n_blocks, int block_size, int kv_type) {
    llama_ctx *c = ctx;
    const sl_model_hparams *hp = c->hp;
    if (c->k_pool) {
        for (int l = 0; l < hp->n_layer; l++) {
            sl_backend_buf_free(c->backend, c->k_pool[l], c->pool_bytes);
            sl_backend_buf_free(c->backend, c->v_pool[l], c->pool_bytes);
        }
        free(c->k_pool);
        free(c->v_pool);
        c->k_pool = c->v_pool = NULL;
    }
    size_t el = kv_type == SL_DTYPE_F16 ? 2 : 4;
    c->n_slots = (int64_t)n_blocks * block_size;
    c->pool_bytes = (size_t)c->n_slots * (size_t)c->n_head_kv * (size_t)hp->head_dim * el; /* the rank's heads */
    c->kv_type = kv_type;
    c->block_size = block_size;
    c->k_pool = sl__calloc((size_t)hp->n_layer, sizeof(void *));
    c->v_pool = sl__calloc((size_t)hp->n_layer, sizeof(void *));
    sl_status st = c->k_pool && c->v_pool ? SL_OK : sl__errorf(SL_OUT_OF_MEMORY, "KV pool table");
    for (int l = 0; st == SL_OK && l < hp->n_layer; l++) {
        st = sl_backend_alloc(c->backend, c->pool_bytes, &c->k_pool[l]);
        if (st == SL_OK) st = sl_backend_alloc(c->backend, c->pool_bytes, &c->v_pool[l]);
    }
    if (st != SL_OK) { /* no half-made pool: free what was made, and forward() sees none */
        for (int l = 0; l < hp->n_layer; l++) {
            if (c->k_pool) sl_backend_buf_free(c->backend, c->k_pool[l], c->pool_bytes);
            if (c->v_pool) sl_backend_buf_free(c->backend, c->v_pool[l], c->pool_bytes);
        }
        free(c->k_pool);
        free(c->v_pool);
        c->k_pool = c->v_pool = NULL;
        c->n_slots = 0;
        return sl__error_prefix(st, "KV cache of %d blocks", n_blocks);
    }
    return SL_OK;
}

/* ---- forward ------------------------------------------------------------------------------------------------------ */
static sl_status ensure_capacity(llama_ctx *c, int n_tokens) {
    if (n_tokens <= c->cap_tokens) return SL_OK;
    size_t T = (size_t)n_tokens;
    int32_t **ibufs[] = {&c->row_seq, &c->row_n_ctx, &c->out_ids};
    for (size_t i = 0; i < SL_ARRAY_LEN(ibufs); i++) {
        int32_t *ip = sl__realloc(*ibufs[i], T * sizeof(int32_t));
        if (!ip) return sl__errorf(SL_OUT_OF_MEMORY, "activations for %d tokens", n_tokens);
        *ibufs[i] = ip;
    }
    free_activations(c); /* nothing survives a step in them: no copy */
    c->cap_tokens = 0;
    float **p[16];
    size_t n[16];
    int k = activation_bufs(c, T, p, n);
    for (int i = 0; i < k; i++) {
        if (n[i] == 0) continue;
        void *d;
        sl_status st = sl_backend_alloc(c->backend, n[i] * sizeof(float), &d);
        if (st != SL_OK) {
            c->cap_tokens = n_tokens; /* so free_activations releases what was allocated */
            free_activations(c);
            c->cap_tokens = 0;
            return sl__error_prefix(st, "activations for %d tokens", n_tokens);
        }
        *p[i] = d;
    }
    c->cap_tokens = n_tokens;
    return SL_OK;
}

#define CHECK(call)                                                                                                  \
    do {                                                                                                             \
        sl_status st_ = (call);                                                                                      \
        if (st_ != SL_OK) return st_;                                                                                \
    } while (0)

static sl_status llama_forward(void *ctx, const sl_batch *b) {
    llama_ctx *c = ctx;
    const sl_model_hparams *hp = c->hp;
    sl_backend *be = c->backend;
    int T = b->n_tokens;
    if (T <= 0) return SL_OK;
    if (!c->k_pool) return sl__errorf(SL_INTERNAL, "forward before the KV cache was allocated");
    for (int i = 0; i < T; i++) {
        if (b->slot[i] < 0 || b->slot[i] >= c->n_slots)
            return sl__errorf(SL_INTERNAL, "batch row %d: KV slot %lld outside the pool", i, (long long)b->slot[i]);
        if (b->seq[i] < 0 || b->seq[i] >= b->n_seqs)
            return sl__errorf(SL_INTERNAL, "batch row %d: sequence %d outside [0, %d)", i, b->seq[i], b->n_seqs);
    }
    CHECK(ensure_capacity(c, T));
    const int E = hp->n_embd, hd = hp->head_dim, F = c->n_ff;
    for (int i = 0; i < T; i++) {
        c->row_seq[i] = b->seq[i];
        c->row_n_ctx[i] = b->pos[i] + 1;
    }
    sl_step_index ix = {.n_rows = T, .tokens = b->tokens, .pos = b->pos, .slots = b->slot, .row_seq = c->row_seq,
                        .row_n_ctx = c->row_n_ctx, .n_seqs = b->n_seqs, .block_tables = b->block_tables,
                        .block_size = c->block_size};
    CHECK(sl_backend_begin_step(be, &ix));
    sl_attn_args aa = {
        .kv_type = c->kv_type, .n_head = c->n_head, .n_head_kv = c->n_head_kv, .head_dim = hd,
        .block_size = c->block_size, .scale = 1.0f / sqrtf((float)hd), .block_tables = b->block_tables,
        .row_seq = c->row_seq, .row_n_ctx = c->row_n_ctx,
    };

    CHECK(sl_backend_get_rows(be, &c->tok_embd, b->tokens, T, c->x));
    for (int l = 0; l < hp->n_layer; l++) {
        const llama_layer *L = &c->layers[l];
        /* attention block */
        CHECK(sl_backend_rms_norm(be, c->x, L->attn_norm, c->xb, T, E, hp->rms_eps));
        const sl_weight *qkv[] = {&L->wq, &L->wk, &L->wv};
        float *const qkv_out[] = {c->q, c->k, c->v};
        CHECK(sl_backend_matmul_multi(be, 3, qkv, c->xb, T, qkv_out));
        CHECK(sl_backend_rope(be, c->q, b->pos, T, c->n_head, hd, hp->n_rot, hp->rope_freq_base, hp->rope_freq_scale));
        CHECK(sl_backend_rope(be, c->k, b->pos, T, c->n_head_kv, hd, hp->n_rot, hp->rope_freq_base,
                              hp->rope_freq_scale));
        CHECK(sl_backend_kv_store(be, c->k_pool[l], c->v_pool[l], c->kv_type, c->k, c->v, b->slot, T, c->n_head_kv,
                                  hd));
        aa.k_pool = c->k_pool[l];
        aa.v_pool = c->v_pool[l];
        CHECK(sl_backend_attention(be, c->q, c->att, T, &aa));
        CHECK(sl_backend_matmul(be, &L->wo, c->att, T, c->xb2));
        if (c->comm) CHECK(sl_comm_all_reduce_sum(c->comm, c->xb2, (size_t)T * E)); /* partial sums of the heads */
        CHECK(sl_backend_add(be, c->x, c->xb2, (size_t)T * E));
        /* MLP block */
        CHECK(sl_backend_rms_norm(be, c->x, L->ffn_norm, c->xb, T, E, hp->rms_eps));
        const sl_weight *gu[] = {&L->w_gate, &L->w_up};
        float *const gu_out[] = {c->ffg, c->ffu};
        CHECK(sl_backend_matmul_multi(be, 2, gu, c->xb, T, gu_out));
        CHECK(sl_backend_swiglu(be, c->ffg, c->ffu, c->ffg, T, F));
        CHECK(sl_backend_matmul(be, &L->w_down, c->ffg, T, c->xb2));
        if (c->comm) CHECK(sl_comm_all_reduce_sum(c->comm, c->xb2, (size_t)T * E)); /* partial sums of the MLP */
        CHECK(sl_backend_add(be, c->x, c->xb2, (size_t)T * E));
    }

    /* Outputs (rank 0 only, the others hold the same residual stream): only the rows that asked go through
     * the final norm and the (large) output product. */
    if (c->rank != 0) return sl_backend_synchronize(be);
    int n_logits = 0, n_hidden = 0;
    for (int i = 0; i < T; i++) {
        if (b->output[i] == SL_OUT_NONE) continue;
        CHECK(sl_backend_copy(be, c->xb + (size_t)(n_logits + n_hidden) * E, c->x + (size_t)i * E,
                              (size_t)E * sizeof(float)));
        c->out_ids[n_logits + n_hidden] = b->output[i];
        if (b->output[i] == SL_OUT_LOGITS)
            n_logits++;
        else
            n_hidden++;
    }
    int n_out = n_logits + n_hidden;
    if (n_out == 0) return SL_OK;
    if (n_hidden > 0 && !b->hidden) return sl__errorf(SL_INTERNAL, "batch asks for hidden states but gives no buffer");
    CHECK(sl_backend_rms_norm(be, c->xb, c->output_norm, c->xb, n_out, E, hp->rms_eps));
    /* Split rows by kind, keeping batch order within each. */
    int li = 0, hi = 0;
    for (int j = 0; j < n_out; j++) {
        const float *row = c->xb + (size_t)j * E;
        if (c->out_ids[j] == SL_OUT_LOGITS)
            CHECK(sl_backend_copy(be, c->xb2 + (size_t)li++ * E, row, (size_t)E * sizeof(float)));
        else if (b->hidden)
            CHECK(sl_backend_download(be, b->hidden + (size_t)hi++ * E, row, (size_t)E * sizeof(float)));
    }
    if (n_logits > 0) {
        if (!b->logits) return sl__errorf(SL_INTERNAL, "batch asks for logits but gives no buffer");
        if (be->iface->weights_in_host_memory) {
            CHECK(sl_backend_matmul(be, &c->output, c->xb2, n_logits, b->logits));
        } else {
            CHECK(sl_backend_matmul(be, &c->output, c->xb2, n_logits, c->logits_dev));
            CHECK(sl_backend_download(be, b->logits, c->logits_dev,
                                      (size_t)n_logits * (size_t)hp->n_vocab * sizeof(float)));
        }
    }
    return sl_backend_synchronize(be);
}

const sl_model_iface sl_llama_iface = {
    /* .name = */ "llama",
    /* .forward = */ llama_forward,
    /* .free = */ llama_free,
};

uint64_t sl_llama_layer_weight_bytes(const void *ctx) { return ((const llama_ctx *)ctx)->layer_weight_bytes; }
