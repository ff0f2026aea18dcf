/*
 * placement.c — parsing of the device list into replicas (placement.h says what the settings mean).
 *
 * Refusals name the setting and the entry, since the value usually comes from a flag or an environment
 * variable the operator typed: "devices: entry 2 ('gpu') is not a device; use cpu, a CUDA ordinal such as 0,
 * or cuda:N".
 */
#include "placement.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sl_util.h"

/* Longest entry quoted back in a message; "cuda:255" is 8, anything longer is a typo worth clipping. */
#define PLACEMENT_QUOTE_MAX 32

/* [a, a+n) equals b, ignoring case. */
static int placement_ieq_n(const char *a, size_t n, const char *b) { return strlen(b) == n && !strncasecmp(a, b, n); }

/* One entry [s, s+n) (already trimmed) -> SL_DEVICE_CPU or an ordinal; -2 when it is no device. */
static int placement_entry(const char *s, size_t n) {
    if (placement_ieq_n(s, n, "cpu")) return SL_DEVICE_CPU;
    if (n > 5 && placement_ieq_n(s, 5, "cuda:")) {
        s += 5;
        n -= 5;
    }
    if (n == 0 || n > 3) return -2; /* ordinals below SL_PLACEMENT_MAX_DEVICES have at most 3 digits */
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -2;
        v = v * 10 + (s[i] - '0');
    }
    return v < SL_PLACEMENT_MAX_DEVICES ? v : -2;
}

sl_status sl_placement_parse(const char *devices, int tp_size, sl_placement *out) {
    memset(out, 0, sizeof *out);
    out->max_cuda = -1;
    if (tp_size < 1 || tp_size > SL_PLACEMENT_MAX_TP)
        return sl__errorf(SL_INVALID_ARGUMENT, "tensor_parallel_size %d is outside [1, %d]", tp_size,
                          SL_PLACEMENT_MAX_TP);
    if (!devices || !*devices) devices = "cpu";
    int ids[SL_PLACEMENT_MAX_DEVICES];
    int n = 0;
    for (const char *p = devices;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if (a == b)
            return sl__errorf(SL_INVALID_ARGUMENT, "devices '%.*s': entry %d is empty (entries are separated by "
                              "single commas)", 200, devices, n + 1);
        if (n == SL_PLACEMENT_MAX_DEVICES)
            return sl__errorf(SL_INVALID_ARGUMENT, "devices: more than %d entries", SL_PLACEMENT_MAX_DEVICES);
        int d = placement_entry(a, (size_t)(b - a));
        if (d == -2)
            return sl__errorf(SL_INVALID_ARGUMENT, "devices: entry %d ('%.*s') is not a device; use cpu, a CUDA "
                              "ordinal such as 0, or cuda:N", n + 1,
                              (int)SL_MIN((size_t)(b - a), (size_t)PLACEMENT_QUOTE_MAX), a);
        ids[n++] = d;
        if (!comma) break;
        p = comma + 1;
    }
    if (n % tp_size != 0)
        return sl__errorf(SL_INVALID_ARGUMENT, "devices lists %d entr%s, which is not a multiple of "
                          "tensor_parallel_size %d (each replica takes tensor_parallel_size consecutive entries)",
                          n, n == 1 ? "y" : "ies", tp_size);
    /* The rules of what the model layer can run (models/llama_tp.c): a GPU tensor-parallel group's ranks share
     * one GPU (the single-GPU communicator; ranks on several GPUs need NCCL, not wired yet), and a GPU serves one
     * replica (each replica's KV cache takes gpu_memory_utilization of its device as measured when it loads,
     * so a second replica there would find no room). */
    int n_rep = n / tp_size, n_cpu = 0;
    for (int r = 0; r < n_rep; r++) {
        const int *g = ids + r * tp_size;
        int cpu = 0;
        for (int i = 0; i < tp_size; i++) {
            cpu += g[i] == SL_DEVICE_CPU;
            if (g[i] > out->max_cuda) out->max_cuda = g[i];
        }
        if (cpu && cpu != tp_size)
            return sl__errorf(SL_INVALID_ARGUMENT, "devices: replica %d mixes cpu and CUDA entries; a "
                              "tensor-parallel group is all CPU or all GPUs", r);
        n_cpu += cpu > 0;
        if (cpu) continue;
        for (int i = 1; i < tp_size; i++)
            if (g[i] != g[0])
                return sl__errorf(SL_INVALID_ARGUMENT, "devices: replica %d spans CUDA devices %d and %d; "
                                  "tensor parallelism across GPUs needs NCCL, which is not wired yet: give the "
                                  "group's ranks one GPU (e.g. %d,%d)", r, g[0], g[i], g[0], g[0]);
        for (int q = 0; q < r; q++)
            if (ids[q * tp_size] == g[0])
                return sl__errorf(SL_INVALID_ARGUMENT, "devices: replicas %d and %d both use CUDA device %d; a "
                                  "GPU serves one replica (its KV cache takes gpu_memory_utilization of the device)",
                                  q, r, g[0]);
    }
    out->devices = sl__malloc((size_t)n * sizeof(int));
    if (!out->devices) return sl__errorf(SL_OUT_OF_MEMORY, "device list");
    memcpy(out->devices, ids, (size_t)n * sizeof(int));
    out->n_replicas = n_rep;
    out->tp_size = tp_size;
    out->n_cpu_replicas = n_cpu;
    return SL_OK;
}

sl_status sl_placement_check_cuda(const sl_placement *p, int n_cuda) {
    if (p->max_cuda < n_cuda) return SL_OK;
    if (n_cuda <= 0)
        return sl__errorf(SL_INVALID_ARGUMENT, "devices names CUDA device %d, but no CUDA device is usable on this "
                          "machine (no GPU, no driver, or a build without CUDA); use cpu", p->max_cuda);
    return sl__errorf(SL_INVALID_ARGUMENT, "devices names CUDA device %d, but this machine has %d (0..%d)",
                      p->max_cuda, n_cuda, n_cuda - 1);
}

void sl_placement_free(sl_placement *p) {
    free(p->devices);
    memset(p, 0, sizeof *p);
}

void sl_placement_describe(const sl_placement *p, int r, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < p->tp_size && n < cap; i++) {
        int d = p->devices[r * p->tp_size + i];
        int w = d == SL_DEVICE_CPU ? snprintf(buf + n, cap - n, "%scpu", i ? "+" : "")
                                   : snprintf(buf + n, cap - n, "%scuda:%d", i ? "+" : "", d);
        if (w < 0) break;
        n += (size_t)w;
    }
}
