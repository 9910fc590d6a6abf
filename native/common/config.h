// The model configuration the engine works with: LLaDA's config.json, already validated and
// normalised on the TypeScript side (lib/config.ts).
#pragma once

#include <cstdint>

namespace jg {

struct ModelConfig {
  int64_t d_model = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t mlp_hidden = 0;
  int64_t vocab_size = 0;      // ids a tokenizer may produce
  int64_t embedding_size = 0;  // rows of wte and of the LM head (>= vocab_size); logits span it
  int64_t max_seq_len = 0;
  int64_t mask_token_id = 0;
  double rope_theta = 0;
  double rms_norm_eps = 0;

  int64_t head_dim() const { return d_model / n_heads; }
  int64_t kv_dim() const { return n_kv_heads * head_dim(); }
};

}  // namespace jg
