// GEMMs through cuBLAS: the only file that includes the cuBLAS headers is matmul.cpp, so the rest of
// native/cuda compiles (and is checked in CI) where the CUDA toolkit has no cuBLAS.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common/tensor_io.h"

namespace jg::cuda {

class Blas {
 public:
  explicit Blas(cudaStream_t stream);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // out (N,OC) rows ldo apart (ldo >= OC) = inp (N,C) @ weight (OC,C)^T + beta * out: weights are
  // [out, in] as stored. inp and weight of dtype in_t (F32 or BF16); out of dtype out_t (F32, or
  // in_t); accumulation in fp32 (no TF32: fp32 mode is exact enough to test against the CPU).
  void matmul_forward(void* out, DType out_t, int64_t ldo, const void* inp, const void* weight, DType in_t, int64_t N,
                      int64_t C, int64_t OC, float beta = 0.0f);

  // The backward of matmul_forward (GPU training): dinp (N,C) fp32 rows ldi apart += dout @ weight
  // (dinp may be null: not needed), dweight (OC,C) fp32 += dout^T @ inp. dout (N,OC) rows ldd apart,
  // inp (N,C) and weight (OC,C) of dtype in_t (in bf16 mode the caller rounds dout to bf16 first);
  // fp32 accumulation, no TF32.
  void matmul_backward(float* dinp, int64_t ldi, float* dweight, const void* dout, int64_t ldd, const void* inp,
                       const void* weight, DType in_t, int64_t N, int64_t C, int64_t OC);

 private:
  void* handle_ = nullptr;     // cublasHandle_t
  void* workspace_ = nullptr;  // device memory cuBLAS may use
};

}  // namespace jg::cuda
