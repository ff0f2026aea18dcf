/*
 * api.c — the OpenAI-compatible API: routes, request JSON in, response JSON and Server-Sent Events out.
 *
 * A POST to /v1/completions or /v1/chat/completions becomes an "exchange": the checked request turned into
 * one engine request per prompt (sl_request_submit), answered as one JSON body or as an SSE stream. Engine
 * events arrive on the engine thread through on_engine_event, which only copies them into one queue under a
 * mutex and wakes the loop (uv_async_send; wakeups coalesce, so each wakeup drains the whole queue). The loop
 * thread then frames them. When a client goes away its exchange is freed: sl_request_free cancels the engine
 * work and guarantees no callback runs after it returns, then the queue is purged of that exchange's events.
 *
 * sl_request_submit tokenizes and renders the chat template on its caller's thread, so submission runs on
 * libuv's worker pool (submit_job); events that arrive before it returns wait in the exchange. /tokenize runs
 * there too (tok_job); /detokenize stays on the loop (its ids are bounded by max_body_size and cheap to turn
 * into text; the echo of a token-id prompt likewise). The model, too, loads on the worker pool: the
 * server listens at once, /health answers 200 and /ready 503 until the engine is up.
 *
 * One event queue serves all connections (not one per connection): the loop pops one item at a time, so an
 * exchange freed while draining takes its later events with it (exchange_free purges them under the mutex).
 *
 * Every error is OpenAI's object {"error": {"message", "type", "param", "code"}}; client mistakes are 4xx.
 *
 * Replicas: the engine may serve on several replicas (the devices setting). A request may pin one with the body
 * field "sluice_replica" or the header X-Sluice-Replica (0-based; -1 = any); a replica that does not exist is a
 * 400 naming the field, one out of service (its device failed) a 503. /ready answers 503 once no replica is in
 * service, and says how many are otherwise.
 */
#include "api.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "http.h"
#include "metrics.h"
#include "sluice/sluice.h"

/* Prompts in one completions request: each is its own engine request. */
#define API_MAX_PROMPTS 64
/* Stop strings per request: OpenAI allows 4; the engine takes up to 64. */
#define API_MAX_STOPS 16
/* logit_bias entries: OpenAI documents no limit; 1024 keeps the request's copy small. */
#define API_MAX_LOGIT_BIAS 1024
/* Inputs in one embeddings request, as OpenAI documents. */
#define API_MAX_EMBED_INPUTS 2048
/* Reals with 9 significant digits: enough to round-trip an f32 (embeddings), and short timings. */
#define API_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(9))

typedef enum ex_kind { EX_COMPLETION, EX_CHAT, EX_EMBED, EX_TOKENIZE } ex_kind;

typedef struct api api;
typedef struct exchange exchange;

/* One engine event, copied off the engine thread; strings and the vector live in data[]. */
typedef struct ev_item {
    struct ev_item *next;
    exchange *ex;
    int sub;
    sl_event_type type;
    int choice;
    sl_finish_reason finish_reason;
    sl_status status;
    char *text; /* text_len bytes, NUL-terminated */
    size_t text_len;
    char *message;           /* or NULL */
    float *embedding;        /* [n_embd] f32, or NULL */
    int n_embd;
    int32_t *tokens;         /* [n_tokens], only when logprobs were asked */
    float *logprobs;         /* [n_tokens] */
    sl_top_logprob *top;     /* [n_tokens][n_top] */
    size_t n_tokens;
    int n_top;
    sl_usage usage;
    sl_timings timings;
    _Alignas(float) char data[];
} ev_item;

typedef struct sub_req {
    exchange *ex;
    int index;
    sl_request_t *req;
    int done;
    char *echo; /* echo: the prompt's text, prepended to each of its choices (owned) */
} sub_req;

typedef struct choice_state {
    sl_buf text;
    const char *finish_reason; /* static string, or NULL while running */
    float *embedding;          /* EMBED: [n_embd] */
    int n_embd;
    json_t *logprobs;          /* accumulated logprobs in the endpoint's shape (non-streamed), or NULL */
    int64_t text_offset;       /* completions logprobs: bytes of text before the next token */
    int64_t last_token_us;     /* metrics: the choice's previous token event (engine thread only) */
} choice_state;

struct exchange {
    api *a;
    sl_http_conn *conn;
    exchange *prev, *next; /* api's list of exchanges in flight */
    ex_kind kind;
    int stream, include_usage;
    int n;                 /* choices per prompt */
    int n_sub;
    sub_req *subs;         /* [n_sub] */
    int n_choices;         /* n_sub * n */
    choice_state *choices; /* [n_choices] */
    int n_done;
    int encoding_base64;
    int logprobs;          /* -1: none; else alternatives per token */
    int echo;
    char id[48];
    int64_t created;
    sl_usage usage;
    sl_timings timings;
    int submitting;        /* sl_request_submit runs on a worker thread: events wait in deferred */
    int orphaned;          /* the client left while submitting: freed when the worker is done */
    ev_item *deferred;     /* events that came while submitting, oldest first */
    int failed;            /* an error was sent (stream) or is to be sent */
    int fail_status;
    char fail_msg[256];
};

struct api {
    const sl_config *cfg;
    sl_engine_t *eng;
    sl_model_info info;
    uv_loop_t *loop;
    sl_http_server *http;
    uv_async_t wake;
    uv_signal_t sig_term, sig_int;
    uv_timer_t grace;
    pthread_mutex_t mu;
    ev_item *q_head, *q_tail; /* under mu */
    exchange *active;
    int draining, grace_over, stopped;
    int ready; /* the model is loaded: eng and info are set (loop thread only) */
    int n_replicas; /* the engine's replicas, known once ready */
    int rc;    /* the process exit code */
    char **keys; /* accepted API keys (api_key and api_key_file's lines); none: no key asked for */
    int n_keys;
    uint64_t next_id;
    sl_metrics *metrics; /* metrics: created once the model's served name is known */
    FILE *access_log;    /* metrics: one JSON line per finished exchange, or NULL (off) */
};

/* ---- errors ------------------------------------------------------------------------------------------- */
typedef struct api_err {
    int status;
    const char *type;
    const char *code;
    char param[64];
    char msg[512];
    int no_retry; /* a 503 that waiting does not cure (a device error): no Retry-After */
} api_err;

static int fail_at(api_err *e, int status, const char *param, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* OpenAI's error type for an HTTP status. */
static const char *err_type(int status) {
    return status == 401   ? "authentication_error"
           : status == 429 ? "rate_limit_error"
           : status >= 500 ? "server_error"
                           : "invalid_request_error";
}

static int fail_at(api_err *e, int status, const char *param, const char *fmt, ...) {
    e->status = status;
    e->type = err_type(status);
    e->code = NULL;
    e->no_retry = 0;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return 0;
}

static char *error_json(const char *type, const char *msg, const char *param, const char *code) {
    json_t *o = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", msg, "type", type, "param",
                          param && *param ? json_string(param) : json_null(), "code",
                          code ? json_string(code) : json_null());
    char *s = o ? json_dumps(o, API_JSON_FLAGS) : NULL;
    json_decref(o);
    return s;
}

static void send_json(sl_http_conn *c, int status, json_t *o, const char *extra) {
    char *s = o ? json_dumps(o, API_JSON_FLAGS) : NULL;
    if (!s) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        sl_http_respond(c, 503, "application/json", "", oom, sizeof oom - 1);
        return;
    }
    sl_http_respond(c, status, "application/json", extra ? extra : "", s, strlen(s));
    free(s);
}

static void send_err(sl_http_conn *c, const api_err *e) {
    char *s = error_json(e->type, e->msg, e->param, e->code);
    /* Retry-After where waiting helps (a full queue, shutdown hand-over); not for a device error, which is for
     * good (the replica never comes back: a client should not retry the same pin) */
    const char *extra = e->status == 429 || (e->status == 503 && !e->no_retry) ? "Retry-After: 1\r\n" : "";
    if (!s) {
        sl_http_respond(c, 503, "application/json", "", "{}", 2);
        return;
    }
    sl_http_respond(c, e->status, "application/json", extra, s, strlen(s));
    free(s);
}

static void send_simple_err(sl_http_conn *c, int status, const char *param, const char *code, const char *msg) {
    api_err e;
    fail_at(&e, status, param, "%s", msg);
    e.code = code;
    send_err(c, &e);
}

/* Maps an engine status from sl_request_submit to the HTTP answer. */
static void submit_err(api_err *e, sl_status st, const char *prompt_param) {
    const char *m = *sl_last_error() ? sl_last_error() : sl_status_str(st);
    switch (st) {
    case SL_QUEUE_FULL:
        fail_at(e, 429, NULL, "%s; retry later", m);
        e->code = "rate_limit_exceeded";
        break;
    case SL_CONTEXT_OVERFLOW:
        fail_at(e, 400, prompt_param, "%s", m);
        e->code = "context_length_exceeded";
        break;
    case SL_INVALID_ARGUMENT:
    case SL_BAD_FORMAT:
    case SL_UNSUPPORTED:
        fail_at(e, 400, NULL, "%s", m);
        break;
    case SL_SHUTTING_DOWN:
        fail_at(e, 503, NULL, "the server is shutting down");
        break;
    case SL_DEVICE: /* the pinned replica, or every replica, is out of service, for good */
        fail_at(e, 503, NULL, "%s", m);
        e->no_retry = 1;
        break;
    default:
        fail_at(e, 500, NULL, "%s", m);
        break;
    }
}

/* ---- field checks ------------------------------------------------------------------------------------- */
/* Each returns 1 when the field is absent/null (leaving *out alone) or valid, 0 with *e filled otherwise. */
static json_t *field(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return v && !json_is_null(v) ? v : NULL;
}

static int get_number(json_t *o, const char *key, double lo, double hi, int lo_open, double *out, api_err *e) {
    json_t *v = field(o, key);
    if (!v) return 1;
    if (!json_is_number(v)) return fail_at(e, 400, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!(lo_open ? d > lo : d >= lo) || !(d <= hi))
        return fail_at(e, 400, key, "'%s' is %g; it must be in %s%g, %g]", key, d, lo_open ? "(" : "[", lo, hi);
    *out = d;
    return 1;
}

