/*
 * test_model_kquants.c — a llama model in the tensor mix most downloaded files use decodes as its f32
 * original does.
 *
 * One synthetic llama (hidden 256, 2 layers, 4 heads / 2 KV heads, ffn 640, vocabulary of 300 byte-level
 * BPE tokens) is written by the GGUF writer twice: in f32, and in a Q4_K_M-style mix (Q4_K for attention and
 * the gate/up projections, Q6_K for attn_v of layer 0 and for the output, Q5_K for attn_v and ffn_up of layer
 * 1, Q5_1 for ffn_gate of layer 1, and Q5_0 / Q8_0 for ffn_down, whose rows of 640 are not whole 256-element
 * super-blocks, as llama.cpp falls back there). Both go through sl_model_forward on the same 48 tokens, in
 * fast mode (Q8_K / Q8_0 / Q8_1 activations) and in exact mode. Wherever the f32 model's top-2 margin is
 * clear, the quantized model must pick the same top token, and its logits must stay close overall; a
 * wrong block layout, scale or level anywhere turns them into noise. A second mix with the low-bit types
 * (Q2_K, Q3_K, and IQ4_NL for the 640-long rows, as llama.cpp's IQ mixes fall back) must load and run and
 * stay close to the f32 logits.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kdtype.h"
#include "model.h"
#include "sl_util.h"
#include "testutil.h"

enum { E = 256, N_LAYER = 2, N_HEAD = 4, N_HEAD_KV = 2, HD = 64, FF = 640, VOCAB = 300, N_TOK = 48 };

/* The tensor types of one file: per layer q, k, v, o, gate, up, down; then token_embd and output. */
typedef struct mix {
    int layer[N_LAYER][7];
    int embd, output;
} mix;

static const mix k_f32 = {{{0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0}}, SL_DTYPE_F32, SL_DTYPE_F32};
static const mix k_q4_k_m = {
    {{SL_DTYPE_Q4_K, SL_DTYPE_Q4_K, SL_DTYPE_Q6_K, SL_DTYPE_Q4_K, SL_DTYPE_Q4_K, SL_DTYPE_Q4_K, SL_DTYPE_Q5_0},
     {SL_DTYPE_Q4_K, SL_DTYPE_Q4_K, SL_DTYPE_Q5_K, SL_DTYPE_Q4_K, SL_DTYPE_Q5_1, SL_DTYPE_Q5_K, SL_DTYPE_Q8_0}},
    SL_DTYPE_Q4_K, SL_DTYPE_Q6_K};
/* The legacy types the CPU backend repacks in the fast precision (Q4_0, Q4_1, Q8_0), for the tensor-parallel
 * test: every row-parallel slice (attn_output 256 -> 128 columns, ffn_down 640 -> 320) is whole 32-blocks. */
static const mix k_legacy = {
    {{SL_DTYPE_Q4_1, SL_DTYPE_Q4_1, SL_DTYPE_Q8_0, SL_DTYPE_Q4_1, SL_DTYPE_Q4_0, SL_DTYPE_Q4_0, SL_DTYPE_Q8_0},
     {SL_DTYPE_Q4_0, SL_DTYPE_Q4_1, SL_DTYPE_Q8_0, SL_DTYPE_Q4_0, SL_DTYPE_Q4_1, SL_DTYPE_Q4_0, SL_DTYPE_Q4_1}},
    SL_DTYPE_Q8_0, SL_DTYPE_Q4_1};
static const mix k_low_bits = {
    {{SL_DTYPE_Q2_K, SL_DTYPE_Q3_K, SL_DTYPE_Q3_K, SL_DTYPE_Q3_K, SL_DTYPE_Q3_K, SL_DTYPE_Q2_K, SL_DTYPE_IQ4_NL},
     {SL_DTYPE_Q3_K, SL_DTYPE_Q2_K, SL_DTYPE_Q3_K, SL_DTYPE_Q2_K, SL_DTYPE_Q2_K, SL_DTYPE_Q3_K, SL_DTYPE_Q4_1}},
    SL_DTYPE_Q3_K, SL_DTYPE_Q6_K};

static char g_byte_tok[256][4];
static char g_extra_tok[VOCAB - 258][16];
static const char *g_tokens[VOCAB];

