/*
 * threadpool.h — the compute pool: a fixed set of workers that run one data-parallel task at a time.
 *
 * Decode of a small model issues a few hundred parallel regions per token, thousands per second, so a region
 * must start and end in about a microsecond: workers spin on a generation counter for a while before they
 * sleep on a condition variable (llama.cpp does the same). The calling thread takes part as worker 0, so a
 * pool of n threads starts n - 1 of its own. Work is split by the task itself from (ith, nth), which keeps
 * the split fixed for a given n (results do not depend on scheduling).
 */
#ifndef SL_THREADPOOL_H
#define SL_THREADPOOL_H

#include "sluice/sluice.h"

typedef struct sl_threadpool sl_threadpool;
typedef void (*sl_task_fn)(void *arg, int ith, int nth);

/* n_threads >= 1; 0 means the number of online cores. */
sl_status sl_threadpool_create(int n_threads, sl_threadpool **out);
void sl_threadpool_free(sl_threadpool *p);
int sl_threadpool_size(const sl_threadpool *p);
/* Runs fn(arg, i, n) for every i in [0, n) and returns when all have finished. Not reentrant: one caller. */
void sl_threadpool_run(sl_threadpool *p, sl_task_fn fn, void *arg);
/* Number of online cores. */
int sl_cpu_count(void);

/* Splits [0, n) into nth near-equal chunks aligned to `align` (the last one takes the rest): [*lo, *hi). */
void sl_split_range(int n, int align, int ith, int nth, int *lo, int *hi);

#endif /* SL_THREADPOOL_H */
