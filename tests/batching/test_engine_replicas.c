/*
 * test_engine_replicas.c — data-parallel replicas inside one engine (DESIGN.md §4) on stories260K.
 *
 * Two CPU replicas ("cpu,cpu"): a burst of requests uses both, and greedy outputs are those of one replica;
 * a request pinned to replica 1 runs there; a device fault injected into replica 1 (SLUICE_FAULT_INJECT with
 * the @replica tag) ends what it held with an error naming it, while replica 0 finishes its own work and takes
 * everything after; bad device lists are refused with messages naming the setting.
 *
 * Criterion runs every test in its own process, so each test's SLUICE_FAULT_INJECT (read once per process)
 * stays its own.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_internal.h"
#include "sluice/sluice.h"
#include "testutil.h"

static sl_status open_stories(const char *devices, int tp, int max_num_seqs, sl_engine_t **e) {
    char *path = sl_test_data_path("stories260K.gguf");
    sl_engine_params ep;
    sl_engine_params_init(&ep);
    ep.model_path = path;
    ep.n_threads = 2;
    ep.max_num_seqs = max_num_seqs;
    ep.max_num_batched_tokens = 64;
    ep.devices = devices;
    ep.tensor_parallel_size = tp;
    sl_status st = sl_engine_create(&ep, e);
    free(path);
    return st;
}

typedef struct result {
    int32_t tokens[512];
    int n_tokens;
    sl_finish_reason finish;
    sl_status status;
    char message[512];
} result;

static void collect(sl_request_t *r, result *out) {
    memset(out, 0, sizeof *out);
    for (;;) {
        sl_event *ev;
        cr_assert_eq(sl_request_next_event(r, 30000, &ev), SL_OK, "no event within 30 s");
        if (ev->type == SL_EVENT_TOKENS)
            for (size_t i = 0; i < ev->n_tokens && out->n_tokens < 512; i++) out->tokens[out->n_tokens++] = ev->tokens[i];
        if (ev->type == SL_EVENT_FINISH) {
            out->finish = ev->finish_reason;
            out->status = ev->status;
            if (ev->message) snprintf(out->message, sizeof out->message, "%s", ev->message);
        }
        int done = ev->type == SL_EVENT_DONE;
        sl_event_free(ev);
        if (done) break;
    }
}

static sl_status submit(sl_engine_t *e, const char *prompt, int max_tokens, int replica, sl_request_t **r) {
    sl_request_params rp;
    sl_request_params_init(&rp);
    cr_assert_eq(rp.replica, -1, "the default is: any replica");
    rp.prompt_text = prompt;
    rp.max_tokens = max_tokens;
    rp.sampling.temperature = 0;
    rp.ignore_eos = 1; /* every request runs its full length: the tests count on it */
    rp.replica = replica;
    return sl_request_submit(e, &rp, r);
}

static sl_engine_stats replica_stats(sl_engine_t *e, int i) {
    sl_engine_stats s;
    sl_engine_stats_init(&s);
    cr_assert_eq(sl__engine_replica_stats(e, i, &s), SL_OK);
    return s;
}

static sl_engine_stats stats(sl_engine_t *e) {
    sl_engine_stats s;
    sl_engine_stats_init(&s);
    cr_assert_eq(sl_engine_get_stats(e, &s), SL_OK);
    return s;
}

static const char *prompts[] = {
    "Once upon a time", "The little dog", "Lily and Ben went to the park", "One day, a bird",
    "Tom had a red ball", "The sun was", "A girl named Sue", "The big tree",
};
#define N_PROMPTS 8
#define N_BURST 16
#define GEN 24