/* Gaussian N(0, sd^2) from the test RNG (Box-Muller). */
static float gauss(uint64_t *rng, float sd) {
    double u1 = (double)(sl_test_rand_u64(rng) >> 11) * 0x1.0p-53 + 0x1.0p-60;
    double u2 = (double)(sl_test_rand_u64(rng) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2)) * sd;
}

static void add_tensor(sl_gguf_writer *w, const char *name, int type, int64_t n_in, int64_t n_out, float sd,
                       uint64_t seed) {
    uint64_t rng = seed;
    float *v = malloc(sizeof(float) * (size_t)(n_in * n_out));
    for (int64_t i = 0; i < n_in * n_out; i++) v[i] = gauss(&rng, sd);
    const int64_t ne[2] = {n_in, n_out};
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, name, n_out > 1 ? 2 : 1, ne, type, v), SL_OK, "%s: %s", name,
                 sl_last_error());
    free(v);
}

static void add_norm(sl_gguf_writer *w, const char *name, uint64_t seed) {
    uint64_t rng = seed;
    float v[E];
    for (int i = 0; i < E; i++) v[i] = 1.0f + gauss(&rng, 0.1f);
    cr_assert_eq(sl_gguf_writer_add_tensor_f32(w, name, 1, (int64_t[]){E}, SL_DTYPE_F32, v), SL_OK);
}

/* Writes the model with the tensor types of `m` (the values are the same for every mix) to a temporary file;
 * returns its path (caller frees and unlinks). */
static char *write_model(const mix *m) {
    int next = 0x100;
    for (int b = 0; b < 256; b++) { /* GPT-2's byte-to-unicode map, as UTF-8 */
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : next++;
        memset(g_byte_tok[b], 0, sizeof g_byte_tok[b]);
        if (cp < 0x80) {
            g_byte_tok[b][0] = (char)cp;
        } else {
            g_byte_tok[b][0] = (char)(0xC0 | (cp >> 6));
            g_byte_tok[b][1] = (char)(0x80 | (cp & 0x3F));
        }
        g_tokens[b] = g_byte_tok[b];
    }
    g_tokens[256] = "ab";
    g_tokens[257] = "<|endoftext|>";
    for (int i = 258; i < VOCAB; i++) { /* filler words, reachable only by id */
        snprintf(g_extra_tok[i - 258], sizeof g_extra_tok[0], "w%03d", i);
        g_tokens[i] = g_extra_tok[i - 258];
    }
    int32_t types[VOCAB];
    for (int i = 0; i < VOCAB; i++) types[i] = i == 257 ? 3 : 1;
    static const char *const merges[] = {"a b"};

    sl_gguf_writer *w = NULL;
    cr_assert_eq(sl_gguf_writer_create(&w), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_str(w, "general.architecture", "llama"), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_str(w, "general.name", "kquant-synthetic"), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_u32(w, "llama.embedding_length", E), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_u32(w, "llama.block_count", N_LAYER), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_u32(w, "llama.attention.head_count", N_HEAD), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_u32(w, "llama.attention.head_count_kv", N_HEAD_KV), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_u32(w, "llama.feed_forward_length", FF), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_u32(w, "llama.context_length", 128), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2"), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", g_tokens, VOCAB), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 1), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, VOCAB), SL_OK);
    cr_assert_eq(sl_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 257), SL_OK);

    /* Scales: embeddings of unit size, projections 0.5/sqrt(n_in) (each block adds to the residual stream
     * without swamping it: at 1/sqrt(n_in) the random network amplified any perturbation, Q8_0's included,
     * two-fold), and an output of ~3/sqrt(E), which spreads the logits (std ~3) so that many positions have a clear
     * top token. */
    add_tensor(w, "token_embd.weight", m->embd, E, VOCAB, 1.0f, 11);
    add_norm(w, "output_norm.weight", 12);
    add_tensor(w, "output.weight", m->output, E, VOCAB, 3.0f / 16.0f, 13);
    static const char *const names[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    const int64_t n_in[7] = {E, E, E, N_HEAD * HD, E, E, FF};
    const int64_t n_out[7] = {N_HEAD * HD, N_HEAD_KV * HD, N_HEAD_KV * HD, E, FF, FF, E};
    for (int l = 0; l < N_LAYER; l++) {
        char name[64];
        for (int t = 0; t < 7; t++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[t]);
            add_tensor(w, name, m->layer[l][t], n_in[t], n_out[t], 0.5f / sqrtf((float)n_in[t]),
                       100 + 10 * (uint64_t)l + (uint64_t)t);
        }
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        add_norm(w, name, 200 + (uint64_t)l);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        add_norm(w, name, 300 + (uint64_t)l);
    }
    char *path = strdup("/tmp/sluice_kquant_model_XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(sl_gguf_writer_write_file(w, path), SL_OK, "%s", sl_last_error());
    sl_gguf_writer_free(w);
    return path;
}

