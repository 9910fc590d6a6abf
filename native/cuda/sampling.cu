#include <cfloat>

#include "common.cuh"
#include "rng.cuh"
#include "sampling.h"

namespace jg::cuda {

namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ bool is_excluded(int64_t v, const int32_t* ex, int n) {
  for (int i = 0; i < n; i++)
    if (ex[i] == v) return true;
  return false;
}

// A candidate (value, index): better = larger value, ties to the lower index, as the CPU's
// ascending scan with a strict `>` picks. Empty: index -1.
struct Cand {
  double value;
  int64_t index;
};
__device__ __forceinline__ bool better(const Cand& a, const Cand& b) {
  if (a.index < 0) return false;
  if (b.index < 0) return true;
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

// The best two of the block's candidates (each thread offers its own best two).
__device__ void block_top2(Cand& t1, Cand& t2, Cand* s1, Cand* s2) {
  __syncthreads();
  s1[threadIdx.x] = t1;
  s2[threadIdx.x] = t2;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      Cand a1 = s1[threadIdx.x], a2 = s2[threadIdx.x];
      Cand b1 = s1[threadIdx.x + stride], b2 = s2[threadIdx.x + stride];
      Cand best, second;
      if (better(b1, a1)) {
        best = b1;
        second = better(a1, b2) ? a1 : b2;
      } else {
        best = a1;
        second = better(b1, a2) ? b1 : a2;
      }
      s1[threadIdx.x] = best;
      s2[threadIdx.x] = second;
    }
    __syncthreads();
  }
  t1 = s1[0];
  t2 = s2[0];
}

__device__ void block_best(Cand& c, Cand* s1) {
  __syncthreads();
  s1[threadIdx.x] = c;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride && better(s1[threadIdx.x + stride], s1[threadIdx.x])) s1[threadIdx.x] = s1[threadIdx.x + stride];
    __syncthreads();
  }
  c = s1[0];
}

// Log-partition and entropy of softmax(l * inv_t) over the allowed ids, in fp64 (cpu::moments).
__device__ void moments(double* log_z, double* entropy, const float* l, int64_t V, const int32_t* ex, int n_ex,
                        double inv_t, double max_l, double* scratch) {
  double z = 0, zl = 0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    if (is_excluded(v, ex, n_ex)) continue;
    const double x = (static_cast<double>(l[v]) - max_l) * inv_t;
    const double e = exp(x);
    z += e;
    zl += e * x;
  }
  z = block_sum(z, scratch);
  zl = block_sum(zl, scratch);
  *log_z = log(z) + max_l * inv_t;
  *entropy = log(z) - zl / z;
}

// One block per row.
__global__ void __launch_bounds__(kThreads)
    sample_kernel(RowSample* out, const float* logits, int64_t ld, int64_t V, const int32_t* excluded, int n_all,
                  int n_early, const uint8_t* early, double temperature, const uint64_t* keys) {
  __shared__ Cand s1[kThreads], s2[kThreads];
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const float* l = logits + r * ld;
  const int n_ex = early[r] ? n_early : n_all;

  // Top two by logit.
  Cand t1{0, -1}, t2{0, -1};
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    if (is_excluded(v, excluded, n_ex)) continue;
    Cand c{static_cast<double>(l[v]), v};
    if (better(c, t1)) {
      t2 = t1;
      t1 = c;
    } else if (better(c, t2)) {
      t2 = c;
    }
  }
  block_top2(t1, t2, s1, s2);
  const double max_l = t1.value;
  double log_z1, entropy1;
  moments(&log_z1, &entropy1, l, V, excluded, n_ex, 1.0, max_l, scratch);

  int64_t token = t1.index;
  double entropy = entropy1;
  if (temperature > 0) {
    // argmax_v l_v / T + g_v with g_v = -log(-log u_v). The product and sum are rounded one at a
    // time (no fused multiply-add) so each score equals the CPU's.
    const double inv_t = 1.0 / temperature;
    Cand best{0, -1};
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      if (is_excluded(v, excluded, n_ex)) continue;
      const double g = -log(-log(uniform_open(keys[r], static_cast<uint64_t>(v))));
      const Cand c{__dadd_rn(__dmul_rn(static_cast<double>(l[v]), inv_t), g), v};
      if (better(c, best)) best = c;
    }
    block_best(best, s1);
    token = best.index;
    if (temperature != 1.0) {
      double log_zt;
      moments(&log_zt, &entropy, l, V, excluded, n_ex, inv_t, max_l, scratch);
    }
  }
  if (threadIdx.x == 0) {
    const double lp = static_cast<double>(l[token]) - log_z1;
    const double p1 = exp(static_cast<double>(l[t1.index]) - log_z1);
    const double p2 = t2.index < 0 ? 0.0 : exp(static_cast<double>(l[t2.index]) - log_z1);
    RowSample o;
    o.token = static_cast<int32_t>(token);
    o.logprob = static_cast<float>(lp);
    o.entropy = static_cast<float>(entropy);
    o.prob = exp(lp);
    o.margin = p1 - p2;
    o.certainty = exp(-entropy1);
    out[r] = o;
  }
}

