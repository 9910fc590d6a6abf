#include "model.h"

#include <algorithm>

#include "../common/check.h"
#include "ops.h"

namespace jg::cpu {

Model::Model(const ModelConfig& cfg) : cfg_(cfg), layout_(cfg) {
  params_.resize(layout_.total(), "model parameters");
  const int64_t half = cfg.head_dim() / 2;
  rope_cos_.resize(cfg.max_seq_len * half);
  rope_sin_.resize(cfg.max_seq_len * half);
  rope_table(rope_cos_.data(), rope_sin_.data(), cfg.max_seq_len, cfg.head_dim(), cfg.rope_theta);
}

int64_t Model::n_params() const {
  int64_t n = 0;
  for (const auto& p : layout_.params()) n += p.numel;
  return n;
}

int64_t Model::forward_workspace_bytes(int64_t n_tokens, int64_t n_rows) const {
  const int64_t d = cfg_.d_model, kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden;
  return static_cast<int64_t>(sizeof(float)) *
         (n_tokens * (5 * d + 2 * kv + 2 * mlp) + 2 * n_rows * d);
}

void Model::release() {
  for (FloatBuffer* b : {&params_, &x_, &xn_, &q_, &k_, &v_, &att_, &proj_, &gate_, &up_, &sel_}) b->release();
}

void Model::forward(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows) {
  const int64_t N = batch.n_tokens();
  const int64_t d = cfg_.d_model, H = cfg_.n_heads, KV = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden, V = cfg_.embedding_size;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  JG_CHECK(params_.data() != nullptr, "Model is disposed");
  for (int64_t r = 0; r < n_rows; r++)
    JG_CHECK(rows[r] >= 0 && rows[r] < N, "Row ", rows[r], " is outside the batch of ", N, " tokens");

  x_.resize(N * d, "activations");
  xn_.resize(std::max(N, n_rows) * d, "activations");
  q_.resize(N * d, "activations");
  k_.resize(N * kv, "activations");
  v_.resize(N * kv, "activations");
  att_.resize(N * d, "activations");
  proj_.resize(N * d, "activations");
  gate_.resize(N * mlp, "activations");
  up_.resize(N * mlp, "activations");
  sel_.resize(n_rows * d, "activations");
  pos_.resize(N);
  for (int64_t s = 0; s < batch.n_seqs; s++)
    for (int32_t i = batch.seq_starts[s]; i < batch.seq_starts[s + 1]; i++) pos_[i] = i - batch.seq_starts[s];

  const float* P = params_.data();
  float *x = x_.data(), *xn = xn_.data(), *q = q_.data(), *k = k_.data(), *v = v_.data();
  float *att = att_.data(), *proj = proj_.data(), *gate = gate_.data(), *up = up_.data(), *sel = sel_.data();

  embedding_forward(x, batch.tokens, P + layout_.wte, N, d);
  for (const LayerParams& L : layout_.layers) {
    rmsnorm_forward(xn, nullptr, x, P + L.attn_norm, N, d, eps);
    matmul_forward(q, xn, P + L.q_proj, N, d, d);
    matmul_forward(k, xn, P + L.k_proj, N, d, kv);
    matmul_forward(v, xn, P + L.v_proj, N, d, kv);
    rope_forward(q, pos_.data(), rope_cos_.data(), rope_sin_.data(), N, H, hd);
    rope_forward(k, pos_.data(), rope_cos_.data(), rope_sin_.data(), N, KV, hd);
    attention_forward(att, nullptr, q, k, v, batch.seq_starts, batch.n_seqs, H, KV, hd);
    matmul_forward(proj, att, P + L.attn_out, N, d, d);
    residual_forward(x, proj, N * d);

    rmsnorm_forward(xn, nullptr, x, P + L.ff_norm, N, d, eps);
    matmul_forward(gate, xn, P + L.ff_proj, N, d, mlp);
    matmul_forward(up, xn, P + L.up_proj, N, d, mlp);
    swiglu_forward(gate, gate, up, N, mlp);
    matmul_forward(proj, gate, P + L.ff_out, N, mlp, d);
    residual_forward(x, proj, N * d);
  }
  // Final norm and head only for the requested rows.
  for (int64_t r = 0; r < n_rows; r++)
    std::copy(x + int64_t(rows[r]) * d, x + (int64_t(rows[r]) + 1) * d, sel + r * d);
  rmsnorm_forward(xn, nullptr, sel, P + layout_.ln_f, n_rows, d, eps);
  matmul_forward(logits, xn, P + layout_.lm_head, n_rows, d, V);
}

}  // namespace jg::cpu
