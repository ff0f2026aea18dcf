/*
 * placement.h — the `devices` and `tensor_parallel_size` settings turned into replicas (DESIGN.md §4).
 *
 * `devices` lists one entry per rank: `cpu`, a CUDA ordinal (`0`) or `cuda:N`. Consecutive groups of
 * tensor_parallel_size entries form one replica, which loads its own copy of the model with those ranks; the
 * replicas serve side by side (data parallel). "cpu,cpu" is two CPU replicas; "0,1,2,3" with TP 2 is two
 * replicas of two GPUs each. Parsing is pure (no device is probed here), so every refusal is tested without
 * a GPU; whether the CUDA ordinals exist is checked separately against a device count the caller measured.
 */
#ifndef SL_PLACEMENT_H
#define SL_PLACEMENT_H

#include "model.h"
#include "sluice/sluice.h"

/* Most entries in `devices`: past any host's GPU count, and every CPU entry loads a whole model. */
#define SL_PLACEMENT_MAX_DEVICES 256
/* Most ranks in one replica (config.h says why). */
#define SL_PLACEMENT_MAX_TP 64

typedef struct sl_placement {
    int n_replicas;
    int tp_size;
    int *devices;       /* [n_replicas][tp_size]: SL_DEVICE_CPU or a CUDA ordinal; replica r's ranks at r*tp_size */
    int n_cpu_replicas; /* replicas whose ranks are on the CPU (they share the CPU's threads) */
    int max_cuda;       /* largest CUDA ordinal named, -1 if none */
} sl_placement;

/* devices NULL or "" means "cpu". On failure nothing is allocated and sl_last_error() names the setting and
 * the entry at fault. */
sl_status sl_placement_parse(const char *devices, int tp_size, sl_placement *out);
/* Refuses CUDA ordinals beyond the n_cuda devices the machine has. */
sl_status sl_placement_check_cuda(const sl_placement *p, int n_cuda);
void sl_placement_free(sl_placement *p);
/* "cpu", "cuda:0", "cuda:0+cuda:1" for replica r, into buf (for messages). */
void sl_placement_describe(const sl_placement *p, int r, char *buf, size_t cap);

#endif /* SL_PLACEMENT_H */
