#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>

#include "../common/check.h"
#include "../common/memory.h"
#include "../common/rope.h"
#include "../common/tensor_io.h"
#include "../common/validate.h"
#include "onednn.h"
#include "ops.h"
#include "simd.h"
#include "threadpool.h"

namespace jg::cpu {

namespace {

// Hands out consecutive 64-byte aligned pieces of one buffer. With a null base it only counts, so
// the same code sizes a workspace and then lays it out.
struct Carve {
  float* base;
  int64_t used = 0;
  float* take(int64_t n) {
    float* p = base ? base + used : nullptr;
    used += (n + 15) / 16 * 16;
    return p;
  }
};

void zero(float* p, int64_t n) { std::memset(p, 0, static_cast<size_t>(n) * sizeof(float)); }

// Row i of a (N,w) becomes row slot[i]'s copy, for slot[i] <= i: going down from the last row, a
// row is written only after every row that reads it.
void spread_rows(float* a, const int32_t* slot, int64_t N, int64_t w) {
  for (int64_t i = N - 1; i >= 0; i--)
    if (slot[i] != i) std::memcpy(a + i * w, a + int64_t(slot[i]) * w, static_cast<size_t>(w) * sizeof(float));
}

// The reverse: rows 0..U-1 of a (N,w) become the sums, in row order, of the rows with that slot
// (slot[i] <= i, and the rows of slot u start at row u or later, so no sum is touched before its
// own row has been read).
void sum_rows_by_slot(float* a, const int32_t* slot, int64_t N, int64_t U, int64_t w, float* tmp) {
  for (int64_t i = 0; i < N; i++) {
    float* row = a + i * w;
    if (slot[i] == i) continue;  // a first occurrence is its own sum so far
    std::memcpy(tmp, row, static_cast<size_t>(w) * sizeof(float));
    if (i < U) zero(row, w);
    axpy(a + int64_t(slot[i]) * w, 1.0f, tmp, w);
  }
}

}  // namespace

// Where every tensor of a training call lives, for one batch shape.
struct Model::Plan {
  std::vector<float*> x;        // (N,d) each layer's input (the embedding output when there are no layers)
  std::vector<LayerActs> acts;  // layers 0..n-2; one set, refilled per layer, when checkpointing
  RowActs last;                 // the last layer, on the rows (always saved: it is small)
  float *dx, *dxn, *datt, *dq, *dk, *dv, *dact, *dgate, *dup;  // backward temporaries (N rows)
  float *r_dact, *r_dgate, *r_dup, *r_dxn, *r_datt, *r_dq;    // the last layer's (R rows)
  float *sel, *xn_sel, *rstd_f, *logits, *lse, *dlogp, *dxn_sel, *dsel;  // the LM head
  int64_t head_chunk;
  bool checkpoint;  // acts holds one set, refilled per layer
};

// The config is checked before the layout multiplies its sizes.
Model::Model(const ModelConfig& cfg, DType dtype, bool master_weights)
    : cfg_(cfg), layout_((check_model_config(cfg), cfg)), dtype_(dtype), masters_(dtype != DType::BF16 || master_weights) {
  JG_CHECK(dtype == DType::F32 || dtype == DType::BF16, "Expected 'F32' or 'BF16' for `dtype` on the CPU");
  // Before any allocation: a missing oneDNN is an UNSUPPORTED error that says what to install.
  if (dtype == DType::BF16) onednn_require();
  if (masters_) {
    params_.resize(layout_.total(), "model parameters");
  } else {
    int64_t n = 0;
    for (const ParamInfo& p : layout_.params())
      if (p.shape.size() == 1) {
        norm_at_.emplace_back(p.offset, n);
        n += (p.numel + 15) / 16 * 16;
      }
    norms_.resize(std::max<int64_t>(n, 1), "norm weights");
  }
  if (dtype == DType::BF16) weights_bf16_.resize((layout_.total() + 1) / 2, masters_ ? "bf16 weights" : "model parameters (bf16)");
  const int64_t half = cfg.head_dim() / 2;
  check_fits(checked_mul(cfg.max_seq_len, 2 * half * int64_t(sizeof(float))), "RoPE tables");
  rope_cos_.resize(cfg.max_seq_len * half);
  rope_sin_.resize(cfg.max_seq_len * half);
  rope_table(rope_cos_.data(), rope_sin_.data(), cfg.max_seq_len, cfg.head_dim(), cfg.rope_theta);
}

DeviceInfo Model::device_info() const {
  // The processor's name as the kernel reports it (Linux), else a plain "CPU"; with bf16, the
  // products' library and the kernels it runs (e.g. "oneDNN 2.6.3, avx512_core_bf16").
  std::string name = "CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      name = line.substr(line.find(':') + 2);
      break;
    }
  if (dtype_ == DType::BF16) name = str_cat(name, " (", onednn_describe(), ")");
  return {"cpu", name, dtype_ == DType::BF16 ? "BF16" : "F32", 0,
          static_cast<double>(std::max<int64_t>(0, available_memory_bytes())), ""};
}

MemoryReport Model::memory_report() const {
  const int64_t f = sizeof(float);
  MemoryReport r;
  r.weights_fp32 = f * (masters_ ? params_.size() : norms_.size());
  r.weights_bf16 = f * weights_bf16_.size();
  for (const FloatBuffer* b : {&x_, &xn_, &q_, &k_, &v_, &att_, &proj_, &gate_, &up_, &sel_, &rows_}) r.workspace += f * b->size();
  r.workspace += logprob_ws_.bytes() + f * static_cast<int64_t>(step_logits_.capacity());
  return r;
}

