// The CUDA op set: the same ops and names as native/cpu/ops.h. Arguments: outputs, then inputs,
// then sizes, then the stream. Pointers are device pointers unless a comment says otherwise.
//
// Weights and activations are fp32 or bf16 (`DType::F32` / `DType::BF16`, one per model: bf16 for
// speed, fp32 to test against the CPU backend); the residual stream and the logits are always fp32,
// and all arithmetic is fp32 (fp64 where the CPU reference uses fp64: sampling). Rows of a packed
// batch are tokens; `seq_starts` (n_seqs + 1, on the device) says where each sequence begins.
// Row strides let q, k and v live side by side in one fused projection output.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common/ops.h"
#include "../common/tensor_io.h"

namespace jg::cuda {

// Bytes of one element of an activation / weight dtype (F32 or BF16; anything else throws).
int act_size(DType t);

// out (N,C) fp32, tokens (N), wte (V,C) of dtype t
void embedding_forward(float* out, const int32_t* tokens, const void* wte, DType t, int64_t N, int64_t C,
                       cudaStream_t s);

// out (N,C) of dtype t = weight * (inp * rsqrt(mean(inp^2) + eps)); inp (N,C) fp32, weight (C) of dtype t
void rmsnorm_forward(void* out, const float* inp, const void* weight, DType t, int64_t N, int64_t C, float eps,
                     cudaStream_t s);

// x: N rows of dtype t, `stride` elements apart, each holding H heads of hd (rotate-half layout),
// rotated in place by the angles of pos (N); cos_t, sin_t (max_len, hd/2) fp32 from rope_table (native/common/rope.h).
void rope_forward(void* x, DType t, int64_t stride, const int32_t* pos, const float* cos_t, const float* sin_t,
                  int64_t N, int64_t H, int64_t hd, cudaStream_t s);

// Which attention kernel: AUTO takes the tensor-core one for bf16 with hd 64 or 128 (unless the
// environment sets JUSTGRPO_CUDA_ATTENTION=simple), else the CUDA-core one; the others force one
// (tests run both). TENSOR_CORE where it does not apply throws.
enum class AttentionImpl { AUTO = 0, SIMPLE = 1, TENSOR_CORE = 2 };

// Bidirectional softmax attention inside each sequence, grouped-query when KV < H, fused: the
// scores live in registers and shared memory only, never in device memory.
// out (N, H*hd) rows `out_stride` apart; q (N, H*hd) rows q_stride apart; k, v (N, KV*hd) rows
// kv_stride apart; all of dtype t. max_len: the longest sequence (sizes the grid).
void attention_forward(void* out, int64_t out_stride, const void* q, int64_t q_stride, const void* k, const void* v,
                       int64_t kv_stride, DType t, const int32_t* seq_starts, int64_t n_seqs, int64_t max_len,
                       int64_t H, int64_t KV, int64_t hd, cudaStream_t s, AttentionImpl impl = AttentionImpl::AUTO);

// out (N,M) = silu(gate) * up, dtype t; gate and up rows are in_stride apart (side by side in the
// fused ff_proj|up_proj output, or separate with in_stride M).
void swiglu_forward(void* out, const void* gate, const void* up, int64_t in_stride, DType t, int64_t N, int64_t M,
                    cudaStream_t s);

// x (n) fp32 += y (n) of dtype t
void residual_forward(float* x, const void* y, DType t, int64_t n, cudaStream_t s);

// out (R,C) = x[rows] (R), fp32
void gather_rows(float* out, const float* x, const int32_t* rows, int64_t R, int64_t C, cudaStream_t s);

// dst (n) of dtype t from src (n) fp32, and back.
void convert_from_f32(void* dst, DType t, const float* src, int64_t n, cudaStream_t s);
void convert_to_f32(float* dst, const void* src, DType t, int64_t n, cudaStream_t s);

// dst (n) of dtype t: normal(0, stdev) from a counter-based generator keyed by (seed, stream), or
// `fill` everywhere when stdev is 0. Deterministic, but not the CPU backend's values.
void init_normal(void* dst, DType t, int64_t n, uint64_t seed, uint64_t stream, float stdev, float fill,
                 cudaStream_t s);

// ---- Training (GPU training, issue #22 part 2). The backward ops mirror native/cpu/ops.h: the same
// names and argument order, plus the dtype `t` of the activations and weights the forward saved and
// the stream last. Gradients are fp32 on the device in every mode (the master weights' dtype) and
// ACCUMULATE (+=) as on the CPU, except rope_backward (rotates in place) and the head's loss
// (overwrites). Every backward op is deterministic: no floating-point atomics whose order varies
// from run to run, so a step repeated on the same inputs gives the same bits.

// dwte (V,C) += scatter of dout (N,C) by tokens (N); repeated tokens add up in row order.
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int64_t C, cudaStream_t s);

