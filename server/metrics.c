/*
 * metrics.c — the metrics registry and the Prometheus text format (see metrics.h for the shape).
 *
 * Names follow vLLM's (`vllm:` becomes `sluice_`: Prometheus reserves `:` for recording rules), so existing
 * dashboards need only a prefix change. Every series carries model_name; label values are escaped as the
 * text format asks (backslash, double quote, newline). Process series (CPU seconds, resident memory, open
 * file descriptors) are read from getrusage and /proc at scrape time: nothing to maintain in between.
 *
 * GPU series come from NVML, loaded with dlopen at the first scrape (libnvidia-ml.so.1, or the library named by
 * $SLUICE_NVML_LIB; tests point it at a fake). Its absence is not an error: the series are simply not there.
 * NVML's "utilization" is the fraction of time any kernel ran, which reads 100% with one tiny request; the
 * engine's own busy seconds are the meaningful number next to it. (DESIGN.md puts GPU probes in runtime/; this
 * small reader lives here until a runtime probe exists, and moves there unchanged.)
 */
#include "metrics.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Request-level latencies (TTFT, e2e, queue, prefill, decode, device time): from a millisecond (a tiny model
 * on a GPU) to 40 minutes (a long generation on a loaded CPU); roughly x2-x2.5 per step. */
static const double k_request_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,  0.25, 0.5,  1,    2.5,
                                          5,     10,     20,    40,   80,    160,  320,  640,  1280, 2560};
/* Per-token gaps: 100 us (a small model's decode step on a GPU) to 10 s (a CPU step under a long prefill). */
static const double k_token_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04,
                                        0.05,   0.075,   0.1,    0.15,  0.2,    0.3,   0.5,  0.75,  1,    2.5,  10};

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const struct {
    const char *name, *help;
    int per_token; /* bucket set */
} k_hists[SL_HIST_COUNT] = {
    [SL_HIST_TTFT] = {"time_to_first_token_seconds", "Time from submission to the first generated token.", 0},
    [SL_HIST_ITL] = {"inter_token_latency_seconds", "Gap between consecutive token events of one choice.", 1},
    [SL_HIST_TPOT] = {"request_time_per_output_token_seconds", "Decode time per output token after the first.", 1},
    [SL_HIST_E2E] = {"e2e_request_latency_seconds", "Time from submission to the request's last event.", 0},
    [SL_HIST_QUEUE] = {"request_queue_time_seconds", "Time from submission to the first engine step that ran it.", 0},
    [SL_HIST_PREFILL] = {"request_prefill_time_seconds", "Time from first scheduled to the prompt's last chunk.", 0},
    [SL_HIST_DECODE] = {"request_decode_time_seconds", "Time from the first generated token to the end.", 0},
    [SL_HIST_DEVICE] = {"request_device_time_seconds", "Engine step time attributed to the request by tokens.", 0},
};

/* finished_reason label values, by sl_finish_reason. */
static const char *const k_reasons[] = {"none", "stop", "length", "abort", "error"};
#define N_REASONS NELEM(k_reasons)
_Static_assert(NELEM(k_reasons) == SL_FINISH_ERROR + 1, "one finished_reason label per sl_finish_reason");

/* Routes the HTTP counter knows: a fixed set keeps the label's cardinality bounded whatever clients send. */
static const char *const k_routes[] = {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models",
                                       "/v1/models/{model}", "/tokenize", "/detokenize", "/health", "/ready",
                                       "/metrics", "/", "other"};
#define N_ROUTES NELEM(k_routes)
/* Statuses the server sends (http.c's status_text); any other is counted under "other" (index N_STATUSES). */
static const int k_statuses[] = {100, 200, 204, 400, 401, 404, 405, 408, 413, 429, 431, 500, 503};
#define N_STATUSES NELEM(k_statuses)

static _Atomic int64_t g_open_connections;
static _Atomic uint64_t g_http[N_ROUTES][N_STATUSES + 1];

/* The few NVML entry points used, with NVML's own signatures (nvml.h is not needed to build). */
typedef struct nvml_util {
    unsigned int gpu, memory; /* percent of the last sample period */
} nvml_util;
typedef struct nvml_mem {
    unsigned long long total, free, used; /* bytes */
} nvml_mem;
typedef struct nvml_api {
    void *lib;        /* dlopen handle, or NULL: NVML absent (tried once) */
    int tried;
    unsigned n_devices;
    int (*init)(void);
    int (*shutdown)(void);
    int (*count)(unsigned *);
    int (*handle)(unsigned, void **);
    int (*util)(void *, nvml_util *);
    int (*mem)(void *, nvml_mem *);
    int (*power)(void *, unsigned *); /* milliwatts */
} nvml_api;
/* NVML devices reported at most: more than any one host carries (DGX boxes have 8 or 16). */
#define NVML_MAX_DEVICES 64

