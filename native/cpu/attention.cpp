#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops.h"
#include "op_timer.h"
#include "simd.h"
#include "threadpool.h"

namespace jg::cpu {

namespace {

// The kernels below work on blocks of keys, eight floats at a time (f32x8, simd.h), inlined into
// each clone of the multiversioned kernels: several keys per pass over q, independent accumulators,
// no call per key, and a vectorised exp.
#define JG_INLINE inline __attribute__((always_inline))

// s[c] = a . b_c for C rows b_c = b + c * stride (each n long): sixteen partial sums per row in two
// vectors, added in a fixed order at the end.
template <int C>
JG_INLINE void dots(float* s, const float* a, const float* b, int64_t stride, int64_t n) {
  f32x8 acc0[C], acc1[C];
  for (int c = 0; c < C; c++) acc0[c] = acc1[c] = splat8(0.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const f32x8 a0 = load8(a + i), a1 = load8(a + i + 8);
    for (int c = 0; c < C; c++) {
      acc0[c] += a0 * load8(b + c * stride + i);
      acc1[c] += a1 * load8(b + c * stride + i + 8);
    }
  }
  if (i + 8 <= n) {
    const f32x8 a0 = load8(a + i);
    for (int c = 0; c < C; c++) acc0[c] += a0 * load8(b + c * stride + i);
    i += 8;
  }
  float r[C];
  if constexpr (C == 4) {
    const f32x4 h = hsum8x4(acc0[0] + acc1[0], acc0[1] + acc1[1], acc0[2] + acc1[2], acc0[3] + acc1[3]);
    for (int c = 0; c < 4; c++) r[c] = h[c];
  } else {
    for (int c = 0; c < C; c++) r[c] = hsum8(acc0[c] + acc1[c]);
  }
  if (i < n)
    for (int c = 0; c < C; c++)
      for (int64_t j = i; j < n; j++) r[c] += a[j] * b[c * stride + j];
  for (int c = 0; c < C; c++) s[c] = r[c];
}

// scores[j] = scale * q . k_j for the L keys k_j = k + j * stride; returns their maximum.
JG_INLINE float score_keys(float* scores, const float* q, const float* k, int64_t L, int64_t stride, int64_t hd,
                           float scale) {
  float mx = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
  for (; j + 4 <= L; j += 4) {
    dots<4>(scores + j, q, k + j * stride, stride, hd);
    for (int c = 0; c < 4; c++) {
      scores[j + c] *= scale;
      mx = std::max(mx, scores[j + c]);
    }
  }
  for (; j < L; j++) {
    dots<1>(scores + j, q, k + j * stride, stride, hd);
    scores[j] *= scale;
    mx = std::max(mx, scores[j]);
  }
  return mx;
}

// y (n) += sum over c in order of w[c] x_c for C rows x_c = x + c * stride: each eight outputs held
// in a register across the C keys. Every row is read contiguously (rows may be far apart).
template <int C>
JG_INLINE void axpy_keys(float* y, const float* w, const float* x, int64_t stride, int64_t n) {
  f32x8 wc[C];
  for (int c = 0; c < C; c++) wc[c] = splat8(w[c]);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    f32x8 acc = load8(y + i);
    for (int c = 0; c < C; c++) acc += wc[c] * load8(x + c * stride + i);
    store8(y + i, acc);
  }
  for (; i < n; i++) {
    float acc = y[i];
    for (int c = 0; c < C; c++) acc += w[c] * x[c * stride + i];
    y[i] = acc;
  }
}

// For C keys (rows k_c, dk_c, dv_c at c * stride), over the n columns: dq += sum over c in order of
// ds[c] k_c, dk_c += ds[c] q, dv_c += p[c] dout. Each eight columns of dq, q and dout are loaded
// once for the C keys.
template <int C>
JG_INLINE void backward_keys(float* dq, float* dk, float* dv, const float* ds, const float* p, const float* q,
                             const float* dout, const float* k, int64_t stride, int64_t n) {
  f32x8 a[C], b[C];
  for (int c = 0; c < C; c++) a[c] = splat8(ds[c]), b[c] = splat8(p[c]);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 qv = load8(q + i), dov = load8(dout + i);
    f32x8 acc = load8(dq + i);
    for (int c = 0; c < C; c++) {
      acc += a[c] * load8(k + c * stride + i);
      float* dkc = dk + c * stride + i;
      float* dvc = dv + c * stride + i;
      store8(dkc, load8(dkc) + a[c] * qv);
      store8(dvc, load8(dvc) + b[c] * dov);
    }
    store8(dq + i, acc);
  }
  for (; i < n; i++) {
    float acc = dq[i];
    for (int c = 0; c < C; c++) {
      acc += ds[c] * k[c * stride + i];
      dk[c * stride + i] += ds[c] * q[i];
      dv[c * stride + i] += p[c] * dout[i];
    }
    dq[i] = acc;
  }
}

