#include <cmath>

#include "ops.h"
#include "threadpool.h"

namespace jg::cpu {

// x (N,H,hd) in place. Rotate-half: x1 = x[:hd/2], x2 = x[hd/2:];
// out = [x1*cos - x2*sin, x2*cos + x1*sin]
void rope_forward(float* x, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t N, int64_t H,
                  int64_t hd) {
  int64_t half = hd / 2;
  parallel_for(N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const float* c = cos_t + int64_t(pos[n]) * half;
      const float* s = sin_t + int64_t(pos[n]) * half;
      for (int64_t h = 0; h < H; h++) {
        float* v = x + (n * H + h) * hd;
        for (int64_t i = 0; i < half; i++) {
          float x1 = v[i], x2 = v[i + half];
          v[i] = x1 * c[i] - x2 * s[i];
          v[i + half] = x2 * c[i] + x1 * s[i];
        }
      }
    }
  });
}

// dx (N,H,hd) in place: the rotation is orthogonal, so its gradient is the inverse rotation,
// dx1 = dy1*cos + dy2*sin, dx2 = dy2*cos - dy1*sin.
void rope_backward(float* dx, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t N, int64_t H,
                   int64_t hd) {
  int64_t half = hd / 2;
  parallel_for(N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const float* c = cos_t + int64_t(pos[n]) * half;
      const float* s = sin_t + int64_t(pos[n]) * half;
      for (int64_t h = 0; h < H; h++) {
        float* g = dx + (n * H + h) * hd;
        for (int64_t i = 0; i < half; i++) {
          float g1 = g[i], g2 = g[i + half];
          g[i] = g1 * c[i] + g2 * s[i];
          g[i + half] = g2 * c[i] - g1 * s[i];
        }
      }
    }
  });
}

}  // namespace jg::cpu
