// Calls a kernel template for the element type that a DType names (fp32 or bf16).
#pragma once

#include <cuda_bf16.h>

#include "../common/check.h"
#include "../common/tensor_io.h"

// JG_DISPATCH(t, T, body): runs body with T = float or __nv_bfloat16.
#define JG_DISPATCH(t, T, ...)                                                                        \
  do {                                                                                                \
    if ((t) == ::jg::DType::F32) {                                                                    \
      using T = float;                                                                                \
      __VA_ARGS__                                                                                     \
    } else if ((t) == ::jg::DType::BF16) {                                                            \
      using T = __nv_bfloat16;                                                                        \
      __VA_ARGS__                                                                                     \
    } else {                                                                                          \
      throw ::jg::EngineError("The CUDA backend computes in F32 or BF16, not F16");                   \
    }                                                                                                 \
  } while (0)
