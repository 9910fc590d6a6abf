// The decoders' per-step work on the device: per-row sampling (Gumbel-max in fp64 with the CPU
// backend's counter-based generator, so seeded runs draw the same tokens), the confidence
// measures, the per-sequence choice of positions to commit, classifier-free guidance, and the
// log-probability of given targets. Pointers are device pointers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common/sampling.h"

namespace jg::cuda {

// What the CPU's sample_row computes for one row, in the same arithmetic (native/common/sampling.h).
using jg::RowSample;

// out (R), logits (R, ld) fp32 of which the first V columns are tokens; keys (R) from row_key.
// Excluded ids: row r excludes excluded[0 .. n_early) when early[r] is 1, else excluded[0 .. n_all).
void sample_rows(RowSample* out, const float* logits, int64_t ld, int64_t R, int64_t V, const int32_t* excluded,
                 int n_all, int n_early, const uint8_t* early, double temperature, const uint64_t* keys,
                 cudaStream_t s);

using jg::ConfidenceKind;

// For each of n_seqs sequences, rows row_begin[s] .. row_begin[s+1] (in position order) of samples:
// ranks them by confidence (highest first, ties to the lower position: a stable sort), commits the
// first k of that order, and writes commit (R) 0/1 and k_commit (n_seqs).
//   threshold rule (use_threshold): k = max(1, number of rows with confidence >= threshold);
//   schedule: k = min(rows, k_sched[s]).
// RANDOM confidence is uniform_open(keys[r], random_index), independent of the Gumbel noise.
void select_commits(uint8_t* commit, int32_t* k_commit, const RowSample* samples, const uint64_t* keys,
                    const int32_t* row_begin, int64_t n_seqs, ConfidenceKind kind, uint64_t random_index,
                    bool use_threshold, double threshold, const int32_t* k_sched, cudaStream_t s);

// Classifier-free guidance: cond (n) = uncond + scale * (cond - uncond).
void cfg_combine(float* cond, const float* uncond, float scale, int64_t n, cudaStream_t s);

// logprobs (R) = log-softmax of logits (R, V) at targets (R), excluded ids (n_excluded) set to -inf first.
void logprob_rows(float* logprobs, const float* logits, const int32_t* targets, int64_t R, int64_t V,
                  const int32_t* excluded, int n_excluded, cudaStream_t s);

}  // namespace jg::cuda
