#include "validate.h"

#include <cmath>

#include "check.h"

namespace jg {

void check_model_config(const ModelConfig& c) {
  JG_CHECK(c.d_model > 0 && c.n_layers >= 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.mlp_hidden > 0,
           "Model sizes must be positive");
  // Token ids and offsets are int32 at the boundary, and the layout multiplies sizes in int64.
  constexpr int64_t kMaxDim = int64_t(1) << 31, kMaxLayers = int64_t(1) << 16;
  JG_CHECK(c.d_model < kMaxDim && c.mlp_hidden < kMaxDim && c.vocab_size < kMaxDim && c.embedding_size < kMaxDim &&
               c.max_seq_len < kMaxDim && c.n_layers < kMaxLayers,
           "Model sizes must be below 2^31 (and n_layers below 65536)");
  JG_CHECK(c.d_model % c.n_heads == 0, "d_model must be divisible by n_heads");
  JG_CHECK(c.n_heads % c.n_kv_heads == 0, "n_heads must be divisible by n_kv_heads");
  JG_CHECK(c.head_dim() % 2 == 0, "The head dimension must be even for RoPE");
  JG_CHECK(c.embedding_size >= c.vocab_size && c.vocab_size > 0, "embedding_size must be >= vocab_size > 0");
  JG_CHECK(c.max_seq_len > 0, "max_sequence_length must be positive");
  JG_CHECK(c.mask_token_id >= 0 && c.mask_token_id < c.vocab_size, "mask_token_id must lie in [0, vocab_size)");
  JG_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0, "rope_theta must be a finite number > 0");
  JG_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0, "rms_norm_eps must be a finite number > 0");
  // Below 2^31 each, one layer is at most ~2^64 elements: count in double to refuse what overflows.
  const double d = double(c.d_model), kv = double(c.kv_dim()), mlp = double(c.mlp_hidden), V = double(c.embedding_size);
  const double total = 2 * V * d + d + double(c.n_layers) * (2 * d + 2 * d * d + 2 * kv * d + 3 * d * mlp + 9 * 16);
  JG_CHECK(total < 9.0e15, "The model's ", total, " parameters are more than the engine can address");
}

void check_packed_batch(const int32_t* tokens, int64_t n_tokens, const int32_t* starts, int64_t n_starts,
                        const int32_t* rows, int64_t n_rows, const ModelConfig& cfg) {
  if (!(n_starts >= 2 && starts[0] == 0 && starts[n_starts - 1] == n_tokens))
    expected(str_cat("sequence offsets from 0 to tokens.length (", n_tokens, ")"), "seqStarts",
             n_starts == 0 ? std::string("an empty Int32Array")
                           : str_cat(n_starts, " offsets from ", starts[0], " to ", starts[n_starts - 1]));
  for (int64_t s = 0; s + 1 < n_starts; s++) {
    const int64_t len = int64_t(starts[s + 1]) - int64_t(starts[s]);
    if (len < 1 || len > cfg.max_seq_len)
      expected(str_cat("sequences of 1 to ", cfg.max_seq_len, " tokens"), "seqStarts",
               str_cat("a sequence ", s, " of ", len, " tokens"));
  }
  for (int64_t i = 0; i < n_tokens; i++)
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size)
      expected(str_cat("token ids in [0, ", cfg.vocab_size, ")"), "tokens", str_cat(tokens[i], " at index ", i));
  for (int64_t r = 0; r < n_rows; r++)
    if (rows[r] < 0 || rows[r] >= n_tokens)
      expected(str_cat("row indices in [0, ", n_tokens, ")"), "rows", str_cat(rows[r], " at index ", r));
}

}  // namespace jg
