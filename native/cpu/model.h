// The LLaDA model on the CPU, the reference backend: parameters in fp32 (with dtype BF16, the
// matrix products in bf16 through oneDNN from a bf16 copy of the weight matrices, everything else
// as in fp32; for inference, the matrices in bf16 alone), the forward pass over a
// packed batch, and the training path (a forward that keeps what backward needs, a loss over
// selected rows, backward). Implements the Backend interface (native/common/backend.h); the
// training state over it is cpu::Training (training.h).
#pragma once

#include <atomic>

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "../common/backend.h"
#include "../common/buffer.h"
#include "../common/config.h"
#include "../common/layout.h"
#include "loss.h"

namespace jg::cpu {

// One layer's activations. Inference points every layer at one set, in place (x_mid and the
// output are x_in, xn2 is xn1, act is gate) with nothing saved; training gives each layer its own
// set (or, with activation checkpointing, one set refilled per layer in backward).
struct LayerActs {
  float* x_in;   // (N,d) the layer's input, the residual stream
  float* xn1;    // (N,d) attn_norm(x_in)
  float* rstd1;  // (N) saved 1/rms, or null
  float* q;      // (N,d) after RoPE
  float* k;      // (N,kv) after RoPE
  float* v;      // (N,kv)
  float* att;    // (N,d) attention output, before attn_out
  float* lse;    // (N,H) saved log-sum-exp of each score row, or null
  float* x_mid;  // (N,d) x_in + attn_out(att)
  float* xn2;    // (N,d) ff_norm(x_mid)
  float* rstd2;  // (N) or null
  float* gate;   // (N,mlp) ff_proj(xn2), before SiLU
  float* up;     // (N,mlp) up_proj(xn2)
  float* act;    // (N,mlp) silu(gate) * up
  float* proj;   // (N,d) scratch: a branch's output before the residual add
};

// The last layer's activations when only R rows' outputs are read (the LM head's rows): keys and
// values need every row, the queries, attention output, residual and MLP only the R rows.
// Inference aliases x_mid with the output, xn2 with xn1_r and act with gate, and saves nothing.
struct RowActs {
  float* xn1;    // (N,d) attn_norm(x_in)
  float* rstd1;  // (N) or null
  float* k;      // (N,kv) after RoPE
  float* v;      // (N,kv)
  float* xn1_r;  // (R,d) xn1 at the rows
  float* q;      // (R,d) after RoPE
  float* att;    // (R,d)
  float* lse;    // (R,H) or null
  float* x_mid;  // (R,d)
  float* xn2;    // (R,d)
  float* rstd2;  // (R) or null
  float* gate;   // (R,mlp)
  float* up;     // (R,mlp)
  float* act;    // (R,mlp)
  float* proj;   // (R,d) scratch
};

// Memory of the training path, owned by the caller (the Trainer) rather than the model, so a
// model that only runs inference carries none. Grows to the largest batch shape seen and is
// reused; nothing is allocated per layer or per call once it has grown.
class TrainWorkspace {
 public:
  explicit TrainWorkspace(bool checkpoint_activations = false) : checkpoint_(checkpoint_activations) {}
  bool checkpoint_activations() const { return checkpoint_; }
  int64_t bytes() const { return static_cast<int64_t>(sizeof(float)) * (saved_.size() + scratch_.size()); }
  void release() {
    saved_.release();
    scratch_.release();
  }

 private:
  friend class Model;
  bool checkpoint_;
  FloatBuffer saved_;    // what backward reads: every layer's activations, or only each layer's input
  FloatBuffer scratch_;  // a recomputed layer, backward's temporaries, the LM head's rows
  std::vector<int32_t> pos_;
};

// A training forward kept for a later backward. JustGRPO's rollout feeds the learner's exact inputs
// under the learner's weights, so with one optimiser update per rollout the loss phase can
// back-propagate through the rollout's own activations instead of running the forward again.
// Holds its own copy of the batch and its saved activations; the scratch is a TrainWorkspace's.
class KeptForward {
 public:
  int64_t bytes() const {
    return static_cast<int64_t>(sizeof(float)) * saved_.size() +
           static_cast<int64_t>(sizeof(int32_t)) * (tokens_.capacity() + starts_.capacity() + rows_.capacity() + pos_.capacity());
  }
  int64_t n_rows() const { return static_cast<int64_t>(rows_.size()); }
  int64_t n_tokens() const { return static_cast<int64_t>(tokens_.size()); }
  void release() {
    saved_.release();
    tokens_ = {};
    starts_ = {};
    rows_ = {};
    pos_ = {};
  }

