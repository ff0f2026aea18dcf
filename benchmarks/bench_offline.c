/*
 * bench_offline.c — the engine without HTTP: offline throughput of a batch of N prompts submitted at once,
 * so engine speed and server cost can be told apart (compare with sluice-bench against `sluice serve`).
 *
 *   sluice-bench-offline [-m MODEL] [--prompts 1,8,32] [--prompt-tokens 8] [--gen-tokens 64] [--threads 2]
 *                        [--kv-dtype auto|f32|f16]
 *
 * For each batch size N: N distinct prompts of exactly --prompt-tokens tokens (ids from a fixed LCG inside
 * the vocabulary's ordinary range), --gen-tokens each with EOS ignored, temperature 0.7 with per-request
 * seeds; all submitted before any is read. Reports output tokens/s, the speed-up over N = 1, and where a
 * step's time goes: wall time per engine step and, of it, the forward pass (sl_engine_stats.busy_seconds_total;
 * the rest is the engine's work between forwards: draws, detokenization, events, scheduling).
 * Uses only the public API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/config.h"
#include "sluice/sluice.h"

typedef struct batch_result {
    double tok_s;
    double step_ms, forward_ms; /* per engine step: wall, and inside the forward pass */
} batch_result;

static int run_batch(sl_engine_t *e, int n, int prompt_tokens, int gen_tokens, batch_result *res) {
    sl_engine_stats s0;
    sl_engine_stats_init(&s0);
    if (sl_engine_get_stats(e, &s0) != SL_OK) return 0;
    sl_request_t **reqs = calloc((size_t)n, sizeof *reqs);
    int32_t *prompts = malloc((size_t)n * (size_t)prompt_tokens * sizeof(int32_t));
    if (!reqs || !prompts) return 0;
    uint64_t x = 12345;
    for (int i = 0; i < n * prompt_tokens; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        prompts[i] = 1000 + (int32_t)((x >> 33) % 19000); /* ordinary tokens, clear of the special ids */
    }
    int64_t t0 = sl_now_us();
    for (int i = 0; i < n; i++) {
        sl_request_params rp;
        sl_request_params_init(&rp);
        rp.prompt_tokens = prompts + (size_t)i * (size_t)prompt_tokens;
        rp.n_prompt_tokens = (size_t)prompt_tokens;
        rp.max_tokens = gen_tokens;
        rp.ignore_eos = 1;
        rp.sampling.temperature = 0.7f;
        rp.sampling.seed = (uint64_t)i;
        rp.sampling.has_seed = 1;
        if (sl_request_submit(e, &rp, &reqs[i]) != SL_OK) {
            fprintf(stderr, "submit: %s\n", sl_last_error());
            return 0;
        }
    }
    long long out_tokens = 0;
    for (int i = 0; i < n; i++) {
        for (;;) {
            sl_event *ev;
            if (sl_request_next_event(reqs[i], -1, &ev) != SL_OK) return 0;
            int done = ev->type == SL_EVENT_DONE;
            if (done) out_tokens += ev->usage.completion_tokens;
            sl_event_free(ev);
            if (done) break;
        }
        sl_request_free(reqs[i]);
    }
    double s = (double)(sl_now_us() - t0) * 1e-6;
    sl_engine_stats s1;
    sl_engine_stats_init(&s1);
    if (sl_engine_get_stats(e, &s1) != SL_OK) return 0;
    const double steps = (double)(s1.steps_total - s0.steps_total);
    res->tok_s = (double)out_tokens / s;
    res->step_ms = steps > 0 ? 1e3 * s / steps : 0;
    res->forward_ms = steps > 0 ? 1e3 * (s1.busy_seconds_total - s0.busy_seconds_total) / steps : 0;
    free(reqs);
    free(prompts);
    return 1;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int sizes[16] = {1, 8, 32}, n_sizes = 3, prompt_tokens = 8, gen_tokens = 64, threads = 2;
    const char *kv = "auto";
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(argv[i], "-m"))
            model = v;
        else if (!strcmp(argv[i], "--prompt-tokens"))
            prompt_tokens = atoi(v);
        else if (!strcmp(argv[i], "--gen-tokens"))
            gen_tokens = atoi(v);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(v);
        else if (!strcmp(argv[i], "--kv-dtype") && (!strcmp(v, "f16") || !strcmp(v, "f32") || !strcmp(v, "auto")))
            kv = v;
        else if (!strcmp(argv[i], "--prompts")) {
            n_sizes = 0;
            for (char *s = (char *)v; *s && n_sizes < 16; s++) {
                sizes[n_sizes++] = (int)strtol(s, &s, 10);
                if (!*s) break;
            }
        } else
            goto usage;
        i++;
    }
    if (prompt_tokens < 1 || gen_tokens < 1 || threads < 1) goto usage;
    for (int i = 0; i < n_sizes; i++)
        if (sizes[i] < 1 || sizes[i] > 4096) goto usage;
    char *default_path = model ? NULL : sl_default_model_path();
    sl_engine_params ep;
    sl_engine_params_init(&ep);
    ep.model_path = model ? model : default_path;
    ep.n_threads = threads;
    ep.max_model_len = prompt_tokens + gen_tokens + 8;
    ep.max_num_seqs = 256;
    ep.kv_dtype = !strcmp(kv, "f16") ? SL_KV_F16 : !strcmp(kv, "f32") ? SL_KV_F32 : SL_KV_AUTO;
    sl_engine_t *e;
    if (sl_engine_create(&ep, &e) != SL_OK) {
        fprintf(stderr, "engine: %s\n", sl_last_error());
        return 1;
    }
    printf("model %s, %d threads, KV %s, prompts of %d tokens, %d output tokens each (EOS ignored, temperature 0.7)\n\n",
           ep.model_path, threads, kv, prompt_tokens, gen_tokens);
    printf("| prompts at once | output tok/s | vs 1 prompt | ms per step | of which forward |\n"
           "|---:|---:|---:|---:|---:|\n");
    double base = 0;
    for (int i = 0; i < n_sizes; i++) {
        batch_result r;
        if (!run_batch(e, sizes[i], prompt_tokens, gen_tokens, &r)) return 1;
        if (i == 0) base = r.tok_s;
        printf("| %d | %.1f | %.2f× | %.2f | %.2f (%.0f%%) |\n", sizes[i], r.tok_s, base > 0 ? r.tok_s / base : 0,
               r.step_ms, r.forward_ms, r.step_ms > 0 ? 100 * r.forward_ms / r.step_ms : 0);
        fflush(stdout);
    }
    sl_engine_free(e);
    free(default_path);
    return 0;
usage:
    fprintf(stderr, "usage: %s [-m MODEL] [--prompts 1,8,32] [--prompt-tokens N] [--gen-tokens N] [--threads N]\n"
                    "       [--kv-dtype auto|f32|f16]\n",
            argv[0]);
    return 2;
}
