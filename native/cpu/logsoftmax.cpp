#include <algorithm>
#include <cmath>

#include "ops.h"
#include "threadpool.h"

namespace jg::cpu {

namespace {
// Rows per chunk so a thread gets a few thousand logits at least.
int64_t row_grain(int64_t V) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(V, 1)); }
}  // namespace

// logprobs (R), lse (R), logits (R,V), targets (R)
void logsoftmax_forward(float* logprobs, float* lse, const float* logits, const int32_t* targets, int64_t R,
                        int64_t V) {
  parallel_for(R, row_grain(V), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; r++) {
      const float* z = logits + r * V;
      // A NaN anywhere in the row makes the sum NaN, so it reaches the gradient and is counted there.
      float mx = z[0];
      for (int64_t j = 1; j < V; j++) mx = std::max(mx, z[j]);
      double sum = 0;
      for (int64_t j = 0; j < V; j++) sum += std::exp(z[j] - mx);
      double l = static_cast<double>(mx) + std::log(sum);
      lse[r] = static_cast<float>(l);
      logprobs[r] = static_cast<float>(static_cast<double>(z[targets[r]]) - l);
    }
  });
}

// dlogits (R,V) =, dlogprobs (R), logits (R,V) (may alias dlogits), lse (R), targets (R)
void logsoftmax_backward(float* dlogits, const float* dlogprobs, const float* logits, const float* lse,
                         const int32_t* targets, int64_t R, int64_t V) {
  parallel_for(R, row_grain(V), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; r++) {
      const float* z = logits + r * V;
      float* dz = dlogits + r * V;
      const float g = dlogprobs[r], l = lse[r];
      for (int64_t j = 0; j < V; j++) dz[j] = -g * std::exp(z[j] - l);
      dz[targets[r]] += g;
    }
  });
}

}  // namespace jg::cpu
