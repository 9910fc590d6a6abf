// A functional WMMA for the CUDA-on-CPU tier: fragments, m16n16k16 only, bf16 inputs with fp32
// accumulation. Enough to check the tensor-core attention kernel's
// tile indexing, leading dimensions, alignment and online softmax; not its speed and not the tensor
// cores' accumulation order (products summed one after another in fp32 here).
//
// How a warp's fragment is spread over its lanes is unspecified in CUDA; here an accumulator holds
// the 8 elements r * 16 + c = lane + 32 * i (i < 8) of its lane, and an A or B fragment holds the
// whole 16 x 16 tile in every lane. So store_matrix_sync writes only the lane's own elements, and
// a lane that reads what the warp stored without a barrier in between reads stale values for the
// elements of the lanes that run after it: a missing __syncwarp around a store shows up.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda_on_cpu.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

inline float to_f32(float v) { return v; }
inline float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
inline T from_f32(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(v);
  else
    return static_cast<T>(v);
}

inline int lane() { return ::jg::cuda_on_cpu::flat_thread() & 31; }

// load_matrix_sync / store_matrix_sync's preconditions: a 256-bit aligned pointer and a leading
// dimension that is a multiple of 16 bytes.
template <typename T>
inline void check_tile(const T* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) ::jg::cuda_on_cpu::device_trap("WMMA tile pointer not 32-byte aligned");
  if ((ldm * sizeof(T)) % 16 != 0) ::jg::cuda_on_cpu::device_trap("WMMA leading dimension not a multiple of 16 bytes");
}

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment;

// A or B: the whole 16 x 16 tile in logical (row, column) order, whatever its memory layout.
template <typename Use, typename T, typename Layout>
class fragment<Use, 16, 16, 16, T, Layout> {
  static_assert(!std::is_same_v<Use, accumulator>);

 public:
  static constexpr int num_elements = 256;
  T x[num_elements];
};

template <typename T>
class fragment<accumulator, 16, 16, 16, T, void> {
 public:
  static constexpr int num_elements = 8;  // this lane's: r * 16 + c = lane + 32 * i
  T x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (int i = 0; i < f.num_elements; i++) f.x[i] = detail::from_f32<T>(v);
}

// A (16 x 16, rows x k): row_major reads p[r * ldm + k], col_major p[r + k * ldm].
// B (16 x 16, k x columns): row_major reads p[k * ldm + c], col_major p[k + c * ldm].
template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  detail::check_tile(p, ldm);
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++)
      f.x[r * 16 + c] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[r + c * ldm];
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm,
                             layout_t layout) {
  detail::check_tile(p, ldm);
  const int lane = detail::lane();
  for (int i = 0; i < 8; i++) {
    const int e = lane + 32 * i, r = e / 16, c = e % 16;
    f.x[i] = layout == mem_row_major ? p[r * ldm + c] : p[r + c * ldm];
  }
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  detail::check_tile(p, ldm);
  const int lane = detail::lane();
  for (int i = 0; i < 8; i++) {
    const int e = lane + 32 * i, r = e / 16, c = e % 16;
    (layout == mem_row_major ? p[r * ldm + c] : p[r + c * ldm]) = f.x[i];
  }
}

// d = a b + c, fp32 products of the inputs (exact for bf16) summed over k in order.
template <typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  const int lane = detail::lane();
  for (int i = 0; i < 8; i++) {
    const int e = lane + 32 * i, r = e / 16, col = e % 16;
    float acc = c.x[i];
    for (int k = 0; k < 16; k++) acc += detail::to_f32(a.x[r * 16 + k]) * detail::to_f32(b.x[k * 16 + col]);
    d.x[i] = acc;
  }
}

}  // namespace nvcuda::wmma
