/*
 * model.h — the one face of models/ to the rest of Sluice (batching/ includes nothing else from here).
 *
 * A model is a loaded GGUF: hyperparameters, weights placed on a backend, a tokenizer and a chat template,
 * and the KV-cache pool its attention reads. Its architecture is an sl_model_iface (llama first); the engine
 * calls sl_model_forward() once per step with one flat batch holding every token of the step.
 *
 * KV-cache layout (shared by every backend): per layer, K and V are pools of token slots,
 *   k_pool[layer]: [n_blocks * block_size][n_head_kv][head_dim] in the KV dtype (f32 or f16),
 * a block being block_size consecutive slots. A sequence owns a block table (block ids); its token at
 * position p lives in slot block_table[p / block_size] * block_size + p % block_size. The block manager in
 * batching/ decides which blocks a sequence gets; the model only writes and reads the slots it is given.
 */
#ifndef SL_MODEL_H
#define SL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/sluice.h"

typedef struct sl_model sl_model;

typedef struct sl_model_params {
    const char *path;
    const char *chat_template;  /* override name, or NULL for the model's own */
    int n_threads;              /* CPU compute threads, 0 = all cores */
    sl_precision precision;
    int max_model_len;          /* 0 = n_ctx_train */
    /* Placement of this model (one replica, DESIGN.md §4). tp_size ranks split every layer (tensor parallel:
     * attention heads and the MLP, one all-reduce after each); rank r runs on devices[r]. */
    int tp_size;                /* 0 or 1 = the whole model on one device */
    const int *devices;         /* [tp_size] device of each rank: SL_DEVICE_CPU, or a CUDA ordinal >= 0;
                                 * NULL = every rank on the CPU */
} sl_model_params;

#define SL_DEVICE_CPU (-1)

typedef struct sl_model_hparams {
    char architecture[32];
    char name[128];             /* general.name, or the file's base name */
    int n_vocab;
    int n_ctx_train;
    int n_embd;
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;
    int n_ff;
    int n_rot;
    float rms_eps;
    float rope_freq_base;
    float rope_freq_scale;
    int64_t n_params;
    uint64_t weight_bytes;
} sl_model_hparams;

/* Loads a GGUF; every problem with the file is a status with a message (never an abort). */
sl_status sl_model_load(const sl_model_params *p, sl_model **out);
void sl_model_free(sl_model *m);
const sl_model_hparams *sl_model_get_hparams(const sl_model *m);
int sl_model_max_len(const sl_model *m);

/* ---- tensor parallelism ------------------------------------------------------------------------------------ */
/* Ranks the model is split over (1 without tensor parallelism). */
int sl_model_tp_size(const sl_model *m);
/* Bytes of the layers' weight matrices that rank r holds: its slices of Q, K, V, attn_output, gate, up and
 * down (about 1/tp of the layers' bytes). The embedding, the output projection and the norms, which every rank
 * keeps whole, are not counted. 0 for r outside [0, tp). */
uint64_t sl_model_rank_weight_bytes(const sl_model *m, int r);
/* Rank r's collective counters (comm.h's sl_comm_stats) since load; all zero without tensor parallelism.
 * SL_INVALID_ARGUMENT for r outside [0, tp). */
struct sl_comm_stats;
sl_status sl_model_comm_stats(const sl_model *m, int r, struct sl_comm_stats *out);

/* ---- KV cache -------------------------------------------------------------------------------------------- */
/* Bytes one block takes over all layers, K and V. */
size_t sl_model_kv_block_bytes(const sl_model *m, int block_size, sl_kv_dtype dtype);
/* For a model on devices: the KV bytes (over all ranks, as sl_model_kv_block_bytes counts them) that fit in
 * `fraction` of each device's total memory, less what is already in use there (weights, activations, other
 * processes), measured now; ranks on one device share its room, and the rank with the least room decides
 * (every rank holds 1/tp of every block). SL_UNSUPPORTED for a model on the CPU. */
sl_status sl_model_kv_device_budget(sl_model *m, double fraction, uint64_t *bytes);
/* Allocates the pool (lazily touched memory on the CPU); replaces any previous pool. */
sl_status sl_model_kv_alloc(sl_model *m, int n_blocks, int block_size, sl_kv_dtype dtype);

