// Host shim: compile kernels/*.cu as ordinary C++ so the tests can run them without a GPU.
//
//     g++ -std=c++17 -include kernels/host_shim.h ...
//
// It turns the CUDA qualifiers into plain C++, and provides blockIdx / blockDim / threadIdx /
// gridDim as (thread-local) globals. host_launch() runs a "launch" sequentially: it sets those
// globals for every block and every thread of the grid in turn and calls the kernel each time.
// This is only correct for kernels whose threads never talk to each other (no shared memory,
// no __syncthreads, no atomics), which is how kernels/deconv.cu is written. With grid-stride
// loops a tiny grid (a few blocks of a few threads) covers any problem size.
#ifndef ABP_NP_HOST_SHIM_H
#define ABP_NP_HOST_SHIM_H

#ifndef __CUDACC__

#include <math.h>

#define __global__
#define __device__ inline
#define __host__
#define __forceinline__

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
        : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 gridDim;
inline thread_local dim3 blockDim;
inline thread_local dim3 blockIdx;
inline thread_local dim3 threadIdx;

// Run kernel(args...) once for every (block, thread) of grid x block, one after the other.
template <typename Kernel, typename... Args>
void host_launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
    gridDim = grid;
    blockDim = block;
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx)
                for (unsigned int tz = 0; tz < block.z; ++tz)
                    for (unsigned int ty = 0; ty < block.y; ++ty)
                        for (unsigned int tx = 0; tx < block.x; ++tx) {
                            blockIdx = dim3(bx, by, bz);
                            threadIdx = dim3(tx, ty, tz);
                            kernel(args...);
                        }
}

#endif  // __CUDACC__

#endif  // ABP_NP_HOST_SHIM_H
