/*
 * test_sched_policy.c — the scheduler's policy with a fake model: no weights, no forward, microseconds a step.
 *
 * schedule() is pure policy (DESIGN.md §3), so these tests include engine.c to reach it and its statics (the
 * archive's engine.o is then never linked in, as test_kv_collision.c does with kv_blocks.c), build an engine
 * struct by hand around a real block manager of a chosen size, and drive intake() → schedule() → a fake
 * postprocess for many steps. The fake postprocess does what the real one does to the scheduler's state:
 * advance n_computed by what was scheduled, commit full blocks, append a token when a sequence's chunk reached
 * its end, and finish a sequence after its max_tokens. Its token at position p of request id is
 * fake_token(id, p), so a sequence that was preempted and recomputed can be checked token by token.
 *
 * Every step is checked against the invariants a user would notice (check_step): the token budget and the
 * sequence cap, decodes placed before any prefill chunk, every running decode getting its token while the
 * budget allows, preempted sequences holding no blocks and keeping what they generated, and block accounting.
 * The tests then check the policies themselves: chunked prefill beside running decodes, the preemption victim
 * (lowest priority, then newest) and its resumption, admission in priority order, and the aging bound stated
 * above SL_AGING_STEPS in engine.c. Queue-full refusal (sl_request_submit) is tested in test_engine_api.c.
 */
#include <criterion/criterion.h>

#include "../../batching/engine.c"
#include "testutil.h"

/* Enough for the aging test's stream (2 arrivals a step for a few hundred steps). */
#define H_MAX_REQS 1024

typedef struct harness {
    sl_engine_t *e;
    int allow_preempt;                 /* 0: any preemption fails the test (the pool is ample) */
    sl_request_t *reqs[H_MAX_REQS];    /* [n_reqs] in submission order; id = index */
    int n_reqs;
    int64_t first_step[H_MAX_REQS];    /* step of first admission, -1 before */
    int64_t finish_step[H_MAX_REQS];   /* step whose postprocess finished it, -1 before */
    int admit_order[H_MAX_REQS];       /* ids in order of first admission */
    int n_admitted;
    int n_finished;
    /* per step, filled by h_step */
    uint8_t was_running[H_MAX_REQS];   /* running when the step began */
    uint8_t was_decode[H_MAX_REQS];    /* running with exactly one token to compute when the step began */
    uint8_t preempted[H_MAX_REQS];     /* was running, lost its computed tokens (now waiting, or re-admitted) */
    int computed_before[H_MAX_REQS];   /* n_computed when the step began */
    int n_preempted_total;             /* sequences moved back to waiting, by preempt_one or by yielding */
} harness;

static int32_t fake_token(int id, int pos) { return (int32_t)(((uint32_t)id * 7919u + (uint32_t)pos * 31u) % 50000u); }

static int req_id(const sl_request_t *r) { return (int)(intptr_t)r->user_data; }

/* An engine with no model: a block manager of n_blocks blocks of block_size tokens, and the step's knobs. */
static harness *h_create(int n_blocks, int block_size, int max_num_seqs, int max_batched, int caching) {
    harness *h = calloc(1, sizeof *h);
    cr_assert(h);
    sl_engine_t *e = sl__calloc(1, sizeof *e);
    cr_assert(e);
    sl_engine_params_init(&e->params);
    e->params.max_num_seqs = max_num_seqs;
    e->params.max_num_batched_tokens = max_batched;
    e->params.block_size = block_size;
    e->params.enable_prefix_caching = caching;
    e->block_size = block_size;
    e->max_len = 1 << 20; /* no model limit: requests are sized by the tests */
    e->n_blocks_total = n_blocks;
    cr_assert_eq(sl_kv_blocks_create(n_blocks, block_size, caching, &e->kv), SL_OK);
    atomic_store(&e->kv_free, n_blocks);
    e->running = sl__calloc((size_t)max_num_seqs, sizeof(sl_seq *));
    cr_assert(e->running);
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->stats_mu, NULL);
    sl_engine_stats_init(&e->stats);
    h->e = e;
    for (int i = 0; i < H_MAX_REQS; i++) h->first_step[i] = h->finish_step[i] = -1;
    return h;
}

