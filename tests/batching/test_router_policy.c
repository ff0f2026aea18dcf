/*
 * test_router_policy.c — the replica router's placement policy (batching/router.h) on made-up snapshots: no
 * model, no threads, microseconds. Each test states the situation a user would see (one replica slow, one
 * busy, one dead) and checks where a request lands, or that it is refused with the right status.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "router.h"
#include "sluice/sluice.h"

/* An idle, measured replica with plenty of KV room. */
static sl_router_replica idle(double step_us) {
    return (sl_router_replica){.alive = 1, .waiting_tokens = 0, .n_running = 0, .max_seqs = 64,
                               .free_blocks = 1000, .block_size = 16, .step_us = step_us, .step_token_budget = 8};
}

static int pick(const sl_router_replica *reps, int n, int n_prompt, int max_tokens, int pinned, sl_status *st_out) {
    sl_router_request rq = {.n_prompt = n_prompt, .max_tokens = max_tokens, .n = 1, .pinned = pinned};
    int at = -2;
    sl_status st = sl_router_pick(reps, n, &rq, &at, NULL);
    if (st_out) *st_out = st;
    return at;
}

Test(router_policy, fast_replica_with_longer_queue_beats_idle_slow_one) {
    sl_router_replica reps[2] = {idle(100000), idle(10000)}; /* 100 ms vs 10 ms a step */
    reps[1].waiting_tokens = 400;                            /* 50 steps of queued prefill at 8 tokens a step */
    /* slow: ceil((0 + 32) / 8) + 16 = 20 steps x 100 ms = 2 s; fast: ceil((400 + 32) / 8) + 16 = 70 steps x 10 ms
     * = 0.7 s */
    cr_assert_eq(pick(reps, 2, 32, 16, -1, NULL), 1);
    /* a queue long enough to outweigh the speed sends it to the slow one: ceil(5032 / 8) + 16 = 645 steps = 6.45 s */
    reps[1].waiting_tokens = 5000;
    cr_assert_eq(pick(reps, 2, 32, 16, -1, NULL), 0);
}

Test(router_policy, shorter_queue_wins_between_equal_devices) {
    sl_router_replica reps[3] = {idle(5000), idle(5000), idle(5000)};
    reps[0].waiting_tokens = 300;
    reps[1].waiting_tokens = 100;
    reps[2].waiting_tokens = 200;
    cr_assert_eq(pick(reps, 3, 10, 10, -1, NULL), 1);
}

Test(router_policy, prediction_is_the_documented_formula) {
    sl_router_replica r = idle(2000);
    r.waiting_tokens = 56;
    r.step_token_budget = 16;
    sl_router_request rq = {.n_prompt = 8, .max_tokens = 10, .n = 1, .pinned = -1};
    /* ceil((56 + 8) / 16) = 4 steps of prefill + 10 decode steps, 2 ms each */
    cr_assert_float_eq(sl_router_predict_us(&r, &rq, 1.0), 14 * 2000.0, 1e-6);
    /* no KV room: it waits about one more generation */
    r.free_blocks = 0;
    cr_assert_float_eq(sl_router_predict_us(&r, &rq, 1.0), 24 * 2000.0, 1e-6);
    /* a partial step counts whole: 57 + 8 tokens need 5 steps of 16 */
    r.free_blocks = 1000;
    r.waiting_tokens = 57;
    cr_assert_float_eq(sl_router_predict_us(&r, &rq, 1.0), 15 * 2000.0, 1e-6);
}

Test(router_policy, full_kv_or_running_set_sends_the_request_elsewhere) {
    sl_router_replica reps[2] = {idle(1000), idle(1000)};
    reps[1].waiting_tokens = 8; /* slightly busier, but has room */
    reps[0].free_blocks = 1;    /* 64 + 64 tokens need 8 blocks of 16 */
    cr_assert_eq(pick(reps, 2, 64, 64, -1, NULL), 1);
    reps[0].free_blocks = 1000;
    reps[0].n_running = 64; /* running set full */
    cr_assert_eq(pick(reps, 2, 64, 64, -1, NULL), 1);
}

Test(router_policy, dead_replica_gets_nothing_even_when_idle) {
    sl_router_replica reps[3] = {idle(1000), idle(1), idle(1000)};
    reps[0].waiting_tokens = 5000;
    reps[2].waiting_tokens = 6000;
    reps[1].alive = 0; /* looks idle and fastest */
    for (int i = 0; i < 50; i++) cr_assert_neq(pick(reps, 3, 1 + i, 1 + i, -1, NULL), 1);
    cr_assert_eq(pick(reps, 3, 10, 10, -1, NULL), 0);
}