 private:
  friend class Model;
  FloatBuffer saved_;
  std::vector<int32_t> tokens_, starts_, rows_, pos_;
};

class Model final : public Backend {
 public:
  // dtype F32: every product in fp32 through OpenBLAS (the reference). BF16: the matrix products
  // (projections, MLP, LM head; forward and backward) take bf16 inputs and sum in fp32 through
  // oneDNN; the fp32 parameters stay the master copy, and the bf16 copy of the weight matrices
  // follows every change to them (loading, set_param, init_random, refresh_bf16 after a step).
  //
  // BF16 without master_weights (inference): every matrix, the embedding included, lives only in
  // bf16 (2 bytes a parameter instead of 4 + 2) and only the norm weights in fp32. A BF16
  // checkpoint loads without widening, other dtypes are rounded once; reading a tensor back gives
  // its bf16 values widened. The embedding is then looked up in bf16, the one place where the
  // results differ from a model with masters loaded from an F32 checkpoint (from a BF16 one they
  // are the same, bit for bit). make_training() first widens the bf16 weights into new masters.
  explicit Model(const ModelConfig& cfg, DType dtype = DType::F32, bool master_weights = true);

  // The Backend interface.
  const ModelConfig& config() const override { return cfg_; }
  const ParamLayout& layout() const override { return layout_; }
  DeviceInfo device_info() const override;
  int64_t tokens_computed() const override { return tokens_computed_.load(std::memory_order_relaxed); }
  void load_tensor(const ParamInfo& p, DType file_dtype, const std::string& path, int64_t offset) override;
  int64_t count_non_finite(const ParamInfo& p) override;
  void write_tensor(TensorWriter& w, const ParamInfo& p, DType dtype) override;
  void get_param(float* dst, const ParamInfo& p) override;
  void set_param(const ParamInfo& p, const float* src) override;
  void init_random(uint64_t seed, float stdev) override;
  // logits (n_rows, embedding_size) for the packed rows listed in `rows` (indices into the batch's
  // tokens); the LM head runs only for those rows.
  void forward(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows) override;
  void logprobs(float* out, const Batch& batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
                const std::vector<int32_t>& excluded) override;
  // In decode.cpp: the forward (or step.forward), guidance, sampling in parallel over the rows and
  // the host commit rule.
  void decode_step(const DecodeStep& step, DecodeStepResult& out) override;
  // Bytes of activation memory a forward over n tokens and n_rows logits rows needs.
  int64_t forward_workspace_bytes(int64_t n_tokens, int64_t n_rows) const override;
  std::unique_ptr<Training> make_training(bool checkpoint_activations, const OptimizerShard* shard = nullptr) override;
  MemoryReport memory_report() const override;

  // Whether the fp32 master weights exist (always in F32; in BF16 unless made without them and not
  // yet trained). params() is only meaningful when they do.
  bool has_master_weights() const override { return masters_; }
  // A bf16-only model gains fp32 masters: the bf16 weights widened (exact), the norm weights moved.
  void make_masters();

  // ZeRO-1: the fp32 parameter buffer grows to n floats (zeros past layout().total()), so the
  // sharded step's all-gather writes every rank's block into it in place. Needs the masters.
  void reserve_param_slack(int64_t n);

  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  DType dtype() const { return dtype_; }
  // The bf16 copy of the weight matrices again from the fp32 parameters (after the optimizer
  // wrote them); nothing in fp32.
  void refresh_bf16();