/* Loads the file and returns the logits of N_TOK fixed tokens, one sequence, prefill in chunks of 16 rows
 * (batched steps) then the remaining rows one at a time (decode steps). */
static float *run_model_tp(const char *path, sl_precision prec, int tp) {
    sl_model_params mp = {.path = path, .n_threads = 2, .precision = prec, .max_model_len = 128, .tp_size = tp};
    sl_model *m = NULL;
    cr_assert_eq(sl_model_load(&mp, &m), SL_OK, "%s", sl_last_error());
    cr_assert_eq(sl_model_get_hparams(m)->n_vocab, VOCAB);
    cr_assert_eq(sl_model_kv_alloc(m, 4, 16, SL_KV_F32), SL_OK);
    int32_t tokens[N_TOK], pos[N_TOK], seq[N_TOK] = {0};
    int64_t slot[N_TOK];
    uint8_t out[N_TOK];
    int32_t table[4] = {0, 1, 2, 3};
    const int32_t *tables[1] = {table};
    uint64_t rng = 4242;
    for (int i = 0; i < N_TOK; i++) {
        tokens[i] = (int32_t)(sl_test_rand_u64(&rng) % VOCAB);
        pos[i] = i;
        slot[i] = i;
        out[i] = SL_OUT_LOGITS;
    }
    float *logits = malloc(sizeof(float) * N_TOK * VOCAB);
    for (int s = 0; s < N_TOK;) {
        int k = s < 32 ? 16 : 1;
        sl_batch b = {.n_tokens = k, .tokens = tokens + s, .pos = pos + s, .seq = seq, .slot = slot + s,
                      .output = out + s, .n_seqs = 1, .block_tables = tables, .logits = logits + (size_t)s * VOCAB};
        cr_assert_eq(sl_model_forward(m, &b), SL_OK, "%s", sl_last_error());
        s += k;
    }
    sl_model_free(m);
    return logits;
}

static float *run_model(const char *path, sl_precision prec) { return run_model_tp(path, prec, 1); }

static int argmax(const float *v, int n, float *margin) {
    int best = 0, second = -1;
    for (int i = 1; i < n; i++) {
        if (v[i] > v[best]) {
            second = best;
            best = i;
        } else if (second < 0 || v[i] > v[second]) {
            second = i;
        }
    }
    *margin = v[best] - v[second];
    return best;
}

typedef struct agreement {
    double norm_err; /* ||q - f|| / ||f|| over all logits */
    int n_clear;     /* positions whose f32 top-2 margin is clear */
    int n_agree;     /* of those, positions where the quantized model's top token is the f32 one */
} agreement;

static agreement compare(const float *f, const float *q, double clear_margin) {
    agreement a = {0, 0, 0};
    double num = 0, den = 0;
    for (int p = 0; p < N_TOK; p++) {
        const float *fr = f + (size_t)p * VOCAB, *qr = q + (size_t)p * VOCAB;
        for (int i = 0; i < VOCAB; i++) {
            num += ((double)qr[i] - fr[i]) * ((double)qr[i] - fr[i]);
            den += (double)fr[i] * fr[i];
        }
        float mf, mq;
        int tf = argmax(fr, VOCAB, &mf), tq = argmax(qr, VOCAB, &mq);
        if (mf > clear_margin) {
            a.n_clear++;
            a.n_agree += tf == tq;
        }
    }
    a.norm_err = sqrt(num / den);
    return a;
}

/* The clear-margin threshold: the f32 logits spread with std ~3 and the Q4_K_M mix moves them by ~7.5% of
 * their norm (measured; Q4_0 everywhere gives ~11%, Q8_0 ~1%), ~0.22 per logit, so a top-2 margin of 1.0 is
 * over 3 standard deviations of the difference of two logits' errors. 19 of the 48 positions have such a
 * margin here. */
#define CLEAR_MARGIN 1.0

