#include "training.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "../common/check.h"
#include "../common/memory.h"
#include "loss.h"
#include "ops.h"

namespace jg::cpu {

std::unique_ptr<jg::Training> Model::make_training(bool checkpoint_activations, const OptimizerShard* shard) {
  // AdamW updates fp32 masters; a bf16-only model gains them from its bf16 values (exact widening).
  make_masters();
  return std::make_unique<Training>(*this, checkpoint_activations, shard);
}

Training::Training(Model& model, bool checkpoint_activations, const OptimizerShard* shard)
    : model_(model), workspace_(checkpoint_activations) {
  const int64_t total = model.layout().total();
  // Sharded: the reduce-scatter reads ranks * block gradient elements (zeros past total), and each
  // moment holds the shard's elements only.
  int64_t grads = total, moments = total;
  if (shard) {
    shard->check(total);
    grads = checked_mul(shard->block, static_cast<int64_t>(shard->ranks));
    moments = std::max<int64_t>(shard->end - shard->begin, 1);
  }
  // Checked together first: three buffers that each fit can still not fit side by side.
  check_fits(checked_mul(grads + 2 * moments, static_cast<int64_t>(sizeof(float))), "gradients and AdamW moments");
  grads_.resize(grads, "gradients");
  m_.resize(moments, "AdamW first moments");
  v_.resize(moments, "AdamW second moments");
  if (shard) {
    model_.reserve_param_slack(grads);
    shard_ = *shard;
    sharded_ = true;
  }
}

float* Training::live_grads() {
  if (grads_zeroed_) {
    std::memset(grads_.data(), 0, static_cast<size_t>(grads_.size()) * sizeof(float));
    grads_zeroed_ = false;
  }
  return grads_.data();
}

double Training::loss(bool backward, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
                      const LossSpec& spec, float* logprobs, uint8_t* region) {
  auto loss = make_row_loss(spec, region);
  return model_.loss(backward ? live_grads() : nullptr, workspace_, batch, rows, targets, n_rows, *loss, logprobs);
}

// A step after zero_grad() with no backward in between sees zero gradients: the moments decay and
// the update and weight decay still apply, as in PyTorch with zero-filled (not None) gradients.
// gradNorm is the global L2 norm after non-finite values are zeroed and before clipping (as
// torch.nn.utils.clip_grad_norm_ returns it); with max_grad_norm > 0 the gradients are scaled in
// place by max_grad_norm / (norm + 1e-6) when that is below 1, and left clipped.
StepStats Training::step(const AdamWOptions& o) {
  if (sharded_) {
    // One process holding a shard (of one rank): the sharded step with nobody to talk to.
    JG_CHECK_AS(ErrorKind::INTERNAL, shard_.ranks == 1, "A step of one rank's optimizer shard needs the other ",
                shard_.ranks - 1, " ranks: give the step a communicator");
    LocalGradComm solo;
    return step_sharded(o, solo);
  }
  StepStats out;
  // Kept activations are stale from here on, even when the update is skipped.
  model_.weights_changed();
  const int64_t total = model_.layout().total();
  float* g = live_grads();
  const int64_t non_finite = nonfinite_zero(g, total);  // before the sum of squares: it zeroes them
  const double scale = step_decision(o, non_finite, grad_sumsq(g, total), out);
  // skip_non_finite: one bad value drops the whole update (weights, moments, step count unchanged).
  if (out.skipped) return out;
  if (out.clipped) grad_scale(g, static_cast<float>(scale), total);
  step_++;
  for (const ParamInfo& p : model_.layout().params()) {
    const bool matrix = p.shape.size() == 2;
    const AdamWParams hp{o.lr, o.beta1, o.beta2, o.eps, matrix ? o.weight_decay : 0.0, step_};
    adamw_update(model_.params() + p.offset, m_.data() + p.offset, v_.data() + p.offset, g + p.offset, p.numel, hp);
  }
  model_.refresh_bf16();
  return out;
}

// Unsharded: the gradients summed over the ranks (every rank then holds the same sums), then the
// plain step, whose statistics are therefore already global.
StepStats Training::step(const AdamWOptions& o, GradComm& comm) {
  JG_CHECK_AS(ErrorKind::UNSUPPORTED, !comm.on_device(), "The CPU backend cannot run ", comm.name(), " (device memory)");
  if (sharded_) return step_sharded(o, comm);
  comm.all_reduce_sum(live_grads(), model_.layout().total());
  return step(o);
}

void Training::shard_optimizer(const OptimizerShard& shard) {
  shard.check(model_.layout().total());
  JG_CHECK(!sharded_, "The optimizer state is already sharded");
  const int64_t full = checked_mul(shard.block, static_cast<int64_t>(shard.ranks)), n = shard.end - shard.begin;
  // The gradients grow first: the reduce-scatter reads ranks * block elements (zeros past total).
  live_grads();
  grads_.grow_keep(full, "gradients");
  model_.reserve_param_slack(full);
  // The moments held so far (zeros unless set) keep their shard's part; the rest is freed.
  FloatBuffer m(std::max<int64_t>(n, 1), "AdamW first moments"), v(std::max<int64_t>(n, 1), "AdamW second moments");
  if (n > 0) {
    std::memcpy(m.data(), m_.data() + shard.begin, static_cast<size_t>(n) * sizeof(float));
    std::memcpy(v.data(), v_.data() + shard.begin, static_cast<size_t>(n) * sizeof(float));
  }
  m_ = std::move(m);
  v_ = std::move(v);
  shard_ = shard;
  sharded_ = true;
}

// ZeRO-1. After the reduce-scatter this rank holds the global gradient of its shard only, so the
// non-finite count and the sum of squares are summed over the ranks (one collective): the skip and
// clip decisions and grad_norm are then the same on every rank, and equal the unsharded step's up
// to the order of the norm's summation. Each rank updates the parameters' parts inside its shard
// (weight decay by the whole parameter's shape) and the all-gather hands every rank every part.
StepStats Training::step_sharded(const AdamWOptions& o, GradComm& comm) {
  const OptimizerShard& s = shard_;
  s.check_ranks(comm);
  StepStats out;
  model_.weights_changed();
  const int64_t total = model_.layout().total(), full = s.block * s.ranks, n = s.end - s.begin;
  float* g = live_grads();
  // Past the layout the buffer is slack that a previous step's collective may have written.
  std::memset(g + total, 0, static_cast<size_t>(full - total) * sizeof(float));
  comm.reduce_scatter_sum(g, s.block);
  float* gs = g + s.begin;
  double stats[2] = {static_cast<double>(nonfinite_zero(gs, n)), 0.0};
  stats[1] = grad_sumsq(gs, n);  // after the zeroing
  comm.all_reduce_host(stats, 2);
  const double scale = step_decision(o, static_cast<int64_t>(stats[0]), stats[1], out);
  if (out.skipped) return out;
  if (out.clipped) grad_scale(gs, static_cast<float>(scale), n);
  step_++;
  float* w = model_.params();
  for (const ParamInfo& p : model_.layout().params()) {
    const auto [lo, hi] = owned(p);
    if (lo >= hi) continue;
    const bool matrix = p.shape.size() == 2;
    const AdamWParams hp{o.lr, o.beta1, o.beta2, o.eps, matrix ? o.weight_decay : 0.0, step_};
    adamw_update(w + lo, m_.data() + (lo - s.begin), v_.data() + (lo - s.begin), g + lo, hi - lo, hp);
  }
  comm.all_gather(w, s.block * static_cast<int64_t>(sizeof(float)));
  model_.refresh_bf16();
  return out;
}

// The whole gradient buffer in one call, alignment padding included (zeros on every rank), so a
// rank that ran no backward this step (zero_grad() pending) contributes its zeros.
void Training::reduce_grads(const ParamLayout&, const std::function<void(float* data, int64_t n)>& reduce) {
  reduce(live_grads(), model_.layout().total());
}

int64_t Training::workspace_bytes(int64_t n_tokens, int64_t n_rows) const {
  return model_.train_workspace_bytes(n_tokens, n_rows, true, workspace_.checkpoint_activations());
}

void Training::get_grad(float* dst, const ParamInfo& p) {
  if (grads_zeroed_) std::memset(dst, 0, static_cast<size_t>(p.numel) * sizeof(float));
  else std::memcpy(dst, grads_.data() + p.offset, static_cast<size_t>(p.numel) * sizeof(float));
}

void Training::set_grad(const ParamInfo& p, const float* src) {
  std::memcpy(live_grads() + p.offset, src, static_cast<size_t>(p.numel) * sizeof(float));
}

// Sharded: zeros outside this rank's shard, and writes there are ignored (backend.h).
void Training::get_moment(float* dst, const ParamInfo& p, Moment which) {
  if (!sharded_) {
    std::memcpy(dst, moment(which) + p.offset, static_cast<size_t>(p.numel) * sizeof(float));
    return;
  }
  std::memset(dst, 0, static_cast<size_t>(p.numel) * sizeof(float));
  const auto [lo, hi] = owned(p);
  if (lo < hi) std::memcpy(dst + (lo - p.offset), moment(which) + (lo - shard_.begin), static_cast<size_t>(hi - lo) * sizeof(float));
}

void Training::set_moment(const ParamInfo& p, Moment which, const float* src) {
  if (!sharded_) {
    std::memcpy(moment(which) + p.offset, src, static_cast<size_t>(p.numel) * sizeof(float));
    return;
  }
  const auto [lo, hi] = owned(p);
  if (lo < hi) std::memcpy(moment(which) + (lo - shard_.begin), src + (lo - p.offset), static_cast<size_t>(hi - lo) * sizeof(float));
}

void Training::write_moment(TensorWriter& w, const ParamInfo& p, Moment which) {
  if (!sharded_) {
    w.write_tensor(moment(which) + p.offset, p.numel, DType::F32);
    return;
  }
  std::vector<float> whole(static_cast<size_t>(p.numel));
  get_moment(whole.data(), p, which);
  w.write_tensor(whole.data(), p.numel, DType::F32);
}

// Sharded: only the shard's part of the tensor is read from the file.
void Training::read_moment(const ParamInfo& p, Moment which, DType dtype, const std::string& path, int64_t offset) {
  if (!sharded_) {
    read_tensor(moment(which) + p.offset, p.numel, dtype, path, offset, p.name);
    return;
  }
  const auto [lo, hi] = owned(p);
  if (lo < hi)
    read_tensor(moment(which) + (lo - shard_.begin), hi - lo, dtype, path, offset + (lo - p.offset) * dtype_size(dtype), p.name);
}

ForwardHook Training::keeping_forward(double budget) {
  // Runs in the worker with the engine claimed, so nothing else touches the kept state.
  return [this, budget](float* logits, const Batch& b, const int32_t* rows, int64_t R, int64_t step) {
    if (step == 0) {
      kept_steps_ = 0;
      kept_bytes_ = 0;
      kept_version_ = model_.weights_version();
    }
    if (step == kept_steps_) {
      const int64_t need = model_.kept_bytes(b.n_tokens(), R);
      if (static_cast<double>(kept_bytes_ + need) <= budget) {
        if (static_cast<int64_t>(kept_.size()) <= step) kept_.resize(step + 1);
        try {
          model_.forward_keep(kept_[step], workspace_, logits, b, rows, R);
          kept_steps_ = step + 1;
          // Less than `need` when identical sequences were kept once.
          kept_bytes_ += model_.kept_bytes(kept_[step].n_tokens(), R);
          return;
        } catch (const OutOfMemoryError&) {
          // The machine cannot hold this step's activations (forward_keep allocates before it
          // computes anything): keep the steps so far and run the rest as plain forwards.
          kept_[step].release();
        }
      }
    }
    model_.forward(logits, b, rows, R);
  };
}

int64_t Training::kept_steps() const { return kept_version_ == model_.weights_version() ? kept_steps_ : 0; }

double Training::backward_kept(int64_t step, const int32_t* targets, const LossSpec& spec, float* logprobs,
                               uint8_t* region) {
  auto loss = make_row_loss(spec, region);
  return model_.backward_kept(live_grads(), kept_[step], workspace_, targets, *loss, logprobs);
}

void Training::release_kept() {
  for (KeptForward& k : kept_) k.release();
  kept_.clear();
  kept_steps_ = 0;
  kept_bytes_ = 0;
}

}  // namespace jg::cpu