  // The loss over selected rows of a packed batch: the layers, then ln_f and the LM head on `rows`
  // only (indices into the batch's tokens; repeats allowed), then `loss` on each row's
  // log p(targets[r]) over all embedding_size logits. The head works through the rows a chunk at
  // a time, so logits are never held for all rows at once. logprobs (n_rows) receives each row's
  // log p(target). Returns the loss (summed in double, in row order).
  //
  // With grads (layout().total() floats, laid out like params()), also the backward pass:
  // grads += d loss / d params, so calls accumulate across micro-batches. Without, the inference
  // path runs and nothing is kept for backward; loss and logprobs are bit-identical either way.
  // Inputs were validated at the boundary (token ids < vocab_size, rows < n_tokens, targets <
  // embedding_size, sequence lengths <= max_seq_len).
  double loss(float* grads, TrainWorkspace& ws, const Batch& batch, const int32_t* rows, const int32_t* targets,
              int64_t n_rows, const RowLoss& loss, float* logprobs);

  // Bytes of workspace `loss` needs for this shape (with grads: saved activations and backward's
  // temporaries; with checkpointing, only each layer's input is saved and one layer is recomputed).
  int64_t train_workspace_bytes(int64_t n_tokens, int64_t n_rows, bool with_grads, bool checkpoint) const;

  // forward() that also keeps what backward needs in `kept` (ws provides the scratch): the same
  // logits, bit for bit. `rows` as in forward().
  void forward_keep(KeptForward& kept, TrainWorkspace& ws, float* logits, const Batch& batch, const int32_t* rows,
                    int64_t n_rows);
  // loss() with grads for the kept batch and rows, without running the forward again: the same
  // loss, log-probs and gradients as loss() on that batch, provided the weights have not changed
  // since forward_keep (the caller tracks that).
  double backward_kept(float* grads, const KeptForward& kept, TrainWorkspace& ws, const int32_t* targets,
                       const RowLoss& loss, float* logprobs);
  // Bytes forward_keep keeps for this shape.
  int64_t kept_bytes(int64_t n_tokens, int64_t n_rows) const;

  // Frees the parameters and workspace.
  void release();

 private:
  struct Plan;

