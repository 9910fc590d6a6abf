#include <cmath>

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

}  // namespace jg::cpu
