/* The scatter and the gather of the column form of the transposed convolution on the CPU
 * (abp_np/fast/columns.py: col2im and im2col_into, whose NumPy code is the reference these
 * functions are tested against, bit for bit).
 *
 * With kernel (kh, kw), stride (sh, sw), padding (ph, pw), input pixel (ih, iw) reaches output
 * pixel (ih sh + i - ph, iw sw + j - pw) through tap (i, j):
 *
 *   col2im   y[n, c, oh, ow] = sum of cols[c, i, j, n, ih, iw] over the taps that reach it
 *   im2col   cols[c, i, j, n, ih, iw] = dy[n, c, ih sh + i - ph, iw sw + j - pw]  (0 outside)
 *
 * col2im works phase by phase, as the NumPy code does (abp_np/fast/phases.py): the outputs
 * o = s q + r - p of phase r are served by the taps i = r + s t alone, tap t of output q
 * reading input q - t. A phase's outputs are summed in a small contiguous buffer, taps in the
 * order t ascending (i ascending), then t2 (j ascending), each added to every output it
 * reaches, then written into y: per output pixel the same additions in the same order as the
 * NumPy code, hence the same result bit for bit. The phases (r, q0, Q, T) of each axis are
 * computed by the caller (abp_np.fast.phases.phases) and passed as int arrays of 4 per phase.
 *
 * Arrays are passed with their strides, in elements (any NumPy view: cols is usually a
 * transposed view of a GEMM's result), dims = {C, kh, kw, N, H, W, Hout, Wout}. Each function
 * does examples n0 .. n1 - 1 and channels c0 .. c1 - 1 only: abp_np/fast/threads.py runs ranges
 * on several threads at once; every (example, channel) plane is computed the same way whatever
 * the range. Plain C99, compiled once by abp_np/fast/cpu.py; float (_f32) and double (_f64).
 * col2im returns 0, or 1 when it could not allocate its phase buffer.
 */
#include <stddef.h>
#include <stdlib.h>

#include "pool_cpu.h"

typedef long long idx_t;

