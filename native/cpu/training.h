// Training state on the CPU: fp32 gradients and AdamW moments in the parameters' layout, the
// training workspace, and the last rollout's kept activations (native/common/backend.h, Training).
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "../common/backend.h"
#include "../common/buffer.h"
#include "model.h"

namespace jg::cpu {

class Training final : public jg::Training {
 public:
  // With `shard`: the moments of that shard only, from the start (see shard_optimizer).
  Training(Model& model, bool checkpoint_activations, const OptimizerShard* shard = nullptr);

  void zero_grad() override { grads_zeroed_ = true; }
  double loss(bool backward, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
              const LossSpec& spec, float* logprobs, uint8_t* region) override;
  StepStats step(const AdamWOptions& o) override;
  StepStats step(const AdamWOptions& o, GradComm& comm) override;
  void shard_optimizer(const OptimizerShard& shard) override;
  const OptimizerShard* optimizer_shard() const override { return sharded_ ? &shard_ : nullptr; }
  void reduce_grads(const ParamLayout& layout, const std::function<void(float* data, int64_t n)>& reduce) override;
  int64_t step_count() const override { return step_; }
  void set_step_count(int64_t n) override { step_ = n; }
  int64_t workspace_bytes(int64_t n_tokens, int64_t n_rows) const override;

  void get_grad(float* dst, const ParamInfo& p) override;
  void set_grad(const ParamInfo& p, const float* src) override;
  void get_moment(float* dst, const ParamInfo& p, Moment which) override;
  void set_moment(const ParamInfo& p, Moment which, const float* src) override;
  void write_moment(TensorWriter& w, const ParamInfo& p, Moment which) override;
  void read_moment(const ParamInfo& p, Moment which, DType dtype, const std::string& path, int64_t offset) override;

  ForwardHook keeping_forward(double budget_bytes) override;
  int64_t kept_steps() const override;
  int64_t kept_bytes() const override { return kept_bytes_; }
  int64_t kept_rows(int64_t step) const override { return kept_[step].n_rows(); }
  double backward_kept(int64_t step, const int32_t* targets, const LossSpec& spec, float* logprobs,
                       uint8_t* region) override;
  void release_kept() override;

 private:
  float* live_grads();  // the gradients, zeroed first if zero_grad() is pending
  float* moment(Moment which) { return which == Moment::M ? m_.data() : v_.data(); }
  // ZeRO-1's step (shard_optimizer): reduce-scatter, statistics summed over the ranks, AdamW on
  // this rank's shard, all-gather of the updated weights.
  StepStats step_sharded(const AdamWOptions& o, GradComm& comm);
  // The part of parameter p inside this rank's shard: layout offsets [lo, hi), empty when lo >= hi.
  std::pair<int64_t, int64_t> owned(const ParamInfo& p) const {
    return {std::max(p.offset, shard_.begin), std::min(p.offset + p.numel, shard_.end)};
  }

  Model& model_;
  // Unsharded: the moments in the layout (layout().total() each). Sharded: the moments of the
  // shard's elements only (m_[i] is layout element shard_.begin + i), and the gradients hold
  // shard_.ranks * shard_.block elements for the reduce-scatter (zeros past the layout).
  FloatBuffer grads_, m_, v_;
  OptimizerShard shard_;
  bool sharded_ = false;
  TrainWorkspace workspace_;
  int64_t step_ = 0;            // AdamW updates done
  bool grads_zeroed_ = false;   // zero_grad() was called: the next use zeroes first (in the worker)
  // The last rollout's kept forwards: steps 0..kept_steps_-1, made under weights version
  // kept_version_; buffers stay allocated for the next rollout until release_kept().
  std::vector<KeptForward> kept_;
  int64_t kept_steps_ = 0, kept_bytes_ = 0;
  uint64_t kept_version_ = 0;
};

}  // namespace jg::cpu
