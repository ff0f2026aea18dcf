/*
 * test_gguf_real.c — the reader on real files written by llama.cpp's converters: the tiny stories260K llama,
 * the GPT-2 and Phi-3 vocabulary-only files (they end right after their tensor infos, before the aligned data
 * section would start), and the default model (98 MB, 272 tensors, 49152-token vocabulary), whose open must
 * stay a matter of milliseconds since every server start and every engine test pays it.
 * Expected values were read with gguf-py's GGUFReader, an independent implementation.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "kdtype.h"
#include "testutil.h"

static sl_gguf *open_data(const char *name) {
    char *path = sl_test_data_path(name);
    sl_gguf *g = NULL;
    sl_status st = sl_gguf_open(path, &g);
    cr_assert_eq(st, SL_OK, "open %s: %s", path, sl_last_error());
    free(path);
    return g;
}

static void assert_arr_str(const sl_gguf *g, const char *key, uint64_t i, const char *want) {
    sl_gguf_str s;
    cr_assert_eq(sl_gguf_arr_str(g, key, i, &s), SL_OK, "%s[%llu]: %s", key, (unsigned long long)i, sl_last_error());
    cr_assert(sl_gguf_str_eq(s, want), "%s[%llu] = '%.*s', want '%s'", key, (unsigned long long)i, (int)s.len, s.data,
              want);
}

static void assert_shape(const sl_gguf_tensor *t, int type, int n_dims, int64_t ne0, int64_t ne1) {
    cr_assert_not_null(t);
    cr_assert_eq(t->type, type, "%.*s: type %d", (int)t->name.len, t->name.data, t->type);
    cr_assert_eq(t->n_dims, n_dims);
    cr_assert_eq(t->ne[0], ne0);
    cr_assert_eq(t->ne[1], ne1);
    cr_assert_eq(t->ne[2], 1);
    cr_assert_eq(t->ne[3], 1);
    cr_assert_eq(t->n_bytes, sl_dtype_row_bytes(type, ne0) * (uint64_t)ne1);
}

Test(gguf_real, stories260k) {
    sl_gguf *g = open_data("stories260K.gguf");
    cr_assert_eq(sl_gguf_version(g), 3);
    cr_assert_eq(sl_gguf_alignment(g), 32);
    cr_assert_eq(sl_gguf_n_kv(g), 19);
    cr_assert_eq(sl_gguf_n_tensors(g), 48);
    sl_gguf_str s;
    cr_assert_eq(sl_gguf_get_str(g, "general.architecture", &s), SL_OK);
    cr_assert(sl_gguf_str_eq(s, "llama"));
    uint32_t u;
    cr_assert_eq(sl_gguf_get_u32(g, "llama.embedding_length", &u), SL_OK);
    cr_assert_eq(u, 64);
    cr_assert_eq(sl_gguf_get_u32(g, "llama.block_count", &u), SL_OK);
    cr_assert_eq(u, 5);
    cr_assert_eq(sl_gguf_get_u32(g, "tokenizer.ggml.padding_token_id", &u), SL_OK);
    cr_assert_eq(u, UINT32_MAX);
    float eps;
    cr_assert_eq(sl_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps), SL_OK);
    cr_assert_float_eq(eps, 1e-5f, 1e-12f);

    sl_gguf_type et;
    uint64_t n;
    cr_assert_eq(sl_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n), SL_OK);
    cr_assert_eq(et, SL_GGUF_STRING);
    cr_assert_eq(n, 512);
    assert_arr_str(g, "tokenizer.ggml.tokens", 0, "<unk>");
    assert_arr_str(g, "tokenizer.ggml.tokens", 2, "</s>");
    assert_arr_str(g, "tokenizer.ggml.tokens", 511, "\xe2\x80\x8a");
    float score;
    cr_assert_eq(sl_gguf_arr_f32(g, "tokenizer.ggml.scores", 300, &score), SL_OK);
    cr_assert_eq(score, -41.0f);
    int32_t tt;
    cr_assert_eq(sl_gguf_arr_i32(g, "tokenizer.ggml.token_type", 0, &tt), SL_OK);
    cr_assert_eq(tt, 2);
    cr_assert_eq(sl_gguf_arr_i32(g, "tokenizer.ggml.token_type", 3, &tt), SL_OK);
    cr_assert_eq(tt, 6);

    const sl_gguf_tensor *emb = sl_gguf_find_tensor(g, "token_embd.weight");
    assert_shape(emb, SL_DTYPE_F32, 2, 64, 512);
    cr_assert_eq(emb, sl_gguf_tensor_at(g, 0));
    /* Data where gguf-py finds it: the first values of the embedding, and the last of the last tensor. */
    float v[2];
    memcpy(v, emb->data, sizeof v);
    cr_assert_float_eq(v[0], -0.29474878f, 1e-7f);
    cr_assert_float_eq(v[1], 0.5618956f, 1e-7f);
    assert_shape(sl_gguf_find_tensor(g, "output_norm.weight"), SL_DTYPE_F32, 1, 64, 1);
    assert_shape(sl_gguf_find_tensor(g, "blk.0.attn_k.weight"), SL_DTYPE_F32, 2, 64, 32);
    assert_shape(sl_gguf_find_tensor(g, "blk.0.ffn_down.weight"), SL_DTYPE_F32, 2, 172, 64);
    const sl_gguf_tensor *last = sl_gguf_find_tensor(g, "blk.4.ffn_norm.weight");
    assert_shape(last, SL_DTYPE_F32, 1, 64, 1);
    cr_assert_eq(last, sl_gguf_tensor_at(g, 47));
    memcpy(v, (const float *)last->data + 62, sizeof v);
    cr_assert_float_eq(v[0], 0.9927388f, 1e-7f);
    cr_assert_float_eq(v[1], 1.2342612f, 1e-7f);
    cr_assert_eq(last->offset + 14176 + last->n_bytes, sl_gguf_file_size(g), "the last tensor ends the file");
    cr_assert_null(sl_gguf_find_tensor(g, "blk.5.ffn_norm.weight"));
    sl_gguf_close(g);
}