Test(engine_replicas, burst_uses_both_and_matches_one_replica, .timeout = 120) {
    sl_engine_t *one = NULL, *two = NULL;
    cr_assert_eq(open_stories("cpu", 1, 8, &one), SL_OK, "%s", sl_last_error());
    cr_assert_eq(open_stories("cpu,cpu", 1, 8, &two), SL_OK, "%s", sl_last_error());
    sl_engine_stats s = stats(two);
    cr_assert_eq(s.num_replicas, 2);
    cr_assert_eq(s.num_replicas_ready, 2);
    cr_assert_eq(stats(one).num_replicas, 1);
    cr_assert_eq(stats(one).num_replicas_ready, 1);

    static result want[N_PROMPTS], got[N_BURST];
    for (int i = 0; i < N_PROMPTS; i++) {
        sl_request_t *r;
        cr_assert_eq(submit(one, prompts[i], GEN, -1, &r), SL_OK, "%s", sl_last_error());
        collect(r, &want[i]);
        sl_request_free(r);
    }
    sl_request_t *rs[N_BURST];
    for (int i = 0; i < N_BURST; i++) cr_assert_eq(submit(two, prompts[i % N_PROMPTS], GEN, -1, &rs[i]), SL_OK, "%s", sl_last_error());
    for (int i = 0; i < N_BURST; i++) {
        collect(rs[i], &got[i]);
        sl_request_free(rs[i]);
        const result *w = &want[i % N_PROMPTS];
        cr_assert_eq(got[i].finish, SL_FINISH_LENGTH, "request %d: %s", i, got[i].message);
        cr_assert_eq(got[i].n_tokens, w->n_tokens);
        for (int k = 0; k < w->n_tokens; k++)
            cr_assert_eq(got[i].tokens[k], w->tokens[k], "request %d token %d: %d with two replicas, %d with one", i, k,
                         got[i].tokens[k], w->tokens[k]);
    }
    sl_engine_stats r0 = replica_stats(two, 0), r1 = replica_stats(two, 1);
    cr_assert_gt(r0.generation_tokens_total, 0, "replica 0 served nothing");
    cr_assert_gt(r1.generation_tokens_total, 0, "replica 1 served nothing");
    cr_assert_eq(r0.generation_tokens_total + r1.generation_tokens_total, (uint64_t)N_BURST * GEN);
    s = stats(two);
    cr_assert_eq(s.generation_tokens_total, (uint64_t)N_BURST * GEN, "the engine's counters are the replicas' sums");
    cr_assert_eq(s.steps_total, r0.steps_total + r1.steps_total);
    sl_engine_free(one);
    sl_engine_free(two);
}

Test(engine_replicas, pinned_request_runs_on_its_replica, .timeout = 60) {
    sl_engine_t *e = NULL;
    cr_assert_eq(open_stories("cpu,cpu", 1, 8, &e), SL_OK, "%s", sl_last_error());
    for (int i = 0; i < 3; i++) {
        sl_request_t *r;
        cr_assert_eq(submit(e, prompts[i], GEN, 1, &r), SL_OK, "%s", sl_last_error());
        result res;
        collect(r, &res);
        sl_request_free(r);
        cr_assert_eq(res.finish, SL_FINISH_LENGTH);
    }
    cr_assert_eq(replica_stats(e, 0).steps_total, 0, "replica 0 ran a step of requests pinned to 1");
    cr_assert_eq(replica_stats(e, 1).generation_tokens_total, 3 * GEN);
    sl_request_t *r = NULL;
    cr_assert_eq(submit(e, prompts[0], GEN, 2, &r), SL_INVALID_ARGUMENT);
    cr_assert_null(r);
    cr_assert(strstr(sl_last_error(), "replica 2 does not exist"), "%s", sl_last_error());
    cr_assert_eq(submit(e, prompts[0], GEN, -2, &r), SL_INVALID_ARGUMENT);
    sl_engine_free(e);
}

