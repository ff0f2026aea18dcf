/*
 * loadgen.c — `sluice-bench`, the load generator: drives any OpenAI-compatible server over HTTP/1.1 keep-alive
 * with streaming completions (token-id prompts of exact length) or chat, and reports what a user of the server
 * would see: time to first token, time per output token, the gaps between chunks, end to end, throughput,
 * errors by status, and goodput against latency objectives.
 *
 * Why it is shaped so:
 * - One libuv loop, one thread, no blocking call while measuring: the client must never be the bottleneck, and
 *   every timestamp is the time the bytes were read (one uv_hrtime() per read, shared by the events in it).
 * - Two load shapes. Closed loop (`-c N`): N connections, each sends its next request when the last finished.
 *   Open loop (`--rate R`): Poisson arrivals; latency counts from the *scheduled* arrival, so a slow server
 *   cannot hide its queueing behind a client that waits for it (coordinated omission).
 * - A run is a list of phases (an optional warm-up, then the measured phase) per load level; a sweep is
 *   several levels. Each phase is bounded by a request count or a duration and by a per-request timeout, so
 *   the program always stops by itself. Compare mode (`--compare URL2`) runs each level's phases on the two
 *   servers alternately, round by round, with the same prompts, and prints the ratios: drifts of a shared
 *   machine then hit both sides alike.
 * - TPOT comes from the usage chunk (`stream_options.include_usage`): a chunk may carry several tokens, so
 *   counting chunks would overstate it; chunk gaps are reported separately as ITL ("inter-chunk latency").
 * - Prompts: generated token ids of exact length (the default), text built to an exact length with the server's
 *   /tokenize and /detokenize, or a JSONL file; prepared prompts are built and checked before the first request.
 * - It is a standalone client: it links no Sluice code (only libuv, llhttp, jansson), so it measures any
 *   server the same way. Helpers return 0 or -1 with a message on stderr, since nothing here is a library.
 *   `--self-test` checks the statistics and the SSE parser on known inputs (tests/server/test_loadgen.py).
 *
 * Exit status: 0 all measured requests succeeded; 1 usage or set-up error (bad flag, server unreachable);
 * 3 the run finished but some requests failed (their statuses are in the table and the JSON).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <llhttp.h>
#include <uv.h>

#define LG_MAX_LEVELS 64        /* a sweep longer than this is a typo, not a benchmark */
#define LG_MAX_ERR_KINDS 16     /* distinct error statuses kept per level; more are counted as "other" */
#define LG_READ_BUF 65536       /* one read's worth: a whole SSE burst of a long chunk fits */
#define LG_ERR_BODY_MAX 512     /* enough of an error body to show its message */
#define LG_PREFLIGHT_TIMEOUT_MS 5000 /* connect + GET /v1/models; a live server answers in milliseconds */
#define LG_TEXT_PROMPTS_MAX 512 /* distinct /tokenize-built prompts at most: two round trips each at set-up */
#define LG_TEXT_TRIES 8         /* windows tried per text prompt before settling for the closest length */

/* Transport errors, stored where an HTTP status would be (HTTP statuses are positive). */
enum { LG_ERR_CONNECT = -1, LG_ERR_CLOSED = -2, LG_ERR_TIMEOUT = -3, LG_ERR_PROTOCOL = -4, LG_ERR_STREAM = -5 };

/* ---- options ------------------------------------------------------------------------------------------------ */

/* One server under test. Compare mode has two, measured alternately in the same run. */
typedef struct lg_target {
    char url[600];
    char host[256], port[16], prefix[256]; /* from the URL: http://host:port/prefix ("/v1" stripped) */
    char model[256];                       /* "" = ask /v1/models, or send none */
    char path[300];                        /* the request path: prefix + /v1/completions or chat */
    char path_chat[300];                   /* prefix + /v1/chat/completions, for prompts that carry messages */
    struct sockaddr_storage addr;
} lg_target;

/* One prepared prompt (--prompts-file, --prompt-text-tokens): requests cycle through them in order. */
typedef struct lg_prompt {
    json_t *prompt;                        /* a string or an array of token ids; NULL when messages is set */
    json_t *messages;                      /* a chat's messages array; NULL for a prompt */
    int max_tokens;                        /* 0 = --max-tokens */
} lg_prompt;

typedef struct lg_opts {
    lg_target tgt[2];                      /* [n_targets]: --url, then --compare */
    int n_targets;
    int rounds;                            /* compare mode: phases per target per level, alternating */
    const char *api_key;
    int chat;
    int concurrency;                       /* closed loop when rate == 0 */
    double rate;                           /* requests per second, Poisson; 0 = closed loop */
    int n_requests;                        /* per level; -1 = use duration */
    int per_stream;                        /* n = per_stream * concurrency per level, when > 0 */
    double duration_s;
    int warmup;
    int prompt_min, prompt_max;            /* prompt length in tokens, uniform in [min, max] */
    int text_prompts;                      /* --prompt-text-tokens: text built to prompt_min..max with /tokenize */
    const char *prompts_file;              /* --prompts-file: JSONL, one prompt per line */
    lg_prompt *prompts; size_t n_prompts;  /* [n_prompts] prepared before any request; none = generated ids */
    int vocab_lo, vocab_hi;                /* token ids drawn from [lo, hi) */
    int shared_prefix;
    int max_tokens;
    double temperature;                    /* < 0: not sent (server default) */
    int ignore_eos;
    uint64_t seed;
    double slo_ttft_ms, slo_tpot_ms;       /* 0 = no objective */
    double timeout_s;
    int max_conns;                         /* open loop: connections opened at most */
    const char *json_path, *csv_path;
    int n_levels;
    int level_conc[LG_MAX_LEVELS];
    double level_rate[LG_MAX_LEVELS];
} lg_opts;

/* ---- results ------------------------------------------------------------------------------------------------ */

typedef struct lg_dbuf { double *v; size_t n, cap; } lg_dbuf; /* growable array of doubles */

typedef struct lg_sample {   /* one finished measured request */
    double ttft_ms, tpot_ms, e2e_ms; /* tpot_ms NAN when fewer than 2 output tokens */
    int prompt_tokens, completion_tokens;
    int status;                      /* 200 ok; other HTTP status; or LG_ERR_* */
} lg_sample;

typedef struct lg_level {
    int concurrency;
    double rate;
    lg_sample *s; size_t n, cap;     /* [n] samples, in completion order */
    lg_dbuf itl;                     /* every inter-chunk gap of the measured requests, ms */
    uint64_t t_begin, t_end;         /* ns: current measured phase's start, its last completion */
    uint64_t busy_ns;                /* sum of the measured phases' spans (several in compare mode) */
    int err_code[LG_MAX_ERR_KINDS], err_count[LG_MAX_ERR_KINDS], n_err_kinds, err_other;
    char err_msg[LG_MAX_ERR_KINDS][160]; /* the first message seen for each status */
} lg_level;

typedef struct lg_summary { double mean, p50, p90, p99, max; size_t n; } lg_summary;

/* ---- connections and the run ---------------------------------------------------------------------------------- */

struct lg_bench;

typedef enum { LG_CLOSED, LG_CONNECTING, LG_IDLE, LG_BUSY, LG_CLOSING } lg_conn_state;

typedef struct lg_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_timer_t timer;               /* the in-flight request's timeout */
    llhttp_t parser;
    struct lg_bench *b;
    lg_conn_state state;
    int want_send;                  /* a request is waiting for the connection to (re)open */
    int msg_done, keep_alive;
    int served;   /* responses completed on this connection since it was opened: > 0 means a reused one */
    /* the request in flight (one per connection: HTTP/1.1 without pipelining) */
    int active, warm;
    uint64_t t_start, t_first, t_last, t_read; /* ns (uv_hrtime) */
    int chat;                       /* the request went to chat/completions: text is in delta.content */
    int n_chunks, got_usage, got_done, prompt_tokens, completion_tokens, status, err;
    char err_msg[160];
    char *sse; size_t sse_n, sse_cap;    /* SSE bytes after the last complete line */
    char *ev; size_t ev_n, ev_cap;       /* the current event's data lines, joined by '\n' */
    lg_dbuf gaps;                        /* this request's inter-chunk gaps, ms; the level keeps them on success */
    char errbody[LG_ERR_BODY_MAX + 1]; size_t errbody_n;
    char rbuf[LG_READ_BUF];
} lg_conn;

typedef struct lg_bench {
    uv_loop_t *loop;
    lg_opts *o;
    lg_target *t;                   /* the server this bench drives */
    lg_conn *conns; int n_conns;    /* [n_conns], allocated once for the largest level */
    int *free_stack; int n_free;    /* open loop: idle connection indices, most recently used on top */
    uv_timer_t arrival_timer;
    /* the phase being run */
    lg_level *lvl;
    int warm, target_n, issued, in_flight, closed_loop;
    uint64_t t_deadline, next_arrival;
    uint64_t *pending; size_t pend_head, pend_n, pend_cap; /* open loop: arrivals waiting for a connection */
    uint64_t rng_prompt, rng_arrival;
    json_int_t *prefix_ids;         /* [shared_prefix] common leading token ids */
    size_t next_prompt;             /* index into o->prompts of the next request, modulo n_prompts */
} lg_bench;

/* ---- small helpers ------------------------------------------------------------------------------------------- */

static uint64_t lg_rng_next(uint64_t *s) { /* splitmix64: tiny, seedable, good enough for ids and arrivals */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double lg_rng_unit(uint64_t *s) { return ((double)(lg_rng_next(s) >> 11) + 1.0) / 9007199254740993.0; } /* (0,1] */

static int lg_rng_range(uint64_t *s, int lo, int hi) { /* [lo, hi) */
    return lo + (int)(lg_rng_next(s) % (uint64_t)(hi - lo));
}

/* Truncating copy, for names and messages that are shown, never parsed. */
static void lg_copy(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static int lg_dbuf_push(lg_dbuf *d, double x) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        double *v = realloc(d->v, cap * sizeof *v);
        if (!v) return -1;
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = x;
    return 0;
}

static int lg_buf_append(char **p, size_t *n, size_t *cap, const char *src, size_t len) {
    if (*n + len + 1 > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *n + len + 1) c *= 2;
        char *q = realloc(*p, c);
        if (!q) return -1;
        *p = q;
        *cap = c;
    }
    memcpy(*p + *n, src, len);
    *n += len;
    (*p)[*n] = 0;
    return 0;
}

static int lg_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Percentile by linear interpolation between closest ranks (numpy's default), on sorted v[n]. */
static double lg_percentile(const double *v, size_t n, double p) {
    if (!n) return NAN;
    double r = p / 100.0 * (double)(n - 1);
    size_t i = (size_t)r;
    if (i + 1 >= n) return v[n - 1];
    return v[i] + (r - (double)i) * (v[i + 1] - v[i]);
}

/* Sorts v in place (NANs dropped first) and summarizes it. */
static lg_summary lg_summarize(double *v, size_t n) {
    lg_summary s = {NAN, NAN, NAN, NAN, NAN, 0};
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(v[i])) v[m++] = v[i];
    if (!m) return s;
    qsort(v, m, sizeof *v, lg_cmp_double);
    double sum = 0;
    for (size_t i = 0; i < m; i++) sum += v[i];
    s.n = m;
    s.mean = sum / (double)m;
    s.p50 = lg_percentile(v, m, 50);
    s.p90 = lg_percentile(v, m, 90);
    s.p99 = lg_percentile(v, m, 99);
    s.max = v[m - 1];
    return s;
}

/* ---- option parsing ------------------------------------------------------------------------------------------ */

