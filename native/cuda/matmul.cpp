#include "matmul.h"

#include <cublas_v2.h>

#include "check.h"

#define JG_CUBLAS_CHECK(call)                                                                              \
  do {                                                                                                     \
    cublasStatus_t jg_st_ = (call);                                                                        \
    if (jg_st_ != CUBLAS_STATUS_SUCCESS)                                                                   \
      JG_FAIL(::jg::ErrorKind::INTERNAL, "cuBLAS error ", cublasGetStatusName(jg_st_), " (",               \
              cublasGetStatusString(jg_st_), ") in ", #call);                                              \
  } while (0)

namespace jg::cuda {

namespace {
// cuBLAS's recommended workspace on Hopper.
constexpr size_t kWorkspaceBytes = 32u << 20;

cudaDataType_t cuda_type(DType t) {
  if (t == DType::F32) return CUDA_R_32F;
  if (t == DType::BF16) return CUDA_R_16BF;
  throw EngineError("The CUDA backend computes in F32 or BF16, not F16");
}
}  // namespace

Blas::Blas(cudaStream_t stream) {
  cublasHandle_t h = nullptr;
  JG_CUBLAS_CHECK(cublasCreate(&h));
  handle_ = h;
  try {
    JG_CUBLAS_CHECK(cublasSetStream(h, stream));
    JG_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    JG_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
    JG_CUBLAS_CHECK(cublasSetWorkspace(h, workspace_, kWorkspaceBytes));
  } catch (...) {
    if (workspace_) cudaFree(workspace_);
    cublasDestroy(h);
    throw;
  }
}

Blas::~Blas() {
  if (handle_) cublasDestroy(static_cast<cublasHandle_t>(handle_));
  if (workspace_) cudaFree(workspace_);
}

void Blas::matmul_forward(void* out, DType out_t, int64_t ldo, const void* inp, const void* weight, DType in_t,
                          int64_t N, int64_t C, int64_t OC, float beta) {
  if (N == 0 || OC == 0) return;
  JG_CHECK(out_t == DType::F32 || out_t == in_t, "matmul: the output must be F32 or the input's dtype");
  JG_CHECK(ldo >= OC, "matmul: ldo < OC");
  // Column-major view: out^T (OC,N) = W (OC,C) . inp^T (C,N). Row-major W (OC,C) is column-major
  // (C,OC) with ld C, so op T; row-major inp (N,C) is column-major (C,N) with ld C, op N.
  const float alpha = 1.0f;
  JG_CUBLAS_CHECK(cublasGemmEx(static_cast<cublasHandle_t>(handle_), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(OC),
                               static_cast<int>(N), static_cast<int>(C), &alpha, weight, cuda_type(in_t),
                               static_cast<int>(C), inp, cuda_type(in_t), static_cast<int>(C), &beta, out,
                               cuda_type(out_t), static_cast<int>(ldo), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void Blas::matmul_backward(float* dinp, int64_t ldi, float* dweight, const void* dout, int64_t ldd, const void* inp,
                           const void* weight, DType in_t, int64_t N, int64_t C, int64_t OC) {
  if (N == 0 || OC == 0 || C == 0) return;
  JG_CHECK(ldi >= C && ldd >= OC, "matmul_backward: a leading dimension is below its row length");
  cublasHandle_t h = static_cast<cublasHandle_t>(handle_);
  const cudaDataType_t t = cuda_type(in_t);
  const float alpha = 1.0f, beta = 1.0f;
  if (dinp) {
    // dinp^T (C,N) += W^T (C,OC) . dout^T (OC,N): row-major W (OC,C) is column-major (C,OC) with ld C
    // (op N), row-major dout (N,OC) is column-major (OC,N) with ld ldd (op N).
    JG_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(C), static_cast<int>(N),
                                 static_cast<int>(OC), &alpha, weight, t, static_cast<int>(C), dout, t,
                                 static_cast<int>(ldd), &beta, dinp, CUDA_R_32F, static_cast<int>(ldi),
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  // dweight^T (C,OC) += inp^T (C,N) . dout (N,OC): inp is column-major (C,N) with ld C (op N), and
  // dout^T's column-major view (OC,N) transposed (op T).
  JG_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(C), static_cast<int>(OC),
                               static_cast<int>(N), &alpha, inp, t, static_cast<int>(C), dout, t,
                               static_cast<int>(ldd), &beta, dweight, CUDA_R_32F, static_cast<int>(C),
                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace jg::cuda
