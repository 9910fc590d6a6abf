// The decoders' counter-based generator on the device: the same functions as native/cpu/sampling.h
// (mix64, row_key, uniform_open), written for host and device so both backends draw the same numbers.
// Integer arithmetic is exact on both; uniform_open's conversion and scaling by 2^-53 are exact too.
#pragma once

#include <cstdint>

namespace jg::cuda {

__host__ __device__ inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

__host__ __device__ inline uint64_t row_key(uint64_t seed, uint64_t step, uint64_t pos) {
  return mix64(mix64(seed ^ mix64(step)) ^ (pos * 0xD1B54A32D192ED03ULL));
}

__host__ __device__ inline double uniform_open(uint64_t key, uint64_t index) {
  return (static_cast<double>(mix64(key + index * 0x9E3779B97F4A7C15ULL) >> 11) + 0.5) * 0x1.0p-53;
}

}  // namespace jg::cuda
