// The backend interface: one model's parameters and kernels on one device, as the engine
// (native/addon), the decode loop (decode.cpp) and the trainer call them. cpu::Model
// (native/cpu/model.h) and cuda::Model (native/cuda/model.h) implement it; the binding picks one
// at load and never looks past this interface.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "batch.h"
#include "check.h"
#include "config.h"
#include "decode.h"
#include "layout.h"
#include "loss.h"
#include "tensor_io.h"

namespace jg {

class Communicator;  // comm.h

// torch.optim.AdamW's hyper-parameters, with the gradient handling of one step.
struct AdamWOptions {
  double lr, beta1, beta2, eps;
  double weight_decay;    // decoupled, on the 2-D weight matrices only, never the RMSNorm weights
  double max_grad_norm;   // 0 or infinity: no clipping
  bool skip_non_finite;   // drop the whole update when any gradient is non-finite
};

struct StepStats {
  double grad_norm = 0;    // global L2 norm after non-finite values were zeroed, before clipping
  int64_t non_finite = 0;  // gradient elements that were NaN or infinite (zeroed)
  bool clipped = false, skipped = false;
};

// An optimizer step's decisions from the gradients' non-finite count and sum of squares (taken after
// the non-finite values were zeroed; summed over the ranks under data parallelism): with
// skip_non_finite and any non-finite value, out.skipped (the whole update is dropped); else
// out.grad_norm, and the factor the gradients are scaled by before AdamW: max_grad_norm /
// (norm + 1e-6) when that is below 1 (out.clipped, as torch.nn.utils.clip_grad_norm_), else 1.
inline double step_decision(const AdamWOptions& o, int64_t non_finite, double sumsq, StepStats& out) {
  out.non_finite = non_finite;
  if (o.skip_non_finite && non_finite > 0) {
    out.skipped = true;
    return 1.0;
  }
  out.grad_norm = std::sqrt(sumsq);
  if (o.max_grad_norm > 0 && std::isfinite(o.max_grad_norm)) {
    const double coef = o.max_grad_norm / (out.grad_norm + 1e-6);
    if (coef < 1.0) {
      out.clipped = true;
      return coef;
    }
  }
  return 1.0;
}

// Which AdamW moment: first (exp_avg) or second (exp_avg_sq).
enum class Moment { M, V };

// Where a backend runs, for `deviceInfo()` and `justgrpo info`.
struct DeviceInfo {
  std::string backend;  // "cpu", "cuda"
  std::string name;     // the device's name
  std::string dtype;    // weights and activations: "F32", "BF16"
  int64_t device = 0;
  double total_memory = 0;         // bytes; 0 where not known
  std::string compute_capability;  // CUDA only
};

// Bytes a model holds for its weights, by copy (the memory plan: `memoryBytes()` in JS). Counted
// from the buffers' sizes, so they are what the model allocated, whether or not touched yet.
struct MemoryReport {
  int64_t weights_fp32 = 0;  // fp32 weights: the master copy, or on a bf16-only model the norm weights
  int64_t weights_bf16 = 0;  // bf16 copies of the weight matrices
  int64_t workspace = 0;     // inference activations and scratch held now (they grow to the largest call)
};

// Data parallelism's collectives as a Training step calls them; every rank calls each in the same
// order, and a failure (a time-out naming the rank that did not answer) throws. The MPI one
// (native/common/comm.h, MpiGradComm) works on host memory; NCCL's (native/cuda/nccl.h) on the
// backend's device memory, on its stream: on_device() says which memory the float pointers are in.
class GradComm {
 public:
  virtual ~GradComm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual bool on_device() const = 0;
  // What runs the collectives, for logs: "Open MPI v4.1.4 (libmpi.so.40)", "NCCL 2.21.5".
  virtual std::string name() const = 0;
  // n floats summed over ranks, in place.
  virtual void all_reduce_sum(float* data, int64_t n) = 0;
  // data holds size() blocks of `block` floats; afterwards block rank() holds the sum over ranks of
  // every rank's block rank(); the other blocks are left undefined.
  virtual void reduce_scatter_sum(float* data, int64_t block) = 0;
  // data holds size() blocks of `block_bytes` bytes; afterwards every rank holds every rank's own
  // block (rank r's block r), in place.
  virtual void all_gather(void* data, int64_t block_bytes) = 0;
  // Host doubles summed over ranks (a step's statistics: non-finite counts, sums of squares).
  virtual void all_reduce_host(double* data, int64_t n) = 0;
};

// One process's collectives: every one leaves the data as it is (rank 0 of 1 holds every block).
// A sharded Training's plain step(o) runs its sharded step over it.
class LocalGradComm final : public GradComm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  bool on_device() const override { return false; }
  std::string name() const override { return "one process"; }
  void all_reduce_sum(float*, int64_t) override {}
  void reduce_scatter_sum(float*, int64_t) override {}
  void all_gather(void*, int64_t) override {}
  void all_reduce_host(double*, int64_t) override {}
};

