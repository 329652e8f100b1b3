/* Data movement of the Winograd transposed convolution on the CPU (abp_np/winograd.py).
 *
 * Four rearrangements that NumPy can only do as strided copies with tiny inner loops. They
 * do no arithmetic except the additions of the overlap-add: every transform and every product
 * stays a BLAS GEMM in abp_np/winograd.py, whose NumPy code is the reference these functions
 * are tested against (tests/test_winograd.py), element for element.
 *
 * Shapes, with a = m + 2 (tile size), s = 2 (stride), P = n th tw (tiles of a block of n
 * examples), p = (b th + ti) tw + tj:
 *   gather_tiles   x (n, C, H, W)                -> d (a, a, C, P)
 *       d[i, j, c, p] = x[b, c, row0 + m ti + i, col0 + m tj + j]   (0 outside x)
 *   overlap_add    dd (a, a, C, P)               -> dx (n, C, H, W)   (its adjoint)
 *       dx[b, c, h, w] = sum of dd[i, j, c, p] over the (i, j, p) that gather_tiles reads
 *       from (h, w)
 *   shuffle        Y (m, m, s, s, Cout, P)       -> y (n, Cout, s m th, s m tw)
 *       y[b, o, s (m ti + i) + r, s (m tj + j) + r2] = Y[i, j, r, r2, o, p] (+ bias[o])
 *   unshuffle      y                             -> Y   (its inverse and adjoint)
 *
 * Plain C99, one thread, compiled once by abp_np/_cpu.py with the system's C compiler and
 * loaded through ctypes. Each function exists for float (suffix _f32) and double (_f64) and
 * returns 0, or 1 when it could not allocate its small scratch tables.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* One channel at a time, the n examples' planes are copied into (or accumulated in)
 * zero-bordered scratch planes `pad` of (m th + 2) x (m tw + 2): x_pad[v][w] = x[row0 + v][col0 + w].
 * Tile (ti, tj) reads x_pad[m ti + i][m tj + j]; `tab[k]`, k = ti tw + tj, is that offset for
 * i = j = 0. So each of the a^2 outputs of a channel is written as one run of n th tw values. */
