#include "training.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include "../common/check.h"
#include "../common/memory.h"
#include "loss.h"
#include "ops.h"

namespace jg::cuda {

namespace {

// Hands out consecutive 256-byte aligned pieces of one device buffer; with a null base it only
// counts, so the same code sizes the workspace and then lays it out.
struct Carve {
  char* base;
  int64_t used = 0;
  template <typename T>
  T* take(int64_t n) {
    char* p = base ? base + used : nullptr;
    used += (n * static_cast<int64_t>(sizeof(T)) + 255) / 256 * 256;
    return reinterpret_cast<T*>(p);
  }
  void* take_bytes(int64_t bytes) { return take<char>(bytes); }
};

}  // namespace

// One layer's saved activations: what its backward reads (the names of cpu::LayerActs).
struct Training::Layer {
  float* x_in;   // (N,d) fp32 the layer's input
  void* xn1;     // (N,d) attn_norm(x_in)
  float* rstd1;  // (N)
  void* qkv;     // (N, d + 2 kv) q|k|v after RoPE
  void* att;     // (N,d) attention output
  float* lse;    // (N,H)
  float* x_mid;  // (N,d) fp32 x_in + attn_out(att)
  void* xn2;     // (N,d) ff_norm(x_mid)
  float* rstd2;  // (N)
  void* gu;      // (N, 2 mlp) ff_proj | up_proj, before the activation
  void* act;     // (N, mlp) silu(gate) * up
};

struct Training::Plan {
  int64_t N = 0, S = 0, R = 0;
  bool with_grads = false, checkpoint = false;
  const int32_t *tokens = nullptr, *starts = nullptr, *pos = nullptr, *rows = nullptr;  // the model's upload
  std::vector<float*> x;      // n_layers + 1 residual streams (N,d): each layer's input, then the output
  std::vector<Layer> layers;  // one per layer, or one set refilled per layer (checkpointing, no grads)
  float* sel = nullptr;       // (R,d) fp32 the last stream at the rows
  void* seln = nullptr;       // (R,d) ln_f(sel)
  float* rstd_f = nullptr;    // (R)
  int64_t head_chunk = 1;
  float* logits = nullptr;    // (head_chunk, V) fp32
  void* dlogits = nullptr;    // (head_chunk, V) bf16, or the logits themselves in fp32
  float *lse = nullptr, *logprobs = nullptr, *dlogp = nullptr;  // (R)
  double* row_loss = nullptr;  // (R)
  uint8_t* region = nullptr;   // (R)
  // Backward's temporaries.
  float *dseln = nullptr, *dsel = nullptr;  // (R,d)
  float *dx = nullptr, *dxn = nullptr, *datt = nullptr, *dqkv = nullptr, *dact = nullptr, *dgu = nullptr;
  void* dtmp = nullptr;  // an output gradient rounded to bf16 for the products (bf16 mode)
};

std::unique_ptr<jg::Training> Model::make_training(bool checkpoint_activations, const OptimizerShard* shard) {
  return std::make_unique<Training>(*this, checkpoint_activations, shard);
}

Training::Training(Model& model, bool checkpoint_activations, const OptimizerShard* shard)
    : model_(model), checkpoint_(checkpoint_activations) {
  DeviceScope scope(model_.device());
  const int64_t total = model_.layout().total();
  // Sharded: each moment holds the shard's elements only; the gradients stay whole on the device,
  // with room for ranks * block elements (the reduce-scatter's and the all-gather's buffer under
  // NCCL; over MPI the step stages them through host_ instead).
  int64_t moments = total, grads = total;
  if (shard) {
    shard->check(total);
    moments = std::max<int64_t>(shard->end - shard->begin, 1);
    grads = std::max(total, checked_mul(shard->block, static_cast<int64_t>(shard->ranks)));
  }
  const size_t bytes = static_cast<size_t>(grads) * sizeof(float), mbytes = static_cast<size_t>(moments) * sizeof(float);
  grads_.reserve(bytes, "gradients");
  m_.reserve(mbytes, shard ? "AdamW first moments (shard)" : "AdamW first moments");
  v_.reserve(mbytes, shard ? "AdamW second moments (shard)" : "AdamW second moments");
  model_.master();  // a bf16-only model gains its fp32 masters here
  stats_.reserve(2 * sizeof(double), "optimizer statistics");
  JG_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, bytes, model_.stream()));
  for (DeviceBuffer* b : {&m_, &v_}) JG_CUDA_CHECK(cudaMemsetAsync(b->get(), 0, mbytes, model_.stream()));
  JG_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
  if (shard) {
    shard_ = *shard;
    sharded_ = true;
  }
}

Training::~Training() {
  // Nothing of ours may still be in flight when the buffers go.
  cudaStreamSynchronize(model_.stream());
}

float* Training::live_grads() {
  if (grads_zeroed_) {
    JG_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), model_.stream()));
    grads_zeroed_ = false;
  }
  return static_cast<float*>(grads_.get());
}