static void h_free(harness *h) {
    sl_engine_t *e = h->e;
    for (int i = 0; i < h->n_reqs; i++) {
        sl_request_t *r = h->reqs[i];
        free(r->seqs[0].tokens);
        free(r->seqs[0].kv.ids);
        free(r->seqs);
        free(r->prompt);
        free(r);
    }
    sl_kv_blocks_free(e->kv);
    free(e->running);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->stats_mu);
    free(e);
    free(h);
}

/* Queues a one-choice request in the inbox, as sl_request_submit does; the next step's intake() takes it.
 * Prompt tokens are fake_token(id, p) after the first shared_prefix positions, which are the same for all. */
static int h_submit(harness *h, int n_prompt, int max_tokens, int priority, int shared_prefix) {
    sl_engine_t *e = h->e;
    cr_assert_lt(h->n_reqs, H_MAX_REQS);
    int id = h->n_reqs;
    sl_request_t *r = sl__calloc(1, sizeof *r);
    cr_assert(r);
    r->eng = e;
    r->kind = SL_REQUEST_GENERATE;
    r->n = 1;
    r->n_prompt = n_prompt;
    r->max_tokens = max_tokens;
    r->prompt_logprobs = -1;
    r->logprobs = -1;
    r->priority = priority;
    r->user_data = (void *)(intptr_t)id;
    r->prompt = sl__malloc((size_t)n_prompt * sizeof(int32_t));
    r->seqs = sl__calloc(1, sizeof(sl_seq));
    cr_assert(r->prompt && r->seqs);
    for (int p = 0; p < n_prompt; p++) r->prompt[p] = p < shared_prefix ? (int32_t)(p + 1) : fake_token(id, p);
    sl_seq *s = &r->seqs[0];
    s->req = r;
    s->cap = n_prompt + max_tokens;
    s->tokens = sl__malloc((size_t)s->cap * sizeof(int32_t));
    s->kv.ids = sl__malloc((size_t)blocks_needed(e, s->cap) * sizeof(int32_t));
    cr_assert(s->tokens && s->kv.ids);
    memcpy(s->tokens, r->prompt, (size_t)n_prompt * sizeof(int32_t));
    s->n_tokens = n_prompt;
    s->logits_row = -1;
    if (e->inbox_tail)
        e->inbox_tail->next_in = r;
    else
        e->inbox_head = r;
    e->inbox_tail = r;
    e->n_inbox++;
    h->reqs[h->n_reqs++] = r;
    return id;
}

static sl_seq *h_seq(harness *h, int id) { return &h->reqs[id]->seqs[0]; }

/* What the real postprocess does to the scheduler's state, with fake_token() for sampling. */
static void fake_postprocess(harness *h) {
    sl_engine_t *e = h->e;
    for (int i = 0; i < e->n_running; i++) {
        sl_seq *s = e->running[i];
        sl_request_t *r = s->req;
        if (s->sched_n == 0) continue;
        s->n_computed += s->sched_n;
        sl_kv_blocks_commit(e->kv, &s->kv, r->kv_ns, s->tokens, s->n_computed);
        if (s->n_computed < s->n_tokens) continue;
        s->tokens[s->n_tokens] = fake_token(req_id(r), s->n_tokens);
        s->n_tokens++;
        s->n_generated++;
        if (s->n_generated >= r->max_tokens) {
            seq_free_blocks(e, s);
            s->state = SEQ_FINISHED;
            h->finish_step[req_id(r)] = e->n_steps - 1;
            h->n_finished++;
        }
    }
    for (int i = 0; i < e->n_running;) {
        if (e->running[i]->state == SEQ_FINISHED)
            running_remove(e, i);
        else
            i++;
    }
}