static int get_int(json_t *o, const char *key, long long lo, long long hi, long long *out, api_err *e) {
    json_t *v = field(o, key);
    if (!v) return 1;
    if (!json_is_integer(v)) return fail_at(e, 400, key, "'%s' must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return fail_at(e, 400, key, "'%s' is %lld; it must be in [%lld, %lld]", key, x, lo, hi);
    *out = x;
    return 1;
}

static int get_bool(json_t *o, const char *key, int *out, api_err *e) {
    json_t *v = field(o, key);
    if (!v) return 1;
    if (!json_is_boolean(v)) return fail_at(e, 400, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 1;
}

static int get_string(json_t *o, const char *key, const char **out, api_err *e) {
    json_t *v = field(o, key);
    if (!v) return 1;
    if (!json_is_string(v)) return fail_at(e, 400, key, "'%s' must be a string", key);
    *out = json_string_value(v);
    return 1;
}

static int check_model(api *a, json_t *root, api_err *e) {
    const char *model = NULL;
    if (!get_string(root, "model", &model, e)) return 0;
    if (model && strcmp(model, a->info.name)) {
        fail_at(e, 404, "model", "The model '%s' does not exist; this server serves '%s'", model, a->info.name);
        e->code = "model_not_found";
        return 0;
    }
    return 1;
}

/* The replica a request is pinned to: the body's "sluice_replica", else the X-Sluice-Replica header (hdr, or
 * NULL), else -1 (the router picks). Both given and different is a mistake worth a 400 too. */
static int get_replica(api *a, json_t *root, const char *hdr, int *out, api_err *e) {
    long long hi = a->n_replicas - 1, x = -1;
    int from_hdr = -2;
    if (hdr) {
        char *end;
        errno = 0;
        long v = strtol(hdr, &end, 10);
        while (*end == ' ' || *end == '\t') end++;
        if (!*hdr || *end || errno || v < -1 || v > hi)
            return fail_at(e, 400, "X-Sluice-Replica", "header 'X-Sluice-Replica' is '%.40s'; it must be an integer in "
                           "[-1, %lld] (this server has %d replicas; -1 = any)", hdr, hi, a->n_replicas);
        from_hdr = (int)v;
        x = v;
    }
    json_t *v = field(root, "sluice_replica");
    if (v) {
        if (!json_is_integer(v)) return fail_at(e, 400, "sluice_replica", "'sluice_replica' must be an integer");
        x = json_integer_value(v);
        if (x < -1 || x > hi)
            return fail_at(e, 400, "sluice_replica", "'sluice_replica' is %lld; it must be in [-1, %lld] (this server "
                           "has %d replicas; -1 = any)", x, hi, a->n_replicas);
        if (from_hdr != -2 && from_hdr != x)
            return fail_at(e, 400, "sluice_replica", "'sluice_replica' (%lld) and header 'X-Sluice-Replica' (%d) "
                           "disagree", x, from_hdr);
    }
    *out = (int)x;
    return 1;
}

/* Known OpenAI fields Sluice does not implement: refused by name rather than silently ignored. */
static int refuse_unsupported(json_t *root, ex_kind kind, api_err *e) {
    static const char *const chat_fields[] = {"tools", "tool_choice", "functions", "function_call", "audio",
                                              "modalities", "prediction", "web_search_options", NULL};
    if (kind == EX_CHAT)
        for (int i = 0; chat_fields[i]; i++)
            if (field(root, chat_fields[i]))
                return fail_at(e, 400, chat_fields[i], "'%s' is not supported by this server", chat_fields[i]);
    json_t *rf = field(root, "response_format");
    if (kind == EX_CHAT && rf) {
        json_t *t = json_is_object(rf) ? json_object_get(rf, "type") : NULL;
        if (!t || !json_is_string(t) || strcmp(json_string_value(t), "text"))
            return fail_at(e, 400, "response_format", "'response_format' other than {\"type\": \"text\"} is not supported");
    }
    if (kind == EX_COMPLETION) {
        json_t *sfx = field(root, "suffix");
        if (sfx && !(json_is_string(sfx) && !*json_string_value(sfx)))
            return fail_at(e, 400, "suffix", "'suffix' is not supported by this server");
        long long best_of = 1;
        if (!get_int(root, "best_of", 1, 128, &best_of, e)) return 0;
        if (best_of != 1) return fail_at(e, 400, "best_of", "'best_of' other than 1 is not supported");
    }
    return 1;
}

/* Sampling, limits and stop fields shared by completions and chat. stops[] receives pointers into root. */
static int parse_common(api *a, json_t *root, ex_kind kind, sl_request_params *rp, const char **stops,
                        sl_logit_bias *bias, exchange *ex, api_err *e) {
    double d;
    long long x;
    int b;
    if (!refuse_unsupported(root, kind, e)) return 0;
    b = 0;
    if (!get_bool(root, "stream", &b, e)) return 0;
    ex->stream = b;
    json_t *so = field(root, "stream_options");
    if (so && !ex->stream) return fail_at(e, 400, "stream_options", "'stream_options' is only allowed with \"stream\": true");
    if (so) {
        if (!json_is_object(so)) return fail_at(e, 400, "stream_options", "'stream_options' must be an object");
        b = 0;
        if (!get_bool(so, "include_usage", &b, e)) return 0;
        ex->include_usage = b;
    }
    x = 1;
    if (!get_int(root, "n", 1, 128, &x, e)) return 0; /* OpenAI's bound, and the engine's */
    rp->n = ex->n = (int)x;
    /* OpenAI's completions default to 16 tokens; chat to "as many as fit" (capped by default_max_tokens). */
    rp->max_tokens = kind == EX_COMPLETION ? 16 : (a->cfg->default_max_tokens ? a->cfg->default_max_tokens : -1);
    const char *mt_key = "max_tokens";
    if (kind == EX_CHAT && field(root, "max_completion_tokens")) mt_key = "max_completion_tokens";
    x = rp->max_tokens;
    /* 2^24: the largest max_model_len (config.h says why); 0 only for completions (echo scores a prompt) */
    if (!get_int(root, mt_key, kind == EX_COMPLETION ? 0 : 1, 1 << 24, &x, e)) return 0;
    rp->max_tokens = (int)x;
    d = rp->sampling.temperature;
    if (!get_number(root, "temperature", 0, 2, 0, &d, e)) return 0;
    rp->sampling.temperature = (float)d;
    d = rp->sampling.top_p;
    if (!get_number(root, "top_p", 0, 1, 1, &d, e)) return 0;
    rp->sampling.top_p = (float)d;
    x = 0;
    if (!get_int(root, "top_k", -1, a->info.n_vocab, &x, e)) return 0;
    rp->sampling.top_k = x < 0 ? 0 : (int)x; /* vLLM's -1 and 0 both mean off */
    d = 0;
    if (!get_number(root, "min_p", 0, 1, 0, &d, e)) return 0;
    rp->sampling.min_p = (float)d;
    d = 0;
    if (!get_number(root, "presence_penalty", -2, 2, 0, &d, e)) return 0;
    rp->sampling.presence_penalty = (float)d;
    d = 0;
    if (!get_number(root, "frequency_penalty", -2, 2, 0, &d, e)) return 0;
    rp->sampling.frequency_penalty = (float)d;
    d = 1;
    /* > 0 as in vLLM; past 10 every seen token is all but banned, which no sampler setting means */
    if (!get_number(root, "repetition_penalty", 0, 10, 1, &d, e)) return 0;
    rp->sampling.repetition_penalty = (float)d;
    json_t *seed = field(root, "seed");
    if (seed) {
        if (!json_is_integer(seed)) return fail_at(e, 400, "seed", "'seed' must be an integer");
        rp->sampling.seed = (uint64_t)json_integer_value(seed);
        rp->sampling.has_seed = 1;
    }
    b = 0;
    if (!get_bool(root, "ignore_eos", &b, e)) return 0;
    rp->ignore_eos = b;
    x = 0;
    if (!get_int(root, "min_tokens", 0, 1 << 24, &x, e)) return 0;
    rp->min_tokens = (int)x;
    if (rp->max_tokens >= 0 && rp->min_tokens > rp->max_tokens)
        return fail_at(e, 400, "min_tokens", "'min_tokens' (%d) exceeds max_tokens (%d)", rp->min_tokens, rp->max_tokens);
    x = 0;
    /* any sane ordering fits in +-10^6; the bound keeps the int far from overflow in the scheduler */
    if (!get_int(root, "priority", -1000000, 1000000, &x, e)) return 0;
    rp->priority = (int)x;
    const char *user = NULL;
    if (!get_string(root, "user", &user, e)) return 0;
    b = 1;
    if (!get_bool(root, "skip_special_tokens", &b, e)) return 0;
    rp->skip_special_tokens = b;

    /* logprobs: completions take an integer up to 5 (alternatives per token); chat a boolean plus
     * top_logprobs up to 20 (OpenAI's bounds). */
    if (kind == EX_COMPLETION) {
        x = -1;
        if (!get_int(root, "logprobs", 0, 5, &x, e)) return 0;
        rp->logprobs = (int)x;
        b = 0;
        if (!get_bool(root, "echo", &b, e)) return 0;
        ex->echo = b;
        if (b && x >= 0) rp->prompt_logprobs = (int)x;
    } else if (kind == EX_CHAT) {
        b = 0;
        if (!get_bool(root, "logprobs", &b, e)) return 0;
        x = 0;
        if (!get_int(root, "top_logprobs", 0, 20, &x, e)) return 0;
        if (field(root, "top_logprobs") && !b)
            return fail_at(e, 400, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        rp->logprobs = b ? (int)x : -1;
    }
    ex->logprobs = rp->logprobs;

    json_t *stop = field(root, "stop");
    if (stop) {
        if (json_is_string(stop)) {
            if (!*json_string_value(stop)) return fail_at(e, 400, "stop", "'stop' must not be empty");
            stops[0] = json_string_value(stop);
            rp->n_stop = 1;
        } else if (json_is_array(stop)) {
            if (json_array_size(stop) > API_MAX_STOPS)
                return fail_at(e, 400, "stop", "'stop' has %zu strings; at most %d", json_array_size(stop), API_MAX_STOPS);
            for (size_t i = 0; i < json_array_size(stop); i++) {
                json_t *s = json_array_get(stop, i);
                if (!json_is_string(s) || !*json_string_value(s))
                    return fail_at(e, 400, "stop", "'stop[%zu]' must be a non-empty string", i);
                stops[rp->n_stop++] = json_string_value(s);
            }
        } else {
            return fail_at(e, 400, "stop", "'stop' must be a string or an array of strings");
        }
        rp->stop = stops;
    }
    json_t *lb = field(root, "logit_bias");
    if (lb) {
        if (!json_is_object(lb)) return fail_at(e, 400, "logit_bias", "'logit_bias' must be an object");
        if (json_object_size(lb) > API_MAX_LOGIT_BIAS)
            return fail_at(e, 400, "logit_bias", "'logit_bias' has %zu entries; at most %d", json_object_size(lb),
                           API_MAX_LOGIT_BIAS);
        const char *k;
        json_t *v;
        size_t n = 0;
        json_object_foreach(lb, k, v) {
            char *end;
            errno = 0;
            long id = strtol(k, &end, 10);
            if (!*k || *end || errno || id < 0 || id >= a->info.n_vocab)
                return fail_at(e, 400, "logit_bias", "'logit_bias' key '%s' is not a token id in [0, %d)", k,
                               a->info.n_vocab);
            if (!json_is_number(v) || json_number_value(v) < -100 || json_number_value(v) > 100)
                return fail_at(e, 400, "logit_bias", "'logit_bias[%s]' must be a number in [-100, 100]", k);
            bias[n].token = (int32_t)id;
            bias[n].bias = (float)json_number_value(v);
            n++;
        }
        rp->sampling.logit_bias = bias;
        rp->sampling.n_logit_bias = n;
    }
    return 1;
}

/* ---- exchanges ---------------------------------------------------------------------------------------- */
static void exchange_free(exchange *ex) {
    api *a = ex->a;
    for (int i = 0; i < ex->n_sub; i++) sl_request_free(ex->subs[i].req); /* no callback runs after this */
    pthread_mutex_lock(&a->mu);
    ev_item **pp = &a->q_head;
    a->q_tail = NULL;
    while (*pp) {
        if ((*pp)->ex == ex) {
            ev_item *dead = *pp;
            *pp = dead->next;
            free(dead);
        } else {
            a->q_tail = *pp;
            pp = &(*pp)->next;
        }
    }
    pthread_mutex_unlock(&a->mu);
    if (ex->prev)
        ex->prev->next = ex->next;
    else if (a->active == ex)
        a->active = ex->next;
    if (ex->next) ex->next->prev = ex->prev;
    for (int i = 0; i < ex->n_choices; i++) {
        sl_buf_free(&ex->choices[i].text);
        free(ex->choices[i].embedding);
        json_decref(ex->choices[i].logprobs);
    }
    for (int i = 0; i < ex->n_sub; i++) free(ex->subs[i].echo);
    while (ex->deferred) {
        ev_item *next = ex->deferred->next;
        free(ex->deferred);
        ex->deferred = next;
    }
    free(ex->choices);
    free(ex->subs);
    free(ex);
}

static void api_maybe_stop(api *a);

static exchange *exchange_new(api *a, sl_http_conn *c, ex_kind kind, int n_sub, int n) {
    exchange *ex = calloc(1, sizeof *ex);
    if (!ex) return NULL;
    ex->subs = calloc((size_t)n_sub, sizeof *ex->subs);
    ex->choices = calloc((size_t)n_sub * (size_t)n, sizeof *ex->choices);
    if (!ex->subs || !ex->choices) {
        free(ex->subs);
        free(ex->choices);
        free(ex);
        return NULL;
    }
    ex->a = a;
    ex->conn = c;
    ex->kind = kind;
    ex->n = n;
    ex->n_sub = n_sub;
    ex->n_choices = n_sub * n;
    ex->logprobs = -1;
    ex->created = (int64_t)time(NULL);
    snprintf(ex->id, sizeof ex->id, "%s-%016llx%08llx", kind == EX_CHAT ? "chatcmpl" : kind == EX_EMBED ? "embd" : "cmpl",
             (unsigned long long)(sl_now_us() * 2654435761ull), (unsigned long long)++a->next_id);
    /* The request id is known before the first byte: the one thing about the request headers carry. */
    char hdr[sizeof ex->id + 20];
    snprintf(hdr, sizeof hdr, "X-Request-Id: %s\r\n", ex->id);
    sl_http_conn_add_headers(c, hdr);
    for (int i = 0; i < n_sub; i++) {
        ex->subs[i].ex = ex;
        ex->subs[i].index = i;
    }
    ex->next = a->active;
    if (a->active) a->active->prev = ex;
    a->active = ex;
    return ex;
}

/* Engine thread: copy the event, queue it, wake the loop. Never blocks beyond the queue's mutex. */
static void on_engine_event(const sl_event *ev, void *user_data) {
    sub_req *sr = user_data;
    api *a = sr->ex->a;
    size_t text_len = ev->text ? ev->text_len : 0;
    size_t msg_len = ev->message ? strlen(ev->message) : 0;
    size_t emb_bytes = ev->type == SL_EVENT_EMBEDDING && ev->embedding ? (size_t)ev->n_embd * sizeof(float) : 0;
    size_t n_lp = ev->logprobs && ev->tokens ? ev->n_tokens : 0;
    size_t n_top = ev->top_logprobs && ev->n_top > 0 ? (size_t)ev->n_top : 0;
    /* laid out by alignment: top (8-byte pairs are 4-aligned), floats, ints, then bytes */
    size_t lp_bytes = n_lp * (n_top * sizeof(sl_top_logprob) + sizeof(float) + sizeof(int32_t));
    if (ev->type == SL_EVENT_TOKENS) { /* metrics: gaps between a choice's token events, as they arrive here */
        int idx = sr->index * sr->ex->n + ev->choice;
        if (idx >= 0 && idx < sr->ex->n_choices) {
            int64_t now = sl_now_us(), *last = &sr->ex->choices[idx].last_token_us;
            if (*last) sl_metrics_observe(a->metrics, SL_HIST_ITL, (double)(now - *last) * 1e-6);
            *last = now;
        }
    }
    ev_item *it = malloc(sizeof *it + emb_bytes + lp_bytes + text_len + 1 + msg_len + 1);
    if (!it) return; /* the DONE event will still come; a lost delta under OOM is the lesser harm */
    memset(it, 0, sizeof *it);
    it->ex = sr->ex;
    it->sub = sr->index;
    it->type = ev->type;
    it->choice = ev->choice;
    it->finish_reason = ev->finish_reason;
    it->status = ev->status;
    it->usage = ev->usage;
    it->timings = ev->timings;
    char *p = it->data;
    if (emb_bytes) {
        it->embedding = (float *)p;
        memcpy(p, ev->embedding, emb_bytes);
        it->n_embd = ev->n_embd;
        p += emb_bytes;
    }
    if (n_lp) {
        if (n_top) {
            it->top = (sl_top_logprob *)p;
            memcpy(p, ev->top_logprobs, n_lp * n_top * sizeof(sl_top_logprob));
            p += n_lp * n_top * sizeof(sl_top_logprob);
        }
        it->logprobs = (float *)p;
        memcpy(p, ev->logprobs, n_lp * sizeof(float));
        p += n_lp * sizeof(float);
        it->tokens = (int32_t *)p;
        memcpy(p, ev->tokens, n_lp * sizeof(int32_t));
        p += n_lp * sizeof(int32_t);
        it->n_tokens = n_lp;
        it->n_top = (int)n_top;
    }
    it->text = p;
    if (text_len) memcpy(p, ev->text, text_len);
    p[text_len] = 0;
    it->text_len = text_len;
    p += text_len + 1;
    if (ev->message) {
        it->message = p;
        memcpy(p, ev->message, msg_len + 1);
    }
    pthread_mutex_lock(&a->mu);
    if (a->q_tail)
        a->q_tail->next = it;
    else
        a->q_head = it;
    a->q_tail = it;
    pthread_mutex_unlock(&a->mu);
    uv_async_send(&a->wake);
}

static json_t *usage_json(const exchange *ex) {
    json_t *u = json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)ex->usage.prompt_tokens,
                          "completion_tokens", (json_int_t)ex->usage.completion_tokens, "total_tokens",
                          (json_int_t)(ex->usage.prompt_tokens + ex->usage.completion_tokens), "prompt_tokens_details",
                          "cached_tokens", (json_int_t)ex->usage.cached_prompt_tokens);
    return u;
}

static double ms_between(int64_t a_us, int64_t b_us) { return a_us && b_us && b_us >= a_us ? (double)(b_us - a_us) / 1000.0 : 0.0; }

/* The timings extension: the first prompt's hops, in milliseconds. */
static json_t *timings_json(const exchange *ex) {
    const sl_timings *t = &ex->timings;
    int64_t per_choice = ex->n_choices ? ex->usage.completion_tokens / ex->n_choices : 0;
    double decode_ms = ms_between(t->first_token_us, t->finished_us);
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f}", "device_ms", (double)t->device_us / 1000.0, "queue_ms",
                     ms_between(t->submitted_us, t->first_scheduled_us),
                     "prefill_ms", ms_between(t->first_scheduled_us, t->prefill_done_us), "ttft_ms",
                     ms_between(t->submitted_us, t->first_token_us), "per_output_token_ms",
                     per_choice > 1 ? decode_ms / (double)(per_choice - 1) : 0.0, "e2e_ms",
                     ms_between(t->submitted_us, t->finished_us));
}