void Training::plan(Plan& p, char* saved_base, char* scratch_base, int64_t N, int64_t R, bool with_grads, bool checkpoint,
                    int64_t* saved_bytes, int64_t* scratch_bytes) const {
  const ModelConfig& c = model_.config();
  const int64_t d = c.d_model, H = c.n_heads, kv = c.kv_dim(), mlp = c.mlp_hidden, V = c.embedding_size;
  const int64_t L = c.n_layers, qkd = d + 2 * kv;
  const int es = model_.esize_;
  // `saved`: what backward reads (what a kept rollout step holds on to); `scratch`: the rest.
  Carve saved{saved_base}, scratch{scratch_base};
  p.N = N;
  p.R = R;
  p.with_grads = with_grads;
  // Without gradients nothing is kept: one layer set refilled per layer, as checkpointing does.
  p.checkpoint = checkpoint || !with_grads;
  p.x.assign(L + 1, nullptr);
  for (auto& x : p.x) x = saved.take<float>(N * d);
  p.layers.assign(p.checkpoint ? std::min<int64_t>(L, 1) : L, Layer{});
  Carve& w = p.checkpoint ? scratch : saved;
  for (Layer& a : p.layers) {
    a.xn1 = w.take_bytes(N * d * es);
    a.rstd1 = w.take<float>(N);
    a.qkv = w.take_bytes(N * qkd * es);
    a.att = w.take_bytes(N * d * es);
    a.lse = w.take<float>(N * H);
    a.x_mid = w.take<float>(N * d);
    a.xn2 = w.take_bytes(N * d * es);
    a.rstd2 = w.take<float>(N);
    a.gu = w.take_bytes(N * 2 * mlp * es);
    a.act = w.take_bytes(N * mlp * es);
  }
  p.sel = saved.take<float>(R * d);
  p.seln = scratch.take_bytes(R * d * es);
  p.rstd_f = scratch.take<float>(R);
  // Grid rows of the head's kernels are at most 65535.
  p.head_chunk = std::max<int64_t>(1, std::min<int64_t>({R, kHeadChunkFloats / std::max<int64_t>(V, 1), 65535}));
  p.logits = scratch.take<float>(p.head_chunk * V);
  p.dlogits = with_grads && es != 4 ? scratch.take_bytes(p.head_chunk * V * es) : p.logits;
  p.lse = scratch.take<float>(R);
  p.logprobs = scratch.take<float>(R);
  p.dlogp = scratch.take<float>(R);
  p.row_loss = scratch.take<double>(R);
  p.region = scratch.take<uint8_t>(R);
  if (with_grads) {
    p.dseln = scratch.take<float>(R * d);
    p.dsel = scratch.take<float>(R * d);
    p.dx = scratch.take<float>(N * d);
    p.dxn = scratch.take<float>(N * d);
    p.datt = scratch.take<float>(N * d);
    p.dqkv = scratch.take<float>(N * qkd);
    p.dact = scratch.take<float>(N * mlp);
    p.dgu = scratch.take<float>(N * 2 * mlp);
    p.dtmp = es != 4 ? scratch.take_bytes(std::max({R * d, N * qkd, N * 2 * mlp}) * es) : nullptr;
  }
  *saved_bytes = saved.used;
  *scratch_bytes = scratch.used;
}

int64_t Training::workspace_bytes(int64_t n_tokens, int64_t n_rows) const {
  Plan p;
  int64_t saved = 0, scratch = 0;
  plan(p, nullptr, nullptr, n_tokens, n_rows, true, checkpoint_, &saved, &scratch);
  return saved + scratch;
}

const void* Training::as_act(const float* dout, int64_t n, void* scratch) {
  if (model_.dtype() == DType::F32) return dout;
  convert_from_f32(scratch, model_.dtype(), dout, n, model_.stream());
  return scratch;
}

void Training::layer_forward(const Layer& a, float* x_out, const LayerParams& L, const Plan& p) {
  const ModelConfig& c = model_.config();
  const int64_t N = p.N, d = c.d_model, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim();
  const int64_t kv = c.kv_dim(), mlp = c.mlp_hidden, qkd = d + 2 * kv;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const DType t = model_.dtype();
  const int es = model_.esize_;
  cudaStream_t s = model_.stream();
  const float* cos_t = static_cast<const float*>(model_.rope_.get());
  const float* sin_t = cos_t + c.max_seq_len * (hd / 2);
  char* qkv = static_cast<char*>(a.qkv);

  rmsnorm_forward(a.xn1, a.rstd1, a.x_in, model_.param(L.attn_norm), t, N, d, eps, s);
  model_.project(qkv, qkd, a.xn1, N, d, {{L.q_proj, d}, {L.k_proj, kv}, {L.v_proj, kv}});
  rope_forward(qkv, t, qkd, p.pos, cos_t, sin_t, N, H, hd, s);
  rope_forward(qkv + d * es, t, qkd, p.pos, cos_t, sin_t, N, KV, hd, s);
  attention_forward(a.att, d, a.lse, qkv, qkd, qkv + d * es, qkv + (d + kv) * es, qkd, t, p.starts, p.S,
                    model_.max_len_, H, KV, hd, s);
  JG_CUDA_CHECK(cudaMemcpyAsync(a.x_mid, a.x_in, N * d * sizeof(float), cudaMemcpyDeviceToDevice, s));
  model_.blas_->matmul_forward(a.x_mid, DType::F32, d, a.att, model_.param(L.attn_out), t, N, d, d, 1.0f);
  rmsnorm_forward(a.xn2, a.rstd2, a.x_mid, model_.param(L.ff_norm), t, N, d, eps, s);
  char* gu = static_cast<char*>(a.gu);
  model_.project(gu, 2 * mlp, a.xn2, N, d, {{L.ff_proj, mlp}, {L.up_proj, mlp}});
  swiglu_forward(a.act, gu, gu + mlp * es, 2 * mlp, t, N, mlp, s);
  // Recomputing a checkpointed layer for its backward stops here: the output is already saved.
  if (!x_out) return;
  JG_CUDA_CHECK(cudaMemcpyAsync(x_out, a.x_mid, N * d * sizeof(float), cudaMemcpyDeviceToDevice, s));
  model_.blas_->matmul_forward(x_out, DType::F32, d, a.act, model_.param(L.ff_out), t, N, mlp, d, 1.0f);
}