/* The invariants of every step, checked right after schedule(). */
static void check_step(harness *h, int n_rows) {
    sl_engine_t *e = h->e;
    const sl_engine_params *p = &e->params;
    cr_assert_leq(n_rows, p->max_num_batched_tokens, "step %lld: %d rows over the token budget %d",
                  (long long)e->n_steps, n_rows, p->max_num_batched_tokens);
    cr_assert_leq(e->n_running, p->max_num_seqs, "step %lld: %d running over max_num_seqs %d", (long long)e->n_steps,
                  e->n_running, p->max_num_seqs);
    int sum = 0, held = 0, n_decodes = 0, last_decode_row = -1, first_other_row = n_rows;
    for (int i = 0; i < e->n_running; i++) {
        sl_seq *s = e->running[i];
        int id = req_id(s->req);
        cr_assert_eq(s->state, SEQ_RUNNING);
        held += s->kv.n;
        if (h->was_decode[id]) n_decodes++;
        if (s->sched_n == 0) continue;
        sum += s->sched_n;
        cr_assert_leq(s->sched_n, s->n_tokens - s->n_computed, "scheduled past the sequence's end");
        cr_assert_leq(s->sched_row + s->sched_n, n_rows);
        cr_assert_geq(s->kv.n, blocks_needed(e, s->n_computed + s->sched_n), "scheduled tokens without KV blocks");
        if (h->was_decode[id])
            last_decode_row = SL_MAX(last_decode_row, s->sched_row);
        else
            first_other_row = SL_MIN(first_other_row, s->sched_row);
        if (h->first_step[id] < 0) {
            h->first_step[id] = e->n_steps;
            h->admit_order[h->n_admitted++] = id;
        }
    }
    cr_assert_eq(sum, n_rows, "rows of the step are not the sum of the scheduled chunks");
    cr_assert_lt(last_decode_row, first_other_row, "step %lld: a prefill chunk was placed before a running decode",
                 (long long)e->n_steps);
    /* Sequences that were running and lost their K/V: preempted (or yielded), blocks all given back, nothing
     * they generated lost. schedule() may re-admit such a sequence later in the same step (phase 2), as a
     * recompute chunk, so "now waiting" alone would miss it. */
    int n_pre = 0;
    for (int id = 0; id < h->n_reqs; id++) {
        sl_seq *s = h_seq(h, id);
        h->preempted[id] = h->was_running[id] && (s->state == SEQ_WAITING || s->n_computed < h->computed_before[id]);
        if (s->state == SEQ_WAITING) {
            cr_assert_eq(s->kv.n, 0, "a waiting sequence holds blocks");
            cr_assert_eq(s->n_computed, 0, "a waiting sequence claims computed tokens");
        }
        if (h->preempted[id]) {
            n_pre++;
            cr_assert_eq(s->n_tokens, s->req->n_prompt + s->n_generated, "a preempted sequence lost tokens");
        }
        /* Each running decode gets its token this step while the budget allows. */
        if (h->was_decode[id] && !h->preempted[id] && n_decodes <= p->max_num_batched_tokens)
            cr_assert_eq(s->sched_n, 1, "step %lld: running decode %d got no token", (long long)e->n_steps, id);
    }
    h->n_preempted_total += n_pre;
    if (!h->allow_preempt) cr_assert_eq(n_pre, 0, "step %lld: preemption with an ample pool", (long long)e->n_steps);
    /* Without prefix caching no block is shared: held + free is the whole pool. */
    if (!p->enable_prefix_caching)
        cr_assert_eq(held + sl_kv_blocks_n_free(e->kv), e->n_blocks_total, "blocks leaked or double-counted");
}

