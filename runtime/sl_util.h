/*
 * sl_util.h — the few habits every layer above kernels/ shares: assertions for our own invariants, error
 * reporting for bad input, checked allocation, and the clock.
 *
 * Bugs abort, input returns: SL_ASSERT is for invariants of our own code only. Anything a file, a request
 * or a config can get wrong is reported with sl__errorf(), which records a message for sl_last_error() and
 * returns the status, so a call site reads `return sl__errorf(SL_BAD_FORMAT, "tensor %s: ...", name);`.
 */
#ifndef SL_UTIL_H
#define SL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "sluice/sluice.h"

#define SL_ASSERT(cond)                                                                                     \
    do {                                                                                                    \
        if (!(cond)) sl__assert_fail(#cond, __FILE__, __LINE__);                                            \
    } while (0)

_Noreturn void sl__assert_fail(const char *expr, const char *file, int line);

/* Records a message for sl_last_error() on this thread and returns st. */
sl_status sl__errorf(sl_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current message: "loading model: <previous message>". Returns st. */
sl_status sl__error_prefix(sl_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sl__error_clear(void);

/* Allocation that may fail (returns NULL); a hook lets tests inject failures (sqlite's OOM loops):
 * sl__alloc_fail_after(n) makes the n-th following allocation fail (n < 0 disables). */
void *sl__malloc(size_t n);
void *sl__calloc(size_t n, size_t size);
void *sl__realloc(void *p, size_t n);
char *sl__strdup(const char *s);
char *sl__strndup(const char *s, size_t n);
void sl__alloc_fail_after(long n);

/* Overflow-checked size arithmetic: returns 0 on overflow, else 1 and *out. */
static inline int sl__mul_size(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline int sl__add_size(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }

/* One poll of a spin-wait: the pause instruction on x86 (kinder to the sibling hyperthread), nothing elsewhere. */
static inline void sl__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* The monotonic clock in nanoseconds (sl_now_us is this / 1000). */
int64_t sl__now_ns(void);

#define SL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SL_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif /* SL_UTIL_H */
