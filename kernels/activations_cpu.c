/* ReLU and its backward pass, and SGD's update, on the CPU, for the pool's threads
 * (kernels/pool_cpu.c).
 *
 * The same values, bit for bit, as the NumPy expressions of abp_np/functional.py and
 * abp_np/fast/elementwise.py, which are the reference these functions are tested against
 * (tests/test_threads.py):
 *
 *   relu_forward    y = maximum(x, 0): x where x > 0 or x is NaN (NumPy's maximum keeps NaN,
 *                   and gives +0 for -0), else +0
 *   relu_backward   dx = dy * (y > 0): the product with 1 or 0, so -0, NaN and inf * 0 come out
 *                   as NumPy's product gives them
 *   sgd_update      abp_np/optim.py's SGD._apply on one tensor, in place, for each element:
 *                       g = g * scale        (when clipping)
 *                       g = g + decay * p    (when decay != 0: filters)
 *                       v = v * momentum;  v = v + g
 *                       p = p - lr * v
 *                   each operation rounded to T as NumPy rounds it (the Python numbers lr,
 *                   decay and momentum first rounded to T, as NumPy does with a float32 array);
 *                   no temporaries. Compiled with -ffp-contract=off, so that no two of these
 *                   operations fuse into one rounding.
 *
 * On flat, C-contiguous arrays; each function does the elements i0 .. i1 - 1 (the _par entry
 * points: the whole array on `threads` threads). Plain C99, compiled once by
 * abp_np/fast/cpu.py; float (_f32) and double (_f64).
 */
#include <stddef.h>

#include "pool_cpu.h"

#define ABP_ACTIVATIONS(T, S)                                                                      \
    void relu_forward_##S(const T *restrict x, T *restrict y, ptrdiff_t i0, ptrdiff_t i1) {        \
        for (ptrdiff_t i = i0; i < i1; ++i) y[i] = (x[i] > 0 || x[i] != x[i]) ? x[i] : (T)0;      \
    }                                                                                              \
    void relu_backward_##S(const T *restrict dy, const T *restrict y, T *restrict dx,              \
                           ptrdiff_t i0, ptrdiff_t i1) {                                           \
        for (ptrdiff_t i = i0; i < i1; ++i) {                                                      \
            T m = 0; /* written so that the compiler vectorises the loop: dy (T)(y > 0) */          \
            m = y[i] > 0 ? (T)1 : m;                                                               \
            dx[i] = dy[i] * m;                                                                     \
        }                                                                                          \
    }                                                                                              \
    /* the pool splits an int range: chunks of CHUNK elements */                                   \
    struct relu_args_##S {                                                                         \
        const T *x, *y;                                                                            \
        T *out;                                                                                    \
        ptrdiff_t size;                                                                            \
    };                                                                                             \
    static int relu_forward_range_##S(const void *p, int lo, int hi) {                             \
        const struct relu_args_##S *a = p;                                                         \
        relu_forward_##S(a->x, a->out, chunk_start(lo, a->size), chunk_start(hi, a->size));        \
        return 0;                                                                                  \
    }                                                                                              \
    static int relu_backward_range_##S(const void *p, int lo, int hi) {                            \
        const struct relu_args_##S *a = p;                                                         \
        relu_backward_##S(a->x, a->y, a->out, chunk_start(lo, a->size), chunk_start(hi, a->size)); \
        return 0;                                                                                  \
    }                                                                                              \
    int relu_forward_par_##S(const T *x, T *y, ptrdiff_t size, int threads) {                      \
        const struct relu_args_##S a = {x, NULL, y, size};                                         \
        return abp_pool_run(threads, chunks(size), relu_forward_range_##S, &a);                    \
    }                                                                                              \
    int relu_backward_par_##S(const T *dy, const T *y, T *dx, ptrdiff_t size, int threads) {       \
        const struct relu_args_##S a = {dy, y, dx, size};                                          \
        return abp_pool_run(threads, chunks(size), relu_backward_range_##S, &a);                   \
    }

#define ABP_SGD(T, S)                                                                              \
    void sgd_update_##S(T *restrict p, const T *restrict g, T *restrict v, T scale, int clip,      \
                        T decay, T momentum, T lr, ptrdiff_t i0, ptrdiff_t i1) {                   \
        for (ptrdiff_t i = i0; i < i1; ++i) {                                                      \
            T gi = g[i];                                                                           \
            if (clip) gi = gi * scale;                                                             \
            if (decay != 0) gi = gi + decay * p[i];                                                \
            T vi = v[i] * momentum;                                                                \
            vi = vi + gi;                                                                          \
            v[i] = vi;                                                                             \
            p[i] = p[i] - lr * vi;                                                                 \
        }                                                                                          \
    }                                                                                              \
    struct sgd_args_##S {                                                                          \
        T *p, *v;                                                                                  \
        const T *g;                                                                                \
        T scale, decay, momentum, lr;                                                              \
        int clip;                                                                                  \
        ptrdiff_t size;                                                                            \
    };                                                                                             \
    static int sgd_range_##S(const void *p, int lo, int hi) {                                      \
        const struct sgd_args_##S *a = p;                                                          \
        sgd_update_##S(a->p, a->g, a->v, a->scale, a->clip, a->decay, a->momentum, a->lr,          \
                       chunk_start(lo, a->size), chunk_start(hi, a->size));                        \
        return 0;                                                                                  \
    }                                                                                              \
    int sgd_update_par_##S(T *p, const T *g, T *v, ptrdiff_t size, T scale, int clip, T decay,     \
                           T momentum, T lr, int threads) {                                        \
        const struct sgd_args_##S a = {p, v, g, scale, decay, momentum, lr, clip, size};           \
        return abp_pool_run(threads, chunks(size), sgd_range_##S, &a);                             \
    }

#define CHUNK 4096 /* elements per unit of the split: 16 KiB of float32 */

static int chunks(ptrdiff_t size) { return (int)((size + CHUNK - 1) / CHUNK); }
static ptrdiff_t chunk_start(int k, ptrdiff_t size) {
    const ptrdiff_t i = (ptrdiff_t)k * CHUNK;
    return i < size ? i : size;
}

ABP_ACTIVATIONS(float, f32)
ABP_ACTIVATIONS(double, f64)
ABP_SGD(float, f32)
ABP_SGD(double, f64)
