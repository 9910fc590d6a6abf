// Per-row sampling for the decoders on the CPU: Gumbel-max in float64 (exact categorical sampling
// at a temperature; argmax at temperature 0) with the shared counter-based generator.
#pragma once

#include <cstdint>

#include "../common/sampling.h"

namespace jg::cpu {

// out, logits (V): excluded ids (the mask token, forbidden tokens) get probability zero.
void sample_row(RowSample* out, const float* logits, int64_t V, const int32_t* excluded, int64_t n_excluded,
                double temperature, uint64_t key);

}  // namespace jg::cpu