/* ---- forward ---------------------------------------------------------------------------------------------- */
typedef enum sl_batch_output {
    SL_OUT_NONE = 0,
    SL_OUT_LOGITS = 1, /* the row's logits, [n_vocab] */
    SL_OUT_HIDDEN = 2, /* the row's final-normed hidden state, [n_embd] (embeddings) */
} sl_batch_output;

/* One engine step: every token of every scheduled sequence, flat. Token i of the batch belongs to sequence
 * seq[i], sits at position pos[i] and attends to positions [0, pos[i]] of its sequence, which must all be in
 * the KV cache by the time it runs (earlier steps, or earlier rows of this batch). */
typedef struct sl_batch {
    int n_tokens;
    const int32_t *tokens;             /* [n_tokens] */
    const int32_t *pos;                /* [n_tokens] */
    const int32_t *seq;                /* [n_tokens] index into block_tables */
    const int64_t *slot;               /* [n_tokens] KV slot where the token's K/V is written */
    const uint8_t *output;             /* [n_tokens] sl_batch_output */
    int n_seqs;
    const int32_t *const *block_tables; /* [n_seqs] */
    float *logits;                     /* OUT: [rows with SL_OUT_LOGITS, in batch order][n_vocab] */
    float *hidden;                     /* OUT: [rows with SL_OUT_HIDDEN, in batch order][n_embd] */
} sl_batch;

sl_status sl_model_forward(sl_model *m, const sl_batch *b);

/* Where models can run: the number of CUDA devices usable now (0 without a GPU, a driver or CUDA support in this
 * build), so the engine can check a placement before loading anything. */
int sl_model_cuda_device_count(void);
/* Tags the calling thread as working for replica `tag` (tests: SLUICE_FAULT_INJECT=<op>:<n>@<tag> fails the n-th
 * <op> of that replica's threads; runtime/backend.c). */
void sl_model_fault_tag_set(int tag);

/* Host work between steps (the engine's sampling) on the model's compute threads when they are CPU threads
 * (under tensor parallelism, rank 0's): fn(arg, ith, nth) for ith < nth, back when all are done. A model on a
 * device runs fn alone (nth = 1). sl_model_host_threads says nth. */
int sl_model_host_threads(const sl_model *m);
void sl_model_host_parallel(sl_model *m, void (*fn)(void *arg, int ith, int nth), void *arg);

/* The architecture's table (one per family; llama first). */
typedef struct sl_model_iface {
    const char *name;
    sl_status (*forward)(void *ctx, const sl_batch *b);
    void (*free)(void *ctx);
} sl_model_iface;

/* ---- text ---------------------------------------------------------------------------------------------------- */
/* flags: SL_TOKENIZE_* of sluice.h. ids malloc'd. Thread-safe. */
sl_status sl_model_tokenize(const sl_model *m, const char *text, size_t len, unsigned flags, int32_t **ids,
                            size_t *n);
sl_status sl_model_detokenize(const sl_model *m, const int32_t *ids, size_t n, unsigned flags, char **text,
                              size_t *len);
/* The bytes of one token (not NUL-terminated), or NULL for an id outside the vocabulary. */
const char *sl_model_token_piece(const sl_model *m, int32_t id, size_t *len);
int sl_model_token_is_control(const sl_model *m, int32_t id);
/* Ends generation (EOS, end of turn). */
int sl_model_token_is_eog(const sl_model *m, int32_t id);
int32_t sl_model_bos(const sl_model *m);
int32_t sl_model_eos(const sl_model *m);
int sl_model_add_bos(const sl_model *m);
int sl_model_has_chat_template(const sl_model *m);
sl_status sl_model_render_chat(const sl_model *m, const sl_chat_message *msgs, size_t n, int add_generation_prompt,
                               char **text);

/* A readable description of a GGUF file (metadata and tensor table), for `sluice info`. */
sl_status sl_model_describe_file(const char *path, char **text);

#endif /* SL_MODEL_H */