Test(model_kquants, q4_k_m_mix_matches_f32) {
    char *pf = write_model(&k_f32), *pq = write_model(&k_q4_k_m);
    float *ref = run_model(pf, SL_PRECISION_EXACT);
    for (int mode = 0; mode < 2; mode++) {
        const sl_precision prec = mode ? SL_PRECISION_EXACT : SL_PRECISION_FAST;
        float *q = run_model(pq, prec);
        agreement a = compare(ref, q, CLEAR_MARGIN);
        cr_assert(a.n_clear >= N_TOK / 4, "only %d of %d positions have a clear margin", a.n_clear, N_TOK);
        cr_assert_eq(a.n_agree, a.n_clear, "%s: top token differs from f32 at %d of %d clear positions",
                     mode ? "exact" : "fast", a.n_clear - a.n_agree, a.n_clear);
        cr_assert(a.norm_err < 0.1, "%s: logits' normalized error vs f32 %.4f", mode ? "exact" : "fast", a.norm_err);
        free(q);
    }
    free(ref);
    unlink(pf);
    unlink(pq);
    free(pf);
    free(pq);
}

Test(model_kquants, low_bit_mix_runs_and_correlates) {
    char *pf = write_model(&k_f32), *pq = write_model(&k_low_bits);
    float *ref = run_model(pf, SL_PRECISION_EXACT);
    float *q = run_model(pq, SL_PRECISION_FAST);
    for (int i = 0; i < N_TOK * VOCAB; i++) cr_assert(isfinite(q[i]), "logit %d is not finite", i);
    agreement a = compare(ref, q, CLEAR_MARGIN);
    /* Q2_K / Q3_K move each weight by ~15-30% of its scale; the logits stay recognisably the same */
    cr_assert(a.norm_err < 0.5, "low-bit mix: logits' normalized error vs f32 %.4f", a.norm_err);
    cr_assert(a.n_agree * 4 >= a.n_clear * 3, "low-bit mix: top token agrees at only %d of %d clear positions",
              a.n_agree, a.n_clear);
    free(ref);
    free(q);
    unlink(pf);
    unlink(pq);
    free(pf);
    free(pq);
}

/* Tensor parallel over quantized, repacked weights: TP 2 splits every matrix of the legacy mix (column slices
 * of Q/K/V/gate/up; row-parallel attn_output and ffn_down sliced inside their rows, so the packed copy is made
 * from rows row_bytes apart that each hold only part of the row), and must give the TP 1 logits up to the
 * order of the split sums: exact precision to float rounding, fast precision within a small bound (a changed
 * last bit can move an 8-bit activation level downstream; measured here: none did, the logits were identical)
 * with the same top token where the margin is clear. A slice packed from the wrong row stride fails it.
 * First, the mix itself against its f32 original (the repacked products end to end). */
Test(model_kquants, legacy_mix_and_tensor_parallel) {
    char *pf = write_model(&k_f32), *pq = write_model(&k_legacy);
    float *ref = run_model(pf, SL_PRECISION_EXACT);
    float *one = run_model(pq, SL_PRECISION_FAST);
    agreement a = compare(ref, one, CLEAR_MARGIN);
    cr_assert(a.norm_err < 0.15, "legacy mix vs f32: normalized error %.4f", a.norm_err);
    cr_assert_eq(a.n_agree, a.n_clear, "legacy mix: top token differs from f32 at %d of %d clear positions",
                 a.n_clear - a.n_agree, a.n_clear);
    for (int mode = 0; mode < 2; mode++) {
        const sl_precision prec = mode ? SL_PRECISION_EXACT : SL_PRECISION_FAST;
        float *t1 = mode ? run_model(pq, prec) : one, *t2 = run_model_tp(pq, prec, 2);
        agreement b = compare(t1, t2, 0.1);
        const double bound = mode ? 1e-5 : 2e-2;
        cr_assert(b.norm_err < bound, "%s: TP 2 vs TP 1 normalized error %.3g (bound %g)", mode ? "exact" : "fast",
                  b.norm_err, bound);
        cr_assert_eq(b.n_agree, b.n_clear, "%s: TP 2 top token differs at %d of %d clear positions",
                     mode ? "exact" : "fast", b.n_clear - b.n_agree, b.n_clear);
        cr_log_info("%s: TP 2 vs TP 1 normalized error %.3g\n", mode ? "exact" : "fast", b.norm_err);
        if (mode) free(t1);
        free(t2);
    }
    free(one);
    free(ref);
    unlink(pf);
    unlink(pq);
    free(pf);
    free(pq);
}
