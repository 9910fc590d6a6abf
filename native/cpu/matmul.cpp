#include <cblas.h>

#include "ops.h"

namespace jg::cpu {

namespace {
blasint bi(int64_t n) { return static_cast<blasint>(n); }
}  // namespace

// out (N,OC) = inp (N,C) @ weight (OC,C)^T
void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC) {
  if (N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bi(N), bi(OC), bi(C), 1.0f, inp, bi(C), weight, bi(C), 0.0f,
              out, bi(OC));
}

// dinp (N,C) += dout (N,OC) @ weight (OC,C); dweight (OC,C) += dout^T @ inp (N,C).
// OpenBLAS splits a GEMM over output tiles, never over the inner (reduction) dimension, so each
// element is summed in one fixed order and repeated calls are bit-identical.
void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                     int64_t N, int64_t C, int64_t OC) {
  if (N == 0) return;
  if (dinp)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bi(N), bi(C), bi(OC), 1.0f, dout, bi(OC), weight, bi(C),
                1.0f, dinp, bi(C));
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bi(OC), bi(C), bi(N), 1.0f, dout, bi(OC), inp, bi(C), 1.0f,
              dweight, bi(C));
}

}  // namespace jg::cpu
