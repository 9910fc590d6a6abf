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

// JustGRPO's clipped-ratio objective per token, with an optional k3 KL term against a reference
// (grpo_row, native/common/loss.h). region[r]: the row's ClipRegion.
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
    const GrpoRow g = grpo_row(logprob, in_.old_logprobs[r], in_.advantages[r], in_.weights[r],
                               in_.beta > 0 ? in_.ref_logprobs[r] : 0.0, in_.eps_low, in_.eps_high, in_.beta);
    region_[r] = static_cast<uint8_t>(g.region);
    *dlogprob = g.dlogprob;
    return g.loss;
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
