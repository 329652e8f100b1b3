/* Winograd transforms of the CPU transposed convolution (abp_np/fast/winograd.py), fused with the
 * data movement around them.
 *
 * abp_np/fast/winograd.py computes a stride-2, kernel-5 transposed convolution as ONE 3 x 3
 * correlation with R = 4 Cout outputs, by Winograd's F(m x m, 3 x 3), m = 2 or 4, on tiles of
 * a x a inputs, a = m + 2:
 *
 *     V = B^T d B  for every input tile d       (here: winograd_input)
 *     M = U V      for each of the a a positions (BLAS GEMMs, in abp_np/fast/winograd.py)
 *     Y = A^T M A, shuffled into the output y    (here: winograd_output)
 *
 * and its backward pass as the adjoint of each step (winograd_output_adjoint: dM = A dY A^T;
 * winograd_input_adjoint: dd = B dV B^T, added back where each tile was read). The NumPy code in
 * abp_np/fast/winograd.py writes each transform as a small GEMM and each rearrangement as a strided
 * copy; it is the reference these functions are tested against (tests/test_winograd.py). They
 * compute the same sums in another order (the explicit formulas of the transforms below), so
 * the two agree to rounding, not bit for bit.
 *
 * Shapes, for a block of n examples with th x tw tiles each, P = n th tw tiles, tile index
 * p = (b th + ti) tw + tj; tile p reads x at rows row0 + m ti + i and columns col0 + m tj + j,
 * i, j < a (zeros outside x); a tile's a a values are stored row (i, or xi) first:
 *
 *   winograd_input           x (n, C, H, W)         -> V (a a, C, P)
 *   winograd_input_adjoint   dV (a a, C, P)         -> dx (n, C, H, W)
 *   winograd_output          M (a a, 4 Cout, P)     -> y (n, Cout, 2 m th, 2 m tw)
 *       y[b, o, 2 (m ti + i) + r, 2 (m tj + j) + r2] = (A^T M[:, (2 r + r2) Cout + o, p] A)[i, j]
 *                                                      + bias[o]
 *   winograd_output_adjoint  dy (n, Cout, 2 m th, 2 m tw) -> dM (a a, 4 Cout, P)
 *
 * GROUP tiles are transformed at once, as short vectors that the compiler vectorises; their
 * values live in small local arrays. Each function does the channels c0 .. c1 - 1 of its loop
 * (input channels for the input side, output channels o0 .. o1 - 1 for the output side), so
 * that abp_np/fast/threads.py can run ranges of channels on several threads at once; every
 * channel is computed the same way whatever the range, so the result does not depend on how
 * the channels are split. Plain C99, compiled once by abp_np/fast/cpu.py and loaded through
 * ctypes. Each function exists for float (suffix _f32) and double (_f64) and
 * returns 0, or 1 when it could not allocate its scratch memory.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_cpu.h"
#include "pool_cpu.h"

#define GROUP 8 /* tiles per vector; 16 and 32 measured no faster */

/* The one-dimensional transforms of F(2, 3) and F(4, 3) (Lavin & Gray, CVPR 2016), on GROUP
 * tiles at once: element k of the input vector of tile g is in[k si + g], of its output
 * out[k so + g]. bt = B^T (a -> a), b = B (a -> a), at = A^T (a -> m), a = A (m -> a).
 *   F(2, 3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  A^T = [1 1 1 0; 0 1 -1 -1]
 *   F(4, 3): B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
 *                   0 4 0 -5 0 1],  A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * (the matrices _BT and _AT of abp_np/fast/winograd.py). */
