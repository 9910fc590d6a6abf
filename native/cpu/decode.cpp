// The CPU's share of a decoding step (the loop itself is native/common/decode.cpp): the forward
// pass to host logits, guidance, every row sampled in parallel, and the host commit rule.
#include <cstring>

#include "../common/decode.h"
#include "model.h"
#include "sampling.h"
#include "threadpool.h"

namespace jg::cpu {

void Model::decode_step(const DecodeStep& st, DecodeStepResult& out) {
  const int64_t R = st.n_rows, V = cfg_.embedding_size;
  const int64_t all_rows = st.guided ? 2 * R : R;
  step_logits_.resize(all_rows * V);
  float* logits = step_logits_.data();
  if (st.forward) (*st.forward)(logits, st.batch, st.rows, all_rows, st.step);
  else forward(logits, st.batch, st.rows, all_rows);
  if (st.guided) {
    const float* u = logits + R * V;
    const float scale = st.guidance_scale;
    for (int64_t i = 0; i < R * V; i++) logits[i] = u[i] + scale * (logits[i] - u[i]);
  }
  // Columns past vocab_size (embedding padding) are not tokens and are never sampled.
  out.samples.resize(R);
  parallel_for(R, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++)
      sample_row(&out.samples[i], logits + i * V, cfg_.vocab_size, st.excluded, st.early[i] ? st.n_early : st.n_all,
                 st.temperature, st.keys[i]);
  });
  out.commit.resize(R);
  out.k.resize(st.n_seqs);
  select_commits(out.commit.data(), out.k.data(), out.samples.data(), st.keys, st.row_begin, st.n_seqs, st.confidence,
                 st.random_index, st.use_threshold, st.threshold, st.k_sched);
}

}  // namespace jg::cpu
