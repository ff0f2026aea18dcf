/*
 * make_bench_models.c — writes the synthetic llama model the type benchmark runs, once per weight type.
 *
 *   sluice-make-bench-models [-o DIR] [--types q4_k,q6_k,q4_0,q8_0,q5_k,q4_1] [--tokenizer GGUF] [--shape 1b|smol]
 *
 * One f32 model, many files: every tensor is drawn from a fixed-seed generator in a fixed order, so each
 * type's file quantizes the very same f32 weights (what issue 9's benchmark asks: "made by the writer from one
 * f32 model"), without holding the whole f32 model in memory. The shape is a small 1B-class llama (hidden
 * 1024, 8 layers, 16 heads of 64, 4 KV heads, FFN 2816, context 2048) whose every row length (1024, 2816) is
 * a multiple of 256, so the K-quants apply to every matrix, as in a real Q4_K/Q6_K file. Weights are
 * N(0, 0.02), the scale of a trained model's initialisation, so quantizers see realistic ranges; norms are 1.
 *
 * Every matrix, token_embd included, is in the file's type and the output projection is tied to token_embd,
 * so the file measures its type alone (no Q8_0 embedding diluting the comparison). The tokenizer is copied
 * key by key (every tokenizer.* key) from the default SmolLM2 model, so llama.cpp loads the files and
 * sluice-bench-decode's prompt tokenizes to real ids; the vocabulary is that tokenizer's 49152 tokens.
 * Output: DIR/bench-1b-TYPE.gguf (TYPE lowercase, e.g. bench-1b-q4_k.gguf).
 *
 * --shape smol writes SmolLM2-135M's shape instead (hidden 576, 30 layers, 9 heads / 3 KV heads of 64, FFN
 * 1536; rows are not whole 256-blocks, so only q4_0, q4_1 and q8_0 apply) as DIR/bench-smol-TYPE.gguf: a
 * stand-in for the default model where its file cannot go (the GPU machine has no network and the 98 MB file
 * does not travel with the tree; tests/gpu/validate.sh writes one with stories260K's tokenizer).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "kdtype.h"
#include "sluice/sluice.h"

/* The model's shape (see the top comment). */
typedef struct bm_shape {
    const char *name;
    int dim, layers, heads, kv_heads, head_dim, ffn, ctx;
} bm_shape;

static const bm_shape k_shapes[] = {
    /* FFN 2816: 2.75 x dim, rounded to a multiple of 256 (as llama's 11008 for 4096) */
    {"1b", 1024, 8, 16, 4, 64, 2816, 2048},
    {"smol", 576, 30, 9, 3, 64, 1536, 8192}, /* SmolLM2-135M */
};
static const bm_shape *g_shape = &k_shapes[0];

#define BM_SEED 0x5EEDB0B5ULL /* fixed: every file holds the same f32 model */
#define BM_STD 0.02f          /* weight standard deviation of a trained model's init */

/* A file type: the tensor type, its name for the file, and llama.cpp's general.file_type value for it
 * (LLAMA_FTYPE_MOSTLY_*; for the K-quants the _S variant, as every matrix has the one type). */
typedef struct bm_type {
    const char *name;
    int dtype;
    uint32_t ftype;
} bm_type;

static const bm_type k_types[] = {
    {"q4_0", SL_DTYPE_Q4_0, 2}, {"q4_1", SL_DTYPE_Q4_1, 3},  {"q8_0", SL_DTYPE_Q8_0, 7},
    {"q4_k", SL_DTYPE_Q4_K, 14}, {"q5_k", SL_DTYPE_Q5_K, 16}, {"q6_k", SL_DTYPE_Q6_K, 18},
};