static void lg_usage(FILE *f) {
    fprintf(f,
            "usage: sluice-bench [options]\n"
            "  --url URL              server base URL (default http://127.0.0.1:8080; a trailing /v1 is accepted)\n"
            "  --model NAME           model to ask for (default: the first of GET /v1/models)\n"
            "  --api-key KEY          sent as 'Authorization: Bearer KEY'\n"
            "  --chat                 /v1/chat/completions with a text prompt (default: /v1/completions, token ids)\n"
            "  --compare URL2         compare mode: measure URL2 too, alternating with --url, and print ratios\n"
            "  --rounds R             compare mode: R alternating rounds per level, n requests each (default 1)\n"
            "load (one of):\n"
            "  -c N                   closed loop: N concurrent streams (default 1)\n"
            "  --rate R               open loop: Poisson arrivals, R requests/s\n"
            "  --sweep-concurrency L  comma list of concurrencies, one result row each\n"
            "  --sweep-rate L         comma list of rates, one result row each\n"
            "length (one of):\n"
            "  -n N                   measured requests per level (default 100)\n"
            "  --per-stream K         closed loop: K requests per stream per level (n = K * concurrency)\n"
            "  -d SECONDS             issue requests for this long per level, then wait for them\n"
            "  --warmup K             K requests before each level, not measured (default 0)\n"
            "requests:\n"
            "  --prompt-tokens N|A:B  prompt length in tokens, fixed or uniform in [A, B] (default 32)\n"
            "  --prompt-text-tokens N|A:B  text prompts of N (or A..B) tokens, built before the run with the\n"
            "                         server's /tokenize and /detokenize from windows of a fixed English text\n"
            "                         (at most %d distinct prompts, then they repeat; with --chat N counts the\n"
            "                         message's text, and usage adds the chat template's tokens)\n"
            "  --prompts-file FILE    JSONL, one object per line: {\"prompt\": text or ids} (completions; with\n"
            "                         --chat, sent as one user message) or {\"messages\": [...]} (chat), and an\n"
            "                         optional \"max_tokens\"; requests cycle through the lines in order\n"
            "  --vocab-range A:B      prompt token ids drawn from [A, B) (default 1000:20000)\n"
            "  --shared-prefix K      the first K prompt tokens are common to all prompts (default 0: all unique)\n"
            "  --max-tokens N         output tokens per request, with ignore_eos (default 64)\n"
            "  --no-ignore-eos        let the model stop at end of sequence\n"
            "  --temperature T        sampling temperature (default: not sent, the server's default)\n"
            "  --seed S               seed of prompts and arrivals (default 1)\n"
            "  --timeout SECONDS      per-request timeout (default 300)\n"
            "  --max-conns N          open loop: connections at most (default 256)\n"
            "report:\n"
            "  --slo-ttft-ms MS       goodput objective: time to first token\n"
            "  --slo-tpot-ms MS       goodput objective: time per output token\n"
            "  --json FILE            results as JSON\n"
            "  --csv FILE             results as CSV, one row per level (and target)\n"
            "  --self-test            check the statistics and the SSE parser on known inputs, then exit\n",
            LG_TEXT_PROMPTS_MAX);
}

static int lg_parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "sluice-bench: %s needs an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s ? s : "");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int lg_parse_double(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "sluice-bench: %s needs a number in [%g, %g], got '%s'\n", flag, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* "A:B" or "N" (then A = B = N). */
static int lg_parse_range(const char *flag, const char *s, long lo, long hi, int *a, int *b) {
    char tmp[64];
    if (!s || strlen(s) >= sizeof tmp) return lg_parse_int(flag, NULL, lo, hi, a);
    snprintf(tmp, sizeof tmp, "%s", s);
    char *colon = strchr(tmp, ':');
    if (!colon) {
        if (lg_parse_int(flag, tmp, lo, hi, a)) return -1;
        *b = *a;
        return 0;
    }
    *colon = 0;
    if (lg_parse_int(flag, tmp, lo, hi, a) || lg_parse_int(flag, colon + 1, lo, hi, b)) return -1;
    if (*b < *a) {
        fprintf(stderr, "sluice-bench: %s: range %s is empty\n", flag, s);
        return -1;
    }
    return 0;
}

static int lg_parse_url(lg_target *o, const char *url) {
    const char *p = url;
    if (strncmp(p, "http://", 7)) {
        fprintf(stderr, "sluice-bench: --url must start with http:// (got '%s'); https is not supported\n", url);
        return -1;
    }
    p += 7;
    const char *slash = strchr(p, '/');
    size_t hostport_len = slash ? (size_t)(slash - p) : strlen(p);
    char hp[300];
    if (!hostport_len || hostport_len >= sizeof hp) goto bad;
    memcpy(hp, p, hostport_len);
    hp[hostport_len] = 0;
    char *colon = strrchr(hp, ':');
    if (hp[0] == '[') { /* [v6]:port */
        char *rb = strchr(hp, ']');
        if (!rb) goto bad;
        *rb = 0;
        lg_copy(o->host, sizeof o->host, hp + 1);
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        if (colon) *colon = 0;
        lg_copy(o->host, sizeof o->host, hp);
    }
    int port = 80;
    if (colon && lg_parse_int("--url port", colon + 1, 1, 65535, &port)) return -1;
    snprintf(o->port, sizeof o->port, "%d", port);
    snprintf(o->prefix, sizeof o->prefix, "%s", slash ? slash : "");
    size_t n = strlen(o->prefix);
    while (n && o->prefix[n - 1] == '/') o->prefix[--n] = 0;
    if (n >= 3 && !strcmp(o->prefix + n - 3, "/v1")) o->prefix[n - 3] = 0;
    if (!o->host[0]) goto bad;
    snprintf(o->url, sizeof o->url, "http://%s:%s%s", o->host, o->port, o->prefix);
    return 0;
bad:
    fprintf(stderr, "sluice-bench: cannot parse --url '%s'\n", url);
    return -1;
}

static int lg_parse_list(const char *flag, const char *s, int is_rate, lg_opts *o) {
    char tmp[1024]; /* a list longer than this would exceed LG_MAX_LEVELS anyway */
    if (!s || !*s || strlen(s) >= sizeof tmp) {
        fprintf(stderr, "sluice-bench: %s needs a comma-separated list\n", flag);
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%s", s);
    o->n_levels = 0;
    for (char *save = NULL, *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->n_levels == LG_MAX_LEVELS) {
            fprintf(stderr, "sluice-bench: %s: at most %d levels\n", flag, LG_MAX_LEVELS);
            return -1;
        }
        /* 100000 streams or 1e6 requests/s: beyond what one client process (or port range) can drive */
        if (is_rate) {
            if (lg_parse_double(flag, t, 1e-3, 1e6, &o->level_rate[o->n_levels])) return -1;
            o->level_conc[o->n_levels] = 0;
        } else {
            if (lg_parse_int(flag, t, 1, 100000, &o->level_conc[o->n_levels])) return -1;
            o->level_rate[o->n_levels] = 0;
        }
        o->n_levels++;
    }
    if (!o->n_levels) {
        fprintf(stderr, "sluice-bench: %s needs a comma-separated list\n", flag);
        return -1;
    }
    return 0;
}

