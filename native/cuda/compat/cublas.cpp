#include "cublas.h"

#include <new>

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

// One thread per element of C: row i of op(A) and column j of op(B), fp32 sum in k order.
template <typename TA, typename TC>
__global__ void gemm_kernel(int m, int k, bool ta, bool tb, float alpha, const TA* A, int lda, const TA* B, int ldb,
                            float beta, TC* C, int ldc) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x, j = blockIdx.y;
  if (i >= m) return;
  float acc = 0.0f;
  for (int64_t p = 0; p < k; p++) {
    const float a = ta ? load(A, p + i * lda) : load(A, i + p * lda);
    const float b = tb ? load(B, j + p * ldb) : load(B, p + j * ldb);
    acc += a * b;
  }
  const int64_t c = i + j * ldc;
  // beta = 0: C is only written (cuBLAS's rule: its old contents, even NaN, do not matter).
  store(C, c, beta == 0.0f ? alpha * acc : alpha * acc + beta * load(C, c));
}

template <typename TA, typename TC>
void launch(cublasContext* h, int m, int n, int k, bool ta, bool tb, float alpha, const void* A, int lda,
            const void* B, int ldb, float beta, void* C, int ldc) {
  const dim3 grid((m + 127) / 128, n);
  auto kernel = gemm_kernel<TA, TC>;
  hipLaunchKernelGGL(kernel, grid, dim3(128), 0, h->stream, m, k, ta, tb, alpha,
                     static_cast<const TA*>(A), lda, static_cast<const TA*>(B), ldb, beta, static_cast<TC*>(C), ldc);
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new (std::nothrow) cublasContext{};
  return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  // cuBLAS waits for the handle's work before it frees it.
  hipStreamSynchronize(handle->stream);
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  return mode == CUBLAS_DEFAULT_MATH || mode == CUBLAS_TENSOR_OP_MATH || mode == CUBLAS_PEDANTIC_MATH
             ? CUBLAS_STATUS_SUCCESS
             : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  return workspace == nullptr && bytes > 0 ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
  }
  return "unknown status";
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (transa == CUBLAS_OP_C || transb == CUBLAS_OP_C) return CUBLAS_STATUS_NOT_SUPPORTED;  // real types only
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  // The stored shapes: A is (m, k), or (k, m) when transposed; B is (k, n), or (n, k).
  if (m < 0 || n < 0 || k < 0 || lda < (ta ? k : m) || lda < 1 || ldb < (tb ? n : k) || ldb < 1 || ldc < m ||
      ldc < 1 || !alpha || !beta)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_PEDANTIC)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (algo != CUBLAS_GEMM_DEFAULT) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (!A || !B || !C) return CUBLAS_STATUS_INVALID_VALUE;
  // The scalars are host memory (the default pointer mode): read now, as cuBLAS does.
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  if (Atype != Btype) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (Atype == CUDA_R_32F && Ctype == CUDA_R_32F)
    launch<float, float>(handle, m, n, k, ta, tb, al, A, lda, B, ldb, be, C, ldc);
  else if (Atype == CUDA_R_16BF && Ctype == CUDA_R_32F)
    launch<__nv_bfloat16, float>(handle, m, n, k, ta, tb, al, A, lda, B, ldb, be, C, ldc);
  else if (Atype == CUDA_R_16BF && Ctype == CUDA_R_16BF)
    launch<__nv_bfloat16, __nv_bfloat16>(handle, m, n, k, ta, tb, al, A, lda, B, ldb, be, C, ldc);
  else
    return CUBLAS_STATUS_NOT_SUPPORTED;
  return hipGetLastError() == hipSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