void Training::project_backward(float* dinp, const void* dout, int64_t ldd, const void* inp, int64_t N, int64_t C,
                                std::initializer_list<Model::Part> parts) {
  float* G = static_cast<float*>(grads_.get());
  const DType t = model_.dtype();
  bool contiguous = true;
  int64_t total = 0;
  const Model::Part* prev = nullptr;
  for (const Model::Part& q : parts) {
    if (prev && q.offset != prev->offset + prev->rows * C) contiguous = false;
    total += q.rows;
    prev = &q;
  }
  // The gradients lie in the parameters' layout, so weights side by side have gradients side by side.
  if (contiguous) {
    const int64_t off = parts.begin()->offset;
    model_.blas_->matmul_backward(dinp, C, G + off, dout, ldd, inp, model_.param(off), t, N, C, total);
    return;
  }
  int64_t col = 0;
  for (const Model::Part& q : parts) {
    model_.blas_->matmul_backward(dinp, C, G + q.offset, static_cast<const char*>(dout) + col * model_.esize_, ldd,
                                  inp, model_.param(q.offset), t, N, C, q.rows);
    col += q.rows;
  }
}

// dx (N,d): in, the gradient of the layer's output; out, that of its input. Gradients +=.
void Training::layer_backward(float* dx, const Layer& a, const LayerParams& L, const Plan& p) {
  const ModelConfig& c = model_.config();
  const int64_t N = p.N, d = c.d_model, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim();
  const int64_t kv = c.kv_dim(), mlp = c.mlp_hidden, qkd = d + 2 * kv;
  const DType t = model_.dtype();
  const int es = model_.esize_;
  cudaStream_t s = model_.stream();
  float* G = static_cast<float*>(grads_.get());
  const float* cos_t = static_cast<const float*>(model_.rope_.get());
  const float* sin_t = cos_t + c.max_seq_len * (hd / 2);
  const char* gu = static_cast<const char*>(a.gu);
  const char* qkv = static_cast<const char*>(a.qkv);
  auto zero = [&](float* q, int64_t n) { JG_CUDA_CHECK(cudaMemsetAsync(q, 0, n * sizeof(float), s)); };

  // x_out = x_mid + ff_out(silu(ff_proj(xn2)) * up_proj(xn2)): the residual passes dx through, and
  // the branch gets dx as its output gradient.
  zero(p.dact, N * mlp);
  model_.blas_->matmul_backward(p.dact, mlp, G + L.ff_out, as_act(dx, N * d, p.dtmp), d, a.act,
                                model_.param(L.ff_out), t, N, mlp, d);
  zero(p.dgu, N * 2 * mlp);
  swiglu_backward(p.dgu, p.dgu + mlp, 2 * mlp, p.dact, gu, gu + mlp * es, 2 * mlp, t, N, mlp, s);
  zero(p.dxn, N * d);
  project_backward(p.dxn, as_act(p.dgu, N * 2 * mlp, p.dtmp), 2 * mlp, a.xn2, N, d, {{L.ff_proj, mlp}, {L.up_proj, mlp}});
  rmsnorm_backward(dx, G + L.ff_norm, p.dxn, a.x_mid, model_.param(L.ff_norm), t, a.rstd2, N, d, s);

  // x_mid = x_in + attn_out(attention(rope(q), rope(k), v)), q|k|v from xn1.
  zero(p.datt, N * d);
  model_.blas_->matmul_backward(p.datt, d, G + L.attn_out, as_act(dx, N * d, p.dtmp), d, a.att,
                                model_.param(L.attn_out), t, N, d, d);
  zero(p.dqkv, N * qkd);
  attention_backward(p.dqkv, qkd, p.dqkv + d, p.dqkv + d + kv, qkd, p.datt, d, qkv, qkd, qkv + d * es,
                     qkv + (d + kv) * es, qkd, a.att, d, a.lse, t, p.starts, p.S, model_.max_len_, H, KV, hd, s);
  rope_backward(p.dqkv, qkd, p.pos, cos_t, sin_t, N, H, hd, s);
  rope_backward(p.dqkv + d, qkd, p.pos, cos_t, sin_t, N, KV, hd, s);
  zero(p.dxn, N * d);
  project_backward(p.dxn, as_act(p.dqkv, N * qkd, p.dtmp), qkd, a.xn1, N, d,
                   {{L.q_proj, d}, {L.k_proj, kv}, {L.v_proj, kv}});
  rmsnorm_backward(dx, G + L.attn_norm, p.dxn, a.x_in, model_.param(L.attn_norm), t, a.rstd1, N, d, s);
}

