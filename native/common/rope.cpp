#include "rope.h"

#include <cmath>

namespace jg {

void rope_table(float* cos_out, float* sin_out, int64_t max_len, int64_t hd, double theta) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; i++) {
    const double inv_freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
    for (int64_t p = 0; p < max_len; p++) {
      const double a = static_cast<double>(p) * inv_freq;
      cos_out[p * half + i] = static_cast<float>(std::cos(a));
      sin_out[p * half + i] = static_cast<float>(std::sin(a));
    }
  }
}

}  // namespace jg
