/* A stack of GEMMs on the kernels' thread pool: C[i] = op(A[i]) op(B[i]) for i < K, ranges of
 * i on `threads` threads (kernels/pool_cpu.c), each GEMM by the BLAS on the thread that makes
 * it (kernels/gemm_cpu.h).
 *
 * abp_np/fast/threads.py (stacked_matmul) computes the same stack with numpy.matmul on ranges
 * of Python threads; here the ranges are handed over without Python, as the other kernels'.
 * The Winograd route's a a GEMMs per layer and its learning step's weight gradient are such
 * stacks. Element i of a stack starts sa i (sb i, sc i) elements in; sa = 0 repeats one A.
 *
 * Plain C99, compiled once by abp_np/fast/cpu.py with the other kernels.
 */
#include <stddef.h>

#include "gemm_cpu.h"
#include "pool_cpu.h"

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 }; /* the CBLAS enumerations */

#define ABP_GEMM(T, S)                                                                             \
    typedef void (*gemm32_##S)(int, int, int, int, int, int, T, const T *, int, const T *, int,   \
                               T, T *, int);                                                       \
    typedef void (*gemm64_##S)(int, int, int, long long, long long, long long, T, const T *,      \
                               long long, const T *, long long, T, T *, long long);                \
    void abp_gemm_##S(const void *gemm, int ilp64, int ta, int tb, int m, int n, int k,            \
                      const T *A, int lda, const T *B, int ldb, T *C, int ldc) {                   \
        const int oa = ta ? TRANS : NO_TRANS, ob = tb ? TRANS : NO_TRANS;                          \
        if (ilp64)                                                                                 \
            ((gemm64_##S)gemm)(ROW_MAJOR, oa, ob, m, n, k, 1, A, lda, B, ldb, 0, C, ldc);          \
        else                                                                                       \
            ((gemm32_##S)gemm)(ROW_MAJOR, oa, ob, m, n, k, 1, A, lda, B, ldb, 0, C, ldc);          \
    }                                                                                              \
    struct stack_args_##S {                                                                        \
        const T *A, *B;                                                                            \
        T *C;                                                                                      \
        ptrdiff_t sa, sb, sc;                                                                      \
        int m, n, k, ta, tb, lda, ldb, ldc, ilp64;                                                 \
        const void *gemm;                                                                          \
    };                                                                                             \
    static int stack_range_##S(const void *p, int lo, int hi) {                                    \
        const struct stack_args_##S *a = p;                                                        \
        for (int i = lo; i < hi; ++i)                                                              \
            abp_gemm_##S(a->gemm, a->ilp64, a->ta, a->tb, a->m, a->n, a->k, a->A + a->sa * i,      \
                         a->lda, a->B + a->sb * i, a->ldb, a->C + a->sc * i, a->ldc);              \
        return 0;                                                                                  \
    }                                                                                              \
    int gemm_stack_par_##S(const T *A, const T *B, T *C, ptrdiff_t sa, ptrdiff_t sb, ptrdiff_t sc, \
                           int K, int m, int n, int k, int ta, int tb, int lda, int ldb, int ldc,  \
                           const void *gemm, int ilp64, int threads) {                             \
        const struct stack_args_##S a = {A,  B,  C,   sa,  sb,  sc,  m,     n,   k,               \
                                         ta, tb, lda, ldb, ldc, ilp64, gemm};                     \
        return abp_pool_run(threads, K, stack_range_##S, &a);                                      \
    }

ABP_GEMM(float, f32)
ABP_GEMM(double, f64)
