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

// dwte (V,C) +=, dout (N,C), tokens (N)
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int64_t C) {
  // Threads split the columns, not the rows: a token repeated in the batch is then added by one
  // thread in row order, with no race and no dependence on scheduling.
  parallel_for(C, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < N; i++) {
      float* dst = dwte + int64_t(tokens[i]) * C;
      const float* src = dout + i * C;
      for (int64_t c = c0; c < c1; c++) dst[c] += src[c];
    }
  });
}

}  // namespace jg::cpu
