// CUDA kernels for abp_np: the scatter / gather steps of the transposed convolution, and the
// fused Langevin update. C++ templates over T = float and double; abp_np/_cuda.py compiles
// this file once through cupy.RawModule and looks each kernel up as e.g. "col2im<float>".
//
// Layout (PyTorch's ConvTranspose2d; the NumPy reference is abp_np/functional.py):
//   x      (N, Cin, H, W)            weight (Cin, Cout, kh, kw)
//   cols   (Cout, kh, kw, N, H, W)   = weight2d^T @ x2d, one GEMM done by cuBLAS
//   y      (N, Cout, Hout, Wout)     Hout = (H - 1) sh - 2 ph + kh + output_padding
// Input pixel (ih, iw) reaches output pixel (oh, ow) through tap (i, j) when
//   oh = ih * sh + i - ph   and   ow = iw * sw + j - pw.
//
// Why grid-stride loops: every kernel walks its elements with
//   for (idx = global thread id; idx < total; idx += total number of threads)
// so ANY grid size is correct. The Python side launches a capped grid whatever the size,
// and the host build (kernels/host_shim.h, used by the tests) runs a tiny grid on the CPU.
//
// Why gather, not scatter: col2im gives one thread to each OUTPUT element and lets it sum the
// taps that land on it in a fixed order (i ascending, then j ascending). There are no atomics,
// so every run produces the same bits, and two Langevin chains can be compared run to run.
//
// Element counts and flat indices are 64-bit (long long); shape sizes are int.
// The same file compiles as host C++ with `g++ -include kernels/host_shim.h`; keep it free of
// CUDA-only features (no shared memory, no __syncthreads, no atomics, no #include).

// --- activations, applied after the bias in the fused col2im ----------------------------------

// Activation codes, shared with abp_np/_cuda.py.
#define ABP_ACT_IDENTITY 0
#define ABP_ACT_TANH 1
#define ABP_ACT_RELU 2
#define ABP_ACT_LEAKY_RELU 3

__device__ __forceinline__ float abp_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double abp_tanh(double v) { return tanh(v); }

template <typename T>
__device__ __forceinline__ T abp_activate(T v, int activation, T slope) {
    switch (activation) {
        case ABP_ACT_TANH:
            return abp_tanh(v);
        case ABP_ACT_RELU:
            return v > T(0) ? v : T(0);
        case ABP_ACT_LEAKY_RELU:
            return v > T(0) ? v : slope * v;
        default:  // ABP_ACT_IDENTITY
            return v;
    }
}

// --- col2im: the transposed convolution's scatter, written as a gather -------------------------

// Sum of the taps that land on output pixel (n, c, oh, ow), without bias.
//   cols (C, kh, kw, N, H, W), C-contiguous.
// Tap i reaches row oh from input row ih = (oh + ph - i) / sh, which must be a whole number in
// [0, H). The loops start at the smallest such i and step by sh, so i (then j) ascends: the
// order of the floating-point sum is fixed.
template <typename T>
__device__ __forceinline__ T col2im_sum(const T* __restrict__ cols, int n, int c, int oh, int ow,
                                        int N, int kh, int kw, int H, int W, int sh, int sw,
                                        int ph, int pw) {
    const int rh = oh + ph;  // = ih * sh + i, >= 0 since padding >= 0
    const int rw = ow + pw;  // = iw * sw + j
    T acc = T(0);
    for (int i = rh % sh; i < kh && i <= rh; i += sh) {
        const int ih = (rh - i) / sh;
        if (ih >= H) continue;  // rows above the input (i small, oh large)
        for (int j = rw % sw; j < kw && j <= rw; j += sw) {
            const int iw = (rw - j) / sw;
            if (iw >= W) continue;
            // flat index of cols[c, i, j, n, ih, iw]
            const long long k =
                ((((((long long)c * kh + i) * kw + j) * N + n) * H + ih) * W) + iw;
            acc += cols[k];
        }
    }
    return acc;
}

