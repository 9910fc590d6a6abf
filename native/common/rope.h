// The RoPE angle table, one for every backend: computed in float64 on the host and rounded once to
// fp32, so the backends rotate by the same numbers.
#pragma once

#include <cstdint>

namespace jg {

// cos_out, sin_out (max_len, hd/2): angle(p, i) = p * theta^(-2i/hd)
void rope_table(float* cos_out, float* sin_out, int64_t max_len, int64_t hd, double theta);

}  // namespace jg
