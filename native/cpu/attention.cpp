#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops.h"
#include "optimer.h"
#include "simd.h"
#include "threadpool.h"

namespace jg::cpu {

namespace {

// out (hd), scores scratch (L), q (hd), k and v (L, kv_stride).
// One query row against all L keys of its sequence: out = softmax(q.K^T * scale) V.
// Returns the log-sum-exp of the scaled scores.
JG_MULTIVERSION float attend_row(float* out, float* scores, const float* q, const float* k, const float* v,
                                 int64_t L, int64_t kv_stride, int64_t hd, float scale) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < L; j++) {
    float s = dot(q, k + j * kv_stride, hd) * scale;
    scores[j] = s;
    mx = std::max(mx, s);
  }
  float sum = 0;
  for (int64_t j = 0; j < L; j++) {
    float e = std::exp(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  float inv = 1.0f / sum;
  for (int64_t i = 0; i < hd; i++) out[i] = 0;
  for (int64_t j = 0; j < L; j++) axpy(out, scores[j] * inv, v + j * kv_stride, hd);
  return mx + std::log(sum);
}

// dq (hd) +=, dk (L, kv_stride) +=, dv (L, kv_stride) +=, p scratch (L), dout (hd), q (hd), k and v
// (L, kv_stride), out (hd). One query row's share of the backward, for s_j = q.k_j * scale, p = softmax(s):
// dp_j = dout.v_j, ds_j = p_j (dp_j - dout.out), dq += scale * sum_j ds_j k_j,
// dk_j += scale * ds_j q, dv_j += p_j dout. p is recomputed from the saved log-sum-exp.
JG_MULTIVERSION void attend_row_backward(float* dq, float* dk, float* dv, float* p, const float* dout,
                                         const float* q, const float* k, const float* v, const float* out,
                                         float lse, int64_t L, int64_t kv_stride, int64_t hd, float scale) {
  for (int64_t j = 0; j < L; j++) p[j] = std::exp(dot(q, k + j * kv_stride, hd) * scale - lse);
  const float D = dot(dout, out, hd);
  for (int64_t j = 0; j < L; j++) {
    float ds = p[j] * (dot(dout, v + j * kv_stride, hd) - D) * scale;
    axpy(dq, ds, k + j * kv_stride, hd);
    axpy(dk + j * kv_stride, ds, q, hd);
    axpy(dv + j * kv_stride, p[j], dout, hd);
  }
}

}  // namespace

// out (N, H*hd), lse (N, H), q (N, H*hd), k (N, KV*hd), v (N, KV*hd), seq_starts (n_seqs+1)
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* seq_starts, int64_t n_seqs, int64_t H, int64_t KV, int64_t hd) {
  const OpTimer timer(OpClass::ATTENTION);
  const int64_t group = H / KV;
  const int64_t q_stride = H * hd, kv_stride = KV * hd;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  // Work items are (row, head) pairs across the packed batch; each row knows its sequence.
  const int64_t N = seq_starts[n_seqs];
  std::vector<int32_t> seq_of(N);
  int64_t max_len = 0;
  for (int64_t s = 0; s < n_seqs; s++) {
    for (int64_t i = seq_starts[s]; i < seq_starts[s + 1]; i++) seq_of[i] = static_cast<int32_t>(s);
    max_len = std::max<int64_t>(max_len, seq_starts[s + 1] - seq_starts[s]);
  }
  parallel_for(N * H, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(max_len);
    for (int64_t w = begin; w < end; w++) {
      int64_t n = w / H, h = w % H;
      int64_t s = seq_of[n];
      int64_t start = seq_starts[s], L = seq_starts[s + 1] - start;
      int64_t hk = h / group;
      float l = attend_row(out + n * q_stride + h * hd, scores.data(), q + n * q_stride + h * hd,
                           k + start * kv_stride + hk * hd, v + start * kv_stride + hk * hd, L, kv_stride, hd, scale);
      if (lse) lse[n * H + h] = l;
    }
  });
}

// dq (N, H*hd) +=, dk (N, KV*hd) +=, dv (N, KV*hd) +=, dout (N, H*hd), q, k, v, out, lse (N, H) as in the forward
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const int32_t* seq_starts,
                        int64_t n_seqs, int64_t H, int64_t KV, int64_t hd) {
  const OpTimer timer(OpClass::ATTENTION);
  const int64_t group = H / KV;
  const int64_t q_stride = H * hd, kv_stride = KV * hd;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  int64_t max_len = 0;
  for (int64_t s = 0; s < n_seqs; s++) max_len = std::max<int64_t>(max_len, seq_starts[s + 1] - seq_starts[s]);
  // Work items are (sequence, kv head): each owns the dk/dv rows of its keys and the dq rows of
  // its query heads, and visits the group's heads and the query rows in a fixed order, so the
  // sums never depend on which thread runs what and no two threads write the same row.
  parallel_for(n_seqs * KV, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p(max_len);
    for (int64_t w = begin; w < end; w++) {
      int64_t s = w / KV, hk = w % KV;
      int64_t start = seq_starts[s], L = seq_starts[s + 1] - start;
      const float* ks = k + start * kv_stride + hk * hd;
      const float* vs = v + start * kv_stride + hk * hd;
      float* dks = dk + start * kv_stride + hk * hd;
      float* dvs = dv + start * kv_stride + hk * hd;
      for (int64_t h = hk * group; h < (hk + 1) * group; h++)
        for (int64_t n = start; n < start + L; n++) {
          int64_t o = n * q_stride + h * hd;
          attend_row_backward(dq + o, dks, dvs, p.data(), dout + o, q + o, ks, vs, out + o, lse[n * H + h], L,
                              kv_stride, hd, scale);
        }
    }
  });
}

