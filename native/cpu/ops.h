// The CPU op set, fp32. Arguments: outputs, then inputs, then sizes. Rows are tokens of a packed
// batch: sequences of different lengths lie one after another; `seq_starts` (n_seqs + 1 entries)
// gives where each begins, so attention never mixes sequences and no padding changes the math.
#pragma once

#include <cstdint>

namespace jg::cpu {

// out (N,C), tokens (N), wte (V,C)
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C);

// out (N,C), rstd (N) saved for backward (may be null), inp (N,C), weight (C)
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C,
                     float eps);

// out (N,OC) = inp (N,C) @ weight (OC,C)^T, through OpenBLAS; weights are [out, in] as stored.
void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC);

// The RoPE angle table: cos and sin (max_len, hd/2), computed in float64 and rounded once.
void rope_table(float* cos_out, float* sin_out, int64_t max_len, int64_t hd, double theta);

// x (N, H, hd) rotated in place (rotate-half layout), pos (N) the position of each row.
void rope_forward(float* x, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t N, int64_t H,
                  int64_t hd);

// Bidirectional softmax attention within each sequence, grouped-query when KV < H.
// out (N, H*hd), lse (N, H) log-sum-exp of each score row saved for backward (may be null),
// q (N, H*hd), k (N, KV*hd), v (N, KV*hd), seq_starts (n_seqs+1)
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* seq_starts, int64_t n_seqs, int64_t H, int64_t KV, int64_t hd);

// out (N,M) = silu(gate (N,M)) * up (N,M)
void swiglu_forward(float* out, const float* gate, const float* up, int64_t N, int64_t M);

// x (n) += y (n)
void residual_forward(float* x, const float* y, int64_t n);

}  // namespace jg::cpu
