// The CUDA backend's share of a decoding step (the loop itself is native/common/decode.cpp): the
// forward pass, guidance, sampling, the confidence measures and the choice of rows to commit on
// the device. Only the sampled rows' results (a few bytes each) come back to the host; logits never
// leave the device. Same random streams as the CPU backend, so greedy and seeded decoding agree.
#include <algorithm>
#include <vector>

#include "../common/check.h"
#include "../common/decode.h"
#include "model.h"
#include "sampling.h"

namespace jg::cuda {

namespace {

template <typename T>
T* upload(DeviceBuffer& buf, const T* v, int64_t n, cudaStream_t s, const char* what) {
  T* d = buf.reserve_as<T>(std::max<int64_t>(n, 1), what);
  if (n > 0) JG_CUDA_CHECK(cudaMemcpyAsync(d, v, n * sizeof(T), cudaMemcpyHostToDevice, s));
  return d;
}

}  // namespace

void Model::decode_step(const DecodeStep& st, DecodeStepResult& out) {
  DeviceScope scope(device_);
  const int64_t R = st.n_rows, S = st.n_seqs, V = cfg_.embedding_size;
  const int64_t all_rows = st.guided ? 2 * R : R;
  float* d_logits = logits_scratch(all_rows * V);
  // A trainer's rollout hook (cuda::Training::keeping_forward) takes the device logits.
  if (st.forward) (*st.forward)(d_logits, st.batch, st.rows, all_rows, st.step);
  else forward_device(d_logits, st.batch, st.rows, all_rows);
  if (st.guided) cfg_combine(d_logits, d_logits + R * V, st.guidance_scale, R * V, stream_);

  const int32_t* ex = upload(d_excluded_, st.excluded, st.n_early, stream_, "decoder state");
  const uint64_t* dk = upload(d_keys_, st.keys, R, stream_, "decoder state");
  const uint8_t* de = upload(d_early_, st.early, R, stream_, "decoder state");
  const int32_t* drb = upload(d_row_begin_, st.row_begin, S + 1, stream_, "decoder state");
  const int32_t* dks = upload(d_sched_, st.k_sched, S, stream_, "decoder state");
  RowSample* ds = d_samples_.reserve_as<RowSample>(std::max<int64_t>(R, 1), "decoder state");
  uint8_t* dc = d_commit_.reserve_as<uint8_t>(std::max<int64_t>(R, 1), "decoder state");
  int32_t* dkc = d_k_.reserve_as<int32_t>(std::max<int64_t>(S, 1), "decoder state");
  // Columns past vocab_size (embedding padding) are not tokens and are never sampled.
  sample_rows(ds, d_logits, V, R, cfg_.vocab_size, ex, st.n_all, st.n_early, de, st.temperature, dk, stream_);
  select_commits(dc, dkc, ds, dk, drb, S, st.confidence, st.random_index, st.use_threshold, st.threshold, dks, stream_);
  out.samples.resize(R);
  out.commit.resize(R);
  out.k.resize(S);
  JG_CUDA_CHECK(cudaMemcpyAsync(out.samples.data(), ds, R * sizeof(RowSample), cudaMemcpyDeviceToHost, stream_));
  JG_CUDA_CHECK(cudaMemcpyAsync(out.commit.data(), dc, R, cudaMemcpyDeviceToHost, stream_));
  JG_CUDA_CHECK(cudaMemcpyAsync(out.k.data(), dkc, S * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  // The host vectors are read right after, and the uploads' sources are the loop's vectors.
  JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace jg::cuda
