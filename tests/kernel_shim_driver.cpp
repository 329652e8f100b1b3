// Host build of kernels/deconv.cu for tests/test_kernels_host.py.
//
//     g++ -std=c++17 -O2 -ffp-contract=off -shared -fPIC -include kernels/host_shim.h
//         -I kernels tests/kernel_shim_driver.cpp -o libdeconv_host.so
//
// host_shim.h turns the CUDA kernels into plain functions; each extern "C" entry point below
// "launches" one kernel on the CPU with the grid it is given (blocks x threads, run one after
// the other), so the tests can also check that the grid size does not change the result.
#include "deconv.cu"

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
    }

ABP_HOST_ENTRY_POINTS(f32, float)
ABP_HOST_ENTRY_POINTS(f64, double)