#define ABP_TRANSFORMS(T, S)                                                                       \
    static inline void bt2_##S(const T *restrict d, ptrdiff_t si, T *restrict o, ptrdiff_t so) {   \
        for (int g = 0; g < GROUP; ++g) {                                                          \
            const T d0 = d[g], d1 = d[si + g], d2 = d[2 * si + g], d3 = d[3 * si + g];             \
            o[g] = d0 - d2;                                                                        \
            o[so + g] = d1 + d2;                                                                   \
            o[2 * so + g] = d2 - d1;                                                               \
            o[3 * so + g] = d1 - d3;                                                               \
        }                                                                                          \
    }                                                                                              \
    static inline void b2_##S(const T *restrict v, ptrdiff_t si, T *restrict o, ptrdiff_t so) {    \
        for (int g = 0; g < GROUP; ++g) {                                                          \
            const T v0 = v[g], v1 = v[si + g], v2 = v[2 * si + g], v3 = v[3 * si + g];             \
            o[g] = v0;                                                                             \
            o[so + g] = v1 - v2 + v3;                                                              \
            o[2 * so + g] = v1 + v2 - v0;                                                          \
            o[3 * so + g] = -v3;                                                                   \
        }                                                                                          \
    }                                                                                              \
    static inline void at2_##S(const T *restrict v, ptrdiff_t si, T *restrict o, ptrdiff_t so) {   \
        for (int g = 0; g < GROUP; ++g) {                                                          \
            const T v0 = v[g], v1 = v[si + g], v2 = v[2 * si + g], v3 = v[3 * si + g];             \
            o[g] = v0 + v1 + v2;                                                                   \
            o[so + g] = v1 - v2 - v3;                                                              \
        }                                                                                          \
    }                                                                                              \
    static inline void a2_##S(const T *restrict v, ptrdiff_t si, T *restrict o, ptrdiff_t so) {    \
        for (int g = 0; g < GROUP; ++g) {                                                          \
            const T y0 = v[g], y1 = v[si + g];                                                     \
            o[g] = y0;                                                                             \
            o[so + g] = y0 + y1;                                                                   \
            o[2 * so + g] = y0 - y1;                                                               \
            o[3 * so + g] = -y1;                                                                   \
        }                                                                                          \
    }                                                                                              \
    static inline void bt4_##S(const T *restrict d, ptrdiff_t si, T *restrict o, ptrdiff_t so) {   \
        for (int g = 0; g < GROUP; ++g) {                                                          \
            const T d0 = d[g], d1 = d[si + g], d2 = d[2 * si + g], d3 = d[3 * si + g],             \
                    d4 = d[4 * si + g], d5 = d[5 * si + g];                                        \
            const T p = d4 - 4 * d2, q = d3 - 4 * d1, u = d4 - d2, w = 2 * (d3 - d1);              \
            o[g] = 4 * d0 - 5 * d2 + d4;                                                           \
            o[so + g] = p + q;                                                                     \
            o[2 * so + g] = p - q;                                                                 \
            o[3 * so + g] = u + w;                                                                 \
            o[4 * so + g] = u - w;                                                                 \
            o[5 * so + g] = 4 * d1 - 5 * d3 + d5;                                                  \
        }                                                                                          \
    }                                                                                              \
    static inline void b4_##S(const T *restrict v, ptrdiff_t si, T *restrict o, ptrdiff_t so) {    \
        for (int g = 0; g < GROUP; ++g) {                                                          \
            const T v0 = v[g], v1 = v[si + g], v2 = v[2 * si + g], v3 = v[3 * si + g],             \
                    v4 = v[4 * si + g], v5 = v[5 * si + g];                                        \
            o[g] = 4 * v0;                                                                         \
            o[so + g] = 4 * (v2 - v1) + 2 * (v4 - v3) + 4 * v5;                                    \
            o[2 * so + g] = -5 * v0 - 4 * (v1 + v2) - (v3 + v4);                                   \
            o[3 * so + g] = (v1 - v2) + 2 * (v3 - v4) - 5 * v5;                                    \
            o[4 * so + g] = v0 + (v1 + v2) + (v3 + v4);                                            \
            o[5 * so + g] = v5;                                                                    \
        }                                                                                          \
    }                                                                                              \
    static inline void at4_##S(const T *restrict v, ptrdiff_t si, T *restrict o, ptrdiff_t so) {   \
        for (int g = 0; g < GROUP; ++g) {                                                          \
            const T v0 = v[g], v1 = v[si + g], v2 = v[2 * si + g], v3 = v[3 * si + g],             \
                    v4 = v[4 * si + g], v5 = v[5 * si + g];                                        \
            const T s1 = v1 + v2, d1 = v1 - v2, s2 = v3 + v4, d2 = v3 - v4;                        \
            o[g] = v0 + s1 + s2;                                                                   \
            o[so + g] = d1 + 2 * d2;                                                               \
            o[2 * so + g] = s1 + 4 * s2;                                                           \
            o[3 * so + g] = d1 + 8 * d2 + v5;                                                      \
        }                                                                                          \
    }                                                                                              \
    static inline void a4_##S(const T *restrict v, ptrdiff_t si, T *restrict o, ptrdiff_t so) {    \
        for (int g = 0; g < GROUP; ++g) {                                                          \
            const T y0 = v[g], y1 = v[si + g], y2 = v[2 * si + g], y3 = v[3 * si + g];             \
            const T e = y0 + y2, f = y1 + y3, e2 = y0 + 4 * y2, f2 = 2 * y1 + 8 * y3;              \
            o[g] = y0;                                                                             \
            o[so + g] = e + f;                                                                     \
            o[2 * so + g] = e - f;                                                                 \
            o[3 * so + g] = e2 + f2;                                                               \
            o[4 * so + g] = e2 - f2;                                                               \
            o[5 * so + g] = y3;                                                                    \
        }                                                                                          \
    }                                                                                              \
    ABP_SEPARABLE(T, S, bt2, 4, 4)                                                                 \
    ABP_SEPARABLE(T, S, b2, 4, 4)                                                                  \
    ABP_SEPARABLE(T, S, at2, 4, 2)                                                                 \
    ABP_SEPARABLE(T, S, a2, 2, 4)                                                                  \
    ABP_SEPARABLE(T, S, bt4, 6, 6)                                                                 \
    ABP_SEPARABLE(T, S, b4, 6, 6)                                                                  \
    ABP_SEPARABLE(T, S, at4, 6, 4)                                                                 \
    ABP_SEPARABLE(T, S, a4, 4, 6)