struct sl_metrics {
    nvml_api nvml; /* loop thread only (rendering) */
    char *model_label; /* `model_name="<escaped>"` */
    sl_histogram hist[SL_HIST_COUNT];
    _Atomic uint64_t prompt_tokens, cached_prompt_tokens, generation_tokens, requests_done;
    _Atomic uint64_t success[N_REASONS];
};

/* ---- registry ------------------------------------------------------------------------------------------ */
static int escape_label(sl_buf *b, const char *s) {
    int ok = 1;
    for (; *s && ok; s++) {
        if (*s == '\\')
            ok = sl_buf_append(b, "\\\\", 2);
        else if (*s == '"')
            ok = sl_buf_append(b, "\\\"", 2);
        else if (*s == '\n')
            ok = sl_buf_append(b, "\\n", 2);
        else
            ok = sl_buf_append(b, s, 1);
    }
    return ok;
}

sl_status sl_metrics_create(const char *model_name, sl_metrics **out) {
    *out = NULL;
    sl_metrics *m = calloc(1, sizeof *m);
    if (!m) return SL_OUT_OF_MEMORY;
    sl_buf b = {0};
    if (!sl_buf_append(&b, "model_name=\"", 12) || !escape_label(&b, model_name ? model_name : "") ||
        !sl_buf_append(&b, "\"", 1)) {
        sl_buf_free(&b);
        free(m);
        return SL_OUT_OF_MEMORY;
    }
    m->model_label = b.p;
    for (int h = 0; h < SL_HIST_COUNT; h++) {
        m->hist[h].bounds = k_hists[h].per_token ? k_token_bounds : k_request_bounds;
        m->hist[h].n_bounds = k_hists[h].per_token ? NELEM(k_token_bounds) : NELEM(k_request_bounds);
    }
    *out = m;
    return SL_OK;
}

void sl_metrics_free(sl_metrics *m) {
    if (!m) return;
    if (m->nvml.lib) {
        m->nvml.shutdown();
        dlclose(m->nvml.lib);
    }
    free(m->model_label);
    free(m);
}

void sl_metrics_observe(sl_metrics *m, sl_metrics_hist h, double seconds) {
    if (!m || h < 0 || h >= SL_HIST_COUNT || !(seconds >= 0)) return; /* NaN and clock oddities are not samples */
    sl_histogram *x = &m->hist[h];
    int i = 0;
    while (i < x->n_bounds && seconds > x->bounds[i]) i++; /* le: a value on a bound belongs to that bucket */
    atomic_fetch_add_explicit(&x->counts[i], 1, memory_order_relaxed);
    /* 2^64 ns is 584 years of summed latency: no overflow in any process's life */
    atomic_fetch_add_explicit(&x->sum_ns, (uint64_t)(seconds * 1e9 + 0.5), memory_order_relaxed);
}

static double span_s(int64_t from_us, int64_t to_us) {
    return from_us && to_us && to_us >= from_us ? (double)(to_us - from_us) * 1e-6 : -1.0;
}

void sl_metrics_request_done(sl_metrics *m, const sl_usage *u, const sl_timings *t, int n_choices) {
    if (!m) return;
    atomic_fetch_add_explicit(&m->requests_done, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->prompt_tokens, (uint64_t)(u->prompt_tokens > 0 ? u->prompt_tokens : 0),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->cached_prompt_tokens,
                              (uint64_t)(u->cached_prompt_tokens > 0 ? u->cached_prompt_tokens : 0), memory_order_relaxed);
    atomic_fetch_add_explicit(&m->generation_tokens, (uint64_t)(u->completion_tokens > 0 ? u->completion_tokens : 0),
                              memory_order_relaxed);
    /* span_s gives -1 for a hop that did not happen (an embedding has no first token): not observed */
    sl_metrics_observe(m, SL_HIST_TTFT, span_s(t->submitted_us, t->first_token_us));
    sl_metrics_observe(m, SL_HIST_E2E, span_s(t->submitted_us, t->finished_us));
    sl_metrics_observe(m, SL_HIST_QUEUE, span_s(t->submitted_us, t->first_scheduled_us));
    sl_metrics_observe(m, SL_HIST_PREFILL, span_s(t->first_scheduled_us, t->prefill_done_us));
    double decode = span_s(t->first_token_us, t->finished_us);
    sl_metrics_observe(m, SL_HIST_DECODE, decode);
    int64_t per_choice = n_choices > 0 ? u->completion_tokens / n_choices : 0;
    if (per_choice > 1 && decode >= 0) sl_metrics_observe(m, SL_HIST_TPOT, decode / (double)(per_choice - 1));
    if (t->first_scheduled_us) sl_metrics_observe(m, SL_HIST_DEVICE, (double)t->device_us * 1e-6);
}

