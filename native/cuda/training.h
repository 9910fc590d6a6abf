// Training state on the GPU (native/common/backend.h, Training): fp32 gradients and AdamW moments
// on the device in the parameters' layout; in bf16 mode fp32 master weights too (the model's bf16
// weights are the copy the products read, rewritten by every step), in fp32 mode the model's
// weights are the master copy. The loss runs the forward with saves, the fused head + loss
// (loss.cu) and the backward through the layers, as cpu::Model::loss does on the CPU.
#pragma once

#include <cstdint>

#include "../common/backend.h"
#include "buffer.h"
#include "model.h"

namespace jg::cuda {

class Training final : public jg::Training {
 public:
  Training(Model& model, bool checkpoint_activations);
  ~Training() override;

  void zero_grad() override { grads_zeroed_ = true; }
  double loss(bool backward, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
              const LossSpec& spec, float* logprobs, uint8_t* region) override;
  StepStats step(const AdamWOptions& o) override;
  int64_t step_count() const override { return step_; }
  void set_step_count(int64_t n) override { step_ = n; }
  int64_t workspace_bytes(int64_t n_tokens, int64_t n_rows) const override;

  void get_grad(float* dst, const ParamInfo& p) override;
  void set_grad(const ParamInfo& p, const float* src) override;
  void get_moment(float* dst, const ParamInfo& p, Moment which) override;
  void set_moment(const ParamInfo& p, Moment which, const float* src) override;
  void write_moment(TensorWriter& w, const ParamInfo& p, Moment which) override;
  void read_moment(const ParamInfo& p, Moment which, DType dtype, const std::string& path, int64_t offset) override;

  // The rollout keep path is not on the GPU yet: rollouts run the plain forward and keep nothing,
  // so the loss phase always runs its own forward (kept_steps() is 0).
  ForwardHook keeping_forward(double budget_bytes) override;
  int64_t kept_steps() const override { return 0; }
  int64_t kept_bytes() const override { return 0; }
  int64_t kept_rows(int64_t) const override { return 0; }
  double backward_kept(int64_t step, const int32_t* targets, const LossSpec& spec, float* logprobs,
                       uint8_t* region) override;
  void release_kept() override {}

 private:
  struct Layer;  // one layer's saved activations (device pointers)
  struct Plan;   // where every tensor of one loss call lives

  // Lays out a call's tensors over `base` (null: only counts); returns the bytes.
  int64_t plan(Plan& p, char* base, int64_t N, int64_t R, bool with_grads) const;
  float* live_grads();  // zeroed first if zero_grad() is pending
  float* moment(Moment which) { return static_cast<float*>(which == Moment::M ? m_.get() : v_.get()); }
  // The fp32 weights AdamW updates: the master copy (bf16 mode, refreshed from the model's weights
  // when they changed outside step()) or the model's own weights (fp32 mode).
  float* master();
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
  DeviceBuffer grads_, m_, v_, master_, work_, inputs_, stats_;
  bool grads_zeroed_ = false;
  uint64_t master_version_ = ~uint64_t(0);  // the model's weights_version() the master copy follows
  int64_t step_ = 0;
};

}  // namespace jg::cuda
