#include "loss.h"

#include <cmath>

#include "../common/loss.h"
#include "common.cuh"
#include "dispatch.cuh"

namespace jg::cuda {

namespace {

constexpr int kThreads = 256;

// One block per row. Excluded ids first (the block's barrier orders them before the reads).
__global__ void logsoftmax_forward_kernel(float* logprobs, float* lse, float* logits, const int32_t* targets,
                                          int64_t V, const int32_t* excluded, int n_excluded) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  const int64_t r = blockIdx.x;
  float* z = logits + r * V;
  for (int i = threadIdx.x; i < n_excluded; i += blockDim.x) z[excluded[i]] = -INFINITY;
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, z[j]);
  mx = warp_max(mx);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) fscratch[warp] = mx;
  __syncthreads();
  mx = -INFINITY;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); w++) mx = fmaxf(mx, fscratch[w]);
  // As the CPU: each exponential in fp32, the sum in double, so the order hardly matters.
  double sum = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) sum += static_cast<double>(expf(z[j] - mx));
  sum = block_sum(sum, dscratch);
  if (threadIdx.x == 0) {
    const double l = static_cast<double>(mx) + log(sum);
    lse[r] = static_cast<float>(l);
    logprobs[r] = static_cast<float>(static_cast<double>(z[targets[r]]) - l);
  }
}

// One thread per row: native/cpu/loss.h's CrossEntropyLoss::row and GrpoLoss::row.
__global__ void row_loss_kernel(double* loss, float* dlogprobs, uint8_t* region, const float* logprobs,
                                RowLossArgs a, int64_t R) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= R) return;
  const double lp = logprobs[r], w = a.weights[r];
  if (!a.grpo) {
    loss[r] = -w * lp;
    dlogprobs[r] = static_cast<float>(-w);
    return;
  }
  const GrpoRow g = grpo_row(lp, a.old_logprobs[r], a.advantages[r], w, a.beta > 0 ? a.ref_logprobs[r] : 0.0,
                             a.eps_low, a.eps_high, a.beta);
  loss[r] = g.loss;
  dlogprobs[r] = static_cast<float>(g.dlogprob);
  region[r] = static_cast<uint8_t>(g.region);
}

// Grid (column blocks, R); each thread one logit. In fp32 the read and the write of an element are
// the same thread's, so dlogits may alias logits.
template <typename T>
__global__ void logsoftmax_backward_kernel(T* dlogits, const float* dlogprobs, const float* logits, const float* lse,
                                           const int32_t* targets, int64_t V) {
  const int64_t r = blockIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= V) return;
  const float g = dlogprobs[r];
  float v = -g * expf(logits[r * V + j] - lse[r]);
  if (j == targets[r]) v += g;
  store_f32(dlogits, r * V + j, v);
}

// One thread per column; rows in order, so repeated rows add up the same way every run.
__global__ void scatter_add_rows_kernel(float* dx, const float* dsel, const int32_t* rows, int64_t R, int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t r = 0; r < R; r++) dx[static_cast<int64_t>(rows[r]) * C + c] += dsel[r * C + c];
}

}  // namespace

void logsoftmax_forward(float* logprobs, float* lse, float* logits, const int32_t* targets, int64_t R, int64_t V,
                        const int32_t* excluded, int n_excluded, cudaStream_t s) {
  if (R == 0) return;
  JG_LAUNCH(logsoftmax_forward_kernel, static_cast<unsigned>(R), kThreads, 0, s, logprobs, lse, logits, targets, V,
            excluded, n_excluded);
  JG_CUDA_LAUNCHED("logsoftmax_forward_kernel");
}

void row_loss(double* loss, float* dlogprobs, uint8_t* region, const float* logprobs, const RowLossArgs& a, int64_t R,
              cudaStream_t s) {
  if (R == 0) return;
  JG_LAUNCH(row_loss_kernel, grid_for(R, kThreads), kThreads, 0, s, loss, dlogprobs, region, logprobs, a, R);
  JG_CUDA_LAUNCHED("row_loss_kernel");
}

void logsoftmax_backward(void* dlogits, DType t, const float* dlogprobs, const float* logits, const float* lse,
                         const int32_t* targets, int64_t R, int64_t V, cudaStream_t s) {
  if (R == 0 || V == 0) return;
  const dim3 grid(static_cast<unsigned>((V + kThreads - 1) / kThreads), static_cast<unsigned>(R));
  JG_DISPATCH(t, T, {
    JG_LAUNCH(logsoftmax_backward_kernel<T>, grid, kThreads, 0, s, static_cast<T*>(dlogits), dlogprobs, logits, lse,
              targets, V);
  });
  JG_CUDA_LAUNCHED("logsoftmax_backward_kernel");
}

void scatter_add_rows(float* dx, const float* dsel, const int32_t* rows, int64_t R, int64_t C, cudaStream_t s) {
  if (R == 0) return;
  JG_LAUNCH(scatter_add_rows_kernel, grid_for(C, kThreads), kThreads, 0, s, dx, dsel, rows, R, C);
  JG_CUDA_LAUNCHED("scatter_add_rows_kernel");
}

}  // namespace jg::cuda
