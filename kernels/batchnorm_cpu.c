/* Batch normalisation with batch statistics on the CPU, in fewer passes over memory
 * (abp_np/functional.py: batchnorm_forward / batchnorm_backward, whose NumPy code is the
 * reference these functions are tested against).
 *
 * Arrays are (N, C, L), C-contiguous: channel c of example n is the run x[(n C + c) L ...].
 * M = N L values per channel. Sums are accumulated in double, in 8 interleaved partial sums
 * (independent chains the compiler can vectorise; a single running sum would wait on each add).
 *
 *   bn_stats        xc = x - mean,  mean = sum(x) / M,  var = sum(xc^2) / M       (2 passes)
 *   bn_scale_shift  y = xc scale[c] + shift[c]                                       (1 pass)
 *   bn_backward     sum_dy = sum(dy), sum_dy_xc = sum(dy xc), then
 *                   dx = a[c] (dy - sum_dy / M - xc k[c] sum_dy_xc / M), k = inv_std^2 (2 passes)
 *
 * Each function does the channels c0 .. c1 - 1 only: abp_np/fast/threads.py runs ranges of
 * channels on several threads at once; each channel is computed the same way whatever the range.
 * Plain C99, compiled once by abp_np/fast/cpu.py; float (_f32) and double (_f64).
 */
#include <stddef.h>

#include "pool_cpu.h"

#define LANES 8

#define ABP_DEFINE(T, SUFFIX)                                                                   \
    /* sum of p[0..L) and, when q is not NULL, sum of p[l] q[l] */                              \
    static void sums_##SUFFIX(const T *p, const T *q, int L, double *s_out, double *t_out) {    \
        double s[LANES] = {0}, t[LANES] = {0};                                                  \
        int l = 0;                                                                              \
        for (; l + LANES <= L; l += LANES)                                                      \
            for (int k = 0; k < LANES; ++k) {                                                   \
                s[k] += p[l + k];                                                               \
                if (q) t[k] += (double)p[l + k] * q[l + k];                                     \
            }                                                                                   \
        for (; l < L; ++l) {                                                                    \
            s[0] += p[l];                                                                       \
            if (q) t[0] += (double)p[l] * q[l];                                                 \
        }                                                                                       \
        for (int k = 0; k < LANES; ++k) {                                                       \
            *s_out += s[k];                                                                     \
            *t_out += t[k];                                                                     \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* xc = x - mu on [0, L); returns the sum of xc^2 */                                        \
    static double center_##SUFFIX(const T *x, T *xc, T mu, int L) {                             \
        double v[LANES] = {0}, total = 0.0;                                                     \
        int l = 0;                                                                              \
        for (; l + LANES <= L; l += LANES)                                                      \
            for (int k = 0; k < LANES; ++k) {                                                   \
                const T d = x[l + k] - mu;                                                      \
                xc[l + k] = d;                                                                  \
                v[k] += (double)d * d;                                                          \
            }                                                                                   \
        for (; l < L; ++l) {                                                                    \
            const T d = x[l] - mu;                                                              \
            xc[l] = d;                                                                          \
            v[0] += (double)d * d;                                                              \
        }                                                                                       \
        for (int k = 0; k < LANES; ++k) total += v[k];                                          \
        return total;                                                                           \
    }                                                                                           \
                                                                                                \
    void bn_stats_##SUFFIX(const T *x, T *xc, T *mean, T *var, int N, int C, int L, int c0,     \
                           int c1) {                                                        \
        const double M = (double)N * L;                                                         \
        for (int c = c0; c < c1; ++c) {                                                         \
            double s = 0.0, unused = 0.0, v = 0.0;                                              \
            for (int n = 0; n < N; ++n)                                                         \
                sums_##SUFFIX(x + ((ptrdiff_t)n * C + c) * L, NULL, L, &s, &unused);            \
            const T mu = (T)(s / M);                                                            \
            for (int n = 0; n < N; ++n) {                                                       \
                const ptrdiff_t o = ((ptrdiff_t)n * C + c) * L;                                 \
                v += center_##SUFFIX(x + o, xc + o, mu, L);                                     \
            }                                                                                   \
            mean[c] = mu;                                                                       \
            var[c] = (T)(v / M);                                                                \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    void bn_scale_shift_##SUFFIX(const T *xc, T *y, const T *scale, const T *shift, int N,      \
                                 int C, int L, int c0, int c1) {                                \
        for (int n = 0; n < N; ++n)                                                             \
            for (int c = c0; c < c1; ++c) {                                                     \
                const ptrdiff_t o = ((ptrdiff_t)n * C + c) * L;                                 \
                const T a = scale[c], b = shift[c];                                             \
                for (int l = 0; l < L; ++l) y[o + l] = xc[o + l] * a + b;                       \
            }                                                                                   \
    }                                                                                           \
                                                                                                \
    void bn_backward_##SUFFIX(const T *dy, const T *xc, T *dx, const T *a, const T *inv_std,    \
                              T *sum_dy, T *sum_dy_xc, int N, int C, int L, int c0, int c1) {   \
        const double M = (double)N * L;                                                         \
        for (int c = c0; c < c1; ++c) {                                                         \
            double s = 0.0, t = 0.0;                                                            \
            for (int n = 0; n < N; ++n) {                                                       \
                const ptrdiff_t o = ((ptrdiff_t)n * C + c) * L;                                 \
                sums_##SUFFIX(dy + o, xc + o, L, &s, &t);                                       \
            }                                                                                   \
            sum_dy[c] = (T)s;                                                                   \
            sum_dy_xc[c] = (T)t;                                                                \
            const T mean_dy = (T)(s / M);                                                       \
            const T k = (T)(t / M * (double)inv_std[c] * inv_std[c]);                           \
            const T ac = a[c];                                                                  \
            for (int n = 0; n < N; ++n) {                                                       \
                const ptrdiff_t o = ((ptrdiff_t)n * C + c) * L;                                 \
                for (int l = 0; l < L; ++l) dx[o + l] = ac * (dy[o + l] - mean_dy - xc[o + l] * k); \
            }                                                                                   \
        }                                                                                       \
    }