/* The 2-D transform F t F^T of GROUP tiles t (NIN x NIN) by a 1-D transform F (NIN -> NOUT):
 * first every column, into tmp (NOUT x NIN), then every row of tmp, into out (NOUT x NOUT).
 * Fixed sizes, so that the compiler inlines F and unrolls both loops. */
#define ABP_SEPARABLE(T, S, F, NIN, NOUT)                                                          \
    static void F##_2d_##S(const T *in, T *tmp, T *out) {                                          \
        for (int j = 0; j < NIN; ++j)                                                              \
            F##_##S(in + j * GROUP, NIN * GROUP, tmp + j * GROUP, NIN * GROUP);                    \
        for (int r = 0; r < NOUT; ++r)                                                             \
            F##_##S(tmp + r * NIN * GROUP, GROUP, out + r * NOUT * GROUP, GROUP);                  \
    }

/* The four functions. For the input side, `pad` holds one channel's n planes with a border of
 * zeros, pad[v][w] standing for x[row0 + v][col0 + w], and off[p] is where tile p starts in it;
 * for the output side, yoff[p] is where tile p's 2m x 2m block starts in y (channel 0). */
#define ABP_TILES(T, S)                                                                            \
    /* Columns [w0, w1) of a pad row are x's columns col0 + w0 .. col0 + w1 - 1; the rest   \
     * of the row lies outside x. */                                                               \
    static void to_pad_##S(const T *xp, T *pad, int H, int W, int row0, int col0, int hp,          \
                           int wp) {                                                               \
        const int w0 = col0 < 0 ? -col0 : 0, w1 = W - col0 < wp ? W - col0 : wp;                   \
        memset(pad, 0, sizeof(T) * hp * wp);                                                       \
        for (int v = 0; v < hp; ++v) {                                                             \
            const int h = row0 + v;                                                                \
            if (h >= 0 && h < H && w1 > w0)                                                        \
                memcpy(pad + v * wp + w0, xp + h * W + col0 + w0, sizeof(T) * (w1 - w0));          \
        }                                                                                          \
    }                                                                                              \
    static void from_pad_##S(const T *pad, T *xp, int H, int W, int row0, int col0, int hp,        \
                             int wp) {                                                             \
        const int w0 = col0 < 0 ? -col0 : 0, w1 = W - col0 < wp ? W - col0 : wp;                   \
        for (int h = 0; h < H; ++h) {                                                              \
            const int v = h - row0;                                                                \
            T *row = xp + h * W;                                                                   \
            if (v < 0 || v >= hp || w1 <= w0) {                                                    \
                memset(row, 0, sizeof(T) * W);                                                     \
                continue;                                                                          \
            }                                                                                      \
            /* x columns [0, col0 + w0) and [col0 + w1, W) lie outside the pad: zero */            \
            memset(row, 0, sizeof(T) * (col0 + w0));                                               \
            memcpy(row + col0 + w0, pad + v * wp + w0, sizeof(T) * (w1 - w0));                     \
            memset(row + col0 + w1, 0, sizeof(T) * (W - col0 - w1));                               \
        }                                                                                          \
    }                                                                                              \
    /* gg <= GROUP values from src to dst. A whole group is copied with a fixed count, which the   \
     * compiler turns into a few vector moves; a copy loop of unknown count it turns into a call   \
     * to memcpy, which for 8 values cost more than the transforms around it. */                   \
    static inline void copy_##S(T *restrict dst, const T *restrict src, int gg) {                  \
        if (gg == GROUP)                                                                           \
            for (int g = 0; g < GROUP; ++g) dst[g] = src[g];                                       \
        else                                                                                       \
            for (int g = 0; g < gg; ++g) dst[g] = src[g];                                          \
    }                                                                                              \
    /* GROUP tiles of A x A values from the pad (gather) and back into it (scatter-add); fixed A,  \
     * so that the compiler unrolls the loops. */                                                  \
    static inline void gather_##S(const T *pad, const ptrdiff_t *off, int gg, int wp, int A,       \
                                  T *d) {                                                          \
        for (int g = 0; g < gg; ++g) {                                                             \
            const T *src = pad + off[g];                                                           \
            for (int i = 0; i < A; ++i)                                                            \
                for (int j = 0; j < A; ++j) d[(i * A + j) * GROUP + g] = src[i * wp + j];          \
        }                                                                                          \
    }                                                                                              \
    static inline void scatter_add_##S(const T *dd, const ptrdiff_t *off, int gg, int wp, int A,   \
                                       T *pad) {                                                   \
        for (int g = 0; g < gg; ++g) {                                                             \
            T *dst = pad + off[g];                                                                 \
            for (int i = 0; i < A; ++i)                                                            \
                for (int j = 0; j < A; ++j) dst[i * wp + j] += dd[(i * A + j) * GROUP + g];        \
        }                                                                                          \
    }                                                                                              \
    static ptrdiff_t *pad_offsets_##S(ptrdiff_t P, int K, int m, int tw, ptrdiff_t pp, int wp) {   \
        ptrdiff_t *off = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (P > 0 ? P : 1));                 \
        if (off)                                                                                   \
            for (ptrdiff_t p = 0; p < P; ++p)                                                      \
                off[p] = (p / K) * pp + ((p % K) / tw) * (ptrdiff_t)m * wp + ((p % K) % tw) * m;   \
        return off;                                                                                \
    }                                                                                              \
    static ptrdiff_t *y_offsets_##S(ptrdiff_t P, int K, int m, int tw, ptrdiff_t bstride,          \
                                    int Wo) {                                                      \
        ptrdiff_t *off = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * (P > 0 ? P : 1));                 \
        if (off)                                                                                   \
            for (ptrdiff_t p = 0; p < P; ++p)                                                      \
                off[p] = (p / K) * bstride + ((p % K) / tw) * (ptrdiff_t)2 * m * Wo +              \
                         ((p % K) % tw) * 2 * m;                                                   \
        return off;                                                                                \
    }                                                                                              \
                                                                                                   \
    /* One phase of GROUP tiles' m x m output blocks, into y (every other row and column from      \
     * dst = the phase's first pixel) and out of dy; fixed m, so that the loops unroll. */         \
    static inline void put_phase_##S(const T *yv, const ptrdiff_t *yoff, ptrdiff_t shift, int gg,  \
                                     int Wo, int m, T bo, T *y) {                                  \
        for (int g = 0; g < gg; ++g) {                                                             \
            T *dst = y + yoff[g] + shift;                                                          \
            for (int i = 0; i < m; ++i)                                                            \
                for (int j = 0; j < m; ++j)                                                        \
                    dst[2 * i * Wo + 2 * j] = yv[(i * m + j) * GROUP + g] + bo;                    \
        }                                                                                          \
    }                                                                                              \
    static inline void get_phase_##S(const T *dy, const ptrdiff_t *yoff, ptrdiff_t shift, int gg,  \
                                     int Wo, int m, T *yv) {                                       \
        for (int g = 0; g < gg; ++g) {                                                             \
            const T *src = dy + yoff[g] + shift;                                                   \
            for (int i = 0; i < m; ++i)                                                            \
                for (int j = 0; j < m; ++j) yv[(i * m + j) * GROUP + g] = src[2 * i * Wo + 2 * j]; \
        }                                                                                          \
    }                                                                                              \
    int winograd_input_##S(const T *x, T *V, int n, int C, int H, int W, int row0, int col0,       \
                           int m, int th, int tw, int c0, int c1) {                                \
        const int a = m + 2, hp = m * th + 2, wp = m * tw + 2, K = th * tw;                        \
        const ptrdiff_t P = (ptrdiff_t)n * K, plane = (ptrdiff_t)C * P, pp = (ptrdiff_t)hp * wp;   \
        T *pad = (T *)malloc(sizeof(T) * (pp * n > 0 ? pp * n : 1));                               \
        ptrdiff_t *off = pad_offsets_##S(P, K, m, tw, pp, wp);                                     \
        if (!pad || !off) { free(pad); free(off); return 1; }                                      \
        T d[36 * GROUP], tmp[36 * GROUP], v[36 * GROUP];                                           \
        for (int c = c0; c < c1; ++c) {                                                            \
            for (int b = 0; b < n; ++b)                                                            \
                to_pad_##S(x + ((ptrdiff_t)b * C + c) * H * W, pad + b * pp, H, W, row0, col0,     \
                           hp, wp);                                                                \
            for (ptrdiff_t p0 = 0; p0 < P; p0 += GROUP) {                                          \
                const int gg = P - p0 < GROUP ? (int)(P - p0) : GROUP;                             \
                if (gg < GROUP) memset(d, 0, sizeof d);                                            \
                if (m == 4) gather_##S(pad, off + p0, gg, wp, 6, d); /* the tiles, d[i][j][g] */   \
                else gather_##S(pad, off + p0, gg, wp, 4, d);                                      \
                if (m == 4) bt4_2d_##S(d, tmp, v); /* v = B^T d B */                               \
                else bt2_2d_##S(d, tmp, v);                                                        \
                for (int k = 0; k < a * a; ++k) {                                                  \
                    T *dst = V + k * plane + c * P + p0;                                           \
                    copy_##S(dst, v + k * GROUP, gg);                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        free(pad);                                                                                 \
        free(off);                                                                                 \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    int winograd_input_adjoint_##S(const T *dV, T *dx, int n, int C, int H, int W, int row0,       \
                                   int col0, int m, int th, int tw, int c0, int c1) {              \
        const int a = m + 2, hp = m * th + 2, wp = m * tw + 2, K = th * tw;                        \
        const ptrdiff_t P = (ptrdiff_t)n * K, plane = (ptrdiff_t)C * P, pp = (ptrdiff_t)hp * wp;   \
        T *pad = (T *)malloc(sizeof(T) * (pp * n > 0 ? pp * n : 1));                               \
        ptrdiff_t *off = pad_offsets_##S(P, K, m, tw, pp, wp);                                     \
        if (!pad || !off) { free(pad); free(off); return 1; }                                      \
        T v[36 * GROUP], tmp[36 * GROUP], dd[36 * GROUP];                                          \
        for (int c = c0; c < c1; ++c) {                                                            \
            memset(pad, 0, sizeof(T) * pp * n);                                                    \
            for (ptrdiff_t p0 = 0; p0 < P; p0 += GROUP) {                                          \
                const int gg = P - p0 < GROUP ? (int)(P - p0) : GROUP;                             \
                if (gg < GROUP) memset(v, 0, sizeof v);                                            \
                for (int k = 0; k < a * a; ++k) {                                                  \
                    const T *src = dV + k * plane + c * P + p0;                                    \
                    copy_##S(v + k * GROUP, src, gg);                                              \
                }                                                                                  \
                if (m == 4) b4_2d_##S(v, tmp, dd); /* dd = B v B^T */                              \
                else b2_2d_##S(v, tmp, dd);                                                        \
                if (m == 4) scatter_add_##S(dd, off + p0, gg, wp, 6, pad); /* where it was read */ \
                else scatter_add_##S(dd, off + p0, gg, wp, 4, pad);                                \
            }                                                                                      \
            for (int b = 0; b < n; ++b)                                                            \
                from_pad_##S(pad + b * pp, dx + ((ptrdiff_t)b * C + c) * H * W, H, W, row0,        \
                             col0, hp, wp);                                                        \
        }                                                                                          \
        free(pad);                                                                                 \
        free(off);                                                                                 \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    int winograd_output_##S(const T *M, T *y, const T *bias, int n, int Cout, int m, int th,       \
                            int tw, int o0, int o1) {                                              \
        const int a = m + 2, K = th * tw, Wo = 2 * m * tw;                                         \
        const ptrdiff_t P = (ptrdiff_t)n * K, plane = (ptrdiff_t)4 * Cout * P;                     \
        const ptrdiff_t HW = (ptrdiff_t)2 * m * th * Wo;                                           \
        ptrdiff_t *yoff = y_offsets_##S(P, K, m, tw, Cout * HW, Wo);                               \
        if (!yoff) return 1;                                                                       \
        T mv[36 * GROUP], tmp[36 * GROUP], yv[16 * GROUP];                                         \
        for (int o = o0; o < o1; ++o) {                                                            \
            const T bo = bias ? bias[o] : (T)0;                                                    \
            for (ptrdiff_t p0 = 0; p0 < P; p0 += GROUP) {                                          \
                const int gg = P - p0 < GROUP ? (int)(P - p0) : GROUP;                             \
                if (gg < GROUP) memset(mv, 0, sizeof mv);                                          \
                for (int rr = 0; rr < 4; ++rr) { /* the four phases (r, r2) */                     \
                    const int r = rr >> 1, r2 = rr & 1;                                            \
                    const T *src = M + ((ptrdiff_t)rr * Cout + o) * P + p0;                        \
                    for (int k = 0; k < a * a; ++k)                                                \
                        copy_##S(mv + k * GROUP, src + k * plane, gg);                             \
                    if (m == 4) at4_2d_##S(mv, tmp, yv); /* yv = A^T mv A */                       \
                    else at2_2d_##S(mv, tmp, yv);                                                  \
                    const ptrdiff_t shift = o * HW + r * Wo + r2;                                  \
                    if (m == 4) put_phase_##S(yv, yoff + p0, shift, gg, Wo, 4, bo, y);             \
                    else put_phase_##S(yv, yoff + p0, shift, gg, Wo, 2, bo, y);                    \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        free(yoff);                                                                                \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    int winograd_output_adjoint_##S(const T *dy, T *dM, int n, int Cout, int m, int th,            \
                                    int tw, int o0, int o1) {                                      \
        const int a = m + 2, K = th * tw, Wo = 2 * m * tw;                                         \
        const ptrdiff_t P = (ptrdiff_t)n * K, plane = (ptrdiff_t)4 * Cout * P;                     \
        const ptrdiff_t HW = (ptrdiff_t)2 * m * th * Wo;                                           \
        ptrdiff_t *yoff = y_offsets_##S(P, K, m, tw, Cout * HW, Wo);                               \
        if (!yoff) return 1;                                                                       \
        T yv[16 * GROUP], tmp[36 * GROUP], mv[36 * GROUP];                                         \
        for (int o = o0; o < o1; ++o) {                                                            \
            for (ptrdiff_t p0 = 0; p0 < P; p0 += GROUP) {                                          \
                const int gg = P - p0 < GROUP ? (int)(P - p0) : GROUP;                             \
                if (gg < GROUP) memset(yv, 0, sizeof yv);                                          \
                for (int rr = 0; rr < 4; ++rr) {                                                   \
                    const int r = rr >> 1, r2 = rr & 1;                                            \
                    const ptrdiff_t shift = o * HW + r * Wo + r2;                                  \
                    if (m == 4) get_phase_##S(dy, yoff + p0, shift, gg, Wo, 4, yv);                \
                    else get_phase_##S(dy, yoff + p0, shift, gg, Wo, 2, yv);                       \
                    if (m == 4) a4_2d_##S(yv, tmp, mv); /* mv = A yv A^T */                        \
                    else a2_2d_##S(yv, tmp, mv);                                                   \
                    T *dst = dM + ((ptrdiff_t)rr * Cout + o) * P + p0;                             \
                    for (int k = 0; k < a * a; ++k)                                                \
                        copy_##S(dst + k * plane, mv + k * GROUP, gg);                             \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        free(yoff);                                                                                \
        return 0;                                                                                  \
    }

ABP_TRANSFORMS(float, f32)
ABP_TRANSFORMS(double, f64)
ABP_TILES(float, f32)
ABP_TILES(double, f64)

/* The weights in the Winograd domain, U = G K G^T (abp_np/fast/winograd.py, transformed_weights,
 * whose NumPy expression GG @ _combined_kernel(w) is the reference): for each output channel o,
 * phase (r, r2) and input channel c the combined 3 x 3 filter
 *     k[p][q] = w[c, o, r + 2 (2 - p), r2 + 2 (2 - q)]   (0 where the tap is past kh or kw)
 * goes to the a x a block G k G^T, stored at U[(i a + j), (2 r + r2) Cout + o, c]; g is G (a x 3)
 * row major. Per output channel, its taps are first gathered into rows over c (wt[tap][c]), so
 * that every later step runs along c: t = G k (a x 3 rows), then each row of U, Cin values
 * written in one run. Output channels o0 .. o1 - 1, so that ranges of them run on several
 * threads (each value is computed the same way whatever the range). Returns 1 when it could
 * not allocate its scratch rows. */
#define ABP_WEIGHTS(T, S)                                                                          \
    int winograd_weights_##S(const T *w, T *U, const T *g, int Cin, int Cout, int kh, int kw,     \
                             int a, int o0, int o1) {                                              \
        const ptrdiff_t R = (ptrdiff_t)4 * Cout, taps = (ptrdiff_t)kh * kw;                        \
        T *wt = malloc(sizeof(T) * (taps + 1) * Cin), *t = malloc(sizeof(T) * 18 * Cin);           \
        if (!wt || !t) {                                                                           \
            free(wt);                                                                              \
            free(t);                                                                               \
            return 1;                                                                              \
        }                                                                                          \
        T *zero = wt + taps * Cin; /* the row of a tap past the kernel */                          \
        memset(zero, 0, sizeof(T) * Cin);                                                          \
        for (int o = o0; o < o1; ++o) {                                                            \
            for (int c = 0; c < Cin; ++c) { /* wt[tap][c] = w[c, o, tap] */                        \
                const T *src = w + ((ptrdiff_t)c * Cout + o) * taps;                               \
                for (ptrdiff_t k = 0; k < taps; ++k) wt[k * Cin + c] = src[k];                     \
            }                                                                                      \
            for (int rr = 0; rr < 4; ++rr) { /* the four phases (r, r2) */                         \
                const int r = rr >> 1, r2 = rr & 1;                                                \
                const T *k[9];                                                                     \
                for (int p = 0; p < 3; ++p)                                                        \
                    for (int q = 0; q < 3; ++q) {                                                  \
                        const int i = r + 2 * (2 - p), j = r2 + 2 * (2 - q);                       \
                        k[p * 3 + q] = i < kh && j < kw ? wt + (i * kw + j) * Cin : zero;          \
                    }                                                                              \
                for (int x = 0; x < a; ++x) /* t = G k: (a, 3) rows */                             \
                    for (int q = 0; q < 3; ++q) {                                                  \
                        const T g0 = g[x * 3], g1 = g[x * 3 + 1], g2 = g[x * 3 + 2];               \
                        const T *k0 = k[q], *k1 = k[3 + q], *k2 = k[6 + q];                        \
                        T *tr = t + (x * 3 + q) * Cin;                                             \
                        for (int c = 0; c < Cin; ++c)                                              \
                            tr[c] = g0 * k0[c] + g1 * k1[c] + g2 * k2[c];                          \
                    }                                                                              \
                const ptrdiff_t row = (ptrdiff_t)rr * Cout + o;                                    \
                for (int x = 0; x < a; ++x) /* u = t G^T: (a, a) rows, into U */                   \
                    for (int y = 0; y < a; ++y) {                                                  \
                        const T g0 = g[y * 3], g1 = g[y * 3 + 1], g2 = g[y * 3 + 2];               \
                        const T *t0 = t + x * 3 * Cin, *t1 = t0 + Cin, *t2 = t1 + Cin;             \
                        T *dst = U + ((ptrdiff_t)(x * a + y) * R + row) * Cin;                     \
                        for (int c = 0; c < Cin; ++c)                                              \
                            dst[c] = t0[c] * g0 + t1[c] * g1 + t2[c] * g2;                         \
                    }                                                                              \
            }                                                                                      \
        }                                                                                          \
        free(wt);                                                                                  \
        free(t);                                                                                   \
        return 0;                                                                                  \
    }

ABP_WEIGHTS(float, f32)
ABP_WEIGHTS(double, f64)

/* The same four functions, and the weights' transform, on `threads` threads (kernels/pool_cpu.c): the whole loop over
 * channels, split in ranges; the same bits whatever the count. */
#define ABP_PARALLEL(T, S)                                                                         \
    struct tiles_args_##S {                                                                        \
        const T *src;                                                                              \
        T *dst;                                                                                    \
        int n, C, H, W, row0, col0, m, th, tw;                                                     \
    };                                                                                             \
    static int input_range_##S(const void *p, int lo, int hi) {                                    \
        const struct tiles_args_##S *a = p;                                                        \
        return winograd_input_##S(a->src, a->dst, a->n, a->C, a->H, a->W, a->row0, a->col0, a->m, \
                                  a->th, a->tw, lo, hi);                                           \
    }                                                                                              \
    static int input_adjoint_range_##S(const void *p, int lo, int hi) {                            \
        const struct tiles_args_##S *a = p;                                                        \
        return winograd_input_adjoint_##S(a->src, a->dst, a->n, a->C, a->H, a->W, a->row0,         \
                                          a->col0, a->m, a->th, a->tw, lo, hi);                    \
    }                                                                                              \
    int winograd_input_par_##S(const T *x, T *V, int n, int C, int H, int W, int row0, int col0,   \
                               int m, int th, int tw, int threads) {                               \
        const struct tiles_args_##S a = {x, V, n, C, H, W, row0, col0, m, th, tw};                 \
        return abp_pool_run(threads, C, input_range_##S, &a);                                      \
    }                                                                                              \
    int winograd_input_adjoint_par_##S(const T *dV, T *dx, int n, int C, int H, int W, int row0,   \
                                       int col0, int m, int th, int tw, int threads) {             \
        const struct tiles_args_##S a = {dV, dx, n, C, H, W, row0, col0, m, th, tw};               \
        return abp_pool_run(threads, C, input_adjoint_range_##S, &a);                              \
    }                                                                                              \
    struct output_args_##S {                                                                       \
        const T *src;                                                                              \
        T *dst;                                                                                    \
        const T *bias;                                                                             \
        int n, Cout, m, th, tw;                                                                    \
    };                                                                                             \
    static int output_range_##S(const void *p, int lo, int hi) {                                   \
        const struct output_args_##S *a = p;                                                       \
        return winograd_output_##S(a->src, a->dst, a->bias, a->n, a->Cout, a->m, a->th, a->tw, lo, \
                                   hi);                                                            \
    }                                                                                              \
    static int output_adjoint_range_##S(const void *p, int lo, int hi) {                           \
        const struct output_args_##S *a = p;                                                       \
        return winograd_output_adjoint_##S(a->src, a->dst, a->n, a->Cout, a->m, a->th, a->tw, lo,  \
                                           hi);                                                    \
    }                                                                                              \
    int winograd_output_par_##S(const T *M, T *y, const T *bias, int n, int Cout, int m, int th,   \
                                int tw, int threads) {                                             \
        const struct output_args_##S a = {M, y, bias, n, Cout, m, th, tw};                         \
        return abp_pool_run(threads, Cout, output_range_##S, &a);                                  \
    }                                                                                              \
    int winograd_output_adjoint_par_##S(const T *dy, T *dM, int n, int Cout, int m, int th,        \
                                        int tw, int threads) {                                     \
        const struct output_args_##S a = {dy, dM, NULL, n, Cout, m, th, tw};                       \
        return abp_pool_run(threads, Cout, output_adjoint_range_##S, &a);                          \
    }                                                                                              \
    struct weights_args_##S {                                                                      \
        const T *w;                                                                                \
        T *U;                                                                                      \
        const T *g;                                                                                \
        int Cin, Cout, kh, kw, a;                                                                  \
    };                                                                                             \
    static int weights_range_##S(const void *p, int lo, int hi) {                                  \
        const struct weights_args_##S *a = p;                                                      \
        return winograd_weights_##S(a->w, a->U, a->g, a->Cin, a->Cout, a->kh, a->kw, a->a, lo,    \
                                    hi);                                                           \
    }                                                                                              \
    int winograd_weights_par_##S(const T *w, T *U, const T *g, int Cin, int Cout, int kh, int kw,  \
                                 int a, int threads) {                                             \
        const struct weights_args_##S args = {w, U, g, Cin, Cout, kh, kw, a};                      \
        return abp_pool_run(threads, Cout, weights_range_##S, &args);                              \
    }

ABP_PARALLEL(float, f32)
ABP_PARALLEL(double, f64)

/* All three steps of a block's examples, on `threads` threads: each thread takes a range of the
 * examples through the input transform, the a a GEMMs M = U V (BLAS, on the calling thread) and
 * the output transform; the backward pass (input gradient only) likewise through the adjoints.
 * abp_np/fast/winograd.py does the same ranges on Python threads; here the hand-offs are the
 * pool's and no thread waits for the GIL between the steps.
 *
 * The GEMMs are those of NumPy's BLAS (kernels/gemm_cpu.h), on one thread each: NumPy's matmul
 * makes the same calls (row major; U^T as U with CblasTrans), so the results are those of the
 * NumPy steps on the same ranges bit for bit.
 *
 * V and M (dM and dV) are the block's temporaries, (a a, C, n th tw) and (a a, 4 Cout, n th tw)
 * as n separate ranges would lay them out: range [lo, hi) uses the part that starts at its
 * first example, a a C th tw lo (a a 4 Cout th tw lo) elements in.
 */
#define ABP_EXAMPLES(T, S)                                                                         \
    struct examples_args_##S {                                                                     \
        const T *src, *U, *bias;                                                                   \
        T *dst, *first, *second;                                                                   \
        int C, H, W, Cout, row0, col0, m, th, tw, ilp64;                                           \
        const void *gemm;                                                                          \
    };                                                                                             \
    static int forward_range_##S(const void *p, int lo, int hi) {                                  \
        const struct examples_args_##S *a = p;                                                     \
        const int n = hi - lo, a2 = (a->m + 2) * (a->m + 2), R = 4 * a->Cout;                      \
        const ptrdiff_t K = (ptrdiff_t)a->th * a->tw, P = n * K;                                   \
        const ptrdiff_t Ho = 2 * a->m * a->th, Wo = 2 * a->m * a->tw;                              \
        T *V = a->first + (ptrdiff_t)a2 * a->C * K * lo;                                           \
        T *M = a->second + (ptrdiff_t)a2 * R * K * lo;                                             \
        int status = winograd_input_##S(a->src + (ptrdiff_t)lo * a->C * a->H * a->W, V, n, a->C,  \
                                        a->H, a->W, a->row0, a->col0, a->m, a->th, a->tw, 0,       \
                                        a->C);                                                     \
        if (status)                                                                                \
            return status;                                                                         \
        for (int k = 0; k < a2; ++k) /* M[k] = U[k] V[k]: (4 Cout, C) (C, P) */                    \
            abp_gemm_##S(a->gemm, a->ilp64, 0, 0, R, (int)P, a->C,                                 \
                         a->U + (ptrdiff_t)k * R * a->C, a->C, V + k * a->C * P, (int)P,           \
                         M + k * R * P, (int)P);                                                   \
        return winograd_output_##S(M, a->dst + lo * a->Cout * Ho * Wo, a->bias, n, a->Cout, a->m, \
                                   a->th, a->tw, 0, a->Cout);                                      \
    }                                                                                              \
    static int backward_range_##S(const void *p, int lo, int hi) {                                 \
        const struct examples_args_##S *a = p;                                                     \
        const int n = hi - lo, a2 = (a->m + 2) * (a->m + 2), R = 4 * a->Cout;                      \
        const ptrdiff_t K = (ptrdiff_t)a->th * a->tw, P = n * K;                                   \
        const ptrdiff_t Ho = 2 * a->m * a->th, Wo = 2 * a->m * a->tw;                              \
        T *dM = a->first + (ptrdiff_t)a2 * R * K * lo;                                             \
        T *dV = a->second + (ptrdiff_t)a2 * a->C * K * lo;                                         \
        int status = winograd_output_adjoint_##S(a->src + lo * a->Cout * Ho * Wo, dM, n, a->Cout,  \
                                                 a->m, a->th, a->tw, 0, a->Cout);                  \
        if (status)                                                                                \
            return status;                                                                         \
        for (int k = 0; k < a2; ++k) /* dV[k] = U[k]^T dM[k]: (C, 4 Cout) (4 Cout, P) */          \
            abp_gemm_##S(a->gemm, a->ilp64, 1, 0, a->C, (int)P, R,                                 \
                         a->U + (ptrdiff_t)k * R * a->C, a->C, dM + k * R * P, (int)P,             \
                         dV + k * a->C * P, (int)P);                                               \
        return winograd_input_adjoint_##S(dV, a->dst + (ptrdiff_t)lo * a->C * a->H * a->W, n,     \
                                          a->C, a->H, a->W, a->row0, a->col0, a->m, a->th, a->tw,  \
                                          0, a->C);                                                \
    }                                                                                              \
    /* y (n, Cout, 2 m th, 2 m tw) of x (n, C, H, W); U (a a, 4 Cout, C); V, M the temporaries */ \
    int winograd_forward_examples_par_##S(const T *x, const T *U, const T *bias, T *y, T *V,      \
                                          T *M, int n, int C, int H, int W, int Cout, int row0,    \
                                          int col0, int m, int th, int tw, const void *gemm,       \
                                          int ilp64, int threads) {                                \
        const struct examples_args_##S a = {x,    U,    bias, y,    V,    M,  C,     H,           \
                                            W,    Cout, row0, col0, m,    th, tw, ilp64, gemm};    \
        return abp_pool_run(threads, n, forward_range_##S, &a);                                    \
    }                                                                                              \
    /* dx (n, C, H, W) of dy (n, Cout, 2 m th, 2 m tw); dM, dV the temporaries */                  \
    int winograd_backward_examples_par_##S(const T *dy, const T *U, T *dx, T *dM, T *dV, int n,   \
                                           int C, int H, int W, int Cout, int row0, int col0,      \
                                           int m, int th, int tw, const void *gemm, int ilp64,     \
                                           int threads) {                                          \
        const struct examples_args_##S a = {dy,   U,    NULL, dx,   dM,   dV, C,     H,           \
                                            W,    Cout, row0, col0, m,    th, tw, ilp64, gemm};    \
        return abp_pool_run(threads, n, backward_range_##S, &a);                                   \
    }

ABP_EXAMPLES(float, f32)
ABP_EXAMPLES(double, f64)
