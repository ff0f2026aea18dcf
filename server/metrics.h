/*
 * metrics.h — the server's metrics registry and its Prometheus text rendering (GET /metrics).
 *
 * The set of series is fixed at build time (the names operators' dashboards already know, after vLLM's,
 * prefixed `sluice_`), so the registry is a plain struct of counters and histograms rather than a
 * name-keyed map: nothing is allocated or looked up on the token path. Every write is one or two relaxed
 * atomic additions (histograms: a bounded scan of at most SL_METRICS_MAX_BUCKETS bounds, then one add per
 * cell), so the engine thread (inter-token gaps) and the loop thread (everything else) write without a
 * lock. Rendering runs on the loop thread; a scrape that races a write may see a sum a sample ahead of its
 * counts, never a histogram whose buckets disagree with its _count (the count is derived from the buckets).
 *
 * Gauges that already live elsewhere (running/waiting requests, KV usage, engine counters) are not copied
 * here: the caller passes a fresh sl_engine_stats to sl_metrics_render. The transport's counters (open
 * connections, responses by route and status) are process-wide and fed by http.c through the two
 * sl_metrics_note_* hooks, so the transport needs no handle to a registry.
 */
#ifndef SL_SERVER_METRICS_H
#define SL_SERVER_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "http.h"
#include "sluice/sluice.h"

/* Bounds per histogram: the longest bucket list below has 22; Prometheus scrapes get costlier per bucket. */
#define SL_METRICS_MAX_BUCKETS 24

typedef struct sl_histogram {
    const double *bounds; /* [n_bounds] upper bounds, increasing, in the observed unit (seconds) */
    int n_bounds;
    _Atomic uint64_t counts[SL_METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative; [n_bounds] is +Inf */
    _Atomic uint64_t sum_ns;                             /* sum of observations in nanoseconds */
} sl_histogram;

/* Histograms, in rendering order. */
typedef enum sl_metrics_hist {
    SL_HIST_TTFT = 0,  /* submitted -> first token */
    SL_HIST_ITL,       /* gap between consecutive token events of one choice, as the server received them */
    SL_HIST_TPOT,      /* decode time / (tokens per choice - 1) */
    SL_HIST_E2E,       /* submitted -> finished */
    SL_HIST_QUEUE,     /* submitted -> first scheduled */
    SL_HIST_PREFILL,   /* first scheduled -> prompt's last chunk ran */
    SL_HIST_DECODE,    /* first token -> finished */
    SL_HIST_DEVICE,    /* engine step time attributed to the request */
    SL_HIST_COUNT
} sl_metrics_hist;

typedef struct sl_metrics sl_metrics;

/* model_name: the served name every series is labelled with (escaped here once). */
sl_status sl_metrics_create(const char *model_name, sl_metrics **out);
void sl_metrics_free(sl_metrics *m);
/* Any thread; constant time. */
void sl_metrics_observe(sl_metrics *m, sl_metrics_hist h, double seconds);
/* Loop thread, once per finished engine request: the latency histograms and the token counters. */
void sl_metrics_request_done(sl_metrics *m, const sl_usage *usage, const sl_timings *t, int n_choices);
/* Any thread: one finished choice. */
void sl_metrics_choice_done(sl_metrics *m, sl_finish_reason why);
/* Appends the Prometheus text exposition (format 0.0.4) to out. es: NULL while the model is loading. */
sl_status sl_metrics_render(sl_metrics *m, const sl_engine_stats *es, sl_buf *out);

/* Transport hooks (loop thread; process-wide counters, one HTTP server per process). */
void sl_metrics_note_connection(int delta);
/* path: the request's path (a query string is ignored), or "" when none was parsed. */
void sl_metrics_note_response(const char *path, int status);

/* The dashboard page served at GET / (dashboard.c): self-contained HTML that polls /metrics. */
extern const char sl_dashboard_html[];

#endif /* SL_SERVER_METRICS_H */