/* One engine step: intake, schedule, checks, fake postprocess. Returns the step's rows. */
static int h_step(harness *h) {
    sl_engine_t *e = h->e;
    intake(e);
    memset(h->was_running, 0, (size_t)h->n_reqs);
    memset(h->was_decode, 0, (size_t)h->n_reqs);
    for (int i = 0; i < e->n_running; i++) {
        sl_seq *s = e->running[i];
        int id = req_id(s->req);
        h->was_running[id] = 1;
        h->was_decode[id] = s->n_tokens - s->n_computed == 1;
        h->computed_before[id] = s->n_computed;
    }
    int n_rows = schedule(e);
    check_step(h, n_rows);
    /* engine_main fails the head in this case; with a pool that holds the longest sequence it never happens */
    cr_assert(n_rows > 0 || e->n_running > 0 || e->wait_head == NULL, "step %lld: nothing can run: deadlock",
              (long long)e->n_steps);
    e->n_steps++;
    fake_postprocess(h);
    return n_rows;
}

static void h_run_to_end(harness *h, int max_steps) {
    for (int i = 0; i < max_steps && h->n_finished < h->n_reqs; i++) h_step(h);
    cr_assert_eq(h->n_finished, h->n_reqs, "%d of %d requests finished within %d steps", h->n_finished, h->n_reqs,
                 max_steps);
}

/* Every request generated exactly its tokens, in order, whatever preemption did; every block is free. */
static void h_check_outputs(harness *h) {
    for (int id = 0; id < h->n_reqs; id++) {
        sl_seq *s = h_seq(h, id);
        sl_request_t *r = h->reqs[id];
        cr_assert_eq(s->n_generated, r->max_tokens);
        for (int p = 0; p < s->n_tokens; p++)
            cr_assert_eq(s->tokens[p], p < r->n_prompt ? r->prompt[p] : fake_token(id, p), "request %d token %d", id, p);
    }
    cr_assert_eq(sl_kv_blocks_n_free(h->e->kv), h->e->n_blocks_total, "blocks still held after every request ended");
    cr_assert_eq(h->e->n_running, 0);
    cr_assert_null(h->e->wait_head);
}

/* A random mix of prompt lengths, lengths and priorities arriving over time, with an ample pool. */
static void random_workload(int caching, uint64_t seed) {
    harness *h = h_create(4096, 4, 5, 48, caching);
    uint64_t rng = seed;
    int steps = 0;
    for (; steps < 40; steps++) {
        int arrivals = (int)(sl_test_rand_u64(&rng) % 4);
        for (int a = 0; a < arrivals; a++)
            h_submit(h, 1 + (int)(sl_test_rand_u64(&rng) % 150), 1 + (int)(sl_test_rand_u64(&rng) % 20),
                     (int)(sl_test_rand_u64(&rng) % 4), caching ? 24 : 0);
        h_step(h);
    }
    h_run_to_end(h, 5000);
    h_check_outputs(h);
    cr_assert_gt(h->n_reqs, 20);
    cr_assert_eq(h->e->stats.num_preemptions_total, 0);
    h_free(h);
}

Test(sched_policy, budgets_and_seq_cap_hold_every_step) {
    random_workload(0, 1);
    random_workload(0, 2);
    random_workload(1, 3); /* with prefix caching: shared prefixes skip prefill, budgets still hold */
}

Test(sched_policy, long_prompt_is_chunked_and_decodes_keep_running) {
    enum { BUDGET = 64, N_SHORT = 4, LONG = 1000 };
    harness *h = h_create(4096, 16, 8, BUDGET, 0);
    for (int i = 0; i < N_SHORT; i++) h_submit(h, 8, 60, 0, 0);
    h_step(h); /* the short prompts' prefill: every one now decodes */
    int long_id = h_submit(h, LONG, 2, 0, 0);
    sl_seq *L = h_seq(h, long_id);
    int prefill_steps = 0;
    while (L->n_computed < LONG) {
        int before[N_SHORT];
        for (int i = 0; i < N_SHORT; i++) before[i] = h_seq(h, i)->n_generated;
        int remaining = LONG - L->n_computed;
        h_step(h);
        prefill_steps++;
        /* every decode got its token in the same step as the chunk, and the chunk took the rest of the budget */
        for (int i = 0; i < N_SHORT; i++) {
            cr_assert_eq(h_seq(h, i)->n_generated, before[i] + 1, "decode %d stalled by the long prefill", i);
            cr_assert_lt(h_seq(h, i)->sched_row, N_SHORT, "decode %d placed after the prefill chunk", i);
        }
        cr_assert_eq(L->sched_n, SL_MIN(remaining, BUDGET - N_SHORT));
        cr_assert_eq(L->sched_row, N_SHORT);
    }
    cr_assert_eq(prefill_steps, (LONG + BUDGET - N_SHORT - 1) / (BUDGET - N_SHORT), "the prompt was not chunked");
    cr_assert_eq(L->n_generated, 1, "the token after the prompt comes with its last chunk");
    h_run_to_end(h, 1000);
    h_check_outputs(h);
    h_free(h);
}