Test(engine_replicas, device_fault_takes_one_replica_out, .timeout = 120) {
    /* The 60th matmul made on replica 1's thread fails: a few steps into its work (stories260K makes a handful
     * of matmul calls per layer and step). */
    setenv("SLUICE_FAULT_INJECT", "matmul:60@1", 1);
    sl_engine_t *e = NULL;
    /* max_num_seqs 2: of replica 1's four requests two run and two wait when it fails; all four must end */
    cr_assert_eq(open_stories("cpu,cpu", 1, 2, &e), SL_OK, "%s", sl_last_error());
    enum { N_EACH = 4 };
    sl_request_t *on0[N_EACH], *on1[N_EACH];
    /* Replica 1's requests first: it starts on the first at once, and may fail before the last is submitted
     * (a few steps of the tiny model take about a millisecond); a request pinned to it after it failed is
     * refused at once, with the replica named, which is the other correct outcome. */
    int refused = 0;
    for (int i = 0; i < N_EACH; i++) {
        sl_status st = submit(e, prompts[i], 200, 1, &on1[i]);
        if (st == SL_DEVICE) {
            cr_assert(strstr(sl_last_error(), "replica 1 is out of service"), "%s", sl_last_error());
            on1[i] = NULL;
            refused++;
        } else {
            cr_assert_eq(st, SL_OK, "%s", sl_last_error());
        }
    }
    cr_assert_lt(refused, N_EACH, "the first request was accepted before any step ran");
    for (int i = 0; i < N_EACH; i++) cr_assert_eq(submit(e, prompts[i], 40, 0, &on0[i]), SL_OK, "%s", sl_last_error());
    for (int i = 0; i < N_EACH; i++) {
        if (!on1[i]) continue;
        result res;
        collect(on1[i], &res);
        sl_request_free(on1[i]);
        cr_assert_eq(res.finish, SL_FINISH_ERROR, "request %d on the failed replica ended with %d", i, res.finish);
        cr_assert_eq(res.status, SL_DEVICE);
        cr_assert(strstr(res.message, "replica 1"), "the message names the replica: %s", res.message);
        cr_assert(strstr(res.message, "matmul"), "the message names the failed operation: %s", res.message);
        cr_assert_lt(res.n_tokens, 200);
    }
    for (int i = 0; i < N_EACH; i++) {
        result res;
        collect(on0[i], &res);
        sl_request_free(on0[i]);
        cr_assert_eq(res.finish, SL_FINISH_LENGTH, "request %d on the healthy replica: %s", i, res.message);
        cr_assert_eq(res.n_tokens, 40);
    }
    sl_engine_stats s = stats(e);
    cr_assert_eq(s.num_replicas, 2);
    cr_assert_eq(s.num_replicas_ready, 1);
    cr_assert_eq(replica_stats(e, 1).num_replicas_ready, 0);

    /* From now on everything goes to replica 0, and succeeds. */
    uint64_t steps1 = replica_stats(e, 1).steps_total;
    uint64_t gen0 = replica_stats(e, 0).generation_tokens_total;
    sl_request_t *after[6];
    for (int i = 0; i < 6; i++) cr_assert_eq(submit(e, prompts[i], 16, -1, &after[i]), SL_OK, "%s", sl_last_error());
    for (int i = 0; i < 6; i++) {
        result res;
        collect(after[i], &res);
        sl_request_free(after[i]);
        cr_assert_eq(res.finish, SL_FINISH_LENGTH, "request %d after the failure: %s", i, res.message);
    }
    cr_assert_eq(replica_stats(e, 1).steps_total, steps1, "the failed replica stepped again");
    cr_assert_eq(replica_stats(e, 0).generation_tokens_total, gen0 + 6 * 16);
    sl_request_t *r = NULL;
    cr_assert_eq(submit(e, prompts[0], 16, 1, &r), SL_DEVICE, "pinned to the dead replica");
    cr_assert(strstr(sl_last_error(), "replica 1 is out of service"), "%s", sl_last_error());
    sl_engine_free(e);
}

Test(engine_replicas, all_replicas_failed_refuses_requests, .timeout = 60) {
    setenv("SLUICE_FAULT_INJECT", "matmul:1", 1); /* no tag: the first matmul anywhere fails */
    sl_engine_t *e = NULL;
    cr_assert_eq(open_stories("cpu", 1, 4, &e), SL_OK, "%s", sl_last_error());
    sl_request_t *r;
    cr_assert_eq(submit(e, prompts[0], 8, -1, &r), SL_OK, "%s", sl_last_error());
    result res;
    collect(r, &res);
    sl_request_free(r);
    cr_assert_eq(res.finish, SL_FINISH_ERROR);
    cr_assert(strstr(res.message, "replica 0 (cpu)"), "%s", res.message);
    cr_assert_eq(stats(e).num_replicas_ready, 0);
    cr_assert_eq(submit(e, prompts[0], 8, -1, &r), SL_DEVICE);
    cr_assert(strstr(sl_last_error(), "every replica is out of service"), "%s", sl_last_error());
    sl_engine_free(e);
}