double Training::head_loss(bool backward, const Plan& p, int64_t R, const int32_t* targets, const LossSpec& spec,
                           float* logprobs, uint8_t* region) {
  const ModelConfig& c = model_.config();
  const int64_t d = c.d_model, V = c.embedding_size;
  const DType t = model_.dtype();
  const int es = model_.esize_;
  cudaStream_t s = model_.stream();
  float* G = backward ? static_cast<float*>(grads_.get()) : nullptr;
  const bool grpo = spec.kind == LossSpec::Kind::GRPO;

  // The loss's inputs in one upload: targets, excluded ids, then the per-row arrays.
  const int64_t n_ex = static_cast<int64_t>(spec.excluded.size());
  const int n_arrays = grpo ? 4 : 1;
  std::vector<int32_t> host(R + n_ex + n_arrays * R);
  std::copy(spec.excluded.begin(), spec.excluded.end(), host.begin() + R);
  float* fhost = reinterpret_cast<float*>(host.data() + R + n_ex);
  const float* src[4] = {spec.weights, spec.old_logprobs, spec.advantages, spec.ref_logprobs};
  for (int i = 0; i < n_arrays; i++) {
    if (src[i]) std::copy(src[i], src[i] + R, fhost + i * R);
    else std::fill(fhost + i * R, fhost + (i + 1) * R, 0.0f);
  }
  std::copy(targets, targets + R, host.begin());
  int32_t* d_in = inputs_.reserve_as<int32_t>(host.size(), "loss inputs");
  JG_CUDA_CHECK(cudaMemcpyAsync(d_in, host.data(), host.size() * sizeof(int32_t), cudaMemcpyHostToDevice, s));
  const int32_t* d_targets = d_in;
  const int32_t* d_excluded = d_in + R;
  const float* d_arrays = reinterpret_cast<const float*>(d_in + R + n_ex);

  rmsnorm_forward(p.seln, p.rstd_f, p.sel, model_.param(model_.layout_.ln_f), t, R, d,
                  static_cast<float>(c.rms_norm_eps), s);
  if (backward) JG_CUDA_CHECK(cudaMemsetAsync(p.dseln, 0, R * d * sizeof(float), s));
  const void* W = model_.param(model_.layout_.lm_head);
  for (int64_t r0 = 0; r0 < R; r0 += p.head_chunk) {
    const int64_t rc = std::min(p.head_chunk, R - r0);
    const char* xn = static_cast<const char*>(p.seln) + r0 * d * es;
    model_.blas_->matmul_forward(p.logits, DType::F32, V, xn, W, t, rc, d, V);
    logsoftmax_forward(p.logprobs + r0, p.lse + r0, p.logits, d_targets + r0, rc, V, d_excluded,
                       static_cast<int>(n_ex), s);
    RowLossArgs a;
    a.grpo = grpo;
    a.weights = d_arrays + r0;
    if (grpo) {
      a.old_logprobs = d_arrays + R + r0;
      a.advantages = d_arrays + 2 * R + r0;
      a.ref_logprobs = spec.ref_logprobs ? d_arrays + 3 * R + r0 : nullptr;
      a.eps_low = spec.eps_low;
      a.eps_high = spec.eps_high;
      a.beta = spec.ref_logprobs ? spec.beta : 0.0;
    }
    row_loss(p.row_loss + r0, p.dlogp + r0, p.region + r0, p.logprobs + r0, a, rc, s);
    if (!backward) continue;
    // The chunk's logits become d loss / d logits (rounded once in bf16), then the head's GEMMs.
    logsoftmax_backward(p.dlogits, t, p.dlogp + r0, p.logits, p.lse + r0, d_targets + r0, rc, V, s);
    model_.blas_->matmul_backward(p.dseln + r0 * d, d, G + model_.layout_.lm_head, p.dlogits, V, xn, W, t, rc, d, V);
  }
  if (backward) {
    JG_CUDA_CHECK(cudaMemsetAsync(p.dsel, 0, R * d * sizeof(float), s));
    rmsnorm_backward(p.dsel, G + model_.layout_.ln_f, p.dseln, p.sel, model_.param(model_.layout_.ln_f), t, p.rstd_f,
                     R, d, s);
  }
  std::vector<double> losses(R);
  JG_CUDA_CHECK(cudaMemcpyAsync(losses.data(), p.row_loss, R * sizeof(double), cudaMemcpyDeviceToHost, s));
  JG_CUDA_CHECK(cudaMemcpyAsync(logprobs, p.logprobs, R * sizeof(float), cudaMemcpyDeviceToHost, s));
  if (grpo && region) JG_CUDA_CHECK(cudaMemcpyAsync(region, p.region, R, cudaMemcpyDeviceToHost, s));
  JG_CUDA_CHECK(cudaStreamSynchronize(s));
  // Summed in row order in double, as the CPU backend sums.
  double total = 0;
  for (double l : losses) total += l;
  return total;
}

