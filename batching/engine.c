/*
 * engine.c — the engine: the public API of include/sluice/sluice.h, its replicas, and the thread of each.
 *
 * Replicas (DESIGN.md §4): the engine runs one or more copies of the model side by side (data parallel), as the
 * `devices` and `tensor_parallel_size` settings place them (placement.h). Each replica is one struct sl_engine
 * with everything its thread owns: its model (loaded on its devices), KV pool and block manager, inbox, waiting
 * and running sets, step buffers, sampler scratch and counters. So the step code below reads one replica and
 * nothing else, exactly as it did when the engine was one replica. The handle callers get is replica 0, which
 * also owns what the replicas share (sl_engine_group: the router's lock, the placement) and serves tokenization
 * and chat rendering with its model (every replica loaded the same file). A request is validated and tokenized
 * once, then the router (router.h) places it on the replica predicted to finish it first, or on the one it is
 * pinned to, and it lives there until it ends. A device error (SL_DEVICE from the forward pass) takes its replica
 * out of service for good: everything it held ends with an error naming it, the router skips it from then on,
 * and the others keep serving. With one replica that is also the one difference from the single engine it was:
 * after a device error it stays out of service (submissions fail with SL_DEVICE, /ready answers 503) instead of
 * failing that step's requests and going on (DESIGN.md §4: a sticky device error poisons its context).
 *
 * Submission (any thread) validates and tokenizes a request, then hands it to its replica's thread through a
 * mutex-protected inbox. Each replica's thread loops over steps, each three calls readable in one screen:
 *
 *   schedule()    — which tokens run this step: every running sequence's next chunk (a decode is a chunk of one
 *                   token), then waiting sequences admitted in (aged) priority order while max_num_seqs, the
 *                   token budget and free KV blocks allow; an admitted sequence first takes every cached block
 *                   of its prefix and skips their prefill. When a running sequence needs a block and none is
 *                   free, the sequence that yields first (lowest aged priority, then newest) is preempted: its
 *                   blocks are released and it is recomputed later (where the prefix cache usually still
 *                   holds most of it). Pure policy.
 *   run()         — one sl_model_forward() over the flat batch of all those tokens.
 *   postprocess() — register blocks that became full in the prefix cache, sample where a sequence's chunk
 *                   reached its end, detokenize incrementally, check stops, deliver events, release the blocks
 *                   of finished sequences.
 *
 * KV blocks belong to the block manager (kv_blocks.h): reference counts, block tables, the prefix cache keyed
 * by a hash chain in the request's tenant namespace, LRU eviction of cached blocks nobody holds.
 *
 * Priority aging: a waiting sequence's effective priority improves by 1 every SL_AGING_STEPS steps it waits
 * (see seq_key), so no stream of better-priority work can starve it.
 *
 * A request with n choices is n sequences; they share the prompt's full blocks through the prefix cache once
 * one of them computed them. Events go to the request's callback (on this thread) or to its queue (read by
 * sl_request_next_event on the caller's thread), never both.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "detok.h"
#include "engine_internal.h"
#include "kv_blocks.h"
#include "model.h"
#include "placement.h"
#include "router.h"
#include "sampler.h"
#include "sl_util.h"
#include "threadpool.h"


/* ---- requests and sequences --------------------------------------------------------------------------------------- */
typedef struct sl_queued_event {
    struct sl_queued_event *next;
    sl_event ev; /* with its arrays in the same allocation */
} sl_queued_event;

typedef enum { SEQ_WAITING, SEQ_RUNNING, SEQ_FINISHED } sl_seq_state;

typedef struct sl_seq {
    struct sl_request *req;
    int choice;
    sl_seq_state state;
    int32_t *tokens;      /* [cap] prompt then generated tokens */
    int n_tokens, cap;
    int n_computed;       /* tokens whose K/V are in the cache */
    int n_generated;
    sl_kv_table kv;       /* block table; kv.ids: [blocks for cap tokens] */
    int64_t arrival;      /* submission order, for FCFS among equal keys */
    int64_t key;          /* aged priority key, see seq_key(); lower runs first */
    int sched_n;          /* tokens scheduled this step */
    int sched_row;        /* first batch row this step */
    int logits_row;       /* row in the logits buffer, or -1 */
    sl_rng rng;
    sl_detok detok;
    int prompt_lp_done;
    struct sl_seq *next_wait; /* waiting list link */
} sl_seq;

struct sl_request {
    _Atomic int refs;              /* the caller's handle + the engine's */
    _Atomic int cancel;
    struct sl_engine *eng;         /* the replica it runs on (the router's choice) */
    sl_request_kind kind;
    int n;
    int n_prompt;
    int32_t *prompt;               /* [n_prompt] */
    sl_sampling_params sampling;   /* with logit_bias copied */
    sl_logit_bias *logit_bias;
    int max_tokens, min_tokens, ignore_eos, logprobs, prompt_logprobs, skip_special;
    char **stop;                   /* [n_stop] copies */
    size_t n_stop;
    int32_t *stop_ids;
    size_t n_stop_ids;
    int priority;
    uint64_t kv_ns;                /* prefix-cache namespace of the tenant */
    int64_t deadline_us;
    sl_event_cb callback;
    void *user_data;
    sl_seq *seqs;                  /* [n] */
    int n_finished;
    int done;
    sl_usage usage;
    sl_timings timings;
    /* prompt logprobs, filled as prompt chunks run */
    float *prompt_lp;              /* [n_prompt] */
    sl_top_logprob *prompt_top;    /* [n_prompt][prompt_logprobs] */
    /* delivery */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sl_queued_event *q_head, *q_tail;
    int released;                  /* the handle was freed: no more callbacks */
    struct sl_request *next_in;    /* inbox link */
};

/* What the replicas share; owned by replica 0 (the handle). */
typedef struct sl_engine_group {
    pthread_mutex_t mu;            /* routing: the queue bounds, the decision and the enqueue are one step; a
                                    * replica's alive flag changes under it (lock order: this, then a replica's mu) */
    struct sl_engine *reps;        /* [n_reps]; reps[0] is the handle */
    int n_reps;
    sl_placement place;
    char *devices;                 /* the devices setting as given (params.devices points here) */
} sl_engine_group;

/* One replica (see the top of the file); the handle is replica 0. */
struct sl_engine {
    sl_model *model;
    sl_engine_params params;
    char *served_name;
    char *model_path;
    int max_len;
    int n_vocab, n_embd;
    int block_size;
    int n_blocks_total;
    size_t kv_block_bytes;         /* bytes of one block over all layers (and ranks) */
    sl_kv_dtype kv_dtype;          /* the pool's element type (auto resolved) */
    sl_kv_blocks *kv;              /* block manager (engine thread only) */
    _Atomic int kv_free;           /* its free-block count after the last step, for sl_engine_get_stats */
    int64_t n_steps;               /* scheduling rounds so far: the clock of priority aging */
    int32_t *eog_ids;              /* every token that ends generation, for min_tokens masking */
    int n_eog;
    /* engine thread */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    sl_request_t *inbox_head, *inbox_tail;
    int n_inbox;
    _Atomic int n_waiting_reqs;
    _Atomic int64_t n_waiting_tokens; /* prompt tokens of submitted requests not yet scheduled */
    int64_t arrival_counter;
    /* owned by the engine thread */
    sl_seq **running;              /* [max_num_seqs] */
    int n_running;
    sl_seq *wait_head;             /* sorted by (key, arrival) */
    int preempted_this_step;       /* schedule() preempted someone: it admits nobody this step */
    sl_request_t *done_head;       /* finished requests whose engine reference is dropped at the step's end */
    /* step buffers, sized once for max_num_batched_tokens */
    int32_t *b_tokens, *b_pos, *b_seq;
    int64_t *b_slot;
    uint8_t *b_out;
    const int32_t **b_tables;
    sl_seq **b_seqs;
    float *logits;                 /* [max_num_batched_tokens][n_vocab], lazily touched */
    float *hidden;                 /* [max_num_seqs][n_embd] */
    /* Sampling runs on the model's compute threads between steps (sl_model_host_parallel): one scratch per
     * thread, and the step's pending draws, [max_num_seqs]. */
    sl_sampler_scratch **samplers; /* [n_samplers] */
    int n_samplers;
    struct sl_pending_draw *pend;
    int n_pend;
    /* stats */
    pthread_mutex_t stats_mu;
    sl_engine_stats stats;
    /* replica */
    sl_engine_group *group;        /* shared; NULL only for an engine a unit test builds by hand */
    int index;                     /* in group->reps */
    char desc[64];                 /* its devices, for messages: "cpu", "cuda:0+cuda:1" */
    _Atomic int alive;             /* 0 once its device failed (for good); changes under group->mu */
    _Atomic int n_running_pub;     /* n_running, published for the stats and the router */
    double step_us_ewma;           /* under stats_mu: step time for the router (SL_STEP_EWMA_ALPHA) */
    int thread_started;
};

/* ---- small helpers ------------------------------------------------------------------------------------------------- */
static void request_release(sl_request_t *r);

SL_API const char *sl_finish_reason_str(sl_finish_reason r) {
    switch (r) {
    case SL_FINISH_STOP: return "stop";
    case SL_FINISH_LENGTH: return "length";
    case SL_FINISH_ABORT: return "abort";
    case SL_FINISH_ERROR: return "error";
    default: return "none";
    }
}

SL_API void sl_engine_params_init(sl_engine_params *p) {
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->max_num_seqs = SL_DEFAULT_MAX_NUM_SEQS;
    p->max_num_batched_tokens = SL_DEFAULT_MAX_NUM_BATCHED_TOKENS;
    p->max_waiting_requests = SL_DEFAULT_MAX_WAITING_REQUESTS;
    p->max_waiting_tokens = SL_DEFAULT_MAX_WAITING_TOKENS;
    p->block_size = SL_DEFAULT_BLOCK_SIZE;
    p->kv_dtype = SL_KV_AUTO;
    p->precision = SL_PRECISION_FAST;
    p->enable_prefix_caching = 1;
    p->devices = "cpu";
    p->tensor_parallel_size = 1;
    p->gpu_memory_utilization = 0.9;
}

