// bf16 matrix products through oneDNN, for the CPU backend's bf16 compute dtype. oneDNN is loaded
// on first use (dlopen of libdnnl.so.2, beside the .node file first, then the system's), so the
// fp32 path, and a binary that never asks for bf16, needs nothing beyond OpenBLAS. oneDNN picks
// its kernels at run time: AMX, AVX512-BF16, or AVX-512/AVX2 emulation where the CPU has no bf16
// instructions (slower, the same results up to the order of the fp32 sums).
#pragma once

#include <cstdint>
#include <string>

namespace jg::cpu {

// Loads oneDNN if it is not yet; throws UNSUPPORTED, saying what to install, when it cannot.
void onednn_require();
// "oneDNN 2.6.3, avx512_core_bf16" (the effective ISA), or why oneDNN is not there.
std::string onednn_describe();

// dst (n) = src rounded to bf16 (round to nearest even; NaN stays NaN). Threaded over the pool.
void to_bf16(uint16_t* dst, const float* src, int64_t n);
// dst (cols, rows) = src (rows, cols) transposed and rounded to bf16. Threaded over the pool.
void to_bf16_transposed(uint16_t* dst, const float* src, int64_t rows, int64_t cols);

// C (M,N) = A (M,K) @ op(B) (K,N) + beta * C, row-major: bf16 inputs, fp32 accumulation and
// output (beta 0 or 1). op(B) = B (K,N) with row stride ldb, or with tb, B^T where B is (N,K).
// Split over the thread pool by blocks of output rows (or columns), each block one single-threaded
// oneDNN matmul whose primitive is made once per shape and thread and reused.
void gemm_bf16(bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
               int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace jg::cpu