/* Appends s[0..n) as valid UTF-8: a byte that does not start a complete character (a token may hold part of
 * one) becomes U+FFFD. */
static void utf8_sanitize(sl_buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = len && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = (u[i + k] & 0xC0) == 0x80;
        if (ok) {
            sl_buf_append(b, s + i, len);
            i += len;
        } else {
            sl_buf_append(b, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
}

/* A token's text as a JSON string, its raw byte count, and optionally its bytes as a JSON array. */
static json_t *token_text(api *a, int32_t id, size_t *raw_len, json_t **bytes) {
    char *p = NULL;
    size_t n = 0;
    if (sl_engine_token_piece(a->eng, id, &p, &n) != SL_OK) {
        p = NULL;
        n = 0;
    }
    if (bytes) {
        *bytes = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(*bytes, json_integer((unsigned char)p[i]));
    }
    sl_buf b = {0};
    utf8_sanitize(&b, p, n);
    json_t *s = json_stringn(b.p ? b.p : "", b.n);
    if (!s) s = json_string("\xEF\xBF\xBD"); /* overlong forms and surrogates, which jansson refuses */
    sl_buf_free(&b);
    sl_free(p);
    if (raw_len) *raw_len = n;
    return s;
}

/* JSON has no infinities: a token the model gives no probability at all reports -9999 (as vLLM does). */
static double lp_value(float x) { return isfinite(x) ? (double)x : -9999.0; }

/* The logprobs of one event's tokens in the endpoint's shape: completions' {tokens, token_logprobs,
 * top_logprobs, text_offset} or chat's {content: [{token, logprob, bytes, top_logprobs}]}. first_null: the
 * prompt's first token has no logprob (nothing precedes it). */
static json_t *logprobs_json(exchange *ex, choice_state *cs, const ev_item *it, int first_null) {
    api *a = ex->a;
    if (ex->kind == EX_CHAT) {
        json_t *content = json_array();
        for (size_t i = 0; i < it->n_tokens; i++) {
            json_t *bytes, *tok = token_text(a, it->tokens[i], NULL, &bytes);
            json_t *tops = json_array();
            for (int k = 0; it->top && k < it->n_top; k++) {
                const sl_top_logprob *t = &it->top[i * (size_t)it->n_top + (size_t)k];
                json_t *tb, *tt = token_text(a, t->token, NULL, &tb);
                json_array_append_new(tops, json_pack("{s:o, s:f, s:o}", "token", tt, "logprob", lp_value(t->logprob),
                                                      "bytes", tb));
            }
            json_array_append_new(content, json_pack("{s:o, s:f, s:o, s:o}", "token", tok, "logprob",
                                                     lp_value(it->logprobs[i]), "bytes", bytes, "top_logprobs", tops));
        }
        return json_pack("{s:o, s:n}", "content", content, "refusal");
    }
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (size_t i = 0; i < it->n_tokens; i++) {
        size_t raw = 0;
        json_t *tok = token_text(a, it->tokens[i], &raw, NULL);
        if (it->tokens[i] == a->info.bos_id || it->tokens[i] == a->info.eos_id) raw = 0; /* no text of their own */
        json_array_append(toks, tok);
        json_array_append_new(offs, json_integer(cs->text_offset));
        cs->text_offset += (int64_t)raw;
        if (first_null && i == 0) {
            json_array_append_new(lps, json_null());
            json_array_append_new(tops, json_null());
        } else {
            json_array_append_new(lps, json_real(lp_value(it->logprobs[i])));
            json_t *d = json_object();
            for (int k = 0; it->top && k < it->n_top; k++) {
                const sl_top_logprob *t = &it->top[i * (size_t)it->n_top + (size_t)k];
                json_t *tt = token_text(a, t->token, NULL, NULL);
                if (!json_object_get(d, json_string_value(tt))) /* two tokens with one text: the likelier wins */
                    json_object_set_new(d, json_string_value(tt), json_real(lp_value(t->logprob)));
                json_decref(tt);
            }
            json_array_append_new(tops, d);
        }
        json_decref(tok);
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

/* Non-streamed: appends one event's logprobs to the choice's. Takes part. */
static void logprobs_merge(choice_state *cs, json_t *part) {
    if (!part) return;
    if (!cs->logprobs) {
        cs->logprobs = part;
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(part, k, v) json_array_extend(json_object_get(cs->logprobs, k), v);
    json_decref(part);
}

static json_t *chunk_base(const exchange *ex) {
    return json_pack("{s:s, s:s, s:I, s:s}", "id", ex->id, "object",
                     ex->kind == EX_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)ex->created, "model", ex->a->info.name);
}

/* Writes one SSE frame "data: <s>\n\n". Returns 0 if the client is gone. */
static int sse_data(sl_http_conn *c, const char *s) {
    sl_buf b = {0};
    int ok = sl_buf_append(&b, "data: ", 6) && sl_buf_append(&b, s, strlen(s)) && sl_buf_append(&b, "\n\n", 2) &&
             sl_http_stream_write(c, b.p, b.n);
    sl_buf_free(&b);
    return ok;
}

static int sse_send(exchange *ex, json_t *o) {
    char *s = o ? json_dumps(o, API_JSON_FLAGS) : NULL;
    json_decref(o);
    int ok = s && sse_data(ex->conn, s);
    free(s);
    return ok;
}

/* One streamed choice update: a text delta and/or the finish reason. Returns 0 if the client is gone. */
static int sse_choice(exchange *ex, int index, const char *text, size_t len, const char *finish, int role,
                      json_t *logprobs) {
    json_t *o = chunk_base(ex);
    json_t *ch;
    json_t *fr = finish ? json_string(finish) : json_null();
    json_t *lp = logprobs ? logprobs : json_null();
    if (ex->kind == EX_CHAT) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", json_stringn(text, len));
        ch = json_pack("{s:i, s:o, s:o, s:o}", "index", index, "delta", delta, "logprobs", lp, "finish_reason", fr);
    } else {
        ch = json_pack("{s:i, s:s%, s:o, s:o}", "index", index, "text", text ? text : "", text ? len : 0, "logprobs",
                       lp, "finish_reason", fr);
    }
    json_object_set_new(o, "choices", json_pack("[o]", ch));
    return sse_send(ex, o);
}

static const char *finish_str(sl_finish_reason r) {
    switch (r) {
    case SL_FINISH_STOP: return "stop";
    case SL_FINISH_LENGTH: return "length";
    case SL_FINISH_ABORT: return "abort";
    default: return "error";
    }
}

static void exchange_fail(exchange *ex, int status, const char *msg) {
    if (ex->failed) return;
    ex->failed = 1;
    ex->fail_status = status;
    snprintf(ex->fail_msg, sizeof ex->fail_msg, "%s", msg);
}

/* metrics: the access log's line for one exchange that ends with HTTP status (499: the client went away, as
 * nginx logs it). Written on the loop thread: a line is a few hundred bytes, buffered by stdio and flushed per
 * line so that `tail -f` and log shippers see whole lines. */
static void access_log_write(exchange *ex, int status) {
    api *a = ex->a;
    if (!a->access_log || ex->kind == EX_TOKENIZE) return;
    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000);
    static const char *const endpoints[] = {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/tokenize"};
    const char *fr = ex->n_choices && ex->kind != EX_EMBED ? ex->choices[0].finish_reason : NULL;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:n, s:i, s:b, s:I, s:I, s:I, s:o, s:o}", "time", when, "id", ex->id,
                          "endpoint", endpoints[ex->kind], "model", a->info.name ? a->info.name : "", "tenant",
                          "status", status, "stream", ex->stream, "prompt_tokens", (json_int_t)ex->usage.prompt_tokens,
                          "cached_tokens", (json_int_t)ex->usage.cached_prompt_tokens, "completion_tokens",
                          (json_int_t)ex->usage.completion_tokens, "finish_reason",
                          fr ? json_string(fr) : json_null(), "timings", timings_json(ex));
    char *line = o ? json_dumps(o, API_JSON_FLAGS) : NULL;
    json_decref(o);
    if (!line) return;
    fprintf(a->access_log, "%s\n", line);
    fflush(a->access_log);
    free(line);
}

/* All prompts are done: the final body, or the stream's last events. */
static void exchange_finish(exchange *ex) {
    api *a = ex->a;
    sl_http_conn *c = ex->conn;
    access_log_write(ex, ex->failed ? ex->fail_status : 200); /* metrics */
    sl_http_conn_set_exchange(c, NULL);
    if (ex->stream) {
        int ok = 1;
        if (ex->failed) {
            char *s = error_json(err_type(ex->fail_status), ex->fail_msg, NULL, NULL);
            ok = s && sse_data(c, s);
            free(s);
        } else if (ex->include_usage) {
            json_t *o = chunk_base(ex);
            json_object_set_new(o, "choices", json_array());
            json_object_set_new(o, "usage", usage_json(ex));
            json_object_set_new(o, "timings", timings_json(ex));
            ok = sse_send(ex, o);
        }
        if (ok && sl_http_stream_write(c, "data: [DONE]\n\n", 14)) sl_http_stream_end(c);
        exchange_free(ex);
        api_maybe_stop(a);
        return;
    }
    if (ex->failed) {
        send_simple_err(c, ex->fail_status, NULL, NULL, ex->fail_msg);
        exchange_free(ex);
        api_maybe_stop(a);
        return;
    }
    json_t *o;
    if (ex->kind == EX_EMBED) {
        json_t *data = json_array();
        for (int i = 0; i < ex->n_choices; i++) {
            choice_state *cs = &ex->choices[i];
            json_t *vec;
            if (ex->encoding_base64) {
                /* base64 of the little-endian f32 array, as OpenAI sends it */
                static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                const unsigned char *src = (const unsigned char *)cs->embedding;
                size_t n = (size_t)cs->n_embd * sizeof(float);
                sl_buf b = {0};
                for (size_t j = 0; j < n; j += 3) {
                    unsigned v = (unsigned)src[j] << 16 | (j + 1 < n ? (unsigned)src[j + 1] << 8 : 0) | (j + 2 < n ? src[j + 2] : 0);
                    char q[4] = {tbl[v >> 18 & 63], tbl[v >> 12 & 63], j + 1 < n ? tbl[v >> 6 & 63] : '=',
                                 j + 2 < n ? tbl[v & 63] : '='};
                    sl_buf_append(&b, q, 4);
                }
                vec = json_string(b.p ? b.p : "");
                sl_buf_free(&b);
            } else {
                vec = json_array();
                for (int j = 0; j < cs->n_embd; j++) json_array_append_new(vec, json_real(cs->embedding[j]));
            }
            json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index", i, "embedding", vec));
        }
        o = json_pack("{s:s, s:o, s:s, s:{s:I, s:I}}", "object", "list", "data", data, "model", a->info.name, "usage",
                      "prompt_tokens", (json_int_t)ex->usage.prompt_tokens, "total_tokens",
                      (json_int_t)ex->usage.prompt_tokens);
    } else {
        json_t *choices = json_array();
        for (int i = 0; i < ex->n_choices; i++) {
            choice_state *cs = &ex->choices[i];
            sl_buf text = {0};
            const char *echo = ex->subs[i / ex->n].echo;
            if (echo) sl_buf_append(&text, echo, strlen(echo));
            sl_buf_append(&text, cs->text.p ? cs->text.p : "", cs->text.n);
            json_t *fr = json_string(cs->finish_reason ? cs->finish_reason : "stop");
            json_t *lp = cs->logprobs ? json_incref(cs->logprobs) : json_null();
            json_t *ch;
            if (ex->kind == EX_CHAT)
                ch = json_pack("{s:i, s:{s:s, s:s%, s:n}, s:o, s:o}", "index", i, "message", "role", "assistant",
                               "content", text.p, text.n, "refusal", "logprobs", lp, "finish_reason", fr);
            else
                ch = json_pack("{s:i, s:s%, s:o, s:o}", "index", i, "text", text.p, text.n, "logprobs", lp,
                               "finish_reason", fr);
            sl_buf_free(&text);
            json_array_append_new(choices, ch);
        }
        o = json_pack("{s:s, s:s, s:I, s:s, s:o, s:o, s:o}", "id", ex->id, "object",
                      ex->kind == EX_CHAT ? "chat.completion" : "text_completion", "created", (json_int_t)ex->created,
                      "model", a->info.name, "choices", choices, "usage", usage_json(ex), "timings", timings_json(ex));
    }
    send_json(c, 200, o, NULL);
    json_decref(o);
    exchange_free(ex);
    api_maybe_stop(a);
}

/* Loop thread: one event of one exchange. Returns 1 if it kept the item (deferred until submission ends). */
static int exchange_on_event(exchange *ex, ev_item *it) {
    if (ex->submitting) {
        ev_item **pp = &ex->deferred;
        while (*pp) pp = &(*pp)->next;
        it->next = NULL;
        *pp = it;
        return 1;
    }
    int idx = it->sub * ex->n + it->choice;
    switch (it->type) {
    case SL_EVENT_PROMPT:
        /* echo with logprobs: the prompt's own tokens come first in every choice of this prompt */
        for (int k = 0; ex->echo && ex->logprobs >= 0 && it->n_tokens && k < ex->n && !ex->failed; k++) {
            int ci = it->sub * ex->n + k;
            if (ci < 0 || ci >= ex->n_choices) break;
            choice_state *cs = &ex->choices[ci];
            cs->text_offset = 0;
            json_t *part = logprobs_json(ex, cs, it, 1);
            const char *echo = ex->subs[it->sub].echo;
            cs->text_offset = echo ? (int64_t)strlen(echo) : 0; /* generated tokens follow the echoed text */
            if (!ex->stream)
                logprobs_merge(cs, part);
            else if (!sse_choice(ex, ci, "", 0, NULL, 0, part))
                return 0;
        }
        break;
    case SL_EVENT_TOKENS:
    case SL_EVENT_FINISH: {
        if (idx < 0 || idx >= ex->n_choices) break;
        choice_state *cs = &ex->choices[idx];
        json_t *lp = ex->logprobs >= 0 && it->n_tokens && !ex->failed ? logprobs_json(ex, cs, it, 0) : NULL;
        if (it->type == SL_EVENT_FINISH) {
            if (it->finish_reason == SL_FINISH_ERROR) /* a replica's device failed: others may serve a retry */
                exchange_fail(ex, it->status == SL_DEVICE ? 503 : 500, it->message ? it->message : "the engine failed");
            else if (it->finish_reason == SL_FINISH_ABORT)
                exchange_fail(ex, 503, "the request was cancelled: the server is shutting down");
        }
        if (ex->stream && !ex->failed) {
            if ((it->text_len || lp) && !sse_choice(ex, idx, it->text, it->text_len, NULL, 0, lp)) return 0;
            if (it->type == SL_EVENT_FINISH && !sse_choice(ex, idx, ex->kind == EX_CHAT ? NULL : "", 0,
                                                           finish_str(it->finish_reason), 0, NULL))
                return 0;
        } else if (!ex->stream) {
            sl_buf_append(&cs->text, it->text, it->text_len);
            logprobs_merge(cs, lp);
        } else {
            json_decref(lp);
        }
        if (it->type == SL_EVENT_FINISH) {
            cs->finish_reason = finish_str(it->finish_reason);
            sl_metrics_choice_done(ex->a->metrics, it->finish_reason); /* metrics */
        }
        break;
    }
    case SL_EVENT_EMBEDDING:
        if (idx >= 0 && idx < ex->n_choices && it->embedding) {
            choice_state *cs = &ex->choices[idx];
            free(cs->embedding);
            cs->embedding = malloc((size_t)it->n_embd * sizeof(float));
            if (cs->embedding) {
                memcpy(cs->embedding, it->embedding, (size_t)it->n_embd * sizeof(float));
                cs->n_embd = it->n_embd;
            } else {
                exchange_fail(ex, 503, "out of memory");
            }
        }
        break;
    case SL_EVENT_DONE: {
        if (it->sub < 0 || it->sub >= ex->n_sub || ex->subs[it->sub].done) break;
        ex->subs[it->sub].done = 1;
        ex->usage.prompt_tokens += it->usage.prompt_tokens;
        ex->usage.cached_prompt_tokens += it->usage.cached_prompt_tokens;
        ex->usage.completion_tokens += it->usage.completion_tokens;
        if (it->sub == 0) ex->timings = it->timings;
        sl_metrics_request_done(ex->a->metrics, &it->usage, &it->timings, ex->n); /* metrics */
        if (it->status != SL_OK && it->status != SL_CANCELLED)
            exchange_fail(ex, 500, it->message ? it->message : sl_status_str(it->status));
        if (++ex->n_done == ex->n_sub) exchange_finish(ex);
        break;
    }
    }
    return 0;
}

static void on_wake(uv_async_t *h) {
    api *a = h->data;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        ev_item *it = a->q_head;
        if (it) {
            a->q_head = it->next;
            if (!a->q_head) a->q_tail = NULL;
        }
        pthread_mutex_unlock(&a->mu);
        if (!it) break;
        /* may free the exchange, which purges its other queued events */
        if (!exchange_on_event(it->ex, it)) free(it);
    }
}