// y = col2im(cols) + bias.
//   cols (C, kh, kw, N, H, W) -> y (N, C, Hout, Wout); bias (C,) or nullptr for no bias.
// One thread per element of y; total = N * C * Hout * Wout.
template <typename T>
__global__ void col2im(const T* __restrict__ cols, const T* __restrict__ bias, T* __restrict__ y,
                       int N, int C, int Hout, int Wout, int kh, int kw, int H, int W, int sh,
                       int sw, int ph, int pw, long long total) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += step) {
        // idx = ((n * C + c) * Hout + oh) * Wout + ow
        const int ow = (int)(idx % Wout);
        const int oh = (int)((idx / Wout) % Hout);
        const int c = (int)((idx / ((long long)Wout * Hout)) % C);
        const int n = (int)(idx / ((long long)Wout * Hout * C));
        T v = col2im_sum(cols, n, c, oh, ow, N, kh, kw, H, W, sh, sw, ph, pw);
        if (bias != nullptr) v += bias[c];
        y[idx] = v;
    }
}

// y = activation(col2im(cols) + bias): the last layer of a generator is deconv + bias + tanh.
//   Shapes as in col2im. activation: ABP_ACT_* code above; slope: leaky ReLU's negative slope.
template <typename T>
__global__ void col2im_act(const T* __restrict__ cols, const T* __restrict__ bias,
                           T* __restrict__ y, int N, int C, int Hout, int Wout, int kh, int kw,
                           int H, int W, int sh, int sw, int ph, int pw, int activation, T slope,
                           long long total) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += step) {
        // idx = ((n * C + c) * Hout + oh) * Wout + ow
        const int ow = (int)(idx % Wout);
        const int oh = (int)((idx / Wout) % Hout);
        const int c = (int)((idx / ((long long)Wout * Hout)) % C);
        const int n = (int)(idx / ((long long)Wout * Hout * C));
        T v = col2im_sum(cols, n, c, oh, ow, N, kh, kw, H, W, sh, sw, ph, pw);
        if (bias != nullptr) v += bias[c];
        y[idx] = abp_activate(v, activation, slope);
    }
}

// --- im2col: the gradient's gather -------------------------------------------------------------

// dcols[c, i, j, n, ih, iw] = dy[n, c, ih * sh + i - ph, iw * sw + j - pw], 0 outside dy.
//   dy (N, C, Hout, Wout) -> dcols (C, kh, kw, N, H, W).
// One thread per element of dcols; total = C * kh * kw * N * H * W. Pure copies: exact.
template <typename T>
__global__ void im2col(const T* __restrict__ dy, T* __restrict__ dcols, int N, int C, int Hout,
                       int Wout, int kh, int kw, int H, int W, int sh, int sw, int ph, int pw,
                       long long total) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += step) {
        // idx = ((((c * kh + i) * kw + j) * N + n) * H + ih) * W + iw
        long long r = idx;
        const int iw = (int)(r % W);
        r /= W;
        const int ih = (int)(r % H);
        r /= H;
        const int n = (int)(r % N);
        r /= N;
        const int j = (int)(r % kw);
        r /= kw;
        const int i = (int)(r % kh);
        const int c = (int)(r / kh);
        const int oh = ih * sh + i - ph;
        const int ow = iw * sw + j - pw;
        T v = T(0);
        if (oh >= 0 && oh < Hout && ow >= 0 && ow < Wout) {
            // flat index of dy[n, c, oh, ow]
            v = dy[(((long long)n * C + c) * Hout + oh) * Wout + ow];
        }
        dcols[idx] = v;
    }
}

// --- Langevin dynamics on Z --------------------------------------------------------------------

// One Langevin step, in place, for the model Z ~ N(0, I), Y = f(Z; W) + eps:
//
//     z <- z + (delta^2 / 2) * (dz_data - z) + delta * noise
//
// dz_data is the gradient of the DATA term only, (Y - f(z)) / sigma^2 * df/dz, from one
// backward pass; the "- z" is the gradient of the N(0, I) prior, added here.
// half_delta_sq = delta^2 / 2. noise is N(0, I) drawn by the caller (explicit, so CPU and GPU
// chains can share it); noise == nullptr drops the noise term: plain gradient ascent.
//   z, dz_data, noise: n elements each, any shape, C-contiguous.
template <typename T>
__global__ void langevin_step(T* __restrict__ z, const T* __restrict__ dz_data,
                              const T* __restrict__ noise, T half_delta_sq, T delta, long long n) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += step) {
        const T zi = z[idx];
        T v = zi + half_delta_sq * (dz_data[idx] - zi);
        if (noise != nullptr) v += delta * noise[idx];
        z[idx] = v;
    }
}
