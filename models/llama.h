/* llama.h — private to models/: the llama family's loader and table (model.c dispatches to it). */
#ifndef SL_LLAMA_H
#define SL_LLAMA_H

#include "backend.h"
#include "gguf.h"
#include "model.h"

extern const sl_model_iface sl_llama_iface;
sl_status sl_llama_load(const sl_gguf *g, const sl_model_hparams *hp, sl_backend *backend, void **ctx_out);
size_t sl_llama_kv_block_bytes(const sl_model_hparams *hp, int block_size, int kv_type);
sl_status sl_llama_kv_alloc(void *ctx, int n_blocks, int block_size, int kv_type);

#endif