Test(router_policy, ties_go_to_least_work_then_lowest_index) {
    /* unmeasured, idle: the same prediction everywhere */
    sl_router_replica reps[3] = {idle(0), idle(0), idle(0)};
    for (int i = 0; i < 3; i++) reps[i].step_us = 0;
    cr_assert_eq(pick(reps, 3, 10, 10, -1, NULL), 0, "full tie: the lowest index");
    cr_assert_eq(pick(reps, 3, 10, 10, -1, NULL), 0, "and the same answer again");
    /* same prediction (running sequences do not change the step count) but replica 0 has more work */
    reps[0].n_running = 3;
    reps[1].n_running = 1;
    reps[2].n_running = 1;
    cr_assert_eq(pick(reps, 3, 10, 10, -1, NULL), 1);
}

Test(router_policy, burst_on_idle_replicas_spreads) {
    /* what the engine does: each placed request adds its prompt to its replica's queue */
    sl_router_replica reps[2] = {idle(0), idle(0)};
    reps[0].step_us = reps[1].step_us = 0;
    int count[2] = {0, 0};
    for (int i = 0; i < 10; i++) {
        int at = pick(reps, 2, 20, 8, -1, NULL);
        cr_assert(at == 0 || at == 1);
        count[at]++;
        reps[at].waiting_tokens += 20;
    }
    cr_assert_eq(count[0], 5);
    cr_assert_eq(count[1], 5);
}

Test(router_policy, unmeasured_replica_borrows_the_measured_step_time) {
    sl_router_replica reps[2] = {idle(4000), idle(0)}; /* 1: no step yet, taken as 4 ms too: the queues decide */
    reps[0].waiting_tokens = 80;
    cr_assert_eq(pick(reps, 2, 8, 8, -1, NULL), 1);
    reps[0].waiting_tokens = 0;
    reps[1].waiting_tokens = 80;
    cr_assert_eq(pick(reps, 2, 8, 8, -1, NULL), 0);
}

/* The engine's real settings (a 512-token budget): a busy replica (40 sequences running, 30 ms steps) and a
 * fresh one that never stepped. The fresh one must get the work: it is predicted no slower (the busy one's
 * step time stands in for it) and carries less, and a queue on the busy one only widens the gap. */
Test(router_policy, fresh_replica_is_not_starved_by_a_busy_one) {
    sl_router_replica reps[2] = {idle(30000), idle(0)};
    reps[0].step_token_budget = reps[1].step_token_budget = 512;
    reps[0].n_running = 40;
    cr_assert_eq(pick(reps, 2, 500, 256, -1, NULL), 1);
    reps[0].waiting_tokens = 16000;
    cr_assert_eq(pick(reps, 2, 500, 256, -1, NULL), 1);
    /* measured on light steps (20 ms) it still beats the busy one */
    reps[1].step_us = 20000;
    reps[0].waiting_tokens = 0;
    cr_assert_eq(pick(reps, 2, 500, 256, -1, NULL), 1);
}

Test(router_policy, pinning_is_obeyed_and_checked) {
    sl_router_replica reps[3] = {idle(1000), idle(1000), idle(1000)};
    reps[2].waiting_tokens = 100000; /* clearly the worst choice */
    sl_status st;
    cr_assert_eq(pick(reps, 3, 10, 10, 2, &st), 2);
    cr_assert_eq(st, SL_OK);
    cr_assert_eq(pick(reps, 3, 10, 10, 3, &st), -1);
    cr_assert_eq(st, SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "replica 3 does not exist"), "%s", sl_last_error());
    pick(reps, 3, 10, 10, -7, &st);
    cr_assert_eq(st, SL_INVALID_ARGUMENT);
    reps[2].alive = 0;
    cr_assert_eq(pick(reps, 3, 10, 10, 2, &st), -1);
    cr_assert_eq(st, SL_DEVICE);
    cr_assert(strstr(sl_last_error(), "replica 2 is out of service"), "%s", sl_last_error());
}

Test(router_policy, all_dead_is_an_error) {
    sl_router_replica reps[2] = {idle(1000), idle(1000)};
    reps[0].alive = reps[1].alive = 0;
    sl_status st;
    cr_assert_eq(pick(reps, 2, 10, 10, -1, &st), -1);
    cr_assert_eq(st, SL_DEVICE);
    cr_assert(strstr(sl_last_error(), "every replica is out of service"), "%s", sl_last_error());
}
