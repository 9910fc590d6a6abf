#include "common.cuh"
#include "dispatch.cuh"
#include "ops.h"

namespace jg::cuda {

namespace {

// One block per row; threads stride over the columns.
template <typename T>
__global__ void embedding_kernel(float* out, const int32_t* tokens, const T* wte, int64_t C) {
  const int64_t n = blockIdx.x;
  const T* src = wte + static_cast<int64_t>(tokens[n]) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[n * C + c] = load_f32(src, c);
}

__global__ void gather_rows_kernel(float* out, const float* x, const int32_t* rows, int64_t C) {
  const int64_t r = blockIdx.x;
  const float* src = x + static_cast<int64_t>(rows[r]) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[r * C + c] = src[c];
}

}  // namespace

// out (N,C) fp32, tokens (N), wte (V,C); token ids were range-checked at the boundary.
void embedding_forward(float* out, const int32_t* tokens, const void* wte, DType t, int64_t N, int64_t C,
                       cudaStream_t s) {
  if (N == 0) return;
  JG_DISPATCH(t, T, {
    JG_LAUNCH(embedding_kernel<T>, static_cast<unsigned>(N), 256, 0, s, out, tokens, static_cast<const T*>(wte), C);
  });
  JG_CUDA_LAUNCHED("embedding_kernel");
}

// out (R,C), x (N,C), rows (R)
void gather_rows(float* out, const float* x, const int32_t* rows, int64_t R, int64_t C, cudaStream_t s) {
  if (R == 0) return;
  JG_LAUNCH(gather_rows_kernel, static_cast<unsigned>(R), 256, 0, s, out, x, rows, C);
  JG_CUDA_LAUNCHED("gather_rows_kernel");
}

}  // namespace jg::cuda