void Model::check_live() const { JG_CHECK_AS(ErrorKind::DISPOSED, !released_, "Model is disposed"); }

const float* Model::vec(int64_t offset) const {
  if (masters_) return params_.data() + offset;
  auto it = std::lower_bound(norm_at_.begin(), norm_at_.end(), std::make_pair(offset, int64_t(0)));
  JG_CHECK_AS(ErrorKind::INTERNAL, it != norm_at_.end() && it->first == offset, "No norm weight at offset ", offset);
  return norms_.data() + it->second;
}

void Model::embed(float* x, const int32_t* tokens, int64_t N) {
  if (masters_) embedding_forward(x, tokens, params_.data() + layout_.wte, N, cfg_.d_model);
  else embedding_forward_bf16(x, tokens, weights_bf16() + layout_.wte, N, cfg_.d_model);
}

void Model::refresh_bf16(const ParamInfo& p) {
  // The embedding is looked up in fp32, never multiplied: its rows of the copy stay unwritten (and,
  // the buffer being mapped, never paged in). Without masters the bf16 values are the weights.
  if (dtype_ != DType::BF16 || !masters_ || p.shape.size() != 2 || p.offset == layout_.wte) return;
  to_bf16(weights_bf16() + p.offset, params_.data() + p.offset, p.numel);
}

void Model::refresh_bf16() {
  for (const ParamInfo& p : layout_.params()) refresh_bf16(p);
}

void Model::reserve_param_slack(int64_t n) {
  JG_CHECK_AS(ErrorKind::INTERNAL, masters_, "reserve_param_slack needs the fp32 master weights");
  params_.grow_keep(n, "fp32 master weights");
}

void Model::make_masters() {
  check_live();
  if (masters_) return;
  params_.resize(layout_.total(), "fp32 master weights");
  for (const ParamInfo& p : layout_.params()) {
    float* dst = params_.data() + p.offset;
    if (p.shape.size() == 2) widen_bf16(dst, weights_bf16() + p.offset, p.numel);
    else std::memcpy(dst, vec(p.offset), static_cast<size_t>(p.numel) * sizeof(float));
  }
  // From here the model is one with masters; the bf16 copy already holds their rounding (exact:
  // they are its widening), the embedding's rows included, which are no longer read.
  masters_ = true;
  norms_.release();
  norm_at_.clear();
}

void Model::mm_forward(float* out, const float* inp, int64_t w, int64_t N, int64_t C, int64_t OC) {
  if (dtype_ == DType::BF16) matmul_forward_bf16(out, inp, weights_bf16() + w, N, C, OC);
  else matmul_forward(out, inp, params_.data() + w, N, C, OC);
}

void Model::mm_forward_each(std::initializer_list<Product> products, const float* inp, int64_t N, int64_t C) {
  if (dtype_ != DType::BF16 || N == 0) {
    for (const Product& p : products) mm_forward(p.out, inp, p.w, N, C, p.OC);
    return;
  }
  const uint16_t* in16 = matmul_input_bf16(inp, N * C);
  for (const Product& p : products) matmul_forward_bf16(p.out, in16, weights_bf16() + p.w, N, C, p.OC);
}

void Model::mm_backward(float* dinp, float* dweight, const float* dout, const float* inp, int64_t w, int64_t N,
                        int64_t C, int64_t OC) {
  if (dtype_ == DType::BF16) matmul_backward_bf16(dinp, dweight, dout, inp, weights_bf16() + w, N, C, OC);
  else matmul_backward(dinp, dweight, dout, inp, params_.data() + w, N, C, OC);
}

void Model::load_tensor(const ParamInfo& p, DType file_dtype, const std::string& path, int64_t offset) {
  check_live();
  if (bf16_only(p)) {
    read_tensor_bf16(weights_bf16() + p.offset, p.numel, file_dtype, path, offset, p.name);
    return;
  }
  read_tensor(vec(p.offset), p.numel, file_dtype, path, offset, p.name);
  refresh_bf16(p);
}

int64_t Model::count_non_finite(const ParamInfo& p) {
  check_live();
  // bf16 and fp32 alike: non-finite when every exponent bit is set.
  const bool half = bf16_only(p);
  const uint16_t* w16 = half ? weights_bf16() + p.offset : nullptr;
  const float* w = half ? nullptr : vec(p.offset);
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (p.numel + kBlock - 1) / kBlock;
  std::vector<int64_t> counts(blocks, 0);
  parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b++) {
      int64_t n = 0;
      const int64_t i0 = b * kBlock, i1 = std::min(p.numel, (b + 1) * kBlock);
      if (half)
        for (int64_t i = i0; i < i1; i++) n += (w16[i] & 0x7f80) == 0x7f80;
      else
        for (int64_t i = i0; i < i1; i++) n += !std::isfinite(w[i]);
      counts[b] = n;
    }
  });
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  return total;
}

void Model::write_tensor(TensorWriter& w, const ParamInfo& p, DType dtype) {
  check_live();
  if (bf16_only(p)) w.write_tensor_bf16(weights_bf16() + p.offset, p.numel, dtype);
  else w.write_tensor(vec(p.offset), p.numel, dtype);
}

void Model::get_param(float* dst, const ParamInfo& p) {
  check_live();
  if (bf16_only(p)) widen_bf16(dst, weights_bf16() + p.offset, p.numel);
  else std::memcpy(dst, vec(p.offset), static_cast<size_t>(p.numel) * sizeof(float));
}

void Model::set_param(const ParamInfo& p, const float* src) {
  check_live();
  if (bf16_only(p)) {
    to_bf16(weights_bf16() + p.offset, src, p.numel);
    return;
  }
  std::memcpy(vec(p.offset), src, static_cast<size_t>(p.numel) * sizeof(float));
  refresh_bf16(p);
}