SL_API void sl_model_info_init(sl_model_info *info) {
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
}

SL_API void sl_sampling_params_init(sl_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

SL_API void sl_request_params_init(sl_request_params *p) {
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->kind = SL_REQUEST_GENERATE;
    p->tokenize_flags = SL_TOKENIZE_ADD_SPECIAL;
    sl_sampling_params_init(&p->sampling);
    p->n = 1;
    p->max_tokens = -1;
    p->logprobs = -1;
    p->prompt_logprobs = -1;
    p->skip_special_tokens = 1;
    p->replica = -1;
}

SL_API void sl_engine_stats_init(sl_engine_stats *s) {
    memset(s, 0, sizeof *s);
    s->struct_size = sizeof *s;
}

/* ---- event delivery -------------------------------------------------------------------------------------------------- */
/* Deep-copies an event into one allocation for the queue. */
static sl_queued_event *event_copy(const sl_event *ev) {
    size_t sz = sizeof(sl_queued_event);
    size_t o_text = sz;
    sz += ev->text_len + 1;
    sz = (sz + 7) & ~(size_t)7;
    size_t o_tok = sz;
    sz += ev->n_tokens * sizeof(int32_t);
    sz = (sz + 7) & ~(size_t)7;
    size_t o_lp = sz;
    if (ev->logprobs) sz += ev->n_tokens * sizeof(float);
    sz = (sz + 7) & ~(size_t)7;
    size_t o_top = sz;
    if (ev->top_logprobs) sz += ev->n_tokens * (size_t)ev->n_top * sizeof(sl_top_logprob);
    size_t o_emb = sz;
    if (ev->embedding) sz += (size_t)ev->n_embd * sizeof(float);
    size_t o_msg = sz;
    size_t msg_len = ev->message ? strlen(ev->message) : 0;
    if (ev->message) sz += msg_len + 1;
    size_t o_stop = sz;
    size_t stop_len = ev->stop_reason ? strlen(ev->stop_reason) : 0;
    if (ev->stop_reason) sz += stop_len + 1;
    char *base = sl__malloc(sz);
    if (!base) return NULL;
    sl_queued_event *q = (sl_queued_event *)base;
    q->next = NULL;
    q->ev = *ev;
    char *text = base + o_text;
    if (ev->text_len) memcpy(text, ev->text, ev->text_len);
    text[ev->text_len] = 0;
    q->ev.text = text;
    if (ev->n_tokens) memcpy(base + o_tok, ev->tokens, ev->n_tokens * sizeof(int32_t));
    q->ev.tokens = (const int32_t *)(base + o_tok);
    if (ev->logprobs) {
        memcpy(base + o_lp, ev->logprobs, ev->n_tokens * sizeof(float));
        q->ev.logprobs = (const float *)(base + o_lp);
    }
    if (ev->top_logprobs) {
        memcpy(base + o_top, ev->top_logprobs, ev->n_tokens * (size_t)ev->n_top * sizeof(sl_top_logprob));
        q->ev.top_logprobs = (const sl_top_logprob *)(base + o_top);
    }
    if (ev->embedding) {
        memcpy(base + o_emb, ev->embedding, (size_t)ev->n_embd * sizeof(float));
        q->ev.embedding = (const float *)(base + o_emb);
    }
    if (ev->message) {
        memcpy(base + o_msg, ev->message, msg_len + 1);
        q->ev.message = base + o_msg;
    }
    if (ev->stop_reason) {
        memcpy(base + o_stop, ev->stop_reason, stop_len + 1);
        q->ev.stop_reason = base + o_stop;
    }
    return q;
}

static void deliver(sl_request_t *r, const sl_event *ev) {
    pthread_mutex_lock(&r->mu);
    if (r->released) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    if (r->callback) {
        r->callback(ev, r->user_data);
    } else {
        sl_queued_event *q = event_copy(ev);
        if (q) {
            if (r->q_tail)
                r->q_tail->next = q;
            else
                r->q_head = q;
            r->q_tail = q;
            pthread_cond_signal(&r->cv);
        }
        /* On allocation failure the event is lost but DONE is retried below through the same path; the
         * reader's timeout still ends its wait. */
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---- KV blocks ----------------------------------------------------------------------------------------------------------- */
static int blocks_needed(const sl_engine_t *e, int n_tokens) { return (n_tokens + e->block_size - 1) / e->block_size; }

/* Drops s's block references (cached ones stay cached); its K/V must be recomputed if it runs again. */
static void seq_free_blocks(sl_engine_t *e, sl_seq *s) {
    sl_kv_blocks_release(e->kv, &s->kv);
    s->n_computed = 0;
    /* published before a finishing request's DONE event, so a caller that saw DONE sees the blocks back */
    atomic_store(&e->kv_free, sl_kv_blocks_n_free(e->kv));
}

/* Gives s blocks for its first n_tokens tokens; 0 if not enough are free (nothing taken then). */
static int seq_grow_blocks(sl_engine_t *e, sl_seq *s, int n_tokens) { return sl_kv_blocks_grow(e->kv, &s->kv, n_tokens); }

/* For a sequence holding no blocks: takes the cached blocks of its prefix and marks their tokens computed.
 * Off when prefix caching is, and for prompt logprobs, which need every prompt position's logits. */
static int seq_match_prefix(sl_engine_t *e, sl_seq *s) {
    if (!e->params.enable_prefix_caching || s->req->prompt_logprobs >= 0) return 0;
    int hit = sl_kv_blocks_match(e->kv, &s->kv, s->req->kv_ns, s->tokens, s->n_tokens);
    /* The last token always runs, for its logits; when its block came from the cache too, its K/V goes to
     * the sink slot (build_batch), since the shared block already holds them. */
    s->n_computed = SL_MIN(hit, s->n_tokens - 1);
    return s->n_computed;
}

/* ---- finishing --------------------------------------------------------------------------------------------------------------- */
static void request_done(sl_engine_t *e, sl_request_t *r) {
    r->done = 1;
    r->timings.finished_us = sl_now_us();
    /* Counters first: whoever sees DONE and then reads the stats finds this request counted. */
    pthread_mutex_lock(&e->stats_mu);
    e->stats.prompt_tokens_total += (uint64_t)r->usage.prompt_tokens;
    e->stats.generation_tokens_total += (uint64_t)r->usage.completion_tokens;
    pthread_mutex_unlock(&e->stats_mu);
    if (r->timings.first_scheduled_us == 0) {
        atomic_fetch_sub(&e->n_waiting_reqs, 1);
        atomic_fetch_sub(&e->n_waiting_tokens, r->n_prompt);
    }
    sl_event ev = {.type = SL_EVENT_DONE, .usage = r->usage, .timings = r->timings, .stop_token = -1};
    deliver(r, &ev);
    /* Released at the end of the step, once no running list points into it any more. */
    r->next_in = e->done_head;
    e->done_head = r;
}

static void release_done(sl_engine_t *e) {
    while (e->done_head) {
        sl_request_t *r = e->done_head;
        e->done_head = r->next_in;
        request_release(r);
    }
}

static void seq_finish(sl_engine_t *e, sl_seq *s, sl_finish_reason why, const char *stop_str, int32_t stop_tok,
                       sl_status st, const char *msg) {
    if (s->state == SEQ_FINISHED) return;
    sl_request_t *r = s->req;
    sl_detok_result dr = {.text = "", .len = 0};
    if (why != SL_FINISH_STOP || stop_str == NULL) sl_detok_flush(&s->detok, &dr);
    sl_event ev = {.type = SL_EVENT_FINISH, .choice = s->choice, .text = dr.text, .text_len = dr.len,
                   .finish_reason = why, .stop_reason = stop_str, .stop_token = stop_tok, .status = st,
                   .message = msg};
    if (r->kind == SL_REQUEST_GENERATE) deliver(r, &ev);
    seq_free_blocks(e, s);
    s->state = SEQ_FINISHED;
    r->usage.completion_tokens += s->n_generated;
    if (++r->n_finished == r->n) request_done(e, r);
}

/* ---- submission -------------------------------------------------------------------------------------------------------------- */
static void request_destroy(sl_request_t *r) {
    for (int i = 0; r->seqs && i < r->n; i++) {
        free(r->seqs[i].tokens);
        free(r->seqs[i].kv.ids);
        sl_detok_free(&r->seqs[i].detok);
    }
    free(r->seqs);
    free(r->prompt);
    free(r->logit_bias);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    free(r->prompt_lp);
    free(r->prompt_top);
    for (sl_queued_event *q = r->q_head, *n; q; q = n) {
        n = q->next;
        free(q);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

static void request_release(sl_request_t *r) {
    if (atomic_fetch_sub(&r->refs, 1) == 1) request_destroy(r);
}

static sl_status validate_sampling(const sl_sampling_params *p, int n_vocab) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return sl__errorf(SL_INVALID_ARGUMENT, "temperature %g is outside [0, 100]", p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return sl__errorf(SL_INVALID_ARGUMENT, "top_p %g is outside (0, 1]", p->top_p);
    if (p->top_k < 0) return sl__errorf(SL_INVALID_ARGUMENT, "top_k %d is negative", p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return sl__errorf(SL_INVALID_ARGUMENT, "min_p %g is outside [0, 1]", p->min_p);
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 10.0f))
        return sl__errorf(SL_INVALID_ARGUMENT, "repetition_penalty %g is outside (0, 10]", p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return sl__errorf(SL_INVALID_ARGUMENT, "presence_penalty %g is outside [-2, 2]", p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return sl__errorf(SL_INVALID_ARGUMENT, "frequency_penalty %g is outside [-2, 2]", p->frequency_penalty);
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        if (p->logit_bias[i].token < 0 || p->logit_bias[i].token >= n_vocab)
            return sl__errorf(SL_INVALID_ARGUMENT, "logit_bias token %d is outside the vocabulary [0, %d)",
                              p->logit_bias[i].token, n_vocab);
        if (!(p->logit_bias[i].bias >= -100.0f && p->logit_bias[i].bias <= 100.0f))
            return sl__errorf(SL_INVALID_ARGUMENT, "logit_bias value %g is outside [-100, 100]",
                              p->logit_bias[i].bias);
    }
    return SL_OK;
}

/* Builds the prompt tokens of a request from whichever form it came in. */
static sl_status request_prompt(sl_engine_t *e, const sl_request_params *p, int32_t **ids, size_t *n) {
    int forms = (p->prompt_tokens != NULL || p->n_prompt_tokens > 0) + (p->prompt_text != NULL) +
                (p->messages != NULL || p->n_messages > 0);
    if (forms != 1)
        return sl__errorf(SL_INVALID_ARGUMENT, "give exactly one of prompt tokens, prompt text or chat messages");
    if (p->prompt_tokens || p->n_prompt_tokens) {
        if (!p->prompt_tokens) return sl__errorf(SL_INVALID_ARGUMENT, "prompt_tokens is NULL");
        for (size_t i = 0; i < p->n_prompt_tokens; i++)
            if (p->prompt_tokens[i] < 0 || p->prompt_tokens[i] >= e->n_vocab)
                return sl__errorf(SL_INVALID_ARGUMENT, "prompt token %d at index %zu is outside the vocabulary [0, %d)",
                                  p->prompt_tokens[i], i, e->n_vocab);
        *ids = sl__malloc((p->n_prompt_tokens ? p->n_prompt_tokens : 1) * sizeof(int32_t));
        if (!*ids) return sl__errorf(SL_OUT_OF_MEMORY, "prompt");
        if (p->n_prompt_tokens) memcpy(*ids, p->prompt_tokens, p->n_prompt_tokens * sizeof(int32_t));
        *n = p->n_prompt_tokens;
        return SL_OK;
    }
    if (p->prompt_text) {
        size_t len = p->prompt_text_len ? p->prompt_text_len : strlen(p->prompt_text);
        return sl_model_tokenize(e->model, p->prompt_text, len, p->tokenize_flags, ids, n);
    }
    if (!p->messages) return sl__errorf(SL_INVALID_ARGUMENT, "messages is NULL");
    char *text = NULL;
    sl_status st = sl_model_render_chat(e->model, p->messages, p->n_messages, 1, &text);
    if (st != SL_OK) return st;
    /* The template's own markers are special tokens; the template already wrote BOS where it wants one. */
    st = sl_model_tokenize(e->model, text, strlen(text), SL_TOKENIZE_PARSE_SPECIAL, ids, n);
    free(text);
    return st;
}

SL_API sl_status sl_request_submit(sl_engine_t *e, const sl_request_params *p, sl_request_t **out) {
    *out = NULL;
    if (!e || !p) return sl__errorf(SL_INVALID_ARGUMENT, "NULL engine or parameters");
    if (p->struct_size != sizeof *p)
        return sl__errorf(SL_INVALID_ARGUMENT, "sl_request_params.struct_size %zu, expected %zu (call init)",
                          p->struct_size, sizeof *p);
    if (p->kind != SL_REQUEST_GENERATE && p->kind != SL_REQUEST_EMBED)
        return sl__errorf(SL_INVALID_ARGUMENT, "unknown request kind %d", (int)p->kind);
    if (p->n < 1 || p->n > 128) return sl__errorf(SL_INVALID_ARGUMENT, "n = %d is outside [1, 128]", p->n);
    if (p->kind == SL_REQUEST_EMBED && p->n != 1)
        return sl__errorf(SL_INVALID_ARGUMENT, "an embedding request has exactly one choice");
    if (p->n > e->params.max_num_seqs)
        return sl__errorf(SL_INVALID_ARGUMENT, "n = %d exceeds max_num_seqs %d", p->n, e->params.max_num_seqs);
    if (p->max_tokens < -1) return sl__errorf(SL_INVALID_ARGUMENT, "max_tokens %d is negative", p->max_tokens);
    if (p->min_tokens < 0) return sl__errorf(SL_INVALID_ARGUMENT, "min_tokens %d is negative", p->min_tokens);
    if (p->max_tokens >= 0 && p->min_tokens > p->max_tokens)
        return sl__errorf(SL_INVALID_ARGUMENT, "min_tokens %d exceeds max_tokens %d", p->min_tokens, p->max_tokens);
    if (p->logprobs < -1 || p->logprobs > 20)
        return sl__errorf(SL_INVALID_ARGUMENT, "logprobs %d is outside [0, 20]", p->logprobs);
    if (p->prompt_logprobs < -1 || p->prompt_logprobs > 20)
        return sl__errorf(SL_INVALID_ARGUMENT, "prompt_logprobs %d is outside [0, 20]", p->prompt_logprobs);
    if (p->n_stop > 64) return sl__errorf(SL_INVALID_ARGUMENT, "%zu stop strings; at most 64", p->n_stop);
    if (p->n_stop_token_ids > 1024)
        return sl__errorf(SL_INVALID_ARGUMENT, "%zu stop token ids; at most 1024", p->n_stop_token_ids);
    if (p->sampling.struct_size != sizeof p->sampling)
        return sl__errorf(SL_INVALID_ARGUMENT, "sl_sampling_params.struct_size mismatch (call init)");
    sl_status st = validate_sampling(&p->sampling, e->n_vocab);
    if (st != SL_OK) return st;
    for (size_t i = 0; i < p->n_stop; i++)
        if (!p->stop || !p->stop[i] || !p->stop[i][0])
            return sl__errorf(SL_INVALID_ARGUMENT, "stop string %zu is empty", i);
    for (size_t i = 0; i < p->n_stop_token_ids; i++)
        if (!p->stop_token_ids || p->stop_token_ids[i] < 0 || p->stop_token_ids[i] >= e->n_vocab)
            return sl__errorf(SL_INVALID_ARGUMENT, "stop token id at index %zu is outside the vocabulary", i);
    if (p->replica < -1 || p->replica >= e->group->n_reps)
        return sl__errorf(SL_INVALID_ARGUMENT, "replica %d does not exist (this engine has %d: 0..%d, or -1 for any)",
                          p->replica, e->group->n_reps, e->group->n_reps - 1);

    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    if ((st = request_prompt(e, p, &prompt, &n_prompt)) != SL_OK) return st;
    if (n_prompt == 0) {
        free(prompt);
        return sl__errorf(SL_INVALID_ARGUMENT, "the prompt is empty");
    }
    if (n_prompt >= (size_t)e->max_len || (p->max_tokens > 0 && n_prompt + (size_t)p->max_tokens > (size_t)e->max_len)) {
        free(prompt);
        if (p->max_tokens > 0)
            return sl__errorf(SL_CONTEXT_OVERFLOW,
                              "this model's maximum context length is %d tokens, but %zu prompt tokens plus "
                              "max_tokens %d were requested",
                              e->max_len, n_prompt, p->max_tokens);
        return sl__errorf(SL_CONTEXT_OVERFLOW,
                          "this model's maximum context length is %d tokens, and the prompt has %zu tokens",
                          e->max_len, n_prompt);
    }

    sl_request_t *r = sl__calloc(1, sizeof *r);
    if (!r) {
        free(prompt);
        return sl__errorf(SL_OUT_OF_MEMORY, "request");
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_store(&r->refs, 2);
    r->eng = e;
    r->kind = p->kind;
    r->n = p->n;
    r->prompt = prompt;
    r->n_prompt = (int)n_prompt;
    r->sampling = p->sampling;
    r->max_tokens = p->kind == SL_REQUEST_EMBED ? 0 : p->max_tokens;
    r->min_tokens = p->min_tokens;
    r->ignore_eos = p->ignore_eos;
    r->logprobs = p->logprobs;
    r->prompt_logprobs = p->kind == SL_REQUEST_EMBED ? -1 : p->prompt_logprobs;
    r->skip_special = p->skip_special_tokens;
    r->priority = p->priority;
    r->kv_ns = sl_kv_namespace(p->tenant);
    r->deadline_us = p->deadline_us;
    r->callback = p->callback;
    r->user_data = p->user_data;
    r->usage.prompt_tokens = (int64_t)n_prompt;
    r->timings.submitted_us = sl_now_us();
    int ok = 1;
    if (p->sampling.n_logit_bias) {
        r->logit_bias = sl__malloc(p->sampling.n_logit_bias * sizeof *r->logit_bias);
        ok = ok && r->logit_bias;
        if (r->logit_bias) memcpy(r->logit_bias, p->sampling.logit_bias, p->sampling.n_logit_bias * sizeof *r->logit_bias);
    }
    r->sampling.logit_bias = r->logit_bias;
    if (p->n_stop) {
        r->stop = sl__calloc(p->n_stop, sizeof(char *));
        ok = ok && r->stop;
        for (size_t i = 0; r->stop && i < p->n_stop; i++) {
            r->stop[i] = sl__strdup(p->stop[i]);
            ok = ok && r->stop[i];
            r->n_stop = i + 1;
        }
    }
    if (p->n_stop_token_ids) {
        r->stop_ids = sl__malloc(p->n_stop_token_ids * sizeof(int32_t));
        ok = ok && r->stop_ids;
        if (r->stop_ids) memcpy(r->stop_ids, p->stop_token_ids, p->n_stop_token_ids * sizeof(int32_t));
        r->n_stop_ids = p->n_stop_token_ids;
    }
    if (r->prompt_logprobs >= 0) {
        r->prompt_lp = sl__calloc(n_prompt, sizeof(float));
        r->prompt_top = sl__calloc(n_prompt * (size_t)(r->prompt_logprobs ? r->prompt_logprobs : 1), sizeof(sl_top_logprob));
        ok = ok && r->prompt_lp && r->prompt_top;
    }
    int total = r->max_tokens >= 0 ? r->n_prompt + r->max_tokens : e->max_len;
    if (total > e->max_len) total = e->max_len;
    r->seqs = sl__calloc((size_t)r->n, sizeof(sl_seq));
    ok = ok && r->seqs;
    uint64_t seed = p->sampling.has_seed ? p->sampling.seed : ((uint64_t)sl_now_us() * 0x9E3779B97F4A7C15ull) ^ (uint64_t)(uintptr_t)r;
    for (int i = 0; ok && i < r->n; i++) {
        sl_seq *s = &r->seqs[i];
        s->req = r;
        s->choice = i;
        s->cap = total;
        s->tokens = sl__malloc((size_t)total * sizeof(int32_t));
        s->kv.ids = sl__malloc((size_t)blocks_needed(e, total) * sizeof(int32_t));
        ok = ok && s->tokens && s->kv.ids;
        if (!ok) break;
        memcpy(s->tokens, prompt, n_prompt * sizeof(int32_t));
        s->n_tokens = r->n_prompt;
        s->logits_row = -1;
        sl_rng_seed(&s->rng, seed, (uint64_t)i);
        sl_detok_init(&s->detok);
    }
    if (!ok) {
        request_destroy(r);
        return sl__errorf(SL_OUT_OF_MEMORY, "request buffers");
    }

    /* Under the group's lock: the bounds over every replica's queue, the router's choice and the enqueue are
     * one step, so two submissions never both take the last place or both see the same idle replica. */
    sl_engine_group *g = e->group;
    sl_router_replica snap[SL_PLACEMENT_MAX_DEVICES];
    int n_queued = 0, stopping = 0;
    int64_t waiting_tokens = 0;
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < g->n_reps; i++) {
        sl_engine_t *rp = &g->reps[i];
        pthread_mutex_lock(&rp->mu);
        int n_inbox = rp->n_inbox;
        stopping |= rp->stop;
        pthread_mutex_unlock(&rp->mu);
        n_queued += atomic_load(&rp->n_waiting_reqs) + n_inbox;
        waiting_tokens += atomic_load(&rp->n_waiting_tokens);
        snap[i] = (sl_router_replica){.alive = atomic_load(&rp->alive),
                                      .waiting_tokens = atomic_load(&rp->n_waiting_tokens),
                                      .n_running = atomic_load(&rp->n_running_pub) + n_inbox,
                                      .max_seqs = rp->params.max_num_seqs,
                                      .free_blocks = atomic_load(&rp->kv_free),
                                      .block_size = rp->block_size,
                                      .step_token_budget = rp->params.max_num_batched_tokens};
        pthread_mutex_lock(&rp->stats_mu);
        snap[i].step_us = rp->step_us_ewma;

        pthread_mutex_unlock(&rp->stats_mu);
    }
    if (stopping) {
        pthread_mutex_unlock(&g->mu);
        request_destroy(r);
        return sl__errorf(SL_SHUTTING_DOWN, "the engine is shutting down");
    }
    if (n_queued >= e->params.max_waiting_requests) {
        pthread_mutex_unlock(&g->mu);
        request_destroy(r);
        return sl__errorf(SL_QUEUE_FULL, "the engine's queue is full (%d waiting requests)",
                          e->params.max_waiting_requests);
    }
    if (waiting_tokens > 0 && waiting_tokens + r->n_prompt > e->params.max_waiting_tokens) {
        pthread_mutex_unlock(&g->mu);
        request_destroy(r);
        return sl__errorf(SL_QUEUE_FULL, "the engine's queue is full (%lld prompt tokens waiting, bound %lld)",
                          (long long)waiting_tokens, (long long)e->params.max_waiting_tokens);
    }
    /* "up to the context" generates at most what the context leaves after the prompt */
    sl_router_request rq = {.n_prompt = r->n_prompt,
                            .max_tokens = r->max_tokens >= 0 ? r->max_tokens : e->max_len - r->n_prompt,
                            .n = r->n,
                            .pinned = p->replica};
    int at = -1;
    if ((st = sl_router_pick(snap, g->n_reps, &rq, &at, NULL)) != SL_OK) {
        pthread_mutex_unlock(&g->mu);
        request_destroy(r);
        return st;
    }
    sl_engine_t *rp = &g->reps[at];
    r->eng = rp;
    pthread_mutex_lock(&rp->mu);
    atomic_fetch_add(&rp->n_waiting_tokens, r->n_prompt);
    if (rp->inbox_tail)
        rp->inbox_tail->next_in = r;
    else
        rp->inbox_head = r;
    rp->inbox_tail = r;
    rp->n_inbox++;
    pthread_cond_signal(&rp->cv);
    pthread_mutex_unlock(&rp->mu);
    pthread_mutex_unlock(&g->mu);
    *out = r;
    return SL_OK;
}

SL_API void sl_request_cancel(sl_request_t *r) {
    if (!r) return;
    atomic_store(&r->cancel, 1);
    sl_engine_t *e = r->eng;
    pthread_mutex_lock(&e->mu);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

SL_API sl_status sl_request_next_event(sl_request_t *r, int timeout_ms, sl_event **ev_out) {
    *ev_out = NULL;
    if (!r) return sl__errorf(SL_INVALID_ARGUMENT, "NULL request");
    if (r->callback) return sl__errorf(SL_INVALID_ARGUMENT, "the request delivers events through its callback");
    pthread_mutex_lock(&r->mu);
    if (!r->q_head && timeout_ms != 0) {
        if (timeout_ms < 0) {
            while (!r->q_head) pthread_cond_wait(&r->cv, &r->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + (int64_t)(timeout_ms % 1000) * 1000000;
            ts.tv_sec += timeout_ms / 1000 + ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            while (!r->q_head)
                if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0) break;
        }
    }
    sl_queued_event *q = r->q_head;
    if (q) {
        r->q_head = q->next;
        if (!r->q_head) r->q_tail = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (!q) return SL_TIMEOUT;
    *ev_out = &q->ev;
    return SL_OK;
}

SL_API void sl_event_free(sl_event *ev) {
    if (!ev) return;
    free((char *)ev - offsetof(sl_queued_event, ev));
}

SL_API void sl_request_free(sl_request_t *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->released = 1;
    pthread_mutex_unlock(&r->mu);
    sl_request_cancel(r);
    request_release(r);
}

/* ---- the step ------------------------------------------------------------------------------------------------------------------ */
/* Priority aging. A sequence of priority p that arrived at step t0 has, at step t, the effective priority
 * p - (t - t0) / SL_AGING_STEPS: better by 1 every SL_AGING_STEPS steps waited. Comparing two of them at the
 * same t, the t cancels out, so the order is that of the fixed key p * SL_AGING_STEPS + t0 and the waiting list
 * never needs re-sorting. Starvation bound: a sequence is ahead of every sequence arriving more than
 * (p - p_best) * SL_AGING_STEPS steps after it, p_best being the best priority in use; so from then on only
 * the finitely many sequences already ahead of it can run before it. 64 steps (about a second of decoding on
 * a small model) per priority level keeps priorities meaningful for interactive work while bounding the wait.
 * Preemption uses the same key, so a sequence admitted by aging is not the first one evicted again. */
#define SL_AGING_STEPS 64

static int64_t seq_key(const sl_engine_t *e, const sl_request_t *r) {
    return (int64_t)r->priority * SL_AGING_STEPS + e->n_steps;
}

static int seq_before(const sl_seq *a, const sl_seq *b) {
    if (a->key != b->key) return a->key < b->key;
    return a->arrival < b->arrival;
}

static void wait_insert(sl_engine_t *e, sl_seq *s) {
    sl_seq **pp = &e->wait_head;
    while (*pp && !seq_before(s, *pp)) pp = &(*pp)->next_wait;
    s->next_wait = *pp;
    *pp = s;
    s->state = SEQ_WAITING;
}

static void running_remove(sl_engine_t *e, int i) {
    memmove(&e->running[i], &e->running[i + 1], (size_t)(e->n_running - i - 1) * sizeof(sl_seq *));
    e->n_running--;
    atomic_store(&e->n_running_pub, e->n_running);
}

/* Sends running[i] back to waiting by recompute: its blocks go back to the pool, its prompt and generated
 * tokens are prefilled again when it is readmitted. Counted as a preemption; no admission follows in this step
 * (readmitting what was just preempted would only redo its prefill now, as vLLM's scheduler also avoids). */
static void seq_preempt(sl_engine_t *e, int i) {
    sl_seq *s = e->running[i];
    running_remove(e, i);
    seq_free_blocks(e, s);
    wait_insert(e, s);
    e->preempted_this_step = 1;
    pthread_mutex_lock(&e->stats_mu);
    e->stats.num_preemptions_total++;
    pthread_mutex_unlock(&e->stats_mu);
}

/* Preempts the running sequence that yields first (worst aged priority key, then newest) among those with nothing
 * scheduled this step, other than keep. Returns the index it had, or -1 if there was none. */
static int preempt_one(sl_engine_t *e, const sl_seq *keep) {
    int victim = -1;
    for (int i = 0; i < e->n_running; i++) {
        if (e->running[i] == keep || e->running[i]->sched_n > 0) continue;
        if (victim < 0 || seq_before(e->running[victim], e->running[i])) victim = i;
    }
    if (victim < 0) return -1;
    seq_preempt(e, victim);
    return victim;
}

/* Takes new requests from the inbox and applies cancellations and deadlines. */
static void intake(sl_engine_t *e) {
    pthread_mutex_lock(&e->mu);
    sl_request_t *r = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    e->n_inbox = 0;
    pthread_mutex_unlock(&e->mu);
    while (r) {
        sl_request_t *next = r->next_in;
        int64_t arrival = e->arrival_counter++, key = seq_key(e, r);
        for (int i = 0; i < r->n; i++) {
            r->seqs[i].arrival = arrival;
            r->seqs[i].key = key;
            wait_insert(e, &r->seqs[i]);
        }
        atomic_fetch_add(&e->n_waiting_reqs, 1);
        r = next;
    }
    int64_t now = sl_now_us();
    /* Cancelled or expired sequences end at this step boundary. */
    for (int i = 0; i < e->n_running;) {
        sl_seq *s = e->running[i];
        sl_request_t *q = s->req;
        if (atomic_load(&q->cancel) || (q->deadline_us && now > q->deadline_us)) {
            running_remove(e, i);
            seq_finish(e, s, SL_FINISH_ABORT, NULL, -1, SL_CANCELLED, atomic_load(&q->cancel) ? "cancelled" : "deadline passed");
            continue;
        }
        i++;
    }
    for (sl_seq **pp = &e->wait_head; *pp;) {
        sl_seq *s = *pp;
        sl_request_t *q = s->req;
        if (atomic_load(&q->cancel) || (q->deadline_us && now > q->deadline_us)) {
            *pp = s->next_wait;
            seq_finish(e, s, SL_FINISH_ABORT, NULL, -1, SL_CANCELLED, atomic_load(&q->cancel) ? "cancelled" : "deadline passed");
            continue;
        }
        pp = &s->next_wait;
    }
}

/* n > 1: a later choice waits while choice 0 is still computing the shared prompt, then takes its full blocks
 * from the prefix cache instead of computing them again (the waiting list is walked past it meanwhile). */
static int seq_waits_for_sibling(const sl_engine_t *e, const sl_seq *s) {
    const sl_request_t *r = s->req;
    if (s->choice == 0 || !e->params.enable_prefix_caching || r->prompt_logprobs >= 0 || r->n_prompt <= e->block_size)
        return 0;
    const sl_seq *first = &r->seqs[0];
    return first->state == SEQ_RUNNING && first->n_computed < r->n_prompt;
}

/* Plans the step; returns the number of batch rows. */
static int schedule(sl_engine_t *e) {
    int budget = e->params.max_num_batched_tokens;
    int n_rows = 0;
    for (int i = 0; i < e->n_running; i++) e->running[i]->sched_n = 0;
    e->preempted_this_step = 0;
    /* 1. running sequences, decodes first (they hold a user's next token), then their prefill chunks */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < e->n_running && budget > 0; i++) {
            sl_seq *s = e->running[i];
            int remaining = s->n_tokens - s->n_computed;
            int is_decode = remaining == 1;
            if ((pass == 0) != is_decode || s->sched_n > 0) continue;
            int n = SL_MIN(remaining, budget);
            while (!seq_grow_blocks(e, s, s->n_computed + n)) {
                int v = preempt_one(e, s);
                if (v < 0) {
                    /* Everyone else already runs this step: s yields instead (recomputed later), unless it
                     * is alone, which cannot run short of blocks (the pool holds one longest sequence). */
                    SL_ASSERT(e->n_running > 1);
                    seq_preempt(e, i);
                    i--;
                    n = 0;
                    break;
                }
                if (v < i) i--;
            }
            if (n == 0) continue;
            s->sched_n = n;
            s->sched_row = n_rows;
            n_rows += n;
            budget -= n;
        }
    }
    /* 2. admit waiting sequences in priority order while room remains (not after a preemption: see seq_preempt) */
    for (sl_seq **pp = &e->wait_head; !e->preempted_this_step && *pp && budget > 0 &&
                                      e->n_running < e->params.max_num_seqs;) {
        sl_seq *s = *pp;
        if (seq_waits_for_sibling(e, s)) {
            pp = &s->next_wait;
            continue;
        }
        int hit = seq_match_prefix(e, s);
        int n = SL_MIN(s->n_tokens - s->n_computed, budget);
        if (!seq_grow_blocks(e, s, s->n_computed + n)) {
            seq_free_blocks(e, s); /* the cached blocks it took go back; wait for blocks to free up */
            break;
        }
        *pp = s->next_wait;
        s->state = SEQ_RUNNING;
        e->running[e->n_running++] = s;
        atomic_store(&e->n_running_pub, e->n_running);
        if (e->params.enable_prefix_caching) {
            pthread_mutex_lock(&e->stats_mu);
            e->stats.prefix_cache_queries_total += (uint64_t)s->n_tokens;
            e->stats.prefix_cache_hits_total += (uint64_t)hit;
            pthread_mutex_unlock(&e->stats_mu);
        }
        if (s->req->timings.first_scheduled_us == 0) {
            s->req->timings.first_scheduled_us = sl_now_us();
            s->req->usage.cached_prompt_tokens = SL_MIN(hit, s->req->n_prompt);
            atomic_fetch_sub(&e->n_waiting_reqs, 1);
            atomic_fetch_sub(&e->n_waiting_tokens, s->req->n_prompt);
        }
        s->sched_n = n;
        s->sched_row = n_rows;
        n_rows += n;
        budget -= n;
    }
    return n_rows;
}

/* Fills the flat batch from the plan. */
static void build_batch(sl_engine_t *e, sl_batch *b, int n_rows) {
    int n_logits = 0, n_hidden = 0;
    for (int i = 0; i < e->n_running; i++) {
        sl_seq *s = e->running[i];
        e->b_tables[i] = s->kv.ids;
        e->b_seqs[i] = s;
        s->logits_row = -1;
        int want_prompt_lp = s->req->prompt_logprobs >= 0 && s->choice == 0 && !s->prompt_lp_done;
        for (int j = 0; j < s->sched_n; j++) {
            int row = s->sched_row + j, p = s->n_computed + j;
            e->b_tokens[row] = s->tokens[p];
            e->b_pos[row] = p;
            e->b_seq[row] = i;
            /* A token inside a block taken from the prefix cache (recomputed for its logits only) writes its
             * K/V to the sink: the shared block already holds the same values, and other sequences read it. */
            if (p / e->block_size < s->kv.n_hashed)
                e->b_slot[row] = (int64_t)e->n_blocks_total * e->block_size;
            else
                e->b_slot[row] = (int64_t)s->kv.ids[p / e->block_size] * e->block_size + p % e->block_size;
            int last = p == s->n_tokens - 1;
            uint8_t out = SL_OUT_NONE;
            if (last && s->req->kind == SL_REQUEST_EMBED)
                out = SL_OUT_HIDDEN;
            else if (last || (want_prompt_lp && p < s->req->n_prompt - 1))
                out = SL_OUT_LOGITS;
            e->b_out[row] = out;
            if (out == SL_OUT_LOGITS) {
                if (s->logits_row < 0) s->logits_row = n_logits; /* rows of one sequence are consecutive */
                n_logits++;
            }
            if (out == SL_OUT_HIDDEN) s->logits_row = n_hidden++;
        }
    }
    *b = (sl_batch){.n_tokens = n_rows, .tokens = e->b_tokens, .pos = e->b_pos, .seq = e->b_seq, .slot = e->b_slot,
                    .output = e->b_out, .n_seqs = e->n_running, .block_tables = e->b_tables, .logits = e->logits,
                    .hidden = e->hidden};
}

/* log-softmax of one logits row at token `tok`, plus the k best alternatives (most likely first). */
static float logprob_of(const float *logits, int n_vocab, int32_t tok, int k, sl_top_logprob *top) {
    float mx = -INFINITY;
    for (int i = 0; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - mx);
    float lse = mx + (float)log(sum);
    int n = 0;
    for (int i = 0; i < n_vocab && k > 0; i++) {
        float v = logits[i];
        if (n == k && v <= top[n - 1].logprob) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && top[j - 1].logprob < v) {
            top[j] = top[j - 1];
            j--;
        }
        top[j].token = i;
        top[j].logprob = v;
    }
    for (int j = 0; j < n; j++) top[j].logprob -= lse;
    return logits[tok] - lse;
}

static int is_stop_token(const sl_engine_t *e, const sl_request_t *r, int32_t tok) {
    if (!r->ignore_eos && sl_model_token_is_eog(e->model, tok)) return 1;
    for (size_t i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == tok) return 1;
    return 0;
}

/* A draw postprocess leaves for the sampling phase: the sequence, its logits row, then the result. */
typedef struct sl_pending_draw {
    sl_seq *s;
    const float *logits;
    sl_status st;
    sl_sample_output so;
    char err[256]; /* sl_last_error of a failed draw (per thread: the draw may run on a compute thread) */
} sl_pending_draw;

/* Draws the next token of d->s (any thread: reads the request and sequence, writes only d and the scratch). */
static void seq_draw(const sl_engine_t *e, sl_pending_draw *d, sl_sampler_scratch *scratch) {
    sl_seq *s = d->s;
    sl_request_t *r = s->req;
    int32_t banned[1024 + 64];
    size_t n_banned = 0;
    if (s->n_generated < r->min_tokens) {
        for (int i = 0; i < e->n_eog && n_banned < SL_ARRAY_LEN(banned); i++) banned[n_banned++] = e->eog_ids[i];
        for (size_t i = 0; i < r->n_stop_ids && n_banned < SL_ARRAY_LEN(banned); i++) banned[n_banned++] = r->stop_ids[i];
    }
    sl_sample_input in = {.logits = d->logits, .n_vocab = e->n_vocab, .params = &r->sampling, .prompt = s->tokens,
                          .n_prompt = (size_t)r->n_prompt, .output = s->tokens + r->n_prompt,
                          .n_output = (size_t)s->n_generated, .banned = banned, .n_banned = n_banned,
                          .n_top_logprobs = r->logprobs};
    d->st = sl_sample(&in, &s->rng, scratch, &d->so);
    if (d->st != SL_OK) snprintf(d->err, sizeof d->err, "%s", sl_last_error());
}

typedef struct {
    const sl_engine_t *e;
} sl_draw_task;

static void draw_task(void *arg, int ith, int nth) {
    const sl_engine_t *e = ((sl_draw_task *)arg)->e;
    int j0, j1;
    sl_split_range(e->n_pend, 1, ith, nth, &j0, &j1);
    for (int j = j0; j < j1; j++) seq_draw(e, &e->pend[j], e->samplers[ith]);
}

/* Delivers a drawn token of d->s (engine thread). */
static void seq_emit_token(sl_engine_t *e, sl_pending_draw *d) {
    sl_seq *s = d->s;
    sl_request_t *r = s->req;
    if (d->st != SL_OK) {
        seq_finish(e, s, SL_FINISH_ERROR, NULL, -1, d->st, d->err);
        return;
    }
    const sl_sample_output so = d->so;
    int32_t tok = so.token;
    s->tokens[s->n_tokens++] = tok;
    s->n_generated++;
    if (r->timings.first_token_us == 0) r->timings.first_token_us = sl_now_us();

    int stop_tok = is_stop_token(e, r, tok);
    sl_detok_result dr = {.text = "", .len = 0, .stop_index = -1};
    if (!stop_tok && !(r->skip_special && sl_model_token_is_control(e->model, tok))) {
        size_t plen = 0;
        const char *piece = sl_model_token_piece(e->model, tok, &plen);
        sl_detok_push(&s->detok, piece ? piece : "", plen, (const char *const *)r->stop, r->n_stop, &dr);
    }
    float lp = so.logprob;
    sl_event ev = {.type = SL_EVENT_TOKENS, .choice = s->choice, .text = dr.text, .text_len = dr.len, .tokens = &tok,
                   .n_tokens = 1, .logprobs = r->logprobs >= 0 ? &lp : NULL,
                   .top_logprobs = r->logprobs > 0 ? so.top : NULL, .n_top = r->logprobs > 0 ? so.n_top : 0,
                   .stop_token = -1};
    deliver(r, &ev);
    if (stop_tok) {
        seq_finish(e, s, SL_FINISH_STOP, NULL, tok, SL_OK, NULL);
    } else if (dr.stop_index >= 0) {
        seq_finish(e, s, SL_FINISH_STOP, r->stop[dr.stop_index], -1, SL_OK, NULL);
    } else if ((r->max_tokens >= 0 && s->n_generated >= r->max_tokens) || s->n_tokens >= e->max_len) {
        seq_finish(e, s, SL_FINISH_LENGTH, NULL, -1, SL_OK, NULL);
    }
}

static void emit_embedding(sl_engine_t *e, sl_seq *s, const float *h) {
    double ss = 0;
    for (int i = 0; i < e->n_embd; i++) ss += (double)h[i] * h[i];
    float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    float *v = e->hidden + (size_t)s->logits_row * e->n_embd; /* normalize in place: the row is ours */
    for (int i = 0; i < e->n_embd; i++) v[i] = h[i] * inv;
    sl_event ev = {.type = SL_EVENT_EMBEDDING, .embedding = v, .n_embd = e->n_embd, .stop_token = -1};
    deliver(s->req, &ev);
    seq_finish(e, s, SL_FINISH_STOP, NULL, -1, SL_OK, NULL);
}

static void postprocess(sl_engine_t *e, int64_t step_us, int n_rows) {
    for (int i = 0; i < e->n_running; i++) {
        sl_seq *s = e->running[i];
        sl_request_t *r = s->req;
        if (s->sched_n == 0) continue;
        r->timings.device_us += step_us * s->sched_n / (n_rows ? n_rows : 1);
        /* Prompt logprobs (choice 0 only): the chunk's first rows, one per prompt position that predicts the
         * next prompt token; the sequence's next-token row, if the chunk reached the end, comes after them. */
        int n_lp_rows = 0;
        if (r->prompt_logprobs >= 0 && s->choice == 0 && !s->prompt_lp_done) {
            int k = r->prompt_logprobs;
            for (int j = 0; j < s->sched_n; j++) {
                int p = s->n_computed + j;
                if (p >= r->n_prompt - 1) break;
                const float *row = e->logits + (size_t)(s->logits_row + j) * e->n_vocab;
                sl_top_logprob tmp[20];
                r->prompt_lp[p + 1] = logprob_of(row, e->n_vocab, r->prompt[p + 1], k, k ? tmp : NULL);
                if (k) memcpy(r->prompt_top + (size_t)(p + 1) * k, tmp, (size_t)k * sizeof *tmp);
                n_lp_rows++;
            }
        }
        s->n_computed += s->sched_n;
        sl_kv_blocks_commit(e->kv, &s->kv, r->kv_ns, s->tokens, s->n_computed);
        if (s->n_computed < s->n_tokens) continue; /* more prompt to go */
        if (s->n_computed >= r->n_prompt && r->timings.prefill_done_us == 0) r->timings.prefill_done_us = sl_now_us();
        if (r->prompt_logprobs >= 0 && s->choice == 0 && !s->prompt_lp_done) {
            s->prompt_lp_done = 1;
            sl_event ev = {.type = SL_EVENT_PROMPT, .tokens = r->prompt, .n_tokens = (size_t)r->n_prompt,
                           .logprobs = r->prompt_lp, .top_logprobs = r->prompt_logprobs ? r->prompt_top : NULL,
                           .n_top = r->prompt_logprobs, .stop_token = -1};
            char *text = NULL;
            size_t len = 0;
            if (sl_model_detokenize(e->model, r->prompt, (size_t)r->n_prompt, 0, &text, &len) == SL_OK) {
                ev.text = text;
                ev.text_len = len;
            }
            deliver(r, &ev);
            free(text);
        }
        if (r->kind == SL_REQUEST_EMBED) {
            emit_embedding(e, s, e->hidden + (size_t)s->logits_row * e->n_embd);
            continue;
        }
        int last_row = s->logits_row + n_lp_rows;
        if (r->max_tokens == 0) {
            seq_finish(e, s, SL_FINISH_LENGTH, NULL, -1, SL_OK, NULL);
            continue;
        }
        e->pend[e->n_pend++] = (sl_pending_draw){.s = s, .logits = e->logits + (size_t)last_row * e->n_vocab};
    }
    /* The draws: on the compute threads when there are several (a sampler pass over the vocabulary costs tens
     * of microseconds per sequence, serial on this thread otherwise), then delivered in order here. */
    if (e->n_pend > 0) {
        sl_draw_task t = {.e = e};
        if (e->n_pend > 1 && e->n_samplers > 1)
            sl_model_host_parallel(e->model, draw_task, &t);
        else
            draw_task(&t, 0, 1);
        for (int j = 0; j < e->n_pend; j++) seq_emit_token(e, &e->pend[j]);
        e->n_pend = 0;
    }
    /* drop finished sequences from the running set */
    for (int i = 0; i < e->n_running;) {
        if (e->running[i]->state == SEQ_FINISHED)
            running_remove(e, i);
        else
            i++;
    }
}

/* Ends every running sequence the same way (a failed step: the waiting ones are untouched). */
static void finish_running(sl_engine_t *e, sl_finish_reason why, sl_status st, const char *msg) {
    while (e->n_running > 0) {
        sl_seq *s = e->running[--e->n_running];
        seq_finish(e, s, why, NULL, -1, st, msg);
    }
    atomic_store(&e->n_running_pub, 0);
}

/* Ends every sequence the replica holds (running, waiting, and those still in its inbox) the same way. */
static void finish_everything(sl_engine_t *e, sl_finish_reason why, sl_status st, const char *msg) {
    intake(e);
    finish_running(e, why, st, msg);
    while (e->wait_head) {
        sl_seq *s = e->wait_head;
        e->wait_head = s->next_wait;
        seq_finish(e, s, why, NULL, -1, st, msg);
    }
    release_done(e);
}

/* A device error: the replica leaves service for good (DESIGN.md §4). It is marked dead under the group's lock,
 * where the router reads it, so nothing is placed on it afterwards; then whatever it held, its inbox included,
 * ends with an error that names the replica and what failed. The other replicas go on serving. */
static void replica_fail(sl_engine_t *e, const char *cause) {
    char msg[768];
    snprintf(msg, sizeof msg, "replica %d (%s) is out of service after a device error: %s", e->index, e->desc,
             cause && *cause ? cause : "device error");
    fprintf(stderr, "sluice: %s\n", msg);
    pthread_mutex_lock(&e->group->mu);
    atomic_store(&e->alive, 0);
    pthread_mutex_unlock(&e->group->mu);
    finish_everything(e, SL_FINISH_ERROR, SL_DEVICE, msg);
}

/* Step time (forward, draws and the rest of the step), smoothed for the router: an EWMA over about the last
 * 1 / SL_STEP_EWMA_ALPHA = 8 steps follows a change of load within a fraction of a second of decoding, while
 * one odd step (a page fault, one long prefill chunk) moves it by an eighth only. */
#define SL_STEP_EWMA_ALPHA 0.125

static void *engine_main(void *arg) {
    sl_engine_t *e = arg;
    sl_model_fault_tag_set(e->index); /* SLUICE_FAULT_INJECT=<op>:<n>@<index> aims at this replica */
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !e->inbox_head && e->n_running == 0 && !e->wait_head) pthread_cond_wait(&e->cv, &e->mu);
        int stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        intake(e);
        int n_rows = schedule(e);
        e->n_steps++;
        atomic_store(&e->kv_free, sl_kv_blocks_n_free(e->kv));
        if (n_rows == 0) {
            if (e->n_running == 0 && e->wait_head) {
                /* Nothing can run and nothing runs: the head cannot get blocks. Cannot happen when the pool
                 * holds one longest sequence (checked at create); fail the head rather than spin. */
                sl_seq *s = e->wait_head;
                e->wait_head = s->next_wait;
                seq_finish(e, s, SL_FINISH_ERROR, NULL, -1, SL_OUT_OF_MEMORY, "not enough KV cache blocks");
            }
            release_done(e);
            continue;
        }
        sl_batch b;
        build_batch(e, &b, n_rows);
        int64_t t0 = sl_now_us();
        sl_status st = sl_model_forward(e->model, &b);
        int64_t dt = sl_now_us() - t0;
        pthread_mutex_lock(&e->stats_mu);
        e->stats.steps_total++;
        e->stats.busy_seconds_total += (double)dt * 1e-6;
        int bucket = 0;
        while (bucket < SL_STEP_TOKEN_BUCKETS - 1 && n_rows > SL_STEP_TOKENS_BOUND(bucket)) bucket++;
        e->stats.steps_by_tokens[bucket]++;
        e->stats.step_tokens_total += (uint64_t)n_rows;
        pthread_mutex_unlock(&e->stats_mu);
        if (st == SL_DEVICE) {
            char cause[512];
            snprintf(cause, sizeof cause, "%s", sl_last_error());
            replica_fail(e, cause);
            return NULL; /* out of service: nothing is placed here any more, so nothing is left to step */
        }
        if (st != SL_OK) {
            finish_running(e, SL_FINISH_ERROR, st, sl_last_error());
            release_done(e);
            continue;
        }
        postprocess(e, dt, n_rows);
        /* The router's step time is the whole step, the draws and the rest of postprocess with the forward (on
         * a GPU replica the draws run on the host after the device: leaving them out would flatter it). */
        const double step_us = (double)(sl_now_us() - t0);
        pthread_mutex_lock(&e->stats_mu);
        e->step_us_ewma = e->step_us_ewma > 0 ? e->step_us_ewma + SL_STEP_EWMA_ALPHA * (step_us - e->step_us_ewma)
                                              : step_us;
        pthread_mutex_unlock(&e->stats_mu);
        release_done(e);
    }
    /* shutdown: everything still here ends with an abort */
    finish_everything(e, SL_FINISH_ABORT, SL_SHUTTING_DOWN, "the engine is shutting down");
    return NULL;
}

/* ---- engine lifetime --------------------------------------------------------------------------------------------------------------- */
/* Releases what one replica owns; replica 0 also owns the names, the EOG list and the group. */
static void replica_destroy(sl_engine_t *e) {
    sl_model_free(e->model);
    for (int i = 0; i < e->n_samplers; i++) sl_sampler_scratch_free(e->samplers[i]);
    free(e->samplers);
    free(e->pend);
    sl_kv_blocks_free(e->kv);
    free(e->running);
    free(e->b_tokens);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_slot);
    free(e->b_out);
    free(e->b_tables);
    free(e->b_seqs);
    free(e->logits);
    free(e->hidden);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->stats_mu);
}

