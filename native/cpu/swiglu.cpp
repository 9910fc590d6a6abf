#include <cmath>

#include "ops.h"
#include "threadpool.h"

namespace jg::cpu {

// out (N,M) = silu(gate) * up; LLaDA's ff_proj is the gated branch, up_proj the linear one.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t N, int64_t M) {
  parallel_for(N * M, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

// dgate (N,M) +=, dup (N,M) +=, dout (N,M), gate (N,M), up (N,M)
// silu(g) = g * s with s = sigmoid(g); silu'(g) = s * (1 + g * (1 - s)).
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t N,
                     int64_t M) {
  parallel_for(N * M, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      float g = gate[i];
      float e = std::exp(-g);
      float s = 1.0f / (1.0f + e);
      dgate[i] += dout[i] * up[i] * (s * (1.0f + g * (1.0f - s)));
      dup[i] += dout[i] * (g / (1.0f + e));
    }
  });
}

// x (n) += y (n)
void residual_forward(float* x, const float* y, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) x[i] += y[i];
  });
}

// dy (n) += dout (n)
void residual_backward(float* dy, const float* dout, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) dy[i] += dout[i];
  });
}

}  // namespace jg::cpu