static int lg_opts_parse(lg_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->concurrency = 1;
    o->n_requests = -1;
    o->prompt_min = o->prompt_max = 32;
    o->vocab_lo = 1000; /* low ids are often special or byte tokens; 1000:20000 is ordinary text in most vocabs */
    o->vocab_hi = 20000;
    o->max_tokens = 64;
    o->temperature = -1;
    o->ignore_eos = 1;
    o->seed = 1;
    o->timeout_s = 300;
    o->max_conns = 256;
    const char *url = "http://127.0.0.1:8080", *url2 = NULL;
    o->rounds = 1;
    int sweep = 0, have_c = 0, n_prompt_src = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int took = 1, rc = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            lg_usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--url")) url = v;
        else if (!strcmp(a, "--model")) {
            snprintf(o->tgt[0].model, sizeof o->tgt[0].model, "%s", v ? v : "");
            snprintf(o->tgt[1].model, sizeof o->tgt[1].model, "%s", v ? v : "");
        } else if (!strcmp(a, "--compare")) url2 = v;
        else if (!strcmp(a, "--rounds")) rc = lg_parse_int(a, v, 1, 1000, &o->rounds);
        else if (!strcmp(a, "--api-key")) o->api_key = v;
        else if (!strcmp(a, "--chat")) { o->chat = 1; took = 0; }
        else if (!strcmp(a, "--no-ignore-eos")) { o->ignore_eos = 0; took = 0; }
        else if (!strcmp(a, "-c")) { rc = lg_parse_int(a, v, 1, 100000, &o->concurrency); have_c = 1; }
        else if (!strcmp(a, "--rate")) rc = lg_parse_double(a, v, 1e-3, 1e6, &o->rate);
        else if (!strcmp(a, "-n")) rc = lg_parse_int(a, v, 1, 100000000, &o->n_requests);
        else if (!strcmp(a, "--per-stream")) rc = lg_parse_int(a, v, 1, 1000000, &o->per_stream);
        else if (!strcmp(a, "-d")) rc = lg_parse_double(a, v, 1e-3, 1e7, &o->duration_s);
        else if (!strcmp(a, "--warmup")) rc = lg_parse_int(a, v, 0, 1000000, &o->warmup);
        else if (!strcmp(a, "--prompt-tokens")) {
            rc = lg_parse_range(a, v, 1, 1000000, &o->prompt_min, &o->prompt_max);
            n_prompt_src++;
        } else if (!strcmp(a, "--prompt-text-tokens")) {
            rc = lg_parse_range(a, v, 1, 1000000, &o->prompt_min, &o->prompt_max);
            o->text_prompts = 1;
            n_prompt_src++;
        } else if (!strcmp(a, "--prompts-file")) {
            o->prompts_file = v;
            n_prompt_src++;
        }
        else if (!strcmp(a, "--vocab-range")) rc = lg_parse_range(a, v, 0, 100000000, &o->vocab_lo, &o->vocab_hi);
        else if (!strcmp(a, "--shared-prefix")) rc = lg_parse_int(a, v, 0, 1000000, &o->shared_prefix);
        else if (!strcmp(a, "--max-tokens")) rc = lg_parse_int(a, v, 1, 10000000, &o->max_tokens);
        else if (!strcmp(a, "--temperature")) rc = lg_parse_double(a, v, 0, 2, &o->temperature);
        else if (!strcmp(a, "--seed")) {
            int s;
            rc = lg_parse_int(a, v, 0, 2147483647, &s);
            o->seed = (uint64_t)s;
        } else if (!strcmp(a, "--timeout")) rc = lg_parse_double(a, v, 1e-3, 1e6, &o->timeout_s);
        else if (!strcmp(a, "--max-conns")) rc = lg_parse_int(a, v, 1, 100000, &o->max_conns);
        else if (!strcmp(a, "--slo-ttft-ms")) rc = lg_parse_double(a, v, 0, 1e9, &o->slo_ttft_ms);
        else if (!strcmp(a, "--slo-tpot-ms")) rc = lg_parse_double(a, v, 0, 1e9, &o->slo_tpot_ms);
        else if (!strcmp(a, "--json")) o->json_path = v;
        else if (!strcmp(a, "--csv")) o->csv_path = v;
        else if (!strcmp(a, "--self-test")) {
            fprintf(stderr, "sluice-bench: --self-test takes no other options\n");
            return -1;
        }
        else if (!strcmp(a, "--sweep-concurrency")) { rc = lg_parse_list(a, v, 0, o); sweep++; }
        else if (!strcmp(a, "--sweep-rate")) { rc = lg_parse_list(a, v, 1, o); sweep++; }
        else {
            fprintf(stderr, "sluice-bench: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        if (rc) return -1;
        if (took) {
            if (!v) {
                fprintf(stderr, "sluice-bench: %s needs a value\n", a);
                return -1;
            }
            i++;
        }
    }
    if (!url || lg_parse_url(&o->tgt[0], url)) return -1;
    o->n_targets = 1;
    if (url2) {
        if (lg_parse_url(&o->tgt[1], url2)) return -1;
        o->n_targets = 2;
    }
    if (sweep > 1 || (sweep && (o->rate > 0 || have_c)) || (o->rate > 0 && have_c)) {
        fprintf(stderr, "sluice-bench: give one load shape: -c, --rate, --sweep-concurrency or --sweep-rate\n");
        return -1;
    }
    if ((o->n_requests > 0) + (o->duration_s > 0) + (o->per_stream > 0) > 1) {
        fprintf(stderr, "sluice-bench: give one length: -n, --per-stream or -d\n");
        return -1;
    }
    if (!sweep) {
        o->n_levels = 1;
        o->level_conc[0] = o->rate > 0 ? 0 : o->concurrency;
        o->level_rate[0] = o->rate;
    }
    if (o->per_stream && o->level_rate[0] > 0) {
        fprintf(stderr, "sluice-bench: --per-stream needs a closed loop (-c or --sweep-concurrency)\n");
        return -1;
    }
    if (o->n_requests < 0 && o->duration_s <= 0 && !o->per_stream) o->n_requests = 100;
    if (o->vocab_hi <= o->vocab_lo) {
        fprintf(stderr, "sluice-bench: --vocab-range must not be empty\n");
        return -1;
    }
    if (n_prompt_src > 1) {
        fprintf(stderr, "sluice-bench: give one prompt source: --prompt-tokens, --prompt-text-tokens or --prompts-file\n");
        return -1;
    }
    if (o->prompts_file && o->shared_prefix) {
        fprintf(stderr, "sluice-bench: --shared-prefix does not apply to --prompts-file (the file gives the prompts)\n");
        return -1;
    }
    if (o->shared_prefix > o->prompt_min) {
        fprintf(stderr, "sluice-bench: --shared-prefix %d is longer than the shortest prompt (%d)\n", o->shared_prefix,
                o->prompt_min);
        return -1;
    }
    return 0;
}

/* ---- preflight: is anyone there, and which model ---------------------------------------------------------- */

typedef struct lg_pre { char *body; size_t n, cap; int done; } lg_pre;

static int lg_pre_on_body(llhttp_t *p, const char *at, size_t len) {
    lg_pre *pr = p->data;
    return lg_buf_append(&pr->body, &pr->n, &pr->cap, at, len) ? -1 : 0;
}

static int lg_pre_on_done(llhttp_t *p) {
    ((lg_pre *)p->data)->done = 1;
    return HPE_PAUSED;
}

/* One blocking request on a fresh connection (Connection: close), before the loop starts: the preflight and the
 * set-up of text prompts, never a measurement. Returns -1 with a message when the server cannot be reached or
 * does not answer HTTP; otherwise 0 with the status in *status and the body (NUL-terminated, caller frees) in
 * *body_out. body NULL sends a GET. */
static int lg_http_sync(const lg_opts *ob, const lg_target *o, const char *path, const char *body, int *status,
                        char **body_out) {
    *status = 0;
    *body_out = NULL;
    int fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fprintf(stderr, "sluice-bench: socket: %s\n", strerror(errno)), -1;
    int rc = -1;
    lg_pre pr = {0};
    char *req = NULL;
    socklen_t alen = o->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (connect(fd, (const struct sockaddr *)&o->addr, alen) && errno != EINPROGRESS) goto conn_fail;
    struct pollfd pf = {fd, POLLOUT, 0};
    if (poll(&pf, 1, LG_PREFLIGHT_TIMEOUT_MS) != 1) {
        errno = ETIMEDOUT;
        goto conn_fail;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        errno = soerr;
        goto conn_fail;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {LG_PREFLIGHT_TIMEOUT_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    static const char fmt[] = "%s %s%s HTTP/1.1\r\nHost: %s:%s\r\n%s%s%s%sContent-Length: %zu\r\nConnection: close\r\n\r\n%s";
    const char *auth = ob->api_key ? "Authorization: Bearer " : "", *key = ob->api_key ? ob->api_key : "";
    const char *eol = ob->api_key ? "\r\n" : "", *ctype = body ? "Content-Type: application/json\r\n" : "";
    size_t blen = body ? strlen(body) : 0;
    int len = snprintf(NULL, 0, fmt, body ? "POST" : "GET", o->prefix, path, o->host, o->port, auth, key, eol, ctype,
                       blen, body ? body : "");
    req = len > 0 ? malloc((size_t)len + 1) : NULL;
    if (!req) {
        errno = ENOMEM;
        goto conn_fail;
    }
    snprintf(req, (size_t)len + 1, fmt, body ? "POST" : "GET", o->prefix, path, o->host, o->port, auth, key, eol, ctype,
             blen, body ? body : "");
    for (size_t off = 0; off < (size_t)len;) {
        ssize_t w = send(fd, req + off, (size_t)len - off, MSG_NOSIGNAL);
        if (w <= 0) goto conn_fail;
        off += (size_t)w;
    }
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_body = lg_pre_on_body;
    st.on_message_complete = lg_pre_on_done;
    llhttp_t p;
    llhttp_init(&p, HTTP_RESPONSE, &st);
    p.data = &pr;
    char buf[4096];
    while (!pr.done) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0) goto conn_fail;
        if (r == 0) {
            llhttp_finish(&p);
            break;
        }
        llhttp_errno_t e = llhttp_execute(&p, buf, (size_t)r);
        if (e != HPE_OK && e != HPE_PAUSED) break;
    }
    if (!pr.done) {
        fprintf(stderr, "sluice-bench: %s:%s did not answer %s %s%s with HTTP\n", o->host, o->port, body ? "POST" : "GET",
                o->prefix, path);
        goto out;
    }
    if (lg_buf_append(&pr.body, &pr.n, &pr.cap, "", 0)) goto out; /* NUL-terminated even when empty */
    *status = p.status_code;
    *body_out = pr.body;
    pr.body = NULL;
    rc = 0;
    goto out;
conn_fail:
    fprintf(stderr, "sluice-bench: cannot reach http://%s:%s: %s\n", o->host, o->port, strerror(errno));
out:
    free(req);
    free(pr.body);
    close(fd);
    return rc;
}

/* GET /v1/models with a short timeout: fails clearly when nothing listens, and learns the model name when
 * --model was not given. */
static int lg_preflight(lg_bench *b) {
    lg_target *o = b->t;
    int status;
    char *body;
    if (lg_http_sync(b->o, o, "/v1/models", NULL, &status, &body)) return -1;
    if (status == 401 || status == 403) {
        fprintf(stderr, "sluice-bench: %s: GET /v1/models: HTTP %d (wrong or missing --api-key?)\n", o->url, status);
        free(body);
        return -1;
    }
    if (!o->model[0]) {
        json_t *root = status == 200 ? json_loads(body, 0, NULL) : NULL;
        json_t *id = json_object_get(json_array_get(json_object_get(root, "data"), 0), "id");
        if (json_is_string(id)) snprintf(o->model, sizeof o->model, "%s", json_string_value(id));
        else fprintf(stderr, "sluice-bench: warning: %s: no model from GET /v1/models (HTTP %d); sending none\n", o->url,
                     status);
        json_decref(root);
    }
    free(body);
    return 0;
}

/* ---- prompt sources: a JSONL file, or text built to length with /tokenize ---------------------------------------- */

/* A non-empty array of non-negative integers (a prompt given as token ids). */
static int lg_is_id_array(const json_t *a) {
    if (!json_is_array(a) || !json_array_size(a)) return 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *x = json_array_get(a, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0) return 0;
    }
    return 1;
}

/* Checks one parsed line and appends it to o->prompts; on a bad line says why in why[] and returns -1. */
static int lg_prompt_add_line(lg_opts *o, json_t *root, size_t *cap, char *why, size_t why_n) {
    if (!json_is_object(root)) return snprintf(why, why_n, "not a JSON object"), -1;
    json_t *pr = json_object_get(root, "prompt"), *msgs = json_object_get(root, "messages");
    json_t *mt = json_object_get(root, "max_tokens");
    if (!pr == !msgs) return snprintf(why, why_n, "needs exactly one of \"prompt\" and \"messages\""), -1;
    if (pr && !json_is_string(pr) && !lg_is_id_array(pr))
        return snprintf(why, why_n, "\"prompt\" must be a string or a non-empty array of token ids"), -1;
    if (pr && o->chat && !json_is_string(pr))
        return snprintf(why, why_n, "--chat sends \"prompt\" as a user message, so it must be a string"), -1;
    if (msgs) {
        if (!json_is_array(msgs) || !json_array_size(msgs))
            return snprintf(why, why_n, "\"messages\" must be a non-empty array"), -1;
        for (size_t i = 0; i < json_array_size(msgs); i++)
            if (!json_is_string(json_object_get(json_array_get(msgs, i), "role")))
                return snprintf(why, why_n, "messages[%zu] must be an object with a string \"role\"", i), -1;
    }
    /* the same bound as --max-tokens */
    if (mt && (!json_is_integer(mt) || json_integer_value(mt) < 1 || json_integer_value(mt) > 10000000))
        return snprintf(why, why_n, "\"max_tokens\" must be an integer in [1, 10000000]"), -1;
    if (o->n_prompts == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        lg_prompt *v = realloc(o->prompts, c * sizeof *v);
        if (!v) return snprintf(why, why_n, "out of memory"), -1;
        o->prompts = v;
        *cap = c;
    }
    lg_prompt *p = &o->prompts[o->n_prompts++];
    p->prompt = json_incref(pr);
    p->messages = json_incref(msgs);
    p->max_tokens = mt ? (int)json_integer_value(mt) : 0;
    return 0;
}

/* Reads --prompts-file before any request is sent: every line is checked, and the first bad one stops the run
 * with its line number. Blank lines are skipped (a trailing newline is not a prompt). */
