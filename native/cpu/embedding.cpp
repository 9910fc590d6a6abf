#include <cstdint>
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

namespace {
inline void widen_row(float* dst, const uint16_t* src, int64_t n) {
  // A bf16 is the top half of the fp32 with the same value.
  for (int64_t i = 0; i < n; i++) {
    const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &u, sizeof(u));
  }
}
}  // namespace

// out (N,C), tokens (N), wte (V,C) in bf16
void embedding_forward_bf16(float* out, const int32_t* tokens, const uint16_t* wte, int64_t N, int64_t C) {
  parallel_for(N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) widen_row(out + i * C, wte + int64_t(tokens[i]) * C, C);
  });
}

// dst (n), src (n)
void widen_bf16(float* dst, const uint16_t* src, int64_t n) {
  parallel_for(n, 1 << 15, [&](int64_t i0, int64_t i1) { widen_row(dst + i0, src + i0, i1 - i0); });
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