// out (R, H*hd), q (R, H*hd): the queries of packed-batch rows `rows` (R) only, against all keys and
// values k, v (N, KV*hd) of each row's sequence; seq_starts (n_seqs+1). The same arithmetic per
// (row, head) as attention_forward, for when only a few rows' outputs are needed.
void attention_rows_forward(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* rows,
                            int64_t R, const int32_t* seq_starts, int64_t n_seqs, int64_t H, int64_t KV, int64_t hd) {
  const OpTimer timer(OpClass::ATTENTION);
  const int64_t group = H / KV;
  const int64_t q_stride = H * hd, kv_stride = KV * hd;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  int64_t max_len = 0;
  for (int64_t s = 0; s < n_seqs; s++) max_len = std::max<int64_t>(max_len, seq_starts[s + 1] - seq_starts[s]);
  parallel_for(R * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(max_len);
    for (int64_t w = begin; w < end; w++) {
      const int64_t r = w / H, h = w % H;
      // The row's sequence: the last start at or before it.
      const int64_t s = std::upper_bound(seq_starts, seq_starts + n_seqs + 1, rows[r]) - seq_starts - 1;
      const int64_t start = seq_starts[s], L = seq_starts[s + 1] - start, hk = h / group;
      const float l = attend_row(out + r * q_stride + h * hd, scores.data(), q + r * q_stride + h * hd,
                                 k + start * kv_stride + hk * hd, v + start * kv_stride + hk * hd, L, kv_stride, hd, scale);
      if (lse) lse[r * H + h] = l;
    }
  });
}

void attention_rows_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, const int32_t* rows, int64_t R,
                             const int32_t* seq_starts, int64_t n_seqs, int64_t H, int64_t KV, int64_t hd) {
  const OpTimer timer(OpClass::ATTENTION);
  const int64_t group = H / KV;
  const int64_t q_stride = H * hd, kv_stride = KV * hd;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  // The rows of each sequence, in row order (a bucket sort keeps repeats and their order).
  std::vector<int32_t> first(n_seqs + 1, 0), by_seq(R);
  std::vector<int32_t> seq_of(R);
  int64_t max_len = 0;
  for (int64_t r = 0; r < R; r++) {
    seq_of[r] = static_cast<int32_t>(std::upper_bound(seq_starts, seq_starts + n_seqs + 1, rows[r]) - seq_starts - 1);
    first[seq_of[r] + 1]++;
  }
  for (int64_t s = 0; s < n_seqs; s++) {
    first[s + 1] += first[s];
    max_len = std::max<int64_t>(max_len, seq_starts[s + 1] - seq_starts[s]);
  }
  std::vector<int32_t> fill(first.begin(), first.end() - 1);
  for (int64_t r = 0; r < R; r++) by_seq[fill[seq_of[r]]++] = static_cast<int32_t>(r);
  // As in attention_backward: a (sequence, kv head) owns its keys' dk/dv rows and its rows' dq,
  // and visits heads and rows in a fixed order.
  parallel_for(n_seqs * KV, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p(max_len);
    for (int64_t w = begin; w < end; w++) {
      const int64_t s = w / KV, hk = w % KV;
      if (first[s] == first[s + 1]) continue;
      const int64_t start = seq_starts[s], L = seq_starts[s + 1] - start;
      const float* ks = k + start * kv_stride + hk * hd;
      const float* vs = v + start * kv_stride + hk * hd;
      float* dks = dk + start * kv_stride + hk * hd;
      float* dvs = dv + start * kv_stride + hk * hd;
      for (int64_t h = hk * group; h < (hk + 1) * group; h++)
        for (int32_t i = first[s]; i < first[s + 1]; i++) {
          const int64_t r = by_seq[i], o = r * q_stride + h * hd;
          attend_row_backward(dq + o, dks, dvs, p.data(), dout + o, q + o, ks, vs, out + o, lse[r * H + h], L, kv_stride,
                              hd, scale);
        }
    }
  });
}

}  // namespace jg::cpu
