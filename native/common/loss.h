// The losses a backend computes over selected rows of the LM head, described as data: each
// backend builds its own implementation (the CPU's RowLoss in native/cpu/loss.h).
#pragma once

#include <cstdint>
#include <vector>

namespace jg {

// Where a row of the GRPO objective landed: the clipped term was the minimum (and differed), below
// 1 - eps_low with A < 0 or above 1 + eps_high with A > 0; the clipped rows pass no ratio gradient.
enum class ClipRegion : uint8_t { UNCLIPPED = 0, LOW = 1, HIGH = 2 };

struct LossSpec {
  enum class Kind {
    CROSS_ENTROPY,  // sum_r weights[r] * -log p(targets[r] | row r): the masked-diffusion SFT loss
    GRPO,           // JustGRPO's clipped-ratio objective per row, with an optional k3 KL term
  };
  Kind kind = Kind::CROSS_ENTROPY;
  const float* weights = nullptr;  // (n_rows)
  // GRPO: ratio = exp(logp - old); loss_r = w_r * (-min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A)
  // + beta (exp(ref - logp) - (ref - logp) - 1)).
  const float* old_logprobs = nullptr;  // (n_rows) the sampler's log p
  const float* advantages = nullptr;    // (n_rows)
  const float* ref_logprobs = nullptr;  // (n_rows), or null when beta = 0
  double eps_low = 0.2, eps_high = 0.2, beta = 0;
  // Ids given probability zero: their logits are set to -inf before the log-softmax, so the
  // distribution is renormalised over the rest (the policy excludes the mask token, as the sampler
  // does). Targets are never among them.
  std::vector<int32_t> excluded;
};

}  // namespace jg
