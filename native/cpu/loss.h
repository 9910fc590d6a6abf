// Losses over the selected rows of the LM head.
#pragma once

#include <cstdint>

namespace jg::cpu {

// A loss that sees each selected row only through log p(target | row), computed over all
// embedding_size logits: the masked-diffusion cross-entropy now, GRPO's clipped-ratio objective
// next. The model computes a chunk of rows' log-probs, asks the loss for each row's value and
// derivative, and back-propagates through the log-softmax itself, so a new loss is one small class
// that never touches the V-wide rows. A loss that changes the softmax itself (leaving the mask
// token out, say) belongs in the head's log-softmax, not here.
class RowLoss {
 public:
  virtual ~RowLoss() = default;
  // Row r's contribution to the loss given its log-prob, and d(contribution)/d(logprob) in
  // *dlogprob. Called once per row, in row order, on one thread; the model sums the contributions
  // in that order in double.
  virtual double row(int64_t r, double logprob, double* dlogprob) const = 0;
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

}  // namespace jg::cpu