#define ABP_COLUMNS(T, S)                                                                          \
    int col2im_##S(const T *cols, const idx_t *cs, T *y, const idx_t *ys, const int *dims,         \
                   const int *hph, int nh, const int *wph, int nw, int sh, int sw, int ph, int pw, \
                   int n0, int n1, int c0, int c1) {                                               \
        const int H = dims[4], W = dims[5];                                                        \
        int Qmax = 1, Q2max = 1;                                                                   \
        for (int a = 0; a < nh; ++a) Qmax = hph[4 * a + 2] > Qmax ? hph[4 * a + 2] : Qmax;         \
        for (int a = 0; a < nw; ++a) Q2max = wph[4 * a + 2] > Q2max ? wph[4 * a + 2] : Q2max;      \
        T *acc = (T *)malloc(sizeof(T) * (size_t)Qmax * (size_t)Q2max);                            \
        if (!acc) return 1;                                                                        \
        for (int n = n0; n < n1; ++n)                                                              \
            for (int c = c0; c < c1; ++c) {                                                        \
                const T *plane = cols + (idx_t)c * cs[0] + (idx_t)n * cs[3];                       \
                T *yp = y + (idx_t)n * ys[0] + (idx_t)c * ys[1];                                   \
                for (int a = 0; a < nh; ++a) {                                                     \
                    const int r = hph[4 * a], q0 = hph[4 * a + 1], Q = hph[4 * a + 2];             \
                    const int Th = hph[4 * a + 3];                                                 \
                    for (int b = 0; b < nw; ++b) {                                                 \
                        const int r2 = wph[4 * b], q02 = wph[4 * b + 1], Q2 = wph[4 * b + 2];      \
                        const int Tw = wph[4 * b + 3];                                             \
                        for (int k = 0; k < Q * Q2; ++k) acc[k] = 0;                               \
                        for (int t = 0; t < Th; ++t) {                                             \
                            /* rows q in [q0, q0 + Q) whose input row q - t lies in [0, H) */      \
                            const int qa = q0 > t ? q0 : t;                                        \
                            const int qb = q0 + Q < H + t ? q0 + Q : H + t;                        \
                            for (int t2 = 0; t2 < Tw; ++t2) {                                      \
                                const int qa2 = q02 > t2 ? q02 : t2;                               \
                                const int qb2 = q02 + Q2 < W + t2 ? q02 + Q2 : W + t2;             \
                                if (qb <= qa || qb2 <= qa2) continue;                              \
                                const T *tap = plane + (idx_t)(r + sh * t) * cs[1] +               \
                                               (idx_t)(r2 + sw * t2) * cs[2];                      \
                                const int len = qb2 - qa2;                                         \
                                for (int q = qa; q < qb; ++q) {                                    \
                                    const T *src = tap + (idx_t)(q - t) * cs[4] +                  \
                                                   (idx_t)(qa2 - t2) * cs[5];                      \
                                    T *dst = acc + (idx_t)(q - q0) * Q2 + (qa2 - q02);             \
                                    if (cs[5] == 1)                                                \
                                        for (int k = 0; k < len; ++k) dst[k] += src[k];            \
                                    else                                                           \
                                        for (int k = 0; k < len; ++k) dst[k] += src[k * cs[5]];    \
                                }                                                                  \
                            }                                                                      \
                        }                                                                          \
                        /* the phase's outputs oh = sh q + r - ph, ow = sw q2 + r2 - pw */         \
                        const int oh0 = sh * q0 + r - ph, ow0 = sw * q02 + r2 - pw;                \
                        for (int q = 0; q < Q; ++q) {                                              \
                            T *row = yp + (idx_t)(oh0 + sh * q) * ys[2] + (idx_t)ow0 * ys[3];      \
                            const T *from = acc + (idx_t)q * Q2;                                   \
                            for (int q2 = 0; q2 < Q2; ++q2) row[(idx_t)sw * q2 * ys[3]] = from[q2];\
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        free(acc);                                                                                 \
        return 0;                                                                                  \
    }                                                                                              \
                                                                                                   \
    void im2col_##S(const T *dy, const idx_t *ds, T *cols, const idx_t *cs, const int *dims,       \
                    int sh, int sw, int ph, int pw, int n0, int n1, int c0, int c1) {              \
        const int kh = dims[1], kw = dims[2], H = dims[4], W = dims[5];                            \
        const int Hout = dims[6], Wout = dims[7];                                                  \
        for (int c = c0; c < c1; ++c)                                                              \
            for (int i = 0; i < kh; ++i)                                                           \
                for (int j = 0; j < kw; ++j) {                                                     \
                    /* columns iw with 0 <= iw sw + j - pw < Wout: [wa, wb) */                     \
                    const int off = j - pw;                                                        \
                    int wa = off >= 0 ? 0 : (-off + sw - 1) / sw;                                  \
                    int wb = Wout - 1 - off < 0 ? 0 : (Wout - 1 - off) / sw + 1;                   \
                    if (wb > W) wb = W;                                                            \
                    if (wa > wb) wa = wb;                                                          \
                    for (int n = n0; n < n1; ++n) {                                                \
                        const T *src = dy + (idx_t)n * ds[0] + (idx_t)c * ds[1];                   \
                        T *dst = cols + (idx_t)c * cs[0] + (idx_t)i * cs[1] + (idx_t)j * cs[2] +   \
                                 (idx_t)n * cs[3];                                                 \
                        for (int ih = 0; ih < H; ++ih) {                                           \
                            T *d = dst + (idx_t)ih * cs[4];                                        \
                            const int oh = ih * sh + i - ph;                                       \
                            if (oh < 0 || oh >= Hout) {                                            \
                                for (int iw = 0; iw < W; ++iw) d[(idx_t)iw * cs[5]] = 0;           \
                                continue;                                                          \
                            }                                                                      \
                            /* dy's pixel of column wa, then every sw-th one */                    \
                            const T *s = src + (idx_t)oh * ds[2] + (idx_t)(wa * sw + off) * ds[3]; \
                            const idx_t step = (idx_t)sw * ds[3];                                  \
                            for (int iw = 0; iw < wa; ++iw) d[(idx_t)iw * cs[5]] = 0;              \
                            for (int iw = wa; iw < wb; ++iw)                                       \
                                d[(idx_t)iw * cs[5]] = s[(idx_t)(iw - wa) * step];                 \
                            for (int iw = wb; iw < W; ++iw) d[(idx_t)iw * cs[5]] = 0;              \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
    }

ABP_COLUMNS(float, f32)
ABP_COLUMNS(double, f64)

/* Both functions over all examples and channels on `threads` threads (kernels/pool_cpu.c):
 * ranges of the examples when there are several, else of the channels, as
 * abp_np/fast/columns.py's _split cuts them; the same bits whatever the count. */
#define ABP_PARALLEL_COLUMNS(T, S)                                                                 \
    struct columns_args_##S {                                                                      \
        const T *src;                                                                              \
        const idx_t *ss;                                                                           \
        T *dst;                                                                                    \
        const idx_t *ds;                                                                           \
        const int *dims, *hph, *wph;                                                               \
        int nh, nw, sh, sw, ph, pw;                                                                \
    };                                                                                             \
    static int col2im_range_##S(const void *p, int lo, int hi) {                                   \
        const struct columns_args_##S *a = p;                                                      \
        const int N = a->dims[3], C = a->dims[0];                                                  \
        return col2im_##S(a->src, a->ss, a->dst, a->ds, a->dims, a->hph, a->nh, a->wph, a->nw,     \
                          a->sh, a->sw, a->ph, a->pw, N > 1 ? lo : 0, N > 1 ? hi : N,              \
                          N > 1 ? 0 : lo, N > 1 ? C : hi);                                         \
    }                                                                                              \
    static int im2col_range_##S(const void *p, int lo, int hi) {                                   \
        const struct columns_args_##S *a = p;                                                      \
        const int N = a->dims[3], C = a->dims[0];                                                  \
        im2col_##S(a->src, a->ss, a->dst, a->ds, a->dims, a->sh, a->sw, a->ph, a->pw,              \
                   N > 1 ? lo : 0, N > 1 ? hi : N, N > 1 ? 0 : lo, N > 1 ? C : hi);                \
        return 0;                                                                                  \
    }                                                                                              \
    int col2im_par_##S(const T *cols, const idx_t *cs, T *y, const idx_t *ys, const int *dims,     \
                       const int *hph, int nh, const int *wph, int nw, int sh, int sw, int ph,     \
                       int pw, int threads) {                                                      \
        const struct columns_args_##S a = {cols, cs, y,  ys, dims, hph, wph,                       \
                                           nh,   nw, sh, sw, ph,   pw};                            \
        return abp_pool_run(threads, dims[3] > 1 ? dims[3] : dims[0], col2im_range_##S, &a);       \
    }                                                                                              \
    int im2col_par_##S(const T *dy, const idx_t *ds, T *cols, const idx_t *cs, const int *dims,    \
                       int sh, int sw, int ph, int pw, int threads) {                              \
        const struct columns_args_##S a = {dy, ds, cols, cs, dims, NULL, NULL,                     \
                                           0,  0,  sh,   sw, ph,   pw};                            \
        return abp_pool_run(threads, dims[3] > 1 ? dims[3] : dims[0], im2col_range_##S, &a);       \
    }

ABP_PARALLEL_COLUMNS(float, f32)
ABP_PARALLEL_COLUMNS(double, f64)
