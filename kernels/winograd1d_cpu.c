/* Data movement of the 1-D Winograd route (abp_np/fast/winograd1d.py) on the CPU.
 *
 * The route computes a 1-D transposed convolution with stride s as one 3-tap correlation with
 * s Cout outputs (the phases as channels), by F(m, 3):
 *
 *     V = B^T d  for every input tile d        (here: winograd1d_input)
 *     M = U V    for each of the a = m + 2 positions (BLAS GEMMs, in winograd1d.py)
 *     y = A^T M, phases shuffled into place and cropped  (here: winograd1d_output)
 *
 * and its backward pass as the adjoint of each step (winograd1d_output_adjoint: dM = A dY;
 * winograd1d_input_adjoint: B dV, added back where each tile was read). The NumPy code in
 * abp_np/fast/winograd1d.py is the reference these functions are tested against
 * (tests/test_winograd1d.py); the transforms are passed in as matrices (bt = B^T, a x a; at =
 * A^T, m x a), so both compute the same sums, in another order.
 *
 * Shapes, for a block of n examples of nt tiles each, P = n nt, tile index p = b nt + t; tile
 * p reads x at samples m t + k - 2, k < a (zeros outside x); output sample j of channel o is
 * u = j + pad = (m t + i) s + r on the un-cropped grid, phase r, tile t, position i:
 *
 *   winograd1d_input           x (n, C, L)          -> V (a, C, P)
 *   winograd1d_input_adjoint   dV (a, C, P)         -> dx (n, C, L)
 *   winograd1d_output          M (a, P, Cout s)     -> y (n, Cout, Lout)
 *       y[b, o, (m t + i) s + r - pad] = sum_k at[i, k] M[k, p, o s + r] + bias[o]
 *   winograd1d_output_adjoint  dy (n, Cout, Lout)   -> dM (a, P, Cout s)
 *
 * Each function does the channels c0 .. c1 - 1 (input channels on the input side, output
 * channels on the output side), so that abp_np/fast/threads.py can run ranges of channels on
 * several threads; every channel is computed the same way whatever the range. Plain C99,
 * compiled once by abp_np/fast/cpu.py with the other kernels; float (_f32) and double (_f64);
 * each returns 0, or 1 when it could not allocate its scratch row or tile.
 */
#include <stddef.h>
#include <stdlib.h>

#include "pool_cpu.h"