static void on_conn_close(sl_http_conn *c, void *exchange_ptr, void *user_data) {
    api *a = user_data;
    exchange *ex = exchange_ptr;
    if (ex->submitting) {
        ex->orphaned = 1; /* the worker still writes ex->subs; submit_done frees it */
        ex->conn = NULL;
        return;
    }
    access_log_write(ex, 499); /* metrics */
    exchange_free(ex); /* cancels its engine requests at once */
    api_maybe_stop(a);
}

/* ---- request building --------------------------------------------------------------------------------- */
/* What a submission needs to stay alive while a worker thread runs it: sl_request_submit tokenizes and renders
 * the chat template on its caller's thread, which must not be the loop's. */
typedef struct submit_job {
    uv_work_t work;
    exchange *ex;
    const char *prompt_param;  /* static: the field a context overflow names */
    json_t *root;              /* the request: the params' strings point into it */
    sl_request_params *rps;    /* [ex->n_sub] */
    int32_t **tok;             /* [n_tok] token prompts (entries may be NULL) */
    int n_tok;
    sl_chat_message *msgs;     /* [n_msgs] */
    char **contents;           /* [n_msgs] the messages' joined text */
    size_t n_msgs;
    sl_logit_bias *bias;
    const char **stops;        /* [API_MAX_STOPS] */
    int default_max_tokens;    /* max_tokens came from the server's default, not the request */
    api_err err;               /* filled by the worker when a submit fails */
} submit_job;

