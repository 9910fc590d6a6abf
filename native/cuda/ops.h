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

// One op of the table (native/common/ops.h) on small host arrays, for testOp and the backend
// parity harness (testops.cpp); false where the CUDA backend does not have the op yet.
bool test_op(Op op, const OpArgs& args, OpOutputs& out);

}  // namespace jg::cuda