  void positions(std::vector<int32_t>& pos, const Batch& batch) const;
  // The products with the weight at parameter offset `w`, in the model's dtype (matmul_forward /
  // matmul_backward, or their bf16 versions on the bf16 copy).
  void mm_forward(float* out, const float* inp, int64_t w, int64_t N, int64_t C, int64_t OC);
  // Several products of one input inp (N,C): each (out, weight offset, OC); in bf16 the input is
  // rounded once for all of them.
  struct Product {
    float* out;
    int64_t w, OC;
  };
  void mm_forward_each(std::initializer_list<Product> products, const float* inp, int64_t N, int64_t C);
  void mm_backward(float* dinp, float* dweight, const float* dout, const float* inp, int64_t w, int64_t N, int64_t C,
                   int64_t OC);
  // The bf16 copy of one parameter (a no-op for vectors, which no product reads, and in fp32).
  void refresh_bf16(const ParamInfo& p);
  // The fp32 values at layout offset `offset`: any parameter's in the masters; without masters,
  // only a norm weight's (a 1-D parameter, kept in norms_).
  const float* vec(int64_t offset) const;
  float* vec(int64_t offset) { return const_cast<float*>(static_cast<const Model*>(this)->vec(offset)); }
  // Whether the parameter lives in bf16 only (a matrix of a model without masters).
  bool bf16_only(const ParamInfo& p) const { return !masters_ && p.shape.size() == 2; }
  void check_live() const;
  // x (N,d) = the embedding rows of `tokens` (in bf16 without masters, widened).
  void embed(float* x, const int32_t* tokens, int64_t N);
  uint16_t* weights_bf16() { return reinterpret_cast<uint16_t*>(weights_bf16_.data()); }
  // x_out (N,d) = the layer applied to a.x_in, filling `a`; with x_out null, stops after the
  // activation (what backward needs, when it recomputes a checkpointed layer). `first`: a.x_in is
  // the embedding output, and the queries, keys and values are computed once per distinct token
  // (then a.xn1 and a.rstd1 hold those U rows only).
  void layer_forward(float* x_out, const LayerActs& a, const LayerParams& L, const Batch& batch,
                     const int32_t* pos, bool first = false);
  // dx (N,d): in, the gradient of the layer's output; out, that of its input. grads +=. With
  // `first` (as in layer_forward), the attention branch's share of the input gradient goes
  // straight to the embedding's gradient per token, and dx keeps only the residual's share.
  void layer_backward(float* grads, float* dx, const LayerActs& a, const Plan& p, const LayerParams& L,
                      const Batch& batch, const int32_t* pos, bool first = false);
  // by_token_ for the batch: each distinct token's first row and every row's distinct-token index
  // (in order of first appearance, so slot[i] <= i).
  void token_rows(const Batch& batch);
  // The first `n_layers` inference layers over the batch; returns the residual stream (N,d) in x_.
  float* forward_layers(const Batch& batch, int64_t n_layers);
  // sel (R,d): the inference layers' output at `rows` (the last layer on those rows only).
  void forward_rows(float* sel, const Batch& batch, const int32_t* rows, int64_t R);
  // sel (R,d): layer L's output at `rows` only, from its input x (N,d), filling `a`.
  void layer_rows_forward(float* sel, const float* x, const RowActs& a, const LayerParams& L, const Batch& batch,
                          const int32_t* rows, int64_t R, const int32_t* pos);
  // Its backward. dsel (R,d): the gradient of sel (overwritten); dx (N,d) += that of x.
  void layer_rows_backward(float* grads, float* dx, float* dsel, const float* x, const RowActs& a, const Plan& p,
                           const LayerParams& L, const Batch& batch, const int32_t* rows, int64_t R,
                           const int32_t* pos);
  // ln_f, the LM head and the loss on sel (R,d); with grads, p.dsel = d loss / d sel.
  double head_loss(float* grads, const float* sel, const Plan& p, const int32_t* targets, int64_t n_rows,
                   const RowLoss& loss, float* logprobs);
  // The training forward (embedding, layers, the last layer on the rows into p.sel), and the
  // backward from the head down, over a planned workspace.
  void train_forward(const Plan& p, const Batch& batch, const int32_t* rows, int64_t R, const int32_t* pos);
  double train_backward(float* grads, const Plan& p, const Batch& batch, const int32_t* rows, const int32_t* targets,
                        int64_t R, const RowLoss& loss, float* logprobs, const int32_t* pos);
  // Lays out a training call's tensors in `saved` and `scratch` (null: only counts).
  void plan(Plan& p, float* saved, float* scratch, int64_t N, int64_t n_rows, bool with_grads, bool checkpoint,
            int64_t* saved_floats, int64_t* scratch_floats) const;

  ModelConfig cfg_;
  ParamLayout layout_;
  DType dtype_;
  bool masters_;
  bool released_ = false;
  FloatBuffer params_;  // with masters: every parameter in fp32, at its layout offset
  // BF16: the weights rounded to bf16 at the parameters' offsets (two per float of the buffer).
  FloatBuffer weights_bf16_;
  // Without masters: the norm weights in fp32, packed; norm_at_ maps a layout offset to its place.
  FloatBuffer norms_;
  std::vector<std::pair<int64_t, int64_t>> norm_at_;
  std::vector<float> rope_cos_, rope_sin_;

  // Activations of one layer at a time (inference keeps nothing for backward).
  FloatBuffer x_, xn_, q_, k_, v_, att_, proj_, gate_, up_, sel_, rows_;
  std::vector<int32_t> pos_;
  SharedBatch shared_;
  // first[u]: the first row of distinct token u, ids[u]: the token; slot[i]: row i's u; seen: token -> u or -1.
  struct { std::vector<int32_t> first, ids, slot, seen; } by_token_;
  std::atomic<int64_t> tokens_computed_{0};  // read from the JS thread while a worker runs
  TrainWorkspace logprob_ws_;  // the head's chunked log-softmax for logprobs()
  std::vector<float> step_logits_;  // decode_step's logits (rows, embedding_size)
};

}  // namespace jg::cpu
