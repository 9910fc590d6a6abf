// The LLaDA model on an NVIDIA GPU: parameters on the device in bf16 (or fp32, to test against the
// CPU backend), the forward pass over a packed batch with the LM head on selected rows only.
// Inference only (training on the GPU is CUDA part 2).
#pragma once

#include <atomic>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "../common/config.h"
#include "../common/layout.h"
#include "../common/tensor_io.h"
#include "buffer.h"
#include "matmul.h"

namespace jg::cuda {

// A packed batch on the host: sequences one after another, seq_starts has n_seqs + 1 entries.
struct Batch {
  const int32_t* tokens;
  const int32_t* seq_starts;
  int64_t n_seqs;
  int64_t n_tokens() const { return seq_starts[n_seqs]; }
};

// Number of CUDA devices this process sees; 0 (and `why` says why) when there are none or no driver.
int device_count(std::string* why);

class Model {
 public:
  // dtype: F32 or BF16, of the weights and activations.
  Model(const ModelConfig& cfg, int device, DType dtype);
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }
  DType dtype() const { return dtype_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  int64_t n_params() const;
  // Tokens that went through the layers so far (no sharing of identical sequences here yet).
  int64_t tokens_computed() const { return tokens_computed_.load(std::memory_order_relaxed); }

  // One tensor from a safetensors file (at byte `offset`, stored as file_dtype) straight to the
  // device, in bounded chunks through pinned memory; converted on the way when the dtypes differ.
  void load_tensor(const ParamInfo& p, DType file_dtype, const std::string& path, int64_t offset);
  void get_param(float* dst, const ParamInfo& p);      // to the host, as fp32
  void set_param(const ParamInfo& p, const float* src);  // from fp32 on the host
  // normal(0, stdev) matrices and ones for norm weights, made on the device (not the CPU's values).
  void init_random(uint64_t seed, float stdev);

  // d_logits (n_rows, embedding_size) fp32 on the device, for the packed rows `rows` (host array).
  void forward_device(float* d_logits, const Batch& batch, const int32_t* rows, int64_t n_rows);
  // The same, copied to the host.
  void forward(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows);
  // out (n_rows) = log p(targets[r]) at each row with `excluded` ids' logits removed (host arrays).
  void logprobs(float* out, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
                const std::vector<int32_t>& excluded);

  // Device scratch of at least n floats for callers' logits (the decoder's), owned by the model.
  float* logits_scratch(int64_t n);
  void synchronize();
  void release();

 private:
  void* param(int64_t offset) const;  // device address of the element at a layout offset
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
  // Activations, grown to the largest batch: x (N,d) fp32; xn (N,d); qkv (N, d + 2 kv); att (N,d);
  // gu (N, 2 mlp); act (N, mlp); sel (R,d) fp32; seln (R,d); ints: tokens, starts, pos, rows.
  DeviceBuffer x_, xn_, qkv_, att_, gu_, act_, sel_, seln_, ints_, logits_, staging_, targets_;
  void* pinned_ = nullptr;  // host staging for weight transfers
  int64_t max_len_ = 0;     // longest sequence of the uploaded batch
  int64_t n_tokens_ = 0, n_seqs_ = 0;
  std::atomic<int64_t> tokens_computed_{0};  // read from the JS thread while a worker runs
};

}  // namespace jg::cuda
