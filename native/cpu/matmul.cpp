#include <cblas.h>

#include "ops.h"

namespace jg::cpu {

// out (N,OC) = inp (N,C) @ weight (OC,C)^T
void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC) {
  if (N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(N), static_cast<blasint>(OC),
              static_cast<blasint>(C), 1.0f, inp, static_cast<blasint>(C), weight, static_cast<blasint>(C), 0.0f,
              out, static_cast<blasint>(OC));
}

}  // namespace jg::cpu