// Lays out the workspace (saved activations in `saved`, or in work_ too when null) for the batch
// the model just uploaded, and points the plan at the upload's integers.
void Training::lay_out(Plan& p, DeviceBuffer* saved, const Batch& batch, int64_t R, bool with_grads, bool checkpoint) {
  const int64_t N = batch.n_tokens();
  int64_t saved_bytes = 0, scratch_bytes = 0;
  plan(p, nullptr, nullptr, N, R, with_grads, checkpoint, &saved_bytes, &scratch_bytes);
  char* s_base = nullptr;
  char* w_base = nullptr;
  if (saved) {
    s_base = static_cast<char*>(saved->reserve(static_cast<size_t>(saved_bytes), "kept activations"));
    w_base = static_cast<char*>(work_.reserve(static_cast<size_t>(scratch_bytes), "training workspace"));
  } else {
    w_base = static_cast<char*>(work_.reserve(static_cast<size_t>(saved_bytes + scratch_bytes), "training workspace"));
    s_base = w_base + scratch_bytes;
  }
  plan(p, s_base, w_base, N, R, with_grads, checkpoint, &saved_bytes, &scratch_bytes);
  const int32_t* ints = static_cast<const int32_t*>(model_.ints_.get());
  p.S = batch.n_seqs;
  p.tokens = ints;
  p.starts = ints + N;
  p.pos = ints + N + p.S + 1;
  p.rows = ints + 2 * N + p.S + 1;
}

void Training::train_forward(const Plan& p) {
  const int64_t d = model_.config().d_model, n_layers = model_.config().n_layers;
  model_.tokens_computed_ += p.N;
  embedding_forward(p.x[0], p.tokens, model_.param(model_.layout_.wte), model_.dtype(), p.N, d, model_.stream());
  for (int64_t l = 0; l < n_layers; l++) {
    Layer a = p.layers[p.checkpoint ? 0 : l];
    a.x_in = p.x[l];
    layer_forward(a, p.x[l + 1], model_.layout_.layers[l], p);
  }
  gather_rows(p.sel, p.x[n_layers], p.rows, p.R, d, model_.stream());
}

double Training::train_backward(const Plan& p, const int32_t* targets, const LossSpec& spec, float* logprobs,
                                uint8_t* region) {
  const int64_t d = model_.config().d_model, n_layers = model_.config().n_layers;
  cudaStream_t s = model_.stream();
  float* G = live_grads();
  const double total = head_loss(true, p, p.R, targets, spec, logprobs, region);
  JG_CUDA_CHECK(cudaMemsetAsync(p.dx, 0, p.N * d * sizeof(float), s));
  scatter_add_rows(p.dx, p.dsel, p.rows, p.R, d, s);
  for (int64_t l = n_layers - 1; l >= 0; l--) {
    Layer a = p.layers[p.checkpoint ? 0 : l];
    a.x_in = p.x[l];
    // Recomputed from the saved input with the forward's own ops, so the activations (and the
    // gradients) are bit-identical to keeping them.
    if (p.checkpoint) layer_forward(a, nullptr, model_.layout_.layers[l], p);
    layer_backward(p.dx, a, model_.layout_.layers[l], p);
  }
  embedding_backward(G + model_.layout_.wte, p.dx, p.tokens, p.N, d, s);
  JG_CUDA_CHECK(cudaStreamSynchronize(s));
  return total;
}

double Training::loss(bool backward, const Batch& in_batch, const int32_t* in_rows, const int32_t* targets,
                      int64_t n_rows, const LossSpec& spec, float* logprobs, uint8_t* region) {
  DeviceScope scope(model_.device());
  JG_CHECK_AS(ErrorKind::DISPOSED, model_.weights_.get() != nullptr, "Model is disposed");
  // Identical sequences are computed once; their rows point into the one copy, and the gradients of
  // repeated rows add up in scatter_add_rows.
  const int32_t* rows = in_rows;
  const Batch batch = model_.distinct(in_batch, rows, n_rows);
  model_.upload_batch(batch, rows, n_rows);
  Plan p;
  lay_out(p, nullptr, batch, n_rows, backward, checkpoint_);
  train_forward(p);
  if (!backward) return head_loss(false, p, n_rows, targets, spec, logprobs, region);
  return train_backward(p, targets, spec, logprobs, region);
}

// The step's training forward with every layer's activations kept in `k`, then the head on the
// rows as the inference forward computes it: logits (R, embedding_size) on the device.
int64_t Training::forward_keep(Kept& k, float* d_logits, const Batch& in_batch, const int32_t* in_rows, int64_t R) {
  const int32_t* rows = in_rows;
  const Batch batch = model_.distinct(in_batch, rows, R);
  const int64_t N = batch.n_tokens();
  k.tokens.assign(batch.tokens, batch.tokens + N);
  k.starts.assign(batch.seq_starts, batch.seq_starts + batch.n_seqs + 1);
  k.rows.assign(rows, rows + R);
  model_.upload_batch(batch, rows, R);
  Plan p;
  lay_out(p, &k.saved, batch, R, true, false);
  train_forward(p);
  const ModelConfig& c = model_.config();
  rmsnorm_forward(p.seln, p.sel, model_.param(model_.layout_.ln_f), model_.dtype(), R, c.d_model,
                  static_cast<float>(c.rms_norm_eps), model_.stream());
  model_.blas_->matmul_forward(d_logits, DType::F32, c.embedding_size, p.seln, model_.param(model_.layout_.lm_head),
                               model_.dtype(), R, c.d_model, c.embedding_size);
  return kept_step_bytes(N, R);
}

int64_t Training::kept_step_bytes(int64_t n_tokens, int64_t n_rows) const {
  Plan p;
  int64_t saved = 0, scratch = 0;
  plan(p, nullptr, nullptr, n_tokens, n_rows, true, false, &saved, &scratch);
  return saved;
}