void Model::init_random(uint64_t seed, float stdev) {
  check_live();
  // One generator per tensor, seeded from (seed, index), so tensors do not depend on each other.
  // Without masters each tensor is drawn in chunks and rounded: the same draws, so the same bf16
  // values as rounding a model with masters.
  constexpr int64_t kChunk = 1 << 20;
  std::vector<float> chunk;
  const auto& params = layout_.params();
  for (size_t i = 0; i < params.size(); i++) {
    const ParamInfo& p = params[i];
    if (p.shape.size() == 1) {
      std::fill(vec(p.offset), vec(p.offset) + p.numel, 1.0f);
      continue;
    }
    std::mt19937_64 rng(seed * 1000003ULL + i);
    std::normal_distribution<float> dist(0.0f, stdev);
    if (masters_) {
      float* w = params_.data() + p.offset;
      for (int64_t j = 0; j < p.numel; j++) w[j] = dist(rng);
      continue;
    }
    for (int64_t j0 = 0; j0 < p.numel; j0 += kChunk) {
      const int64_t n = std::min(kChunk, p.numel - j0);
      chunk.resize(n);
      for (int64_t j = 0; j < n; j++) chunk[j] = dist(rng);
      to_bf16(weights_bf16() + p.offset + j0, chunk.data(), n);
    }
  }
  refresh_bf16();
}

void Model::logprobs(float* out, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
                     const std::vector<int32_t>& excluded) {
  std::vector<float> zero(n_rows, 0.0f);
  CrossEntropyLoss loss(zero.data());
  loss.excluded = excluded;
  this->loss(nullptr, logprob_ws_, batch, rows, targets, n_rows, loss, out);
}

int64_t Model::forward_workspace_bytes(int64_t n_tokens, int64_t n_rows) const {
  const int64_t d = cfg_.d_model, kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden;
  return static_cast<int64_t>(sizeof(float)) *
         (n_tokens * (5 * d + 2 * kv + 2 * mlp) + n_rows * (6 * d + 2 * mlp));
}

void Model::release() {
  released_ = true;
  for (FloatBuffer* b : {&params_, &weights_bf16_, &norms_, &x_, &xn_, &q_, &k_, &v_, &att_, &proj_, &gate_, &up_, &sel_, &rows_})
    b->release();
  logprob_ws_.release();
  step_logits_ = {};
}

void Model::positions(std::vector<int32_t>& pos, const Batch& batch) const {
  pos.resize(batch.n_tokens());
  for (int64_t s = 0; s < batch.n_seqs; s++)
    for (int32_t i = batch.seq_starts[s]; i < batch.seq_starts[s + 1]; i++) pos[i] = i - batch.seq_starts[s];
}

void Model::token_rows(const Batch& batch) {
  const int64_t N = batch.n_tokens();
  by_token_.slot.resize(N);
  // The vocabulary-sized map back to unseen: in full once, then only the previous call's tokens.
  if (by_token_.seen.size() != static_cast<size_t>(cfg_.vocab_size)) by_token_.seen.assign(cfg_.vocab_size, -1);
  for (int32_t t : by_token_.ids) by_token_.seen[t] = -1;
  by_token_.first.clear();
  by_token_.ids.clear();
  for (int64_t i = 0; i < N; i++) {
    int32_t& u = by_token_.seen[batch.tokens[i]];
    if (u < 0) {
      u = static_cast<int32_t>(by_token_.first.size());
      by_token_.first.push_back(static_cast<int32_t>(i));
      by_token_.ids.push_back(batch.tokens[i]);
    }
    by_token_.slot[i] = u;
  }
}

void Model::layer_forward(float* x_out, const LayerActs& a, const LayerParams& L, const Batch& batch,
                          const int32_t* pos, bool first) {
  const int64_t N = batch.n_tokens();
  const int64_t d = cfg_.d_model, H = cfg_.n_heads, KV = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);

  if (first) {
    // The first layer's input is the embedding, so its queries, keys and values (before RoPE)
    // depend on the token only: computed for each distinct token (rows 0..U-1 of xn1, q, k, v),
    // then copied to the rows. Masks and the prompt shared by G samples repeat, so U << N.
    token_rows(batch);
    const int64_t U = static_cast<int64_t>(by_token_.first.size());
    for (int64_t u = 0; u < U; u++)
      std::memcpy(a.xn1 + u * d, a.x_in + int64_t(by_token_.first[u]) * d, d * sizeof(float));
    rmsnorm_forward(a.xn1, a.rstd1, a.xn1, vec(L.attn_norm), U, d, eps);
    mm_forward_each({{a.q, L.q_proj, d}, {a.k, L.k_proj, kv}, {a.v, L.v_proj, kv}}, a.xn1, U, d);
    spread_rows(a.q, by_token_.slot.data(), N, d);
    spread_rows(a.k, by_token_.slot.data(), N, kv);
    spread_rows(a.v, by_token_.slot.data(), N, kv);
  } else {
    rmsnorm_forward(a.xn1, a.rstd1, a.x_in, vec(L.attn_norm), N, d, eps);
    mm_forward_each({{a.q, L.q_proj, d}, {a.k, L.k_proj, kv}, {a.v, L.v_proj, kv}}, a.xn1, N, d);
  }
  rope_forward(a.q, pos, rope_cos_.data(), rope_sin_.data(), N, H, hd);
  rope_forward(a.k, pos, rope_cos_.data(), rope_sin_.data(), N, KV, hd);
  attention_forward(a.att, a.lse, a.q, a.k, a.v, batch.seq_starts, batch.n_seqs, H, KV, hd);
  mm_forward(a.proj, a.att, L.attn_out, N, d, d);
  // Training keeps x_in for backward, so the sum goes to a copy; the float adds are the same.
  if (a.x_mid != a.x_in) std::memcpy(a.x_mid, a.x_in, N * d * sizeof(float));
  residual_forward(a.x_mid, a.proj, N * d);

  rmsnorm_forward(a.xn2, a.rstd2, a.x_mid, vec(L.ff_norm), N, d, eps);
  mm_forward_each({{a.gate, L.ff_proj, mlp}, {a.up, L.up_proj, mlp}}, a.xn2, N, d);
  swiglu_forward(a.act, a.gate, a.up, N, mlp);
  if (!x_out) return;
  mm_forward(a.proj, a.act, L.ff_out, N, mlp, d);
  if (x_out != a.x_mid) std::memcpy(x_out, a.x_mid, N * d * sizeof(float));
  residual_forward(x_out, a.proj, N * d);
}