static void job_free(submit_job *j) {
    if (!j) return;
    json_decref(j->root);
    for (int i = 0; j->tok && i < j->n_tok; i++) free(j->tok[i]);
    free(j->tok);
    for (size_t i = 0; j->contents && i < j->n_msgs; i++) free(j->contents[i]);
    free(j->contents);
    free(j->msgs);
    free(j->rps);
    free(j->bias);
    free(j->stops);
    free(j);
}

static void start_exchange(exchange *ex);

/* Worker thread: one engine request per prompt; stops at the first refusal (the loop frees the others). */
static void submit_work(uv_work_t *w) {
    submit_job *j = w->data;
    exchange *ex = j->ex;
    for (int i = 0; i < ex->n_sub; i++) {
        j->rps[i].callback = on_engine_event;
        j->rps[i].user_data = &ex->subs[i];
        sl_status st = sl_request_submit(ex->a->eng, &j->rps[i], &ex->subs[i].req);
        if (st == SL_CONTEXT_OVERFLOW && j->default_max_tokens && j->rps[i].max_tokens > 0) {
            /* the client asked for no particular length: a long prompt gets what room the context has left */
            j->rps[i].max_tokens = -1;
            st = sl_request_submit(ex->a->eng, &j->rps[i], &ex->subs[i].req);
        }
        if (st != SL_OK) {
            submit_err(&j->err, st, j->prompt_param); /* sl_last_error is per thread: read it here */
            return;
        }
    }
}

/* Loop thread: the submission is done; answer, or start the exchange and replay the events that came early. */
static void submit_done(uv_work_t *w, int status) {
    submit_job *j = w->data;
    exchange *ex = j->ex;
    api *a = ex->a;
    ex->submitting = 0;
    if (ex->orphaned) {
        exchange_free(ex);
    } else if (j->err.status) {
        access_log_write(ex, j->err.status); /* metrics */
        sl_http_conn_set_exchange(ex->conn, NULL);
        send_err(ex->conn, &j->err);
        exchange_free(ex);
    } else {
        if (a->grace_over)
            for (int i = 0; i < ex->n_sub; i++) sl_request_cancel(ex->subs[i].req);
        /* the early events go back to the head of the queue, ahead of anything newer of this exchange */
        pthread_mutex_lock(&a->mu);
        if (ex->deferred) {
            ev_item *last = ex->deferred;
            while (last->next) last = last->next;
            last->next = a->q_head;
            if (!a->q_head) a->q_tail = last;
            a->q_head = ex->deferred;
            ex->deferred = NULL;
        }
        pthread_mutex_unlock(&a->mu);
        uv_async_send(&a->wake);
        start_exchange(ex); /* may close the connection, and so free ex */
    }
    job_free(j);
    api_maybe_stop(a);
}

/* Hands the job to libuv's worker pool; takes *jp (NULL afterwards) whether or not it succeeds. */
static int submit_async(exchange *ex, submit_job **jp, api_err *e) {
    submit_job *j = *jp;
    *jp = NULL;
    j->ex = ex;
    j->work.data = j;
    ex->submitting = 1;
    sl_http_conn_set_exchange(ex->conn, ex);
    if (uv_queue_work(ex->a->loop, &j->work, submit_work, submit_done) < 0) {
        ex->submitting = 0;
        sl_http_conn_set_exchange(ex->conn, NULL);
        job_free(j);
        return fail_at(e, 503, NULL, "cannot queue the request");
    }
    return 1;
}

static void start_exchange(exchange *ex) {
    sl_http_conn_set_exchange(ex->conn, ex);
    if (!ex->stream) return;
    sl_http_stream_begin(ex->conn, 200, "text/event-stream", "");
    for (int i = 0; i < ex->n_choices; i++) {
        const char *echo = ex->subs[i / ex->n].echo;
        if (ex->kind == EX_CHAT && !sse_choice(ex, i, "", 0, NULL, 1, NULL)) return;
        if (echo && *echo && !sse_choice(ex, i, echo, strlen(echo), NULL, 0, NULL)) return;
    }
}

static int is_token_array(json_t *v) {
    if (!json_is_array(v) || json_array_size(v) == 0) return 0;
    for (size_t i = 0; i < json_array_size(v); i++)
        if (!json_is_integer(json_array_get(v, i))) return 0;
    return 1;
}

/* Fills a token buffer from a JSON array of integers, range-checked against the vocabulary. */
static int tokens_from(api *a, json_t *v, const char *param, int32_t **out, size_t *n, api_err *e) {
    size_t len = json_array_size(v);
    int32_t *ids = malloc((len ? len : 1) * sizeof *ids);
    if (!ids) return fail_at(e, 503, NULL, "out of memory");
    for (size_t i = 0; i < len; i++) {
        json_int_t t = json_integer_value(json_array_get(v, i));
        if (t < 0 || t >= a->info.n_vocab) {
            free(ids);
            return fail_at(e, 400, param, "token %lld at index %zu of '%s' is outside the vocabulary [0, %d)",
                           (long long)t, i, param, a->info.n_vocab);
        }
        ids[i] = (int32_t)t;
    }
    *out = ids;
    *n = len;
    return 1;
}

/* prompt / input: a string, an array of strings, an array of token ids, or an array of token-id arrays.
 * items[] receives the prompts as JSON values (borrowed). */
static int collect_prompts(json_t *v, const char *param, int max, json_t **items, int *n, api_err *e) {
    if (!v) return fail_at(e, 400, param, "'%s' is required", param);
    *n = 0;
    if (json_is_string(v) || is_token_array(v)) {
        items[(*n)++] = v;
        return 1;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail_at(e, 400, param, "'%s' must be a string, an array of strings, an array of token ids or an array of "
                       "token-id arrays", param);
    if ((int)json_array_size(v) > max)
        return fail_at(e, 400, param, "'%s' has %zu items; at most %d", param, json_array_size(v), max);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *p = json_array_get(v, i);
        if (!json_is_string(p) && !is_token_array(p))
            return fail_at(e, 400, param, "'%s[%zu]' must be a string or a non-empty array of token ids", param, i);
        items[(*n)++] = p;
    }
    return 1;
}

