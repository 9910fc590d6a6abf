// The CPU op set, fp32. Arguments: outputs, then inputs, then sizes. Rows are tokens of a packed
// batch: sequences of different lengths lie one after another; `seq_starts` (n_seqs + 1 entries)
// gives where each begins, so attention never mixes sequences and no padding changes the math.
//
// Backward ops take the forward's names with a `d` prefix for gradients. Every gradient output
// ACCUMULATES (+=), inputs' as well as parameters': parameter gradients so a step can span several
// micro-batches, input gradients so a tensor read by several ops (the residual stream, the normed
// input of q/k/v) sums its contributions without a temporary. Callers zero scratch gradients first.
// The exception is RoPE, whose backward rotates the gradient in place like its forward.
//
// Every op is deterministic: reductions run in a fixed order that does not depend on how the
// thread pool happens to schedule the work, so equal inputs give bit-identical outputs.
#pragma once

#include <cstdint>

#include "../common/ops.h"

namespace jg::cpu {

// out (N,C), tokens (N), wte (V,C)
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C);
// The same from a bf16 table wte (V,C) (a model without fp32 masters), the rows widened exactly.
void embedding_forward_bf16(float* out, const int32_t* tokens, const uint16_t* wte, int64_t N, int64_t C);
// dst (n) = src (n) widened from bf16 to fp32 (exact). Threaded over the pool.
void widen_bf16(float* dst, const uint16_t* src, int64_t n);
// dwte (V,C) += scatter of dout (N,C) by tokens (N); repeated tokens add up in row order.
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int64_t C);

// out (N,C), rstd (N) saved for backward (may be null), inp (N,C), weight (C)
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C,
                     float eps);
// dinp (N,C) +=, dweight (C) +=, dout (N,C), inp (N,C), weight (C), rstd (N) from the forward
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C);

// out (N,OC) = inp (N,C) @ weight (OC,C)^T, through OpenBLAS; weights are [out, in] as stored.
void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC);
// dinp (N,C) += dout @ weight (may be null: not needed), dweight (OC,C) += dout^T @ inp;
// dout (N,OC), inp (N,C), weight (OC,C)
void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                     int64_t N, int64_t C, int64_t OC);
// The same two with bf16 products (oneDNN, onednn.h): the inputs rounded to bf16, weight the bf16
// copy (OC,C) of the fp32 weight, fp32 sums and outputs (the gradients stay fp32, +=).
void matmul_forward_bf16(float* out, const float* inp, const uint16_t* weight, int64_t N, int64_t C, int64_t OC);
void matmul_backward_bf16(float* dinp, float* dweight, const float* dout, const float* inp, const uint16_t* weight,
                          int64_t N, int64_t C, int64_t OC);
// inp (n) rounded to bf16, in this thread's buffer, valid until its next bf16 product; and the
// forward on such an input, for several products that read one input (q, k and v; gate and up).
const uint16_t* matmul_input_bf16(const float* inp, int64_t n);
void matmul_forward_bf16(float* out, const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C, int64_t OC);

// x (N, H, hd) rotated in place (rotate-half layout), pos (N) the position of each row.
void rope_forward(float* x, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t N, int64_t H,
                  int64_t hd);
// dx (N, H, hd): the gradient of the rotated x, rotated back in place (the transpose rotation).
void rope_backward(float* dx, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t N, int64_t H,
                   int64_t hd);

// Bidirectional softmax attention within each sequence, grouped-query when KV < H.
// out (N, H*hd), lse (N, H) log-sum-exp of each score row saved for backward (may be null),
// q (N, H*hd), k (N, KV*hd), v (N, KV*hd), seq_starts (n_seqs+1)
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* seq_starts, int64_t n_seqs, int64_t H, int64_t KV, int64_t hd);
// dq (N, H*hd) +=, dk (N, KV*hd) +=, dv (N, KV*hd) +=, dout (N, H*hd), q, k, v, out and lse from the
// forward. Probabilities are recomputed from lse, never stored.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const int32_t* seq_starts,
                        int64_t n_seqs, int64_t H, int64_t KV, int64_t hd);

// Attention for a few query rows: out (R, H*hd), lse (R, H) (may be null), q (R, H*hd) of packed rows
// `rows` (R, repeats allowed), k, v (N, KV*hd) of the whole batch.
void attention_rows_forward(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* rows,
                            int64_t R, const int32_t* seq_starts, int64_t n_seqs, int64_t H, int64_t KV, int64_t hd);
// Its backward: dq (R, H*hd) +=, dk and dv (N, KV*hd) += (only the rows' sequences' keys get any),
// dout (R, H*hd), q, out (R, H*hd), lse (R, H), k, v (N, KV*hd) as in the forward.
void attention_rows_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, const int32_t* rows, int64_t R,
                             const int32_t* seq_starts, int64_t n_seqs, int64_t H, int64_t KV, int64_t hd);

// out (N,M) = silu(gate (N,M)) * up (N,M); out may alias gate.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t N, int64_t M);
// dgate (N,M) +=, dup (N,M) +=, dout (N,M), gate (N,M) before the activation, up (N,M)
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t N,
                     int64_t M);

// x (n) += y (n)
void residual_forward(float* x, const float* y, int64_t n);
// dy (n) += dout (n). The gradient of the in-place x is dout itself, so the model hands the
// residual stream's gradient straight to the branch and calls this only where a copy is wanted.
void residual_backward(float* dy, const float* dout, int64_t n);

// Log-softmax over each logits row (full width V) gathered at the row's target.
// logprobs (R), lse (R) saved for backward, logits (R,V), targets (R)
void logsoftmax_forward(float* logprobs, float* lse, const float* logits, const int32_t* targets, int64_t R,
                        int64_t V);
// dlogits (R,V) = dlogprobs[r] * (onehot(targets[r]) - softmax(logits[r])); overwrites rather than
// accumulates, and may alias logits so the head never holds a second V-wide row.
// dlogprobs (R), logits (R,V), lse (R), targets (R)
void logsoftmax_backward(float* dlogits, const float* dlogprobs, const float* logits, const float* lse,
                         const int32_t* targets, int64_t R, int64_t V);

// AdamW as PyTorch's torch.optim.AdamW computes it (decoupled weight decay, bias correction).
// Hyper-parameters in double: derived constants are computed in double and rounded once, as
// PyTorch does with its Python-float hyper-parameters.
struct AdamWParams {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1 on the first update
};
// param (n), m (n), v (n) updated in place (fp32 moments); grad (n)
void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& p);

// grad (n): NaN and +-inf entries set to zero; returns how many there were.
int64_t nonfinite_zero(float* grad, int64_t n);
// Sum of squares of grad (n) in double, over fixed blocks summed in order (bit-identical run to run).
double grad_sumsq(const float* grad, int64_t n);
// grad (n) *= scale
void grad_scale(float* grad, float scale, int64_t n);

// One op of the table (native/common/ops.h) on small host arrays, for testOp and the backend
// parity harness; false where the CPU does not have the op.
bool test_op(Op op, const OpArgs& args, OpOutputs& out);

}  // namespace jg::cpu