void sl_metrics_choice_done(sl_metrics *m, sl_finish_reason why) {
    if (!m) return;
    int r = why >= 0 && why < N_REASONS ? (int)why : SL_FINISH_ERROR;
    atomic_fetch_add_explicit(&m->success[r], 1, memory_order_relaxed);
}

/* ---- transport hooks ----------------------------------------------------------------------------------- */
void sl_metrics_note_connection(int delta) { atomic_fetch_add_explicit(&g_open_connections, delta, memory_order_relaxed); }

static int route_index(const char *path) {
    size_t n = strcspn(path, "?");
    for (int i = 0; i < N_ROUTES - 1; i++)
        if (strlen(k_routes[i]) == n && !strncmp(path, k_routes[i], n)) return i;
    if (n > 11 && !strncmp(path, "/v1/models/", 11)) return 4; /* "/v1/models/{model}" */
    return N_ROUTES - 1;
}

void sl_metrics_note_response(const char *path, int status) {
    int s = 0;
    while (s < N_STATUSES && k_statuses[s] != status) s++;
    atomic_fetch_add_explicit(&g_http[route_index(path ? path : "")][s], 1, memory_order_relaxed);
}

/* ---- rendering ----------------------------------------------------------------------------------------- */
static int family(sl_buf *b, const char *name, const char *type, const char *help) {
    return sl_buf_printf(b, "# HELP sluice_%s %s\n# TYPE sluice_%s %s\n", name, help, name, type);
}

static int sample_u(sl_buf *b, const sl_metrics *m, const char *name, const char *labels, uint64_t v) {
    return sl_buf_printf(b, "sluice_%s{%s%s%s} %llu\n", name, m->model_label, labels ? "," : "", labels ? labels : "",
                         (unsigned long long)v);
}

/* The shortest of %.15g and %.17g that reads back as v: byte counts stay exact, 0.37 stays "0.37". */
static void fmt_double(char *dst, size_t cap, double v) {
    snprintf(dst, cap, "%.15g", v);
    if (strtod(dst, NULL) != v) snprintf(dst, cap, "%.17g", v);
}

static int sample_d(sl_buf *b, const sl_metrics *m, const char *name, const char *labels, double v) {
    char num[32];
    fmt_double(num, sizeof num, v);
    return sl_buf_printf(b, "sluice_%s{%s%s%s} %s\n", name, m->model_label, labels ? "," : "", labels ? labels : "",
                         num);
}

static int counter_u(sl_buf *b, const sl_metrics *m, const char *name, const char *help, uint64_t v) {
    return family(b, name, "counter", help) && sample_u(b, m, name, NULL, v);
}

static int gauge_d(sl_buf *b, const sl_metrics *m, const char *name, const char *help, double v) {
    return family(b, name, "gauge", help) && sample_d(b, m, name, NULL, v);
}

static int render_hist(sl_buf *b, const sl_metrics *m, int h) {
    const sl_histogram *x = &m->hist[h];
    const char *name = k_hists[h].name;
    if (!family(b, name, "histogram", k_hists[h].help)) return 0;
    uint64_t cum = 0;
    for (int i = 0; i <= x->n_bounds; i++) {
        cum += atomic_load_explicit(&x->counts[i], memory_order_relaxed);
        int ok = i < x->n_bounds ? sl_buf_printf(b, "sluice_%s_bucket{%s,le=\"%g\"} %llu\n", name, m->model_label,
                                                 x->bounds[i], (unsigned long long)cum)
                                 : sl_buf_printf(b, "sluice_%s_bucket{%s,le=\"+Inf\"} %llu\n", name, m->model_label,
                                                 (unsigned long long)cum);
        if (!ok) return 0;
    }
    char sum[32];
    fmt_double(sum, sizeof sum, (double)atomic_load_explicit(&x->sum_ns, memory_order_relaxed) * 1e-9);
    return sl_buf_printf(b, "sluice_%s_sum{%s} %s\nsluice_%s_count{%s} %llu\n", name, m->model_label, sum, name,
                         m->model_label, (unsigned long long)cum);
}