/* splitmix64: small, fast, and the same stream on every machine. */
static uint64_t bm_rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]: 53 random bits, never 0 so log() is finite. */
static double bm_rng_unit(uint64_t *s) {
    return ((double)(bm_rng_next(s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

/* Fills v[n] with N(0, std) by Box-Muller (both outputs used). */
static void bm_fill_normal(uint64_t *s, float *v, size_t n, float std) {
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(bm_rng_unit(s))), th = 6.283185307179586 * bm_rng_unit(s);
        v[i] = (float)(r * cos(th)) * std;
        if (i + 1 < n) v[i + 1] = (float)(r * sin(th)) * std;
    }
}

/* A NUL-terminated copy of a GGUF string (which points into the mapping, unterminated). */
static char *bm_strdup_gguf(sl_gguf_str s) {
    char *c = malloc(s.len + 1);
    if (!c) return NULL;
    memcpy(c, s.data, s.len);
    c[s.len] = 0;
    return c;
}

/* Copies one metadata key (scalar or array) from src to w, by its GGUF type. */
static sl_status bm_copy_kv(const sl_gguf *src, const sl_gguf_kv *kv, sl_gguf_writer *w) {
    char *key = bm_strdup_gguf(kv->key);
    sl_status st = SL_OK;
    if (!key) return SL_OUT_OF_MEMORY;
    switch (kv->type) {
    case SL_GGUF_UINT8: case SL_GGUF_UINT16: case SL_GGUF_UINT32: case SL_GGUF_INT8: case SL_GGUF_INT16:
    case SL_GGUF_INT32: {
        int64_t v;
        if (!(st = sl_gguf_get_i64(src, key, &v)))
            st = kv->type == SL_GGUF_INT32 || kv->type == SL_GGUF_INT16 || kv->type == SL_GGUF_INT8
                     ? sl_gguf_writer_set_i32(w, key, (int32_t)v)
                     : sl_gguf_writer_set_u32(w, key, (uint32_t)v);
        break;
    }
    case SL_GGUF_FLOAT32: {
        float v;
        if (!(st = sl_gguf_get_f32(src, key, &v))) st = sl_gguf_writer_set_f32(w, key, v);
        break;
    }
    case SL_GGUF_BOOL: {
        int v;
        if (!(st = sl_gguf_get_bool(src, key, &v))) st = sl_gguf_writer_set_bool(w, key, v);
        break;
    }
    case SL_GGUF_STRING: {
        sl_gguf_str v;
        char *c = NULL;
        if (!(st = sl_gguf_get_str(src, key, &v))) st = (c = bm_strdup_gguf(v)) ? sl_gguf_writer_set_str(w, key, c)
                                                                                 : SL_OUT_OF_MEMORY;
        free(c);
        break;
    }
    case SL_GGUF_ARRAY: {
        uint64_t n = kv->arr_len;
        if (kv->arr_type == SL_GGUF_STRING) {
            char **v = calloc(n ? n : 1, sizeof *v); /* [n] NUL-terminated copies */
            uint64_t i = 0;
            if (!v) st = SL_OUT_OF_MEMORY;
            for (; !st && i < n; i++) {
                sl_gguf_str s;
                if (!(st = sl_gguf_arr_str(src, key, i, &s)) && !(v[i] = bm_strdup_gguf(s))) st = SL_OUT_OF_MEMORY;
            }
            if (!st) st = sl_gguf_writer_set_arr_str(w, key, (const char *const *)v, n);
            for (uint64_t j = 0; v && j < n; j++) free(v[j]);
            free(v);
        } else if (kv->arr_type == SL_GGUF_INT32 || kv->arr_type == SL_GGUF_UINT32) {
            int32_t *v = malloc((n ? n : 1) * sizeof *v); /* [n] */
            if (!v) st = SL_OUT_OF_MEMORY;
            for (uint64_t i = 0; !st && i < n; i++) st = sl_gguf_arr_i32(src, key, i, &v[i]);
            if (!st) st = sl_gguf_writer_set_arr_i32(w, key, v, n);
            free(v);
        } else if (kv->arr_type == SL_GGUF_FLOAT32) {
            float *v = malloc((n ? n : 1) * sizeof *v); /* [n] */
            if (!v) st = SL_OUT_OF_MEMORY;
            for (uint64_t i = 0; !st && i < n; i++) st = sl_gguf_arr_f32(src, key, i, &v[i]);
            if (!st) st = sl_gguf_writer_set_arr_f32(w, key, v, n);
            free(v);
        } else {
            fprintf(stderr, "skipping %s: array of %s\n", key, sl_gguf_type_name(kv->arr_type));
        }
        break;
    }
    default:
        fprintf(stderr, "skipping %s: type %s\n", key, sl_gguf_type_name(kv->type));
        break;
    }
    if (st) fprintf(stderr, "copying %s: %s\n", key, sl_last_error());
    free(key);
    return st;
}

/* Adds a [rows][cols] matrix (cols is the row length) of N(0, BM_STD) values in `type`. */
static sl_status bm_add_matrix(sl_gguf_writer *w, uint64_t *rng, float *scratch, const char *name, int64_t cols,
                               int64_t rows, int type) {
    int64_t ne[2] = {cols, rows};
    bm_fill_normal(rng, scratch, (size_t)(cols * rows), BM_STD);
    return sl_gguf_writer_add_tensor_f32(w, name, 2, ne, type, scratch);
}

static sl_status bm_add_norm(sl_gguf_writer *w, float *scratch, const char *name) {
    int64_t ne[1] = {g_shape->dim};
    for (int i = 0; i < g_shape->dim; i++) scratch[i] = 1.0f;
    return sl_gguf_writer_add_tensor_f32(w, name, 1, ne, SL_DTYPE_F32, scratch);
}

/* Writes DIR/bench-SHAPE-TYPE.gguf. `scratch` holds the largest tensor in f32 (vocab x dim, or ffn x dim). */
static sl_status bm_write_model(const sl_gguf *tok, const bm_type *t, int64_t n_vocab, float *scratch,
                                const char *dir) {
    sl_gguf_writer *w = NULL;
    sl_status st = sl_gguf_writer_create(&w);
    uint64_t rng = BM_SEED;
    char name[96], path[4096];
    if (st) return st;
    const bm_shape *sh = g_shape;
    snprintf(name, sizeof name, "bench-%s-%s", sh->name, t->name);
    if ((st = sl_gguf_writer_set_str(w, "general.architecture", "llama")) ||
        (st = sl_gguf_writer_set_str(w, "general.name", name)) ||
        (st = sl_gguf_writer_set_u32(w, "general.file_type", t->ftype)) ||
        (st = sl_gguf_writer_set_u32(w, "general.quantization_version", 2)) ||
        (st = sl_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)sh->layers)) ||
        (st = sl_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)sh->ctx)) ||
        (st = sl_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)sh->dim)) ||
        (st = sl_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)sh->ffn)) ||
        (st = sl_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)sh->heads)) ||
        (st = sl_gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)sh->kv_heads)) ||
        (st = sl_gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)sh->head_dim)) ||
        (st = sl_gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)n_vocab)) ||
        (st = sl_gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f)) ||
        (st = sl_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)))
        goto out;
    for (int64_t i = 0; i < sl_gguf_n_kv(tok); i++) {
        const sl_gguf_kv *kv = sl_gguf_kv_at(tok, i);
        if (kv->key.len > 10 && memcmp(kv->key.data, "tokenizer.", 10) == 0 && (st = bm_copy_kv(tok, kv, w)))
            goto out;
    }
    /* Tensors in a fixed order from one seed: the same f32 values in every file. */
    if ((st = bm_add_matrix(w, &rng, scratch, "token_embd.weight", sh->dim, n_vocab, t->dtype))) goto out;
    const int64_t qd = (int64_t)sh->heads * sh->head_dim, kvd = (int64_t)sh->kv_heads * sh->head_dim;
    for (int l = 0; l < sh->layers; l++) {
        const struct { const char *name; int64_t cols, rows; } mats[] = {
            {"attn_q", sh->dim, qd},         {"attn_k", sh->dim, kvd},   {"attn_v", sh->dim, kvd},
            {"attn_output", qd, sh->dim},    {"ffn_gate", sh->dim, sh->ffn}, {"ffn_up", sh->dim, sh->ffn},
            {"ffn_down", sh->ffn, sh->dim},
        };
        char tn[64];
        snprintf(tn, sizeof tn, "blk.%d.attn_norm.weight", l);
        if ((st = bm_add_norm(w, scratch, tn))) goto out;
        snprintf(tn, sizeof tn, "blk.%d.ffn_norm.weight", l);
        if ((st = bm_add_norm(w, scratch, tn))) goto out;
        for (size_t m = 0; m < sizeof mats / sizeof mats[0]; m++) {
            snprintf(tn, sizeof tn, "blk.%d.%s.weight", l, mats[m].name);
            if ((st = bm_add_matrix(w, &rng, scratch, tn, mats[m].cols, mats[m].rows, t->dtype))) goto out;
        }
    }
    if ((st = bm_add_norm(w, scratch, "output_norm.weight"))) goto out;
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    if ((st = sl_gguf_writer_write_file(w, path))) goto out;
    printf("wrote %s\n", path);
