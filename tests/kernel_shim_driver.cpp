// Host build of kernels/deconv.cu and kernels/batchnorm.cu for tests/test_kernels_host.py.
//
//     g++ -std=c++17 -O2 -ffp-contract=off -shared -fPIC -include kernels/host_shim.h
//         -I kernels tests/kernel_shim_driver.cpp -o libdeconv_host.so
//
// host_shim.h turns the CUDA kernels into plain functions; each extern "C" entry point below
// "launches" one kernel on the CPU with the grid it is given (blocks x threads, run one after
// the other), so the tests can also check that the grid size does not change the result.
#include "deconv.cu"
#include "batchnorm.cu"

#define ABP_HOST_ENTRY_POINTS(SUFFIX, T)                                                        \
    extern "C" void host_col2im_##SUFFIX(const T* cols, const T* bias, T* y, int N, int C,     \
                                         int Hout, int Wout, int kh, int kw, int H, int W,     \
                                         int sh, int sw, int ph, int pw, long long total,      \
                                         int blocks, int threads) {                            \
        host_launch(dim3(blocks), dim3(threads), col2im<T>, cols, bias, y, N, C, Hout, Wout,   \
                    kh, kw, H, W, sh, sw, ph, pw, total);                                      \
    }                                                                                          \
    extern "C" void host_col2im_act_##SUFFIX(const T* cols, const T* bias, T* y, int N, int C, \
                                             int Hout, int Wout, int kh, int kw, int H, int W, \
                                             int sh, int sw, int ph, int pw, int activation,   \
                                             T slope, long long total, int blocks,             \
                                             int threads) {                                    \
        host_launch(dim3(blocks), dim3(threads), col2im_act<T>, cols, bias, y, N, C, Hout,     \
                    Wout, kh, kw, H, W, sh, sw, ph, pw, activation, slope, total);             \
    }                                                                                          \
    extern "C" void host_im2col_##SUFFIX(const T* dy, T* dcols, int N, int C, int Hout,        \
                                         int Wout, int kh, int kw, int H, int W, int sh,       \
                                         int sw, int ph, int pw, long long total, int blocks,  \
                                         int threads) {                                        \
        host_launch(dim3(blocks), dim3(threads), im2col<T>, dy, dcols, N, C, Hout, Wout, kh,   \
                    kw, H, W, sh, sw, ph, pw, total);                                          \
    }                                                                                          \
    extern "C" void host_langevin_step_##SUFFIX(T* z, const T* dz_data, const T* noise,            \
                                                T half_delta_sq, T delta, long long n,         \
                                                int blocks, int threads) {                     \
        host_launch(dim3(blocks), dim3(threads), langevin_step<T>, z, dz_data, noise,              \
                    half_delta_sq, delta, n);                                                  \
    }                                                                                          \
    extern "C" void host_channel_partials_##SUFFIX(const T* a, const T* b, const T* sa,        \
                                                   const T* sb, T* partial, int N, int C,      \
                                                   int L, int P, long long total, int blocks,  \
                                                   int threads) {                              \
        host_launch(dim3(blocks), dim3(threads), channel_partials<T>, a, b, sa, sb, partial, N, \
                    C, L, P, total);                                                           \
    }                                                                                          \
    extern "C" void host_channel_finish_##SUFFIX(const T* partial, T* out, int C, int P,       \
                                                 T scale, long long total, int blocks,         \
                                                 int threads) {                                \
        host_launch(dim3(blocks), dim3(threads), channel_finish<T>, partial, out, C, P, scale,  \
                    total);                                                                    \
    }                                                                                          \
    extern "C" void host_bn_inv_std_##SUFFIX(const T* var, const T* gamma, T* inv_std, T* a,   \
                                             T eps, long long total, int blocks,               \
                                             int threads) {                                    \
        host_launch(dim3(blocks), dim3(threads), bn_inv_std<T>, var, gamma, inv_std, a, eps,    \
                    total);                                                                    \
    }                                                                                          \
    extern "C" void host_bn_forward_apply_##SUFFIX(const T* x, const T* mu, const T* a,        \
                                                   const T* beta, T* xc, T* y, int C, int L,   \
                                                   long long total, int blocks, int threads) { \
        host_launch(dim3(blocks), dim3(threads), bn_forward_apply<T>, x, mu, a, beta, xc, y, C, \
                    L, total);                                                                 \
    }                                                                                          \
    extern "C" void host_bn_backward_apply_##SUFFIX(                                           \
        const T* dy, const T* xc, const T* sum_dy, const T* sum_dy_xc, const T* inv_std,       \
        const T* gamma, T* dx, int C, int L, T inv_m, long long total, int blocks,             \
        int threads) {                                                                         \
        host_launch(dim3(blocks), dim3(threads), bn_backward_apply<T>, dy, xc, sum_dy,          \
                    sum_dy_xc, inv_std, gamma, dx, C, L, inv_m, total);                        \
    }                                                                                          \
    extern "C" void host_bn_running_update_##SUFFIX(const T* mu, const T* var, T* rm, T* rv,   \
                                                    T keep, T momentum, T unbias,              \
                                                    long long total, int blocks,               \
                                                    int threads) {                             \
        host_launch(dim3(blocks), dim3(threads), bn_running_update<T>, mu, var, rm, rv, keep,   \
                    momentum, unbias, total);                                                  \
    }

ABP_HOST_ENTRY_POINTS(f32, float)
ABP_HOST_ENTRY_POINTS(f64, double)
