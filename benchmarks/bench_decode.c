/*
 * bench_decode.c — single-stream speed of the engine on one model: prefill and decode tokens per second.
 *
 *   sluice-bench-decode [-m MODEL] [--prompt-tokens 512] [--gen-tokens 128] [--runs 5] [--threads 1,2]
 *                       [--precision fast|exact]
 *
 * For each thread count: a prompt of exactly --prompt-tokens tokens (text tokenized and repeated to length)
 * is prefilled in one step, then --gen-tokens tokens are decoded greedily with EOS ignored; the median of
 * --runs runs is reported. Decode streams every weight once per token, so weight bytes × tokens/s is the
 * memory bandwidth decode achieves; it is printed against this machine's measured copy bandwidth.
 * Uses only the public API (the same path the server takes, minus HTTP).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/sluice.h"

static const char *k_text =
    "The history of the river begins in the mountains, where snow melts each spring and feeds a thousand "
    "small streams. They join in the valleys, turn mills and water fields, and carry boats of grain and "
    "timber down to the sea. Towns grew on its banks; bridges and locks were built, and engineers learned to "
    "measure its flow, to hold it back with sluices and to release it when the fields were dry. ";

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Copy bandwidth over a buffer far larger than the caches (read + write bytes per second). */
static double copy_bandwidth_gbs(void) {
    size_t n = (size_t)256 << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) return 0;
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 0;
    for (int i = 0; i < 5; i++) {
        int64_t t0 = sl_now_us();
        memcpy(b, a, n);
        double s = (double)(sl_now_us() - t0) * 1e-6;
        double gbs = 2.0 * (double)n / s / 1e9;
        if (gbs > best) best = gbs;
    }
    free(a);
    free(b);
    return best;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int prompt_tokens = 512, gen_tokens = 128, runs = 5;
    int threads[8] = {1, 2}, n_threads = 2;
    sl_precision precision = SL_PRECISION_FAST;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "-m") && v) {
            model = v;
            i++;
        } else if (!strcmp(argv[i], "--prompt-tokens") && v) {
            prompt_tokens = atoi(v);
            i++;
        } else if (!strcmp(argv[i], "--gen-tokens") && v) {
            gen_tokens = atoi(v);
            i++;
        } else if (!strcmp(argv[i], "--runs") && v) {
            runs = atoi(v);
            i++;
        } else if (!strcmp(argv[i], "--precision") && v) {
            precision = !strcmp(v, "exact") ? SL_PRECISION_EXACT : SL_PRECISION_FAST;
            i++;
        } else if (!strcmp(argv[i], "--threads") && v) {
            n_threads = 0;
            for (char *s = (char *)v; *s && n_threads < 8; s++) {
                threads[n_threads++] = (int)strtol(s, &s, 10);
                if (!*s) break;
            }
            i++;
        } else {
            fprintf(stderr, "usage: %s [-m MODEL] [--prompt-tokens N] [--gen-tokens N] [--runs N] "
                            "[--threads 1,2] [--precision fast|exact]\n", argv[0]);
            return 2;
        }
    }
    if (prompt_tokens < 1 || gen_tokens < 2 || runs < 1 || runs > 100) {
        fprintf(stderr, "bad sizes\n");
        return 2;
    }
    char default_model[4096];
    if (!model) {
        const char *home = getenv("HOME");
        const char *cache = getenv("SLUICE_CACHE_DIR");
        if (cache)
            snprintf(default_model, sizeof default_model, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
        else
            snprintf(default_model, sizeof default_model, "%s/.cache/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                     home ? home : "/tmp");
        model = default_model;
    }
    double bw = copy_bandwidth_gbs();
    printf("model: %s\nprompt %d tokens, generate %d tokens, median of %d runs, precision %s\n", model,
           prompt_tokens, gen_tokens, runs, precision == SL_PRECISION_FAST ? "fast" : "exact");
    printf("machine copy bandwidth (memcpy, read+write): %.1f GB/s\n\n", bw);
    printf("| threads | prefill tok/s | decode tok/s | decode GB/s of weights | of copy bandwidth |\n");
    printf("|--------:|--------------:|-------------:|-----------------------:|------------------:|\n");
    for (int t = 0; t < n_threads; t++) {
        sl_engine_params ep;
        sl_engine_params_init(&ep);
        ep.model_path = model;
        ep.n_threads = threads[t];
        ep.precision = precision;
        ep.max_num_batched_tokens = prompt_tokens > 512 ? prompt_tokens : 512;
        ep.max_num_seqs = 4;
        ep.enable_prefix_caching = 0; /* every run prefills its prompt for real, not from the previous run's cache */
        ep.max_model_len = prompt_tokens + gen_tokens + 8;
        sl_engine_t *e;
        if (sl_engine_create(&ep, &e) != SL_OK) {
            fprintf(stderr, "engine: %s\n", sl_last_error());
            return 1;
        }
        sl_model_info info;
        sl_model_info_init(&info);
        sl_engine_model_info(e, &info);
        int32_t *ids = NULL;
        size_t n = 0;
        if (sl_engine_tokenize(e, k_text, strlen(k_text), 0, &ids, &n) != SL_OK || n == 0) {
            fprintf(stderr, "tokenize: %s\n", sl_last_error());
            return 1;
        }
        int32_t *prompt = malloc((size_t)prompt_tokens * sizeof(int32_t));
        for (int i = 0; i < prompt_tokens; i++) prompt[i] = ids[(size_t)i % n];
        sl_free(ids);
        double pf[100], dc[100];
        for (int r = 0; r <= runs; r++) { /* run 0 warms up */
            sl_request_params rp;
            sl_request_params_init(&rp);
            rp.prompt_tokens = prompt;
            rp.n_prompt_tokens = (size_t)prompt_tokens;
            rp.max_tokens = gen_tokens;
            rp.ignore_eos = 1;
            rp.sampling.temperature = 0;
            sl_request_t *req;
            if (sl_request_submit(e, &rp, &req) != SL_OK) {
                fprintf(stderr, "submit: %s\n", sl_last_error());
                return 1;
            }
            sl_timings tm = {0};
            for (;;) {
                sl_event *ev;
                if (sl_request_next_event(req, -1, &ev) != SL_OK) return 1;
                int done = ev->type == SL_EVENT_DONE;
                if (done) tm = ev->timings;
                sl_event_free(ev);
                if (done) break;
            }
            sl_request_free(req);
            if (r == 0) continue;
            pf[r - 1] = prompt_tokens / ((double)(tm.first_token_us - tm.first_scheduled_us) * 1e-6);
            dc[r - 1] = (gen_tokens - 1) / ((double)(tm.finished_us - tm.first_token_us) * 1e-6);
        }
        double p = median(pf, runs), d = median(dc, runs);
        double gbs = d * (double)info.weight_bytes / 1e9;
        printf("| %7d | %13.1f | %12.1f | %22.2f | %16.0f%% |\n", threads[t], p, d, gbs, bw > 0 ? 100.0 * gbs / bw : 0);
        fflush(stdout);
        free(prompt);
        sl_engine_free(e);
    }
    return 0;
}