void Model::layer_backward(float* grads, float* dx, const LayerActs& a, const Plan& p, const LayerParams& L,
                           const Batch& batch, const int32_t* pos, bool first) {
  const int64_t N = batch.n_tokens();
  const int64_t d = cfg_.d_model, H = cfg_.n_heads, KV = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden;
  float* G = grads;

  // x_out = x_mid + ff_out(silu(ff_proj(xn2)) * up_proj(xn2)): the residual passes dx through
  // unchanged, and the branch gets dx as its output gradient with no copy.
  zero(p.dact, N * mlp);
  mm_backward(p.dact, G + L.ff_out, dx, a.act, L.ff_out, N, mlp, d);
  zero(p.dgate, N * mlp);
  zero(p.dup, N * mlp);
  swiglu_backward(p.dgate, p.dup, p.dact, a.gate, a.up, N, mlp);
  zero(p.dxn, N * d);
  mm_backward(p.dxn, G + L.ff_proj, p.dgate, a.xn2, L.ff_proj, N, d, mlp);
  mm_backward(p.dxn, G + L.up_proj, p.dup, a.xn2, L.up_proj, N, d, mlp);
  rmsnorm_backward(dx, G + L.ff_norm, p.dxn, a.x_mid, vec(L.ff_norm), a.rstd2, N, d);

  // x_mid = x_in + attn_out(attention(rope(q), rope(k), v)), q/k/v from xn1.
  zero(p.datt, N * d);
  mm_backward(p.datt, G + L.attn_out, dx, a.att, L.attn_out, N, d, d);
  zero(p.dq, N * d);
  zero(p.dk, N * kv);
  zero(p.dv, N * kv);
  attention_backward(p.dq, p.dk, p.dv, p.datt, a.q, a.k, a.v, a.att, a.lse, batch.seq_starts, batch.n_seqs, H, KV,
                     hd);
  rope_backward(p.dq, pos, rope_cos_.data(), rope_sin_.data(), N, H, hd);
  rope_backward(p.dk, pos, rope_cos_.data(), rope_sin_.data(), N, KV, hd);
  if (first) {
    // The forward's per-token path backwards: the rows' gradients summed per distinct token, the
    // projections' and the norm's backward on those U rows, and the norm's input gradient added
    // straight to the token's embedding gradient (the residual's share of dx goes there through
    // embedding_backward, as for every layer 0).
    // Rebuilt from the batch (O(N)): a kept forward's backward runs after other calls reused by_token_.
    token_rows(batch);
    const int64_t U = static_cast<int64_t>(by_token_.first.size());
    const int32_t* slot = by_token_.slot.data();
    sum_rows_by_slot(p.dq, slot, N, U, d, p.datt);
    sum_rows_by_slot(p.dk, slot, N, U, kv, p.datt);
    sum_rows_by_slot(p.dv, slot, N, U, kv, p.datt);
    zero(p.dxn, U * d);
    mm_backward(p.dxn, G + L.q_proj, p.dq, a.xn1, L.q_proj, U, d, d);
    mm_backward(p.dxn, G + L.k_proj, p.dk, a.xn1, L.k_proj, U, d, kv);
    mm_backward(p.dxn, G + L.v_proj, p.dv, a.xn1, L.v_proj, U, d, kv);
    // p.datt: the U embedding rows, then (in p.dq, free now) their gradients.
    for (int64_t u = 0; u < U; u++)
      std::memcpy(p.datt + u * d, a.x_in + int64_t(by_token_.first[u]) * d, d * sizeof(float));
    zero(p.dq, U * d);
    rmsnorm_backward(p.dq, G + L.attn_norm, p.dxn, p.datt, vec(L.attn_norm), a.rstd1, U, d);
    embedding_backward(G + layout_.wte, p.dq, by_token_.ids.data(), U, d);
    return;
  }
  zero(p.dxn, N * d);
  mm_backward(p.dxn, G + L.q_proj, p.dq, a.xn1, L.q_proj, N, d, d);
  mm_backward(p.dxn, G + L.k_proj, p.dk, a.xn1, L.k_proj, N, d, kv);
  mm_backward(p.dxn, G + L.v_proj, p.dv, a.xn1, L.v_proj, N, d, kv);
  rmsnorm_backward(dx, G + L.attn_norm, p.dxn, a.x_in, vec(L.attn_norm), a.rstd1, N, d);
}