/* Three requests fill a 3-block pool; A (the oldest) crosses a block boundary first and needs a fourth block.
 * B and C stay inside their one block, so whichever is preempted is the scheduler's choice alone. */
static void preempt_scenario(int prio_b, int prio_c, int expect_victim) {
    enum { BS = 4 };
    harness *h = h_create(3, BS, 3, 64, 0);
    h->allow_preempt = 1;
    int a = h_submit(h, 4, 8, 0, 0);      /* 12 tokens at the end: the whole pool, so it can always finish */
    int b = h_submit(h, 2, 8, prio_b, 0); /* positions 0..3 fit one block for two decodes */
    int c = h_submit(h, 2, 8, prio_c, 0);
    h_step(h); /* all three prefill; A now has 5 tokens and 4 computed */
    cr_assert_eq(h->e->n_running, 3);
    cr_assert_eq(sl_kv_blocks_n_free(h->e->kv), 0);
    int32_t victim_block = h_seq(h, expect_victim)->kv.ids[0];
    h_step(h);
    int survivor = expect_victim == b ? c : b;
    cr_assert(h->preempted[expect_victim], "the expected victim was not preempted");
    cr_assert_not(h->preempted[survivor], "the wrong sequence was preempted");
    cr_assert_not(h->preempted[a]);
    cr_assert_eq(h->e->stats.num_preemptions_total, 1);
    sl_seq *v = h_seq(h, expect_victim);
    cr_assert_eq(v->kv.n, 0);
    cr_assert_eq(v->n_generated, 1, "the victim keeps the token it generated");
    /* the victim's block went to A */
    cr_assert_eq(h_seq(h, a)->kv.n, 2);
    cr_assert_eq(h_seq(h, a)->kv.ids[1], victim_block);
    /* it resumes by recomputing prompt + generated tokens in one chunk, and finishes */
    int resumed = 0;
    for (int i = 0; i < 200 && h->n_finished < h->n_reqs; i++) {
        int before = v->state == SEQ_WAITING;
        int n_tokens = v->n_tokens;
        h_step(h);
        if (before && v->state == SEQ_RUNNING && v->sched_n > 0) {
            resumed++;
            cr_assert_eq(v->sched_n, n_tokens, "the recompute chunk is not prompt + generated");
        }
    }
    cr_assert_geq(resumed, 1);
    h_run_to_end(h, 1);
    h_check_outputs(h);
    h_free(h);
}

Test(sched_policy, preemption_picks_lowest_priority_then_newest_and_victim_resumes) {
    /* B has a worse priority than C although C is newer: B goes */
    preempt_scenario(5, 0, 1);
    /* equal priorities: the newest, C, goes */
    preempt_scenario(0, 0, 2);
    /* C is both worse and newest */
    preempt_scenario(0, 3, 2);
}

/* A pool that holds 1.5 of the longest sequences and a dozen concurrent long requests of mixed priorities:
 * preemption happens many times and every request still completes with exactly its tokens. */
