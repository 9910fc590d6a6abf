// The fused LM-head loss of GPU training: log-softmax over the vocabulary with the excluded ids
// removed, the row losses (SFT cross-entropy, JustGRPO's clipped ratio with k3 KL) and their
// derivative, and the log-softmax backward that feeds the head's GEMMs; plus the rows' scatter back
// into the residual stream. The same arithmetic as native/cpu/loss.h and logsoftmax.cpp. Pointers
// are device pointers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common/tensor_io.h"

namespace jg::cuda {

// The per-row loss of a LossSpec, its arrays on the device (one entry per row).
struct RowLossArgs {
  bool grpo = false;                    // else the cross-entropy sum_r weights[r] * -logp
  const float* weights = nullptr;       // (R)
  const float* old_logprobs = nullptr;  // (R) GRPO
  const float* advantages = nullptr;    // (R) GRPO
  const float* ref_logprobs = nullptr;  // (R) GRPO with beta > 0
  double eps_low = 0.2, eps_high = 0.2, beta = 0;
};

// logits (R,V) fp32: the excluded ids' logits set to -inf in place, then lse (R) and logprobs (R) =
// logits[r, targets[r]] - lse[r] (max and sum of exponentials per row, the sum in double).
void logsoftmax_forward(float* logprobs, float* lse, float* logits, const int32_t* targets, int64_t R, int64_t V,
                        const int32_t* excluded, int n_excluded, cudaStream_t s);

// loss (R) double, dlogprobs (R), region (R) ClipRegion (GRPO only; may be null for cross-entropy),
// from logprobs (R): native/cpu/loss.h's RowLoss::row for each row, in double.
void row_loss(double* loss, float* dlogprobs, uint8_t* region, const float* logprobs, const RowLossArgs& a, int64_t R,
              cudaStream_t s);

// dlogits (R,V) of dtype t = dlogprobs[r] * (onehot(targets[r]) - exp(logits - lse[r])); logits
// (R,V) fp32 (the excluded ids at -inf get 0). dlogits may alias logits when t is F32.
void logsoftmax_backward(void* dlogits, DType t, const float* dlogprobs, const float* logits, const float* lse,
                         const int32_t* targets, int64_t R, int64_t V, cudaStream_t s);

// dx (N,C) += dsel (R,C) at rows (R); repeated rows add up in row order (deterministic).
void scatter_add_rows(float* dx, const float* dsel, const int32_t* rows, int64_t R, int64_t C, cudaStream_t s);

}  // namespace jg::cuda