out:
    if (st) fprintf(stderr, "%s: %s\n", name, sl_last_error());
    sl_gguf_writer_free(w);
    return st;
}

int main(int argc, char **argv) {
    const char *dir = "/tmp/kqbench", *types = "q4_k,q6_k,q4_0,q8_0,q5_k,q4_1";
    const char *tok_path = "/root/.cache/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--types") && i + 1 < argc) types = argv[++i];
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tok_path = argv[++i];
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            const char *want = argv[++i];
            g_shape = NULL;
            for (size_t k = 0; k < sizeof k_shapes / sizeof k_shapes[0]; k++)
                if (!strcmp(k_shapes[k].name, want)) g_shape = &k_shapes[k];
            if (!g_shape) {
                fprintf(stderr, "unknown shape '%s' (1b, smol)\n", want);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [-o DIR] [--types q4_k,q6_k,...] [--tokenizer GGUF] [--shape 1b|smol]\n",
                    argv[0]);
            return 2;
        }
    }
    sl_gguf *tok = NULL;
    sl_gguf_type et;
    uint64_t n_vocab = 0;
    if (sl_gguf_open(tok_path, &tok) || sl_gguf_get_arr(tok, "tokenizer.ggml.tokens", &et, &n_vocab)) {
        fprintf(stderr, "%s: %s\n", tok_path, sl_last_error());
        sl_gguf_close(tok);
        return 1;
    }
    /* the largest tensor in f32: [n_vocab][dim] or [ffn][dim] */
    const size_t biggest = (size_t)g_shape->dim * (n_vocab > (uint64_t)g_shape->ffn ? (size_t)n_vocab : (size_t)g_shape->ffn);
    float *scratch = malloc(biggest * sizeof *scratch);
    int rc = scratch ? 0 : 1;
    for (const char *p = types; !rc && *p;) {
        size_t len = strcspn(p, ",");
        const bm_type *t = NULL;
        for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
            if (strlen(k_types[i].name) == len && !strncmp(k_types[i].name, p, len)) t = &k_types[i];
        if (!t) {
            fprintf(stderr, "unknown type '%.*s' (q4_0 q4_1 q8_0 q4_k q5_k q6_k)\n", (int)len, p);
            rc = 2;
        } else if (bm_write_model(tok, t, (int64_t)n_vocab, scratch, dir)) {
            rc = 1;
        }
        p += len + (p[len] == ',');
    }
    free(scratch);
    sl_gguf_close(tok);
    return rc;
}