/* Stops and joins every replica thread that was started (each aborts what it still holds). */
static void engine_stop_threads(sl_engine_group *g) {
    for (int i = 0; i < g->n_reps; i++) {
        sl_engine_t *rp = &g->reps[i];
        pthread_mutex_lock(&rp->mu);
        rp->stop = 1;
        pthread_cond_signal(&rp->cv);
        pthread_mutex_unlock(&rp->mu);
    }
    for (int i = 0; i < g->n_reps; i++)
        if (g->reps[i].thread_started) pthread_join(g->reps[i].thread, NULL);
}

static void engine_destroy(sl_engine_group *g) {
    sl_engine_t *e0 = g->reps;
    if (e0) {
        free(e0->served_name);
        free(e0->model_path);
        free(e0->eog_ids);
    }
    for (int i = 0; i < g->n_reps; i++) replica_destroy(&g->reps[i]);
    free(g->reps);
    sl_placement_free(&g->place);
    free(g->devices);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* The KV element type the parameters ask for, auto resolved by the precision. */
sl_kv_dtype sl__engine_kv_dtype(const sl_engine_params *p) {
    if (p->kv_dtype != SL_KV_AUTO) return p->kv_dtype;
    return p->precision == SL_PRECISION_EXACT ? SL_KV_F32 : SL_KV_F16;
}

/* Loads replica e's model on its devices (n_threads: its share of the CPU) and sizes all its thread needs. The
 * names and the EOG list are replica 0's, shared by pointer. */
static sl_status replica_init(sl_engine_group *g, sl_engine_t *e, const sl_engine_params *p, int n_threads) {
    sl_engine_t *e0 = &g->reps[0];
    e->params = *p;
    e->params.model_path = NULL;
    e->params.served_model_name = NULL;
    e->params.chat_template = NULL;
    e->params.devices = g->devices;
    sl_placement_describe(&g->place, e->index, e->desc, sizeof e->desc);
    sl_status st;
    sl_model_params mp = {.path = p->model_path, .chat_template = p->chat_template, .n_threads = n_threads,
                          .precision = p->precision, .max_model_len = p->max_model_len,
                          .tp_size = g->place.tp_size,
                          .devices = g->place.devices + (size_t)e->index * (size_t)g->place.tp_size};
    if ((st = sl_model_load(&mp, &e->model)) != SL_OK) return st;
    const sl_model_hparams *hp = sl_model_get_hparams(e->model);
    e->max_len = sl_model_max_len(e->model);
    e->n_vocab = hp->n_vocab;
    e->n_embd = hp->n_embd;
    e->block_size = p->block_size;
    if (e != e0) {
        e->served_name = e0->served_name;
        e->model_path = e0->model_path;
    }

    /* KV pool, per replica: the budget given; else on GPUs what the weights leave of gpu_memory_utilization of
     * each device (measured now, after they loaded), and on the CPU min(2 GiB, what max_num_seqs full-length
     * sequences need). */
    const sl_kv_dtype kv_dtype = sl__engine_kv_dtype(p);
    size_t block_bytes = sl_model_kv_block_bytes(e->model, e->block_size, kv_dtype);
    int per_seq = blocks_needed(e, e->max_len);
    uint64_t budget = p->kv_cache_bytes;
    if (budget == 0) {
        uint64_t full = (uint64_t)per_seq * (uint64_t)p->max_num_seqs * block_bytes;
        st = sl_model_kv_device_budget(e->model, p->gpu_memory_utilization, &budget);
        if (st == SL_UNSUPPORTED) /* host memory */
            budget = SL_MIN(full, (uint64_t)2 << 30);
        else if (st != SL_OK)
            return st;
    }
    uint64_t n_blocks = budget / block_bytes;
    if (n_blocks < (uint64_t)per_seq)
        return sl__errorf(SL_INVALID_ARGUMENT,
                          "the KV cache budget of %llu bytes holds %llu tokens, less than one sequence of "
                          "max_model_len %d; raise kv_cache_size or lower max_model_len",
                          (unsigned long long)budget, (unsigned long long)(n_blocks * (uint64_t)e->block_size),
                          e->max_len);
    if (n_blocks > (1u << 30)) n_blocks = 1u << 30;
    e->n_blocks_total = (int)n_blocks;
    e->kv_block_bytes = block_bytes;
    e->kv_dtype = kv_dtype;
    /* One block more than the block manager hands out: the sink, a write-only slot for recomputed tokens whose
     * K/V the prefix cache already holds (build_batch). */
    if ((st = sl_model_kv_alloc(e->model, e->n_blocks_total + 1, e->block_size, kv_dtype)) != SL_OK) return st;
    if ((st = sl_kv_blocks_create(e->n_blocks_total, e->block_size, p->enable_prefix_caching, &e->kv)) != SL_OK)
        return st;
    atomic_store(&e->kv_free, e->n_blocks_total);

    size_t T = (size_t)p->max_num_batched_tokens, S = (size_t)p->max_num_seqs;
    e->running = sl__calloc(S, sizeof(sl_seq *));
    e->b_tokens = sl__malloc(T * sizeof(int32_t));
    e->b_pos = sl__malloc(T * sizeof(int32_t));
    e->b_seq = sl__malloc(T * sizeof(int32_t));
    e->b_slot = sl__malloc(T * sizeof(int64_t));
    e->b_out = sl__malloc(T);
    e->b_tables = sl__calloc(S, sizeof(int32_t *));
    e->b_seqs = sl__calloc(S, sizeof(sl_seq *));
    /* Every row may want logits (prompt logprobs); the allocation is large but only touched rows cost memory. */
    e->logits = sl__malloc(T * (size_t)e->n_vocab * sizeof(float));
    e->hidden = sl__malloc(S * (size_t)e->n_embd * sizeof(float));
    if (!e->running || !e->b_tokens || !e->b_pos || !e->b_seq || !e->b_slot || !e->b_out || !e->b_tables ||
        !e->b_seqs || !e->logits || !e->hidden)
        return sl__errorf(SL_OUT_OF_MEMORY, "step buffers");
    e->pend = sl__calloc(S, sizeof *e->pend);
    int nt = sl_model_host_threads(e->model);
    e->samplers = sl__calloc((size_t)nt, sizeof *e->samplers);
    if (!e->pend || !e->samplers) return sl__errorf(SL_OUT_OF_MEMORY, "sampler state");
    for (; e->n_samplers < nt; e->n_samplers++)
        if ((st = sl_sampler_scratch_create(e->n_vocab, &e->samplers[e->n_samplers])) != SL_OK) return st;
    sl_engine_stats_init(&e->stats);
    atomic_store(&e->alive, 1);
    return SL_OK;
}

SL_API sl_status sl_engine_create(const sl_engine_params *p, sl_engine_t **out) {
    *out = NULL;
    if (!p || p->struct_size != sizeof *p)
        return sl__errorf(SL_INVALID_ARGUMENT, "sl_engine_params.struct_size mismatch (call sl_engine_params_init)");
    if (!p->model_path || !*p->model_path) return sl__errorf(SL_INVALID_ARGUMENT, "no model path given");
    if (p->max_num_seqs < 1 || p->max_num_seqs > 4096)
        return sl__errorf(SL_INVALID_ARGUMENT, "max_num_seqs %d is outside [1, 4096]", p->max_num_seqs);
    if (p->max_num_batched_tokens < 1 || p->max_num_batched_tokens > (1 << 20))
        return sl__errorf(SL_INVALID_ARGUMENT, "max_num_batched_tokens %d is outside [1, 1048576]",
                          p->max_num_batched_tokens);
    if (p->block_size < 1 || p->block_size > 1024 || (p->block_size & (p->block_size - 1)))
        return sl__errorf(SL_INVALID_ARGUMENT, "block_size %d is not a power of two in [1, 1024]", p->block_size);
    if (p->max_waiting_requests < 1)
        return sl__errorf(SL_INVALID_ARGUMENT, "max_waiting_requests %d < 1", p->max_waiting_requests);
    if (!(p->gpu_memory_utilization > 0 && p->gpu_memory_utilization <= 1))
        return sl__errorf(SL_INVALID_ARGUMENT, "gpu_memory_utilization %g is outside (0, 1]", p->gpu_memory_utilization);
    if (p->max_waiting_tokens < 1)
        return sl__errorf(SL_INVALID_ARGUMENT, "max_waiting_tokens %lld < 1", (long long)p->max_waiting_tokens);
    if (p->kv_dtype != SL_KV_F32 && p->kv_dtype != SL_KV_F16 && p->kv_dtype != SL_KV_AUTO)
        return sl__errorf(SL_INVALID_ARGUMENT, "unknown KV dtype %d", (int)p->kv_dtype);
    if (p->precision != SL_PRECISION_FAST && p->precision != SL_PRECISION_EXACT)
        return sl__errorf(SL_INVALID_ARGUMENT, "unknown precision %d", (int)p->precision);

    sl_engine_group *g = sl__calloc(1, sizeof *g);
    if (!g) return sl__errorf(SL_OUT_OF_MEMORY, "engine");
    pthread_mutex_init(&g->mu, NULL);
    sl_status st;
    /* Placement first: a typo in the device list is refused before any model is read. */
    if ((st = sl_placement_parse(p->devices, p->tensor_parallel_size, &g->place)) != SL_OK) goto fail;
    if (g->place.max_cuda >= 0 && (st = sl_placement_check_cuda(&g->place, sl_model_cuda_device_count())) != SL_OK)
        goto fail;
    g->devices = sl__strdup(p->devices && *p->devices ? p->devices : "cpu");
    g->reps = sl__calloc((size_t)g->place.n_replicas, sizeof *g->reps);
    if (!g->devices || !g->reps) {
        st = sl__errorf(SL_OUT_OF_MEMORY, "engine");
        goto fail;
    }
    sl_engine_t *e = &g->reps[0];
    e->model_path = sl__strdup(p->model_path);
    if (p->served_model_name && *p->served_model_name) {
        e->served_name = sl__strdup(p->served_model_name);
    } else {
        const char *base = strrchr(p->model_path, '/');
        base = base ? base + 1 : p->model_path;
        size_t n = strlen(base);
        if (n > 5 && strcmp(base + n - 5, ".gguf") == 0) n -= 5;
        e->served_name = sl__strndup(base, n);
    }
    if (!e->model_path || !e->served_name) {
        st = sl__errorf(SL_OUT_OF_MEMORY, "engine names");
        goto fail;
    }

    /* CPU replicas split the CPU's compute threads evenly (each at least one); with one, the setting goes
     * through as it is (0 still means "every core", decided by the backend). */
    int n_threads = p->n_threads;
    if (g->place.n_cpu_replicas > 1) {
        int total = p->n_threads > 0 ? p->n_threads : sl_cpu_count();
        n_threads = SL_MAX(1, total / g->place.n_cpu_replicas);
    }
    for (int i = 0; i < g->place.n_replicas; i++) {
        sl_engine_t *rp = &g->reps[i];
        rp->group = g;
        rp->index = i;
        pthread_mutex_init(&rp->mu, NULL);
        pthread_cond_init(&rp->cv, NULL);
        pthread_mutex_init(&rp->stats_mu, NULL);
        g->n_reps = i + 1; /* from here on engine_destroy releases it */
        if ((st = replica_init(g, rp, p, n_threads)) != SL_OK) {
            if (g->place.n_replicas > 1) {
                char why[512];
                snprintf(why, sizeof why, "%s", sl_last_error());
                st = sl__errorf(st, "replica %d (%s): %s", i, rp->desc, why);
            }
            goto fail;
        }
    }

    for (int pass = 0; pass < 2; pass++) {
        int n = 0;
        for (int32_t t = 0; t < e->n_vocab; t++)
            if (sl_model_token_is_eog(e->model, t)) {
                if (pass) e->eog_ids[n] = t;
                n++;
            }
        if (!pass) {
            e->n_eog = n;
            e->eog_ids = sl__malloc((size_t)(n ? n : 1) * sizeof(int32_t));
            if (!e->eog_ids) {
                st = sl__errorf(SL_OUT_OF_MEMORY, "eog ids");
                goto fail;
            }
        }
    }
    for (int i = 1; i < g->n_reps; i++) {
        g->reps[i].eog_ids = e->eog_ids;
        g->reps[i].n_eog = e->n_eog;
    }
    for (int i = 0; i < g->n_reps; i++) {
        if (pthread_create(&g->reps[i].thread, NULL, engine_main, &g->reps[i]) != 0) {
            st = sl__errorf(SL_INTERNAL, "cannot start the thread of replica %d", i);
            goto fail;
        }
        g->reps[i].thread_started = 1;
    }
    *out = e;
    return SL_OK;
fail:
    engine_stop_threads(g);
    engine_destroy(g);
    return st;
}

SL_API void sl_engine_free(sl_engine_t *e) {
    if (!e) return;
    sl_engine_group *g = e->group;
    engine_stop_threads(g);
    engine_destroy(g);
}

SL_API sl_status sl_engine_model_info(sl_engine_t *e, sl_model_info *info) {
    if (!e || !info || info->struct_size != sizeof *info)
        return sl__errorf(SL_INVALID_ARGUMENT, "sl_model_info.struct_size mismatch (call sl_model_info_init)");
    const sl_model_hparams *hp = sl_model_get_hparams(e->model);
    info->name = e->served_name;
    info->architecture = hp->architecture;
    info->path = e->model_path;
    info->n_params = hp->n_params;
    info->weight_bytes = hp->weight_bytes;
    info->n_vocab = hp->n_vocab;
    info->n_ctx_train = hp->n_ctx_train;
    info->max_model_len = e->max_len;
    info->n_embd = hp->n_embd;
    info->n_layer = hp->n_layer;
    info->n_head = hp->n_head;
    info->n_head_kv = hp->n_head_kv;
    info->bos_id = sl_model_bos(e->model);
    info->eos_id = sl_model_eos(e->model);
    info->add_bos = sl_model_add_bos(e->model);
    info->has_chat_template = sl_model_has_chat_template(e->model);
    info->kv_cache_tokens = (int64_t)e->n_blocks_total * e->block_size;
    info->kv_cache_bytes = (uint64_t)e->n_blocks_total * e->kv_block_bytes;
    info->kv_dtype = e->kv_dtype == SL_KV_F16 ? "f16" : "f32";
    return SL_OK;
}

SL_API sl_status sl_engine_tokenize(sl_engine_t *e, const char *text, size_t len, unsigned flags, int32_t **ids,
                                    size_t *n) {
    if (!e || (!text && len)) return sl__errorf(SL_INVALID_ARGUMENT, "NULL engine or text");
    return sl_model_tokenize(e->model, text ? text : "", len, flags, ids, n);
}

SL_API sl_status sl_engine_detokenize(sl_engine_t *e, const int32_t *ids, size_t n, unsigned flags, char **text,
                                      size_t *len) {
    if (!e || (!ids && n)) return sl__errorf(SL_INVALID_ARGUMENT, "NULL engine or ids");
    return sl_model_detokenize(e->model, ids, n, flags, text, len);
}

SL_API sl_status sl_engine_token_piece(sl_engine_t *e, int32_t id, char **text, size_t *len) {
    size_t n = 0;
    const char *p = e ? sl_model_token_piece(e->model, id, &n) : NULL;
    if (!p) return sl__errorf(SL_INVALID_ARGUMENT, "token id %d is outside the vocabulary", id);
    *text = sl__strndup(p, n);
    if (!*text) return sl__errorf(SL_OUT_OF_MEMORY, "token piece");
    *len = n;
    return SL_OK;
}

SL_API sl_status sl_engine_render_chat(sl_engine_t *e, const sl_chat_message *msgs, size_t n, int add_gen, char **text) {
    if (!e || (!msgs && n)) return sl__errorf(SL_INVALID_ARGUMENT, "NULL engine or messages");
    return sl_model_render_chat(e->model, msgs, n, add_gen, text);
}

SL_API sl_status sl_model_file_describe(const char *path, char **text) {
    if (!path || !text) return sl__errorf(SL_INVALID_ARGUMENT, "NULL path");
    return sl_model_describe_file(path, text);
}

/* One replica's view: its counters, its running/waiting gauges and KV usage. */
static void replica_stats(sl_engine_t *rp, sl_engine_stats *s) {
    pthread_mutex_lock(&rp->stats_mu);
    *s = rp->stats;
    pthread_mutex_unlock(&rp->stats_mu);
    /* running/waiting/kv usage are read without the replica's lock: a momentary view is all a gauge needs */
    s->num_running = atomic_load(&rp->n_running_pub);
    s->num_waiting = atomic_load(&rp->n_waiting_reqs);
    /* cached blocks nobody holds count as free: they are reused on demand */
    s->kv_cache_usage = 1.0 - (double)atomic_load(&rp->kv_free) / (double)rp->n_blocks_total;
    s->num_replicas = 1;
    s->num_replicas_ready = atomic_load(&rp->alive);
}

SL_API sl_status sl_engine_get_stats(sl_engine_t *e, sl_engine_stats *s) {
    if (!e || !s || s->struct_size != sizeof *s)
        return sl__errorf(SL_INVALID_ARGUMENT, "sl_engine_stats.struct_size mismatch (call sl_engine_stats_init)");
    sl_engine_group *g = e->group;
    sl_engine_stats_init(s);
    int64_t blocks = 0, blocks_free = 0;
    for (int i = 0; i < g->n_reps; i++) {
        sl_engine_t *rp = &g->reps[i];
        sl_engine_stats r;
        sl_engine_stats_init(&r);
        replica_stats(rp, &r);
        s->num_running += r.num_running;
        s->num_waiting += r.num_waiting;
        s->prompt_tokens_total += r.prompt_tokens_total;
        s->generation_tokens_total += r.generation_tokens_total;
        s->num_preemptions_total += r.num_preemptions_total;
        s->prefix_cache_queries_total += r.prefix_cache_queries_total;
        s->prefix_cache_hits_total += r.prefix_cache_hits_total;
        s->steps_total += r.steps_total;
        s->busy_seconds_total += r.busy_seconds_total;
        for (int k = 0; k < SL_STEP_TOKEN_BUCKETS; k++) s->steps_by_tokens[k] += r.steps_by_tokens[k];
        s->step_tokens_total += r.step_tokens_total;
        s->num_replicas_ready += r.num_replicas_ready;
        /* a replica out of service holds no KV for anyone: usage is over the replicas in service */
        if (r.num_replicas_ready) {
            blocks += rp->n_blocks_total;
            blocks_free += atomic_load(&rp->kv_free);
        }
    }
    s->kv_cache_usage = blocks ? 1.0 - (double)blocks_free / (double)blocks : 0.0;
    s->num_replicas = g->n_reps;
    return SL_OK;
}


sl_status sl__engine_replica_stats(sl_engine_t *e, int index, sl_engine_stats *s) {
    if (!e || !s || s->struct_size != sizeof *s)
        return sl__errorf(SL_INVALID_ARGUMENT, "sl_engine_stats.struct_size mismatch (call sl_engine_stats_init)");
    if (index < 0 || index >= e->group->n_reps)
        return sl__errorf(SL_INVALID_ARGUMENT, "replica %d does not exist (this engine has %d)", index,
                          e->group->n_reps);
    replica_stats(&e->group->reps[index], s);
    return SL_OK;
}
