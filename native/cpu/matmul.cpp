#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "onednn.h"
#include "ops.h"
#include "op_timer.h"
#include "threadpool.h"

namespace jg::cpu {

namespace {

blasint bi(int64_t n) { return static_cast<blasint>(n); }

// Who threads the GEMMs. By default our pool does: OpenBLAS runs single-threaded, and a GEMM big
// enough to share is cut into one block of output rows (or columns) per pool thread, each a
// single-threaded OpenBLAS call. Our kernels and the GEMMs then run on the same threads, with no
// hand-off to OpenBLAS's own workers between them (measured: see the README's performance notes).
// JUSTGRPO_GEMM_THREADS=openblas leaves the threading to OpenBLAS instead.
bool pool_threads_gemms() {
  static const bool pool = [] {
    const char* env = std::getenv("JUSTGRPO_GEMM_THREADS");
    const bool use_pool = !(env && std::strcmp(env, "openblas") == 0);
    if (use_pool) openblas_set_num_threads(1);
    return use_pool;
  }();
  return pool;
}

// Below this many multiply-adds a GEMM runs whole on the calling thread.
constexpr double kSplitWork = 1 << 18;

// C (M,N) = alpha op(A) op(B) + beta C, row-major. Each element is summed over K in one fixed order
// whichever block computes it (OpenBLAS never splits K), so the result does not depend on the split.
void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const OpTimer timer(OpClass::GEMM);
  if (op_clock().on.load(std::memory_order_relaxed)) op_clock().gemm_flops += 2 * M * N * K;
  const CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  const int T = ThreadPool::global().size();
  if (!pool_threads_gemms() || T == 1 || static_cast<double>(M) * N * K < kSplitWork) {
    cblas_sgemm(CblasRowMajor, TA, TB, bi(M), bi(N), bi(K), alpha, A, bi(lda), B, bi(ldb), beta, C, bi(ldc));
    return;
  }
  // Split the longer side into T blocks, rounded to 16 (the kernels' register tile).
  const bool by_rows = M >= N;
  const int64_t len = by_rows ? M : N;
  const int64_t block = std::max<int64_t>(16, (len + T - 1) / T + 15) / 16 * 16;
  const int64_t n_blocks = (len + block - 1) / block;
  parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      const int64_t lo = b * block, n = std::min(block, len - lo);
      if (by_rows) {
        const float* a = ta ? A + lo : A + lo * lda;
        cblas_sgemm(CblasRowMajor, TA, TB, bi(n), bi(N), bi(K), alpha, a, bi(lda), B, bi(ldb), beta, C + lo * ldc, bi(ldc));
      } else {
        const float* bp = tb ? B + lo * ldb : B + lo;
        cblas_sgemm(CblasRowMajor, TA, TB, bi(M), bi(n), bi(K), alpha, A, bi(lda), bp, bi(ldb), beta, C + lo, bi(ldc));
      }
    }
  });
}

}  // namespace

// out (N,OC) = inp (N,C) @ weight (OC,C)^T
void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC) {
  sgemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC);
}

// dinp (N,C) += dout (N,OC) @ weight (OC,C); dweight (OC,C) += dout^T @ inp (N,C).
void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                     int64_t N, int64_t C, int64_t OC) {
  if (N == 0) return;
  if (dinp) sgemm(false, false, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
  sgemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
}

namespace {

// The bf16 products' rounded inputs, per calling thread, grown to the largest product seen.
struct Bf16Scratch {
  std::vector<uint16_t> a, b;
  uint16_t* take_a(int64_t n) {
    if (static_cast<int64_t>(a.size()) < n) a.resize(n);
    return a.data();
  }
  uint16_t* take_b(int64_t n) {
    if (static_cast<int64_t>(b.size()) < n) b.resize(n);
    return b.data();
  }
};
thread_local Bf16Scratch bf16_scratch;

}  // namespace

// out (N,OC) = bf16(inp) (N,C) @ weight (OC,C)^T, weight the bf16 copy; fp32 sums and output.
void matmul_forward_bf16(float* out, const float* inp, const uint16_t* weight, int64_t N, int64_t C, int64_t OC) {
  if (N == 0) return;
  matmul_forward_bf16(out, matmul_input_bf16(inp, N * C), weight, N, C, OC);
}

const uint16_t* matmul_input_bf16(const float* inp, int64_t n) {
  uint16_t* a = bf16_scratch.take_a(n);
  to_bf16(a, inp, n);
  return a;
}

void matmul_forward_bf16(float* out, const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C, int64_t OC) {
  gemm_bf16(true, N, OC, C, inp, C, weight, C, 0.0f, out, OC);
}

// As matmul_backward, with the products in bf16: dinp += bf16(dout) @ weight and dweight +=
// bf16(dout)^T @ bf16(inp), summed in fp32 and added to the fp32 gradients.
void matmul_backward_bf16(float* dinp, float* dweight, const float* dout, const float* inp, const uint16_t* weight,
                          int64_t N, int64_t C, int64_t OC) {
  if (N == 0) return;
  const int64_t big = std::max(N * OC, N * C);
  uint16_t* a = bf16_scratch.take_a(big);
  uint16_t* b = bf16_scratch.take_b(N * C);
  if (dinp) {
    to_bf16(a, dout, N * OC);
    gemm_bf16(false, N, C, OC, a, OC, weight, C, 1.0f, dinp, C);
  }
  // dweight: dout^T (OC,N), laid out transposed so oneDNN reads both inputs row by row.
  to_bf16_transposed(a, dout, N, OC);
  to_bf16(b, inp, N * C);
  gemm_bf16(false, OC, C, N, a, N, b, C, 1.0f, dweight, C);
}

}  // namespace jg::cpu
