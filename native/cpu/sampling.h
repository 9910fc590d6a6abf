// Per-row sampling for the decoders: Gumbel-max in float64 (exact categorical sampling at a
// temperature; argmax at temperature 0) from a counter-based generator, so a draw depends only on
// (seed, step, position, token) and never on which other sequences share the batch.
#pragma once

#include <cstdint>

namespace jg::cpu {

// A 64-bit mixing function (SplitMix64's finaliser).
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The key of one (sequence seed, step, position): every uniform drawn for that row derives from it.
inline uint64_t row_key(uint64_t seed, uint64_t step, uint64_t pos) {
  return mix64(mix64(seed ^ mix64(step)) ^ (pos * 0xD1B54A32D192ED03ULL));
}

// Uniform in the open interval (0, 1) with 53 random bits; `index` selects the draw within a row.
inline double uniform_open(uint64_t key, uint64_t index) {
  return (static_cast<double>(mix64(key + index * 0x9E3779B97F4A7C15ULL) >> 11) + 0.5) * 0x1.0p-53;
}

struct RowSample {
  int32_t token;   // sampled at `temperature` (Gumbel-max), argmax at 0
  float logprob;   // log p(token) of the model's distribution (temperature 1, excluded ids removed)
  float entropy;   // entropy of the sampling distribution (of the temperature-1 one at temperature 0)
  double prob;     // p(token), temperature 1: LLaDA's low-confidence score
  double margin;   // p(top1) - p(top2), temperature 1
  double certainty;  // exp(-entropy of the temperature-1 distribution), in (0, 1]
};

// out, logits (V): excluded ids (the mask token, forbidden tokens) get probability zero.
void sample_row(RowSample* out, const float* logits, int64_t V, const int32_t* excluded, int64_t n_excluded,
                double temperature, uint64_t key);

}  // namespace jg::cpu