static void handle_generate(api *a, sl_http_conn *c, json_t *root, ex_kind kind, const char *pin_hdr) {
    api_err e = {0};
    sl_request_params proto;
    sl_request_params_init(&proto);
    json_t **prompts = NULL;
    exchange tmp = {0};
    exchange *ex = NULL;
    int n_prompts = 1;
    submit_job *j = calloc(1, sizeof *j);
    if (!j || !(j->stops = calloc(API_MAX_STOPS, sizeof *j->stops))) {
        fail_at(&e, 503, NULL, "out of memory");
        goto fail;
    }
    j->root = json_incref(root);
    j->prompt_param = kind == EX_CHAT ? "messages" : "prompt";

    if (!check_model(a, root, &e)) goto fail;
    json_t *lb = field(root, "logit_bias");
    if (lb && json_is_object(lb) && json_object_size(lb)) {
        j->bias = calloc(json_object_size(lb), sizeof *j->bias);
        if (!j->bias) {
            fail_at(&e, 503, NULL, "out of memory");
            goto fail;
        }
    }
    if (!parse_common(a, root, kind, &proto, j->stops, j->bias, &tmp, &e)) goto fail;
    if (!get_replica(a, root, pin_hdr, &proto.replica, &e)) goto fail;
    j->default_max_tokens = kind == EX_CHAT && !field(root, "max_tokens") && !field(root, "max_completion_tokens");

    if (kind == EX_COMPLETION) {
        prompts = calloc(API_MAX_PROMPTS, sizeof *prompts);
        j->tok = calloc(API_MAX_PROMPTS, sizeof *j->tok);
        j->n_tok = API_MAX_PROMPTS;
        if (!prompts || !j->tok) {
            fail_at(&e, 503, NULL, "out of memory");
            goto fail;
        }
        if (!collect_prompts(json_object_get(root, "prompt"), "prompt", API_MAX_PROMPTS, prompts, &n_prompts, &e))
            goto fail;
    } else {
        json_t *m = json_object_get(root, "messages");
        if (!json_is_array(m) || json_array_size(m) == 0) {
            fail_at(&e, 400, "messages", "'messages' must be a non-empty array");
            goto fail;
        }
        size_t n_msgs = json_array_size(m);
        sl_chat_message *msgs = j->msgs = calloc(n_msgs, sizeof *msgs);
        char **contents = j->contents = calloc(n_msgs, sizeof *contents);
        j->n_msgs = n_msgs;
        if (!msgs || !contents) {
            fail_at(&e, 503, NULL, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < n_msgs; i++) {
            json_t *mi = json_array_get(m, i);
            char param[48];
            snprintf(param, sizeof param, "messages[%zu]", i);
            if (!json_is_object(mi)) {
                fail_at(&e, 400, param, "'%s' must be an object", param);
                goto fail;
            }
            json_t *role = json_object_get(mi, "role");
            const char *r = json_is_string(role) ? json_string_value(role) : NULL;
            if (!r || (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "developer"))) {
                fail_at(&e, 400, param, "'%s.role' must be one of system, developer, user, assistant", param);
                goto fail;
            }
            if (field(mi, "tool_calls")) {
                fail_at(&e, 400, "tool_calls", "'%s.tool_calls' is not supported by this server", param);
                goto fail;
            }
            msgs[i].role = strcmp(r, "developer") ? r : "system";
            json_t *content = json_object_get(mi, "content");
            sl_buf b = {0};
            if (json_is_string(content)) {
                sl_buf_append(&b, json_string_value(content), json_string_length(content));
            } else if (json_is_array(content)) {
                for (size_t k = 0; k < json_array_size(content); k++) {
                    json_t *part = json_array_get(content, k);
                    json_t *type = json_is_object(part) ? json_object_get(part, "type") : NULL;
                    json_t *text = json_is_object(part) ? json_object_get(part, "text") : NULL;
                    if (!json_is_string(type) || strcmp(json_string_value(type), "text") || !json_is_string(text)) {
                        sl_buf_free(&b);
                        fail_at(&e, 400, param, "'%s.content[%zu]' must be a text part {\"type\": \"text\", \"text\": ...}",
                                param, k);
                        goto fail;
                    }
                    if (k) sl_buf_append(&b, "\n", 1);
                    sl_buf_append(&b, json_string_value(text), json_string_length(text));
                }
            } else if (!(json_is_null(content) && !strcmp(r, "assistant"))) {
                fail_at(&e, 400, param, "'%s.content' must be a string or an array of text parts", param);
                goto fail;
            }
            if (!sl_buf_append(&b, "", 0)) {
                fail_at(&e, 503, NULL, "out of memory");
                goto fail;
            }
            if (memchr(b.p, 0, b.n)) {
                sl_buf_free(&b);
                fail_at(&e, 400, param, "'%s.content' contains a NUL character", param);
                goto fail;
            }
            contents[i] = b.p;
            msgs[i].content = contents[i];
        }
    }

    ex = exchange_new(a, c, kind, n_prompts, proto.n);
    sl_request_params *rps = j->rps = calloc((size_t)n_prompts, sizeof *rps);
    if (!ex || !rps) {
        fail_at(&e, 503, NULL, "out of memory");
        goto fail;
    }
    ex->stream = tmp.stream;
    ex->include_usage = tmp.include_usage;
    ex->logprobs = tmp.logprobs;
    ex->echo = tmp.echo;
    for (int i = 0; i < n_prompts; i++) {
        rps[i] = proto;
        if (kind == EX_CHAT) {
            rps[i].messages = j->msgs;
            rps[i].n_messages = j->n_msgs;
        } else if (json_is_string(prompts[i])) {
            rps[i].prompt_text = json_string_value(prompts[i]);
            rps[i].prompt_text_len = json_string_length(prompts[i]);
            if (!rps[i].prompt_text_len) {
                fail_at(&e, 400, "prompt", "'prompt' must not be empty");
                goto fail;
            }
        } else {
            size_t n = 0;
            if (!tokens_from(a, prompts[i], "prompt", &j->tok[i], &n, &e)) goto fail;
            rps[i].prompt_tokens = j->tok[i];
            rps[i].n_prompt_tokens = n;
        }
        if (ex->echo) {
            if (rps[i].prompt_text) {
                ex->subs[i].echo = strdup(rps[i].prompt_text);
            } else {
                size_t len = 0;
                char *t = NULL;
                if (sl_engine_detokenize(a->eng, rps[i].prompt_tokens, rps[i].n_prompt_tokens,
                                         SL_DETOKENIZE_SKIP_SPECIAL, &t, &len) == SL_OK) {
                    ex->subs[i].echo = strdup(t ? t : "");
                    sl_free(t);
                }
            }
            if (!ex->subs[i].echo) {
                fail_at(&e, 503, NULL, "out of memory");
                goto fail;
            }
        }
    }
    if (submit_async(ex, &j, &e)) ex = NULL;
fail:
    if (ex) exchange_free(ex);
    if (e.status) send_err(c, &e);
    job_free(j);
    free(prompts);
}

