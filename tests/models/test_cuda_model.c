/*
 * test_cuda_model.c — whole-model logits on the GPU against the CPU, label gpu (DESIGN.md §5).
 *
 * The same prompt runs through the model loaded twice: on the CPU backend in exact mode (f32 activations over
 * the exactly dequantized weights: the reference) and on CUDA device 0 (sl_model_params.devices = {0}).
 * Checked, per position: the normalized logit error ‖gpu − cpu‖ / ‖cpu‖ over the whole vocabulary under a bound,
 * and the same top token wherever the CPU's top-2 margin exceeds 0.5 logits (a smaller margin may flip under
 * any rounding and says nothing). Also: a sequence's logits computed alone and inside a batch with another
 * sequence (one decoding, one prefilling, as the engine mixes them) follow the same rule on the GPU, and the
 * f16 KV cache gives the same answers as the f32 one within the same rule.
 *
 * Bound. The GPU multiplies f16 weights by f16 activations (relative rounding 2^-11 each, f32 accumulation):
 * ~11 significant bits per product where the CPU's fast mode keeps 8 (its bound against float64 is 0.35 on
 * the default model, tests/models/test_model_logits.c) and f16's per-element exponent is not hurt by
 * SmolLM2's few huge residual channels as a shared block scale is. Expected ~1e-2 after 30 layers; bound
 * 0.05. NOT YET MEASURED on a GPU (written without one): tests/gpu/validate.sh prints the worst error seen.
 *
 * Batched vs alone: both on the GPU, the products of another row count may take another cuBLAS algorithm
 * (another summation order), so bit equality is not promised: bound 0.01 and the same top-1 rule.
 *
 * Skips, visibly: without a CUDA device; for the default model, when its file is absent (the GPU machine has
 * no network and the 98 MB file does not travel with the tree; stories260K always runs).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "comm.h"
#include "model.h"
#include "testutil.h"

#define SKIP_WITHOUT_CUDA()                                                                                  \
    do {                                                                                                     \
        if (sl_backend_cuda_device_count() < 1)                                                              \
            cr_skip_test("no CUDA device (a build without CUDA, or no GPU or driver here): GPU model not run"); \
    } while (0)

#define GPU_REL 0.05
#define BATCH_REL 0.01
#define TOP1_MARGIN 0.5
#define MAX_TOK 48

static const char *k_text = "Once upon a time, there was a little girl named Lily. She loved to play outside in "
                            "the park with her friends, and one day she found a shiny red ball under a tree.";

static sl_model *load(const char *path, int on_gpu, sl_kv_dtype kv) {
    static const int dev0[1] = {0};
    sl_model_params mp = {.path = path, .n_threads = 2, .precision = SL_PRECISION_EXACT, .max_model_len = 256,
                          .tp_size = 1, .devices = on_gpu ? dev0 : NULL};
    sl_model *m = NULL;
    sl_status st = sl_model_load(&mp, &m);
    cr_assert_eq(st, SL_OK, "loading %s %s: %s", path, on_gpu ? "on CUDA device 0" : "on the CPU", sl_last_error());
    cr_assert_eq(sl_model_kv_alloc(m, 16, 16, kv), SL_OK, "%s", sl_last_error());
    return m;
}

static int tokenize(const sl_model *m, int32_t *out) {
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(sl_model_tokenize(m, k_text, strlen(k_text), 0, &ids, &n), SL_OK, "%s", sl_last_error());
    if (n > MAX_TOK) n = MAX_TOK;
    memcpy(out, ids, n * sizeof(int32_t));
    free(ids);
    return (int)n;
}

/* Sequence 0 alone: tokens[0..n) as one prefill, blocks 0..3; every row asks for logits. */
static void forward_alone(sl_model *m, const int32_t *tokens, int n, float *logits) {
    int32_t pos[MAX_TOK], seq[MAX_TOK] = {0};
    int64_t slot[MAX_TOK];
    uint8_t out[MAX_TOK];
    const int32_t table[4] = {3, 0, 2, 1}; /* out of order, so slots are not positions */
    const int32_t *tables[1] = {table};
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        slot[i] = (int64_t)table[i / 16] * 16 + i % 16;
        out[i] = SL_OUT_LOGITS;
    }
    sl_batch b = {.n_tokens = n, .tokens = tokens, .pos = pos, .seq = seq, .slot = slot, .output = out,
                  .n_seqs = 1, .block_tables = tables, .logits = logits};
    cr_assert_eq(sl_model_forward(m, &b), SL_OK, "%s", sl_last_error());
}

