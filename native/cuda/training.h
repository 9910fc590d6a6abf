// Training state on the GPU (native/common/backend.h, Training): fp32 gradients and AdamW moments
// on the device in the parameters' layout. AdamW updates the model's fp32 master weights
// (Model::master(): in bf16 mode beside the bf16 weights the products read, which every step
// rewrites; in fp32 mode the weights themselves). The loss runs the forward with saves, the fused head + loss
// (loss.cu) and the backward through the layers, as cpu::Model::loss does on the CPU; a rollout can
// keep its steps' activations on the device so the loss runs backward through them.
//
// Unlike the CPU, every layer runs on every token (no per-token first layer, no rows-only last
// layer): the same values to rounding, and one code path for the GEMMs that dominate on a GPU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "../common/backend.h"
#include "buffer.h"
#include "model.h"

namespace jg::cuda {

class Training final : public jg::Training {
 public:
  // With `shard`: the moments of that shard only, from the start (see shard_optimizer).
  Training(Model& model, bool checkpoint_activations, const OptimizerShard* shard = nullptr);
  ~Training() override;

  void zero_grad() override { grads_zeroed_ = true; }
  double loss(bool backward, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
              const LossSpec& spec, float* logprobs, uint8_t* region) override;
  StepStats step(const AdamWOptions& o) override;
  StepStats step(const AdamWOptions& o, GradComm& comm) override;
  void shard_optimizer(const OptimizerShard& shard) override;
  const OptimizerShard* optimizer_shard() const override { return sharded_ ? &shard_ : nullptr; }
  int64_t step_count() const override { return step_; }
  void set_step_count(int64_t n) override { step_ = n; }
  int64_t workspace_bytes(int64_t n_tokens, int64_t n_rows) const override;

  void get_grad(float* dst, const ParamInfo& p) override;
  void set_grad(const ParamInfo& p, const float* src) override;
  void get_moment(float* dst, const ParamInfo& p, Moment which) override;
  void set_moment(const ParamInfo& p, Moment which, const float* src) override;
  void write_moment(TensorWriter& w, const ParamInfo& p, Moment which) override;
  void read_moment(const ParamInfo& p, Moment which, DType dtype, const std::string& path, int64_t offset) override;

  // Rollouts that keep their activations on the device (see jg::Training); the hook takes device
  // logits, as this backend's decode_step hands them.
  ForwardHook keeping_forward(double budget_bytes) override;
  int64_t kept_steps() const override;
  int64_t kept_bytes() const override { return kept_bytes_; }
  int64_t kept_rows(int64_t step) const override { return static_cast<int64_t>(kept_[step].rows.size()); }
  double backward_kept(int64_t step, const int32_t* targets, const LossSpec& spec, float* logprobs,
                       uint8_t* region) override;
  void release_kept() override;

 private:
  struct Layer;  // one layer's saved activations (device pointers)
  struct Plan;   // where every tensor of one loss call lives

  // A rollout step kept for the loss: the distinct batch it ran and its saved activations.
  struct Kept {
    DeviceBuffer saved;
    std::vector<int32_t> tokens, starts, rows;
    void release() {
      saved.release();
      tokens = {};
      starts = {};
      rows = {};
    }
  };

  // Lays out a call's tensors: what backward reads in `saved`, the rest in `scratch` (null bases:
  // only counts).
  void plan(Plan& p, char* saved, char* scratch, int64_t N, int64_t R, bool with_grads, bool checkpoint,
            int64_t* saved_bytes, int64_t* scratch_bytes) const;
  // plan() over the device: saved activations in `saved` (a kept step's), or with work_ when null.
  void lay_out(Plan& p, DeviceBuffer* saved, const Batch& batch, int64_t R, bool with_grads, bool checkpoint);
  // The embedding, the layers and the gather of the rows into p.sel.
  void train_forward(const Plan& p);
  // The head's loss and the backward from it down to the embedding; gradients +=.
  double train_backward(const Plan& p, const int32_t* targets, const LossSpec& spec, float* logprobs, uint8_t* region);
  // Returns the bytes of activations it kept.
  int64_t forward_keep(Kept& k, float* d_logits, const Batch& batch, const int32_t* rows, int64_t R);
  int64_t kept_step_bytes(int64_t n_tokens, int64_t n_rows) const;
  float* live_grads();  // zeroed first if zero_grad() is pending
  float* moment(Moment which) { return static_cast<float*>(which == Moment::M ? m_.get() : v_.get()); }
  // ZeRO-1's step over host-memory collectives (shard_optimizer): the gradients staged through the
  // host for the reduce-scatter, statistics summed over the ranks, AdamW on this rank's shard, the
  // fp32 weights staged through the host for the all-gather, then the bf16 copy rewritten.
  StepStats step_sharded(const AdamWOptions& o, GradComm& comm);
  // The part of parameter p inside this rank's shard: layout offsets [lo, hi), empty when lo >= hi.
  std::pair<int64_t, int64_t> owned(const ParamInfo& p) const {
    return {std::max(p.offset, shard_.begin), std::min(p.offset + p.numel, shard_.end)};
  }
  // The fp32 weights AdamW updates: the model's master copy (Model::master()).
  float* master() { return model_.master(); }
  void layer_forward(const Layer& a, float* x_out, const LayerParams& L, const Plan& p);
  void layer_backward(float* dx, const Layer& a, const LayerParams& L, const Plan& p);
  // d(inp) (N,C) += dout @ W and dW += dout^T inp for weight matrices side by side (as Model::project).
  void project_backward(float* dinp, const void* dout, int64_t ldd, const void* inp, int64_t N, int64_t C,
                        std::initializer_list<Model::Part> parts);
  // dout (N,C) fp32 as the products' input dtype: itself in fp32, a rounded copy in `scratch` in bf16.
  const void* as_act(const float* dout, int64_t n, void* scratch);
  double head_loss(bool backward, const Plan& p, int64_t R, const int32_t* targets, const LossSpec& spec, float* logprobs, uint8_t* region);

  Model& model_;
  bool checkpoint_;
  // Unsharded: the moments in the layout (layout().total() floats each). Sharded: the moments of
  // the shard's elements only (m_[i] is layout element shard_.begin + i); host_ stages the sharded
  // step's collectives (shard_.ranks * shard_.block floats).
  DeviceBuffer grads_, m_, v_, work_, inputs_, stats_;
  OptimizerShard shard_;
  bool sharded_ = false;
  std::vector<float> host_;
  bool grads_zeroed_ = false;
  int64_t step_ = 0;
  // The last rollout's kept steps 0..kept_steps_-1, made under weights version kept_version_;
  // buffers stay allocated for the next rollout until release_kept().
  std::vector<Kept> kept_;
  int64_t kept_steps_ = 0, kept_bytes_ = 0;
  uint64_t kept_version_ = 0;
};

}  // namespace jg::cuda