// One query row's backward quantities for a chunk of n keys (k_j, v_j at j * stride): p[j] =
// exp(scale q.k_j - lse), ds[j] = p[j] (dout.v_j - D) scale.
JG_INLINE void chunk_probs(float* p, float* ds, const float* q, const float* dout, const float* k, const float* v,
                           int64_t n, int64_t stride, int64_t hd, float scale, float lse, float D) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    dots<4>(p + j, q, k + j * stride, stride, hd);
    dots<4>(ds + j, dout, v + j * stride, stride, hd);
  }
  for (; j < n; j++) {
    dots<1>(p + j, q, k + j * stride, stride, hd);
    dots<1>(ds + j, dout, v + j * stride, stride, hd);
  }
  for (j = 0; j + 8 <= n; j += 8) {
    const f32x8 e = exp8(load8(p + j) * scale - lse);
    store8(p + j, e);
    store8(ds + j, e * (load8(ds + j) - D) * scale);
  }
  for (; j < n; j++) {
    p[j] = exp_f32(p[j] * scale - lse);
    ds[j] = p[j] * (ds[j] - D) * scale;
  }
}

// backward_keys for four query rows at once (dq, q, dout rows at row_stride; ds and p of row r at
// r * pitch): for each key the rows go in order, so every sum is the one four backward_keys calls
// make, while each key's k, dk and dv are read and written once for the four rows.
template <int C>
JG_INLINE void backward_rows4_keys(float* dq, float* dk, float* dv, const float* ds, const float* p, int64_t pitch,
                                   const float* q, const float* dout, int64_t row_stride, const float* k,
                                   int64_t stride, int64_t n) {
  constexpr int R = 4;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    f32x8 qv[R], dov[R], acc[R];
    for (int r = 0; r < R; r++)
      qv[r] = load8(q + r * row_stride + i), dov[r] = load8(dout + r * row_stride + i),
      acc[r] = load8(dq + r * row_stride + i);
    for (int c = 0; c < C; c++) {
      const f32x8 kv = load8(k + c * stride + i);
      f32x8 dkv = load8(dk + c * stride + i), dvv = load8(dv + c * stride + i);
      for (int r = 0; r < R; r++) {
        const f32x8 a = splat8(ds[r * pitch + c]);
        acc[r] += a * kv;
        dkv += a * qv[r];
        dvv += splat8(p[r * pitch + c]) * dov[r];
      }
      store8(dk + c * stride + i, dkv);
      store8(dv + c * stride + i, dvv);
    }
    for (int r = 0; r < R; r++) store8(dq + r * row_stride + i, acc[r]);
  }
  for (; i < n; i++)
    for (int r = 0; r < R; r++) {
      float acc = dq[r * row_stride + i];
      for (int c = 0; c < C; c++) {
        acc += ds[r * pitch + c] * k[c * stride + i];
        dk[c * stride + i] += ds[r * pitch + c] * q[r * row_stride + i];
        dv[c * stride + i] += p[r * pitch + c] * dout[r * row_stride + i];
      }
      dq[r * row_stride + i] = acc;
    }
}

