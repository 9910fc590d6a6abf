// Functions written once for the host and the CUDA kernels: JG_HOST_DEVICE marks them __host__
// __device__ where nvcc compiles (the CUDA-on-CPU tier and the CPU build compile them as plain C++).
#pragma once

#if defined(__CUDACC__)
#define JG_HOST_DEVICE __host__ __device__
#else
#define JG_HOST_DEVICE
#endif