ABP_DEFINE(float, f32)
ABP_DEFINE(double, f64)

/* The same three functions on `threads` threads (kernels/pool_cpu.c): the whole loop over
 * channels, split in ranges; the same bits whatever the count. */
#define ABP_PARALLEL_BN(T, S)                                                                      \
    struct stats_args_##S {                                                                        \
        const T *x;                                                                                \
        T *xc, *mean, *var;                                                                        \
        int N, C, L;                                                                               \
    };                                                                                             \
    static int stats_range_##S(const void *p, int lo, int hi) {                                    \
        const struct stats_args_##S *a = p;                                                        \
        bn_stats_##S(a->x, a->xc, a->mean, a->var, a->N, a->C, a->L, lo, hi);                      \
        return 0;                                                                                  \
    }                                                                                              \
    int bn_stats_par_##S(const T *x, T *xc, T *mean, T *var, int N, int C, int L, int threads) {   \
        const struct stats_args_##S a = {x, xc, mean, var, N, C, L};                               \
        return abp_pool_run(threads, C, stats_range_##S, &a);                                      \
    }                                                                                              \
    struct scale_shift_args_##S {                                                                  \
        const T *xc;                                                                               \
        T *y;                                                                                      \
        const T *scale, *shift;                                                                    \
        int N, C, L;                                                                               \
    };                                                                                             \
    static int scale_shift_range_##S(const void *p, int lo, int hi) {                              \
        const struct scale_shift_args_##S *a = p;                                                  \
        bn_scale_shift_##S(a->xc, a->y, a->scale, a->shift, a->N, a->C, a->L, lo, hi);             \
        return 0;                                                                                  \
    }                                                                                              \
    int bn_scale_shift_par_##S(const T *xc, T *y, const T *scale, const T *shift, int N, int C,    \
                               int L, int threads) {                                               \
        const struct scale_shift_args_##S a = {xc, y, scale, shift, N, C, L};                      \
        return abp_pool_run(threads, C, scale_shift_range_##S, &a);                                \
    }                                                                                              \
    struct backward_args_##S {                                                                     \
        const T *dy, *xc;                                                                          \
        T *dx;                                                                                     \
        const T *a, *inv_std;                                                                      \
        T *sum_dy, *sum_dy_xc;                                                                     \
        int N, C, L;                                                                               \
    };                                                                                             \
    static int backward_range_##S(const void *p, int lo, int hi) {                                 \
        const struct backward_args_##S *b = p;                                                     \
        bn_backward_##S(b->dy, b->xc, b->dx, b->a, b->inv_std, b->sum_dy, b->sum_dy_xc, b->N,      \
                        b->C, b->L, lo, hi);                                                       \
        return 0;                                                                                  \
    }                                                                                              \
    int bn_backward_par_##S(const T *dy, const T *xc, T *dx, const T *a, const T *inv_std,         \
                            T *sum_dy, T *sum_dy_xc, int N, int C, int L, int threads) {           \
        const struct backward_args_##S b = {dy, xc, dx, a, inv_std, sum_dy, sum_dy_xc, N, C, L};   \
        return abp_pool_run(threads, C, backward_range_##S, &b);                                   \
    }

ABP_PARALLEL_BN(float, f32)
ABP_PARALLEL_BN(double, f64)