float* Model::forward_layers(const Batch& batch, int64_t n_layers) {
  const int64_t N = batch.n_tokens();
  const int64_t d = cfg_.d_model, kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden;
  x_.resize(N * d, "activations");
  xn_.resize(N * d, "activations");
  q_.resize(N * d, "activations");
  k_.resize(N * kv, "activations");
  v_.resize(N * kv, "activations");
  att_.resize(N * d, "activations");
  proj_.resize(N * d, "activations");
  gate_.resize(N * mlp, "activations");
  up_.resize(N * mlp, "activations");
  positions(pos_, batch);

  float* x = x_.data();
  // In place: the residual stream, both norms' outputs and the SwiGLU share buffers.
  const LayerActs a{x,       xn_.data(),  nullptr,      q_.data(),    k_.data(), v_.data(),
                    att_.data(), nullptr, x,            xn_.data(),   nullptr,   gate_.data(),
                    up_.data(),  gate_.data(), proj_.data()};
  tokens_computed_ += N;
  embed(x, batch.tokens, N);
  for (int64_t l = 0; l < n_layers; l++) layer_forward(x, a, layout_.layers[l], batch, pos_.data(), l == 0);
  return x;
}

void Model::layer_rows_forward(float* sel, const float* x, const RowActs& a, const LayerParams& L, const Batch& batch,
                               const int32_t* rows, int64_t R, const int32_t* pos) {
  const int64_t N = batch.n_tokens();
  const int64_t d = cfg_.d_model, H = cfg_.n_heads, KV = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  std::vector<int32_t> pos_r(R);
  for (int64_t r = 0; r < R; r++) pos_r[r] = pos[rows[r]];

  rmsnorm_forward(a.xn1, a.rstd1, x, vec(L.attn_norm), N, d, eps);
  mm_forward_each({{a.k, L.k_proj, kv}, {a.v, L.v_proj, kv}}, a.xn1, N, d);
  rope_forward(a.k, pos, rope_cos_.data(), rope_sin_.data(), N, KV, hd);
  for (int64_t r = 0; r < R; r++)
    std::copy(a.xn1 + int64_t(rows[r]) * d, a.xn1 + (int64_t(rows[r]) + 1) * d, a.xn1_r + r * d);
  mm_forward(a.q, a.xn1_r, L.q_proj, R, d, d);
  rope_forward(a.q, pos_r.data(), rope_cos_.data(), rope_sin_.data(), R, H, hd);
  attention_rows_forward(a.att, a.lse, a.q, a.k, a.v, rows, R, batch.seq_starts, batch.n_seqs, H, KV, hd);
  mm_forward(a.proj, a.att, L.attn_out, R, d, d);
  for (int64_t r = 0; r < R; r++) std::copy(x + int64_t(rows[r]) * d, x + (int64_t(rows[r]) + 1) * d, a.x_mid + r * d);
  residual_forward(a.x_mid, a.proj, R * d);

  rmsnorm_forward(a.xn2, a.rstd2, a.x_mid, vec(L.ff_norm), R, d, eps);
  mm_forward_each({{a.gate, L.ff_proj, mlp}, {a.up, L.up_proj, mlp}}, a.xn2, R, d);
  swiglu_forward(a.act, a.gate, a.up, R, mlp);
  mm_forward(a.proj, a.act, L.ff_out, R, mlp, d);
  if (sel != a.x_mid) std::memcpy(sel, a.x_mid, R * d * sizeof(float));
  residual_forward(sel, a.proj, R * d);
}

void Model::layer_rows_backward(float* grads, float* dx, float* dsel, const float* x, const RowActs& a, const Plan& p,
                                const LayerParams& L, const Batch& batch, const int32_t* rows, int64_t R,
                                const int32_t* pos) {
  const int64_t N = batch.n_tokens();
  const int64_t d = cfg_.d_model, H = cfg_.n_heads, KV = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden;
  float* G = grads;
  std::vector<int32_t> pos_r(R);
  for (int64_t r = 0; r < R; r++) pos_r[r] = pos[rows[r]];

  // sel = x_mid + ff_out(silu(ff_proj(xn2)) * up_proj(xn2)), on the rows.
  zero(p.r_dact, R * mlp);
  mm_backward(p.r_dact, G + L.ff_out, dsel, a.act, L.ff_out, R, mlp, d);
  zero(p.r_dgate, R * mlp);
  zero(p.r_dup, R * mlp);
  swiglu_backward(p.r_dgate, p.r_dup, p.r_dact, a.gate, a.up, R, mlp);
  zero(p.r_dxn, R * d);
  mm_backward(p.r_dxn, G + L.ff_proj, p.r_dgate, a.xn2, L.ff_proj, R, d, mlp);
  mm_backward(p.r_dxn, G + L.up_proj, p.r_dup, a.xn2, L.up_proj, R, d, mlp);
  // dsel becomes the gradient of x_mid: the residual passes it through, the norm adds its share.
  rmsnorm_backward(dsel, G + L.ff_norm, p.r_dxn, a.x_mid, vec(L.ff_norm), a.rstd2, R, d);

  // x_mid = x[rows] + attn_out(attention(q of the rows, k and v of every row)).
  zero(p.r_datt, R * d);
  mm_backward(p.r_datt, G + L.attn_out, dsel, a.att, L.attn_out, R, d, d);
  zero(p.r_dq, R * d);
  zero(p.dk, N * kv);
  zero(p.dv, N * kv);
  attention_rows_backward(p.r_dq, p.dk, p.dv, p.r_datt, a.q, a.k, a.v, a.att, a.lse, rows, R, batch.seq_starts,
                          batch.n_seqs, H, KV, hd);
  rope_backward(p.r_dq, pos_r.data(), rope_cos_.data(), rope_sin_.data(), R, H, hd);
  rope_backward(p.dk, pos, rope_cos_.data(), rope_sin_.data(), N, KV, hd);
  zero(p.r_dxn, R * d);
  mm_backward(p.r_dxn, G + L.q_proj, p.r_dq, a.xn1_r, L.q_proj, R, d, d);
  zero(p.dxn, N * d);
  mm_backward(p.dxn, G + L.k_proj, p.dk, a.xn1, L.k_proj, N, d, kv);
  mm_backward(p.dxn, G + L.v_proj, p.dv, a.xn1, L.v_proj, N, d, kv);
  // Scatters in row order, so repeated rows add up deterministically.
  for (int64_t r = 0; r < R; r++) axpy(p.dxn + int64_t(rows[r]) * d, 1.0f, p.r_dxn + r * d, d);
  rmsnorm_backward(dx, G + L.attn_norm, p.dxn, x, vec(L.attn_norm), a.rstd1, N, d);
  for (int64_t r = 0; r < R; r++) axpy(dx + int64_t(rows[r]) * d, 1.0f, dsel + r * d, d);
}