static int lg_prompts_load(lg_opts *o) {
    FILE *f = fopen(o->prompts_file, "r");
    if (!f) return fprintf(stderr, "sluice-bench: cannot read %s: %s\n", o->prompts_file, strerror(errno)), -1;
    char *line = NULL;
    size_t line_cap = 0, cap = 0, lineno = 0;
    ssize_t n;
    int rc = 0;
    while (!rc && (n = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        size_t k = 0;
        while (k < (size_t)n && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r' || line[k] == '\n')) k++;
        if (k == (size_t)n) continue;
        json_error_t je;
        char why[200];
        json_t *root = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, &je);
        if (!root) snprintf(why, sizeof why, "bad JSON at column %d: %s", je.column, je.text);
        if (!root || lg_prompt_add_line(o, root, &cap, why, sizeof why)) {
            fprintf(stderr, "sluice-bench: %s:%zu: %s\n", o->prompts_file, lineno, why);
            rc = -1;
        }
        json_decref(root);
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "sluice-bench: cannot read %s: %s\n", o->prompts_file, strerror(errno));
        rc = -1;
    }
    if (!rc && !o->n_prompts) {
        fprintf(stderr, "sluice-bench: %s holds no prompts\n", o->prompts_file);
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

/* POSTs req (consumed) as JSON to path of t and parses the 200 answer into *resp; anything else is an error that
 * names the endpoint and quotes the server's message. */
static int lg_post_json(const lg_opts *o, const lg_target *t, const char *path, json_t *req, json_t **resp) {
    *resp = NULL;
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) return fprintf(stderr, "sluice-bench: out of memory\n"), -1;
    int status;
    char *ans;
    int rc = lg_http_sync(o, t, path, body, &status, &ans);
    free(body);
    if (rc) return -1;
    json_t *root = json_loads(ans, 0, NULL);
    if (status != 200 || !root) {
        json_t *m = json_object_get(json_object_get(root, "error"), "message");
        fprintf(stderr, "sluice-bench: %s: POST %s: HTTP %d: %.200s\n", t->url, path, status,
                json_is_string(m) ? json_string_value(m) : ans);
        json_decref(root);
        free(ans);
        return -1;
    }
    free(ans);
    *resp = root;
    return 0;
}

/* /tokenize of text; *ids gets the "tokens" array (a new reference), *count its length. */
static int lg_tokenize(const lg_opts *o, const lg_target *t, const char *text, int add_special, json_t **ids,
                       size_t *count) {
    json_t *req = json_pack("{s:s, s:b}", "prompt", text, "add_special_tokens", add_special);
    if (req && t->model[0]) json_object_set_new(req, "model", json_string(t->model));
    json_t *resp;
    if (lg_post_json(o, t, "/tokenize", req, &resp)) return -1;
    json_t *tok = json_object_get(resp, "tokens");
    if (!json_is_array(tok)) {
        fprintf(stderr, "sluice-bench: %s: /tokenize answered without a \"tokens\" array\n", t->url);
        json_decref(resp);
        return -1;
    }
    *ids = json_incref(tok);
    *count = json_array_size(tok);
    json_decref(resp);
    return 0;
}

/* The source of text prompts: ordinary English prose, so the windows cut from it tokenize like real prompts.
 * It is repeated as often as the longest prompt needs. */
static const char lg_corpus[] =
    "The river town woke slowly that spring. Boats came down from the hills loaded with timber and wool, and "
    "the market square filled with voices long before the church bell rang eight. Anna kept the small bakery "
    "by the bridge, where the smell of bread drifted over the water and drew the boatmen in for something warm. "
    "Her brother mended nets on the quay and told anyone who would listen about the great flood of his youth, "
    "when the water rose above the second step of the town hall and the mayor rowed to his office. Children "
    "chased each other between the stalls, merchants argued about the price of salt, and an old dog slept in "
    "the only patch of sunlight that reached the cobbles. In the afternoon clouds gathered over the western "
    "ridge, the wind turned cold, and people began to pack their goods into carts. By evening the square was "
    "empty again, the lamps were lit one by one, and the river carried the last light of the day toward the sea. ";

/* --prompt-text-tokens: before the clock starts, tokenize the corpus once, then build each distinct prompt from a
 * random window of ids (its first --shared-prefix ids common to all), detokenize it, and check the text's length
 * with /tokenize as /v1/completions will count it (special tokens included). Windows can merge or split at
 * their edges when the text is tokenized again, so a prompt whose length misses is rebuilt from another window,
 * LG_TEXT_TRIES times at most, keeping the closest. Built against the first target: in compare mode both servers
 * get the same texts, which is what a comparison needs. */
static int lg_prompts_build_text(lg_opts *o, const lg_target *t, size_t n_prompts) {
    int rc = -1;
    char *text = NULL;
    json_t *ids = NULL, *with_special = NULL;
    size_t n_ids = 0, n_ws = 0, n_exact = 0;
    int worst = 0;
    uint64_t rng = o->seed ^ 0x7E57ull; /* its own stream: text prompts do not shift arrivals */
    /* how many copies of the corpus the longest prompt needs, from one tokenization of one copy (+1 for the
     * window's freedom to start anywhere) */
    if (lg_tokenize(o, t, lg_corpus, 0, &ids, &n_ids)) goto out;
    if (lg_tokenize(o, t, lg_corpus, 1, &with_special, &n_ws)) goto out;
    int n_special = n_ws > n_ids ? (int)(n_ws - n_ids) : 0; /* BOS and the like that /tokenize adds */
    size_t copies = n_ids ? (size_t)o->prompt_max / n_ids + 2 : 0;
    if (!n_ids) {
        fprintf(stderr, "sluice-bench: %s: /tokenize gave no tokens for the corpus\n", t->url);
        goto out;
    }
    if (copies > 1) {
        size_t cl = strlen(lg_corpus);
        text = malloc(copies * cl + 1);
        if (!text) goto oom;
        for (size_t i = 0; i < copies; i++) memcpy(text + i * cl, lg_corpus, cl);
        text[copies * cl] = 0;
        json_decref(ids);
        ids = NULL;
        if (lg_tokenize(o, t, text, 0, &ids, &n_ids)) goto out;
    }
    o->prompts = calloc(n_prompts, sizeof *o->prompts);
    if (!o->prompts) goto oom;
    for (size_t k = 0; k < n_prompts; k++) {
        int want = o->prompt_min == o->prompt_max ? o->prompt_min : lg_rng_range(&rng, o->prompt_min, o->prompt_max + 1);
        int w = want - n_special > 0 ? want - n_special : 1;       /* ids in the window */
        int pre = o->shared_prefix < w ? o->shared_prefix : w;     /* of which common to all prompts */
        json_t *best = NULL;
        int best_off = 0;
        if (n_ids < (size_t)w) {
            fprintf(stderr, "sluice-bench: %s: the corpus tokenized to %zu ids, fewer than %d\n", t->url, n_ids, w);
            goto out;
        }
        for (int tries = 0; tries < LG_TEXT_TRIES; tries++) {
            size_t span = n_ids - (size_t)(w - pre) - (size_t)pre + 1; /* window starts after the prefix */
            size_t start = (size_t)pre + lg_rng_next(&rng) % span;
            json_t *win = json_array();
            for (int i = 0; i < w; i++)
                json_array_append(win, json_array_get(ids, i < pre ? (size_t)i : start + (size_t)(i - pre)));
            json_t *req = json_pack("{s:o}", "tokens", win);
            if (req && t->model[0]) json_object_set_new(req, "model", json_string(t->model));
            json_t *resp, *re_ids;
            size_t got;
            if (lg_post_json(o, t, "/detokenize", req, &resp)) {
                json_decref(best);
                goto out;
            }
            json_t *pt = json_incref(json_object_get(resp, "prompt"));
            json_decref(resp);
            if (!json_is_string(pt) || lg_tokenize(o, t, json_string_value(pt), 1, &re_ids, &got)) {
                if (!json_is_string(pt)) fprintf(stderr, "sluice-bench: %s: /detokenize gave no \"prompt\"\n", t->url);
                json_decref(pt);
                json_decref(best);
                goto out;
            }
            json_decref(re_ids);
            int off = (int)got - want;
            if (!best || abs(off) < abs(best_off)) {
                json_decref(best);
                best = pt;
                best_off = off;
            } else {
                json_decref(pt);
            }
            if (!off) break;
        }
        o->prompts[k].prompt = best;
        o->n_prompts++;
        n_exact += !best_off;
        if (abs(best_off) > abs(worst)) worst = best_off;
    }
    fprintf(stderr, "sluice-bench: built %zu text prompt%s with /tokenize: %zu of exact length%s", n_prompts,
            n_prompts == 1 ? "" : "s", n_exact, n_exact == n_prompts ? "\n" : "");
    if (n_exact != n_prompts) fprintf(stderr, ", the others off by %+d tokens at most\n", worst);
    rc = 0;
    goto out;
oom:
    fprintf(stderr, "sluice-bench: out of memory\n");
out:
    free(text);
    json_decref(ids);
    json_decref(with_special);
    return rc;
}

static void lg_prompts_free(lg_opts *o) {
    for (size_t i = 0; i < o->n_prompts; i++) {
        json_decref(o->prompts[i].prompt);
        json_decref(o->prompts[i].messages);
    }
    free(o->prompts);
    o->prompts = NULL;
    o->n_prompts = 0;
}

/* ---- recording ---------------------------------------------------------------------------------------------- */

static void lg_level_error(lg_level *l, int code, const char *msg) {
    for (int i = 0; i < l->n_err_kinds; i++)
        if (l->err_code[i] == code) {
            l->err_count[i]++;
            return;
        }
    if (l->n_err_kinds == LG_MAX_ERR_KINDS) {
        l->err_other++;
        return;
    }
    int i = l->n_err_kinds++;
    l->err_code[i] = code;
    l->err_count[i] = 1;
    snprintf(l->err_msg[i], sizeof l->err_msg[i], "%s", msg ? msg : "");
}

static int lg_level_push(lg_level *l, const lg_sample *s) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        lg_sample *p = realloc(l->s, cap * sizeof *p);
        if (!p) return -1;
        l->s = p;
        l->cap = cap;
    }
    l->s[l->n++] = *s;
    return 0;
}

static const char *lg_err_name(int code) {
    switch (code) {
    case LG_ERR_CONNECT: return "connect";
    case LG_ERR_CLOSED: return "closed";
    case LG_ERR_TIMEOUT: return "timeout";
    case LG_ERR_PROTOCOL: return "protocol";
    case LG_ERR_STREAM: return "stream-error";
    default: return NULL;
    }
}

/* ---- the request path ----------------------------------------------------------------------------------------- */

static void lg_conn_start(lg_conn *c);
static void lg_conn_close(lg_conn *c);
static void lg_phase_maybe_done(lg_bench *b);
static void lg_dispatch(lg_bench *b, uint64_t t_start);

static int lg_can_issue(lg_bench *b) {
    if (b->target_n >= 0) return b->issued < b->target_n;
    return uv_hrtime() < b->t_deadline;
}

/* The request body: the next prepared prompt (file or text built to length), else a generated one of exact length
 * as token ids (completions) or words (chat). *chat says which endpoint it is for. Caller frees. */
static char *lg_body_build(lg_bench *b, int *chat) {
    lg_opts *o = b->o;
    int n = o->prompt_min == o->prompt_max ? o->prompt_min : lg_rng_range(&b->rng_prompt, o->prompt_min, o->prompt_max + 1);
    int max_tokens = o->max_tokens;
    json_t *root = json_object();
    *chat = o->chat;
    if (b->t->model[0]) json_object_set_new(root, "model", json_string(b->t->model));
    if (o->n_prompts) {
        const lg_prompt *p = &o->prompts[b->next_prompt++ % o->n_prompts];
        if (p->max_tokens) max_tokens = p->max_tokens;
        if (p->messages) {
            *chat = 1;
            json_object_set(root, "messages", p->messages);
        } else if (o->chat) { /* a string, checked when the file was read */
            json_object_set_new(root, "messages", json_pack("[{s:s, s:O}]", "role", "user", "content", p->prompt));
        } else {
            json_object_set(root, "prompt", p->prompt);
        }
    } else if (o->chat) {
        /* Words of one token in most BPE vocabularies; the measured prompt length comes back in usage. */
        static const char *const words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to",
                                            "big", "red", "sun", "sky", "blue", "tree", "house", "bird", "sea", "day"};
        size_t nw = sizeof words / sizeof words[0];
        char *text = NULL;
        size_t tn = 0, tc = 0;
        for (int i = 0; i < n; i++) {
            const char *w = words[i < o->shared_prefix ? (size_t)i % nw : lg_rng_next(&b->rng_prompt) % nw];
            if ((i && lg_buf_append(&text, &tn, &tc, " ", 1)) || lg_buf_append(&text, &tn, &tc, w, strlen(w))) {
                free(text);
                json_decref(root);
                return NULL;
            }
        }
        json_object_set_new(root, "messages", json_pack("[{s:s, s:s}]", "role", "user", "content", text ? text : ""));
        free(text);
    } else {
        json_t *ids = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(ids, json_integer(i < o->shared_prefix ? b->prefix_ids[i]
                                                                          : lg_rng_range(&b->rng_prompt, o->vocab_lo, o->vocab_hi)));
        json_object_set_new(root, "prompt", ids);
    }
    json_object_set_new(root, "max_tokens", json_integer(max_tokens));
    if (o->ignore_eos) json_object_set_new(root, "ignore_eos", json_true()); /* vLLM's extension, widely copied */
    if (o->temperature >= 0) json_object_set_new(root, "temperature", json_real(o->temperature));
    json_object_set_new(root, "stream", json_true());
    json_object_set_new(root, "stream_options", json_pack("{s:b}", "include_usage", 1));
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

