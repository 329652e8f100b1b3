/* GEMMs by the BLAS that NumPy loaded, called from the kernels' own threads (kernels/gemm_cpu.c).
 *
 * abp_np/fast/threads.py (blas_gemm) finds cblas_sgemm / cblas_dgemm in NumPy's OpenBLAS and
 * hands its address to the kernels, with `ilp64`: whether the library's integers are 64 bits
 * wide (OpenBLAS built with INTERFACE64, as NumPy's wheels are) or int. The caller sets that
 * library to one thread for the call, so each GEMM runs on the thread that makes it.
 *
 * abp_gemm_<S>: C (m x n) = op(A) op(B), row major, C's old values not read; op(X) = X, or X^T
 * with the flag ta / tb set (X stored k x m or n x k); lda, ldb, ldc the row strides. These are
 * the arguments NumPy's matmul passes to cblas_?gemm for the same arrays, hence the same bits.
 */
#ifndef ABP_GEMM_CPU_H
#define ABP_GEMM_CPU_H

void abp_gemm_f32(const void *gemm, int ilp64, int ta, int tb, int m, int n, int k, const float *A,
                  int lda, const float *B, int ldb, float *C, int ldc);
void abp_gemm_f64(const void *gemm, int ilp64, int ta, int tb, int m, int n, int k,
                  const double *A, int lda, const double *B, int ldb, double *C, int ldc);

#endif