static void handle_embeddings(api *a, sl_http_conn *c, json_t *root, const char *pin_hdr) {
    api_err e = {0};
    json_t **inputs = calloc(API_MAX_EMBED_INPUTS, sizeof *inputs);
    submit_job *j = calloc(1, sizeof *j);
    int32_t **tok = j ? (j->tok = calloc(API_MAX_EMBED_INPUTS, sizeof *tok)) : NULL;
    sl_request_params *rps = NULL;
    exchange *ex = NULL;
    int n = 0;
    const char *fmt = NULL;
    int pin = -1;
    if (!inputs || !tok) {
        fail_at(&e, 503, NULL, "out of memory");
        goto fail;
    }
    if (!check_model(a, root, &e)) goto fail;
    if (!get_replica(a, root, pin_hdr, &pin, &e)) goto fail;
    if (field(root, "dimensions")) {
        fail_at(&e, 400, "dimensions", "'dimensions' is not supported: the vectors have the model's %d dimensions",
                a->info.n_embd);
        goto fail;
    }
    if (!get_string(root, "encoding_format", &fmt, &e)) goto fail;
    if (fmt && strcmp(fmt, "float") && strcmp(fmt, "base64")) {
        fail_at(&e, 400, "encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
        goto fail;
    }
    if (!collect_prompts(json_object_get(root, "input"), "input", API_MAX_EMBED_INPUTS, inputs, &n, &e)) goto fail;
    j->n_tok = API_MAX_EMBED_INPUTS;
    j->root = json_incref(root);
    j->prompt_param = "input";
    ex = exchange_new(a, c, EX_EMBED, n, 1);
    rps = j->rps = calloc((size_t)n, sizeof *rps);
    if (!ex || !rps) {
        fail_at(&e, 503, NULL, "out of memory");
        goto fail;
    }
    ex->encoding_base64 = fmt && !strcmp(fmt, "base64");
    for (int i = 0; i < n; i++) {
        sl_request_params_init(&rps[i]);
        rps[i].kind = SL_REQUEST_EMBED;
        rps[i].max_tokens = 0;
        rps[i].replica = pin;
        if (json_is_string(inputs[i])) {
            rps[i].prompt_text = json_string_value(inputs[i]);
            rps[i].prompt_text_len = json_string_length(inputs[i]);
            if (!rps[i].prompt_text_len) {
                fail_at(&e, 400, "input", "'input' must not contain empty strings");
                goto fail;
            }
        } else {
            size_t len = 0;
            if (!tokens_from(a, inputs[i], "input", &tok[i], &len, &e)) goto fail;
            rps[i].prompt_tokens = tok[i];
            rps[i].n_prompt_tokens = len;
        }
    }
    if (submit_async(ex, &j, &e)) ex = NULL;
fail:
    if (ex) exchange_free(ex);
    if (e.status) send_err(c, &e);
    job_free(j);
    free(inputs);
}

/* vLLM's /tokenize: {"prompt": str, "add_special_tokens": bool} or {"messages": [...]}. */
/* /tokenize runs the tokenizer on libuv's worker pool: a long text must not stall the loop. The exchange
 * (no engine request in it) only tracks the connection, as a submission's does. */
typedef struct tok_job {
    uv_work_t work;
    exchange *ex;
    json_t *root;       /* holds prompt */
    const char *prompt;
    size_t prompt_len;
    unsigned flags;
    int32_t *ids;       /* OUT [n] (sl_free) */
    size_t n;
    api_err err;        /* OUT when tokenizing failed */
} tok_job;

static void tok_work(uv_work_t *w) {
    tok_job *j = w->data;
    sl_status st = sl_engine_tokenize(j->ex->a->eng, j->prompt, j->prompt_len, j->flags, &j->ids, &j->n);
    if (st != SL_OK) submit_err(&j->err, st, "prompt");
}

static void tok_done(uv_work_t *w, int status) {
    tok_job *j = w->data;
    exchange *ex = j->ex;
    api *a = ex->a;
    ex->submitting = 0;
    if (!ex->orphaned) {
        sl_http_conn_set_exchange(ex->conn, NULL);
        if (j->err.status) {
            send_err(ex->conn, &j->err);
        } else {
            json_t *arr = json_array();
            for (size_t i = 0; i < j->n; i++) json_array_append_new(arr, json_integer(j->ids[i]));
            json_t *o = json_pack("{s:I, s:i, s:o}", "count", (json_int_t)j->n, "max_model_len", a->info.max_model_len,
                                  "tokens", arr);
            send_json(ex->conn, 200, o, NULL);
            json_decref(o);
        }
    }
    exchange_free(ex);
    sl_free(j->ids);
    json_decref(j->root);
    free(j);
    api_maybe_stop(a);
}

static void handle_tokenize(api *a, sl_http_conn *c, json_t *root) {
    api_err e = {0};
    if (!check_model(a, root, &e)) {
        send_err(c, &e);
        return;
    }
    int add_special = 1;
    const char *prompt = NULL;
    if (!get_bool(root, "add_special_tokens", &add_special, &e) || !get_string(root, "prompt", &prompt, &e)) {
        send_err(c, &e);
        return;
    }
    if (!prompt) {
        send_simple_err(c, 400, "prompt", NULL, "'prompt' is required (a string)");
        return;
    }
    tok_job *j = calloc(1, sizeof *j);
    exchange *ex = j ? exchange_new(a, c, EX_TOKENIZE, 1, 1) : NULL;
    if (!ex) {
        free(j);
        send_simple_err(c, 503, NULL, NULL, "out of memory");
        return;
    }
    j->ex = ex;
    j->root = json_incref(root);
    j->prompt = prompt;
    j->prompt_len = json_string_length(json_object_get(root, "prompt"));
    j->flags = add_special ? SL_TOKENIZE_ADD_SPECIAL : 0;
    j->work.data = j;
    ex->submitting = 1;
    sl_http_conn_set_exchange(c, ex);
    if (uv_queue_work(a->loop, &j->work, tok_work, tok_done) < 0) {
        ex->submitting = 0;
        sl_http_conn_set_exchange(c, NULL);
        exchange_free(ex);
        json_decref(j->root);
        free(j);
        send_simple_err(c, 503, NULL, NULL, "cannot queue the request");
    }
}

static void handle_detokenize(api *a, sl_http_conn *c, json_t *root) {
    api_err e = {0};
    if (!check_model(a, root, &e)) {
        send_err(c, &e);
        return;
    }
    json_t *t = json_object_get(root, "tokens");
    if (!json_is_array(t) || (json_array_size(t) && !is_token_array(t))) {
        send_simple_err(c, 400, "tokens", NULL, "'tokens' must be an array of token ids");
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    char *text = NULL;
    size_t len = 0;
    if (json_array_size(t) && !tokens_from(a, t, "tokens", &ids, &n, &e)) {
        send_err(c, &e);
        return;
    }
    sl_status st = sl_engine_detokenize(a->eng, ids, n, 0, &text, &len);
    free(ids);
    if (st != SL_OK) {
        submit_err(&e, st, "tokens");
        send_err(c, &e);
        return;
    }
    json_t *o = json_pack("{s:s%}", "prompt", text ? text : "", text ? len : 0);
    sl_free(text);
    if (!o) {
        send_simple_err(c, 400, "tokens", NULL, "the tokens do not decode to valid UTF-8");
        return;
    }
    send_json(c, 200, o, NULL);
    json_decref(o);
}

static json_t *model_json(api *a) {
    return json_pack("{s:s, s:s, s:I, s:s, s:i}", "id", a->info.name, "object", "model", "created", (json_int_t)0,
                     "owned_by", "sluice", "max_model_len", a->info.max_model_len);
}

/* Bearer key check in constant time (over the longer of the two lengths). */
static int auth_ok(const char *key, const char *header) {
    if (!header || strncmp(header, "Bearer ", 7)) return 0;
    const char *got = header + 7;
    size_t lk = strlen(key), lg = strlen(got);
    unsigned char diff = (unsigned char)(lk != lg);
    size_t n = lk > lg ? lk : lg;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < lk ? (unsigned char)key[i] : 0, y = i < lg ? (unsigned char)got[i] : 0;
        diff |= x ^ y;
    }
    return diff == 0;
}

/* Is origin one of cors_allowed_origins (comma-separated, or "*")? */
static int cors_allowed(const char *list, const char *origin) {
    size_t n = strlen(origin);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',') p++;
        const char *end = p;
        while (*end && *end != ',') end++;
        const char *last = end;
        while (last > p && last[-1] == ' ') last--;
        if ((last - p == 1 && *p == '*') || ((size_t)(last - p) == n && !strncmp(p, origin, n))) return 1;
        p = end;
    }
    return 0;
}

static void on_request(sl_http_conn *c, const sl_http_request *r, void *user_data) {
    api *a = user_data;
    const char *p = r->path;
    int get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
    int post = !strcmp(r->method, "POST");
    const char *cors = a->cfg->cors_allowed_origins;
    int cors_ok = r->origin && cors && *cors && cors_allowed(cors, r->origin);
    if (cors_ok) {
        sl_buf h = {0};
        if (sl_buf_printf(&h, "Access-Control-Allow-Origin: %.200s\r\nVary: Origin\r\n", r->origin))
            sl_http_conn_add_headers(c, h.p);
        sl_buf_free(&h);
    }
    if (!strcmp(r->method, "OPTIONS")) { /* CORS preflight: answered without a key, as browsers send none */
        sl_http_respond(c, 204, "text/plain",
                        cors_ok ? "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
                                  "Access-Control-Allow-Headers: Authorization, Content-Type\r\n"
                                  "Access-Control-Max-Age: 600\r\nAllow: GET, POST, OPTIONS\r\n"
                                : "Allow: GET, POST, OPTIONS\r\n",
                        "", 0);
        return;
    }
    if (!strcmp(p, "/health")) {
        if (!get) goto method;
        sl_http_respond(c, 200, "application/json", "", "{\"status\":\"ok\"}", 15);
        return;
    }
    if (!strcmp(p, "/ready")) {
        if (!get) goto method;
        sl_engine_stats st;
        sl_engine_stats_init(&st);
        if (!a->ready) {
            send_simple_err(c, 503, NULL, NULL, "the model is loading");
        } else if (a->draining) {
            send_simple_err(c, 503, NULL, NULL, "the server is shutting down");
        } else if (sl_engine_get_stats(a->eng, &st) != SL_OK || st.num_replicas_ready == 0) {
            api_err e; /* for good: no Retry-After */
            fail_at(&e, 503, NULL, "no replica is in service: all %d failed with device errors (see the server's log)",
                    st.num_replicas);
            e.no_retry = 1;
            send_err(c, &e);
        } else {
            char body[96];
            int n = snprintf(body, sizeof body, "{\"status\":\"ready\",\"replicas\":%d,\"replicas_ready\":%d}",
                             st.num_replicas, st.num_replicas_ready);
            sl_http_respond(c, 200, "application/json", "", body, (size_t)n);
        }
        return;
    }
    int key_ok = a->n_keys == 0;
    for (int i = 0; i < a->n_keys; i++) key_ok |= auth_ok(a->keys[i], r->authorization); /* no early exit */
    /* metrics: the dashboard page holds no data (it asks /metrics, with the key it is given, for that) */
    if (!strcmp(p, "/")) {
        if (!get) goto method;
        sl_http_respond(c, 200, "text/html; charset=utf-8", "Cache-Control: no-cache\r\n", sl_dashboard_html,
                        strlen(sl_dashboard_html));
        return;
    }
    if (!strcmp(p, "/metrics") && (key_ok || !a->cfg->metrics_require_key)) {
        if (!get) goto method;
        sl_engine_stats st;
        sl_engine_stats_init(&st);
        sl_buf b = {0};
        if (!a->ready || !a->metrics) {
            send_simple_err(c, 503, NULL, NULL, "the model is loading; retry when /ready answers 200");
        } else if (sl_engine_get_stats(a->eng, &st) != SL_OK || sl_metrics_render(a->metrics, &st, &b) != SL_OK) {
            send_simple_err(c, 503, NULL, NULL, "out of memory");
        } else {
            sl_http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", "", b.p, b.n);
        }
        sl_buf_free(&b);
        return;
    }
    if (!key_ok) {
        api_err e;
        fail_at(&e, 401, NULL, "missing or incorrect API key: send 'Authorization: Bearer KEY'");
        e.type = "invalid_request_error";
        e.code = "invalid_api_key";
        send_err(c, &e);
        return;
    }
    if (!a->ready) {
        send_simple_err(c, 503, NULL, NULL, "the model is loading; retry when /ready answers 200");
        return;
    }
    if (!strcmp(p, "/v1/models")) {
        if (!get) goto method;
        json_t *o = json_pack("{s:s, s:[o]}", "object", "list", "data", model_json(a));
        send_json(c, 200, o, NULL);
        json_decref(o);
        return;
    }
    if (!strncmp(p, "/v1/models/", 11)) {
        if (!get) goto method;
        if (strcmp(p + 11, a->info.name)) {
            char msg[300];
            snprintf(msg, sizeof msg, "The model '%.200s' does not exist", p + 11);
            send_simple_err(c, 404, "model", "model_not_found", msg);
            return;
        }
        json_t *o = model_json(a);
        send_json(c, 200, o, NULL);
        json_decref(o);
        return;
    }
    int kind = !strcmp(p, "/v1/completions")        ? 0
               : !strcmp(p, "/v1/chat/completions") ? 1
               : !strcmp(p, "/v1/embeddings")       ? 2
               : !strcmp(p, "/tokenize")            ? 3
               : !strcmp(p, "/detokenize")          ? 4
                                                    : -1;
    if (kind < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "no route for %.8s %.200s", r->method, p);
        send_simple_err(c, 404, NULL, "not_found", msg);
        return;
    }
    if (!post) goto method;
    if (a->draining && kind <= 2) {
        send_simple_err(c, 503, NULL, NULL, "the server is shutting down");
        return;
    }
    json_error_t jerr;
    json_t *root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char msg[300];
        snprintf(msg, sizeof msg, "invalid JSON body: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        send_simple_err(c, 400, NULL, NULL, msg);
        return;
    }
    if (!json_is_object(root)) {
        send_simple_err(c, 400, NULL, NULL, "the request body must be a JSON object");
    } else if (kind == 0) {
        handle_generate(a, c, root, EX_COMPLETION, r->sluice_replica);
    } else if (kind == 1) {
        handle_generate(a, c, root, EX_CHAT, r->sluice_replica);
    } else if (kind == 2) {
        handle_embeddings(a, c, root, r->sluice_replica);
    } else if (kind == 3) {
        handle_tokenize(a, c, root);
    } else {
        handle_detokenize(a, c, root);
    }
    json_decref(root);
    return;
