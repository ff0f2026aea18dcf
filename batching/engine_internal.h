/*
 * engine_internal.h — what the engine shows of its replicas beyond the public API, for tests and tools that
 * link the batching layer directly (the server and the bindings see only include/sluice/sluice.h).
 */
#ifndef SL_ENGINE_INTERNAL_H
#define SL_ENGINE_INTERNAL_H

#include "sluice/sluice.h"

/* One replica's counters and gauges (num_replicas = 1, num_replicas_ready = whether it is in service). */
sl_status sl__engine_replica_stats(sl_engine_t *e, int index, sl_engine_stats *s);

/* The KV element type parameters ask for: SL_KV_AUTO resolved by the precision (f16 fast, f32 exact). */
sl_kv_dtype sl__engine_kv_dtype(const sl_engine_params *p);

#endif /* SL_ENGINE_INTERNAL_H */