void Model::forward_rows(float* sel, const Batch& batch, const int32_t* rows, int64_t R) {
  const int64_t d = cfg_.d_model, mlp = cfg_.mlp_hidden, n_layers = cfg_.n_layers;
  xn_.resize(std::max(batch.n_tokens(), R) * d, "activations");
  // Every layer but the last runs on all rows; the last only where its output is read (exact: a
  // row's output depends on the other rows only through their keys and values).
  const float* x = forward_layers(batch, n_layers > 0 ? n_layers - 1 : 0);
  if (n_layers == 0) {
    for (int64_t r = 0; r < R; r++) std::copy(x + int64_t(rows[r]) * d, x + (int64_t(rows[r]) + 1) * d, sel + r * d);
    return;
  }
  rows_.resize(R * (4 * d + 2 * mlp), "activations");
  float* xr = rows_.data();  // the normed inputs at the rows, then the normed mid-stream
  float* gate = xr + 4 * R * d;
  const RowActs a{xn_.data(), nullptr, k_.data(), v_.data(), xr,      xr + R * d, xr + 2 * R * d, nullptr,
                  sel,        xr,      nullptr,   gate,      gate + R * mlp, gate, xr + 3 * R * d};
  layer_rows_forward(sel, x, a, layout_.layers[n_layers - 1], batch, rows, R, pos_.data());
}

void Model::forward(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows) {
  const int64_t N = batch.n_tokens();
  const int64_t d = cfg_.d_model, V = cfg_.embedding_size, R = n_rows;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  check_live();
  for (int64_t r = 0; r < n_rows; r++)
    JG_CHECK(rows[r] >= 0 && rows[r] < N, "Row ", rows[r], " is outside the batch of ", N, " tokens");

  sel_.resize(n_rows * d, "activations");
  float* sel = sel_.data();
  if (share_duplicates(shared_, batch, rows, R)) {
    forward_rows(sel, shared_.batch(), shared_.rows.data(), R);
  } else {
    forward_rows(sel, batch, rows, R);
  }
  rmsnorm_forward(xn_.data(), nullptr, sel, vec(layout_.ln_f), n_rows, d, eps);
  mm_forward(logits, xn_.data(), layout_.lm_head, n_rows, d, V);
}

void Model::plan(Plan& p, float* saved_base, float* scratch_base, int64_t N, int64_t R, bool with_grads,
                 bool checkpoint, int64_t* saved_floats, int64_t* scratch_floats) const {
  const int64_t d = cfg_.d_model, H = cfg_.n_heads, kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden;
  const int64_t V = cfg_.embedding_size, n_layers = cfg_.n_layers;
  Carve saved{saved_base}, scratch{scratch_base};
  p.x.clear();
  p.acts.clear();
  p.last = RowActs{};
  p.checkpoint = checkpoint;
  if (with_grads) {
    for (int64_t l = 0; l < std::max<int64_t>(n_layers, 1); l++) p.x.push_back(saved.take(N * d));
    auto layer_set = [&](Carve& c, float* x_in) {
      LayerActs a;
      a.x_in = x_in;
      a.xn1 = c.take(N * d);
      a.rstd1 = c.take(N);
      a.q = c.take(N * d);
      a.k = c.take(N * kv);
      a.v = c.take(N * kv);
      a.att = c.take(N * d);
      a.lse = c.take(N * H);
      a.x_mid = c.take(N * d);
      a.xn2 = c.take(N * d);
      a.rstd2 = c.take(N);
      a.gate = c.take(N * mlp);
      a.up = c.take(N * mlp);
      a.act = c.take(N * mlp);
      a.proj = nullptr;
      return a;
    };
    if (checkpoint) {
      if (n_layers > 1) p.acts.push_back(layer_set(scratch, nullptr));
    } else {
      for (int64_t l = 0; l + 1 < n_layers; l++) p.acts.push_back(layer_set(saved, p.x[l]));
    }
    if (n_layers > 0) {
      RowActs& a = p.last;
      a.xn1 = saved.take(N * d);
      a.rstd1 = saved.take(N);
      a.k = saved.take(N * kv);
      a.v = saved.take(N * kv);
      a.xn1_r = saved.take(R * d);
      a.q = saved.take(R * d);
      a.att = saved.take(R * d);
      a.lse = saved.take(R * H);
      a.x_mid = saved.take(R * d);
      a.xn2 = saved.take(R * d);
      a.rstd2 = saved.take(R);
      a.gate = saved.take(R * mlp);
      a.up = saved.take(R * mlp);
      a.act = saved.take(R * mlp);
      a.proj = scratch.take(R * d);
    }
    p.sel = saved.take(R * d);
    float* proj = scratch.take(N * d);
    for (LayerActs& a : p.acts) a.proj = proj;
    p.dx = scratch.take(N * d);
    p.dxn = scratch.take(N * d);
    p.datt = scratch.take(N * d);
    p.dq = scratch.take(N * d);
    p.dk = scratch.take(N * kv);
    p.dv = scratch.take(N * kv);
    p.dact = scratch.take(N * mlp);
    p.dgate = scratch.take(N * mlp);
    p.dup = scratch.take(N * mlp);
    p.r_dact = scratch.take(R * mlp);
    p.r_dgate = scratch.take(R * mlp);
    p.r_dup = scratch.take(R * mlp);
    p.r_dxn = scratch.take(R * d);
    p.r_datt = scratch.take(R * d);
    p.r_dq = scratch.take(R * d);
  } else {
    p.sel = scratch.take(R * d);
  }
  p.head_chunk = std::max<int64_t>(1, std::min<int64_t>(R, kHeadChunkFloats / V));
  p.xn_sel = scratch.take(R * d);
  p.rstd_f = scratch.take(R);
  p.logits = scratch.take(p.head_chunk * V);
  p.lse = scratch.take(R);
  p.dlogp = scratch.take(R);
  p.dxn_sel = with_grads ? scratch.take(R * d) : nullptr;
  p.dsel = with_grads ? scratch.take(R * d) : nullptr;
  *saved_floats = saved.used;
  *scratch_floats = scratch.used;
}

