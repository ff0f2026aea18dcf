/*
 * status.c — status names and messages (from SL_STATUS_MAP), the thread-local last-error message, checked
 * allocation with a failure-injection hook, and the monotonic clock.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sl_util.h"

SL_API const char *sl_version(void) { return "0.1.0"; }

SL_API const char *sl_status_str(sl_status st) {
    switch (st) {
#define SL__STATUS_STR(name, msg) case SL_##name: return msg;
        SL_STATUS_MAP(SL__STATUS_STR)
#undef SL__STATUS_STR
    default: return "unknown status";
    }
}

SL_API const char *sl_status_name(sl_status st) {
    switch (st) {
#define SL__STATUS_NAME(name, msg) case SL_##name: return "SL_" #name;
        SL_STATUS_MAP(SL__STATUS_NAME)
#undef SL__STATUS_NAME
    default: return "SL_UNKNOWN";
    }
}

/* 1 KiB holds any message we format (names are clipped by %.*s where they come from files). */
static _Thread_local char sl__last_error[1024];

SL_API const char *sl_last_error(void) { return sl__last_error; }

sl_status sl__errorf(sl_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sl__last_error, sizeof sl__last_error, fmt, ap);
    va_end(ap);
    return st;
}

sl_status sl__error_prefix(sl_status st, const char *fmt, ...) {
    char prev[sizeof sl__last_error];
    memcpy(prev, sl__last_error, sizeof prev);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sl__last_error, sizeof sl__last_error, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n + 2 < sizeof sl__last_error) {
        /* ": " then as much of the previous message as fits (truncation is fine for a message) */
        const char *tail = prev[0] ? prev : sl_status_str(st);
        size_t room = sizeof sl__last_error - (size_t)n - 3, tl = strlen(tail);
        memcpy(sl__last_error + n, ": ", 2);
        memcpy(sl__last_error + n + 2, tail, tl < room ? tl : room);
        sl__last_error[(size_t)n + 2 + (tl < room ? tl : room)] = 0;
    }
    return st;
}

void sl__error_clear(void) { sl__last_error[0] = 0; }

_Noreturn void sl__assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "sluice: assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}

static _Atomic long sl__alloc_countdown = -1;

void sl__alloc_fail_after(long n) { sl__alloc_countdown = n; }

static int sl__alloc_should_fail(void) {
    long c = sl__alloc_countdown;
    if (c < 0) return 0;
    if (c == 0) return 1;
    sl__alloc_countdown = c - 1;
    return 0;
}

void *sl__malloc(size_t n) { return sl__alloc_should_fail() ? NULL : malloc(n ? n : 1); }
void *sl__calloc(size_t n, size_t size) { return sl__alloc_should_fail() ? NULL : calloc(n ? n : 1, size ? size : 1); }
void *sl__realloc(void *p, size_t n) { return sl__alloc_should_fail() ? NULL : realloc(p, n ? n : 1); }

char *sl__strndup(const char *s, size_t n) {
    char *p = sl__malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *sl__strdup(const char *s) { return sl__strndup(s, strlen(s)); }

SL_API void sl_free(void *p) { free(p); }

int64_t sl__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

SL_API int64_t sl_now_us(void) { return sl__now_ns() / 1000; }