static void refused(const char *devices, int tp, const char *want) {
    sl_engine_t *e = NULL;
    sl_status st = open_stories(devices, tp, 4, &e);
    cr_assert_eq(st, SL_INVALID_ARGUMENT, "devices '%s' tp %d: %s", devices, tp, sl_status_name(st));
    cr_assert_null(e);
    cr_assert(strstr(sl_last_error(), want), "devices '%s': message '%s' lacks '%s'", devices, sl_last_error(), want);
}

Test(engine_replicas, bad_device_lists_are_refused) {
    refused("gpu", 1, "entry 1 ('gpu') is not a device");
    refused("cpu,", 1, "entry 2 is empty");
    refused(",cpu", 1, "entry 1 is empty");
    refused("cpu,cuda:x", 1, "entry 2 ('cuda:x') is not a device");
    refused("cpu,cpu,cpu", 2, "3 entries, which is not a multiple of tensor_parallel_size 2");
    refused("cpu", 0, "tensor_parallel_size 0 is outside [1, 64]");
    refused("cpu", 65, "tensor_parallel_size 65 is outside [1, 64]");
    refused("0,cpu", 2, "mixes cpu and CUDA");
    refused("0,1", 2, "spans CUDA devices 0 and 1");
    refused("0,0,1", 3, "spans CUDA devices 0 and 1");
    refused("0,0", 1, "replicas 0 and 1 both use CUDA device 0");
    refused("1,1,1,1", 2, "replicas 0 and 1 both use CUDA device 1");
    /* one GPU for a whole tensor-parallel group is what the single-GPU communicator runs: the device list is
     * accepted, so only a missing GPU refuses it */
    sl_engine_t *e0 = NULL;
    sl_status st0 = open_stories("0,0", 2, 4, &e0);
    if (st0 != SL_OK) {
        cr_assert_eq(st0, SL_INVALID_ARGUMENT);
        cr_assert(strstr(sl_last_error(), "no CUDA device is usable"), "%s", sl_last_error());
    }
    sl_engine_free(e0);
    /* "" means cpu, as NULL does */
    cr_assert_eq(open_stories("", 1, 4, &e0), SL_OK, "%s", sl_last_error());
    sl_engine_stats es;
    sl_engine_stats_init(&es);
    cr_assert_eq(sl_engine_get_stats(e0, &es), SL_OK);
    cr_assert_eq(es.num_replicas, 1);
    sl_engine_free(e0);
    /* "7" names a GPU: refused on a machine without one (all CI machines), with a message saying so */
    sl_engine_t *e = NULL;
    sl_status st = open_stories("7", 1, 4, &e);
    if (st != SL_OK) {
        cr_assert_eq(st, SL_INVALID_ARGUMENT);
        cr_assert(strstr(sl_last_error(), "CUDA device 7"), "%s", sl_last_error());
    }
    sl_engine_free(e);
    /* spaces around entries and the cuda: prefix are fine; "CPU" in capitals too */
    cr_assert_eq(open_stories(" cpu , CPU ", 1, 4, &e), SL_OK, "%s", sl_last_error());
    cr_assert_eq(stats(e).num_replicas, 2);
    sl_engine_free(e);
    /* NULL and "" mean cpu */
    cr_assert_eq(open_stories(NULL, 1, 4, &e), SL_OK, "%s", sl_last_error());
    cr_assert_eq(stats(e).num_replicas, 1);
    sl_engine_free(e);
}

/* "cpu,cpu" with tensor parallel 2 is ONE replica of two in-process ranks: requests complete through it (the
 * step's draws on rank 0's threads), and the stats count one replica. */