/* Resident set size in bytes from /proc/self/statm (pages), or 0 where /proc is not there. */
static double process_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, rss = 0;
    if (!f) return 0;
    int n = fscanf(f, "%llu %llu", &size, &rss);
    fclose(f);
    return n == 2 ? (double)rss * (double)sysconf(_SC_PAGESIZE) : 0;
}

static int process_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n > 0 ? n - 1 : 0; /* the directory's own descriptor */
}

static void nvml_load(nvml_api *n) {
    n->tried = 1;
    const char *path = getenv("SLUICE_NVML_LIB");
    void *lib = dlopen(path && *path ? path : "libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    /* POSIX lets a data pointer from dlsym be converted to a function pointer; the cast goes through void * */
    *(void **)&n->init = dlsym(lib, "nvmlInit_v2");
    *(void **)&n->shutdown = dlsym(lib, "nvmlShutdown");
    *(void **)&n->count = dlsym(lib, "nvmlDeviceGetCount_v2");
    *(void **)&n->handle = dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&n->util = dlsym(lib, "nvmlDeviceGetUtilizationRates");
    *(void **)&n->mem = dlsym(lib, "nvmlDeviceGetMemoryInfo");
    *(void **)&n->power = dlsym(lib, "nvmlDeviceGetPowerUsage");
    unsigned count = 0;
    if (!n->init || !n->shutdown || !n->count || !n->handle || !n->util || !n->mem || !n->power || n->init() != 0) {
        dlclose(lib);
        return;
    }
    if (n->count(&count) != 0) count = 0;
    n->n_devices = count < NVML_MAX_DEVICES ? count : NVML_MAX_DEVICES;
    n->lib = lib;
}

/* One gauge family over the NVML devices; which: 0 utilization, 1 memory used, 2 memory total, 3 power. A
 * device whose query fails (NVML answers "not supported" for power on some boards) has no sample. */
static int render_gpu(sl_buf *b, sl_metrics *m, int which, const char *name, const char *help) {
    nvml_api *n = &m->nvml;
    int header = 0;
    for (unsigned i = 0; i < n->n_devices; i++) {
        void *dev = NULL;
        nvml_util u;
        nvml_mem mem;
        unsigned mw;
        double v;
        if (n->handle(i, &dev) != 0) continue;
        if (which == 0 && n->util(dev, &u) == 0)
            v = u.gpu / 100.0;
        else if ((which == 1 || which == 2) && n->mem(dev, &mem) == 0)
            v = which == 1 ? (double)mem.used : (double)mem.total;
        else if (which == 3 && n->power(dev, &mw) == 0)
            v = mw / 1000.0;
        else
            continue;
        char lab[32];
        snprintf(lab, sizeof lab, "device=\"cuda:%u\"", i);
        if (!header && !(header = family(b, name, "gauge", help))) return 0;
        if (!sample_d(b, m, name, lab, v)) return 0;
    }
    return 1;
}

sl_status sl_metrics_render(sl_metrics *m, const sl_engine_stats *es, sl_buf *out) {
    sl_buf *b = out;
    sl_engine_stats zero;
    sl_engine_stats_init(&zero);
    if (!es) es = &zero;
    int ok = 1;
    for (int h = 0; ok && h < SL_HIST_COUNT; h++) ok = render_hist(b, m, h);
    ok = ok && gauge_d(b, m, "num_requests_running", "Requests in the engine's running set.", es->num_running);
    ok = ok && gauge_d(b, m, "num_requests_waiting", "Requests waiting to be scheduled.", es->num_waiting);
    ok = ok && gauge_d(b, m, "kv_cache_usage_perc", "Fraction (0-1) of KV-cache blocks in use.", es->kv_cache_usage);
    ok = ok && gauge_d(b, m, "replicas", "Replicas the engine started with (devices entries / tensor_parallel_size).",
                       es->num_replicas);
    ok = ok && gauge_d(b, m, "replicas_ready", "Replicas in service; a device error takes one out for good.",
                       es->num_replicas_ready);
    ok = ok && counter_u(b, m, "prompt_tokens_total", "Prompt tokens of finished requests.",
                         atomic_load(&m->prompt_tokens));
    ok = ok && counter_u(b, m, "prompt_tokens_cached_total", "Prompt tokens whose KV came from the prefix cache.",
                         atomic_load(&m->cached_prompt_tokens));
    ok = ok && counter_u(b, m, "generation_tokens_total", "Generated tokens of finished requests.",
                         atomic_load(&m->generation_tokens));
    ok = ok && family(b, "request_success_total", "counter", "Finished choices by finish reason.");
    for (int r = 1; ok && r < N_REASONS; r++) {
        char lab[48];
        snprintf(lab, sizeof lab, "finished_reason=\"%s\"", k_reasons[r]);
        ok = sample_u(b, m, "request_success_total", lab, atomic_load(&m->success[r]));
    }
    ok = ok && counter_u(b, m, "num_preemptions_total", "Sequences preempted (recomputed later) for KV room.",
                         es->num_preemptions_total);
    ok = ok && counter_u(b, m, "prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
                         es->prefix_cache_queries_total);
    ok = ok && counter_u(b, m, "prefix_cache_hits_total", "Prompt tokens found in the prefix cache.",
                         es->prefix_cache_hits_total);
    ok = ok && counter_u(b, m, "engine_steps_total", "Engine steps run (schedule, forward, postprocess).",
                         es->steps_total);
    /* tokens per engine step, from the engine's own bucket counts (cumulated here) */
    ok = ok && family(b, "engine_step_tokens", "histogram", "Tokens (decodes plus prefill) per engine step.");
    uint64_t cum = 0;
    for (int i = 0; ok && i < SL_STEP_TOKEN_BUCKETS; i++) {
        cum += es->steps_by_tokens[i];
        char lab[32];
        if (i < SL_STEP_TOKEN_BUCKETS - 1)
            snprintf(lab, sizeof lab, "le=\"%d\"", SL_STEP_TOKENS_BOUND(i));
        else
            snprintf(lab, sizeof lab, "le=\"+Inf\"");
        ok = sample_u(b, m, "engine_step_tokens_bucket", lab, cum);
    }
    ok = ok && sample_u(b, m, "engine_step_tokens_sum", NULL, es->step_tokens_total) &&
         sample_u(b, m, "engine_step_tokens_count", NULL, cum);
    ok = ok && family(b, "device_busy_seconds_total", "counter", "Time the engine spent in steps, per device.") &&
         sample_d(b, m, "device_busy_seconds_total", "device=\"cpu\"", es->busy_seconds_total);
    ok = ok && family(b, "http_requests_total", "counter", "HTTP responses by route and status.");
    for (int r = 0; ok && r < N_ROUTES; r++)
        for (int s = 0; ok && s <= N_STATUSES; s++) {
            uint64_t v = atomic_load_explicit(&g_http[r][s], memory_order_relaxed);
            if (!v) continue; /* the route/status pairs that happened; a fixed set would be 168 zero series */
            char lab[96], st[16];
            if (s < N_STATUSES)
                snprintf(st, sizeof st, "%d", k_statuses[s]);
            else
                snprintf(st, sizeof st, "other");
            snprintf(lab, sizeof lab, "route=\"%s\",status=\"%s\"", k_routes[r], st);
            ok = sample_u(b, m, "http_requests_total", lab, v);
        }
    ok = ok && gauge_d(b, m, "http_open_connections", "Open client connections.",
                       (double)atomic_load(&g_open_connections));
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
              ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e-6;
    ok = ok && family(b, "process_cpu_seconds_total", "counter", "User and system CPU time of the process.") &&
         sample_d(b, m, "process_cpu_seconds_total", NULL, cpu);
    ok = ok && gauge_d(b, m, "process_resident_memory_bytes", "Resident memory of the process.", process_rss_bytes());
    ok = ok && gauge_d(b, m, "process_open_fds", "Open file descriptors of the process.", process_open_fds());
    if (!m->nvml.tried) nvml_load(&m->nvml);
    if (m->nvml.lib) {
        ok = ok && render_gpu(b, m, 0, "gpu_utilization_perc", "Fraction (0-1) of time a kernel ran (NVML).");
        ok = ok && render_gpu(b, m, 1, "gpu_memory_used_bytes", "Device memory in use, by any process (NVML).");
        ok = ok && render_gpu(b, m, 2, "gpu_memory_total_bytes", "Device memory (NVML).");
        ok = ok && render_gpu(b, m, 3, "gpu_power_watts", "Power draw (NVML).");
    }
    return ok ? SL_OK : SL_OUT_OF_MEMORY;
}