__device__ __forceinline__ double confidence(const RowSample& s, const uint64_t* keys, int64_t r, ConfidenceKind kind,
                                             uint64_t random_index) {
  switch (kind) {
    case ConfidenceKind::PROBABILITY: return s.prob;
    case ConfidenceKind::MARGIN: return s.margin;
    case ConfidenceKind::CERTAINTY: return s.certainty;
    default: return uniform_open(keys[r], random_index);
  }
}

// One block per sequence. A row's place in the stable descending order is the number of rows
// that come before it: higher confidence, or equal confidence at a lower position.
__global__ void select_kernel(uint8_t* commit, int32_t* k_commit, const RowSample* samples, const uint64_t* keys,
                              const int32_t* row_begin, ConfidenceKind kind, uint64_t random_index, bool use_threshold,
                              double threshold, const int32_t* k_sched) {
  __shared__ int count_above;
  const int64_t s = blockIdx.x;
  const int64_t b = row_begin[s], e = row_begin[s + 1], n = e - b;
  if (threadIdx.x == 0) count_above = 0;
  __syncthreads();
  int64_t k;
  if (use_threshold) {
    int mine = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      mine += confidence(samples[b + i], keys, b + i, kind, random_index) >= threshold;
    atomicAdd(&count_above, mine);
    __syncthreads();
    k = count_above > 1 ? count_above : 1;
    if (k > n) k = n;
  } else {
    k = k_sched[s] < n ? k_sched[s] : n;
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double ci = confidence(samples[b + i], keys, b + i, kind, random_index);
    int64_t rank = 0;
    for (int64_t j = 0; j < n; j++) {
      const double cj = confidence(samples[b + j], keys, b + j, kind, random_index);
      rank += cj > ci || (cj == ci && j < i);
    }
    commit[b + i] = rank < k ? 1 : 0;
  }
  if (threadIdx.x == 0) k_commit[s] = static_cast<int32_t>(k);
}

__global__ void cfg_kernel(float* cond, const float* uncond, float scale, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    cond[i] = uncond[i] + scale * (cond[i] - uncond[i]);
}

// One block per row: log-sum-exp over the allowed ids (fp64 sums, as the CPU's log-softmax is
// compared at fp32 tolerance), then the target's log-probability.
__global__ void __launch_bounds__(kThreads)
    logprob_kernel(float* logprobs, const float* logits, const int32_t* targets, int64_t V, const int32_t* ex, int n_ex) {
  __shared__ float smax[32];
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const float* l = logits + r * V;
  float mx = -FLT_MAX;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
    if (!is_excluded(v, ex, n_ex)) mx = fmaxf(mx, l[v]);
  mx = warp_max(mx);
  if ((threadIdx.x & 31) == 0) smax[threadIdx.x >> 5] = mx;
  __syncthreads();
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); w++) mx = fmaxf(mx, smax[w]);
  double z = 0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
    if (!is_excluded(v, ex, n_ex)) z += exp(static_cast<double>(l[v]) - mx);
  z = block_sum(z, scratch);
  if (threadIdx.x == 0) logprobs[r] = static_cast<float>(static_cast<double>(l[targets[r]]) - mx - log(z));
}

}  // namespace

void sample_rows(RowSample* out, const float* logits, int64_t ld, int64_t R, int64_t V, const int32_t* excluded,
                 int n_all, int n_early, const uint8_t* early, double temperature, const uint64_t* keys,
                 cudaStream_t s) {
  if (R == 0) return;
  JG_LAUNCH(sample_kernel, static_cast<unsigned>(R), kThreads, 0, s, out, logits, ld, V, excluded, n_all, n_early,
            early, temperature, keys);
  JG_CUDA_LAUNCHED("sample_kernel");
}

void select_commits(uint8_t* commit, int32_t* k_commit, const RowSample* samples, const uint64_t* keys,
                    const int32_t* row_begin, int64_t n_seqs, ConfidenceKind kind, uint64_t random_index,
                    bool use_threshold, double threshold, const int32_t* k_sched, cudaStream_t s) {
  if (n_seqs == 0) return;
  JG_LAUNCH(select_kernel, static_cast<unsigned>(n_seqs), 128, 0, s, commit, k_commit, samples, keys, row_begin,
            kind, random_index, use_threshold, threshold, k_sched);
  JG_CUDA_LAUNCHED("select_kernel");
}

void cfg_combine(float* cond, const float* uncond, float scale, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  JG_LAUNCH(cfg_kernel, grid_for(n, 256), 256, 0, s, cond, uncond, scale, n);
  JG_CUDA_LAUNCHED("cfg_kernel");
}

void logprob_rows(float* logprobs, const float* logits, const int32_t* targets, int64_t R, int64_t V,
                  const int32_t* excluded, int n_excluded, cudaStream_t s) {
  if (R == 0) return;
  JG_LAUNCH(logprob_kernel, static_cast<unsigned>(R), kThreads, 0, s, logprobs, logits, targets, V, excluded,
            n_excluded);
  JG_CUDA_LAUNCHED("logprob_kernel");
}

}  // namespace jg::cuda
