/*
 * fuzz_gguf.c — libFuzzer target for the GGUF reader (models/gguf.c).
 *
 * Each input is opened with sl_gguf_open_memory; libFuzzer hands over an exact-size buffer, so ASan catches
 * any read past it. When an input opens, everything the reader hands out is used the way the loaders will:
 * every tensor's bytes are read, every key formatted, every string of every string array fetched by index,
 * and the typed getters called on every key; a pointer outside the input aborts (a finding). When it does
 * not open, it must have said why (sl_last_error non-empty).
 *
 * Not built by CMake (the default compilers and flags do not know -fsanitize=fuzzer). From the repository
 * root, with clang:
 *
 *   clang -g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *       -Iinclude -Iruntime -Ikernels -Ikernels/cpu -Imodels \
 *       tests/fuzz/fuzz_gguf.c models/gguf.c runtime/status.c kernels/kdtype.c -o fuzz_gguf
 *   mkdir -p /tmp/gguf_corpus && cp tests/data/stories260K.gguf tests/data/gguf_alltypes.gguf /tmp/gguf_corpus/
 *   ./fuzz_gguf -max_len=65536 -timeout=5 /tmp/gguf_corpus
 *
 * (kernels/kdtype.c gives the type table the reader checks tensor types against; nothing else is needed.)
 * Small seeds fuzz best: gguf_alltypes.gguf (2.5 KB) reaches every metadata type.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "sl_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_inside(const uint8_t *data, size_t size, const void *p, uint64_t n, const char *what) {
    const uint8_t *q = p;
    if (q < data || q > data + size || n > (uint64_t)(data + size - q)) {
        fprintf(stderr, "fuzz_gguf: %s [%p +%llu) outside the input [%p +%zu)\n", what, p, (unsigned long long)n,
                (const void *)data, size);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl_gguf *g = NULL;
    sl__error_clear();
    sl_status st = sl_gguf_open_memory(data, size, &g);
    if (st != SL_OK) {
        if (g || !sl_last_error()[0]) abort(); /* a failure must leave no handle and say why */
        return 0;
    }
    volatile unsigned sink = 0;
    for (int64_t i = 0; i < sl_gguf_n_tensors(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        check_inside(data, size, t->name.data, t->name.len, "tensor name");
        check_inside(data, size, t->data, t->n_bytes, "tensor data");
        const uint8_t *d = t->data;
        for (uint64_t k = 0; k < t->n_bytes; k++) sink += d[k];
        char name[300];
        snprintf(name, sizeof name, "%.*s", (int)(t->name.len < 256 ? t->name.len : 256), t->name.data);
        if (t->name.len < 256 && sl_gguf_find_tensor(g, name) != t) abort(); /* names are unique */
    }
    char text[1024];
    for (int64_t i = 0; i < sl_gguf_n_kv(g); i++) {
        const sl_gguf_kv *kv = sl_gguf_kv_at(g, i);
        check_inside(data, size, kv->key.data, kv->key.len, "key");
        sl_gguf_kv_format(kv, text, sizeof text);
        if (kv->key.len >= 256) continue;
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.data);
        uint32_t u32;
        int64_t i64;
        float f32;
        int b;
        sl_gguf_str s;
        sl_gguf_type et;
        uint64_t n = 0;
        (void)sl_gguf_get_u32(g, key, &u32);
        (void)sl_gguf_get_i64(g, key, &i64);
        (void)sl_gguf_get_f32(g, key, &f32);
        (void)sl_gguf_get_bool(g, key, &b);
        if (sl_gguf_get_str(g, key, &s) == SL_OK) check_inside(data, size, s.data, s.len, "string");
        if (sl_gguf_get_arr(g, key, &et, &n) != SL_OK) continue;
        for (uint64_t j = 0; j < n && j < 4096; j++) {
            if (sl_gguf_arr_str(g, key, j, &s) == SL_OK) check_inside(data, size, s.data, s.len, "array string");
            int32_t x;
            (void)sl_gguf_arr_f32(g, key, j, &f32);
            (void)sl_gguf_arr_i32(g, key, j, &x);
        }
    }
    (void)sink;
    sl_gguf_close(g);
    return 0;
}