// Data parallelism's step: the gradients summed over the ranks, then the plain step, whose
// statistics (non-finite count, norm) are then global because every rank holds the same sums.
StepStats Training::step(const AdamWOptions& o, GradComm& comm) {
  if (sharded_) return step_sharded(o, comm);
  if (!comm.on_device()) {
    // Host-memory collectives (MPI): the gradients go through the host parameter by parameter
    // (Training::reduce_grads).
    reduce_grads(model_.layout(), [&](float* d, int64_t n) { comm.all_reduce_sum(d, n); });
    return step(o);
  }
  // Device collectives (NCCL, on the model's stream): the whole gradient buffer in one call,
  // alignment padding included (zeros on every rank), so a rank that ran no backward this step
  // (zero_grad() pending) contributes its zeros.
  DeviceScope scope(model_.device());
  comm.all_reduce_sum(live_grads(), model_.layout().total());
  return step(o);
}

// As cpu::Training::step: non-finite gradients zeroed and counted, the global norm (before
// clipping), clipping by max_grad_norm / (norm + 1e-6) when below 1, then AdamW on every parameter
// (weight decay on the matrices only) and, in bf16 mode, the bf16 copy rewritten from the master.
StepStats Training::step(const AdamWOptions& o) {
  if (sharded_) {
    // One process holding a shard (of one rank): the sharded step with nobody to talk to.
    JG_CHECK_AS(ErrorKind::INTERNAL, shard_.ranks == 1, "A step of one rank's optimizer shard needs the other ",
                shard_.ranks - 1, " ranks: give the step a communicator");
    LocalGradComm solo;
    return step_sharded(o, solo);
  }
  DeviceScope scope(model_.device());
  cudaStream_t s = model_.stream();
  StepStats out;
  float* P = master();
  // Kept activations are stale from here on, even when the update is skipped.
  model_.weights_changed();
  const int64_t total = model_.layout().total();
  float* g = live_grads();
  int64_t* d_count = static_cast<int64_t*>(stats_.get());
  double* d_sumsq = static_cast<double*>(stats_.get()) + 1;
  JG_CUDA_CHECK(cudaMemsetAsync(stats_.get(), 0, 2 * sizeof(double), s));
  nonfinite_zero(g, total, d_count, s);
  grad_sumsq(g, total, d_sumsq, s);
  double host[2] = {0, 0};
  JG_CUDA_CHECK(cudaMemcpyAsync(host, stats_.get(), sizeof(host), cudaMemcpyDeviceToHost, s));
  JG_CUDA_CHECK(cudaStreamSynchronize(s));
  int64_t non_finite = 0;
  std::memcpy(&non_finite, &host[0], sizeof(int64_t));
  const double scale = step_decision(o, non_finite, host[1], out);
  // skip_non_finite: one bad value drops the whole update (weights, moments, step count unchanged).
  if (out.skipped) return out;
  if (out.clipped) grad_scale(g, static_cast<float>(scale), total, s);
  step_++;
  const bool bf16 = model_.dtype() != DType::F32;
  for (const ParamInfo& q : model_.layout().params()) {
    const bool matrix = q.shape.size() == 2;
    const AdamWParams hp{o.lr, o.beta1, o.beta2, o.eps, matrix ? o.weight_decay : 0.0, step_};
    adamw_update(P + q.offset, moment(Moment::M) + q.offset, moment(Moment::V) + q.offset, g + q.offset,
                 bf16 ? model_.param(q.offset) : nullptr, q.numel, hp, s);
  }
  JG_CUDA_CHECK(cudaStreamSynchronize(s));
  return out;
}

void Training::shard_optimizer(const OptimizerShard& shard) {
  shard.check(model_.layout().total());
  JG_CHECK(!sharded_, "The optimizer state is already sharded");
  DeviceScope scope(model_.device());
  cudaStream_t s = model_.stream();
  const int64_t n = shard.end - shard.begin;
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float);
  const int64_t full = checked_mul(shard.block, static_cast<int64_t>(shard.ranks));
  if (static_cast<size_t>(full) * sizeof(float) > grads_.bytes()) {
    // Room for ranks * block gradient elements (see the constructor); the gradients so far kept.
    DeviceBuffer g;
    g.reserve(static_cast<size_t>(full) * sizeof(float), "gradients");
    JG_CUDA_CHECK(cudaMemsetAsync(g.get(), 0, g.bytes(), s));
    JG_CUDA_CHECK(cudaMemcpyAsync(g.get(), grads_.get(), grads_.bytes(), cudaMemcpyDeviceToDevice, s));
    JG_CUDA_CHECK(cudaStreamSynchronize(s));
    grads_ = std::move(g);
  }
  // The moments held so far (zeros unless set) keep their shard's part; the rest is freed.
  for (DeviceBuffer* b : {&m_, &v_}) {
    DeviceBuffer mine;
    mine.reserve(bytes, b == &m_ ? "AdamW first moments (shard)" : "AdamW second moments (shard)");
    JG_CUDA_CHECK(cudaMemsetAsync(mine.get(), 0, bytes, s));
    if (n > 0)
      JG_CUDA_CHECK(cudaMemcpyAsync(mine.get(), static_cast<float*>(b->get()) + shard.begin, static_cast<size_t>(n) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, s));
    JG_CUDA_CHECK(cudaStreamSynchronize(s));
    *b = std::move(mine);
  }
  shard_ = shard;
  sharded_ = true;
}

