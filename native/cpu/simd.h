// Inner loops written so the compiler vectorises them without -ffast-math: several independent
// accumulators make the reassociation explicit. Each function is compiled for AVX2+FMA and for
// baseline x86-64, chosen at load time, so one binary runs on every x86-64 machine.
#pragma once

#include <cstdint>
#include <cstring>

// The vector helpers below return 32-byte vectors; they are inline, so the ABI note GCC gives for
// them in the baseline clone does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(JG_NO_MULTIVERSION)
#define JG_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define JG_MULTIVERSION
#endif

namespace jg::cpu {

float dot(const float* a, const float* b, int64_t n);
// y (n) += a * x (n)
void axpy(float* y, float a, const float* x, int64_t n);
// sum of squares of x (n), accumulated in double
double sum_squares(const float* x, int64_t n);

// Eight floats as one value, through the GCC/clang vector extension: each clone of a multiversioned
// function compiles the arithmetic on it to one AVX register (x86-64-v3) or two SSE registers
// (baseline). For inline helpers used inside such functions; loads and stores are unaligned.
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));

inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, f32x8 v) { std::memcpy(p, &v, sizeof v); }
inline f32x8 splat8(float a) { return f32x8{a, a, a, a, a, a, a, a}; }
// Lanes added pairwise, in a fixed order.
inline float hsum8(f32x8 v) { return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])); }
// hsum8 of four vectors at once: the same sums in the same order, through shuffles where the
// compiler has __builtin_shufflevector (clang, GCC 12+), lane by lane otherwise.
inline f32x4 hsum8x4(const f32x8& v0, const f32x8& v1, const f32x8& v2, const f32x8& v3) {
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define JG_HSUM8X4_SHUFFLES
#endif
#endif
#ifdef JG_HSUM8X4_SHUFFLES
  // h_c = low half + high half of v_c: lanes (v0+v4, v1+v5, v2+v6, v3+v7).
  const f32x4 h0 = __builtin_shufflevector(v0, v0, 0, 1, 2, 3) + __builtin_shufflevector(v0, v0, 4, 5, 6, 7);
  const f32x4 h1 = __builtin_shufflevector(v1, v1, 0, 1, 2, 3) + __builtin_shufflevector(v1, v1, 4, 5, 6, 7);
  const f32x4 h2 = __builtin_shufflevector(v2, v2, 0, 1, 2, 3) + __builtin_shufflevector(v2, v2, 4, 5, 6, 7);
  const f32x4 h3 = __builtin_shufflevector(v3, v3, 0, 1, 2, 3) + __builtin_shufflevector(v3, v3, 4, 5, 6, 7);
  // (h0 + h2, h1 + h3) for two vectors at a time, then those two added.
  const f32x4 s01 = __builtin_shufflevector(h0, h1, 0, 1, 4, 5) + __builtin_shufflevector(h0, h1, 2, 3, 6, 7);
  const f32x4 s23 = __builtin_shufflevector(h2, h3, 0, 1, 4, 5) + __builtin_shufflevector(h2, h3, 2, 3, 6, 7);
  return __builtin_shufflevector(s01, s23, 0, 2, 4, 6) + __builtin_shufflevector(s01, s23, 1, 3, 5, 7);
#else
  return f32x4{hsum8(v0), hsum8(v1), hsum8(v2), hsum8(v3)};
#endif
}
// a where mask (all ones) else b
inline f32x8 select8(i32x8 mask, f32x8 a, f32x8 b) {
  return reinterpret_cast<f32x8>((mask & reinterpret_cast<i32x8>(a)) | (~mask & reinterpret_cast<i32x8>(b)));
}

// e^x in fp32 without a call: exp_f32 for one float, exp8 for eight (the same operations lane by
// lane), to inline into loops of multiversioned kernels. Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2/2, and the Cephes degree-7 polynomial for e^r; 2^n is applied as two power-of-two
// factors, so results down into the denormal range round once. Measured over every float in
// [-87.3, 88.7] (bench/attention_kernels.cpp): at most 1 ulp from std::exp, relative error at most
// 8.5e-8 (1.4 units of 2^-24) of the exact value. exp(-inf) = 0, x below -104 gives 0 (e^-104 <
// 2^-150), above 89 gives +inf, NaN gives NaN.
inline float exp_f32(float x) {
  // Clamped with comparisons a NaN fails, so a NaN runs through as NaN.
  x = x < -104.0f ? -104.0f : x;
  x = x > 89.0f ? 89.0f : x;
  // n = round(x / ln2): adding 1.5 * 2^23 leaves n in the low mantissa bits.
  const float shifter = 12582912.0f;
  const float t = x * 1.44269504088896341f + shifter;
  uint32_t tbits;
  std::memcpy(&tbits, &t, sizeof t);
  const uint32_t n = tbits - 0x4B400000u;  // n in [-151, 129] as two's complement
  const float fn = t - shifter;
  // r = x - n ln2, ln2 split in a high part exact in a product with n and a low part.
  float r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // 2^n = 2^n1 * 2^n2, n1 = floor(n / 2), both normal; on the NaN path n is garbage but p is NaN.
  const uint32_t n1 = static_cast<uint32_t>(static_cast<int32_t>(n) >> 1), n2 = n - n1;
  const uint32_t b1 = (n1 + 127u) << 23, b2 = (n2 + 127u) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  return p * s1 * s2;
}

inline f32x8 exp8(f32x8 x) {
  x = select8(x < splat8(-104.0f), splat8(-104.0f), x);
  x = select8(x > splat8(89.0f), splat8(89.0f), x);
  const f32x8 shifter = splat8(12582912.0f);
  const f32x8 t = x * 1.44269504088896341f + shifter;
  const u32x8 n = reinterpret_cast<u32x8>(t) - 0x4B400000u;
  const f32x8 fn = t - shifter;
  f32x8 r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  f32x8 p = splat8(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const u32x8 n1 = reinterpret_cast<u32x8>(reinterpret_cast<i32x8>(n) >> 1), n2 = n - n1;
  return p * reinterpret_cast<f32x8>((n1 + 127u) << 23) * reinterpret_cast<f32x8>((n2 + 127u) << 23);
}

}  // namespace jg::cpu
