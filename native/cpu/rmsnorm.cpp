#include <algorithm>
#include <cmath>
#include <vector>

#include "ops.h"
#include "simd.h"
#include "threadpool.h"

namespace jg::cpu {

// out (N,C), rstd (N), inp (N,C), weight (C). LLaDA's form: w * (x * rsqrt(mean(x^2) + eps)).
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C,
                     float eps) {
  parallel_for(N, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      const float* x = inp + i * C;
      float* y = out + i * C;
      float r = static_cast<float>(1.0 / std::sqrt(sum_squares(x, C) / C + eps));
      if (rstd) rstd[i] = r;
      for (int64_t c = 0; c < C; c++) y[c] = weight[c] * (x[c] * r);
    }
  });
}

// dinp (N,C) +=, dweight (C) +=, dout (N,C), inp (N,C), weight (C), rstd (N)
// y = w * x * r with r = (mean(x^2) + eps)^-1/2, so with g = w * dy:
// dx = r * g - x * r^3 / C * sum(g * x), dw = sum over rows of dy * x * r.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C) {
  // Rows go in fixed blocks; each block sums its share of dweight into its own partial, and the
  // partials are added in block order afterwards, so the result never depends on thread timing.
  constexpr int64_t kBlock = 32;
  const int64_t n_blocks = (N + kBlock - 1) / kBlock;
  std::vector<float> partial(n_blocks * C, 0.0f);
  parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      float* dw = partial.data() + b * C;
      for (int64_t i = b * kBlock; i < std::min(N, (b + 1) * kBlock); i++) {
        const float* x = inp + i * C;
        const float* dy = dout + i * C;
        float* dx = dinp + i * C;
        const float r = rstd[i];
        double gx = 0;
        for (int64_t c = 0; c < C; c++) gx += static_cast<double>(weight[c] * dy[c]) * x[c];
        const float k = static_cast<float>(gx * r * r * r / C);
        for (int64_t c = 0; c < C; c++) {
          dx[c] += r * (weight[c] * dy[c]) - k * x[c];
          dw[c] += dy[c] * (x[c] * r);
        }
      }
    }
  });
  for (int64_t b = 0; b < n_blocks; b++) axpy(dweight, 1.0f, partial.data() + b * C, C);
}

}  // namespace jg::cpu