// ZeRO-1, as cpu::Training::step_sharded: the gradients reduce-scattered, the non-finite count and
// the sum of squares of the shard summed over the ranks (so skipping, clipping and grad_norm agree
// everywhere), AdamW on the shard, and the updated fp32 weights all-gathered (then the bf16 copy
// rewritten). Under NCCL the collectives run on the device: the gradient buffer holds ranks * block
// elements and, once AdamW has read it, is the all-gather's buffer too. Over MPI the gradients and
// weights are staged through host_ (ranks * block floats of host memory, made on first use).
StepStats Training::step_sharded(const AdamWOptions& o, GradComm& comm) {
  const OptimizerShard& sh = shard_;
  sh.check_ranks(comm);
  DeviceScope scope(model_.device());
  cudaStream_t s = model_.stream();
  StepStats out;
  float* P = master();
  model_.weights_changed();
  const int64_t total = model_.layout().total(), n = sh.end - sh.begin, full = sh.block * sh.ranks;
  const size_t f = sizeof(float);
  const bool device = comm.on_device();
  float* g = live_grads();
  float* gs = g + sh.begin;
  if (device) {
    // Past the layout the buffer is slack that the previous step's all-gather wrote.
    if (full > total) JG_CUDA_CHECK(cudaMemsetAsync(g + total, 0, static_cast<size_t>(full - total) * f, s));
    comm.reduce_scatter_sum(g, sh.block);
  } else {
    host_.resize(static_cast<size_t>(full));
    float* h = host_.data();
    JG_CUDA_CHECK(cudaMemcpyAsync(h, g, static_cast<size_t>(total) * f, cudaMemcpyDeviceToHost, s));
    JG_CUDA_CHECK(cudaStreamSynchronize(s));
    std::fill(host_.begin() + total, host_.end(), 0.0f);
    comm.reduce_scatter_sum(h, sh.block);
    if (n > 0) JG_CUDA_CHECK(cudaMemcpyAsync(gs, h + sh.begin, static_cast<size_t>(n) * f, cudaMemcpyHostToDevice, s));
  }
  int64_t* d_count = static_cast<int64_t*>(stats_.get());
  double* d_sumsq = static_cast<double*>(stats_.get()) + 1;
  JG_CUDA_CHECK(cudaMemsetAsync(stats_.get(), 0, 2 * sizeof(double), s));
  if (n > 0) {
    nonfinite_zero(gs, n, d_count, s);
    grad_sumsq(gs, n, d_sumsq, s);
  }
  double host[2] = {0, 0};
  JG_CUDA_CHECK(cudaMemcpyAsync(host, stats_.get(), sizeof(host), cudaMemcpyDeviceToHost, s));
  JG_CUDA_CHECK(cudaStreamSynchronize(s));
  int64_t count = 0;
  std::memcpy(&count, &host[0], sizeof(int64_t));
  double stats[2] = {static_cast<double>(count), host[1]};
  comm.all_reduce_host(stats, 2);
  const double scale = step_decision(o, static_cast<int64_t>(stats[0]), stats[1], out);
  if (out.skipped) return out;
  if (out.clipped && n > 0) grad_scale(gs, static_cast<float>(scale), n, s);
  step_++;
  for (const ParamInfo& q : model_.layout().params()) {
    const auto [lo, hi] = owned(q);
    if (lo >= hi) continue;
    const bool matrix = q.shape.size() == 2;
    const AdamWParams hp{o.lr, o.beta1, o.beta2, o.eps, matrix ? o.weight_decay : 0.0, step_};
    adamw_update(P + lo, moment(Moment::M) + (lo - sh.begin), moment(Moment::V) + (lo - sh.begin), g + lo, nullptr, hi - lo, hp, s);
  }
  if (device) {
    // The gradients are spent: their buffer carries the weights (the next loss zeroes it first).
    if (n > 0) JG_CUDA_CHECK(cudaMemcpyAsync(gs, P + sh.begin, static_cast<size_t>(n) * f, cudaMemcpyDeviceToDevice, s));
    comm.all_gather(g, sh.block * static_cast<int64_t>(f));
    JG_CUDA_CHECK(cudaMemcpyAsync(P, g, static_cast<size_t>(total) * f, cudaMemcpyDeviceToDevice, s));
    grads_zeroed_ = true;
  } else {
    float* h = host_.data();
    if (n > 0) JG_CUDA_CHECK(cudaMemcpyAsync(h + sh.begin, P + sh.begin, static_cast<size_t>(n) * f, cudaMemcpyDeviceToHost, s));
    JG_CUDA_CHECK(cudaStreamSynchronize(s));
    comm.all_gather(h, sh.block * static_cast<int64_t>(f));
    JG_CUDA_CHECK(cudaMemcpyAsync(P, h, static_cast<size_t>(total) * f, cudaMemcpyHostToDevice, s));
  }
  if (model_.dtype() != DType::F32) convert_from_f32(model_.param(0), model_.dtype(), P, total, s);
  JG_CUDA_CHECK(cudaStreamSynchronize(s));
  return out;
}

