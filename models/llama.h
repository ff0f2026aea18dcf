/* llama.h — private to models/: the llama family's loader and table (model.c dispatches to it). */
#ifndef SL_LLAMA_H
#define SL_LLAMA_H

#include "backend.h"
#include "comm.h"
#include "gguf.h"
#include "model.h"

extern const sl_model_iface sl_llama_iface;
sl_status sl_llama_load(const sl_gguf *g, const sl_model_hparams *hp, sl_backend *backend, void **ctx_out);
/* One rank of a tensor-parallel group of tp (llama.c's top comment says how the model is split); comm is the
 * rank's communicator (NULL when tp = 1). tp must divide n_head, n_head_kv and n_ff (the caller checks). */
sl_status sl_llama_load_rank(const sl_gguf *g, const sl_model_hparams *hp, sl_backend *backend, int rank, int tp,
                             sl_comm *comm, void **ctx_out);
size_t sl_llama_kv_block_bytes(const sl_model_hparams *hp, int block_size, int kv_type);
sl_status sl_llama_kv_alloc(void *ctx, int n_blocks, int block_size, int kv_type);
/* Bytes of the layers' weight matrices a rank holds (its slices; embedding, output and norms not counted). */
uint64_t sl_llama_layer_weight_bytes(const void *ctx);

/* ---- tensor parallel (llama_tp.c): tp ranks run side by side, each a context of llama.c ---------------------- */
typedef struct sl_llama_tp_params {
    int tp;                 /* ranks, >= 2 */
    const int *devices;     /* [tp] SL_DEVICE_CPU or a CUDA ordinal; NULL = all CPU */
    int n_threads;          /* CPU threads over all ranks (0 = all cores); each CPU rank gets max(1, n / tp) */
    sl_precision precision;
    int max_ctx;
} sl_llama_tp_params;

extern const sl_model_iface sl_llama_tp_iface;
sl_status sl_llama_tp_load(const sl_gguf *g, const sl_model_hparams *hp, const sl_llama_tp_params *p,
                           void **ctx_out);
sl_status sl_llama_tp_kv_alloc(void *ctx, int n_blocks, int block_size, int kv_type);
uint64_t sl_llama_tp_rank_weight_bytes(const void *ctx, int rank);
const sl_comm_stats *sl_llama_tp_comm_stats(const void *ctx, int rank);
/* Rank 0's backend: the engine thread drives it, and its host threads are idle between steps (sampling). */
sl_backend *sl_llama_tp_rank0_backend(void *ctx);
sl_backend *sl_llama_tp_rank_backend(void *ctx, int rank);

#endif