int64_t Model::train_workspace_bytes(int64_t n_tokens, int64_t n_rows, bool with_grads, bool checkpoint) const {
  Plan p;
  int64_t saved = 0, scratch = 0;
  plan(p, nullptr, nullptr, n_tokens, n_rows, with_grads, checkpoint, &saved, &scratch);
  int64_t bytes = static_cast<int64_t>(sizeof(float)) * (saved + scratch);
  // Without grads the layers run through the inference buffers.
  if (!with_grads) bytes += forward_workspace_bytes(n_tokens, n_rows);
  return bytes;
}

int64_t Model::kept_bytes(int64_t n_tokens, int64_t n_rows) const {
  Plan p;
  int64_t saved = 0, scratch = 0;
  plan(p, nullptr, nullptr, n_tokens, n_rows, true, false, &saved, &scratch);
  return static_cast<int64_t>(sizeof(float)) * saved;
}

double Model::head_loss(float* grads, const float* sel, const Plan& p, const int32_t* targets, int64_t R,
                        const RowLoss& loss, float* logprobs) {
  const int64_t d = cfg_.d_model, V = cfg_.embedding_size;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  rmsnorm_forward(p.xn_sel, p.rstd_f, sel, vec(layout_.ln_f), R, d, eps);
  if (grads) zero(p.dxn_sel, R * d);

  double total = 0;
  for (int64_t r0 = 0; r0 < R; r0 += p.head_chunk) {
    const int64_t rc = std::min(p.head_chunk, R - r0);
    const float* xn = p.xn_sel + r0 * d;
    mm_forward(p.logits, xn, layout_.lm_head, rc, d, V);
    for (int32_t id : loss.excluded)
      for (int64_t r = 0; r < rc; r++) p.logits[r * V + id] = -std::numeric_limits<float>::infinity();
    logsoftmax_forward(logprobs + r0, p.lse + r0, p.logits, targets + r0, rc, V);
    for (int64_t r = r0; r < r0 + rc; r++) {
      double dlogp = 0;
      total += loss.row(r, logprobs[r], &dlogp);
      p.dlogp[r] = static_cast<float>(dlogp);
    }
    if (!grads) continue;
    // In place: the chunk's logits become d loss / d logits, then feed the head's two GEMMs.
    logsoftmax_backward(p.logits, p.dlogp + r0, p.logits, p.lse + r0, targets + r0, rc, V);
    mm_backward(p.dxn_sel + r0 * d, grads + layout_.lm_head, p.logits, xn, layout_.lm_head, rc, d, V);
  }
  if (!grads) return total;
  zero(p.dsel, R * d);
  rmsnorm_backward(p.dsel, grads + layout_.ln_f, p.dxn_sel, sel, vec(layout_.ln_f), p.rstd_f, R, d);
  return total;
}

void Model::train_forward(const Plan& p, const Batch& batch, const int32_t* rows, int64_t R, const int32_t* pos) {
  const int64_t N = batch.n_tokens(), d = cfg_.d_model, n_layers = cfg_.n_layers;
  const bool checkpoint = p.checkpoint;
  tokens_computed_ += N;
  embed(p.x[0], batch.tokens, N);
  for (int64_t l = 0; l + 1 < n_layers; l++) {
    LayerActs a = p.acts[checkpoint ? 0 : l];
    a.x_in = p.x[l];
    layer_forward(p.x[l + 1], a, layout_.layers[l], batch, pos, l == 0);
  }
  if (n_layers > 0) {
    layer_rows_forward(p.sel, p.x[n_layers - 1], p.last, layout_.layers[n_layers - 1], batch, rows, R, pos);
  } else {
    for (int64_t r = 0; r < R; r++) std::copy(p.x[0] + int64_t(rows[r]) * d, p.x[0] + (int64_t(rows[r]) + 1) * d, p.sel + r * d);
  }
}