/* The measured sample of a successful request on c that ended at now_ns. TPOT counts output tokens from the
 * usage chunk (a chunk may carry several); without usage it falls back to the chunks seen. */
static lg_sample lg_sample_make(const lg_conn *c, uint64_t now_ns) {
    lg_sample s;
    int toks = c->got_usage ? c->completion_tokens : c->n_chunks;
    s.status = 200;
    s.e2e_ms = (double)(now_ns - c->t_start) / 1e6;
    s.ttft_ms = c->n_chunks ? (double)(c->t_first - c->t_start) / 1e6 : s.e2e_ms;
    s.tpot_ms = toks > 1 ? (s.e2e_ms - s.ttft_ms) / (toks - 1) : NAN;
    s.prompt_tokens = c->got_usage ? c->prompt_tokens : -1;
    s.completion_tokens = toks;
    return s;
}

/* The request on c is over (success or not): record it, then hand c its next request or free it. */
static void lg_req_finish(lg_conn *c, int status, const char *msg) {
    lg_bench *b = c->b;
    uint64_t now = status == 200 && c->t_read ? c->t_read : uv_hrtime();
    uv_timer_stop(&c->timer);
    c->active = 0;
    b->in_flight--;
    if (!c->warm) {
        lg_level *l = b->lvl;
        if (status == 200) {
            lg_sample s = lg_sample_make(c, now);
            if (lg_level_push(l, &s)) fprintf(stderr, "sluice-bench: out of memory recording a sample\n");
            for (size_t i = 0; i < c->gaps.n; i++)
                if (lg_dbuf_push(&l->itl, c->gaps.v[i])) {
                    fprintf(stderr, "sluice-bench: out of memory recording a gap\n");
                    break;
                }
        } else {
            lg_sample s = {NAN, NAN, NAN, -1, 0, status};
            lg_level_error(l, status, msg);
            if (lg_level_push(l, &s)) fprintf(stderr, "sluice-bench: out of memory recording a sample\n");
        }
        if (now > l->t_end) l->t_end = now;
    }
    /* next request for this connection */
    if (b->closed_loop) {
        if (lg_can_issue(b)) {
            b->issued++;
            b->in_flight++;
            c->t_start = uv_hrtime();
            lg_conn_start(c);
        }
    } else if (b->pend_n) {
        uint64_t t = b->pending[b->pend_head];
        b->pend_head = (b->pend_head + 1) % b->pend_cap;
        b->pend_n--;
        c->t_start = t;
        lg_conn_start(c);
    } else {
        b->free_stack[b->n_free++] = (int)(c - b->conns);
    }
    lg_phase_maybe_done(b);
}

/* One SSE event's data. */
static void lg_sse_event(lg_conn *c, const char *data, size_t len) {
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        c->got_done = 1;
        return;
    }
    json_error_t je;
    json_t *o = json_loadb(data, len, 0, &je);
    if (!o) {
        if (!c->err) {
            c->err = LG_ERR_PROTOCOL;
            snprintf(c->err_msg, sizeof c->err_msg, "bad JSON in SSE event: %.100s", je.text);
        }
        return;
    }
    json_t *err = json_object_get(o, "error");
    if (err && !c->err) {
        json_t *m = json_object_get(err, "message");
        c->err = LG_ERR_STREAM;
        snprintf(c->err_msg, sizeof c->err_msg, "%s", json_is_string(m) ? json_string_value(m) : "error event");
    }
    json_t *u = json_object_get(o, "usage");
    if (json_is_object(u)) {
        c->got_usage = 1;
        c->completion_tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
        c->prompt_tokens = (int)json_integer_value(json_object_get(u, "prompt_tokens"));
    }
    /* A chunk counts when it carries text: the role-only first chunk of chat and the empty chunk that only
     * gives finish_reason carry no token, and counting the latter would add a near-zero gap per request. */
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    json_t *text = c->chat ? json_object_get(json_object_get(ch, "delta"), "content") : json_object_get(ch, "text");
    if (json_is_string(text) && json_string_length(text)) {
        if (!c->n_chunks) c->t_first = c->t_read;
        else if (!c->warm && lg_dbuf_push(&c->gaps, (double)(c->t_read - c->t_last) / 1e6))
            fprintf(stderr, "sluice-bench: out of memory recording a gap\n");
        c->t_last = c->t_read;
        c->n_chunks++;
    }
    json_decref(o);
}

/* Feeds body bytes to the SSE parser: lines end in \n (an optional \r before it is dropped), an empty line
 * ends an event; bytes of an unfinished line wait in c->sse for the next read. */
static int lg_sse_feed(lg_conn *c, const char *at, size_t len) {
    if (lg_buf_append(&c->sse, &c->sse_n, &c->sse_cap, at, len)) return -1;
    size_t start = 0;
    for (;;) {
        char *nl = memchr(c->sse + start, '\n', c->sse_n - start);
        if (!nl) break;
        size_t end = (size_t)(nl - c->sse);
        size_t l = end - start;
        const char *line = c->sse + start;
        if (l && line[l - 1] == '\r') l--;
        if (!l) {
            if (c->ev_n) lg_sse_event(c, c->ev, c->ev_n);
            c->ev_n = 0;
        } else if (l >= 5 && !memcmp(line, "data:", 5)) {
            const char *d = line + 5;
            size_t dl = l - 5;
            if (dl && *d == ' ') d++, dl--;
            if ((c->ev_n && lg_buf_append(&c->ev, &c->ev_n, &c->ev_cap, "\n", 1)) ||
                lg_buf_append(&c->ev, &c->ev_n, &c->ev_cap, d, dl))
                return -1;
        } /* other fields (event:, id:, comments) are not used by OpenAI streams */
        start = end + 1;
    }
    memmove(c->sse, c->sse + start, c->sse_n - start);
    c->sse_n -= start;
    return 0;
}

static int lg_on_headers(llhttp_t *p) {
    lg_conn *c = p->data;
    c->status = p->status_code;
    return 0;
}

static int lg_on_body(llhttp_t *p, const char *at, size_t len) {
    lg_conn *c = p->data;
    if (!c->active) return 0; /* nothing asked for this: ignored, the connection is closed after */
    if (c->status == 200) return lg_sse_feed(c, at, len) ? -1 : 0;
    size_t room = LG_ERR_BODY_MAX - c->errbody_n;
    if (len > room) len = room;
    memcpy(c->errbody + c->errbody_n, at, len);
    c->errbody_n += len;
    c->errbody[c->errbody_n] = 0;
    return 0;
}

static int lg_on_message_complete(llhttp_t *p) {
    lg_conn *c = p->data;
    c->msg_done = 1;
    c->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED; /* handled after llhttp_execute returns, outside the parser */
}

static const llhttp_settings_t *lg_settings(void) {
    static llhttp_settings_t s;
    static int init;
    if (!init) {
        llhttp_settings_init(&s);
        s.on_headers_complete = lg_on_headers;
        s.on_body = lg_on_body;
        s.on_message_complete = lg_on_message_complete;
        init = 1;
    }
    return &s;
}

/* The response on c is complete: decide success, then keep or close the connection. */
static void lg_conn_response_done(lg_conn *c) {
    c->served++;
    int status = c->status;
    char msg[200] = "";
    if (status != 200) {
        json_t *o = json_loadb(c->errbody, c->errbody_n, 0, NULL);
        json_t *m = json_object_get(json_object_get(o, "error"), "message");
        lg_copy(msg, sizeof msg, json_is_string(m) ? json_string_value(m) : c->errbody);
        json_decref(o);
    } else if (c->err) {
        status = c->err;
        snprintf(msg, sizeof msg, "%s", c->err_msg);
    } else if (!c->got_done && !c->got_usage) {
        status = LG_ERR_PROTOCOL;
        snprintf(msg, sizeof msg, "stream ended without usage or [DONE]");
    }
    c->msg_done = 0;
    if (!c->keep_alive) lg_conn_close(c);
    else c->state = LG_IDLE;
    lg_req_finish(c, status, msg);
}

static void lg_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    lg_conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void lg_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    lg_conn *c = s->data;
    if (nread == 0) return;
    c->t_read = uv_hrtime();
    if (nread < 0) {
        if (c->active && nread == UV_EOF && (llhttp_finish(&c->parser), c->msg_done)) {
            c->keep_alive = 0;
            lg_conn_response_done(c);
        } else if (c->active && c->served > 0 && c->status == 0) {
            /* A reused keep-alive connection the server closed before answering (its idle close crossed our
             * request, or it closes after every response): nothing was processed, so send again on a fresh
             * connection, as HTTP clients do. A fresh connection failing the same way is an error (below). */
            c->active = 0;
            c->want_send = 1;
            lg_conn_close(c);
        } else if (c->active) {
            char m[120];
            snprintf(m, sizeof m, "connection lost: %s", uv_strerror((int)nread));
            lg_conn_close(c);
            lg_req_finish(c, LG_ERR_CLOSED, m);
        } else {
            lg_conn_close(c); /* the server closed an idle keep-alive connection */
        }
        return;
    }
    size_t off = 0, n = (size_t)nread;
    while (off < n) {
        llhttp_errno_t e = llhttp_execute(&c->parser, buf->base + off, n - off);
        if (e == HPE_PAUSED) {
            off = (size_t)(llhttp_get_error_pos(&c->parser) - buf->base);
            llhttp_resume(&c->parser);
            if (c->active && c->msg_done) {
                lg_conn_response_done(c);
                if (c->state != LG_IDLE && c->state != LG_BUSY) return;
            }
            if (!c->active && off < n) { /* bytes nobody asked for */
                lg_conn_close(c);
                return;
            }
            continue;
        }
        if (e != HPE_OK) {
            char m[160];
            snprintf(m, sizeof m, "bad HTTP response: %s", llhttp_get_error_reason(&c->parser));
            lg_conn_close(c);
            if (c->active) lg_req_finish(c, LG_ERR_PROTOCOL, m);
            return;
        }
        break;
    }
}

static void lg_write_cb(uv_write_t *w, int status) {
    lg_conn *c = w->handle->data;
    free(w->data);
    free(w);
    if (status && c->active && c->state == LG_BUSY) {
        char m[120];
        snprintf(m, sizeof m, "write failed: %s", uv_strerror(status));
        lg_conn_close(c);
        lg_req_finish(c, LG_ERR_CLOSED, m);
    }
}

static void lg_timeout_cb(uv_timer_t *t) {
    lg_conn *c = t->data;
    if (!c->active) return;
    lg_conn_close(c);
    lg_req_finish(c, LG_ERR_TIMEOUT, "request timed out (--timeout)");
}

