#include <algorithm>
#include <cmath>
#include <vector>

#include "ops.h"
#include "simd.h"
#include "threadpool.h"

namespace jg::cpu {

namespace {
// Fixed reduction blocks: partial results are indexed by block, not by thread, and combined in
// block order, so a reduction is bit-identical whatever the thread count or scheduling.
constexpr int64_t kBlock = 1 << 15;
}  // namespace

// param (n), m (n), v (n), grad (n). The order of operations follows torch.optim.AdamW
// (single-tensor path): decay, moments, then param -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& p) {
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  const float step_size = static_cast<float>(p.lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = static_cast<float>(1.0 - p.lr * p.weight_decay);
  const float b1 = static_cast<float>(p.beta1), b2 = static_cast<float>(p.beta2);
  const float one_b1 = static_cast<float>(1.0 - p.beta1), one_b2 = static_cast<float>(1.0 - p.beta2);
  const float eps = static_cast<float>(p.eps);
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      const float g = grad[i];
      param[i] *= decay;
      m[i] = m[i] * b1 + g * one_b1;
      v[i] = v[i] * b2 + g * g * one_b2;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      param[i] -= step_size * (m[i] / denom);
    }
  });
}

// grad (n)
int64_t nonfinite_zero(float* grad, int64_t n) {
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
  std::vector<int64_t> counts(n_blocks, 0);
  parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      int64_t c = 0;
      for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); i++)
        if (!std::isfinite(grad[i])) {
          grad[i] = 0.0f;
          c++;
        }
      counts[b] = c;
    }
  });
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  return total;
}

// grad (n)
double grad_sumsq(const float* grad, int64_t n) {
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(n_blocks, 0.0);
  parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) partial[b] = sum_squares(grad + b * kBlock, std::min(n, (b + 1) * kBlock) - b * kBlock);
  });
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

// grad (n)
void grad_scale(float* grad, float scale, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) grad[i] *= scale;
  });
}

}  // namespace jg::cpu