double Model::train_backward(float* grads, const Plan& p, const Batch& batch, const int32_t* rows,
                             const int32_t* targets, int64_t R, const RowLoss& loss, float* logprobs,
                             const int32_t* pos) {
  const int64_t N = batch.n_tokens(), d = cfg_.d_model, n_layers = cfg_.n_layers;
  const bool checkpoint = p.checkpoint;
  const double total = head_loss(grads, p.sel, p, targets, R, loss, logprobs);
  zero(p.dx, N * d);
  if (n_layers > 0) {
    layer_rows_backward(grads, p.dx, p.dsel, p.x[n_layers - 1], p.last, p, layout_.layers[n_layers - 1], batch, rows,
                        R, pos);
  } else {
    for (int64_t r = 0; r < R; r++) axpy(p.dx + int64_t(rows[r]) * d, 1.0f, p.dsel + r * d, d);
  }
  for (int64_t l = n_layers - 2; l >= 0; l--) {
    LayerActs a = p.acts[checkpoint ? 0 : l];
    a.x_in = p.x[l];
    // Recompute the layer from its saved input; the ops are the forward's, so the activations
    // (and so the gradients) are bit-identical to keeping them.
    if (checkpoint) layer_forward(nullptr, a, layout_.layers[l], batch, pos, l == 0);
    layer_backward(grads, p.dx, a, p, layout_.layers[l], batch, pos, l == 0);
  }
  embedding_backward(grads + layout_.wte, p.dx, batch.tokens, N, d);
  return total;
}

double Model::loss(float* grads, TrainWorkspace& ws, const Batch& in_batch, const int32_t* in_rows, const int32_t* targets,
                   int64_t n_rows, const RowLoss& loss, float* logprobs) {
  check_live();
  const int64_t R = n_rows;
  // Rows of repeated sequences point into one copy; their gradients add up in layer_rows_backward.
  const bool shared = share_duplicates(shared_, in_batch, in_rows, R);
  const Batch batch = shared ? shared_.batch() : in_batch;
  const int32_t* rows = shared ? shared_.rows.data() : in_rows;
  const bool with_grads = grads != nullptr, checkpoint = ws.checkpoint_activations();
  Plan p;
  int64_t saved_floats = 0, scratch_floats = 0;
  plan(p, nullptr, nullptr, batch.n_tokens(), R, with_grads, checkpoint, &saved_floats, &scratch_floats);
  ws.saved_.resize(saved_floats, "saved activations");
  ws.scratch_.resize(scratch_floats, "training workspace");
  plan(p, ws.saved_.data(), ws.scratch_.data(), batch.n_tokens(), R, with_grads, checkpoint, &saved_floats,
       &scratch_floats);

  if (with_grads) {
    positions(ws.pos_, batch);
    train_forward(p, batch, rows, R, ws.pos_.data());
    return train_backward(grads, p, batch, rows, targets, R, loss, logprobs, ws.pos_.data());
  }
  // The inference path: the same arithmetic through buffers that keep nothing.
  forward_rows(p.sel, batch, rows, R);
  return head_loss(nullptr, p.sel, p, targets, R, loss, logprobs);
}

void Model::forward_keep(KeptForward& kept, TrainWorkspace& ws, float* logits, const Batch& in_batch,
                         const int32_t* in_rows, int64_t R) {
  check_live();
  for (int64_t r = 0; r < R; r++)
    JG_CHECK(in_rows[r] >= 0 && in_rows[r] < in_batch.n_tokens(), "Row ", in_rows[r], " is outside the batch of ",
             in_batch.n_tokens(), " tokens");
  const bool shared = share_duplicates(shared_, in_batch, in_rows, R);
  const Batch batch = shared ? shared_.batch() : in_batch;
  const int32_t* rows = shared ? shared_.rows.data() : in_rows;
  const int64_t N = batch.n_tokens(), d = cfg_.d_model, V = cfg_.embedding_size;
  kept.tokens_.assign(batch.tokens, batch.tokens + N);
  kept.starts_.assign(batch.seq_starts, batch.seq_starts + batch.n_seqs + 1);
  kept.rows_.assign(rows, rows + R);
  positions(kept.pos_, batch);
  Plan p;
  int64_t saved_floats = 0, scratch_floats = 0;
  plan(p, nullptr, nullptr, N, R, true, false, &saved_floats, &scratch_floats);
  kept.saved_.resize(saved_floats, "kept activations");
  ws.scratch_.resize(scratch_floats, "training workspace");
  plan(p, kept.saved_.data(), ws.scratch_.data(), N, R, true, false, &saved_floats, &scratch_floats);
  train_forward(p, batch, rows, R, kept.pos_.data());
  // The head as forward() runs it, so the logits are the same bits.
  rmsnorm_forward(p.xn_sel, nullptr, p.sel, vec(layout_.ln_f), R, d, static_cast<float>(cfg_.rms_norm_eps));
  mm_forward(logits, p.xn_sel, layout_.lm_head, R, d, V);
}

double Model::backward_kept(float* grads, const KeptForward& kept, TrainWorkspace& ws, const int32_t* targets,
                            const RowLoss& loss, float* logprobs) {
  check_live();
  const Batch batch{kept.tokens_.data(), kept.starts_.data(), static_cast<int64_t>(kept.starts_.size()) - 1};
  const int64_t N = batch.n_tokens(), R = kept.n_rows();
  Plan p;
  int64_t saved_floats = 0, scratch_floats = 0;
  plan(p, nullptr, nullptr, N, R, true, false, &saved_floats, &scratch_floats);
  JG_CHECK(saved_floats <= kept.saved_.size(), "No kept forward to run backward through");
  ws.scratch_.resize(scratch_floats, "training workspace");
  // const_cast: the plan only hands out pointers; backward reads the kept activations.
  plan(p, const_cast<float*>(kept.saved_.data()), ws.scratch_.data(), N, R, true, false, &saved_floats, &scratch_floats);
  return train_backward(grads, p, batch, kept.rows_.data(), targets, R, loss, logprobs, kept.pos_.data());
}

}  // namespace jg::cpu
