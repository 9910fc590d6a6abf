#include <cstring>

#include "ops.h"
#include "threadpool.h"

namespace jg::cpu {

// out (N,C), tokens (N), wte (V,C); token ids were range-checked at the boundary.
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C) {
  parallel_for(N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) std::memcpy(out + i * C, wte + int64_t(tokens[i]) * C, C * sizeof(float));
  });
}

}  // namespace jg::cpu
