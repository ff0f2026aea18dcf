/*
 * comm.h — collective communication between the ranks of one tensor-parallel replica (DESIGN.md §4, §5).
 *
 * A communicator is `{const sl_comm_iface *iface; void *ctx}` for ONE rank: each rank holds its own handle
 * and calls every collective with the same arguments in the same order as the others (as with NCCL). Buffers
 * are in the memory of the rank's backend (host memory for CPU ranks, device memory for CUDA ranks).
 *
 * Implementations:
 *   local   (comm_local.c)  ranks are threads of this process on the CPU backend; the reduction adds the
 *                           ranks' buffers in rank order, so every rank gets bit-identical results, run after
 *                           run (tests compare TP logits against TP 1 within float tolerance only because a
 *                           sum split over ranks is ordered differently from the unsplit one).
 *   nccl    (comm_nccl_cuda.c) GPUs through NCCL, loaded with dlopen (the binary must start without it);
 *                           ranks on several hosts bootstrap by sharing NCCL's unique id over TCP (comm_tcp.c,
 *                           below).
 *   cuda1   (comm_cuda1_cuda.c) several ranks on ONE GPU (one stream each), where NCCL refuses two ranks per
 *                           device: all-reduce by device copies and an add kernel, so the CUDA
 *                           tensor-parallel path runs on a single-GPU machine.
 * A build without CUDA has stubs of the GPU constructors that return SL_UNSUPPORTED (comm_nocuda.c).
 *
 * Every call returns a status; a failed collective leaves the communicator unusable (the replica that owns it
 * leaves service, as for any device error). A rank that fails OUTSIDE a collective calls sl_comm_abort(), so
 * the other ranks, blocked in or later entering a collective, return SL_CANCELLED instead of waiting forever
 * (local and cuda1, whose ranks share the group's state). NCCL's abort reaches only the calling rank's own
 * communicator: that rank's later collectives are refused with SL_CANCELLED, but a peer already blocked in NCCL
 * returns only when its own rank is aborted too, so the caller aborts every rank of the group.
 */
#ifndef SL_COMM_H
#define SL_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/sluice.h"

typedef struct sl_comm_stats {
    uint64_t all_reduces;    /* collectives of each kind this rank took part in */
    uint64_t all_gathers;
    uint64_t broadcasts;
    uint64_t barriers;
    uint64_t bytes_reduced;  /* payload bytes of all-reduces */
} sl_comm_stats;

typedef struct sl_comm_iface {
    const char *name;
    void (*free)(void *ctx);
    /* buf[n] = sum over ranks of buf[n], f32, in place */
    sl_status (*all_reduce_sum)(void *ctx, float *buf, size_t n);
    /* out[rank * n + i] = in_of_rank[i]: every rank ends with all ranks' n floats, in rank order. `in` may be
     * out + rank * n (in place). */
    sl_status (*all_gather)(void *ctx, const float *in, float *out, size_t n);
    /* buf of root copied to every rank, bytes */
    sl_status (*broadcast)(void *ctx, void *buf, size_t bytes, int root);
    sl_status (*barrier)(void *ctx);
    /* Optional: called by a rank that failed outside a collective; every rank's pending and later
     * collectives of this group return SL_CANCELLED (NCCL: ncclCommAbort). Safe from any thread. */
    void (*abort)(void *ctx);
} sl_comm_iface;

typedef struct sl_comm {
    const sl_comm_iface *iface;
    void *ctx;
    int rank;
    int size;
    sl_comm_stats stats; /* counted by the dispatchers below */
} sl_comm;

/* Dispatchers: check, count, then call. */
sl_status sl_comm_all_reduce_sum(sl_comm *c, float *buf, size_t n);
sl_status sl_comm_all_gather(sl_comm *c, const float *in, float *out, size_t n);
sl_status sl_comm_broadcast(sl_comm *c, void *buf, size_t bytes, int root);
sl_status sl_comm_barrier(sl_comm *c);
void sl_comm_abort(sl_comm *c);
void sl_comm_free(sl_comm *c);

/* ---- in-process ranks (CPU) ------------------------------------------------------------------------------ */
/* Creates `size` communicators sharing one group, comms[r] for rank r; each is then used by one thread.
 * Each is released with sl_comm_free (the group goes with the last one). */
sl_status sl_comm_local_create(int size, sl_comm *comms);
/* After an abort, makes the group usable again. Only when no rank is inside a collective (the owner of the
 * ranks' threads has joined them all), which is why it is not part of the interface. Returns 1 when c is an
 * in-process communicator (now reset), 0 otherwise (a GPU communicator stays failed). */
int sl_comm_local_reset(sl_comm *c);

/* ---- several ranks on one GPU -------------------------------------------------------------------------- */
struct sl_backend;
/* ranks[r] is rank r's CUDA backend, all on one device (their streams carry the collectives); comms[r] is
 * filled for rank r, each then used by one thread. */
sl_status sl_comm_cuda1_create(int size, struct sl_backend *const *ranks, sl_comm *comms);

/* ---- NCCL (GPU ranks) ------------------------------------------------------------------------------------ */
#define SL_COMM_ID_BYTES 128 /* ncclUniqueId's size */

/* Rank 0 makes the group's id (ncclGetUniqueId) and shares it (sl_comm_id_publish or any other way). */
sl_status sl_comm_nccl_unique_id(uint8_t id[SL_COMM_ID_BYTES]);
/* Joins the group as `rank` of `size` on CUDA device `device`; every collective is enqueued on `stream` (a
 * cudaStream_t, the rank's backend stream; NULL = the default stream). All ranks must call it concurrently
 * (ncclCommInitRank blocks until the group is complete). SL_UNSUPPORTED without CUDA or libnccl.so.2. */
sl_status sl_comm_nccl_create(const uint8_t id[SL_COMM_ID_BYTES], int rank, int size, int device, void *stream,
                              sl_comm *out);

/* ---- NCCL unique-id exchange over TCP -------------------------------------------------------------------- */
/* Rank 0: listens on host:port, sends id[SL_COMM_ID_BYTES] to each of n_peers ranks that connect, then
 * returns. Other ranks: connect (retrying until timeout_ms) and receive it. Every failure (refused, timeout,
 * short read, a peer speaking another protocol) is a status naming host:port. A connection that does not
 * speak the protocol (garbage, early close) is dropped and not counted; the publisher keeps waiting for real
 * peers until its timeout. host NULL or "" = every local address (publish) / 127.0.0.1 (fetch). */
sl_status sl_comm_id_publish(const char *host, int port, const uint8_t *id, int n_peers, int timeout_ms);
sl_status sl_comm_id_fetch(const char *host, int port, uint8_t *id, int timeout_ms);

/* The publisher in two halves, so the port can be 0 (the system picks one) and be told to the peers before
 * the publisher waits: open binds and listens, serve sends the id to n_peers peers, close releases. */
typedef struct sl_comm_id_server sl_comm_id_server;
sl_status sl_comm_id_server_open(const char *host, int port, sl_comm_id_server **out, int *bound_port /* OUT */);
sl_status sl_comm_id_server_serve(sl_comm_id_server *s, const uint8_t *id, int n_peers, int timeout_ms);
void sl_comm_id_server_close(sl_comm_id_server *s);

#endif /* SL_COMM_H */