// ZeRO-1 (optimizer-state sharding): rank r of n owns the AdamW state of the layout's flat
// elements [begin, end). Blocks are equal, `block` = ceil(total / n) rounded up to a multiple of 64
// elements (so fp32 and bf16 blocks start aligned), the last ones shorter or empty; gradient
// buffers that are reduce-scattered hold n * block elements.
struct OptimizerShard {
  int64_t begin = 0, end = 0, block = 0;
  int rank = 0, ranks = 1;
  static OptimizerShard of(int64_t total, int rank, int ranks) {
    OptimizerShard s;
    s.rank = rank;
    s.ranks = ranks;
    s.block = ((total + ranks - 1) / ranks + 63) / 64 * 64;
    s.begin = std::min(total, s.block * rank);
    s.end = std::min(total, s.begin + s.block);
    return s;
  }
  // Throws unless this is of(total, rank, ranks) for a layout of `total` elements.
  void check(int64_t total) const {
    JG_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "Expected a rank in [0, ", ranks, ") of at least one rank but received rank ",
             rank, " of ", ranks);
    const OptimizerShard want = of(total, rank, ranks);
    JG_CHECK(begin == want.begin && end == want.end && block == want.block, "The optimizer shard [", begin, ", ", end,
             ") of block ", block, " is not OptimizerShard::of(", total, ", ", rank, ", ", ranks, ")");
  }
  // That a sharded step runs with the ranks the shard was made for.
  void check_ranks(const GradComm& comm) const {
    JG_CHECK_AS(ErrorKind::INTERNAL, comm.size() == ranks && comm.rank() == rank, "The optimizer shard is rank ", rank,
                " of ", ranks, " but the step runs as rank ", comm.rank(), " of ", comm.size());
  }
};

// Gradients, optimizer state and training workspace for one Backend's parameters; made by
// Backend::make_training. Gradients accumulate (+=) across loss calls until zero_grad().
class Training {
 public:
  virtual ~Training() = default;

  // O(1): the next call that uses the gradients zeroes them first.
  virtual void zero_grad() = 0;
  // The loss over `rows` of a packed batch (LM head on those rows only) with each row's log-prob in
  // logprobs (n_rows) and, for GRPO, its ClipRegion in region (n_rows). With `backward`, gradients
  // += d loss / d params; without, nothing is kept and the loss is bit-identical. Inputs were checked.
  virtual double loss(bool backward, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
                      const LossSpec& spec, float* logprobs, uint8_t* region) = 0;
  // Non-finite gradients zeroed and counted, global-norm clipping, then AdamW on every parameter.
  virtual StepStats step(const AdamWOptions& o) = 0;
  // Data parallelism: `reduce` (an all-reduce sum across ranks) applied in place to the gradients,
  // between the last backward and step(). This default goes parameter by parameter through host
  // copies, so any backend has it; a backend whose gradients are one host buffer hands it over whole.
  virtual void reduce_grads(const ParamLayout& layout, const std::function<void(float* data, int64_t n)>& reduce) {
    for (const ParamInfo& p : layout.params()) {
      std::vector<float> g(static_cast<size_t>(p.numel));
      get_grad(g.data(), p);
      reduce(g.data(), p.numel);
      set_grad(p, g.data());
    }
  }
  // Data parallelism's step: the gradients summed over comm's ranks, then step(o)'s work with
  // global statistics (non-finite count, norm), so every rank applies the same update. With a
  // sharded optimizer (shard_optimizer): a reduce-scatter of the gradients, AdamW on this rank's
  // shard, and an all-gather of the updated weights.
  virtual StepStats step(const AdamWOptions& o, GradComm& comm) = 0;
  // ZeRO-1: from now on keep the AdamW moments (and fp32 master weights, where the model holds
  // bf16 weights for its products) for `shard`'s elements only. The moments of a fresh Training
  // are zeros, so this is called once before the first step or a load of the moments; get_moment,
  // set_moment, write_moment and read_moment then see zeros outside the shard and ignore writes
  // there (checkpoints gather the shards: lib/train/session.ts). After a sharded step the
  // gradients outside this rank's shard are undefined (the reduce-scatter leaves them so). A step
  // without a communicator runs only on a shard of one rank (over LocalGradComm). Throws
  // UNSUPPORTED where the backend has no sharded step.
  virtual void shard_optimizer(const OptimizerShard& shard) {
    (void)shard;
    JG_FAIL(ErrorKind::UNSUPPORTED, "This backend cannot shard its optimizer state");
  }
  // The shard set by shard_optimizer, or null when this rank holds the whole optimizer state.
  virtual const OptimizerShard* optimizer_shard() const { return nullptr; }
  // AdamW updates done; the next uses step_count() + 1 for bias correction.
  virtual int64_t step_count() const = 0;
  virtual void set_step_count(int64_t n) = 0;
  // Bytes of workspace a loss with gradients needs for this shape, beyond the gradients and moments.
  virtual int64_t workspace_bytes(int64_t n_tokens, int64_t n_rows) const = 0;

