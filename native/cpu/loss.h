// Losses over the selected rows of the LM head.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "../common/loss.h"

namespace jg::cpu {

// A loss that sees each selected row only through log p(target | row), computed over the
// embedding_size logits less `excluded`: the masked-diffusion cross-entropy and GRPO's
// clipped-ratio objective. The model computes a chunk of rows' log-probs, asks the loss for each
// row's value and derivative, and back-propagates through the log-softmax itself, so a loss is one
// small class that never touches the V-wide rows; the head applies `excluded` to the softmax.
class RowLoss {
 public:
  virtual ~RowLoss() = default;
  // Row r's contribution to the loss given its log-prob, and d(contribution)/d(logprob) in
  // *dlogprob. Called once per row, in row order, on one thread; the model sums the contributions
  // in that order in double.
  virtual double row(int64_t r, double logprob, double* dlogprob) const = 0;

  // Token ids given probability zero: their logits are set to -inf before the log-softmax, so the
  // distribution is renormalised over the rest (the policy's distribution excludes the mask token,
  // as the sampler's does). Targets must not be among them.
  std::vector<int32_t> excluded;
};

// sum_r weights[r] * -log p(targets[r] | row r). The SFT objective puts 1 / (p_mask * response
// length * batch size) in the weights.
class CrossEntropyLoss final : public RowLoss {
 public:
  explicit CrossEntropyLoss(const float* weights) : weights_(weights) {}
  double row(int64_t r, double logprob, double* dlogprob) const override {
    const double w = weights_[r];
    *dlogprob = -w;
    return -w * logprob;
  }

 private:
  const float* weights_;  // (n_rows)
};

// JustGRPO's clipped-ratio objective per token, with an optional k3 KL term against a reference:
// ratio = exp(logp - old), loss_r = w_r * (-min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A)
// + beta (exp(ref - logp) - (ref - logp) - 1)). Where the clipped term is the minimum (and differs),
// the ratio term passes no gradient. region[r]: the row's ClipRegion.
class GrpoLoss final : public RowLoss {
 public:
  struct Inputs {
    const float* old_logprobs;  // (n_rows) the sampler's log p
    const float* advantages;    // (n_rows)
    const float* weights;       // (n_rows) 1 / gen_length / valid samples, etc.
    const float* ref_logprobs;  // (n_rows) or null when beta = 0
    double eps_low, eps_high, beta;
  };
  GrpoLoss(const Inputs& in, uint8_t* region) : in_(in), region_(region) {}

  double row(int64_t r, double logprob, double* dlogprob) const override {
    const double A = in_.advantages[r], w = in_.weights[r];
    const double ratio = std::exp(logprob - static_cast<double>(in_.old_logprobs[r]));
    const double clipped = std::min(std::max(ratio, 1.0 - in_.eps_low), 1.0 + in_.eps_high);
    const double unclipped_obj = ratio * A, clipped_obj = clipped * A;
    double loss, d;
    if (unclipped_obj <= clipped_obj) {
      loss = -w * unclipped_obj;
      d = -w * A * ratio;
      region_[r] = static_cast<uint8_t>(ClipRegion::UNCLIPPED);
    } else {
      loss = -w * clipped_obj;
      d = 0;
      region_[r] = static_cast<uint8_t>(ratio < 1.0 ? ClipRegion::LOW : ClipRegion::HIGH);
    }
    if (in_.beta > 0) {
      const double diff = static_cast<double>(in_.ref_logprobs[r]) - logprob;
      loss += w * in_.beta * (std::exp(diff) - diff - 1.0);
      d += w * in_.beta * (1.0 - std::exp(diff));
    }
    *dlogprob = d;
    return loss;
  }

 private:
  Inputs in_;
  uint8_t* region_;
};

// The RowLoss a LossSpec describes (region: the GRPO rows' ClipRegion, n_rows entries).
inline std::unique_ptr<RowLoss> make_row_loss(const LossSpec& spec, uint8_t* region) {
  std::unique_ptr<RowLoss> loss;
  if (spec.kind == LossSpec::Kind::GRPO)
    loss = std::make_unique<GrpoLoss>(GrpoLoss::Inputs{spec.old_logprobs, spec.advantages, spec.weights,
                                                       spec.ref_logprobs, spec.eps_low, spec.eps_high, spec.beta},
                                      region);
  else
    loss = std::make_unique<CrossEntropyLoss>(spec.weights);
  loss->excluded = spec.excluded;
  return loss;
}

}  // namespace jg::cpu
