// The optimizer's ops on the device: AdamW on fp32 master weights (with the bf16 copy the products
// read), and the gradient-clipping pieces (non-finite zeroing, the sum of squares, the scale), each
// the CPU's (native/cpu/adamw.cpp) in its arithmetic and, for the reductions, deterministic.
#include <cmath>

#include "common.cuh"
#include "ops.h"

namespace jg::cuda {

namespace {

// False for NaN and +-inf (NaN fails every comparison), with no library call.
__device__ __forceinline__ bool finite_f32(float x) { return fabsf(x) <= 3.402823466e38f; }

// torch.optim.AdamW's single-tensor order, as the CPU writes it: decay, moments, then
// param -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps). The rounded intrinsics keep nvcc from fusing
// multiply-adds, so fp32 results are the CPU's bit for bit.
__global__ void adamw_kernel(float* param, float* m, float* v, const float* grad, __nv_bfloat16* param_bf16, int64_t n,
                             float step_size, float bc2_sqrt, float decay, float b1, float b2, float one_b1,
                             float one_b2, float eps) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    float p = __fmul_rn(param[i], decay);
    const float mi = __fadd_rn(__fmul_rn(m[i], b1), __fmul_rn(g, one_b1));
    const float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(g, g), one_b2));
    const float denom = __fadd_rn(sqrtf(vi) / bc2_sqrt, eps);
    p = __fsub_rn(p, __fmul_rn(step_size, mi / denom));
    m[i] = mi;
    v[i] = vi;
    param[i] = p;
    if (param_bf16 != nullptr) param_bf16[i] = __float2bfloat16_rn(p);
  }
}

constexpr int kThreads = 256;

__global__ void nonfinite_zero_kernel(float* grad, int64_t n, int64_t* count) {
  __shared__ float scratch[32];
  float mine = 0;  // counts below 2^24 per thread are exact in fp32
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (!finite_f32(grad[i])) {
      grad[i] = 0.0f;
      mine += 1.0f;
    }
  const float total = block_sum(mine, scratch);
  // An integer sum: the same whatever order the blocks add in.
  if (threadIdx.x == 0 && total > 0)
    atomicAdd(reinterpret_cast<unsigned long long*>(count), static_cast<unsigned long long>(total));
}

// The sum of squares in two fixed stages: kSumsqBlocks blocks, whatever the GPU, each summing the
// elements i = block * 256 + thread + k * (kSumsqBlocks * 256) in k order and then over the block
// in a fixed tree; one block then adds the partials in block order. The partials live in a static
// device array (one per device), so concurrent calls on two streams of one device must not overlap.
constexpr int kSumsqBlocks = 1024;
__device__ double sumsq_partials[kSumsqBlocks];

__global__ void sumsq_blocks_kernel(const float* grad, int64_t n) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(kSumsqBlocks) * kThreads) {
    const double g = grad[i];
    acc += g * g;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) sumsq_partials[blockIdx.x] = acc;
}

__global__ void sumsq_total_kernel(double* sumsq) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int b = threadIdx.x; b < kSumsqBlocks; b += kThreads) acc += sumsq_partials[b];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) *sumsq += acc;
}

__global__ void grad_scale_kernel(float* grad, float scale, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    grad[i] = __fmul_rn(grad[i], scale);
}

}  // namespace

// param, m, v (n) fp32 in place, grad (n); param_bf16 (n, may be null) gets the updated weights in bf16.
// The derived constants are computed in double and rounded once, as the CPU (and PyTorch) does.
void adamw_update(float* param, float* m, float* v, const float* grad, void* param_bf16, int64_t n,
                  const AdamWParams& p, cudaStream_t s) {
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  JG_LAUNCH(adamw_kernel, grid_for(n, kThreads), kThreads, 0, s, param, m, v, grad,
            static_cast<__nv_bfloat16*>(param_bf16), n, static_cast<float>(p.lr / bc1),
            static_cast<float>(std::sqrt(bc2)), static_cast<float>(1.0 - p.lr * p.weight_decay),
            static_cast<float>(p.beta1), static_cast<float>(p.beta2), static_cast<float>(1.0 - p.beta1),
            static_cast<float>(1.0 - p.beta2), static_cast<float>(p.eps));
  JG_CUDA_LAUNCHED("adamw_kernel");
}

// grad (n): NaN and +-inf set to zero; *count (device) += how many
void nonfinite_zero(float* grad, int64_t n, int64_t* count, cudaStream_t s) {
  if (n == 0) return;
  JG_LAUNCH(nonfinite_zero_kernel, grid_for(n, kThreads) < 4096 ? grid_for(n, kThreads) : 4096u, kThreads, 0, s,
            grad, n, count);
  JG_CUDA_LAUNCHED("nonfinite_zero_kernel");
}

// *sumsq (device, double) += sum of grad (n) squared, in double, in a fixed order
void grad_sumsq(const float* grad, int64_t n, double* sumsq, cudaStream_t s) {
  if (n == 0) return;
  JG_LAUNCH(sumsq_blocks_kernel, kSumsqBlocks, kThreads, 0, s, grad, n);
  JG_CUDA_LAUNCHED("sumsq_blocks_kernel");
  JG_LAUNCH(sumsq_total_kernel, 1, kThreads, 0, s, sumsq);
  JG_CUDA_LAUNCHED("sumsq_total_kernel");
}

// grad (n) *= scale
void grad_scale(float* grad, float scale, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  JG_LAUNCH(grad_scale_kernel, grid_for(n, kThreads), kThreads, 0, s, grad, scale, n);
  JG_CUDA_LAUNCHED("grad_scale_kernel");
}

}  // namespace jg::cuda
