/*
 * test_model_logits.c — the default model's logits against an independent reference, teacher-forced.
 *
 * tests/gen_reference_logits.py runs a float64 numpy llama (tests/reference_llama.py) over the same GGUF and
 * stores, for 4 prompts of 64 tokens, the logits at every position on 1024 fixed vocabulary ids plus the 16
 * best ids, the top-2 margin and the full-vocabulary norm (format documented at the top of that script).
 * Here the same 64 tokens go through sl_model_forward and the logits are compared:
 *   - relative error ‖Δ‖/‖ref‖ over the stored ids, per position, under a bound per precision mode;
 *   - the top token agrees wherever the reference's top-2 margin exceeds δ for that mode.
 * Also: the same tokens fed one at a time (decode) give logits bit-identical to the one-batch prefill, the
 * batch invariance the batching engine relies on.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "testutil.h"

typedef struct ref_prompt {
    int n_prompt;
    int32_t tokens[64];
    int32_t top1[64];
    float margin[64];
    float l2[64];
    int32_t top_ids[64][16];
    float top_logits[64][16];
    float *sample; /* [64][n_sample] */
} ref_prompt;

typedef struct ref_file {
    uint32_t n_prompts, n_pos, n_vocab, n_sample, n_top;
    int32_t *sample_ids;
    ref_prompt p[4];
    char *buf;
} ref_file;

static void rd(const char **c, void *dst, size_t n) {
    memcpy(dst, *c, n);
    *c += n;
}

static void load_ref(ref_file *r) {
    char *path = sl_test_data_path("ref_logits_smollm2.bin");
    size_t len;
    r->buf = sl_test_read_file(path, &len);
    cr_assert_not_null(r->buf, "cannot read %s", path);
    free(path);
    const char *c = r->buf;
    cr_assert(memcmp(c, "SLREFLG1", 8) == 0);
    c += 16; /* magic, model bytes */
    rd(&c, &r->n_prompts, 4);
    rd(&c, &r->n_pos, 4);
    rd(&c, &r->n_vocab, 4);
    rd(&c, &r->n_sample, 4);
    rd(&c, &r->n_top, 4);
    cr_assert(r->n_prompts == 4 && r->n_pos == 64 && r->n_top == 16);
    r->sample_ids = malloc(r->n_sample * 4);
    rd(&c, r->sample_ids, r->n_sample * 4);
    for (uint32_t i = 0; i < r->n_prompts; i++) {
        ref_prompt *p = &r->p[i];
        uint32_t np, tb;
        rd(&c, &np, 4);
        rd(&c, &tb, 4);
        c += tb;
        p->n_prompt = (int)np;
        rd(&c, p->tokens, sizeof p->tokens);
        rd(&c, p->top1, sizeof p->top1);
        rd(&c, p->margin, sizeof p->margin);
        rd(&c, p->l2, sizeof p->l2);
        rd(&c, p->top_ids, sizeof p->top_ids);
        rd(&c, p->top_logits, sizeof p->top_logits);
        p->sample = malloc((size_t)64 * r->n_sample * 4);
        rd(&c, p->sample, (size_t)64 * r->n_sample * 4);
    }
    cr_assert(memcmp(c, "SLREFEND", 8) == 0, "trailer");
}

static sl_model *load_model(sl_precision prec) {
    char *path = sl_test_default_model_path();
    sl_model_params mp = {.path = path, .n_threads = 2, .precision = prec, .max_model_len = 256};
    sl_model *m = NULL;
    sl_status st = sl_model_load(&mp, &m);
    cr_assert_eq(st, SL_OK, "loading %s failed (%s); run ./setup.sh to fetch the default model", path,
                 sl_last_error());
    free(path);
    cr_assert_eq(sl_model_kv_alloc(m, 8, 16, SL_KV_F32), SL_OK);
    return m;
}

/* Runs tokens[0..n) in batches of `chunk` rows; every row asks for logits. */
static void forward_all(sl_model *m, const int32_t *tokens, int n, int chunk, float *logits, int n_vocab) {
    int32_t pos[64], seq[64] = {0};
    int64_t slot[64];
    uint8_t out[64];
    int32_t table[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const int32_t *tables[1] = {table};
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        slot[i] = i;
        out[i] = SL_OUT_LOGITS;
    }
    for (int s = 0; s < n; s += chunk) {
        int k = n - s < chunk ? n - s : chunk;
        sl_batch b = {.n_tokens = k, .tokens = tokens + s, .pos = pos + s, .seq = seq, .slot = slot + s,
                      .output = out + s, .n_seqs = 1, .block_tables = tables,
                      .logits = logits + (size_t)s * n_vocab};
        cr_assert_eq(sl_model_forward(m, &b), SL_OK, "%s", sl_last_error());
    }
}

