/*
 * comm.c — the dispatchers in front of every communicator (see comm.h): argument checks and the per-rank
 * counters (tests read them to prove a forward did exactly the collectives it should), then the call.
 */
#include "comm.h"

#include "sl_util.h"

static sl_status sl__comm_check(const sl_comm *c, const char *op) {
    if (!c || !c->iface) return sl__errorf(SL_INVALID_ARGUMENT, "%s on a communicator that was never created", op);
    return SL_OK;
}

sl_status sl_comm_all_reduce_sum(sl_comm *c, float *buf, size_t n) {
    sl_status st = sl__comm_check(c, "all-reduce");
    if (st != SL_OK) return st;
    if (n > 0 && !buf) return sl__errorf(SL_INVALID_ARGUMENT, "all-reduce of %zu floats with no buffer", n);
    c->stats.all_reduces++;
    c->stats.bytes_reduced += (uint64_t)n * sizeof(float);
    return c->iface->all_reduce_sum(c->ctx, buf, n);
}

sl_status sl_comm_all_gather(sl_comm *c, const float *in, float *out, size_t n) {
    sl_status st = sl__comm_check(c, "all-gather");
    if (st != SL_OK) return st;
    if (n > 0 && (!in || !out)) return sl__errorf(SL_INVALID_ARGUMENT, "all-gather of %zu floats with no buffer", n);
    c->stats.all_gathers++;
    return c->iface->all_gather(c->ctx, in, out, n);
}

sl_status sl_comm_broadcast(sl_comm *c, void *buf, size_t bytes, int root) {
    sl_status st = sl__comm_check(c, "broadcast");
    if (st != SL_OK) return st;
    if (root < 0 || root >= c->size)
        return sl__errorf(SL_INVALID_ARGUMENT, "broadcast from root %d outside [0, %d)", root, c->size);
    if (bytes > 0 && !buf) return sl__errorf(SL_INVALID_ARGUMENT, "broadcast of %zu bytes with no buffer", bytes);
    c->stats.broadcasts++;
    return c->iface->broadcast(c->ctx, buf, bytes, root);
}

sl_status sl_comm_barrier(sl_comm *c) {
    sl_status st = sl__comm_check(c, "barrier");
    if (st != SL_OK) return st;
    c->stats.barriers++;
    return c->iface->barrier(c->ctx);
}

void sl_comm_abort(sl_comm *c) {
    if (c && c->iface && c->iface->abort) c->iface->abort(c->ctx);
}

void sl_comm_free(sl_comm *c) {
    if (!c) return;
    if (c->iface && c->iface->free) c->iface->free(c->ctx);
    c->iface = NULL;
    c->ctx = NULL;
}