// out (hd), scores scratch (L), q (hd), k and v (L, kv_stride).
// One query row against all L keys of its sequence: out = softmax(q.K^T * scale) V.
// Returns the log-sum-exp of the scaled scores; scores ends holding exp(s_j - max s).
JG_MULTIVERSION float attend_row(float* out, float* scores, const float* q, const float* k, const float* v,
                                 int64_t L, int64_t kv_stride, int64_t hd, float scale) {
  const float mx = score_keys(scores, q, k, L, kv_stride, hd, scale);
  f32x8 acc = splat8(0.0f);
  int64_t j = 0;
  for (; j + 8 <= L; j += 8) {
    const f32x8 e = exp8(load8(scores + j) - mx);
    store8(scores + j, e);
    acc += e;
  }
  float sum = hsum8(acc);
  for (; j < L; j++) {
    const float e = exp_f32(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  std::fill(out, out + hd, 0.0f);
  for (j = 0; j + 4 <= L; j += 4) {
    const float w[4] = {scores[j] * inv, scores[j + 1] * inv, scores[j + 2] * inv, scores[j + 3] * inv};
    axpy_keys<4>(out, w, v + j * kv_stride, kv_stride, hd);
  }
  for (; j < L; j++) {
    const float w = scores[j] * inv;
    axpy_keys<1>(out, &w, v + j * kv_stride, kv_stride, hd);
  }
  return mx + std::log(sum);
}

// dq (hd) +=, dk (L, kv_stride) +=, dv (L, kv_stride) +=, p scratch (L), dout (hd), q (hd), k and v
// (L, kv_stride), out (hd). One query row's share of the backward, for s_j = q.k_j * scale, p = softmax(s):
// dp_j = dout.v_j, ds_j = p_j (dp_j - dout.out), dq += scale * sum_j ds_j k_j,
// dk_j += scale * ds_j q, dv_j += p_j dout. p is recomputed from the saved log-sum-exp (and ends
// holding it). Keys go in chunks of 64: scores, exps and ds for the chunk, then its updates.
JG_MULTIVERSION void attend_row_backward(float* dq, float* dk, float* dv, float* p, const float* dout,
                                         const float* q, const float* k, const float* v, const float* out,
                                         float lse, int64_t L, int64_t kv_stride, int64_t hd, float scale) {
  float D;
  dots<1>(&D, dout, out, 0, hd);
  constexpr int64_t C = 64;
  float ds[C];
  for (int64_t j0 = 0; j0 < L; j0 += C) {
    const int64_t n = std::min(C, L - j0);
    float* pc = p + j0;
    const float* kc = k + j0 * kv_stride;
    const float* vc = v + j0 * kv_stride;
    chunk_probs(pc, ds, q, dout, kc, vc, n, kv_stride, hd, scale, lse, D);
    int64_t j = 0;
    float* dkc = dk + j0 * kv_stride;
    float* dvc = dv + j0 * kv_stride;
    for (; j + 4 <= n; j += 4)
      backward_keys<4>(dq, dkc + j * kv_stride, dvc + j * kv_stride, ds + j, pc + j, q, dout, kc + j * kv_stride,
                       kv_stride, hd);
    for (; j < n; j++)
      backward_keys<1>(dq, dkc + j * kv_stride, dvc + j * kv_stride, ds + j, pc + j, q, dout, kc + j * kv_stride,
                       kv_stride, hd);
  }
}

// Four consecutive query rows of one head (dq, dout, q, out rows at row_stride, their log-sum-exps at
// lse[r * lse_stride]) against the same L keys: the same results, bit for bit, as attend_row_backward
// on each row in turn (the same sums in the same order), with the keys' k, dk and dv visited once.
JG_MULTIVERSION void attend_rows4_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                                           const float* k, const float* v, const float* out, const float* lse,
                                           int64_t row_stride, int64_t lse_stride, int64_t L, int64_t kv_stride,
                                           int64_t hd, float scale) {
  constexpr int R = 4;
  constexpr int64_t C = 64;
  float D[R];
  for (int r = 0; r < R; r++) dots<1>(&D[r], dout + r * row_stride, out + r * row_stride, 0, hd);
  float p[R * C], ds[R * C];
  for (int64_t j0 = 0; j0 < L; j0 += C) {
    const int64_t n = std::min(C, L - j0);
    const float* kc = k + j0 * kv_stride;
    const float* vc = v + j0 * kv_stride;
    for (int r = 0; r < R; r++)
      chunk_probs(p + r * C, ds + r * C, q + r * row_stride, dout + r * row_stride, kc, vc, n, kv_stride, hd, scale,
                  lse[r * lse_stride], D[r]);
    float* dkc = dk + j0 * kv_stride;
    float* dvc = dv + j0 * kv_stride;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4)
      backward_rows4_keys<4>(dq, dkc + j * kv_stride, dvc + j * kv_stride, ds + j, p + j, C, q, dout, row_stride,
                             kc + j * kv_stride, kv_stride, hd);
    for (; j < n; j++)
      backward_rows4_keys<1>(dq, dkc + j * kv_stride, dvc + j * kv_stride, ds + j, p + j, C, q, dout, row_stride,
                             kc + j * kv_stride, kv_stride, hd);
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
      for (int64_t h = hk * group; h < (hk + 1) * group; h++) {
        // Rows four at a time (the same bits as one at a time), the rest one by one.
        int64_t n = start;
        for (; n + 4 <= start + L; n += 4) {
          int64_t o = n * q_stride + h * hd;
          attend_rows4_backward(dq + o, dks, dvs, dout + o, q + o, ks, vs, out + o, lse + n * H + h, q_stride, H, L,
                                kv_stride, hd, scale);
        }
        for (; n < start + L; n++) {
          int64_t o = n * q_stride + h * hd;
          attend_row_backward(dq + o, dks, dvs, p.data(), dout + o, q + o, ks, vs, out + o, lse[n * H + h], L,
                              kv_stride, hd, scale);
        }
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