/* Sends the request c->want_send asks for; c is connected and idle. */
static void lg_conn_send(lg_conn *c) {
    lg_bench *b = c->b;
    lg_opts *o = b->o;
    c->want_send = 0;
    c->active = 1;
    c->warm = b->warm;
    c->n_chunks = c->got_usage = c->got_done = c->prompt_tokens = c->completion_tokens = c->status = c->err = 0;
    c->t_first = c->t_last = c->t_read = 0;
    c->sse_n = c->ev_n = c->errbody_n = c->gaps.n = 0;
    c->msg_done = 0;
    c->state = LG_BUSY;
    uv_timer_start(&c->timer, lg_timeout_cb, (uint64_t)(o->timeout_s * 1000.0), 0);
    char *body = lg_body_build(b, &c->chat);
    const char *path = c->chat ? b->t->path_chat : b->t->path;
    char *msg = NULL;
    size_t len = 0;
    if (body) {
        static const char fmt[] = "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                                  "Accept: text/event-stream\r\n%s%s%sContent-Length: %zu\r\n\r\n";
        const char *auth = o->api_key ? "Authorization: Bearer " : "", *key = o->api_key ? o->api_key : "";
        const char *eol = o->api_key ? "\r\n" : "";
        size_t blen = strlen(body);
        int hn = snprintf(NULL, 0, fmt, path, b->t->host, b->t->port, auth, key, eol, blen);
        msg = hn > 0 ? malloc((size_t)hn + blen + 1) : NULL;
        if (msg) {
            snprintf(msg, (size_t)hn + 1, fmt, path, b->t->host, b->t->port, auth, key, eol, blen);
            memcpy(msg + hn, body, blen + 1);
            len = (size_t)hn + blen;
        }
        free(body);
    }
    uv_write_t *w = msg ? malloc(sizeof *w) : NULL;
    if (w) {
        uv_buf_t buf = uv_buf_init(msg, (unsigned)len);
        w->data = msg; /* freed in lg_write_cb */
        if (uv_write(w, (uv_stream_t *)&c->tcp, &buf, 1, lg_write_cb) == 0) return;
    }
    free(w);
    free(msg);
    lg_conn_close(c);
    lg_req_finish(c, LG_ERR_PROTOCOL, "could not build or write the request");
}

static void lg_connect_cb(uv_connect_t *req, int status) {
    lg_conn *c = req->data;
    if (c->state != LG_CONNECTING) return;
    if (status) {
        char m[120];
        snprintf(m, sizeof m, "connect: %s", uv_strerror(status));
        c->want_send = 0;
        c->active = 1; /* so the failure is recorded as this request's */
        c->warm = c->b->warm;
        lg_conn_close(c);
        lg_req_finish(c, LG_ERR_CONNECT, m);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = LG_IDLE;
    uv_read_start((uv_stream_t *)&c->tcp, lg_alloc_cb, lg_read_cb);
    if (c->want_send) lg_conn_send(c);
}

static void lg_conn_open(lg_conn *c) {
    lg_bench *b = c->b;
    uv_tcp_init(b->loop, &c->tcp);
    c->tcp.data = c;
    c->connect_req.data = c;
    llhttp_init(&c->parser, HTTP_RESPONSE, lg_settings());
    c->parser.data = c;
    c->served = 0;
    c->state = LG_CONNECTING;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&b->t->addr, lg_connect_cb);
    if (rc) {
        /* a failed connect call leaves an initialized handle that must still be closed (state CONNECTING) */
        char m[120];
        snprintf(m, sizeof m, "connect: %s", uv_strerror(rc));
        c->want_send = 0;
        c->active = 1;
        c->warm = b->warm;
        lg_conn_close(c);
        lg_req_finish(c, LG_ERR_CONNECT, m);
    }
}

static void lg_close_cb(uv_handle_t *h) {
    lg_conn *c = h->data;
    c->state = LG_CLOSED;
    if (c->want_send) lg_conn_open(c);
}

static void lg_conn_close(lg_conn *c) {
    if (c->state == LG_CLOSED || c->state == LG_CLOSING) return;
    uv_timer_stop(&c->timer);
    c->state = LG_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, lg_close_cb);
}

/* Starts the request asked for by want_send on c, opening the connection when needed. */
static void lg_conn_start(lg_conn *c) {
    c->want_send = 1;
    if (c->state == LG_IDLE) lg_conn_send(c);
    else if (c->state == LG_CLOSED) lg_conn_open(c);
    /* CLOSING: lg_close_cb reopens; CONNECTING: lg_connect_cb sends */
}

/* ---- phases ----------------------------------------------------------------------------------------------------- */

/* Open loop: one arrival at t_start goes to an idle connection, or waits for one. */
static void lg_dispatch(lg_bench *b, uint64_t t_start) {
    b->issued++;
    b->in_flight++;
    if (b->n_free) {
        lg_conn *c = &b->conns[b->free_stack[--b->n_free]];
        c->t_start = t_start;
        lg_conn_start(c);
        return;
    }
    if (b->pend_n == b->pend_cap) {
        size_t cap = b->pend_cap ? b->pend_cap * 2 : 1024;
        uint64_t *p = malloc(cap * sizeof *p);
        if (!p) {
            b->in_flight--;
            lg_level_error(b->lvl, LG_ERR_PROTOCOL, "out of memory queueing an arrival");
            return;
        }
        for (size_t i = 0; i < b->pend_n; i++) p[i] = b->pending[(b->pend_head + i) % (b->pend_cap ? b->pend_cap : 1)];
        free(b->pending);
        b->pending = p;
        b->pend_head = 0;
        b->pend_cap = cap;
    }
    b->pending[(b->pend_head + b->pend_n) % b->pend_cap] = t_start;
    b->pend_n++;
}

static void lg_arrival_cb(uv_timer_t *t) {
    lg_bench *b = t->data;
    uint64_t now = uv_hrtime();
    while (b->next_arrival <= now && lg_can_issue(b)) {
        lg_dispatch(b, b->next_arrival);
        b->next_arrival += (uint64_t)(-log(lg_rng_unit(&b->rng_arrival)) / b->lvl->rate * 1e9);
    }
    if (lg_can_issue(b)) {
        uint64_t wait_ms = (b->next_arrival - now + 999999) / 1000000; /* rounded up: never wake early */
        uv_timer_start(&b->arrival_timer, lg_arrival_cb, wait_ms, 0);
    } else {
        lg_phase_maybe_done(b);
    }
}

static void lg_phase_maybe_done(lg_bench *b) {
    if (b->in_flight == 0 && b->pend_n == 0 && !lg_can_issue(b)) {
        uv_timer_stop(&b->arrival_timer);
        uv_stop(b->loop);
    }
}

/* Runs one phase of level l to its end: n requests (n >= 0) or until the duration has passed. */
static void lg_phase_run(lg_bench *b, lg_level *l, int warm, int n) {
    lg_opts *o = b->o;
    b->lvl = l;
    b->warm = warm;
    b->target_n = n;
    b->issued = b->in_flight = 0;
    b->closed_loop = l->rate <= 0;
    uint64_t now = uv_hrtime();
    b->t_deadline = now + (uint64_t)(o->duration_s * 1e9);
    if (!warm) l->t_begin = l->t_end = now;
    if (b->closed_loop) {
        int k = l->concurrency < b->n_conns ? l->concurrency : b->n_conns;
        for (int i = 0; i < k && lg_can_issue(b); i++) {
            b->issued++;
            b->in_flight++;
            b->conns[i].t_start = uv_hrtime();
            lg_conn_start(&b->conns[i]);
        }
    } else {
        b->n_free = 0;
        for (int i = b->n_conns - 1; i >= 0; i--) b->free_stack[b->n_free++] = i;
        b->next_arrival = now;
        uv_timer_start(&b->arrival_timer, lg_arrival_cb, 0, 0);
    }
    if (b->in_flight || lg_can_issue(b)) uv_run(b->loop, UV_RUN_DEFAULT);
    if (!warm) l->busy_ns += l->t_end - l->t_begin;
}

/* ---- reporting ---------------------------------------------------------------------------------------------- */

typedef struct lg_result {
    int ok, err;
    double duration_s, req_per_s, out_tok_per_s, goodput_req_per_s, goodput_frac;
    long long prompt_tokens, completion_tokens;
    int prompt_min, prompt_max;
    lg_summary ttft, tpot, itl, e2e;
} lg_result;

static lg_result lg_level_result(lg_level *l, const lg_opts *o) {
    lg_result r;
    memset(&r, 0, sizeof r);
    size_t n = l->n;
    double *v = malloc((n ? n : 1) * sizeof *v);
    r.prompt_min = -1;
    int good = 0;
    for (size_t i = 0; i < n; i++) {
        const lg_sample *s = &l->s[i];
        if (s->status != 200) {
            r.err++;
            continue;
        }
        r.ok++;
        r.completion_tokens += s->completion_tokens;
        if (s->prompt_tokens >= 0) {
            r.prompt_tokens += s->prompt_tokens;
            if (r.prompt_min < 0 || s->prompt_tokens < r.prompt_min) r.prompt_min = s->prompt_tokens;
            if (s->prompt_tokens > r.prompt_max) r.prompt_max = s->prompt_tokens;
        }
        int ok_ttft = o->slo_ttft_ms <= 0 || s->ttft_ms <= o->slo_ttft_ms;
        int ok_tpot = o->slo_tpot_ms <= 0 || isnan(s->tpot_ms) || s->tpot_ms <= o->slo_tpot_ms;
        good += ok_ttft && ok_tpot;
    }
    r.duration_s = (double)l->busy_ns / 1e9;
    if (r.duration_s > 0) {
        r.req_per_s = r.ok / r.duration_s;
        r.out_tok_per_s = (double)r.completion_tokens / r.duration_s;
        r.goodput_req_per_s = good / r.duration_s;
    }
    r.goodput_frac = n ? (double)good / (double)n : 0;
    if (v) {
        size_t m;
#define LG_COLLECT(field, dst)                                                                                      \
    m = 0;                                                                                                          \
    for (size_t i = 0; i < n; i++)                                                                                  \
        if (l->s[i].status == 200) v[m++] = l->s[i].field;                                                          \
    dst = lg_summarize(v, m);
        LG_COLLECT(ttft_ms, r.ttft)
        LG_COLLECT(tpot_ms, r.tpot)
        LG_COLLECT(e2e_ms, r.e2e)
#undef LG_COLLECT
        free(v);
    }
    r.itl = lg_summarize(l->itl.v, l->itl.n);
    return r;
}

static json_t *lg_summary_json(lg_summary s) {
    if (!s.n) return json_null();
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:I}", "mean", s.mean, "p50", s.p50, "p90", s.p90, "p99", s.p99, "max", s.max,
                     "n", (json_int_t)s.n);
}

static void lg_fmt_level(char *out, size_t n, const lg_level *l) {
    if (l->rate > 0) snprintf(out, n, "rate %g", l->rate);
    else snprintf(out, n, "c=%d", l->concurrency);
}

static void lg_print_summary_row(const char *name, lg_summary s) {
    if (!s.n) {
        printf("  %-10s %10s\n", name, "-");
        return;
    }
    printf("  %-10s %10.2f %10.2f %10.2f %10.2f %10.2f %8zu\n", name, s.mean, s.p50, s.p90, s.p99, s.max, s.n);
}

