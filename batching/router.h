/*
 * router.h — which replica a new request goes to (DESIGN.md §4). Pure policy, like the scheduler: it sees one
 * snapshot per replica and the request, and never a thread, a lock or a device, so it is tested with made-up
 * snapshots in microseconds.
 *
 * The replica chosen is the one predicted to FINISH the request first, not merely the least loaded one: a
 * replica on a faster device with a longer queue can beat an idle slow one. For replica i:
 *
 *   finish_us(i) = S_i * ( ceil((W_i + P) / B_i)  +  M  +  (room_i ? 0 : M) )
 *
 *   S_i   measured mean step time (EWMA, microseconds). Unmeasured (no step yet): the mean of the measured
 *         alive replicas, or 1 when none is measured (then only token counts rank the replicas).
 *   B_i   the replica's token budget per step (max_num_batched_tokens): the scheduler prefills at most that
 *         many prompt tokens a step, so ceil((W_i + P) / B_i) steps clear the prefill queued ahead (W_i prompt
 *         tokens of requests not yet scheduled) and this request's own prompt P.
 *   M     tokens the request may generate: each takes one step, whatever else shares it (decodes are
 *         batched, so the running sequences lengthen each step, which S_i measures, not the step count).
 *   room  the replica has KV blocks for the request's n sequences of P + M tokens and a free slot in its
 *         running set. Without room the request waits for running sequences to finish and free theirs; we do
 *         not know how far along they are, so the wait is taken as one generation of the same length (M).
 *
 * Why this shape: it needs only what the engine measures or knows anyway (step time, budget, queue, free
 * blocks), it puts device speed and queue length on one scale (microseconds), and it is monotone in each: a
 * longer queue or a slower step never makes a replica look better. The step count uses the budget, not a
 * measured tokens-per-step: that measurement depends on the replica's own load (a busy replica runs big
 * steps), and an idle or never-measured replica would look many times dearer per prompt token than a busy
 * one, so traffic would pile onto the busy replica. The load a replica carries shows in its step time instead.

 * Ties (equal predictions, e.g. every replica idle and unmeasured) go to the replica with the least work
 * (waiting prompt tokens plus running sequences), then to the lowest index: deterministic, and a burst of
 * identical requests spreads over idle replicas instead of piling onto replica 0.
 *
 * A dead replica (its device failed) is never picked, however idle it looks. A request pinned to a replica
 * goes there or is refused: SL_INVALID_ARGUMENT for a replica that does not exist, SL_DEVICE for one that is
 * out of service. With every replica dead the answer is SL_DEVICE.
 */
#ifndef SL_ROUTER_H
#define SL_ROUTER_H

#include <stdint.h>

#include "sluice/sluice.h"

/* What the router knows of one replica at the moment of the decision. */
typedef struct sl_router_replica {
    int alive;              /* 0 once its device failed: it takes nothing any more */
    int64_t waiting_tokens; /* prompt tokens of requests placed on it and not yet scheduled */
    int n_running;          /* sequences in its running set */
    int max_seqs;           /* its running-set bound (max_num_seqs); 0 = unbounded */
    int64_t free_blocks;    /* free KV blocks (cached blocks nobody holds count as free) */
    int block_size;         /* tokens per KV block; 0 = do not check KV room */
    double step_us;         /* EWMA of its engine step time, microseconds; <= 0: not measured yet */
    int step_token_budget;  /* tokens one step may run (max_num_batched_tokens); < 1 counts as 1 */
} sl_router_replica;

typedef struct sl_router_request {
    int n_prompt;   /* prompt tokens */
    int max_tokens; /* tokens it may generate (the engine passes the context bound for "up to the context") */
    int n;          /* sequences (choices); < 1 counts as 1 */
    int pinned;     /* replica index, or -1 = any */
} sl_router_request;

/* Picks the replica for req among reps[0..n_reps). *out is the index; *finish_us (may be NULL) the prediction.
 * Errors (with sl_last_error set): pinned out of range (SL_INVALID_ARGUMENT), pinned or all replicas dead
 * (SL_DEVICE). */
sl_status sl_router_pick(const sl_router_replica *reps, int n_reps, const sl_router_request *req, int *out,
                         double *finish_us);

/* The prediction above for one replica; prior_step_us stands in for an unmeasured step time. */
double sl_router_predict_us(const sl_router_replica *r, const sl_router_request *req, double prior_step_us);

#endif /* SL_ROUTER_H */
