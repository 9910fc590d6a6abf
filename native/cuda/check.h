// Checks for CUDA runtime calls and kernel launches: each failure throws an EngineError naming the
// call (kind INTERNAL, or OUT_OF_MEMORY), with the file and line as where it was thrown (cuBLAS
// calls have their own check in matmul.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include "../common/check.h"

namespace jg::cuda {

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaErrorMemoryAllocation)
    throw OutOfMemoryError(str_cat("Out of memory on the GPU in ", call), str_cat(file, ":", line));
  throw EngineError(str_cat("CUDA error ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") in ", call),
                    ErrorKind::INTERNAL, str_cat(file, ":", line));
}

}  // namespace jg::cuda

#define JG_CUDA_CHECK(call)                                                  \
  do {                                                                       \
    cudaError_t jg_err_ = (call);                                            \
    if (jg_err_ != cudaSuccess) ::jg::cuda::cuda_fail(jg_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: catches bad launch configurations at once (asynchronous faults surface at
// the next synchronising call, which is checked too).
#define JG_CUDA_LAUNCHED(name)                                                        \
  do {                                                                                \
    cudaError_t jg_err_ = cudaGetLastError();                                         \
    if (jg_err_ != cudaSuccess) ::jg::cuda::cuda_fail(jg_err_, "launch of " name, __FILE__, __LINE__); \
  } while (0)