/* Table and details of one target's levels on stdout. */
static void lg_print_target(const lg_opts *o, const lg_target *t, const lg_level *levels, const lg_result *r,
                            int n_levels) {
    char plen[600];
    if (o->prompts_file) snprintf(plen, sizeof plen, "prompts %.500s (%zu)", o->prompts_file, o->n_prompts);
    else if (o->prompt_min == o->prompt_max) snprintf(plen, sizeof plen, "prompt %d tokens", o->prompt_min);
    else snprintf(plen, sizeof plen, "prompt %d-%d tokens", o->prompt_min, o->prompt_max);
    size_t n_msgs = 0; /* file prompts that go to chat/completions */
    for (size_t i = 0; i < o->n_prompts; i++) n_msgs += o->prompts[i].messages != NULL;
    const char *kind = o->chat || (n_msgs && n_msgs == o->n_prompts) ? "chat" : n_msgs ? "completions+chat" : "completions";
    printf("\nsluice-bench: %s  %s  model %s  %s%s  max_tokens %d%s\n", kind, t->url,
           t->model[0] ? t->model : "(none)", plen,
           o->prompts_file ? "" : o->text_prompts ? " (text via /tokenize)" : o->chat ? " (words)" : "", o->max_tokens,
           o->ignore_eos ? " (ignore_eos)" : "");
    printf("\n%-10s %6s %5s %9s %10s %9s %9s %9s %9s %9s %9s %8s\n", "load", "ok", "err", "req/s", "out tok/s",
           "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "E2E p50", "E2E p99", "goodput");
    for (int i = 0; i < n_levels; i++) {
        char name[32];
        lg_fmt_level(name, sizeof name, &levels[i]);
        printf("%-10s %6d %5d %9.2f %10.1f %9.1f %9.1f %9.2f %9.2f %9.1f %9.1f %7.0f%%\n", name, r[i].ok, r[i].err,
               r[i].req_per_s, r[i].out_tok_per_s, r[i].ttft.p50, r[i].ttft.p99, r[i].tpot.p50, r[i].tpot.p99, r[i].e2e.p50,
               r[i].e2e.p99, 100.0 * r[i].goodput_frac);
    }
    printf("(times in ms; goodput = share of requests meeting");
    if (o->slo_ttft_ms > 0) printf(" TTFT <= %g ms", o->slo_ttft_ms);
    if (o->slo_tpot_ms > 0) printf(" TPOT <= %g ms", o->slo_tpot_ms);
    if (o->slo_ttft_ms <= 0 && o->slo_tpot_ms <= 0) printf(" no objective: give --slo-ttft-ms/--slo-tpot-ms");
    printf(")\n");

    for (int i = 0; i < n_levels; i++) {
        char name[32];
        lg_fmt_level(name, sizeof name, &levels[i]);
        printf("\n[%s] %d ok, %d failed in %.2f s; %.2f req/s, %.1f output tok/s, goodput %.2f req/s\n", name, r[i].ok,
               r[i].err, r[i].duration_s, r[i].req_per_s, r[i].out_tok_per_s, r[i].goodput_req_per_s);
        if (r[i].ok)
            printf("  prompt tokens (from usage): mean %.1f, min %d, max %d; output tokens %lld\n",
                   r[i].prompt_min >= 0 ? (double)r[i].prompt_tokens / r[i].ok : NAN, r[i].prompt_min, r[i].prompt_max,
                   r[i].completion_tokens);
        printf("  %-10s %10s %10s %10s %10s %10s %8s\n", "ms", "mean", "p50", "p90", "p99", "max", "n");
        lg_print_summary_row("TTFT", r[i].ttft);
        lg_print_summary_row("TPOT", r[i].tpot);
        lg_print_summary_row("ITL(chunk)", r[i].itl);
        lg_print_summary_row("E2E", r[i].e2e);
        for (int k = 0; k < levels[i].n_err_kinds; k++) {
            const char *en = lg_err_name(levels[i].err_code[k]);
            if (en) printf("  error %-12s x%d: %s\n", en, levels[i].err_count[k], levels[i].err_msg[k]);
            else printf("  error HTTP %-7d x%d: %s\n", levels[i].err_code[k], levels[i].err_count[k], levels[i].err_msg[k]);
        }
        if (levels[i].err_other) printf("  error (other kinds) x%d\n", levels[i].err_other);
    }
}

static json_t *lg_levels_json(const lg_level *levels, const lg_result *r, int n_levels) {
    json_t *arr = json_array();
    for (int i = 0; i < n_levels; i++) {
        json_t *errs = json_object();
        for (int k = 0; k < levels[i].n_err_kinds; k++) {
            char key[32];
            const char *en = lg_err_name(levels[i].err_code[k]);
            if (en) snprintf(key, sizeof key, "%s", en);
            else snprintf(key, sizeof key, "%d", levels[i].err_code[k]);
            json_object_set_new(errs, key,
                                json_pack("{s:i, s:s}", "count", levels[i].err_count[k], "message", levels[i].err_msg[k]));
        }
        if (levels[i].err_other) json_object_set_new(errs, "other", json_pack("{s:i}", "count", levels[i].err_other));
        json_t *lv = json_pack("{s:i, s:f, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:I, s:I}", "concurrency",
                               levels[i].concurrency, "rate", levels[i].rate, "completed", r[i].ok, "failed", r[i].err,
                               "duration_s", r[i].duration_s, "request_throughput", r[i].req_per_s,
                               "output_token_throughput", r[i].out_tok_per_s, "goodput_req_per_s", r[i].goodput_req_per_s,
                               "goodput_fraction", r[i].goodput_frac, "total_prompt_tokens", (json_int_t)r[i].prompt_tokens,
                               "total_completion_tokens", (json_int_t)r[i].completion_tokens);
        json_object_set_new(lv, "prompt_tokens_min", json_integer(r[i].prompt_min));
        json_object_set_new(lv, "prompt_tokens_max", json_integer(r[i].prompt_max));
        json_object_set_new(lv, "ttft_ms", lg_summary_json(r[i].ttft));
        json_object_set_new(lv, "tpot_ms", lg_summary_json(r[i].tpot));
        json_object_set_new(lv, "itl_ms", lg_summary_json(r[i].itl));
        json_object_set_new(lv, "e2e_ms", lg_summary_json(r[i].e2e));
        json_object_set_new(lv, "errors", errs);
        json_array_append_new(arr, lv);
    }
    return arr;
}

/* Compare mode: the second target over the first, per level; NAN where either side has no value. */
#define LG_N_RATIOS 7
static void lg_ratios(const lg_result *a, const lg_result *b, double out[LG_N_RATIOS]) {
    double na[LG_N_RATIOS] = {a->req_per_s, a->out_tok_per_s, a->ttft.p50, a->ttft.p99, a->tpot.p50, a->tpot.p99, a->e2e.p50};
    double nb[LG_N_RATIOS] = {b->req_per_s, b->out_tok_per_s, b->ttft.p50, b->ttft.p99, b->tpot.p50, b->tpot.p99, b->e2e.p50};
    for (int k = 0; k < LG_N_RATIOS; k++) out[k] = na[k] > 0 && !isnan(nb[k]) ? nb[k] / na[k] : NAN;
}

static const char *const lg_ratio_names[LG_N_RATIOS] = {"request_throughput", "output_token_throughput", "ttft_p50",
                                                        "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p50"};

/* levels: [n_targets][n_levels] */
static int lg_report(const lg_opts *o, lg_level *const *levels, int n_levels) {
    static lg_result r[2][LG_MAX_LEVELS];
    for (int t = 0; t < o->n_targets; t++)
        for (int i = 0; i < n_levels; i++) r[t][i] = lg_level_result(&levels[t][i], o);
    for (int t = 0; t < o->n_targets; t++) lg_print_target(o, &o->tgt[t], levels[t], r[t], n_levels);
    if (o->n_targets == 2) {
        printf("\nratios %s / %s (%d alternating round%s per level; > 1 means the second is higher)\n", o->tgt[1].url,
               o->tgt[0].url, o->rounds, o->rounds > 1 ? "s" : "");
        printf("%-10s %9s %10s %9s %9s %9s %9s %9s\n", "load", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50",
               "TPOT p99", "E2E p50");
        for (int i = 0; i < n_levels; i++) {
            char name[32];
            double q[LG_N_RATIOS];
            lg_fmt_level(name, sizeof name, &levels[0][i]);
            lg_ratios(&r[0][i], &r[1][i], q);
            printf("%-10s %9.3f %10.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n", name, q[0], q[1], q[2], q[3], q[4], q[5], q[6]);
        }
    }
    fflush(stdout);

    int rc = 0;
    if (o->json_path) {
        json_t *root = json_pack("{s:s, s:s, s:s, s:b, s:i, s:i, s:i, s:i, s:b, s:i, s:f, s:f, s:f}", "tool", "sluice-bench",
                                 "url", o->tgt[0].url, "model", o->tgt[0].model, "chat", o->chat, "prompt_tokens_min",
                                 o->prompt_min, "prompt_tokens_max", o->prompt_max, "shared_prefix", o->shared_prefix,
                                 "max_tokens", o->max_tokens, "ignore_eos", o->ignore_eos, "warmup", o->warmup,
                                 "slo_ttft_ms", o->slo_ttft_ms, "slo_tpot_ms", o->slo_tpot_ms, "temperature", o->temperature);
        if (root) {
            json_object_set_new(root, "prompts_file", o->prompts_file ? json_string(o->prompts_file) : json_null());
            json_object_set_new(root, "prompt_text", json_boolean(o->text_prompts));
            json_object_set_new(root, "levels", lg_levels_json(levels[0], r[0], n_levels));
            if (o->n_targets == 2) {
                json_t *ratios = json_array();
                for (int i = 0; i < n_levels; i++) {
                    double q[LG_N_RATIOS];
                    lg_ratios(&r[0][i], &r[1][i], q);
                    json_t *ro = json_object();
                    for (int k = 0; k < LG_N_RATIOS; k++)
                        json_object_set_new(ro, lg_ratio_names[k], isnan(q[k]) ? json_null() : json_real(q[k]));
                    json_array_append_new(ratios, ro);
                }
                json_object_set_new(root, "rounds", json_integer(o->rounds));
                json_object_set_new(root, "compare", json_pack("{s:s, s:s, s:o}", "url", o->tgt[1].url, "model",
                                                               o->tgt[1].model, "levels",
                                                               lg_levels_json(levels[1], r[1], n_levels)));
                json_object_set_new(root, "ratios", ratios);
            }
        }
        if (!root || json_dump_file(root, o->json_path, JSON_INDENT(2))) {
            fprintf(stderr, "sluice-bench: cannot write %s\n", o->json_path);
            rc = -1;
        }
        json_decref(root);
    }
    if (o->csv_path) {
        FILE *f = fopen(o->csv_path, "w");
        if (!f) {
            fprintf(stderr, "sluice-bench: cannot write %s: %s\n", o->csv_path, strerror(errno));
            return -1;
        }
        fprintf(f, "url,concurrency,rate,completed,failed,duration_s,req_per_s,out_tok_per_s,goodput_req_per_s");
        static const char *const names[] = {"ttft", "tpot", "itl", "e2e"};
        for (int k = 0; k < 4; k++)
            fprintf(f, ",%s_mean,%s_p50,%s_p90,%s_p99,%s_max", names[k], names[k], names[k], names[k], names[k]);
        fprintf(f, "\n");
        for (int t = 0; t < o->n_targets; t++)
            for (int i = 0; i < n_levels; i++) {
                const lg_result *ri = &r[t][i];
                fprintf(f, "%s,%d,%g,%d,%d,%.4f,%.4f,%.3f,%.4f", o->tgt[t].url, levels[t][i].concurrency,
                        levels[t][i].rate, ri->ok, ri->err, ri->duration_s, ri->req_per_s, ri->out_tok_per_s,
                        ri->goodput_req_per_s);
                lg_summary ss[4] = {ri->ttft, ri->tpot, ri->itl, ri->e2e};
                for (int k = 0; k < 4; k++)
                    fprintf(f, ",%.3f,%.3f,%.3f,%.3f,%.3f", ss[k].mean, ss[k].p50, ss[k].p90, ss[k].p99, ss[k].max);
                fprintf(f, "\n");
            }
        if (fclose(f)) rc = -1;
    }
    return rc;
}

/* ---- self-test ------------------------------------------------------------------------------------------------ */

/* `sluice-bench --self-test`: the statistics and the SSE parser checked on known inputs, without a server (the
 * end-to-end test runs it; a standalone program has no unit-test archive to link against). */
static int lg_self_fail;

static void lg_check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "self-test FAILED: %s\n", what);
        lg_self_fail = 1;
    }
}

static int lg_near(double a, double b) { return fabs(a - b) <= 1e-9 * (fabs(b) > 1 ? fabs(b) : 1); }

