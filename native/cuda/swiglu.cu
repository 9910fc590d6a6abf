#include "common.cuh"
#include "dispatch.cuh"
#include "ops.h"

namespace jg::cuda {

namespace {

template <typename T>
__global__ void swiglu_kernel(T* out, const T* gate, const T* up, int64_t in_stride, int64_t N, int64_t M) {
  const int64_t total = N * M;
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; w < total;
       w += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = w / M, j = w % M;
    const float g = load_f32(gate, n * in_stride + j), u = load_f32(up, n * in_stride + j);
    store_f32(out, w, g / (1.0f + expf(-g)) * u);
  }
}

template <typename T>
__global__ void residual_kernel(float* x, const T* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] += load_f32(y, i);
}

// silu(g) = g * s with s = sigmoid(g); silu'(g) = s * (1 + g * (1 - s)). Written as the CPU writes it.
template <typename T>
__global__ void swiglu_backward_kernel(float* dgate, float* dup, int64_t dg_stride, const float* dout, const T* gate,
                                       const T* up, int64_t in_stride, int64_t N, int64_t M) {
  const int64_t total = N * M;
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; w < total;
       w += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = w / M, j = w % M;
    const float g = load_f32(gate, n * in_stride + j), u = load_f32(up, n * in_stride + j), d = dout[w];
    const float e1 = 1.0f + expf(-g), sg = 1.0f / e1;
    dgate[n * dg_stride + j] += __fmul_rn(__fmul_rn(d, u), __fmul_rn(sg, 1.0f + __fmul_rn(g, 1.0f - sg)));
    dup[n * dg_stride + j] += __fmul_rn(d, g / e1);
  }
}

__global__ void residual_backward_kernel(float* dy, const float* dout, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dy[i] += dout[i];
}

}  // namespace

// out (N,M) = silu(gate) * up; LLaDA's ff_proj is the gated branch, up_proj the linear one.
void swiglu_forward(void* out, const void* gate, const void* up, int64_t in_stride, DType t, int64_t N, int64_t M,
                    cudaStream_t s) {
  if (N * M == 0) return;
  JG_DISPATCH(t, T, {
    JG_LAUNCH(swiglu_kernel<T>, grid_for(N * M, 256), 256, 0, s, static_cast<T*>(out), static_cast<const T*>(gate),
              static_cast<const T*>(up), in_stride, N, M);
  });
  JG_CUDA_LAUNCHED("swiglu_kernel");
}

// x (n) fp32 += y (n)
void residual_forward(float* x, const void* y, DType t, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  JG_DISPATCH(t, T, {
    JG_LAUNCH(residual_kernel<T>, grid_for(n, 256), 256, 0, s, x, static_cast<const T*>(y), n);
  });
  JG_CUDA_LAUNCHED("residual_kernel");
}


// dgate, dup (N,M) fp32 +=, rows dg_stride apart; dout (N,M) fp32; gate, up (N,M) of dtype t, rows in_stride apart
void swiglu_backward(float* dgate, float* dup, int64_t dg_stride, const float* dout, const void* gate, const void* up,
                     int64_t in_stride, DType t, int64_t N, int64_t M, cudaStream_t s) {
  if (N * M == 0) return;
  JG_DISPATCH(t, T, {
    JG_LAUNCH(swiglu_backward_kernel<T>, grid_for(N * M, 256), 256, 0, s, dgate, dup, dg_stride, dout,
              static_cast<const T*>(gate), static_cast<const T*>(up), in_stride, N, M);
  });
  JG_CUDA_LAUNCHED("swiglu_backward_kernel");
}

// dy (n) += dout (n)
void residual_backward(float* dy, const float* dout, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  JG_LAUNCH(residual_backward_kernel, grid_for(n, 256), 256, 0, s, dy, dout, n);
  JG_CUDA_LAUNCHED("residual_backward_kernel");
}

}  // namespace jg::cuda
