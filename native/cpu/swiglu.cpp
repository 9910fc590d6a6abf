#include <cmath>

#include "ops.h"
#include "simd.h"
#include "threadpool.h"

namespace jg::cpu {

namespace {

// Eight lanes at a time with exp8 (within 1 ulp of std::exp), the tail with exp_f32.
JG_MULTIVERSION void swiglu_span(float* out, const float* gate, const float* up, int64_t n) {
  const f32x8 one = splat8(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 g = load8(gate + i);
    store8(out + i, g / (one + exp8(-g)) * load8(up + i));
  }
  for (; i < n; i++) out[i] = gate[i] / (1.0f + exp_f32(-gate[i])) * up[i];
}

JG_MULTIVERSION void swiglu_backward_span(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                                          int64_t n) {
  const f32x8 one = splat8(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 g = load8(gate + i), d = load8(dout + i);
    const f32x8 e1 = one + exp8(-g);
    const f32x8 s = one / e1;
    store8(dgate + i, load8(dgate + i) + d * load8(up + i) * (s * (one + g * (one - s))));
    store8(dup + i, load8(dup + i) + d * (g / e1));
  }
  for (; i < n; i++) {
    const float g = gate[i], e1 = 1.0f + exp_f32(-g), s = 1.0f / e1;
    dgate[i] += dout[i] * up[i] * (s * (1.0f + g * (1.0f - s)));
    dup[i] += dout[i] * (g / e1);
  }
}

}  // namespace

// out (N,M) = silu(gate) * up; LLaDA's ff_proj is the gated branch, up_proj the linear one.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t N, int64_t M) {
  parallel_for(N * M, 4096, [&](int64_t begin, int64_t end) { swiglu_span(out + begin, gate + begin, up + begin, end - begin); });
}

// dgate (N,M) +=, dup (N,M) +=, dout (N,M), gate (N,M), up (N,M)
// silu(g) = g * s with s = sigmoid(g); silu'(g) = s * (1 + g * (1 - s)).
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t N,
                     int64_t M) {
  parallel_for(N * M, 4096, [&](int64_t begin, int64_t end) {
    swiglu_backward_span(dgate + begin, dup + begin, dout + begin, gate + begin, up + begin, end - begin);
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
