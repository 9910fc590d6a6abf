// Checks of what crosses the native boundary (from JavaScript, from files): pure C++ with no
// N-API, so the fuzzers (native/fuzz) run exactly the code the addon runs. Each throws EngineError
// naming the field and the rule.
#pragma once

#include <cstdint>

#include "config.h"

namespace jg {

// Positive sizes, divisibility, ids inside the vocabulary, and every size small enough that the
// parameter layout cannot overflow int64 (a config.json is a stranger's file).
void check_model_config(const ModelConfig& c);

// A packed batch as the engine takes it: starts from 0 to n_tokens, increasing, sequences of 1 to
// max_seq_len tokens, token ids in the vocabulary, rows inside the batch.
void check_packed_batch(const int32_t* tokens, int64_t n_tokens, const int32_t* starts, int64_t n_starts,
                        const int32_t* rows, int64_t n_rows, const ModelConfig& cfg);

}  // namespace jg