method:
    sl_http_conn_add_headers(c, !strncmp(p, "/v1/models", 10) || !strcmp(p, "/health") || !strcmp(p, "/ready") ||
                                        !strcmp(p, "/metrics") || !strcmp(p, "/")
                                    ? "Allow: GET, HEAD, OPTIONS\r\n"
                                    : "Allow: POST, OPTIONS\r\n");
    send_simple_err(c, 405, NULL, "method_not_allowed", "method not allowed for this route");
}

/* ---- lifecycle ---------------------------------------------------------------------------------------- */
static void close_handle(uv_handle_t *h) {
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void api_stop_handles(api *a) {
    a->stopped = 1;
    close_handle((uv_handle_t *)&a->wake);
    close_handle((uv_handle_t *)&a->sig_term);
    close_handle((uv_handle_t *)&a->sig_int);
    close_handle((uv_handle_t *)&a->grace);
}

static void api_stop(api *a) {
    if (a->stopped) return;
    sl_http_server_close(a->http);
    api_stop_handles(a);
}

static void api_maybe_stop(api *a) {
    if (!a->draining || a->stopped || a->active) return;
    api_stop(a);
}

static void on_grace(uv_timer_t *t) {
    api *a = t->data;
    a->grace_over = 1;
    /* Past the grace period: the engine ends what is left with an abort, answered as 503 / an error event. */
    for (exchange *ex = a->active; ex; ex = ex->next)
        for (int i = 0; !ex->submitting && i < ex->n_sub; i++) sl_request_cancel(ex->subs[i].req); /* else submit_done */
}

static void on_signal(uv_signal_t *s, int signum) {
    api *a = s->data;
    if (a->draining) {
        on_grace(&a->grace); /* a second signal: do not wait out the grace period */
        return;
    }
    fprintf(stderr, "sluice: %s: draining (%d requests in flight)\n", signum == SIGTERM ? "SIGTERM" : "SIGINT",
            sl_http_server_n_busy(a->http));
    a->draining = 1;
    sl_http_server_stop_accepting(a->http);
    sl_http_server_close_idle(a->http);
    uv_timer_start(&a->grace, on_grace, (uint64_t)(a->cfg->shutdown_grace * 1000.0), 0);
    api_maybe_stop(a);
}

static void serve_usage_error(const char *arg) {
    const char *s = sl_config_suggest(arg);
    char flag[128] = "";
    for (size_t i = 0; s && s[i] && i + 1 < sizeof flag; i++) flag[i] = s[i] == '_' ? '-' : s[i]; /* key -> flag */
    fprintf(stderr, "sluice serve: unknown option '%s'%s%s%s (see sluice serve --help)\n", arg,
            s ? " (did you mean --" : "", flag, s ? "?)" : "");
}

static void free_keys(api *a) {
    for (int i = 0; i < a->n_keys; i++) free(a->keys[i]);
    free(a->keys);
    a->keys = NULL;
    a->n_keys = 0;
}

static int add_key(api *a, const char *k, size_t len) {
    char **keys = realloc(a->keys, (size_t)(a->n_keys + 1) * sizeof *keys);
    if (!keys) return 0;
    a->keys = keys;
    if (!(keys[a->n_keys] = strndup(k, len))) return 0;
    a->n_keys++;
    return 1;
}

/* api_key, then api_key_file's lines. Returns 0 (after printing why) if the file cannot be read. */
static int load_keys(api *a, const sl_config *cfg) {
    if (cfg->api_key && *cfg->api_key && !add_key(a, cfg->api_key, strlen(cfg->api_key))) return 0;
    if (!cfg->api_key_file || !*cfg->api_key_file) return 1;
    FILE *f = fopen(cfg->api_key_file, "r");
    if (!f) {
        fprintf(stderr, "sluice serve: --api-key-file %s: %s\n", cfg->api_key_file, strerror(errno));
        return 0;
    }
    char line[4096]; /* a key longer than a line of this is not a key */
    int ok = 1, before = a->n_keys;
    while (ok && fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
        size_t s = 0;
        while (s < n && (line[s] == ' ' || line[s] == '\t')) s++;
        if (s == n || line[s] == '#') continue;
        ok = add_key(a, line + s, n - s);
    }
    fclose(f);
    if (ok && a->n_keys == before) {
        fprintf(stderr, "sluice serve: --api-key-file %s holds no key\n", cfg->api_key_file);
        return 0;
    }
    return ok;
}

/* Loading the model on libuv's worker pool, so the loop answers /health and /ready meanwhile. */
typedef struct load_job {
    uv_work_t work;
    api *a;
    sl_engine_params ep;
    char *default_path; /* owned: the default model's path when none was named */
    sl_engine_t *eng;   /* OUT */
    sl_status st;
    char msg[512];
} load_job;

static void load_work(uv_work_t *w) {
    load_job *j = w->data;
    j->st = sl_engine_create(&j->ep, &j->eng);
    if (j->st != SL_OK)
        snprintf(j->msg, sizeof j->msg, "%s", *sl_last_error() ? sl_last_error() : sl_status_str(j->st));
}

static void load_done(uv_work_t *w, int status) {
    load_job *j = w->data;
    api *a = j->a;
    a->eng = j->eng; /* freed after the loop ends, whatever happened meanwhile */
    if (j->st != SL_OK) {
        fprintf(stderr, "sluice serve: loading the model: %s\n", j->msg);
        a->rc = 1;
        api_stop(a);
    } else {
        sl_model_info_init(&a->info);
        sl_engine_model_info(a->eng, &a->info);
        if (sl_metrics_create(a->info.name, &a->metrics) != SL_OK) { /* metrics */
            fprintf(stderr, "sluice serve: out of memory\n");
            a->rc = 1;
            api_stop(a);
            free(j->default_path);
            free(j);
            return;
        }
        sl_engine_stats st;
        sl_engine_stats_init(&st);
        a->n_replicas = sl_engine_get_stats(a->eng, &st) == SL_OK ? st.num_replicas : 1;
        a->ready = 1;
        printf("sluice: serving model '%s' (context %d tokens, %d replica%s on %s; KV cache %lld tokens, %s, "
               "%.1f MiB%s)\n",
               a->info.name, a->info.max_model_len, a->n_replicas, a->n_replicas == 1 ? "" : "s",
               a->cfg->devices && *a->cfg->devices ? a->cfg->devices : "cpu", (long long)a->info.kv_cache_tokens,
               a->info.kv_dtype ? a->info.kv_dtype : "?", (double)a->info.kv_cache_bytes / (1024.0 * 1024.0),
               a->n_replicas > 1 ? " each" : "");
        fflush(stdout);
        api_maybe_stop(a); /* a signal came while loading */
    }
    free(j->default_path);
    free(j);
}

int sl_serve_main(const sl_config *cfg, int argc, char **argv) {
    if (argc > 0) {
        serve_usage_error(argv[0]);
        return 2;
    }
    api *a = calloc(1, sizeof *a);
    if (!a) return 1;
    a->cfg = cfg;
    if (!load_keys(a, cfg)) {
        free_keys(a);
        free(a);
        return 2;
    }
    if (cfg->access_log && *cfg->access_log) { /* metrics */
        a->access_log = strcmp(cfg->access_log, "-") ? fopen(cfg->access_log, "a") : stderr;
        if (!a->access_log) {
            fprintf(stderr, "sluice serve: --access-log %s: %s\n", cfg->access_log, strerror(errno));
            free_keys(a);
            free(a);
            return 2;
        }
    }
    a->loop = uv_default_loop();
    pthread_mutex_init(&a->mu, NULL);
    uv_async_init(a->loop, &a->wake, on_wake);
    a->wake.data = a;
    uv_signal_init(a->loop, &a->sig_term);
    uv_signal_init(a->loop, &a->sig_int);
    a->sig_term.data = a->sig_int.data = a;
    uv_signal_start(&a->sig_term, on_signal, SIGTERM);
    uv_signal_start(&a->sig_int, on_signal, SIGINT);
    uv_timer_init(a->loop, &a->grace);
    a->grace.data = a;
    signal(SIGPIPE, SIG_IGN); /* a vanished client is an error on write, not the end of the process */

    sl_http_limits lim = {
        .max_header_bytes = (size_t)cfg->max_header_size,
        .max_body_bytes = (size_t)cfg->max_body_size,
        .max_connections = cfg->max_connections,
        .keepalive_ms = (uint64_t)(cfg->keepalive_timeout * 1000.0),
        .header_timeout_ms = (uint64_t)(cfg->header_timeout * 1000.0),
        .body_timeout_ms = (uint64_t)(cfg->body_timeout * 1000.0),
        .max_output_bytes = (size_t)cfg->max_output_buffer,
        .write_timeout_ms = (uint64_t)(cfg->write_timeout * 1000.0),
    };
    /* Listen first, load second: /health answers at once, /ready says 503 until the model is in. */
    sl_status st = sl_http_server_start(a->loop, cfg->host, cfg->port, &lim, on_request, on_conn_close, a, &a->http);
    load_job *lj = st == SL_OK ? calloc(1, sizeof *lj) : NULL;
    if (st == SL_OK && lj) {
        const char *h = cfg->host;
        printf(strchr(h, ':') ? "sluice: listening on http://[%s]:%d\n" : "sluice: listening on http://%s:%d\n", h,
               sl_http_server_port(a->http));
        fflush(stdout);
        lj->a = a;
        lj->work.data = lj;
        sl_engine_params_init(&lj->ep);
        sl_config_to_engine_params(cfg, &lj->ep);
        if (!lj->ep.model_path || !*lj->ep.model_path) lj->ep.model_path = lj->default_path = sl_default_model_path();
        fprintf(stderr, "sluice: loading %s\n", lj->ep.model_path ? lj->ep.model_path : "(no model)");
        if (uv_queue_work(a->loop, &lj->work, load_work, load_done) < 0) {
            free(lj->default_path);
            free(lj);
            lj = NULL;
        }
    }
    if (!lj) {
        a->rc = 1;
        api_stop_handles(a);
        if (a->http) sl_http_server_close(a->http);
    }
    uv_run(a->loop, UV_RUN_DEFAULT);
    uv_loop_close(a->loop);
    sl_engine_free(a->eng);
    sl_metrics_free(a->metrics); /* metrics: after the engine, whose thread observes into it */
    if (a->access_log && a->access_log != stderr) fclose(a->access_log);
    pthread_mutex_destroy(&a->mu);
    free_keys(a);
    int rc = a->rc;
    free(a);
    if (rc == 0) fprintf(stderr, "sluice: stopped\n");
    return rc;
}