Test(gguf_real, vocab_gpt2) {
    sl_gguf *g = open_data("ggml-vocab-gpt-2.gguf");
    cr_assert_eq(sl_gguf_n_tensors(g), 0);
    sl_gguf_type et;
    uint64_t n;
    cr_assert_eq(sl_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n), SL_OK);
    cr_assert_eq(n, 50257);
    assert_arr_str(g, "tokenizer.ggml.tokens", 0, "!");
    assert_arr_str(g, "tokenizer.ggml.tokens", 50256, "<|endoftext|>");
    cr_assert_eq(sl_gguf_arr_str(g, "tokenizer.ggml.tokens", 50257, &(sl_gguf_str){0}), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n), SL_OK);
    cr_assert_eq(n, 50000);
    assert_arr_str(g, "tokenizer.ggml.merges", 0, "\xc4\xa0 t");
    sl_gguf_str s;
    cr_assert_eq(sl_gguf_get_str(g, "tokenizer.ggml.pre", &s), SL_OK);
    cr_assert(sl_gguf_str_eq(s, "gpt-2"));
    sl_gguf_close(g);
}

Test(gguf_real, vocab_phi3) {
    sl_gguf *g = open_data("ggml-vocab-phi-3.gguf");
    uint64_t n;
    cr_assert_eq(sl_gguf_get_arr(g, "tokenizer.ggml.tokens", NULL, &n), SL_OK);
    cr_assert_eq(n, 32064);
    assert_arr_str(g, "tokenizer.ggml.tokens", 1, "<s>");
    assert_arr_str(g, "tokenizer.ggml.tokens", 32063, "[PAD32063]");
    int b;
    cr_assert_eq(sl_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), SL_OK);
    cr_assert_eq(b, 1);
    cr_assert_eq(sl_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b), SL_OK);
    cr_assert_eq(b, 0);
    sl_gguf_str s;
    cr_assert_eq(sl_gguf_get_str(g, "tokenizer.chat_template", &s), SL_OK);
    cr_assert(s.len > 100 && memcmp(s.data, "{{ bos_token }}", 15) == 0);
    sl_gguf_close(g);
}

