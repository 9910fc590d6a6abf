// The LLaDA model on an NVIDIA GPU: parameters on the device in bf16 (or fp32, to test against the
// CPU backend), the forward pass over a packed batch with the LM head on selected rows only.
// Implements the Backend interface (native/common/backend.h); training state lives in
// cuda::Training (training.h), which runs the layers through this class's buffers and products.
#pragma once

#include <atomic>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "../common/backend.h"
#include "../common/batch.h"
#include "../common/config.h"
#include "../common/layout.h"
#include "../common/tensor_io.h"
#include "buffer.h"
#include "matmul.h"

namespace jg::cuda {

// Number of CUDA devices this process sees; 0 (and `why` says why) when there are none or no driver.
int device_count(std::string* why);
// The CUDA runtime's version (e.g. 13000), 0 when it cannot tell.
int runtime_version();

class Model final : public Backend {
 public:
  // dtype: F32 or BF16, of the weights and activations. master_weights (BF16 only): also keep fp32
  // master weights on the device from the start, so a training run loads, saves and resumes the
  // checkpoint's own fp32 values; without, a Training widens the bf16 weights into masters when it
  // is made (inference holds 2 bytes a parameter).
  Model(const ModelConfig& cfg, int device, DType dtype, bool master_weights = false);
  ~Model() override;

  // The Backend interface.
  const ModelConfig& config() const override { return cfg_; }
  const ParamLayout& layout() const override { return layout_; }
  DeviceInfo device_info() const override;
  // Tokens that went through the layers so far (identical sequences in a batch once).
  int64_t tokens_computed() const override { return tokens_computed_.load(std::memory_order_relaxed); }
  // One tensor from a safetensors file (at byte `offset`, stored as file_dtype) straight to the
  // device, in bounded chunks through pinned memory; converted on the way when the dtypes differ.
  void load_tensor(const ParamInfo& p, DType file_dtype, const std::string& path, int64_t offset) override;
  int64_t count_non_finite(const ParamInfo& p) override;  // through the host, in chunks
  void write_tensor(TensorWriter& w, const ParamInfo& p, DType dtype) override;
  void get_param(float* dst, const ParamInfo& p) override;      // to the host, as fp32
  void set_param(const ParamInfo& p, const float* src) override;  // from fp32 on the host
  // normal(0, stdev) matrices and ones for norm weights, made on the device (not the CPU's values).
  void init_random(uint64_t seed, float stdev) override;
  // The forward to the device (forward_device), copied to the host.
  void forward(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows) override;
  // out (n_rows) = log p(targets[r]) at each row with `excluded` ids' logits removed (host arrays).
  void logprobs(float* out, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
                const std::vector<int32_t>& excluded) override;
  // In decode.cpp: forward, guidance, sampling and the choice of rows on the device; only the
  // sampled rows' results (a few bytes each) come back to the host.
  void decode_step(const DecodeStep& step, DecodeStepResult& out) override;
  // Activations live on the device (DeviceBuffer says how much it wanted when the GPU is full).
  int64_t forward_workspace_bytes(int64_t, int64_t) const override { return 0; }
  std::unique_ptr<Training> make_training(bool checkpoint_activations, const OptimizerShard* shard = nullptr) override;
  // NCCL on this model's GPU and stream where it loads on every rank, else MPI through host memory
  // (nccl.cpp, make_grad_comm, says when and prints why).
  std::unique_ptr<GradComm> make_grad_comm(Communicator& world, double timeout_s) override;
  bool has_master_weights() const override { return dtype_ == DType::F32 || master_ready_; }

  // The fp32 weights training updates: the weights themselves in fp32 mode; in bf16 mode the master
  // copy, made now from the bf16 weights where the model has none yet. Loading, setting and
  // initialising keep it and the bf16 weights in step; AdamW writes both.
  float* master();

  DType dtype() const { return dtype_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  // d_logits (n_rows, embedding_size) fp32 on the device, for the packed rows `rows` (host array).
  // Identical sequences of the batch are computed once (share_duplicates).
  void forward_device(float* d_logits, const Batch& batch, const int32_t* rows, int64_t n_rows);

  // Device scratch of at least n floats for callers' logits (the decoder's), owned by the model.
  float* logits_scratch(int64_t n);
  void synchronize();
  void release();

 private:
  friend class Training;
  void* param(int64_t offset) const;  // device address of the element at a layout offset
  // The batch to run: `batch` itself, or its distinct sequences in shared_ (rows remapped).
  Batch distinct(const Batch& batch, const int32_t*& rows, int64_t n_rows);
  void upload_batch(const Batch& batch, const int32_t* rows, int64_t n_rows);
  void run_layers(const Batch& batch);  // fills x_ (N,d) with the final residual stream
  void head(float* d_logits, const int32_t* d_rows, int64_t n_rows);  // ln_f and the LM head at rows
  // out (N, ldo) = inp (N,C) through weight matrices side by side: parts are (layout offset, output
  // rows); one GEMM when they lie back to back in the weights, else one per part.
  struct Part {
    int64_t offset, rows;
  };
  void project(void* out, int64_t ldo, const void* inp, int64_t N, int64_t C, std::initializer_list<Part> parts);

  ModelConfig cfg_;
  ParamLayout layout_;
  int device_;
  DType dtype_;
  int esize_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Blas> blas_;
  DeviceBuffer weights_, rope_;
  DeviceBuffer master_;        // (bf16 mode) fp32 master weights, when master_ready_
  bool master_ready_ = false;
  // Copies n fp32 values on the device into the master copy at a layout offset (no-op without one).
  void to_master(int64_t offset, const float* dev_f32, int64_t n);
  // Activations, grown to the largest batch: x (N,d) fp32; xn (N,d); qkv (N, d + 2 kv); att (N,d);
  // gu (N, 2 mlp); act (N, mlp); sel (R,d) fp32; seln (R,d); ints: tokens, starts, pos, rows.
  DeviceBuffer x_, xn_, qkv_, att_, gu_, act_, sel_, seln_, ints_, logits_, staging_, targets_;
  void* pinned_ = nullptr;  // host staging for weight transfers
  int64_t max_len_ = 0;     // longest sequence of the uploaded batch
  SharedBatch shared_;
  std::atomic<int64_t> tokens_computed_{0};  // read from the JS thread while a worker runs
  // decode_step's device state and its host copies of the results.
  DeviceBuffer d_excluded_, d_keys_, d_early_, d_row_begin_, d_sched_, d_samples_, d_commit_, d_k_;
};

}  // namespace jg::cuda