static const char lg_test_stream[] =
    "data: {\"choices\":[{\"index\":0,\"text\":\" Once\",\"finish_reason\":null}]}\n\n"
    ": a comment line, ignored\n\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\" upon a\",\"finish_reason\":null}]}\r\n\r\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n"
    "data: [DONE]\n\n";

/* Feeds lg_test_stream in pieces of the given cut points into a fresh connection state; checks what it saw. */
static void lg_self_test_sse(lg_bench *b, const size_t *cuts, int n_cuts, const char *what) {
    lg_conn *c = calloc(1, sizeof *c);
    if (!c) return lg_check(0, "out of memory");
    c->b = b;
    c->active = 1;
    size_t len = sizeof lg_test_stream - 1, prev = 0;
    for (int i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        c->t_read = (uint64_t)(i + 1) * 1000000; /* each read 1 ms after the last */
        lg_check(lg_sse_feed(c, lg_test_stream + prev, end - prev) == 0, what);
        prev = end;
    }
    lg_check(c->n_chunks == 2 && c->got_usage && c->completion_tokens == 3 && c->prompt_tokens == 7 && c->got_done &&
                 !c->err && c->sse_n == 0,
             what);
    /* one gap, between the two chunks with text; the finish-only chunk adds none */
    lg_check(c->gaps.n == 1 && c->gaps.v[0] >= 0, what);
    free(c->gaps.v);
    free(c->sse);
    free(c->ev);
    free(c);
}

static int lg_self_test(void) {
    /* percentiles: numpy.percentile([1..10], [50, 90, 99]) = 5.5, 9.1, 9.91; NANs are dropped */
    double v[] = {7, 3, NAN, 10, 1, 9, 2, 8, 4, 6, 5};
    lg_summary s = lg_summarize(v, sizeof v / sizeof v[0]);
    lg_check(s.n == 10 && lg_near(s.mean, 5.5) && lg_near(s.p50, 5.5) && lg_near(s.p90, 9.1) && lg_near(s.p99, 9.91) &&
                 lg_near(s.max, 10),
             "percentiles of 1..10");
    double one[] = {4.0};
    s = lg_summarize(one, 1);
    lg_check(s.n == 1 && s.p50 == 4.0 && s.p99 == 4.0 && s.max == 4.0, "percentiles of one value");
    lg_check(lg_summarize(v, 0).n == 0, "percentiles of nothing");

    /* SSE: whole, split at every byte, and byte by byte */
    lg_opts o;
    memset(&o, 0, sizeof o);
    lg_level lvl;
    memset(&lvl, 0, sizeof lvl);
    lg_bench b;
    memset(&b, 0, sizeof b);
    b.o = &o;
    b.lvl = &lvl;
    lg_self_test_sse(&b, NULL, 0, "SSE stream in one read");
    size_t len = sizeof lg_test_stream - 1;
    for (size_t cut = 1; cut < len; cut++) lg_self_test_sse(&b, &cut, 1, "SSE stream split in two reads");
    size_t *every = malloc(len * sizeof *every);
    if (every) {
        for (size_t i = 0; i < len - 1; i++) every[i] = i + 1;
        lg_self_test_sse(&b, every, (int)len - 1, "SSE stream one byte per read");
        free(every);
    }

    /* TPOT from usage: TTFT 100 ms, end at 1000 ms, 10 tokens in 4 chunks -> (1000 - 100) / 9 = 100 ms */
    lg_conn c;
    memset(&c, 0, sizeof c);
    c.t_start = 5000000000ull;
    c.t_first = c.t_start + 100000000ull;
    c.n_chunks = 4;
    c.got_usage = 1;
    c.completion_tokens = 10;
    lg_sample smp = lg_sample_make(&c, c.t_start + 1000000000ull);
    lg_check(lg_near(smp.ttft_ms, 100) && lg_near(smp.e2e_ms, 1000) && lg_near(smp.tpot_ms, 100) &&
                 smp.completion_tokens == 10,
             "TPOT from usage");
    c.completion_tokens = 1;
    lg_check(isnan(lg_sample_make(&c, c.t_start + 1000000000ull).tpot_ms), "TPOT undefined for one token");

    /* goodput: objectives TTFT <= 200 ms and TPOT <= 50 ms; a failed request never counts */
    o.slo_ttft_ms = 200;
    o.slo_tpot_ms = 50;
    lg_sample ss[] = {{100, 40, 500, 8, 10, 200}, {300, 40, 700, 8, 10, 200}, {100, 60, 700, 8, 10, 200},
                      {150, 50, 600, 8, 10, 200}, {NAN, NAN, NAN, -1, 0, 503}};
    lvl.s = ss;
    lvl.n = sizeof ss / sizeof ss[0];
    lvl.busy_ns = 2000000000ull; /* 2 s */
    lg_result r = lg_level_result(&lvl, &o);
    lg_check(r.ok == 4 && r.err == 1 && lg_near(r.goodput_frac, 2.0 / 5) && lg_near(r.goodput_req_per_s, 1.0) &&
                 lg_near(r.req_per_s, 2.0) && r.completion_tokens == 40 && lg_near(r.out_tok_per_s, 20.0),
             "goodput and throughput");
    if (!lg_self_fail) printf("sluice-bench self-test: ok\n");
    return lg_self_fail;
}

/* ---- main ----------------------------------------------------------------------------------------------------- */

static void lg_walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Resolves and checks t, then allocates b's connections for the largest level. */
static int lg_bench_init(lg_bench *b, lg_opts *o, lg_target *t, uv_loop_t *loop) {
    memset(b, 0, sizeof *b);
    b->o = o;
    b->t = t;
    b->loop = loop;
    b->rng_prompt = o->seed; /* the same seed for every target: both servers of a comparison get the same prompts */
    b->rng_arrival = o->seed ^ 0x5DEECE66Dull; /* a second stream: arrivals do not shift the prompts */

    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(t->host, t->port, &hints, &ai);
    if (gai || !ai) {
        fprintf(stderr, "sluice-bench: cannot resolve '%s': %s\n", t->host, gai_strerror(gai));
        return -1;
    }
    memcpy(&t->addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (lg_preflight(b)) return -1;
    char path[sizeof t->path]; /* through a local: t->path and t->prefix share *t, which -Wrestrict flags */
    snprintf(path, sizeof path, "%s/v1/%s", t->prefix, o->chat ? "chat/completions" : "completions");
    lg_copy(t->path, sizeof t->path, path);
    snprintf(path, sizeof path, "%s/v1/chat/completions", t->prefix);
    lg_copy(t->path_chat, sizeof t->path_chat, path);

    int max_conc = 0, any_rate = 0;
    for (int i = 0; i < o->n_levels; i++) {
        if (o->level_conc[i] > max_conc) max_conc = o->level_conc[i];
        any_rate |= o->level_rate[i] > 0;
    }
    b->n_conns = any_rate && o->max_conns > max_conc ? o->max_conns : max_conc;
    b->conns = calloc((size_t)b->n_conns, sizeof *b->conns);
    b->free_stack = calloc((size_t)b->n_conns, sizeof *b->free_stack);
    b->prefix_ids = calloc((size_t)o->shared_prefix + 1, sizeof *b->prefix_ids);
    if (!b->conns || !b->free_stack || !b->prefix_ids) {
        fprintf(stderr, "sluice-bench: out of memory\n");
        return -1;
    }
    for (int i = 0; i < o->shared_prefix; i++) b->prefix_ids[i] = lg_rng_range(&b->rng_prompt, o->vocab_lo, o->vocab_hi);
    for (int i = 0; i < b->n_conns; i++) {
        b->conns[i].b = b;
        b->conns[i].state = LG_CLOSED;
        uv_timer_init(loop, &b->conns[i].timer);
        b->conns[i].timer.data = &b->conns[i];
    }
    uv_timer_init(loop, &b->arrival_timer);
    b->arrival_timer.data = b;
    return 0;
}

/* After the loop has closed every handle. */
static void lg_bench_free(lg_bench *b) {
    for (int i = 0; b->conns && i < b->n_conns; i++) {
        free(b->conns[i].sse);
        free(b->conns[i].ev);
        free(b->conns[i].gaps.v);
    }
    free(b->conns);
    free(b->free_stack);
    free(b->prefix_ids);
    free(b->pending);
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--self-test")) return lg_self_test();
    static lg_opts o; /* static: large (levels, targets), and lives as long as the program */
    if (lg_opts_parse(&o, argc, argv)) return 1;
    uv_loop_t *loop = uv_default_loop();
    lg_bench b[2];
    lg_level *levels[2] = {NULL, NULL}; /* [n_targets][n_levels] */
    memset(b, 0, sizeof b);
    int rc = 1;
    if (o.prompts_file && lg_prompts_load(&o)) goto out; /* every line checked before any request */
    for (int t = 0; t < o.n_targets; t++) {
        if (lg_bench_init(&b[t], &o, &o.tgt[t], loop)) goto out;
        levels[t] = calloc((size_t)o.n_levels, sizeof *levels[t]);
        if (!levels[t]) goto out;
    }
    if (o.text_prompts) {
        /* one distinct prompt per request of a target's run, when the run has a known length */
        size_t need = 0;
        for (int i = 0; i < o.n_levels; i++) {
            int n = o.per_stream ? o.per_stream * o.level_conc[i] : o.n_requests;
            need += n < 0 ? LG_TEXT_PROMPTS_MAX : (size_t)o.warmup + (size_t)n * (size_t)o.rounds;
        }
        if (lg_prompts_build_text(&o, &o.tgt[0], need < LG_TEXT_PROMPTS_MAX ? need : LG_TEXT_PROMPTS_MAX)) goto out;
    }

    uint64_t t_run = uv_hrtime();
    for (int i = 0; i < o.n_levels; i++) {
        int n = o.per_stream ? o.per_stream * o.level_conc[i] : o.n_requests;
        for (int t = 0; t < o.n_targets; t++) {
            levels[t][i].concurrency = o.level_conc[i];
            levels[t][i].rate = o.level_rate[i];
        }
        char name[32];
        lg_fmt_level(name, sizeof name, &levels[0][i]);
        fprintf(stderr, "sluice-bench: %s: %s%s\n", name, o.warmup ? "warm-up, then " : "",
                n >= 0 ? "measuring" : "measuring for the duration");
        /* compare mode alternates the targets round by round, so slow drifts of the machine hit both alike */
        for (int round = 0; round < o.rounds; round++)
            for (int t = 0; t < o.n_targets; t++) {
                if (round == 0 && o.warmup) lg_phase_run(&b[t], &levels[t][i], 1, o.warmup);
                lg_phase_run(&b[t], &levels[t][i], 0, n);
            }
    }

    rc = lg_report(&o, levels, o.n_levels) ? 1 : 0;
    /* the client's own CPU time: evidence that it was not the bottleneck */
    struct rusage ru;
    if (!getrusage(RUSAGE_SELF, &ru))
        printf("\nclient CPU: %.2f s (user + system) over %.1f s of run time\n",
               (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
               (double)(uv_hrtime() - t_run) / 1e9);
    int failed = 0;
    for (int t = 0; t < o.n_targets; t++)
        for (int i = 0; i < o.n_levels; i++)
            for (size_t k = 0; k < levels[t][i].n; k++) failed += levels[t][i].s[k].status != 200;
    if (!rc && failed) rc = 3;
out:
    uv_walk(loop, lg_walk_close, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    for (int t = 0; t < 2; t++) {
        lg_bench_free(&b[t]);
        for (int i = 0; levels[t] && i < o.n_levels; i++) {
            free(levels[t][i].s);
            free(levels[t][i].itl.v);
        }
        free(levels[t]);
    }
    lg_prompts_free(&o);
    return rc;
}
