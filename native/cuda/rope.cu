#include "common.cuh"
#include "dispatch.cuh"
#include "ops.h"

namespace jg::cuda {

namespace {

// One thread per (row, head, i < hd/2): the pair (i, i + hd/2) rotated by angle(pos, i).
template <typename T>
__global__ void rope_kernel(T* x, int64_t stride, const int32_t* pos, const float* cos_t, const float* sin_t,
                            int64_t N, int64_t H, int64_t hd) {
  const int64_t half = hd / 2;
  const int64_t total = N * H * half;
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; w < total;
       w += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = w % half, h = (w / half) % H, n = w / (half * H);
    const int64_t p = pos[n];
    const float c = cos_t[p * half + i], s = sin_t[p * half + i];
    T* v = x + n * stride + h * hd;
    const float x1 = load_f32(v, i), x2 = load_f32(v, i + half);
    // Written as the CPU writes it (no fused multiply-add), so fp32 mode matches it bit for bit.
    store_f32(v, i, __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s)));
    store_f32(v, i + half, __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s)));
  }
}

// The backward: the rotation is orthogonal, so the gradient goes back through its inverse,
// dx1 = dy1*cos + dy2*sin, dx2 = dy2*cos - dy1*sin; fp32 in place, rows `stride` apart.
__global__ void rope_backward_kernel(float* dx, int64_t stride, const int32_t* pos, const float* cos_t,
                                     const float* sin_t, int64_t N, int64_t H, int64_t hd) {
  const int64_t half = hd / 2;
  const int64_t total = N * H * half;
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; w < total;
       w += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = w % half, h = (w / half) % H, n = w / (half * H);
    const int64_t p = pos[n];
    const float c = cos_t[p * half + i], s = sin_t[p * half + i];
    float* g = dx + n * stride + h * hd;
    const float g1 = g[i], g2 = g[i + half];
    g[i] = __fadd_rn(__fmul_rn(g1, c), __fmul_rn(g2, s));
    g[i + half] = __fsub_rn(__fmul_rn(g2, c), __fmul_rn(g1, s));
  }
}

}  // namespace

// x (N rows, `stride` apart) of H heads of hd, in place; pos (N); cos_t, sin_t (max_len, hd/2)
void rope_forward(void* x, DType t, int64_t stride, const int32_t* pos, const float* cos_t, const float* sin_t,
                  int64_t N, int64_t H, int64_t hd, cudaStream_t s) {
  const int64_t total = N * H * (hd / 2);
  if (total == 0) return;
  JG_DISPATCH(t, T, {
    JG_LAUNCH(rope_kernel<T>, grid_for(total, 256), 256, 0, s, static_cast<T*>(x), stride, pos, cos_t, sin_t, N, H, hd);
  });
  JG_CUDA_LAUNCHED("rope_kernel");
}

// dx (N rows, `stride` floats apart) of H heads of hd, in place; pos (N); cos_t, sin_t (max_len, hd/2)
void rope_backward(float* dx, int64_t stride, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t N,
                   int64_t H, int64_t hd, cudaStream_t s) {
  const int64_t total = N * H * (hd / 2);
  if (total == 0) return;
  JG_LAUNCH(rope_backward_kernel, grid_for(total, 256), 256, 0, s, dx, stride, pos, cos_t, sin_t, N, H, hd);
  JG_CUDA_LAUNCHED("rope_backward_kernel");
}

}  // namespace jg::cuda