#define ABP_WINOGRAD1D(T, S)                                                                       \
    int winograd1d_input_##S(const T *x, T *V, const T *bt, int n, int C, int L, int m, int nt,    \
                             int c0, int c1) {                                                     \
        const int a = m + 2, width = m * nt + 2;                                                   \
        const ptrdiff_t P = (ptrdiff_t)n * nt;                                                     \
        T *restrict xp = malloc(sizeof(T) * width); /* a row of x: 2 zeros before, zeros after */ \
        if (!xp) return 1;                                                                         \
        for (int c = c0; c < c1; ++c)                                                              \
            for (int b = 0; b < n; ++b) {                                                          \
                const T *xr = x + ((ptrdiff_t)b * C + c) * L;                                      \
                for (int j = 0; j < width; ++j) {                                                  \
                    const int jx = j - 2;                                                          \
                    xp[j] = (jx >= 0 && jx < L) ? xr[jx] : (T)0;                                   \
                }                                                                                  \
                T *restrict v = V + (ptrdiff_t)c * P + (ptrdiff_t)b * nt; /* + xi C P */       \
                const ptrdiff_t CP = (ptrdiff_t)C * P;                                             \
                if (m == 4) { /* F(4, 3)'s B^T written out */                                     \
                    for (int t = 0; t < nt; ++t) {                                                 \
                        const T *d = xp + 4 * t;                                                   \
                        const T d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3], d4 = d[4], d5 = d[5];  \
                        v[t] = 4 * d0 - 5 * d2 + d4;                                               \
                        v[CP + t] = d3 + d4 - 4 * (d1 + d2);                                       \
                        v[2 * CP + t] = d4 - d3 + 4 * (d1 - d2);                                   \
                        v[3 * CP + t] = d4 - d2 + 2 * (d3 - d1);                                   \
                        v[4 * CP + t] = d4 - d2 + 2 * (d1 - d3);                                   \
                        v[5 * CP + t] = 4 * d1 - 5 * d3 + d5;                                      \
                    }                                                                              \
                } else {                                                                           \
                    for (int xi = 0; xi < a; ++xi) {                                               \
                        const T *w = bt + xi * a;                                                  \
                        for (int t = 0; t < nt; ++t) {                                             \
                            T acc = 0;                                                             \
                            for (int k = 0; k < a; ++k) acc += w[k] * xp[m * t + k];               \
                            v[xi * CP + t] = acc;                                                  \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        free(xp);                                                                                  \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    int winograd1d_input_adjoint_##S(const T *dV, T *dx, const T *bt, int n, int C, int L, int m,  \
                                     int nt, int c0, int c1) {                                     \
        const int a = m + 2, width = m * nt + 2;                                                   \
        const ptrdiff_t P = (ptrdiff_t)n * nt;                                                     \
        T *restrict xp = malloc(sizeof(T) * width);                                                \
        if (!xp) return 1;                                                                         \
        for (int c = c0; c < c1; ++c)                                                              \
            for (int b = 0; b < n; ++b) {                                                          \
                for (int j = 0; j < width; ++j) xp[j] = 0;                                         \
                const T *restrict v = dV + (ptrdiff_t)c * P + (ptrdiff_t)b * nt; /* + xi C P */ \
                const ptrdiff_t CP = (ptrdiff_t)C * P;                                             \
                if (m == 4) { /* xp[4 t + k] += (B dV)[k]: F(4, 3)'s B written out */              \
                    for (int t = 0; t < nt; ++t) {                                                 \
                        const T v0 = v[t], v1 = v[CP + t], v2 = v[2 * CP + t];                     \
                        const T v3 = v[3 * CP + t], v4 = v[4 * CP + t], v5 = v[5 * CP + t];        \
                        T *d = xp + 4 * t;                                                         \
                        d[0] += 4 * v0;                                                            \
                        d[1] += 4 * (v2 - v1 + v5) + 2 * (v4 - v3);                                \
                        d[2] += -5 * v0 - 4 * (v1 + v2) - v3 - v4;                                 \
                        d[3] += v1 - v2 + 2 * (v3 - v4) - 5 * v5;                                  \
                        d[4] += v0 + v1 + v2 + v3 + v4;                                            \
                        d[5] += v5;                                                                \
                    }                                                                              \
                } else {                                                                           \
                    for (int xi = 0; xi < a; ++xi) { /* xp[m t + k] += B^T[xi, k] dV[xi, c, p] */  \
                        const T *w = bt + xi * a;                                                  \
                        for (int t = 0; t < nt; ++t)                                               \
                            for (int k = 0; k < a; ++k) xp[m * t + k] += w[k] * v[xi * CP + t];    \
                    }                                                                              \
                }                                                                                  \
                T *xr = dx + ((ptrdiff_t)b * C + c) * L;                                           \
                for (int j = 0; j < L; ++j) xr[j] = j + 2 < width ? xp[j + 2] : (T)0;              \
            }                                                                                      \
        free(xp);                                                                                  \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    int winograd1d_output_##S(const T *M, T *y, const T *bias, const T *at, int n, int Cout,       \
                              int s, int m, int nt, int pad, int Lout, int o0, int o1) {           \
        const int a = m + 2;                                                                       \
        const ptrdiff_t P = (ptrdiff_t)n * nt, R = (ptrdiff_t)Cout * s;                            \
        const ptrdiff_t r0 = (ptrdiff_t)o0 * s, nr = (ptrdiff_t)(o1 - o0) * s;                     \
        T *restrict Y = malloc(sizeof(T) * m * (nr > 0 ? nr : 1)); /* a tile: Y[i, (o, r)] */      \
        if (!Y) return 1;                                                                          \
        for (int b = 0; b < n; ++b)                                                                \
            for (int t = 0; t < nt; ++t) {                                                         \
                const ptrdiff_t p = (ptrdiff_t)b * nt + t;                                         \
                const T *restrict m0 = M + p * R + r0; /* M[k, p] = m0 + k P R */             \
                if (m == 4) { /* F(4, 3)'s A^T written out: one pass over the tile */           \
                    const ptrdiff_t PR = P * R;                                                    \
                    for (ptrdiff_t q = 0; q < nr; ++q) {                                           \
                        const T v0 = m0[q], v1 = m0[PR + q], v2 = m0[2 * PR + q];                  \
                        const T v3 = m0[3 * PR + q], v4 = m0[4 * PR + q], v5 = m0[5 * PR + q];     \
                        const T s12 = v1 + v2, d12 = v1 - v2, s34 = v3 + v4, d34 = v3 - v4;        \
                        Y[q] = v0 + s12 + s34;                                                     \
                        Y[nr + q] = d12 + 2 * d34;                                                 \
                        Y[2 * nr + q] = s12 + 4 * s34;                                             \
                        Y[3 * nr + q] = d12 + 8 * d34 + v5;                                        \
                    }                                                                              \
                } else {                                                                           \
                    for (int i = 0; i < m; ++i) { /* Y[i] = sum_k A^T[i, k] M[k, p] */             \
                        T *restrict yi = Y + i * nr;                                               \
                        for (ptrdiff_t q = 0; q < nr; ++q) yi[q] = 0;                              \
                        for (int k = 0; k < a; ++k) {                                              \
                            const T w = at[i * a + k];                                             \
                            const T *restrict mk = m0 + (ptrdiff_t)k * P * R;                      \
                            for (ptrdiff_t q = 0; q < nr; ++q) yi[q] += w * mk[q];                 \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
                for (int o = o0; o < o1; ++o) { /* y[b, o, (m t + i) s + r - pad] */               \
                    const T bo = bias ? bias[o] : (T)0;                                            \
                    T *restrict yr = y + ((ptrdiff_t)b * Cout + o) * Lout;                         \
                    for (int i = 0; i < m; ++i) {                                                  \
                        const T *restrict src = Y + i * nr + (ptrdiff_t)(o - o0) * s;              \
                        const int u0 = (m * t + i) * s - pad;                                      \
                        const int lo = u0 < 0 ? -u0 : 0, hi = Lout - u0 < s ? Lout - u0 : s;       \
                        for (int r = lo; r < hi; ++r) yr[u0 + r] = src[r] + bo;                    \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        free(Y);                                                                                   \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    int winograd1d_output_adjoint_##S(const T *dy, T *dM, const T *at, int n, int Cout, int s,     \
                                      int m, int nt, int pad, int Lout, int o0, int o1) {          \
        const int a = m + 2;                                                                       \
        const ptrdiff_t P = (ptrdiff_t)n * nt, R = (ptrdiff_t)Cout * s;                            \
        const ptrdiff_t r0 = (ptrdiff_t)o0 * s, nr = (ptrdiff_t)(o1 - o0) * s;                     \
        T *restrict G = malloc(sizeof(T) * m * (nr > 0 ? nr : 1)); /* dy's tile: G[i, (o, r)] */   \
        if (!G) return 1;                                                                          \
        for (int b = 0; b < n; ++b)                                                                \
            for (int t = 0; t < nt; ++t) {                                                         \
                const ptrdiff_t p = (ptrdiff_t)b * nt + t;                                         \
                for (int o = o0; o < o1; ++o) {                                                    \
                    const T *restrict yr = dy + ((ptrdiff_t)b * Cout + o) * Lout;                  \
                    for (int i = 0; i < m; ++i) {                                                  \
                        T *restrict dst = G + i * nr + (ptrdiff_t)(o - o0) * s;                    \
                        const int u0 = (m * t + i) * s - pad;                                      \
                        if (u0 >= 0 && u0 + s <= Lout) {                                           \
                            for (int r = 0; r < s; ++r) dst[r] = yr[u0 + r];                       \
                        } else {                                                                   \
                            for (int r = 0; r < s; ++r)                                            \
                                dst[r] = (u0 + r >= 0 && u0 + r < Lout) ? yr[u0 + r] : (T)0;       \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
                T *restrict d0 = dM + p * R + r0; /* dM[k, p] = d0 + k P R */                  \
                if (m == 4) { /* A = (A^T)^T of F(4, 3) written out */                            \
                    const ptrdiff_t PR = P * R;                                                    \
                    for (ptrdiff_t q = 0; q < nr; ++q) {                                           \
                        const T g0 = G[q], g1 = G[nr + q], g2 = G[2 * nr + q], g3 = G[3 * nr + q]; \
                        d0[q] = g0;                                                                \
                        d0[PR + q] = g0 + g1 + g2 + g3;                                            \
                        d0[2 * PR + q] = g0 - g1 + g2 - g3;                                        \
                        d0[3 * PR + q] = g0 + 2 * g1 + 4 * g2 + 8 * g3;                            \
                        d0[4 * PR + q] = g0 - 2 * g1 + 4 * g2 - 8 * g3;                            \
                        d0[5 * PR + q] = g3;                                                       \
                    }                                                                              \
                } else {                                                                           \
                    for (int k = 0; k < a; ++k) { /* dM[k, p] = sum_i A^T[i, k] G[i] */            \
                        T *restrict mk = d0 + (ptrdiff_t)k * P * R;                                \
                        for (ptrdiff_t q = 0; q < nr; ++q) mk[q] = 0;                              \
                        for (int i = 0; i < m; ++i) {                                              \
                            const T w = at[i * a + k];                                             \
                            const T *restrict gi = G + i * nr;                                     \
                            for (ptrdiff_t q = 0; q < nr; ++q) mk[q] += w * gi[q];                 \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        free(G);                                                                                   \
        return 0;                                                                                  \
    }

ABP_WINOGRAD1D(float, f32)
ABP_WINOGRAD1D(double, f64)

/* The same four functions on `threads` threads (kernels/pool_cpu.c): the whole loop over
 * channels, split in ranges; the same bits whatever the count. */
#define ABP_PARALLEL1D(T, S)                                                                       \
    struct tiles1d_args_##S {                                                                      \
        const T *src;                                                                              \
        T *dst;                                                                                    \
        const T *bt;                                                                               \
        int n, C, L, m, nt;                                                                        \
    };                                                                                             \
    static int input1d_range_##S(const void *p, int lo, int hi) {                                  \
        const struct tiles1d_args_##S *a = p;                                                      \
        return winograd1d_input_##S(a->src, a->dst, a->bt, a->n, a->C, a->L, a->m, a->nt, lo, hi); \
    }                                                                                              \
    static int input1d_adjoint_range_##S(const void *p, int lo, int hi) {                          \
        const struct tiles1d_args_##S *a = p;                                                      \
        return winograd1d_input_adjoint_##S(a->src, a->dst, a->bt, a->n, a->C, a->L, a->m, a->nt,  \
                                            lo, hi);                                               \
    }                                                                                              \
    int winograd1d_input_par_##S(const T *x, T *V, const T *bt, int n, int C, int L, int m,        \
                                 int nt, int threads) {                                            \
        const struct tiles1d_args_##S a = {x, V, bt, n, C, L, m, nt};                              \
        return abp_pool_run(threads, C, input1d_range_##S, &a);                                    \
    }                                                                                              \
    int winograd1d_input_adjoint_par_##S(const T *dV, T *dx, const T *bt, int n, int C, int L,     \
                                         int m, int nt, int threads) {                             \
        const struct tiles1d_args_##S a = {dV, dx, bt, n, C, L, m, nt};                            \
        return abp_pool_run(threads, C, input1d_adjoint_range_##S, &a);                            \
    }                                                                                              \
    struct output1d_args_##S {                                                                     \
        const T *src;                                                                              \
        T *dst;                                                                                    \
        const T *bias, *at;                                                                        \
        int n, Cout, s, m, nt, pad, Lout;                                                          \
    };                                                                                             \
    static int output1d_range_##S(const void *p, int lo, int hi) {                                 \
        const struct output1d_args_##S *a = p;                                                     \
        return winograd1d_output_##S(a->src, a->dst, a->bias, a->at, a->n, a->Cout, a->s, a->m,   \
                                     a->nt, a->pad, a->Lout, lo, hi);                              \
    }                                                                                              \
    static int output1d_adjoint_range_##S(const void *p, int lo, int hi) {                         \
        const struct output1d_args_##S *a = p;                                                     \
        return winograd1d_output_adjoint_##S(a->src, a->dst, a->at, a->n, a->Cout, a->s, a->m,     \
                                             a->nt, a->pad, a->Lout, lo, hi);                      \
    }                                                                                              \
    int winograd1d_output_par_##S(const T *M, T *y, const T *bias, const T *at, int n, int Cout,   \
                                  int s, int m, int nt, int pad, int Lout, int threads) {          \
        const struct output1d_args_##S a = {M, y, bias, at, n, Cout, s, m, nt, pad, Lout};         \
        return abp_pool_run(threads, Cout, output1d_range_##S, &a);                                \
    }                                                                                              \
    int winograd1d_output_adjoint_par_##S(const T *dy, T *dM, const T *at, int n, int Cout, int s, \
                                          int m, int nt, int pad, int Lout, int threads) {         \
        const struct output1d_args_##S a = {dy, dM, NULL, at, n, Cout, s, m, nt, pad, Lout};       \
        return abp_pool_run(threads, Cout, output1d_adjoint_range_##S, &a);                        \
    }

ABP_PARALLEL1D(float, f32)
ABP_PARALLEL1D(double, f64)