Test(gguf_real, open_errors_name_the_path) {
    sl_gguf *g = (sl_gguf *)1;
    cr_assert_eq(sl_gguf_open("/nonexistent/model.gguf", &g), SL_NOT_FOUND);
    cr_assert_null(g);
    cr_assert(strstr(sl_last_error(), "/nonexistent/model.gguf"), "%s", sl_last_error());
    cr_assert_eq(sl_gguf_open("/tmp", &g), SL_IO);
    cr_assert(strstr(sl_last_error(), "not a regular file"), "%s", sl_last_error());
    /* An empty file: no magic, clean message, no mmap of zero bytes. */
    char path[] = "/tmp/sl_gguf_empty_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(sl_gguf_open(path, &g), SL_BAD_FORMAT);
    cr_assert(strstr(sl_last_error(), path) && strstr(sl_last_error(), "not a GGUF file"), "%s", sl_last_error());
    unlink(path);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

Test(gguf_real, default_model) {
    char *path = sl_test_default_model_path();
    cr_assert_eq(access(path, R_OK), 0, "default model %s is missing: run the setup step that fetches it", path);
    sl_gguf *g = NULL;
    double t0 = now_ms();
    cr_assert_eq(sl_gguf_open(path, &g), SL_OK, "%s", sl_last_error());
    double t1 = now_ms();
    /* Every tensor found by name, the way the model loader will ask. */
    for (int64_t i = 0; i < sl_gguf_n_tensors(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.data);
        cr_assert_eq(sl_gguf_find_tensor(g, name), t, "%s", name);
    }
    /* And the whole vocabulary, by index. */
    uint64_t n_vocab = 0, bytes = 0;
    cr_assert_eq(sl_gguf_get_arr(g, "tokenizer.ggml.tokens", NULL, &n_vocab), SL_OK);
    for (uint64_t i = 0; i < n_vocab; i++) {
        sl_gguf_str s;
        cr_assert_eq(sl_gguf_arr_str(g, "tokenizer.ggml.tokens", i, &s), SL_OK);
        bytes += s.len;
    }
    double t2 = now_ms();
    cr_log_info("default model: open %.2f ms; 272 name lookups + %llu token reads %.2f ms", t1 - t0,
                (unsigned long long)n_vocab, t2 - t1);

    cr_assert_eq(sl_gguf_n_tensors(g), 272);
    cr_assert_eq(n_vocab, 49152);
    cr_assert(bytes > 49152);
    assert_arr_str(g, "tokenizer.ggml.tokens", 0, "<|endoftext|>");
    assert_arr_str(g, "tokenizer.ggml.tokens", 2, "<|im_end|>");
    assert_arr_str(g, "tokenizer.ggml.tokens", 49151, "ectable");
    uint64_t n_merges = 0;
    cr_assert_eq(sl_gguf_get_arr(g, "tokenizer.ggml.merges", NULL, &n_merges), SL_OK);
    cr_assert_eq(n_merges, 48900);
    uint32_t u;
    cr_assert_eq(sl_gguf_get_u32(g, "llama.block_count", &u), SL_OK);
    cr_assert_eq(u, 30);
    cr_assert_eq(sl_gguf_get_u32(g, "llama.attention.head_count_kv", &u), SL_OK);
    cr_assert_eq(u, 3);
    assert_shape(sl_gguf_find_tensor(g, "token_embd.weight"), SL_DTYPE_Q8_0, 2, 576, 49152);
    assert_shape(sl_gguf_find_tensor(g, "blk.0.ffn_down.weight"), SL_DTYPE_Q4_1, 2, 1536, 576);
    assert_shape(sl_gguf_find_tensor(g, "blk.29.attn_k.weight"), SL_DTYPE_Q4_1, 2, 576, 192);
    assert_shape(sl_gguf_find_tensor(g, "output_norm.weight"), SL_DTYPE_F32, 1, 576, 1);
    cr_assert_null(sl_gguf_find_tensor(g, "output.weight"), "SmolLM2 ties its output to the embedding");
    const sl_gguf_tensor *emb = sl_gguf_find_tensor(g, "token_embd.weight");
    unsigned char first[4];
    memcpy(first, emb->data, 4); /* gguf-py reads the first block as 50 25 214 13 */
    cr_assert(first[0] == 50 && first[1] == 25 && first[2] == 214 && first[3] == 13);
    sl_gguf_close(g);
    free(path);
}