#define ABP_DEFINE(T, SUFFIX)                                                                   \
    static void to_pad_##SUFFIX(const T *xp, T *pad, int H, int W, int row0, int col0, int hp,  \
                                int wp) {                                                       \
        memset(pad, 0, sizeof(T) * hp * wp);                                                    \
        for (int v = 0; v < hp; ++v) {                                                          \
            const int h = row0 + v;                                                             \
            if (h < 0 || h >= H) continue;                                                      \
            for (int w = 0; w < wp; ++w) {                                                      \
                const int c = col0 + w;                                                         \
                if (c >= 0 && c < W) pad[v * wp + w] = xp[h * W + c];                          \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    int gather_tiles_##SUFFIX(const T *x, T *d, int n, int C, int H, int W, int row0, int col0, \
                              int m, int th, int tw) {                                          \
        const int a = m + 2, hp = m * th + 2, wp = m * tw + 2, K = th * tw;                     \
        const ptrdiff_t P = (ptrdiff_t)n * K, plane = (ptrdiff_t)C * P, pp = (ptrdiff_t)hp * wp; \
        T *pad = (T *)malloc(sizeof(T) * pp * n); /* the n padded planes of one channel */      \
        ptrdiff_t *tab = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * K);                            \
        if (!pad || !tab) { free(pad); free(tab); return 1; }                                   \
        for (int k = 0; k < K; ++k) tab[k] = (ptrdiff_t)m * (k / tw) * wp + m * (k % tw);       \
        for (int c = 0; c < C; ++c) {                                                           \
            for (int b = 0; b < n; ++b)                                                         \
                to_pad_##SUFFIX(x + ((ptrdiff_t)b * C + c) * H * W, pad + b * pp, H, W, row0,   \
                                col0, hp, wp);                                                  \
            for (int i = 0; i < a; ++i)                                                         \
                for (int j = 0; j < a; ++j) {                                                   \
                    T *dst = d + (i * a + j) * plane + (ptrdiff_t)c * P; /* n K in a row */     \
                    for (int b = 0; b < n; ++b, dst += K) {                                     \
                        const T *src = pad + b * pp + i * wp + j;                               \
                        for (int k = 0; k < K; ++k) dst[k] = src[tab[k]];                       \
                    }                                                                           \
                }                                                                               \
        }                                                                                       \
        free(pad);                                                                              \
        free(tab);                                                                              \
        return 0;                                                                               \
    }                                                                                           \
                                                                                                \
    int overlap_add_##SUFFIX(const T *dd, T *dx, int n, int C, int H, int W, int row0,          \
                             int col0, int m, int th, int tw) {                                 \
        const int a = m + 2, hp = m * th + 2, wp = m * tw + 2, K = th * tw;                     \
        const ptrdiff_t P = (ptrdiff_t)n * K, plane = (ptrdiff_t)C * P, pp = (ptrdiff_t)hp * wp; \
        T *pad = (T *)malloc(sizeof(T) * pp * n);                                               \
        ptrdiff_t *tab = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * K);                            \
        if (!pad || !tab) { free(pad); free(tab); return 1; }                                   \
        for (int k = 0; k < K; ++k) tab[k] = (ptrdiff_t)m * (k / tw) * wp + m * (k % tw);       \
        for (int c = 0; c < C; ++c) {                                                           \
            memset(pad, 0, sizeof(T) * pp * n);                                                 \
            for (int i = 0; i < a; ++i) /* the same order of additions as the NumPy code */     \
                for (int j = 0; j < a; ++j) {                                                   \
                    const T *src = dd + (i * a + j) * plane + (ptrdiff_t)c * P;                 \
                    for (int b = 0; b < n; ++b, src += K) {                                     \
                        T *dst = pad + b * pp + i * wp + j;                                     \
                        for (int k = 0; k < K; ++k) dst[tab[k]] += src[k];                      \
                    }                                                                           \
                }                                                                               \
            for (int b = 0; b < n; ++b) {                                                       \
                T *xp = dx + ((ptrdiff_t)b * C + c) * H * W;                                    \
                const T *pb = pad + b * pp;                                                     \
                for (int h = 0; h < H; ++h)                                                     \
                    for (int w = 0; w < W; ++w) {                                               \
                        const int v = h - row0, u = w - col0;                                   \
                        xp[h * W + w] = (v >= 0 && v < hp && u >= 0 && u < wp) ? pb[v * wp + u] \
                                                                             : (T)0;            \
                    }                                                                           \
            }                                                                                   \
        }                                                                                       \
        free(pad);                                                                              \
        free(tab);                                                                              \
        return 0;                                                                               \
    }                                                                                           \
                                                                                                \
    /* y[b, o, ho, wo] = Y[o P + b th tw + row[ho] + col[wo]] with ho = 2 (m ti + i) + r:       \
     * row[ho] = ((i m) 4 + 2 r) Cout P + ti tw, and col[wo] = (4 j + r2) Cout P + tj.          \
     * forward = 1: Y -> y (shuffle, adding bias[o] unless bias is NULL); forward = 0: y -> Y. */                       \
    int shuffle_##SUFFIX(T *Y, T *y, const T *bias, int n, int Cout, int m, int th, int tw,     \
                         int forward) {                                                         \
        const int Ho = 2 * m * th, Wo = 2 * m * tw;                                             \
        const ptrdiff_t P = (ptrdiff_t)n * th * tw, CP = (ptrdiff_t)Cout * P;                   \
        ptrdiff_t *row = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (Ho + Wo));                    \
        if (!row) return 1;                                                                     \
        ptrdiff_t *col = row + Ho;                                                              \
        for (int ho = 0; ho < Ho; ++ho) {                                                       \
            const int r = ho % 2, q = ho / 2;                                                   \
            row[ho] = ((ptrdiff_t)(q % m) * m * 4 + 2 * r) * CP + (ptrdiff_t)(q / m) * tw;      \
        }                                                                                       \
        for (int wo = 0; wo < Wo; ++wo) {                                                       \
            const int r2 = wo % 2, q = wo / 2;                                                  \
            col[wo] = ((ptrdiff_t)(q % m) * 4 + r2) * CP + q / m;                               \
        }                                                                                       \
        for (int b = 0; b < n; ++b)                                                             \
            for (int o = 0; o < Cout; ++o) {                                                    \
                T *yp = y + ((ptrdiff_t)b * Cout + o) * Ho * Wo;                                \
                T *Yp = Y + (ptrdiff_t)o * P + (ptrdiff_t)b * th * tw;                          \
                for (int ho = 0; ho < Ho; ++ho) {                                               \
                    T *yr = yp + (ptrdiff_t)ho * Wo;                                            \
                    T *Yr = Yp + row[ho];                                                       \
                    if (forward && bias)                                                        \
                        for (int wo = 0; wo < Wo; ++wo) yr[wo] = Yr[col[wo]] + bias[o];         \
                    else if (forward)                                                           \
                        for (int wo = 0; wo < Wo; ++wo) yr[wo] = Yr[col[wo]];                   \
                    else                                                                        \
                        for (int wo = 0; wo < Wo; ++wo) Yr[col[wo]] = yr[wo];                   \
                }                                                                               \
            }                                                                                   \
        free(row);                                                                              \
        return 0;                                                                               \
    }

ABP_DEFINE(float, f32)
ABP_DEFINE(double, f64)
