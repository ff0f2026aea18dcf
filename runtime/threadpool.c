/*
 * threadpool.c — spin-then-sleep worker pool (see threadpool.h for why it is shaped so).
 *
 * Protocol: the caller publishes (fn, arg), bumps `generation` and runs share 0; each worker sees the new
 * generation, runs its share, and increments `n_done`; the caller waits until n_done == n - 1. Workers that
 * saw no new generation for SL_SPIN_ITERS polls go to sleep on `cond`; the caller broadcasts only when some
 * worker sleeps, so the common decode path never enters the kernel.
 */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "sl_util.h"

/* About 100-200 µs of polling on current x86 before a worker sleeps: long enough to cover the gap between
 * two kernels of one decode step, short enough that an idle server does not burn a core. */
#define SL_SPIN_ITERS 20000
/* Every this many polls a spinning thread calls sched_yield(): about 5-10 µs of polling between yields, so
 * an idle core is never given up in the common case, yet a descheduled partner gets the core back fast. */
#define SL_YIELD_EVERY 256

typedef struct sl_worker {
    struct sl_threadpool *pool;
    pthread_t thread;
    int ith;
} sl_worker;

struct sl_threadpool {
    int n_threads;
    sl_worker *workers;       /* [n_threads - 1], worker i runs share i + 1 */
    sl_task_fn fn;
    void *arg;
    _Atomic unsigned generation;
    _Atomic int n_done;
    _Atomic int n_sleeping;
    _Atomic int stop;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
};

int sl_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void sl_split_range(int n, int align, int ith, int nth, int *lo, int *hi) {
    if (align < 1) align = 1;
    int n_units = (n + align - 1) / align;
    int per = n_units / nth, extra = n_units % nth;
    int u0 = ith * per + (ith < extra ? ith : extra);
    int u1 = u0 + per + (ith < extra ? 1 : 0);
    *lo = SL_MIN(n, u0 * align);
    *hi = SL_MIN(n, u1 * align);
}

static void *sl__worker_main(void *p) {
    sl_worker *w = p;
    sl_threadpool *pool = w->pool;
    /* The pool starts at generation 0 and only run() bumps it, so a worker that starts late still sees the
     * first task as new (reading the counter here instead would lose a task published before we ran). */
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen) {
            if (atomic_load_explicit(&pool->stop, memory_order_acquire)) return NULL;
            if (++spins < SL_SPIN_ITERS) {
                /* pause, and give the core away now and then: with more runnable threads than cores
                 * (another process busy) a pure spin would keep the thread we wait for off the CPU */
                if (spins % SL_YIELD_EVERY == 0)
                    sched_yield();
                else
                    sl__cpu_relax();
                continue;
            }
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->n_sleeping, 1);
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cond, &pool->mutex);
            atomic_fetch_sub(&pool->n_sleeping, 1);
            pthread_mutex_unlock(&pool->mutex);
            spins = 0;
        }
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) return NULL;
        seen = gen;
        pool->fn(pool->arg, w->ith, pool->n_threads);
        atomic_fetch_add_explicit(&pool->n_done, 1, memory_order_acq_rel);
    }
}

sl_status sl_threadpool_create(int n_threads, sl_threadpool **out) {
    *out = NULL;
    if (n_threads <= 0) n_threads = sl_cpu_count();
    if (n_threads > 1024) return sl__errorf(SL_INVALID_ARGUMENT, "thread count %d is over 1024", n_threads);
    sl_threadpool *p = sl__calloc(1, sizeof *p);
    if (!p) return sl__errorf(SL_OUT_OF_MEMORY, "thread pool");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->cond, NULL);
    if (n_threads > 1) {
        p->workers = sl__calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) goto fail;
    }
    for (int i = 0; i < n_threads - 1; i++) {
        p->workers[i].pool = p;
        p->workers[i].ith = i + 1;
        if (pthread_create(&p->workers[i].thread, NULL, sl__worker_main, &p->workers[i]) != 0) {
            p->n_threads = i + 1; /* join the ones started */
            sl_threadpool_free(p);
            return sl__errorf(SL_OUT_OF_MEMORY, "cannot start compute thread %d", i + 1);
        }
    }
    *out = p;
    return SL_OK;
fail:
    pthread_mutex_destroy(&p->mutex);
    pthread_cond_destroy(&p->cond);
    free(p);
    return sl__errorf(SL_OUT_OF_MEMORY, "thread pool");
}

void sl_threadpool_free(sl_threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mutex);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mutex);
    for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_mutex_destroy(&p->mutex);
    pthread_cond_destroy(&p->cond);
    free(p->workers);
    free(p);
}

int sl_threadpool_size(const sl_threadpool *p) { return p->n_threads; }

void sl_threadpool_run(sl_threadpool *p, sl_task_fn fn, void *arg) {
    if (p->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: pairs with the sleeper's n_sleeping increment (Dekker) */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mutex);
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->mutex);
    }
    fn(arg, 0, p->n_threads);
    for (unsigned spins = 1; atomic_load_explicit(&p->n_done, memory_order_acquire) != p->n_threads - 1; spins++) {
        if (spins % SL_YIELD_EVERY == 0)
            sched_yield();
        else
            sl__cpu_relax();
    }
}