void Training::get_grad(float* dst, const ParamInfo& p) {
  DeviceScope scope(model_.device());
  if (grads_zeroed_) {
    std::memset(dst, 0, static_cast<size_t>(p.numel) * sizeof(float));
    return;
  }
  JG_CUDA_CHECK(cudaMemcpyAsync(dst, static_cast<float*>(grads_.get()) + p.offset, p.numel * sizeof(float),
                                cudaMemcpyDeviceToHost, model_.stream()));
  JG_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
}

void Training::set_grad(const ParamInfo& p, const float* src) {
  DeviceScope scope(model_.device());
  JG_CUDA_CHECK(cudaMemcpyAsync(live_grads() + p.offset, src, p.numel * sizeof(float), cudaMemcpyHostToDevice,
                                model_.stream()));
  JG_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
}

// Sharded: zeros outside this rank's shard, and writes there are ignored (backend.h).
void Training::get_moment(float* dst, const ParamInfo& p, Moment which) {
  DeviceScope scope(model_.device());
  int64_t lo = p.offset, hi = p.offset + p.numel, base = 0;
  if (sharded_) {
    std::memset(dst, 0, static_cast<size_t>(p.numel) * sizeof(float));
    std::tie(lo, hi) = owned(p);
    base = shard_.begin;
  }
  if (lo >= hi) return;
  JG_CUDA_CHECK(cudaMemcpyAsync(dst + (lo - p.offset), moment(which) + (lo - base), (hi - lo) * sizeof(float), cudaMemcpyDeviceToHost,
                                model_.stream()));
  JG_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
}

void Training::set_moment(const ParamInfo& p, Moment which, const float* src) {
  DeviceScope scope(model_.device());
  int64_t lo = p.offset, hi = p.offset + p.numel, base = 0;
  if (sharded_) {
    std::tie(lo, hi) = owned(p);
    base = shard_.begin;
  }
  if (lo >= hi) return;
  JG_CUDA_CHECK(cudaMemcpyAsync(moment(which) + (lo - base), src + (lo - p.offset), (hi - lo) * sizeof(float), cudaMemcpyHostToDevice,
                                model_.stream()));
  JG_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
}

void Training::write_moment(TensorWriter& w, const ParamInfo& p, Moment which) {
  std::vector<float> host(p.numel);
  get_moment(host.data(), p, which);
  w.write_tensor(host.data(), p.numel, DType::F32);
}

// Sharded: only the shard's part of the tensor is read from the file.
void Training::read_moment(const ParamInfo& p, Moment which, DType dtype, const std::string& path, int64_t offset) {
  std::vector<float> host(p.numel);
  if (sharded_) {
    const auto [lo, hi] = owned(p);
    if (lo < hi) read_tensor(host.data() + (lo - p.offset), hi - lo, dtype, path, offset + (lo - p.offset) * dtype_size(dtype), p.name);
  } else {
    read_tensor(host.data(), p.numel, dtype, path, offset, p.name);
  }
  set_moment(p, which, host.data());
}

ForwardHook Training::keeping_forward(double budget) {
  // The decode loop runs in the worker with the engine claimed, so nothing else touches the kept
  // state. On this backend the hook's logits are device memory (decode.cpp hands over its own).
  return [this, budget](float* d_logits, const Batch& b, const int32_t* rows, int64_t R, int64_t step) {
    DeviceScope scope(model_.device());
    if (step == 0) {
      kept_steps_ = 0;
      kept_bytes_ = 0;
      kept_version_ = model_.weights_version();
    }
    if (step == kept_steps_) {
      // At most this much (less when identical sequences are kept once).
      const int64_t need = kept_step_bytes(b.n_tokens(), R);
      if (static_cast<double>(kept_bytes_ + need) <= budget) {
        if (static_cast<int64_t>(kept_.size()) <= step) kept_.resize(step + 1);
        try {
          // Less than `need` when identical sequences were kept once.
          kept_bytes_ += forward_keep(kept_[step], d_logits, b, rows, R);
          kept_steps_ = step + 1;
          return;
        } catch (const OutOfMemoryError&) {
          // The GPU cannot hold this step's activations: keep the steps so far and run the rest as
          // plain forwards.
          kept_[step].release();
        }
      }
    }
    model_.forward_device(d_logits, b, rows, R);
  };
}

int64_t Training::kept_steps() const { return kept_version_ == model_.weights_version() ? kept_steps_ : 0; }

double Training::backward_kept(int64_t step, const int32_t* targets, const LossSpec& spec, float* logprobs,
                               uint8_t* region) {
  DeviceScope scope(model_.device());
  JG_CHECK(step >= 0 && step < kept_steps(), "No kept forward for rollout step ", step);
  Kept& k = kept_[step];
  const Batch batch{k.tokens.data(), k.starts.data(), static_cast<int64_t>(k.starts.size()) - 1};
  const int64_t R = static_cast<int64_t>(k.rows.size());
  model_.upload_batch(batch, k.rows.data(), R);
  Plan p;
  // The kept buffer is already as large as this plan's saved part: reserve() hands it back as is.
  lay_out(p, &k.saved, batch, R, true, false);
  return train_backward(p, targets, spec, logprobs, region);
}

void Training::release_kept() {
  for (Kept& k : kept_) k.release();
  kept_.clear();
  kept_steps_ = 0;
  kept_bytes_ = 0;
}

}  // namespace jg::cuda