/* Compares every position; returns the worst relative error seen. */
static double compare(const ref_file *r, const ref_prompt *p, const float *logits, int n_vocab, double rel_bound,
                      double margin_delta, const char *mode, int idx) {
    double worst = 0;
    for (int pos = 0; pos < 64; pos++) {
        const float *row = logits + (size_t)pos * n_vocab;
        double num = 0, den = 0;
        for (uint32_t j = 0; j < r->n_sample; j++) {
            double d = (double)row[r->sample_ids[j]] - p->sample[(size_t)pos * r->n_sample + j];
            num += d * d;
            den += (double)p->sample[(size_t)pos * r->n_sample + j] * p->sample[(size_t)pos * r->n_sample + j];
        }
        for (int j = 0; j < 16; j++) {
            double d = (double)row[p->top_ids[pos][j]] - p->top_logits[pos][j];
            num += d * d;
            den += (double)p->top_logits[pos][j] * p->top_logits[pos][j];
        }
        double rel = sqrt(num / den);
        if (rel > worst) worst = rel;
        cr_expect(rel < rel_bound, "%s prompt %d position %d: relative error %.4g over bound %.4g", mode, idx, pos, rel,
                  rel_bound);
        int best = 0;
        for (int v = 1; v < n_vocab; v++)
            if (row[v] > row[best]) best = v;
        if (p->margin[pos] > margin_delta)
            cr_expect_eq(best, p->top1[pos], "%s prompt %d position %d: top token %d, reference %d (margin %.3f)",
                         mode, idx, pos, best, p->top1[pos], p->margin[pos]);
    }
    return worst;
}

/* Bounds (‖Δ‖/‖ref‖ over the stored ids, worst position) and top-1 margins δ:
 * exact mode keeps activations f32 against the float64 reference on identical (dequantized) weights: only
 * f32 rounding over 30 layers separates them (measured worst ~1e-5), so 1e-3 leaves room for SIMD order.
 * Fast mode quantizes every product's activations to 8 bits (per 32-value block, as llama.cpp does), and
 * SmolLM2's residual stream has a few very large channels, so a block holding one of them quantizes its
 * other values coarsely: measured (2026-11-25, this suite's 256 positions) mostly under 0.05, worst 0.25 at
 * the start of the assistant turn of the ChatML prompt. Bound 0.35; the top token must agree wherever the
 * reference's top-2 margin exceeds 0.5 logits (it did at every such position). */
#define EXACT_REL 1e-3
#define EXACT_DELTA 0.01
#define FAST_REL 0.35
#define FAST_DELTA 0.5

static void run_mode(sl_precision prec, double rel, double delta, const char *name) {
    ref_file r;
    load_ref(&r);
    sl_model *m = load_model(prec);
    int n_vocab = sl_model_get_hparams(m)->n_vocab;
    cr_assert_eq((uint32_t)n_vocab, r.n_vocab);
    float *logits = malloc((size_t)64 * n_vocab * sizeof(float));
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        forward_all(m, r.p[i].tokens, 64, 64, logits, n_vocab);
        double w = compare(&r, &r.p[i], logits, n_vocab, rel, delta, name, i);
        if (w > worst) worst = w;
    }
    cr_log_info("%s mode: worst relative logit error %.3g\n", name, worst);
    free(logits);
    sl_model_free(m);
    for (int i = 0; i < 4; i++) free(r.p[i].sample);
    free(r.sample_ids);
    free(r.buf);
}

Test(model_logits, exact_mode_matches_reference, .timeout = 300) { run_mode(SL_PRECISION_EXACT, EXACT_REL, EXACT_DELTA, "exact"); }

Test(model_logits, fast_mode_matches_reference, .timeout = 300) { run_mode(SL_PRECISION_FAST, FAST_REL, FAST_DELTA, "fast"); }

Test(model_logits, decode_equals_prefill_bit_for_bit, .timeout = 300) {
    ref_file r;
    load_ref(&r);
    sl_model *m = load_model(SL_PRECISION_FAST);
    int n_vocab = sl_model_get_hparams(m)->n_vocab;
    float *a = malloc((size_t)64 * n_vocab * sizeof(float));
    float *b = malloc((size_t)64 * n_vocab * sizeof(float));
    forward_all(m, r.p[1].tokens, 64, 64, a, n_vocab); /* one prefill batch */
    forward_all(m, r.p[1].tokens, 64, 1, b, n_vocab);  /* 64 single-token decodes */
    cr_assert(memcmp(a, b, (size_t)64 * n_vocab * sizeof(float)) == 0,
              "logits differ between a 64-token batch and token-by-token decode");
    forward_all(m, r.p[1].tokens, 64, 7, b, n_vocab); /* odd chunks (chunked prefill) */
    cr_assert(memcmp(a, b, (size_t)64 * n_vocab * sizeof(float)) == 0, "logits differ with 7-token chunks");
    free(a);
    free(b);
    sl_model_free(m);
    for (int i = 0; i < 4; i++) free(r.p[i].sample);
    free(r.sample_ids);
    free(r.buf);
}