/* Worst per-position error of got against ref over n positions; checks the top-1 rule. */
static double compare(const float *got, const float *ref, int n, int n_vocab, double bound, const char *what) {
    double worst = 0;
    for (int p = 0; p < n; p++) {
        const float *g = got + (size_t)p * n_vocab, *r = ref + (size_t)p * n_vocab;
        double num = 0, den = 0;
        int best_g = 0, best_r = 0, second_r = -1;
        for (int v = 0; v < n_vocab; v++) {
            cr_assert(isfinite(g[v]), "%s position %d: logit %d is %f", what, p, v, (double)g[v]);
            double d = (double)g[v] - r[v];
            num += d * d;
            den += (double)r[v] * r[v];
            if (g[v] > g[best_g]) best_g = v;
            if (r[v] > r[best_r]) {
                second_r = best_r;
                best_r = v;
            } else if (v != best_r && (second_r < 0 || r[v] > r[second_r])) {
                second_r = v;
            }
        }
        double rel = sqrt(num / den);
        worst = rel > worst ? rel : worst;
        cr_expect(rel <= bound, "%s position %d: normalized logit error %.4g > %.4g", what, p, rel, bound);
        if (second_r >= 0 && r[best_r] - r[second_r] > TOP1_MARGIN)
            cr_expect_eq(best_g, best_r, "%s position %d: top token %d, reference %d (margin %.3f)", what, p, best_g,
                         best_r, (double)(r[best_r] - r[second_r]));
    }
    return worst;
}

static void gpu_vs_cpu(const char *path, sl_kv_dtype kv) {
    sl_model *cpu = load(path, 0, SL_KV_F32), *gpu = load(path, 1, kv);
    const int n_vocab = sl_model_get_hparams(cpu)->n_vocab;
    int32_t tokens[MAX_TOK];
    const int n = tokenize(cpu, tokens);
    cr_assert(n >= 20, "prompt of %d tokens", n);
    float *ref = malloc((size_t)n * n_vocab * sizeof(float)), *got = malloc((size_t)n * n_vocab * sizeof(float));
    forward_alone(cpu, tokens, n, ref);
    for (size_t i = 0; i < (size_t)n * n_vocab; i++) got[i] = NAN; /* poison */
    forward_alone(gpu, tokens, n, got);
    /* f16 products cannot reproduce f32 bits: identical logits would mean the model never left the CPU */
    cr_expect(memcmp(got, ref, (size_t)n * n_vocab * sizeof(float)) != 0,
              "GPU logits are bit-identical to the CPU's: did sl_model_load place the model on device 0?");
    char what[256];
    snprintf(what, sizeof what, "%s (%s KV) GPU vs CPU", path, kv == SL_KV_F16 ? "f16" : "f32");
    double worst = compare(got, ref, n, n_vocab, GPU_REL, what);
    cr_log_info("%s: worst normalized logit error %.3g over %d positions\n", what, worst, n);
    printf("[METRIC] %s: worst normalized logit error %.4g over %d positions\n", what, worst, n);
    free(ref);
    free(got);
    sl_model_free(gpu);
    sl_model_free(cpu);
}

/* Sequence 0 decodes its last token while sequence 1 prefills the whole prompt, in one batch; each must give
 * what it gives alone. */
static void batched_vs_alone(const char *path) {
    sl_model *gpu = load(path, 1, SL_KV_F32);
    const int n_vocab = sl_model_get_hparams(gpu)->n_vocab;
    int32_t tokens[MAX_TOK];
    const int n = tokenize(gpu, tokens);
    float *alone = malloc((size_t)n * n_vocab * sizeof(float));
    forward_alone(gpu, tokens, n, alone);
    /* Sequence 0 (blocks 3,0,2,1) already holds positions 0..n-1 from the run above: rewrite its last token
     * (same K/V) as a decode row, next to sequence 1 (blocks 4..7) prefilling all n tokens. */
    const int T = n + 1;
    int32_t tok[MAX_TOK + 1], pos[MAX_TOK + 1], seq[MAX_TOK + 1];
    int64_t slot[MAX_TOK + 1];
    uint8_t out[MAX_TOK + 1];
    const int32_t t0[4] = {3, 0, 2, 1}, t1[4] = {4, 5, 6, 7};
    const int32_t *tables[2] = {t0, t1};
    tok[0] = tokens[n - 1], pos[0] = n - 1, seq[0] = 0, out[0] = SL_OUT_LOGITS;
    slot[0] = (int64_t)t0[(n - 1) / 16] * 16 + (n - 1) % 16;
    for (int i = 0; i < n; i++) {
        tok[i + 1] = tokens[i], pos[i + 1] = i, seq[i + 1] = 1, out[i + 1] = SL_OUT_LOGITS;
        slot[i + 1] = (int64_t)t1[i / 16] * 16 + i % 16;
    }
    float *both = malloc((size_t)T * n_vocab * sizeof(float));
    for (size_t i = 0; i < (size_t)T * n_vocab; i++) both[i] = NAN;
    sl_batch b = {.n_tokens = T, .tokens = tok, .pos = pos, .seq = seq, .slot = slot, .output = out, .n_seqs = 2,
                  .block_tables = tables, .logits = both};
    cr_assert_eq(sl_model_forward(gpu, &b), SL_OK, "%s", sl_last_error());
    char what[256];
    snprintf(what, sizeof what, "%s decode row batched vs alone", path);
    compare(both, alone + (size_t)(n - 1) * n_vocab, 1, n_vocab, BATCH_REL, what);
    snprintf(what, sizeof what, "%s prefill rows batched vs alone", path);
    compare(both + n_vocab, alone, n, n_vocab, BATCH_REL, what);
    free(alone);
    free(both);
    sl_model_free(gpu);
}

