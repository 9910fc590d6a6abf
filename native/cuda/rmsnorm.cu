#include "common.cuh"
#include "dispatch.cuh"
#include "ops.h"

namespace jg::cuda {

namespace {

// One block per row: the sum of squares in fp32 (block reduction), then the scaled row; rstd (may be
// null) keeps 1/rms for the backward.
template <typename T>
__global__ void rmsnorm_kernel(T* out, float* rstd, const float* inp, const T* weight, int64_t C, float eps) {
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x;
  const float* x = inp + n * C;
  float ss = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
  ss = block_sum(ss, scratch);
  const float r = rsqrtf(ss / static_cast<float>(C) + eps);
  if (rstd != nullptr && threadIdx.x == 0) rstd[n] = r;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store_f32(out, n * C + c, load_f32(weight, c) * (x[c] * r));
}

// dinp's share of the backward, one block per row. With y = w * x * r, r = (mean(x^2) + eps)^-1/2
// and g = w * dy: dx = r * g - x * r^3 / C * sum(g * x). The sum in double, as the CPU takes it.
template <typename T>
__global__ void rmsnorm_backward_inp_kernel(float* dinp, const float* dout, const float* inp, const T* weight,
                                            const float* rstd, int64_t C) {
  __shared__ double scratch[32];
  const int64_t n = blockIdx.x;
  const float* x = inp + n * C;
  const float* dy = dout + n * C;
  const float r = rstd[n];
  double gx = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) gx += static_cast<double>(load_f32(weight, c) * dy[c]) * x[c];
  gx = block_sum(gx, scratch);
  const float k = static_cast<float>(gx * r * r * r / static_cast<double>(C));
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    dinp[n * C + c] += __fsub_rn(__fmul_rn(r, __fmul_rn(load_f32(weight, c), dy[c])), __fmul_rn(k, x[c]));
}

// dweight's share: a block owns 32 columns; its 32 x 32 threads take the rows 32 apart (each thread
// its rows in order), and the 32 partial sums of a column are then added in a fixed tree. No atomics
// and no scratch memory: the same bits on every run and every GPU.
constexpr int kDwCols = 32, kDwRows = 32;
__global__ void rmsnorm_backward_weight_kernel(float* dweight, const float* dout, const float* inp, const float* rstd,
                                               int64_t N, int64_t C) {
  __shared__ float part[kDwRows][kDwCols + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kDwCols + tx;
  float acc = 0.0f;
  if (c < C)
    for (int64_t n = ty; n < N; n += kDwRows) acc += dout[n * C + c] * (inp[n * C + c] * rstd[n]);
  part[ty][tx] = acc;
  for (int half = kDwRows / 2; half > 0; half /= 2) {
    __syncthreads();
    if (ty < half) part[ty][tx] += part[ty + half][tx];
  }
  if (ty == 0 && c < C) dweight[c] += part[0][tx];
}

}  // namespace

// out (N,C) of dtype t, inp (N,C) fp32, weight (C) of dtype t. LLaDA's form: w * (x * rsqrt(mean(x^2) + eps)).
void rmsnorm_forward(void* out, const float* inp, const void* weight, DType t, int64_t N, int64_t C, float eps,
                     cudaStream_t s) {
  rmsnorm_forward(out, nullptr, inp, weight, t, N, C, eps, s);
}

// The same, saving rstd (N) when it is not null.
void rmsnorm_forward(void* out, float* rstd, const float* inp, const void* weight, DType t, int64_t N, int64_t C,
                     float eps, cudaStream_t s) {
  if (N == 0) return;
  JG_DISPATCH(t, T, {
    JG_LAUNCH(rmsnorm_kernel<T>, static_cast<unsigned>(N), 256, 0, s, static_cast<T*>(out), rstd, inp,
              static_cast<const T*>(weight), C, eps);
  });
  JG_CUDA_LAUNCHED("rmsnorm_kernel");
}

// dinp (N,C) +=, dweight (C) +=; dout (N,C) fp32, inp (N,C) fp32, weight (C) of dtype t, rstd (N)
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const void* weight, DType t,
                      const float* rstd, int64_t N, int64_t C, cudaStream_t s) {
  if (N == 0 || C == 0) return;
  JG_CHECK(N <= 0x7fffffffLL, "rmsnorm_backward: too many rows (", N, ")");
  JG_DISPATCH(t, T, {
    JG_LAUNCH(rmsnorm_backward_inp_kernel<T>, static_cast<unsigned>(N), 256, 0, s, dinp, dout, inp,
              static_cast<const T*>(weight), rstd, C);
  });
  JG_CUDA_LAUNCHED("rmsnorm_backward_inp_kernel");
  JG_LAUNCH(rmsnorm_backward_weight_kernel, static_cast<unsigned>((C + kDwCols - 1) / kDwCols), dim3(kDwCols, kDwRows),
            0, s, dweight, dout, inp, rstd, N, C);
  JG_CUDA_LAUNCHED("rmsnorm_backward_weight_kernel");
}

}  // namespace jg::cuda
