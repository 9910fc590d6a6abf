// A cuBLAS stand-in for the CUDA-on-CPU tier: exactly the calls native/cuda/matmul.cpp makes
// (handle, stream, math mode, workspace, cublasGemmEx), with cuBLAS's semantics so that the
// backend's GEMM calls are checked as they are: column-major operands, op(T) applied to the stored
// shape, leading dimensions in elements and validated as cuBLAS validates them, beta = 0 never
// reads C (it may hold NaN), fp32 accumulation, and a bf16 output rounded once after alpha and beta.
// The product runs as a kernel on the handle's stream, in stream order with the other kernels.
// Compared with tolerances, never bit for bit: the summation order is not cuBLAS's.
#pragma once

#include <cstddef>

#include "cuda_on_cpu.h"

typedef enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TENSOR_OP_MATH = 1, CUBLAS_PEDANTIC_MATH = 2 } cublasMath_t;
typedef enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_PEDANTIC = 69 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType_t;

struct cublasContext;
typedef cublasContext* cublasHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t* handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes);
const char* cublasGetStatusName(cublasStatus_t status);
const char* cublasGetStatusString(cublasStatus_t status);

// C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C, column-major; alpha and beta are host floats
// (CUBLAS_COMPUTE_32F). Types: A and B both CUDA_R_32F with C CUDA_R_32F, or both CUDA_R_16BF with C
// CUDA_R_16BF or CUDA_R_32F; anything else is CUBLAS_STATUS_NOT_SUPPORTED, as in cuBLAS.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo);