  // One parameter's gradient or moment, to and from fp32 host memory and files.
  virtual void get_grad(float* dst, const ParamInfo& p) = 0;
  virtual void set_grad(const ParamInfo& p, const float* src) = 0;
  virtual void get_moment(float* dst, const ParamInfo& p, Moment which) = 0;
  virtual void set_moment(const ParamInfo& p, Moment which, const float* src) = 0;
  virtual void write_moment(TensorWriter& w, const ParamInfo& p, Moment which) = 0;
  virtual void read_moment(const ParamInfo& p, Moment which, DType dtype, const std::string& path, int64_t offset) = 0;

  // Rollouts that keep their activations: JustGRPO's rollout feeds the learner's exact inputs under
  // the learner's weights, so with one update per rollout the loss can back-propagate through the
  // rollout's own activations instead of running the forward again. keeping_forward(budget) is the
  // ForwardHook a rollout decodes with: it keeps steps 0, 1, ... while their total stays within
  // budget bytes (and the machine can hold them), and runs the plain forward after that.
  virtual ForwardHook keeping_forward(double budget_bytes) = 0;
  // Steps of the last rollout kept (0 once the weights have changed since), their bytes, and the
  // number of rows of one kept step.
  virtual int64_t kept_steps() const = 0;
  virtual int64_t kept_bytes() const = 0;
  virtual int64_t kept_rows(int64_t step) const = 0;
  // loss(true, ...) on kept step `step`'s batch and rows (targets, the spec's arrays: one per row).
  virtual double backward_kept(int64_t step, const int32_t* targets, const LossSpec& spec, float* logprobs,
                               uint8_t* region) = 0;
  virtual void release_kept() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const ParamLayout& layout() const = 0;
  virtual DeviceInfo device_info() const = 0;
  // Parameters, excluding alignment padding.
  int64_t n_params() const {
    int64_t n = 0;
    for (const ParamInfo& p : layout().params()) n += p.numel;
    return n;
  }
  // Tokens that went through the layers since the model was made (identical sequences in a batch
  // once), so the difference across a call is the work it did.
  virtual int64_t tokens_computed() const = 0;

  // Parameters, as fp32 on the host side. load_tensor reads one tensor stored as `file_dtype` at
  // byte `offset` of a safetensors file whose header lib/safetensors.ts validated.
  virtual void load_tensor(const ParamInfo& p, DType file_dtype, const std::string& path, int64_t offset) = 0;
  // NaN and infinite values of one parameter (checked after loading: such weights load without
  // complaint and make every logit they touch NaN).
  virtual int64_t count_non_finite(const ParamInfo& p) = 0;
  virtual void write_tensor(TensorWriter& w, const ParamInfo& p, DType dtype) = 0;
  virtual void get_param(float* dst, const ParamInfo& p) = 0;
  virtual void set_param(const ParamInfo& p, const float* src) = 0;
  // normal(0, stdev) matrices and ones for norm weights, deterministic per seed (per backend).
  virtual void init_random(uint64_t seed, float stdev) = 0;

  // logits (n_rows, embedding_size) on the host for the packed rows `rows`; the LM head runs only there.
  virtual void forward(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows) = 0;
  // out (n_rows) = log p(targets[r]) at each row with the `excluded` ids removed; forward only.
  virtual void logprobs(float* out, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
                        const std::vector<int32_t>& excluded) = 0;
  // One step of decoding (see DecodeStep); fills `out`.
  virtual void decode_step(const DecodeStep& step, DecodeStepResult& out) = 0;
  // Bytes of host memory a forward over n_tokens with n_rows logits rows needs, checked before it runs.
  virtual int64_t forward_workspace_bytes(int64_t n_tokens, int64_t n_rows) const = 0;

  // What the model holds now; a backend that does not count its memory reports -1 everywhere.
  virtual MemoryReport memory_report() const { return {-1, -1, -1}; }

  // Whether fp32 master weights exist; false on a CPU model holding bf16 weights only, which
  // make_training gives masters (so it must not run while another call reads the weights).
  virtual bool has_master_weights() const { return true; }

  // The collectives this backend's Training runs a data-parallel step with, over MPI's world
  // communicator: by default MPI itself on host memory (MpiGradComm, defined in comm.cpp); the CUDA
  // backend's own, NCCL on its device memory bootstrapped over `world`, where NCCL can be loaded.
  // timeout_s bounds each collective.
  virtual std::unique_ptr<GradComm> make_grad_comm(Communicator& world, double timeout_s);

  // Gradients, AdamW state and workspace for this model (throws UNSUPPORTED where the backend has
  // no training yet). With `shard` (ZeRO-1) the AdamW state is that shard's from the start
  // (Training::shard_optimizer already applied), so a rank never holds the whole of it, not even
  // while the Training is made.
  virtual std::unique_ptr<Training> make_training(bool checkpoint_activations, const OptimizerShard* shard = nullptr) = 0;

  // Bumped whenever the weights change (loading, initialising, setting a tensor, an optimizer step),
  // so activations kept from a forward pass can be checked against the weights that made them.
  uint64_t weights_version() const { return weights_version_.load(); }
  void weights_changed() { weights_version_++; }

 private:
  std::atomic<uint64_t> weights_version_{0};
};

}  // namespace jg
