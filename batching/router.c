/*
 * router.c — the replica router's policy (router.h says what it predicts and why). A linear pass over the
 * replicas: the engine has a handful of them, and the decision runs once per submitted request.
 */
#include "router.h"

#include "sl_util.h"

static int64_t router_blocks_for(int64_t tokens, int block_size) { return (tokens + block_size - 1) / block_size; }

double sl_router_predict_us(const sl_router_replica *r, const sl_router_request *req, double prior_step_us) {
    double step_us = r->step_us > 0 ? r->step_us : prior_step_us;
    int64_t budget = r->step_token_budget >= 1 ? r->step_token_budget : 1;
    int n = req->n < 1 ? 1 : req->n;
    double m = req->max_tokens > 0 ? (double)req->max_tokens : 0.0;
    int room = r->max_seqs <= 0 || r->n_running + n <= r->max_seqs;
    if (room && r->block_size > 0) {
        int64_t need = (int64_t)n * router_blocks_for((int64_t)req->n_prompt + (int64_t)m, r->block_size);
        room = need <= r->free_blocks;
    }
    int64_t queued = r->waiting_tokens + (int64_t)req->n_prompt;
    double steps = (double)((queued + budget - 1) / budget) + m + (room ? 0.0 : m);
    return step_us * steps;
}

sl_status sl_router_pick(const sl_router_replica *reps, int n_reps, const sl_router_request *req, int *out,
                         double *finish_us) {
    *out = -1;
    if (n_reps < 1) return sl__errorf(SL_INTERNAL, "the engine has no replica");
    if (req->pinned != -1) {
        if (req->pinned < 0 || req->pinned >= n_reps)
            return sl__errorf(SL_INVALID_ARGUMENT, "replica %d does not exist (this engine has %d: 0..%d)",
                              req->pinned, n_reps, n_reps - 1);
        if (!reps[req->pinned].alive)
            return sl__errorf(SL_DEVICE, "replica %d is out of service (its device failed)", req->pinned);
        *out = req->pinned;
        if (finish_us) *finish_us = sl_router_predict_us(&reps[req->pinned], req, 1.0);
        return SL_OK;
    }
    /* The stand-in for unmeasured step times: what the measured alive replicas take on average. */
    double sum = 0;
    int n_measured = 0, n_alive = 0;
    for (int i = 0; i < n_reps; i++) {
        if (!reps[i].alive) continue;
        n_alive++;
        if (reps[i].step_us > 0) {
            sum += reps[i].step_us;
            n_measured++;
        }
    }
    if (n_alive == 0) return sl__errorf(SL_DEVICE, "every replica is out of service (%d failed)", n_reps);
    double prior = n_measured ? sum / n_measured : 1.0;
    int best = -1;
    double best_us = 0;
    int64_t best_load = 0;
    for (int i = 0; i < n_reps; i++) {
        if (!reps[i].alive) continue;
        double us = sl_router_predict_us(&reps[i], req, prior);
        int64_t load = reps[i].waiting_tokens + reps[i].n_running;
        if (best < 0 || us < best_us || (us == best_us && load < best_load)) {
            best = i;
            best_us = us;
            best_load = load;
        }
    }
    *out = best;
    if (finish_us) *finish_us = best_us;
    return SL_OK;
}
