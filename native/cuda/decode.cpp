#include "decode.h"

#include <algorithm>
#include <vector>

#include "../common/check.h"
#include "../cpu/sampling.h"
#include "sampling.h"

namespace jg::cuda {

namespace {

struct SeqState {
  int64_t prompt_len;
  std::vector<int32_t> x;  // prompt + completion
  int64_t block = 0;
  int64_t step_in_block = 0;
  int64_t steps = 0;
  int32_t nfe = 0;
  std::vector<int64_t> schedule;
  bool done = false;
};

template <typename T>
T* upload(DeviceBuffer& buf, const std::vector<T>& v, cudaStream_t s, const char* what) {
  T* d = buf.reserve_as<T>(std::max<size_t>(v.size(), 1), what);
  if (!v.empty()) JG_CUDA_CHECK(cudaMemcpyAsync(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, s));
  return d;
}

}  // namespace

cpu::DecodeResult decode(Model& model, const cpu::DecodeRequest& req, const cpu::DecodeOptions& o,
                         const std::atomic<bool>* abort, const std::function<void(const cpu::DecodeProgress&)>& progress) {
  using cpu::Remasking;
  cpu::check_decode_options(o);
  DeviceScope scope(model.device());
  const cudaStream_t stream = model.stream();
  const ModelConfig& cfg = model.config();
  const int64_t n = static_cast<int64_t>(req.seeds.size());
  const int64_t L = o.gen_length, BL = o.block_length, V = cfg.embedding_size;
  const int32_t mask = static_cast<int32_t>(cfg.mask_token_id);
  const int64_t n_blocks = L / BL;
  const int64_t steps_per_block = o.remasking == Remasking::THRESHOLD ? BL : o.steps / n_blocks;
  JG_CHECK(static_cast<int64_t>(req.prompt_starts.size()) == n + 1, "one prompt per seed is required");

  std::vector<SeqState> seqs(n);
  for (int64_t s = 0; s < n; s++) {
    SeqState& q = seqs[s];
    q.prompt_len = req.prompt_starts[s + 1] - req.prompt_starts[s];
    JG_CHECK(q.prompt_len > 0, "prompt ", s, " is empty");
    JG_CHECK(q.prompt_len + L <= cfg.max_seq_len, "prompt ", s, " (", q.prompt_len, " tokens) plus genLength ", L,
             " exceeds the model's maximum length ", cfg.max_seq_len);
    q.x.assign(req.prompts.begin() + req.prompt_starts[s], req.prompts.begin() + req.prompt_starts[s + 1]);
    q.x.resize(q.prompt_len + L, mask);
    q.schedule = cpu::transfer_schedule(BL, steps_per_block);
  }

  cpu::DecodeResult r;
  r.tokens.assign(n * L, mask);
  r.logprobs.assign(n * L, 0.0f);
  r.entropies.assign(n * L, 0.0f);
  r.commit_step.assign(n * L, -1);
  r.nfe.assign(n, 0);
  r.max_steps = o.remasking == Remasking::THRESHOLD ? L : o.steps;
  r.transfers.assign(n * r.max_steps, -1);

  const bool cfg_on = o.cfg_scale > 0;
  const float scale = static_cast<float>(o.cfg_scale + 1.0);
  const ConfidenceKind kind = o.remasking == Remasking::RANDOM               ? ConfidenceKind::RANDOM
                              : o.confidence == cpu::Confidence::PROBABILITY ? ConfidenceKind::PROBABILITY
                              : o.confidence == cpu::Confidence::MARGIN      ? ConfidenceKind::MARGIN
                                                                             : ConfidenceKind::CERTAINTY;
  // Excluded ids: the mask token for every row, and the stop ids too below min_new_tokens.
  std::vector<int32_t> excluded{mask};
  for (int32_t id : o.stop_ids) excluded.push_back(id);
  DeviceBuffer d_excluded, d_keys, d_early, d_row_begin, d_sched, d_samples, d_commit, d_k;
  const int32_t* ex = upload(d_excluded, excluded, stream, "decoder state");

  int64_t committed = 0;
  std::vector<int32_t> tokens, starts, rows, row_begin, k_sched;
  std::vector<int64_t> row_seq, row_pos;
  std::vector<uint64_t> keys;
  std::vector<uint8_t> early, commit;
  std::vector<RowSample> samples;
  std::vector<int32_t> k_commit;
  std::vector<int64_t> active;

  for (;;) {
    if (abort && abort->load()) throw EngineError("Aborted");
    tokens.clear();
    starts.assign(1, 0);
    rows.clear();
    row_seq.clear();
    row_pos.clear();
    active.clear();
    for (int64_t s = 0; s < n; s++)
      if (!seqs[s].done) active.push_back(s);
    if (active.empty()) break;
    row_begin.assign(1, 0);
    k_sched.clear();
    for (int64_t s : active) {
      SeqState& q = seqs[s];
      const int32_t base = starts.back();
      tokens.insert(tokens.end(), q.x.begin(), q.x.end());
      starts.push_back(static_cast<int32_t>(tokens.size()));
      for (int64_t j = q.block * BL; j < (q.block + 1) * BL; j++) {
        if (q.x[q.prompt_len + j] != mask) continue;
        rows.push_back(base + static_cast<int32_t>(q.prompt_len + j));
        row_seq.push_back(s);
        row_pos.push_back(j);
      }
      row_begin.push_back(static_cast<int32_t>(rows.size()));
      k_sched.push_back(o.remasking == Remasking::THRESHOLD ? 0 : static_cast<int32_t>(q.schedule[q.step_in_block]));
    }
    const int64_t n_rows = static_cast<int64_t>(rows.size());
    const int64_t cond_tokens = static_cast<int64_t>(tokens.size());
    if (cfg_on) {
      for (int64_t s : active) {
        const SeqState& q = seqs[s];
        tokens.insert(tokens.end(), q.prompt_len, mask);
        tokens.insert(tokens.end(), q.x.begin() + q.prompt_len, q.x.end());
        starts.push_back(static_cast<int32_t>(tokens.size()));
      }
      for (int64_t i = 0; i < n_rows; i++) rows.push_back(rows[i] + static_cast<int32_t>(cond_tokens));
    }
    const int64_t total_rows = static_cast<int64_t>(rows.size());
    float* d_logits = model.logits_scratch(total_rows * V);
    Batch batch{tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1};
    model.forward_device(d_logits, batch, rows.data(), total_rows);
    r.forward_tokens += batch.n_tokens();
    if (cfg_on) cfg_combine(d_logits, d_logits + n_rows * V, scale, n_rows * V, stream);

    keys.resize(n_rows);
    early.resize(n_rows);
    for (int64_t i = 0; i < n_rows; i++) {
      keys[i] = cpu::row_key(req.seeds[row_seq[i]], static_cast<uint64_t>(seqs[row_seq[i]].steps),
                             static_cast<uint64_t>(row_pos[i]));
      early[i] = row_pos[i] < o.min_new_tokens ? 1 : 0;
    }
    const uint64_t* dk = upload(d_keys, keys, stream, "decoder state");
    const uint8_t* de = upload(d_early, early, stream, "decoder state");
    const int32_t* drb = upload(d_row_begin, row_begin, stream, "decoder state");
    const int32_t* dks = upload(d_sched, k_sched, stream, "decoder state");
    RowSample* ds = d_samples.reserve_as<RowSample>(n_rows, "decoder state");
    uint8_t* dc = d_commit.reserve_as<uint8_t>(n_rows, "decoder state");
    int32_t* dkc = d_k.reserve_as<int32_t>(active.size(), "decoder state");
    // Columns past vocab_size (embedding padding) are not tokens and are never sampled.
    sample_rows(ds, d_logits, V, n_rows, cfg.vocab_size, ex, 1, static_cast<int>(excluded.size()), de, o.temperature,
                dk, stream);
    select_commits(dc, dkc, ds, dk, drb, static_cast<int64_t>(active.size()), kind, static_cast<uint64_t>(V) + 1,
                   o.remasking == Remasking::THRESHOLD, o.threshold, dks, stream);
    samples.resize(n_rows);
    commit.resize(n_rows);
    k_commit.resize(active.size());
    JG_CUDA_CHECK(cudaMemcpyAsync(samples.data(), ds, n_rows * sizeof(RowSample), cudaMemcpyDeviceToHost, stream));
    JG_CUDA_CHECK(cudaMemcpyAsync(commit.data(), dc, n_rows, cudaMemcpyDeviceToHost, stream));
    JG_CUDA_CHECK(cudaMemcpyAsync(k_commit.data(), dkc, active.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    JG_CUDA_CHECK(cudaStreamSynchronize(stream));

    for (size_t a = 0; a < active.size(); a++) {
      const int64_t s = active[a];
      SeqState& q = seqs[s];
      const int64_t count = row_begin[a + 1] - row_begin[a];
      const int64_t k = k_commit[a];
      for (int64_t row = row_begin[a]; row < row_begin[a + 1]; row++) {
        if (!commit[row]) continue;
        const int64_t j = row_pos[row];
        const RowSample& rs = samples[row];
        q.x[q.prompt_len + j] = rs.token;
        r.tokens[s * L + j] = rs.token;
        r.logprobs[s * L + j] = rs.logprob;
        r.entropies[s * L + j] = rs.entropy;
        r.commit_step[s * L + j] = static_cast<int32_t>(q.steps);
      }
      committed += k;
      r.transfers[s * r.max_steps + q.steps] = static_cast<int32_t>(k);
      q.steps++;
      q.nfe += cfg_on ? 2 : 1;
      q.step_in_block++;
      const bool block_full = count == k;
      const bool block_over = o.remasking == Remasking::THRESHOLD ? block_full : q.step_in_block == steps_per_block;
      if (block_over) {
        q.block++;
        q.step_in_block = 0;
        if (q.block == n_blocks) q.done = true;
      }
    }
    if (progress) progress({committed, n * L, r.tokens.data()});
  }
  for (int64_t s = 0; s < n; s++) r.nfe[s] = seqs[s].nfe;
  return r;
}

}  // namespace jg::cuda