Test(sched_policy, preemption_under_pressure_never_drops_or_deadlocks) {
    for (int caching = 0; caching <= 1; caching++) {
        enum { BS = 8, MAX_SEQ = 96 };
        harness *h = h_create(MAX_SEQ * 3 / 2 / BS, BS, 12, 64, caching);
        h->allow_preempt = 1;
        uint64_t rng = 42 + (uint64_t)caching;
        for (int i = 0; i < 12; i++) {
            int n_prompt = 8 + (int)(sl_test_rand_u64(&rng) % 40);
            h_submit(h, n_prompt, MAX_SEQ - n_prompt, (int)(sl_test_rand_u64(&rng) % 3), caching ? 8 : 0);
        }
        h_run_to_end(h, 20000);
        h_check_outputs(h);
        cr_assert_gt(h->e->stats.num_preemptions_total, 0, "the pool was meant to run out");
        cr_assert_gt(h->n_preempted_total, 0);
        h_free(h);
    }
}

Test(sched_policy, admission_follows_priority_then_arrival) {
    harness *h = h_create(256, 4, 1, 64, 0); /* one sequence at a time: admission order is visible */
    int prios[] = {3, 1, 2, 1};
    for (int i = 0; i < 4; i++) h_submit(h, 4, 2, prios[i], 0);
    h_step(h);
    h_step(h);
    /* A priority-0 request arriving later overtakes the waiting priority 1, 2 and 3 ones (its aged key
     * 0 * SL_AGING_STEPS + 2 beats theirs, SL_AGING_STEPS and up). */
    int late = h_submit(h, 4, 2, 0, 0);
    h_run_to_end(h, 100);
    int expect[] = {1, late, 3, 2, 0};
    cr_assert_eq(h->n_admitted, 5);
    for (int i = 0; i < 5; i++) cr_assert_eq(h->admit_order[i], expect[i], "admission %d: request %d, expected %d", i,
                                             h->admit_order[i], expect[i]);
    h_check_outputs(h);
    h_free(h);
}

/* The bound stated above SL_AGING_STEPS: a sequence of priority p is ahead of every sequence arriving more than
 * (p - p_best) * SL_AGING_STEPS steps after it, so only those already ahead of it run first. A priority-2
 * request waits under a constant stream of priority-0 arrivals (two a step, one served a step, so without aging
 * the backlog grows for ever and it would never run). */
Test(sched_policy, aging_bounds_the_wait_under_a_stream_of_high_priority_work) {
    enum { P_LOW = 2, P_BEST = 0, RATE = 2 };
    harness *h = h_create(1024, 4, 1, 64, 0);
    int low = h_submit(h, 4, 1, P_LOW, 0);
    const int64_t t0 = 0, window = (int64_t)(P_LOW - P_BEST) * SL_AGING_STEPS;
    /* arrivals at steps t0 .. t0 + window - 1 (after it in the same intake at t0) are ahead of it */
    const int64_t n_ahead = RATE * window;
    const int64_t bound = t0 + n_ahead; /* one request served per step */
    int64_t step = 0;
    for (; step < bound + 32 && h->first_step[low] < 0; step++) {
        for (int a = 0; a < RATE; a++) h_submit(h, 4, 1, P_BEST, 0);
        h_step(h);
    }
    cr_assert_geq(h->first_step[low], 0, "starved: not admitted within %lld steps", (long long)step);
    cr_assert_leq(h->first_step[low], bound, "admitted at step %lld, after the stated bound %lld",
                  (long long)h->first_step[low], (long long)bound);
    /* priority still meant something: the high-priority work of the window went first */
    cr_assert_geq(h->first_step[low], window, "admitted at step %lld, before aging made it the best",
                  (long long)h->first_step[low]);
    for (int k = 0; k < h->n_admitted && h->admit_order[k] != low; k++) {
        int id = h->admit_order[k];
        int64_t arrived = (id - 1) / RATE; /* ids 1, 2 arrived at step 0, 3, 4 at step 1, ... */
        cr_assert_lt(arrived, t0 + window, "request %d arriving at step %lld overtook the aged request", id,
                     (long long)arrived);
    }
    /* the stream was still on: the backlog of high-priority work is real, not drained */
    cr_assert_not_null(h->e->wait_head);
    h_free(h);
}
