// dtype conversion on the device and the device-side random initialisation.
#include "common.cuh"
#include "dispatch.cuh"
#include "ops.h"
#include "rng.cuh"

namespace jg::cuda {

namespace {

template <typename T>
__global__ void from_f32_kernel(T* dst, const float* src, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store_f32(dst, i, src[i]);
}

template <typename T>
__global__ void to_f32_kernel(float* dst, const T* src, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = load_f32(src, i);
}

// Box-Muller on two uniforms of the counter-based generator: element i of (seed, stream).
template <typename T>
__global__ void init_normal_kernel(T* dst, int64_t n, uint64_t key, float stdev, float fill) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (stdev == 0.0f) {
      store_f32(dst, i, fill);
      continue;
    }
    const double u1 = uniform_open(key, 2 * static_cast<uint64_t>(i));
    const double u2 = uniform_open(key, 2 * static_cast<uint64_t>(i) + 1);
    const float z = static_cast<float>(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2));
    store_f32(dst, i, z * stdev);
  }
}

}  // namespace

int act_size(DType t) {
  if (t == DType::F32) return 4;
  if (t == DType::BF16) return 2;
  throw EngineError("The CUDA backend computes in F32 or BF16, not F16");
}

void convert_from_f32(void* dst, DType t, const float* src, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  JG_DISPATCH(t, T, {
    JG_LAUNCH(from_f32_kernel<T>, grid_for(n, 256), 256, 0, s, static_cast<T*>(dst), src, n);
  });
  JG_CUDA_LAUNCHED("from_f32_kernel");
}

void convert_to_f32(float* dst, const void* src, DType t, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  JG_DISPATCH(t, T, {
    JG_LAUNCH(to_f32_kernel<T>, grid_for(n, 256), 256, 0, s, dst, static_cast<const T*>(src), n);
  });
  JG_CUDA_LAUNCHED("to_f32_kernel");
}

void init_normal(void* dst, DType t, int64_t n, uint64_t seed, uint64_t stream, float stdev, float fill,
                 cudaStream_t s) {
  if (n == 0) return;
  const uint64_t key = row_key(seed, stream, 0x5EEDULL);
  JG_DISPATCH(t, T, {
    JG_LAUNCH(init_normal_kernel<T>, grid_for(n, 256), 256, 0, s, static_cast<T*>(dst), n, key, stdev, fill);
  });
  JG_CUDA_LAUNCHED("init_normal_kernel");
}

}  // namespace jg::cuda
