// CUDA kernels for abp_np: batch normalisation's channel sums and its two passes over the
// activation. C++ templates over T = float and double, compiled with deconv.cu into one
// cupy.RawModule by abp_np/fast/cuda.py (e.g. "channel_partials<float>").
//
// Layout: x, dy (N, C, L), C-contiguous, L = H W (or the length of a 1-D signal); M = N L values
// per channel. The NumPy / CuPy reference is batchnorm_forward / batchnorm_backward in
// abp_np/functional.py:
//   forward   mu = sum(x) / M,  var = sum((x - mu)^2) / M,  inv_std = 1 / sqrt(var + eps)
//             xc = x - mu,  y = xc (gamma inv_std) + beta
//   backward  a = gamma inv_std
//             dx = a (dy - sum(dy) / M - xc inv_std (inv_std sum(dy xc)) / M)
//
// Why two stages and no shared memory: a channel's sum is split into P partial sums, partial p
// adding the values j = p, p + P, p + 2P, ... (j = n L + l) in ascending order, one thread each
// (neighbouring threads read neighbouring values); then one thread per channel adds its P
// partials in order. The order of every floating-point sum is fixed, so the bits repeat run to
// run, and, as in deconv.cu, no thread talks to another: the host build (host_shim.h) runs these
// kernels on the CPU for the tests. Sums are accumulated in T, as the reference does.

// partial[c, p] = sum over j = p, p + P, ... < M of  (a[n, c, l] - sa[c]) * (b[n, c, l] - sb[c])
// with j = n L + l; a null sa or sb stands for 0, a null b for the factor 1.
//   a, b (N, C, L); sa, sb (C,); partial (C, P). One thread per partial; total = C * P.
template <typename T>
__global__ void channel_partials(const T* __restrict__ a, const T* __restrict__ b,
                                 const T* __restrict__ sa, const T* __restrict__ sb,
                                 T* __restrict__ partial, int N, int C, int L, int P,
                                 long long total) {
    const long long step = (long long)blockDim.x * gridDim.x;
    const long long M = (long long)N * L;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += step) {
        const int c = (int)(idx / P);
        const int p = (int)(idx % P);
        const T shift_a = sa != nullptr ? sa[c] : T(0);
        const T shift_b = sb != nullptr ? sb[c] : T(0);
        T acc = T(0);
        for (long long j = p; j < M; j += P) {
            const long long n = j / L;
            const long long k = (n * C + c) * L + (j - n * L);  // flat index of [n, c, l]
            T v = a[k] - shift_a;
            if (b != nullptr) v *= b[k] - shift_b;
            acc += v;
        }
        partial[idx] = acc;
    }
}

// out[c] = scale * sum_p partial[c, p], p ascending.
//   partial (C, P); out (C,). One thread per channel; total = C.
template <typename T>
__global__ void channel_finish(const T* __restrict__ partial, T* __restrict__ out, int C, int P,
                               T scale, long long total) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < total; c += step) {
        T acc = T(0);
        for (int p = 0; p < P; ++p) acc += partial[c * P + p];
        out[c] = scale * acc;
    }
}

// inv_std = 1 / sqrt(var + eps);  a = gamma inv_std (gamma null: a = inv_std).
//   var, gamma, inv_std, a (C,). One thread per channel; total = C.
template <typename T>
__global__ void bn_inv_std(const T* __restrict__ var, const T* __restrict__ gamma,
                           T* __restrict__ inv_std, T* __restrict__ a, T eps, long long total) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < total; c += step) {
        const T s = T(1) / sqrt(var[c] + eps);
        inv_std[c] = s;
        a[c] = gamma != nullptr ? gamma[c] * s : s;
    }
}

// xc = x - mu;  y = xc a + beta  (a = gamma inv_std).
//   x, xc, y (N, C, L); mu, a, beta (C,). One thread per element; total = N C L.
template <typename T>
__global__ void bn_forward_apply(const T* __restrict__ x, const T* __restrict__ mu,
                                 const T* __restrict__ a, const T* __restrict__ beta,
                                 T* __restrict__ xc, T* __restrict__ y, int C, int L,
                                 long long total) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += step) {
        const int c = (int)((idx / L) % C);
        const T v = x[idx] - mu[c];
        xc[idx] = v;
        T out = v * a[c];
        out += beta[c];
        y[idx] = out;
    }
}

// dx = a (dy - sum_dy / M - xc inv_std (inv_std sum_dy_xc) / M), a = gamma inv_std, in the
// reference's order:
//   dx = xc (-(inv_std (sum_dy_xc inv_std)) / M);  dx += dy;  dx -= sum_dy / M;  dx *= a.
//   dy, xc, dx (N, C, L); sum_dy, sum_dy_xc, inv_std, gamma (C,); inv_m = 1 / M.
//   One thread per element; total = N C L.
template <typename T>
__global__ void bn_backward_apply(const T* __restrict__ dy, const T* __restrict__ xc,
                                  const T* __restrict__ sum_dy, const T* __restrict__ sum_dy_xc,
                                  const T* __restrict__ inv_std, const T* __restrict__ gamma,
                                  T* __restrict__ dx, int C, int L, T inv_m, long long total) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += step) {
        const int c = (int)((idx / L) % C);
        const T s = inv_std[c];
        T v = xc[idx] * (-(s * (sum_dy_xc[c] * s)) * inv_m);
        v += dy[idx];
        v -= sum_dy[c] * inv_m;
        dx[idx] = v * (gamma[c] * s);
    }
}

// The running statistics (PyTorch's momentum rule), in place, in the reference's order:
//   running_mean = running_mean keep + momentum mu
//   running_var  = running_var keep + (momentum var) unbias       keep = 1 - momentum,
//                                                                 unbias = M / (M - 1)
//   mu, var, running_mean, running_var (C,). One thread per channel; total = C.
template <typename T>
__global__ void bn_running_update(const T* __restrict__ mu, const T* __restrict__ var,
                                  T* __restrict__ running_mean, T* __restrict__ running_var,
                                  T keep, T momentum, T unbias, long long total) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < total; c += step) {
        T rm = running_mean[c] * keep;
        rm += momentum * mu[c];
        running_mean[c] = rm;
        T rv = running_var[c] * keep;
        rv += momentum * var[c] * unbias;
        running_var[c] = rv;
    }
}
