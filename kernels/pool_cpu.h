/* The thread pool of the CPU kernels (kernels/pool_cpu.c): a loop's ranges run on C threads.
 *
 * A kernel that takes a range [lo, hi) of its outer loop gets a second entry point that runs
 * the whole loop split over `threads` threads, ranges exactly as abp_np.fast.threads.ranges
 * cuts them (sizes differing by at most one, the larger first). Each range is computed as the
 * single loop computes it, so the result is the same bit for bit whatever the count.
 *
 * range_fn(args, lo, hi) does iterations lo .. hi - 1 and returns 0, or nonzero on failure;
 * abp_pool_run returns the first nonzero status of any range (0 when all succeeded), after
 * every range has finished. threads <= 1 runs range_fn(args, 0, n) on the calling thread.
 */
#ifndef ABP_POOL_CPU_H
#define ABP_POOL_CPU_H

typedef int (*abp_range_fn)(const void *args, int lo, int hi);

int abp_pool_run(int threads, int n, abp_range_fn range_fn, const void *args);

#endif
