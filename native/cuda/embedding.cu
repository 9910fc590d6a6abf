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

// The backward, without atomics and without knowing V: the first row holding a token owns that
// token's dwte row and adds, in row order, dout of every row that holds it. Block i first looks for
// an earlier row with its token (then another block owns it, and it leaves); else it adds its own
// row and then the later ones, listed 256 at a time in order by a prefix sum over match flags.
// Work: O(N^2 / 256) token comparisons and one pass over dout: fine for the few thousand tokens of a
// micro-batch, and no V-sized count or scratch in a vocabulary of 126k.
constexpr int kEmbThreads = 256;
__global__ void embedding_backward_kernel(float* dwte, const float* dout, const int32_t* tokens, int64_t N,
                                          int64_t C) {
  __shared__ int earlier;
  __shared__ int scan[kEmbThreads];
  __shared__ int64_t hits[kEmbThreads];
  const int tid = threadIdx.x;
  const int64_t i = blockIdx.x;
  const int32_t tok = tokens[i];
  if (tid == 0) earlier = 0;
  __syncthreads();
  for (int64_t j = tid; j < i; j += kEmbThreads)
    if (tokens[j] == tok) earlier = 1;  // several threads may write the same 1
  __syncthreads();
  if (earlier) return;  // the whole block, together
  float* dst = dwte + static_cast<int64_t>(tok) * C;
  for (int64_t c = tid; c < C; c += kEmbThreads) dst[c] += dout[i * C + c];
  for (int64_t j0 = i + 1; j0 < N; j0 += kEmbThreads) {
    const int64_t j = j0 + tid;
    const int hit = j < N && tokens[j] == tok ? 1 : 0;
    scan[tid] = hit;
    for (int off = 1; off < kEmbThreads; off <<= 1) {  // inclusive prefix sum
      __syncthreads();
      const int add = tid >= off ? scan[tid - off] : 0;
      __syncthreads();
      scan[tid] += add;
    }
    __syncthreads();
    if (hit) hits[scan[tid] - 1] = j;
    const int n_hits = scan[kEmbThreads - 1];
    __syncthreads();
    for (int h = 0; h < n_hits; h++)
      for (int64_t c = tid; c < C; c += kEmbThreads) dst[c] += dout[hits[h] * C + c];
    __syncthreads();  // hits and scan are rewritten by the next chunk
  }
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

// dwte (V,C) +=, dout (N,C), tokens (N); repeated tokens add up in row order, as on the CPU.
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int64_t C, cudaStream_t s) {
  if (N == 0 || C == 0) return;
  JG_CHECK(N <= 0x7fffffffLL, "embedding_backward: too many rows (", N, ")");
  JG_LAUNCH(embedding_backward_kernel, static_cast<unsigned>(N), kEmbThreads, 0, s, dwte, dout, tokens, N, C);
  JG_CUDA_LAUNCHED("embedding_backward_kernel");
}

// out (R,C), x (N,C), rows (R)
void gather_rows(float* out, const float* x, const int32_t* rows, int64_t R, int64_t C, cudaStream_t s) {
  if (R == 0) return;
  JG_LAUNCH(gather_rows_kernel, static_cast<unsigned>(R), 256, 0, s, out, x, rows, C);
  JG_CUDA_LAUNCHED("gather_rows_kernel");
}

}  // namespace jg::cuda
