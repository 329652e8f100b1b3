/* The thread pool of the CPU kernels: a loop's ranges on C threads, handed over without Python.
 *
 * abp_np/fast/threads.py splits a loop over Python threads: each hand-off is a wake-up of the
 * worker through a queue, the worker's turn at the GIL, and a wake-up of the caller, some
 * 65-90 microseconds on a 2-core virtual machine, about as long as the range of a batch norm or
 * a ReLU takes to compute (BENCHMARKS.md, "Hand-offs"). The kernels of this library run without
 * the GIL, so their ranges can be handed to C threads instead: the caller (inside a ctypes
 * call, the GIL released) posts the job, runs range 0 itself, and waits for the others by
 * watching a counter; a worker that finished a range watches for the next job for spin_ns
 * (abp_pool_set_spin) before it sleeps on a condition variable.
 *
 * One job at a time: a second caller that finds the pool busy (another Python thread) runs
 * its loop whole, on its own thread. Worker k always runs range k of a job (k >= 1), the caller
 * range 0; the ranges are those of abp_np.fast.threads.ranges. After fork() the child has no
 * workers (threads do not follow a fork) and makes new ones when needed.
 *
 * Plain C99 with POSIX threads and the __atomic builtins of GCC and Clang, compiled once by
 * abp_np/fast/cpu.py.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "pool_cpu.h"

#define MAX_WORKERS 63

struct job {
    abp_range_fn fn;
    const void *args;
    int n, parts;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* guards gen, job and the workers */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;   /* idle workers sleep on it */
static pthread_mutex_t dispatch = PTHREAD_MUTEX_INITIALIZER; /* held while a job is out */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static long gen;                       /* jobs posted so far; workers watch it */
static struct job job;                 /* the latest job */
static int nworkers;                   /* worker threads made */
static long start_gen[MAX_WORKERS + 1]; /* gen when worker k was made: its first job is later */
static int remaining;                  /* workers' ranges of the current job not yet done */
static int status;                     /* the first failure of a worker's range, else 0 */
static long spin_ns = 50000;

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Range k of [0, n) cut into `parts`: the sizes differ by at most one, the larger first. */
static void range_of(int n, int parts, int k, int *lo, int *hi) {
    const int q = n / parts, r = n % parts;
    *lo = k * q + (k < r ? k : r);
    *hi = *lo + q + (k < r);
}

void abp_pool_set_spin(long ns) { __atomic_store_n(&spin_ns, ns < 0 ? 0 : ns, __ATOMIC_RELAXED); }

static void *worker_main(void *arg) {
    const int k = (int)(intptr_t)arg;
    pthread_mutex_lock(&lock);
    long seen = start_gen[k];
    pthread_mutex_unlock(&lock);
    for (;;) {
        /* wait for a job after `seen`: spinning for spin_ns, then asleep */
        const long t0 = now_ns(), spin = __atomic_load_n(&spin_ns, __ATOMIC_RELAXED);
        for (unsigned i = 1; __atomic_load_n(&gen, __ATOMIC_ACQUIRE) == seen; ++i) {
            if ((i & 63) == 0 && now_ns() - t0 > spin) {
                pthread_mutex_lock(&lock);
                while (gen == seen) pthread_cond_wait(&wake, &lock);
                pthread_mutex_unlock(&lock);
                break;
            }
            relax();
        }
        pthread_mutex_lock(&lock);
        seen = gen;
        const struct job j = job;
        pthread_mutex_unlock(&lock);
        if (k < j.parts) {
            int lo, hi;
            range_of(j.n, j.parts, k, &lo, &hi);
            const int s = j.fn(j.args, lo, hi);
            if (s != 0) {
                int zero = 0;
                __atomic_compare_exchange_n(&status, &zero, s, 0, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED);
            }
            __atomic_fetch_sub(&remaining, 1, __ATOMIC_RELEASE);
        }
    }
    return 0;
}

/* In the child of a fork: no workers (they stayed in the parent), every lock free. */
static void after_fork_in_child(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    lock = m;
    dispatch = m;
    wake = c;
    nworkers = 0;
}

static void register_atfork(void) { pthread_atfork(0, 0, after_fork_in_child); }

int abp_pool_run(int threads, int n, abp_range_fn range_fn, const void *args) {
    int parts = threads < n ? threads : n;
    if (parts > MAX_WORKERS + 1) parts = MAX_WORKERS + 1;
    if (parts <= 1) return range_fn(args, 0, n);
    pthread_once(&atfork_once, register_atfork);
    if (pthread_mutex_trylock(&dispatch) != 0) return range_fn(args, 0, n); /* pool busy */
    pthread_mutex_lock(&lock);
    while (nworkers < parts - 1) {
        pthread_t t;
        pthread_attr_t attr;
        const int k = nworkers + 1;
        start_gen[k] = gen;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int failed = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)k);
        pthread_attr_destroy(&attr);
        if (failed) break;
        nworkers = k;
    }
    if (parts > nworkers + 1) parts = nworkers + 1; /* a thread could not be made: fewer ranges */
    job.fn = range_fn;
    job.args = args;
    job.n = n;
    job.parts = parts;
    __atomic_store_n(&status, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&remaining, parts - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&gen, gen + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);

    int lo, hi;
    range_of(n, parts, 0, &lo, &hi);
    const int s0 = range_fn(args, lo, hi);
    /* the workers' ranges: spin for a while, then check every 20 microseconds */
    const long t0 = now_ns();
    const struct timespec nap = {0, 20000};
    for (unsigned i = 1; __atomic_load_n(&remaining, __ATOMIC_ACQUIRE) > 0; ++i) {
        if ((i & 63) == 0 && now_ns() - t0 > 200000) nanosleep(&nap, 0);
        else relax();
    }
    const int s = __atomic_load_n(&status, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&dispatch);
    return s0 != 0 ? s0 : s;
}