Test(engine_replicas, a_tensor_parallel_replica_serves, .timeout = 60) {
    sl_engine_t *e = NULL;
    cr_assert_eq(open_stories("cpu,cpu", 2, 4, &e), SL_OK, "%s", sl_last_error());
    enum { N = 6 };
    sl_request_t *rs[N];
    for (int i = 0; i < N; i++) cr_assert_eq(submit(e, prompts[i % 4], 24, -1, &rs[i]), SL_OK, "%s", sl_last_error());
    for (int i = 0; i < N; i++) {
        result res;
        collect(rs[i], &res);
        sl_request_free(rs[i]);
        cr_assert_eq(res.finish, SL_FINISH_LENGTH, "request %d: %s", i, res.message);
        cr_assert_eq(res.n_tokens, 24);
    }
    sl_engine_stats s = stats(e);
    cr_assert_eq(s.num_replicas, 1);
    cr_assert_eq(s.num_replicas_ready, 1);
    cr_assert_eq(s.generation_tokens_total, (uint64_t)N * 24);
    sl_engine_free(e);
}

/* gpu_memory_utilization is checked whatever the devices (a fraction of memory, in (0, 1]); a CPU replica does
 * not use it (its KV budget is kv_cache_size or the CPU default), so even 5% serves normally. */
Test(engine_replicas, gpu_memory_utilization_is_checked_and_cpu_ignores_it, .timeout = 60) {
    char *path = sl_test_data_path("stories260K.gguf");
    const double bad[] = {0.0, -0.5, 1.5, NAN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_engine_params ep;
        sl_engine_params_init(&ep);
        cr_assert_float_eq(ep.gpu_memory_utilization, 0.9, 1e-12, "the default");
        ep.model_path = path;
        ep.gpu_memory_utilization = bad[i];
        sl_engine_t *e = NULL;
        cr_assert_eq(sl_engine_create(&ep, &e), SL_INVALID_ARGUMENT, "fraction %g accepted", bad[i]);
        cr_assert(strstr(sl_last_error(), "gpu_memory_utilization"), "%s", sl_last_error());
    }
    sl_engine_params ep;
    sl_engine_params_init(&ep);
    ep.model_path = path;
    ep.n_threads = 1;
    ep.gpu_memory_utilization = 0.05;
    sl_engine_t *e = NULL;
    cr_assert_eq(sl_engine_create(&ep, &e), SL_OK, "%s", sl_last_error());
    sl_request_t *r;
    cr_assert_eq(submit(e, prompts[0], 16, -1, &r), SL_OK, "%s", sl_last_error());
    result res;
    collect(r, &res);
    sl_request_free(r);
    cr_assert_eq(res.finish, SL_FINISH_LENGTH, "%s", res.message);
    sl_engine_free(e);
    free(path);
}

/* kv_dtype auto (the default) follows the precision; an explicit type stays; an unknown one is refused. */
Test(engine_replicas, kv_dtype_auto_follows_the_precision) {
    sl_engine_params p;
    sl_engine_params_init(&p);
    cr_assert_eq(p.kv_dtype, SL_KV_AUTO);
    cr_assert_eq(sl__engine_kv_dtype(&p), SL_KV_F16, "fast precision: f16");
    p.precision = SL_PRECISION_EXACT;
    cr_assert_eq(sl__engine_kv_dtype(&p), SL_KV_F32, "exact precision: f32");
    p.kv_dtype = SL_KV_F16;
    cr_assert_eq(sl__engine_kv_dtype(&p), SL_KV_F16, "an explicit type is kept");
    p.precision = SL_PRECISION_FAST;
    p.kv_dtype = SL_KV_F32;
    cr_assert_eq(sl__engine_kv_dtype(&p), SL_KV_F32);
    char *path = sl_test_data_path("stories260K.gguf");
    p.model_path = path;
    p.kv_dtype = (sl_kv_dtype)7;
    sl_engine_t *e = NULL;
    cr_assert_eq(sl_engine_create(&p, &e), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "KV dtype"), "%s", sl_last_error());
    free(path);
}