// rmsnorm_forward that also saves rstd (N) fp32 for the backward (may be null: then it is the forward above).
void rmsnorm_forward(void* out, float* rstd, const float* inp, const void* weight, DType t, int64_t N, int64_t C,
                     float eps, cudaStream_t s);
// dinp (N,C) +=, dweight (C) +=; dout (N,C) fp32, inp (N,C) fp32 (the residual stream), weight (C) of
// dtype t, rstd (N) from the forward.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const void* weight, DType t,
                      const float* rstd, int64_t N, int64_t C, cudaStream_t s);

// dx: N rows of fp32 gradients, `stride` floats apart, each holding H heads of hd: the gradient of
// the rotated x, rotated back in place (the transpose rotation).
void rope_backward(float* dx, int64_t stride, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t N,
                   int64_t H, int64_t hd, cudaStream_t s);

// attention_forward that also saves lse (N, H) fp32, the log-sum-exp of each score row (may be
// null: then it is the forward above, and any impl).
void attention_forward(void* out, int64_t out_stride, float* lse, const void* q, int64_t q_stride, const void* k,
                       const void* v, int64_t kv_stride, DType t, const int32_t* seq_starts, int64_t n_seqs,
                       int64_t max_len, int64_t H, int64_t KV, int64_t hd, cudaStream_t s);
// dq (N, H*hd) +=, dk, dv (N, KV*hd) += (fp32, rows dq_stride / dkv_stride apart, so they can be
// the parts of one fused d(qkv) buffer); dout (N, H*hd) fp32 rows dout_stride apart; q, k, v, out
// of dtype t as in the forward (strides as there); lse (N, H) from the forward. Probabilities are
// recomputed from lse, never stored; flash-style, O(N) memory per sequence.
void attention_backward(float* dq, int64_t dq_stride, float* dk, float* dv, int64_t dkv_stride, const float* dout,
                        int64_t dout_stride, const void* q, int64_t q_stride, const void* k, const void* v,
                        int64_t kv_stride, const void* out, int64_t out_stride, const float* lse, DType t,
                        const int32_t* seq_starts, int64_t n_seqs, int64_t max_len, int64_t H, int64_t KV,
                        int64_t hd, cudaStream_t s);

// dgate, dup (N,M) fp32 +=, rows dg_stride apart (side by side in one d(gate|up) buffer, or
// separate with dg_stride M); dout (N,M) fp32; gate, up (N,M) of dtype t before the activation, rows
// in_stride apart as in the forward.
void swiglu_backward(float* dgate, float* dup, int64_t dg_stride, const float* dout, const void* gate, const void* up,
                     int64_t in_stride, DType t, int64_t N, int64_t M, cudaStream_t s);

// dy (n) += dout (n), fp32.
void residual_backward(float* dy, const float* dout, int64_t n, cudaStream_t s);

// AdamW as torch.optim.AdamW computes it, on fp32 master weights: param (n), m (n), v (n) fp32
// updated in place from grad (n); hyper-parameters as native/cpu/ops.h's AdamWParams (derived
// constants in double, rounded once). When param_t (n) is not null it receives the updated weights
// rounded to bf16 (the copy the products read in bf16 mode).
struct AdamWParams {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1 on the first update
};
void adamw_update(float* param, float* m, float* v, const float* grad, void* param_bf16, int64_t n,
                  const AdamWParams& p, cudaStream_t s);
// grad (n): NaN and +-inf entries set to zero; *count (device, int64) += how many there were.
void nonfinite_zero(float* grad, int64_t n, int64_t* count, cudaStream_t s);
// *sumsq (device, double) += sum of squares of grad (n) in double, over fixed blocks summed in a
// fixed order (bit-identical run to run).
void grad_sumsq(const float* grad, int64_t n, double* sumsq, cudaStream_t s);
// grad (n) *= scale
void grad_scale(float* grad, float scale, int64_t n, cudaStream_t s);

// One op of the table (native/common/ops.h) on small host arrays, for testOp and the backend
// parity harness (testops.cpp); false where the CUDA backend does not have the op yet.
bool test_op(Op op, const OpArgs& args, OpOutputs& out);

}  // namespace jg::cuda
