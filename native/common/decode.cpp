#include "decode.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend.h"
#include "check.h"
#include "memory.h"

namespace jg {

void check_decode_options(const DecodeOptions& o) {
  JG_CHECK(o.gen_length > 0, "genLength must be positive");
  JG_CHECK(o.block_length > 0, "blockLength must be positive");
  constexpr int64_t kMax = int64_t(1) << 31;  // completion positions are int32 on the canvas
  JG_CHECK(o.gen_length < kMax, "genLength must be below 2^31");
  JG_CHECK(o.decoder == Decoder::THRESHOLD || o.steps < kMax, "steps must be below 2^31");
  JG_CHECK(o.min_new_tokens >= 0, "minNewTokens must be >= 0");
  JG_CHECK(o.gen_length % o.block_length == 0, "genLength (", o.gen_length, ") must be divisible by blockLength (",
           o.block_length, ")");
  if (o.decoder != Decoder::THRESHOLD) {
    int64_t blocks = o.gen_length / o.block_length;
    JG_CHECK(o.steps > 0, "steps must be positive");
    JG_CHECK(o.steps % blocks == 0, "steps (", o.steps, ") must be divisible by the number of blocks (", blocks,
             " = genLength / blockLength)");
  } else {
    JG_CHECK(o.threshold >= 0 && o.threshold <= 1, "threshold must lie in [0, 1]");
  }
  JG_CHECK(o.temperature >= 0 && std::isfinite(o.temperature), "temperature must be a finite number >= 0");
  JG_CHECK(o.cfg_scale >= 0 && std::isfinite(o.cfg_scale), "cfgScale must be a finite number >= 0");
}

void check_decode_request(const DecodeRequest& req, const ModelConfig& cfg) {
  const auto& st = req.prompt_starts;
  JG_CHECK(st.size() == req.seeds.size() + 1 && st[0] == 0 && st.back() == static_cast<int64_t>(req.prompts.size()),
           "promptStarts must run from 0 to the number of prompt tokens, one prompt per seed");
  for (size_t s = 0; s + 1 < st.size(); s++) JG_CHECK(st[s + 1] >= st[s], "promptStarts must not decrease");
  for (size_t i = 0; i < req.prompts.size(); i++)
    JG_CHECK(req.prompts[i] >= 0 && req.prompts[i] < cfg.vocab_size, "Token id ", req.prompts[i], " at prompt position ",
             i, " is outside the vocabulary [0, ", cfg.vocab_size, ")");
  for (uint64_t sd : req.seeds) JG_CHECK(sd < (uint64_t(1) << 53), "seeds must be integers in [0, 2^53)");
}

std::vector<int64_t> transfer_schedule(int64_t mask_count, int64_t steps) {
  std::vector<int64_t> n(steps, mask_count / steps);
  for (int64_t i = 0; i < mask_count % steps; i++) n[i]++;
  return n;
}

void select_commits(uint8_t* commit, int32_t* k_out, const RowSample* samples, const uint64_t* keys,
                    const int32_t* row_begin, int64_t n_seqs, ConfidenceKind confidence, uint64_t random_index,
                    bool use_threshold, double threshold, const int32_t* k_sched) {
  std::vector<double> conf;
  std::vector<int64_t> order;
  for (int64_t a = 0; a < n_seqs; a++) {
    const int64_t first = row_begin[a], count = row_begin[a + 1] - first;
    conf.resize(count);
    for (int64_t i = 0; i < count; i++) {
      const RowSample& rs = samples[first + i];
      conf[i] = confidence == ConfidenceKind::RANDOM        ? uniform_open(keys[first + i], random_index)
                : confidence == ConfidenceKind::PROBABILITY ? rs.prob
                : confidence == ConfidenceKind::MARGIN      ? rs.margin
                                                            : rs.certainty;
    }
    order.resize(count);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return conf[x] > conf[y]; });
    int64_t k;
    if (use_threshold) {
      k = 1;
      while (k < count && conf[order[k]] >= threshold) k++;
      k = std::min(k, count);
    } else {
      k = std::min<int64_t>(count, k_sched[a]);
    }
    std::fill(commit + first, commit + first + count, uint8_t(0));
    for (int64_t i = 0; i < k; i++) commit[first + order[i]] = 1;
    k_out[a] = static_cast<int32_t>(k);
  }
}

