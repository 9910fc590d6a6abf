// The losses a backend computes over selected rows of the LM head, described as data: each
// backend builds its own implementation (the CPU's RowLoss in native/cpu/loss.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "hostdevice.h"

namespace jg {

// The LM head's logits are computed for this many floats' worth of rows at a time (64 MiB), by
// every backend: with LLaDA-8B's 126464 columns that is 132 rows, so the head's GEMMs read the 2 GB
// weight once per 132 rows rather than once per row, and [rows, vocab] is never held for all rows.
inline constexpr int64_t kHeadChunkFloats = int64_t(1) << 24;

// Where a row of the GRPO objective landed: the clipped term was the minimum (and differed), below
// 1 - eps_low with A < 0 or above 1 + eps_high with A > 0; the clipped rows pass no ratio gradient.
enum class ClipRegion : uint8_t { UNCLIPPED = 0, LOW = 1, HIGH = 2 };

// One row of the GRPO objective given the row's log-prob: its loss, d loss / d logprob and where it
// landed. ratio = exp(logprob - old); loss = w (-min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A)
// + beta (exp(ref - logprob) - (ref - logprob) - 1)); where the clipped term is the minimum (and
// differs) the ratio term passes no gradient. In double; written once for the CPU's GrpoLoss and the
// CUDA row-loss kernel.
struct GrpoRow {
  double loss, dlogprob;
  ClipRegion region;
};
JG_HOST_DEVICE inline GrpoRow grpo_row(double logprob, double old_logprob, double A, double w, double ref_logprob,
                                       double eps_low, double eps_high, double beta) {
  const double ratio = exp(logprob - old_logprob);
  // clip(ratio, lo, hi) as std::min(std::max(ratio, lo), hi) computes it (a NaN ratio stays NaN).
  const double lo = 1.0 - eps_low, hi = 1.0 + eps_high;
  const double above = ratio < lo ? lo : ratio;
  const double clipped = hi < above ? hi : above;
  const double unclipped_obj = ratio * A, clipped_obj = clipped * A;
  GrpoRow out;
  if (unclipped_obj <= clipped_obj) {
    out = {-w * unclipped_obj, -w * A * ratio, ClipRegion::UNCLIPPED};
  } else {
    out = {-w * clipped_obj, 0.0, ratio < 1.0 ? ClipRegion::LOW : ClipRegion::HIGH};
  }
  if (beta > 0) {
    const double diff = ref_logprob - logprob;
    out.loss += w * beta * (exp(diff) - diff - 1.0);
    out.dlogprob += w * beta * (1.0 - exp(diff));
  }
  return out;
}

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
