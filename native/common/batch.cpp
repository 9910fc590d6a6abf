#include "batch.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

namespace jg {

namespace {

uint64_t hash_tokens(const int32_t* t, int64_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(n);
  for (int64_t i = 0; i < n; i++) {
    h ^= static_cast<uint32_t>(t[i]);
    h *= 0x100000001b3ull;
    h ^= h >> 29;
  }
  return h;
}

}  // namespace

bool share_duplicates(SharedBatch& out, const Batch& batch, const int32_t* rows, int64_t n_rows) {
  const int64_t S = batch.n_seqs;
  const int32_t* st = batch.seq_starts;
  if (S < 2) return false;
  // base[s]: where sequence s's tokens start in the shared batch.
  std::vector<int32_t> base(S);
  std::unordered_map<uint64_t, std::vector<int64_t>> firsts;  // hash -> distinct sequences
  int32_t n_tokens = 0;
  bool repeats = false;
  for (int64_t s = 0; s < S; s++) {
    const int32_t* t = batch.tokens + st[s];
    const int64_t len = st[s + 1] - st[s];
    std::vector<int64_t>& same_hash = firsts[hash_tokens(t, len)];
    int64_t match = -1;
    for (int64_t f : same_hash)
      if (st[f + 1] - st[f] == len && std::memcmp(batch.tokens + st[f], t, static_cast<size_t>(len) * sizeof(int32_t)) == 0) {
        match = f;
        break;
      }
    if (match >= 0) {
      base[s] = base[match];
      repeats = true;
    } else {
      same_hash.push_back(s);
      base[s] = n_tokens;
      n_tokens += static_cast<int32_t>(len);
    }
  }
  if (!repeats) return false;
  out.tokens.clear();
  out.starts.assign(1, 0);
  for (int64_t s = 0; s < S; s++) {
    if (base[s] != out.starts.back()) continue;  // a repeat (its first copy already placed)
    out.tokens.insert(out.tokens.end(), batch.tokens + st[s], batch.tokens + st[s + 1]);
    out.starts.push_back(static_cast<int32_t>(out.tokens.size()));
  }
  out.rows.resize(n_rows);
  for (int64_t r = 0; r < n_rows; r++) {
    const int64_t s = std::upper_bound(st, st + S + 1, rows[r]) - st - 1;
    out.rows[r] = base[s] + (rows[r] - st[s]);
  }
  return true;
}

}  // namespace jg
