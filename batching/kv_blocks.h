/*
 * kv_blocks.h — the KV block manager: which sequence holds which block of the paged KV pool, and the
 * automatic prefix cache over those blocks.
 *
 * The pool's memory belongs to the model (models/model.h documents the slot layout); this module only hands
 * out block ids, so it is pure bookkeeping, never touches a device and is tested without a model. Every block
 * has a reference count: a sequence's block table holds one reference per entry, and blocks shared through the
 * prefix cache are held by several tables at once.
 *
 * Prefix caching (vLLM's automatic prefix caching, in miniature): once a block is full and its tokens' K/V were
 * computed, it is registered under the hash chain key
 *     hash(parent block's key, namespace, the block's block_size tokens)     (64 bits)
 * where the namespace is the request's tenant, so tenants never share (or time) each other's cache. A new
 * sequence looks its prompt up block by block and takes a reference on every cached block of its prefix,
 * skipping their prefill. A 64-bit collision cannot corrupt an output: each cached block keeps its parent key,
 * namespace and tokens, and a lookup compares them before reusing the block.
 *
 * A cached block whose last reference goes stays cached ("free but cached") on an LRU list; it is handed out
 * again, and forgotten, only when no never-cached free block is left. So free = uncached free + cached
 * evictable, and an idle engine has every block free whatever its cache holds.
 *
 * Only full blocks are shared, and a shared block is never written: a lookup stops one token short of the
 * sequence's end (its last token must be recomputed for its logits), so the block holding the last token is
 * always the sequence's own. For a prompt that is an exact multiple of the block size that means the whole
 * last block is recomputed, not only its last token: writing into a shared block would need a device copy
 * (copy on write), which the model interface does not offer yet; the cost is at most block_size - 1 tokens.
 */
#ifndef SL_KV_BLOCKS_H
#define SL_KV_BLOCKS_H

#include <stdint.h>

#include "sluice/sluice.h"

typedef struct sl_kv_blocks sl_kv_blocks;

/* One sequence's block table. The caller owns ids (sized for the sequence's longest length) and starts with
 * n = 0; everything else is the manager's. */
typedef struct sl_kv_table {
    int32_t *ids;       /* [capacity] block ids in position order: token p lives in ids[p / block_size] */
    int n;              /* blocks held (one reference each) */
    int n_hashed;       /* leading blocks whose chain key is known (full and computed, or taken from the cache) */
    uint64_t tail_key;  /* chain key of block n_hashed - 1 (the parent of the next full block) */
} sl_kv_table;

/* A pool of n_blocks blocks of block_size tokens; enable_caching = 0 makes lookups miss and nothing cached. */
sl_status sl_kv_blocks_create(int n_blocks, int block_size, int enable_caching, sl_kv_blocks **out);
void sl_kv_blocks_free(sl_kv_blocks *m);

/* The namespace of a tenant's blocks (NULL or "" = the default tenant). */
uint64_t sl_kv_namespace(const char *tenant);

/* For an empty table: takes a reference on every cached full block of tokens[0 .. n_tokens) and returns how
 * many tokens they cover (a multiple of block_size; possibly all n_tokens, when the caller still computes the
 * last one for its logits without writing into the shared block). */
int sl_kv_blocks_match(sl_kv_blocks *m, sl_kv_table *t, uint64_t ns, const int32_t *tokens, int n_tokens);

/* Makes t hold blocks for its first n_tokens tokens. Returns 1, or 0 when too few blocks are free (then t is
 * unchanged). Evicts least-recently-used cached blocks only when no uncached free block is left. */
int sl_kv_blocks_grow(sl_kv_blocks *m, sl_kv_table *t, int n_tokens);

/* Tells the manager that tokens[0 .. n_computed) of t's sequence are in the cache: blocks that became full are
 * registered in the prefix cache (unless an identical block already is: then this one stays private). */
void sl_kv_blocks_commit(sl_kv_blocks *m, sl_kv_table *t, uint64_t ns, const int32_t *tokens, int n_computed);

/* Drops t's references (last block first, so a chain's tail is evicted before its head); t becomes empty. */
void sl_kv_blocks_release(sl_kv_blocks *m, sl_kv_table *t);

int sl_kv_blocks_n_total(const sl_kv_blocks *m);
/* Blocks a grow can use: uncached free + cached with no reference. */
int sl_kv_blocks_n_free(const sl_kv_blocks *m);
/* Blocks registered in the prefix cache, referenced or not. */
int sl_kv_blocks_n_cached(const sl_kv_blocks *m);
/* References held on block id (tests and invariant checks). */
int sl_kv_blocks_refs(const sl_kv_blocks *m, int32_t id);

#endif /* SL_KV_BLOCKS_H */
