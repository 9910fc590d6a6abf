// What every backend's decoder samples with: a counter-based generator, so a draw depends only on
// (seed, step, position, token) and never on which other sequences share the batch or on which
// backend runs it, and the per-row result of sampling. Written for host and device (the CUDA
// kernels include it): integer arithmetic is exact on both, and so are uniform_open's conversion
// and its scaling by 2^-53.
#pragma once

#include <cstdint>

#include "hostdevice.h"

namespace jg {

// A 64-bit mixing function (SplitMix64's finaliser).
JG_HOST_DEVICE inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The key of one (sequence seed, step, position): every uniform drawn for that row derives from it.
JG_HOST_DEVICE inline uint64_t row_key(uint64_t seed, uint64_t step, uint64_t pos) {
  return mix64(mix64(seed ^ mix64(step)) ^ (pos * 0xD1B54A32D192ED03ULL));
}

// Uniform in the open interval (0, 1) with 53 random bits; `index` selects the draw within a row.
JG_HOST_DEVICE inline double uniform_open(uint64_t key, uint64_t index) {
  return (static_cast<double>(mix64(key + index * 0x9E3779B97F4A7C15ULL) >> 11) + 0.5) * 0x1.0p-53;
}

// One row's sample and the confidence measures the decoders rank rows by.
struct RowSample {
  int32_t token;     // sampled at `temperature` (Gumbel-max), argmax at 0
  float logprob;     // log p(token) of the model's distribution (temperature 1, excluded ids removed)
  float entropy;     // entropy of the sampling distribution (of the temperature-1 one at temperature 0)
  double prob;       // p(token), temperature 1: LLaDA's low-confidence score
  double margin;     // p(top1) - p(top2), temperature 1
  double certainty;  // exp(-entropy of the temperature-1 distribution), in (0, 1]
};

// What the decoders rank a sequence's rows by when they choose which to commit.
enum class ConfidenceKind : int { PROBABILITY = 0, MARGIN = 1, CERTAINTY = 2, RANDOM = 3 };

}  // namespace jg
