#include "common.cuh"
#include "dispatch.cuh"
#include "ops.h"

namespace jg::cuda {

namespace {

// One block per row: the sum of squares in fp32 (block reduction), then the scaled row.
template <typename T>
__global__ void rmsnorm_kernel(T* out, const float* inp, const T* weight, int64_t C, float eps) {
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x;
  const float* x = inp + n * C;
  float ss = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
  ss = block_sum(ss, scratch);
  const float r = rsqrtf(ss / static_cast<float>(C) + eps);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store_f32(out, n * C + c, load_f32(weight, c) * (x[c] * r));
}

}  // namespace

// out (N,C) of dtype t, inp (N,C) fp32, weight (C) of dtype t. LLaDA's form: w * (x * rsqrt(mean(x^2) + eps)).
void rmsnorm_forward(void* out, const float* inp, const void* weight, DType t, int64_t N, int64_t C, float eps,
                     cudaStream_t s) {
  if (N == 0) return;
  JG_DISPATCH(t, T, {
    JG_LAUNCH(rmsnorm_kernel<T>, static_cast<unsigned>(N), 256, 0, s, static_cast<T*>(out), inp,
              static_cast<const T*>(weight), C, eps);
  });
  JG_CUDA_LAUNCHED("rmsnorm_kernel");
}

}  // namespace jg::cuda
