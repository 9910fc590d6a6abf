#include "decode.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "../common/check.h"
#include "../common/memory.h"
#include "sampling.h"
#include "threadpool.h"

namespace jg::cpu {

void check_decode_options(const DecodeOptions& o) {
  JG_CHECK(o.gen_length > 0, "genLength must be positive");
  JG_CHECK(o.block_length > 0, "blockLength must be positive");
  constexpr int64_t kMax = int64_t(1) << 31;  // completion positions are int32 on the canvas
  JG_CHECK(o.gen_length < kMax, "genLength must be below 2^31");
  JG_CHECK(o.remasking == Remasking::THRESHOLD || o.steps < kMax, "steps must be below 2^31");
  JG_CHECK(o.min_new_tokens >= 0, "minNewTokens must be >= 0");
  JG_CHECK(o.gen_length % o.block_length == 0, "genLength (", o.gen_length, ") must be divisible by blockLength (",
           o.block_length, ")");
  if (o.remasking != Remasking::THRESHOLD) {
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

DecodeResult decode(Model& model, const DecodeRequest& req, const DecodeOptions& o, const std::atomic<bool>* abort,
                    const std::function<void(const DecodeProgress&)>& progress, const ForwardFn& forward) {
  check_decode_options(o);
  const ModelConfig& cfg = model.config();
  check_decode_request(req, cfg);
  const int64_t n = static_cast<int64_t>(req.seeds.size());
  const int64_t L = o.gen_length, BL = o.block_length, V = cfg.embedding_size;
  const int32_t mask = static_cast<int32_t>(cfg.mask_token_id);
  const int64_t n_blocks = L / BL;
  const int64_t steps_per_block = o.remasking == Remasking::THRESHOLD ? BL : o.steps / n_blocks;
  JG_CHECK(static_cast<int64_t>(req.prompt_starts.size()) == n + 1, "one prompt per seed is required");
  JG_CHECK(L < cfg.max_seq_len, "genLength ", L, " leaves no room for a prompt in the model's maximum length ",
           cfg.max_seq_len);
  {
    // Per sequence: the canvas, four per-position results, the step log and the block schedule.
    const int64_t max_steps = o.remasking == Remasking::THRESHOLD ? L : o.steps;
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
  r.max_steps = o.remasking == Remasking::THRESHOLD ? L : o.steps;
  r.transfers.assign(n * r.max_steps, -1);

  const int64_t tokens_before = model.tokens_computed();
  const bool cfg_on = o.cfg_scale > 0;
  const float scale = static_cast<float>(o.cfg_scale + 1.0);
  int64_t committed = 0;
  std::vector<int32_t> tokens, starts, rows;
  std::vector<int64_t> row_seq, row_pos;  // per selected row: sequence and completion position
  std::vector<float> logits, un_logits;
  std::vector<RowSample> samples;
  std::vector<int32_t> excluded_all{mask}, excluded_early{mask};
  for (int32_t id : o.stop_ids) excluded_early.push_back(id);

  for (int64_t step = 0;; step++) {
    if (abort && abort->load()) throw EngineError("Aborted");
    // The batch: every active sequence (and its unconditional twin under guidance).
    tokens.clear();
    starts.assign(1, 0);
    rows.clear();
    row_seq.clear();
    row_pos.clear();
    std::vector<int64_t> active;
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
    }
    const int64_t n_rows = static_cast<int64_t>(rows.size());
    const int64_t cond_tokens = static_cast<int64_t>(tokens.size());
    if (cfg_on) {
      // Unconditional copies: the prompt replaced by mask tokens, the completion as is.
      const int64_t n_active = static_cast<int64_t>(active.size());
      for (int64_t a = 0; a < n_active; a++) {
        const SeqState& q = seqs[active[a]];
        tokens.insert(tokens.end(), q.prompt_len, mask);
        tokens.insert(tokens.end(), q.x.begin() + q.prompt_len, q.x.end());
        starts.push_back(static_cast<int32_t>(tokens.size()));
      }
      for (int64_t r_ = 0; r_ < n_rows; r_++) rows.push_back(rows[r_] + static_cast<int32_t>(cond_tokens));
    }
    logits.resize(rows.size() * V);
    Batch batch{tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1};
    if (forward) forward(logits.data(), batch, rows.data(), static_cast<int64_t>(rows.size()), step);
    else model.forward(logits.data(), batch, rows.data(), static_cast<int64_t>(rows.size()));
    if (cfg_on) {
      float* c = logits.data();
      const float* u = logits.data() + n_rows * V;
      for (int64_t i = 0; i < n_rows * V; i++) c[i] = u[i] + scale * (c[i] - u[i]);
    }

    // Columns past vocab_size (embedding padding) are not tokens and are never sampled.
    samples.resize(n_rows);
    parallel_for(n_rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; i++) {
        const SeqState& q = seqs[row_seq[i]];
        const std::vector<int32_t>& ex = row_pos[i] < o.min_new_tokens ? excluded_early : excluded_all;
        uint64_t key = row_key(req.seeds[row_seq[i]], static_cast<uint64_t>(q.steps), static_cast<uint64_t>(row_pos[i]));
        sample_row(&samples[i], logits.data() + i * V, cfg.vocab_size, ex.data(), static_cast<int64_t>(ex.size()), o.temperature, key);
      }
    });

    // Per sequence: choose which of its rows to commit.
    int64_t i = 0;
    for (int64_t s : active) {
      SeqState& q = seqs[s];
      const int64_t first = i;
      while (i < n_rows && row_seq[i] == s) i++;
      const int64_t count = i - first;
      std::vector<double> conf(count);
      for (int64_t k = 0; k < count; k++) {
        const RowSample& rs = samples[first + k];
        if (o.remasking == Remasking::RANDOM) {
          // A uniform from a draw index no token uses, so it is independent of the Gumbel noise.
          conf[k] = uniform_open(row_key(req.seeds[s], static_cast<uint64_t>(q.steps), static_cast<uint64_t>(row_pos[first + k])),
                                 static_cast<uint64_t>(V) + 1);
        } else {
          conf[k] = o.confidence == Confidence::PROBABILITY ? rs.prob
                    : o.confidence == Confidence::MARGIN   ? rs.margin
                                                           : rs.certainty;
        }
      }
      std::vector<int64_t> order(count);
      std::iota(order.begin(), order.end(), 0);
      // Highest confidence first; ties go to the lower position (rows are in position order).
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return conf[a] > conf[b]; });
      int64_t k_commit;
      if (o.remasking == Remasking::THRESHOLD) {
        k_commit = 1;
        while (k_commit < count && conf[order[k_commit]] >= o.threshold) k_commit++;
      } else {
        k_commit = std::min(count, q.schedule[q.step_in_block]);
      }
      for (int64_t k = 0; k < k_commit; k++) {
        const int64_t row = first + order[k];
        const int64_t j = row_pos[row];
        const RowSample& rs = samples[row];
        q.x[q.prompt_len + j] = rs.token;
        r.tokens[s * L + j] = rs.token;
        r.logprobs[s * L + j] = rs.logprob;
        r.entropies[s * L + j] = rs.entropy;
        r.commit_step[s * L + j] = static_cast<int32_t>(q.steps);
      }
      committed += k_commit;
      r.transfers[s * r.max_steps + q.steps] = static_cast<int32_t>(k_commit);
      q.steps++;
      q.nfe += cfg_on ? 2 : 1;
      q.step_in_block++;
      const bool block_full = count == k_commit;
      const bool block_over = o.remasking == Remasking::THRESHOLD ? block_full : q.step_in_block == steps_per_block;
      if (block_over) {
        q.block++;
        q.step_in_block = 0;
        if (q.block == n_blocks) q.done = true;
      }
    }
    if (progress) progress({committed, n * L, seqs.empty() ? nullptr : r.tokens.data()});
  }
  for (int64_t s = 0; s < n; s++) r.nfe[s] = seqs[s].nfe;
  r.forward_tokens = model.tokens_computed() - tokens_before;
  return r;
}

}  // namespace jg::cpu
