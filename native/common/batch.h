// A packed batch, as every backend takes it: sequences one after another, no padding.
#pragma once

#include <cstdint>
#include <vector>

namespace jg {

// seq_starts has n_seqs + 1 entries; sequence s is tokens[seq_starts[s] .. seq_starts[s+1]).
struct Batch {
  const int32_t* tokens;
  const int32_t* seq_starts;
  int64_t n_seqs;
  int64_t n_tokens() const { return seq_starts[n_seqs]; }
};

// A batch with each distinct sequence once, and rows that point into it (see share_duplicates).
struct SharedBatch {
  std::vector<int32_t> tokens, starts, rows;
  Batch batch() const { return {tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1}; }
};

// Identical sequences in a packed batch have identical activations: every op works within one
// sequence, and a row's arithmetic does not depend on where the row sits in the batch. So each
// distinct sequence is computed once and the rows of its copies point into its first copy (the
// G rollouts of one prompt are identical at the first step, and share prefixes whenever the
// policy agrees with itself). Fills `out` and returns true when some sequence repeats; returns
// false, leaving `out` as it was, when all are distinct.
bool share_duplicates(SharedBatch& out, const Batch& batch, const int32_t* rows, int64_t n_rows);

}  // namespace jg