namespace {

struct SeqState {
  int64_t prompt_len;
  std::vector<int32_t> x;  // prompt + completion
  int64_t block = 0;       // current block
  int64_t step_in_block = 0;
  int64_t steps = 0;       // forward passes (steps) taken
  int32_t nfe = 0;
  std::vector<int64_t> schedule;  // of the current block (low-confidence / random)
  bool done = false;
};

}  // namespace

DecodeResult decode(Backend& backend, const DecodeRequest& req, const DecodeOptions& o, const std::atomic<bool>* abort,
                    const std::function<void(const DecodeProgress&)>& progress, const ForwardHook& forward) {
  check_decode_options(o);
  const ModelConfig& cfg = backend.config();
  check_decode_request(req, cfg);
  const int64_t n = static_cast<int64_t>(req.seeds.size());
  const int64_t L = o.gen_length, BL = o.block_length, V = cfg.embedding_size;
  const int32_t mask = static_cast<int32_t>(cfg.mask_token_id);
  const int64_t n_blocks = L / BL;
  const bool threshold_rule = o.decoder == Decoder::THRESHOLD;
  const int64_t steps_per_block = threshold_rule ? BL : o.steps / n_blocks;
  JG_CHECK(L < cfg.max_seq_len, "genLength ", L, " leaves no room for a prompt in the model's maximum length ",
           cfg.max_seq_len);
  {
    // Per sequence: the canvas, four per-position results, the step log and the block schedule.
    const int64_t max_steps = threshold_rule ? L : o.steps;
    const int64_t per_seq = 4 * (cfg.max_seq_len + 4 * L + max_steps) + 8 * steps_per_block;
    check_fits(checked_mul(n, per_seq), "the decode results");
  }

  std::vector<SeqState> seqs(n);
  for (int64_t s = 0; s < n; s++) {
    SeqState& q = seqs[s];
    q.prompt_len = req.prompt_starts[s + 1] - req.prompt_starts[s];
    JG_CHECK(q.prompt_len > 0, "prompt ", s, " is empty");
    JG_CHECK(q.prompt_len + L <= cfg.max_seq_len, "prompt ", s, " (", q.prompt_len, " tokens) plus genLength ", L,
             " exceeds the model's maximum length ", cfg.max_seq_len);
    q.x.assign(req.prompts.begin() + req.prompt_starts[s], req.prompts.begin() + req.prompt_starts[s + 1]);
    q.x.resize(q.prompt_len + L, mask);
    q.schedule = transfer_schedule(BL, steps_per_block);
  }

  DecodeResult r;
  r.tokens.assign(n * L, mask);
  r.logprobs.assign(n * L, 0.0f);
  r.entropies.assign(n * L, 0.0f);
  r.commit_step.assign(n * L, -1);
  r.nfe.assign(n, 0);
  // Low-confidence and random take exactly `steps`; threshold at most one step per token.
  r.max_steps = threshold_rule ? L : o.steps;
  r.transfers.assign(n * r.max_steps, -1);

  const int64_t tokens_before = backend.tokens_computed();
  const bool guided = o.cfg_scale > 0;
  const ConfidenceKind confidence = o.decoder == Decoder::RANDOM             ? ConfidenceKind::RANDOM
                                    : o.confidence == Confidence::PROBABILITY ? ConfidenceKind::PROBABILITY
                                    : o.confidence == Confidence::MARGIN      ? ConfidenceKind::MARGIN
                                                                              : ConfidenceKind::CERTAINTY;
  // Excluded ids: the mask token for every row, and the stop ids too below min_new_tokens.
  std::vector<int32_t> excluded{mask};
  excluded.insert(excluded.end(), o.stop_ids.begin(), o.stop_ids.end());
  int64_t committed = 0;
  std::vector<int32_t> tokens, starts, rows, row_begin, k_sched;
  std::vector<int64_t> row_seq, row_pos, active;  // per selected row: sequence and completion position
  std::vector<uint64_t> keys;
  std::vector<uint8_t> early;
  DecodeStepResult out;

  for (int64_t step = 0;; step++) {
    if (abort && abort->load()) JG_FAIL(ErrorKind::ABORTED, "Aborted");
    // The batch: every active sequence (and its unconditional twin under guidance).
    tokens.clear();
    starts.assign(1, 0);
    rows.clear();
    row_seq.clear();
    row_pos.clear();
    active.clear();
    row_begin.assign(1, 0);
    k_sched.clear();
    for (int64_t s = 0; s < n; s++)
      if (!seqs[s].done) active.push_back(s);
    if (active.empty()) break;
    for (int64_t s : active) {
      SeqState& q = seqs[s];
      const int32_t base = starts.back();
      tokens.insert(tokens.end(), q.x.begin(), q.x.end());
      starts.push_back(static_cast<int32_t>(tokens.size()));
      // Only the masked positions of the current block need logits.
      for (int64_t j = q.block * BL; j < (q.block + 1) * BL; j++) {
        if (q.x[q.prompt_len + j] != mask) continue;
        rows.push_back(base + static_cast<int32_t>(q.prompt_len + j));
        row_seq.push_back(s);
        row_pos.push_back(j);
      }
      row_begin.push_back(static_cast<int32_t>(rows.size()));
      k_sched.push_back(threshold_rule ? 0 : static_cast<int32_t>(q.schedule[q.step_in_block]));
    }
    const int64_t n_rows = static_cast<int64_t>(rows.size());
    const int64_t cond_tokens = static_cast<int64_t>(tokens.size());
    if (guided) {
      // Unconditional copies: the prompt replaced by mask tokens, the completion as is.
      for (int64_t s : active) {
        const SeqState& q = seqs[s];
        tokens.insert(tokens.end(), q.prompt_len, mask);
        tokens.insert(tokens.end(), q.x.begin() + q.prompt_len, q.x.end());
        starts.push_back(static_cast<int32_t>(tokens.size()));
      }
      for (int64_t i = 0; i < n_rows; i++) rows.push_back(rows[i] + static_cast<int32_t>(cond_tokens));
    }
    keys.resize(n_rows);
    early.resize(n_rows);
    for (int64_t i = 0; i < n_rows; i++) {
      keys[i] = row_key(req.seeds[row_seq[i]], static_cast<uint64_t>(seqs[row_seq[i]].steps),
                        static_cast<uint64_t>(row_pos[i]));
      early[i] = row_pos[i] < o.min_new_tokens ? 1 : 0;
    }
    const DecodeStep st{{tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1},
                        rows.data(),
                        n_rows,
                        guided,
                        static_cast<float>(o.cfg_scale + 1.0),
                        keys.data(),
                        early.data(),
                        excluded.data(),
                        1,
                        static_cast<int>(excluded.size()),
                        o.temperature,
                        row_begin.data(),
                        static_cast<int64_t>(active.size()),
                        confidence,
                        static_cast<uint64_t>(V) + 1,
                        threshold_rule,
                        o.threshold,
                        k_sched.data(),
                        step,
                        forward ? &forward : nullptr};
    backend.decode_step(st, out);

    for (size_t a = 0; a < active.size(); a++) {
      const int64_t s = active[a];
      SeqState& q = seqs[s];
      const int64_t count = row_begin[a + 1] - row_begin[a];
      const int64_t k = out.k[a];
      for (int64_t row = row_begin[a]; row < row_begin[a + 1]; row++) {
        if (!out.commit[row]) continue;
        const int64_t j = row_pos[row];
        const RowSample& rs = out.samples[row];
        q.x[q.prompt_len + j] = rs.token;
        r.tokens[s * L + j] = rs.token;
        r.logprobs[s * L + j] = rs.logprob;
        r.entropies[s * L + j] = rs.entropy;
        r.commit_step[s * L + j] = static_cast<int32_t>(q.steps);
      }
      committed += k;
      r.transfers[s * r.max_steps + q.steps] = static_cast<int32_t>(k);
      q.steps++;
      q.nfe += guided ? 2 : 1;
      q.step_in_block++;
      const bool block_full = count == k;
      const bool block_over = threshold_rule ? block_full : q.step_in_block == steps_per_block;
      if (block_over) {
        q.block++;
        q.step_in_block = 0;
        if (q.block == n_blocks) q.done = true;
      }
    }
    if (progress) progress({committed, n * L, r.tokens.data()});
  }
  for (int64_t s = 0; s < n; s++) r.nfe[s] = seqs[s].nfe;
  r.forward_tokens = backend.tokens_computed() - tokens_before;
  return r;
}

}  // namespace jg
