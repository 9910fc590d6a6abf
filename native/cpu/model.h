// The LLaDA model on the CPU: parameters in fp32 and the forward pass over a packed batch.
#pragma once

#include <cstdint>
#include <vector>

#include "../common/buffer.h"
#include "../common/config.h"
#include "../common/layout.h"

namespace jg::cpu {

// A packed batch: sequences one after another. seq_starts has n_seqs + 1 entries.
struct Batch {
  const int32_t* tokens;
  const int32_t* seq_starts;
  int64_t n_seqs;
  int64_t n_tokens() const { return seq_starts[n_seqs]; }
};

class Model {
 public:
  explicit Model(const ModelConfig& cfg);

  const ModelConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  int64_t n_params() const;  // excluding alignment padding

  // logits (n_rows, embedding_size) for the packed rows listed in `rows` (indices into the batch's
  // tokens); the LM head runs only for those rows.
  void forward(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows);

  // Bytes of activation memory a forward over n tokens and n_rows logits rows needs.
  int64_t forward_workspace_bytes(int64_t n_tokens, int64_t n_rows) const;

  // Frees the parameters and workspace.
  void release();

 private:
  ModelConfig cfg_;
  ParamLayout layout_;
  FloatBuffer params_;
  std::vector<float> rope_cos_, rope_sin_;

  // Activations of one layer at a time (inference keeps nothing for backward).
  FloatBuffer x_, xn_, q_, k_, v_, att_, proj_, gate_, up_, sel_;
  std::vector<int32_t> pos_;
};

}  // namespace jg::cpu