static char *default_model_or_skip(void) {
    char *path = sl_test_default_model_path();
    if (access(path, R_OK) != 0) {
        free(path);
        cr_skip_test("the default model is not on this machine (run ./setup.sh where there is a network)");
    }
    return path;
}

Test(cuda_model, stories260k_gpu_matches_cpu, .timeout = 120) {
    SKIP_WITHOUT_CUDA();
    char *path = sl_test_data_path("stories260K.gguf");
    gpu_vs_cpu(path, SL_KV_F32);
    gpu_vs_cpu(path, SL_KV_F16);
    free(path);
}

Test(cuda_model, stories260k_batched_equals_alone, .timeout = 120) {
    SKIP_WITHOUT_CUDA();
    char *path = sl_test_data_path("stories260K.gguf");
    batched_vs_alone(path);
    free(path);
}

Test(cuda_model, default_model_gpu_matches_cpu, .timeout = 300) {
    SKIP_WITHOUT_CUDA();
    char *path = default_model_or_skip();
    gpu_vs_cpu(path, SL_KV_F32);
    gpu_vs_cpu(path, SL_KV_F16);
    free(path);
}

Test(cuda_model, default_model_batched_equals_alone, .timeout = 300) {
    SKIP_WITHOUT_CUDA();
    char *path = default_model_or_skip();
    batched_vs_alone(path);
    free(path);
}

/* Tensor parallel on ONE GPU: tp ranks on device 0 (separate streams, the single-GPU communicator), against the
 * same model at TP 1 on device 0. A split sum is ordered differently, so the bound is the batched one. */
static void tp_on_one_gpu(const char *path, int tp) {
    static const int devs[4] = {0, 0, 0, 0};
    sl_model *one = load(path, 1, SL_KV_F32);
    sl_model_params mp = {.path = path, .n_threads = 2, .precision = SL_PRECISION_EXACT, .max_model_len = 256,
                          .tp_size = tp, .devices = devs};
    sl_model *split = NULL;
    cr_assert_eq(sl_model_load(&mp, &split), SL_OK, "loading %s at TP %d on device 0: %s", path, tp, sl_last_error());
    cr_assert_eq(sl_model_kv_alloc(split, 16, 16, SL_KV_F32), SL_OK, "%s", sl_last_error());
    const int n_vocab = sl_model_get_hparams(one)->n_vocab;
    int32_t tokens[MAX_TOK];
    const int n = tokenize(one, tokens);
    float *ref = malloc((size_t)n * n_vocab * sizeof(float)), *got = malloc((size_t)n * n_vocab * sizeof(float));
    forward_alone(one, tokens, n, ref);
    for (size_t i = 0; i < (size_t)n * n_vocab; i++) got[i] = NAN;
    forward_alone(split, tokens, n, got);
    char what[256];
    snprintf(what, sizeof what, "%s TP %d on one GPU vs TP 1", path, tp);
    double worst = compare(got, ref, n, n_vocab, BATCH_REL, what);
    printf("[METRIC] %s: worst normalized logit error %.4g over %d positions\n", what, worst, n);
    sl_comm_stats cs;
    cr_assert_eq(sl_model_comm_stats(split, 0, &cs), SL_OK);
    cr_expect_eq(cs.all_reduces, 2 * (uint64_t)sl_model_get_hparams(one)->n_layer, "two all-reduces per layer");
    free(ref);
    free(got);
    sl_model_free(split);
    sl_model_free(one);
}

Test(cuda_model, stories260k_tp2_on_one_gpu, .timeout = 120) {
    SKIP_WITHOUT_CUDA();
    char *path = sl_test_data_path("stories260K.gguf"); /* 8 heads, 4 KV heads: TP 2 and 4 divide them */
    tp_on_one_gpu(path, 2);
    tp_on_one_gpu(path, 4);
    free(path);
}

Test(cuda_model, default_model_tp3_on_one_gpu, .timeout = 300) {
    SKIP_WITHOUT_CUDA();
    char *path = default_model_or_skip(); /* 9 heads, 3 KV heads: TP 3 */
    tp_on_one_gpu(path, 3);
    free(path);
}
