// Bidirectional attention over a packed batch, flash-style: each block takes 16 query rows of one
// head of one sequence and streams that sequence's keys and values through shared memory 32 at a
// time, keeping a running max, sum and output per row (online softmax), so no score is ever
// written to device memory. fp32 arithmetic on CUDA cores; inputs and output fp32 or bf16.
//
// Layout: 4 warps per block, 4 query rows per warp; in a key tile, lane j scores key j against the
// warp's 4 rows, and for the weighted sum of values each lane owns hd/32 output dimensions.
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "attention_tc.cuh"
#include "common.cuh"
#include "dispatch.cuh"
#include "ops.h"

namespace jg::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kQueryTile = kWarps * kRowsPerWarp;  // 16
constexpr int kKeyTile = 32;                       // one key per lane

// Shared memory: q (16, hd), k (32, hd + 1: the pad keeps lanes reading different keys in
// different banks), v (32, hd); fp32.
inline size_t attention_smem_bytes(int64_t hd) {
  return sizeof(float) * (kQueryTile * hd + kKeyTile * (hd + 1) + kKeyTile * hd);
}

// DPL: output dimensions per lane (hd <= 32 * DPL).
template <typename T, int DPL>
__global__ void __launch_bounds__(kWarps * 32)
    attention_kernel(T* out, int64_t out_stride, const T* q, int64_t q_stride, const T* k, const T* v,
                     int64_t kv_stride, const int32_t* seq_starts, int64_t group, int64_t hd, float scale) {
  JG_DYNAMIC_SHARED(float, smem);
  float* q_s = smem;                          // (16, hd)
  float* k_s = q_s + kQueryTile * hd;         // (32, hd + 1)
  float* v_s = k_s + kKeyTile * (hd + 1);     // (32, hd)

  const int64_t seq = blockIdx.z, h = blockIdx.y, hk = h / group;
  const int64_t start = seq_starts[seq], L = seq_starts[seq + 1] - start;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kQueryTile;
  if (q0 >= L) return;  // the whole block leaves together, before any barrier
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  for (int64_t idx = tid; idx < kQueryTile * hd; idx += blockDim.x) {
    const int64_t r = idx / hd, d = idx % hd;
    q_s[idx] = q0 + r < L ? load_f32(q, (start + q0 + r) * q_stride + h * hd + d) : 0.0f;
  }

  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][DPL];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; i++) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int t = 0; t < DPL; t++) o[i][t] = 0.0f;
  }

  for (int64_t k0 = 0; k0 < L; k0 += kKeyTile) {
    __syncthreads();  // the previous tile is consumed (and, the first time, q_s is written)
    for (int64_t idx = tid; idx < kKeyTile * hd; idx += blockDim.x) {
      const int64_t j = idx / hd, d = idx % hd;
      const bool ok = k0 + j < L;
      const int64_t src = (start + k0 + j) * kv_stride + hk * hd + d;
      k_s[j * (hd + 1) + d] = ok ? load_f32(k, src) : 0.0f;
      v_s[j * hd + d] = ok ? load_f32(v, src) : 0.0f;
    }
    __syncthreads();

    const bool valid = k0 + lane < L;  // lane 0's key is always valid: k0 < L
    const float* kj = k_s + lane * (hd + 1);
    float p[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; i++) {
      const float* qi = q_s + (warp * kRowsPerWarp + i) * hd;
      float dot = 0.0f;
      for (int64_t d = 0; d < hd; d++) dot += qi[d] * kj[d];
      const float s = valid ? dot * scale : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(s));  // finite: lane 0 is valid
      p[i] = valid ? expf(s - m_new) : 0.0f;
      const float corr = expf(m[i] - m_new);  // 0 on the first tile (m = -inf)
      l[i] = l[i] * corr + warp_sum(p[i]);
      m[i] = m_new;
#pragma unroll
      for (int t = 0; t < DPL; t++) o[i][t] *= corr;
    }
    const int n_keys = static_cast<int>(L - k0 < kKeyTile ? L - k0 : kKeyTile);
    for (int j = 0; j < n_keys; j++) {
      float pj[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; i++) pj[i] = __shfl_sync(0xffffffffu, p[i], j);
#pragma unroll
      for (int t = 0; t < DPL; t++) {
        const int64_t d = lane + 32 * t;
        if (d < hd) {
          const float vv = v_s[j * hd + d];
#pragma unroll
          for (int i = 0; i < kRowsPerWarp; i++) o[i][t] += pj[i] * vv;
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; i++) {
    const int64_t r = q0 + warp * kRowsPerWarp + i;
    if (r >= L) continue;
    const float inv = 1.0f / l[i];
#pragma unroll
    for (int t = 0; t < DPL; t++) {
      const int64_t d = lane + 32 * t;
      if (d < hd) store_f32(out, (start + r) * out_stride + h * hd + d, o[i][t] * inv);
    }
  }
}

template <typename T, int DPL>
void launch_attention(void* out, int64_t out_stride, const void* q, int64_t q_stride, const void* k, const void* v,
                      int64_t kv_stride, const int32_t* seq_starts, int64_t n_seqs, int64_t max_len, int64_t H,
                      int64_t KV, int64_t hd, cudaStream_t s) {
  const size_t smem = attention_smem_bytes(hd);
  auto kernel = attention_kernel<T, DPL>;
  if (smem > 48 * 1024)
    JG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>((max_len + kQueryTile - 1) / kQueryTile), static_cast<unsigned>(H),
                  static_cast<unsigned>(n_seqs));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  JG_LAUNCH(kernel, grid, kWarps * 32, smem, s, static_cast<T*>(out), out_stride, static_cast<const T*>(q),
            q_stride, static_cast<const T*>(k), static_cast<const T*>(v), kv_stride, seq_starts, H / KV, hd, scale);
  JG_CUDA_LAUNCHED("attention_kernel");
}

template <int HD>
void launch_attention_tc(void* out, int64_t out_stride, const void* q, int64_t q_stride, const void* k, const void* v,
                         int64_t kv_stride, const int32_t* seq_starts, int64_t n_seqs, int64_t max_len, int64_t H,
                         int64_t KV, cudaStream_t s) {
  const tc::Layout lay(HD);
  auto kernel = tc::attention_tc_kernel<HD>;
  JG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(lay.bytes)));
  const dim3 grid(static_cast<unsigned>((max_len + tc::kRows - 1) / tc::kRows), static_cast<unsigned>(H),
                  static_cast<unsigned>(n_seqs));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HD)));
  JG_LAUNCH(kernel, grid, tc::kWarps * 32, lay.bytes, s,
            static_cast<__nv_bfloat16*>(out), out_stride, static_cast<const __nv_bfloat16*>(q), q_stride,
            static_cast<const __nv_bfloat16*>(k), static_cast<const __nv_bfloat16*>(v), kv_stride, seq_starts, H / KV,
            scale);
  JG_CUDA_LAUNCHED("attention_tc_kernel");
}

bool simple_requested() {
  static const bool simple = [] {
    const char* e = std::getenv("JUSTGRPO_CUDA_ATTENTION");
    return e != nullptr && std::strcmp(e, "simple") == 0;
  }();
  return simple;
}

}  // namespace

void attention_forward(void* out, int64_t out_stride, const void* q, int64_t q_stride, const void* k, const void* v,
                       int64_t kv_stride, DType t, const int32_t* seq_starts, int64_t n_seqs, int64_t max_len,
                       int64_t H, int64_t KV, int64_t hd, cudaStream_t s, AttentionImpl impl) {
  if (n_seqs == 0 || max_len == 0) return;
  const bool tc_fits = t == DType::BF16 && (hd == 64 || hd == 128);
  JG_CHECK(impl != AttentionImpl::TENSOR_CORE || tc_fits,
           "The tensor-core attention kernel needs BF16 and a head dimension of 64 or 128");
  if (tc_fits && (impl == AttentionImpl::TENSOR_CORE || (impl == AttentionImpl::AUTO && !simple_requested()))) {
    JG_CHECK(max_len <= 65535LL * tc::kRows && H <= 65535 && n_seqs <= 65535, "Attention grid too large");
    if (hd == 64)
      launch_attention_tc<64>(out, out_stride, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, s);
    else
      launch_attention_tc<128>(out, out_stride, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, s);
    return;
  }
  JG_CHECK(hd > 0 && hd <= 256, "The CUDA attention kernel supports head dimensions up to 256, not ", hd);
  JG_CHECK(KV > 0 && H % KV == 0, "n_heads must be a multiple of n_kv_heads");
  JG_CHECK(max_len <= 65535LL * kQueryTile && H <= 65535 && n_seqs <= 65535, "Attention grid too large");
  JG_DISPATCH(t, T, {
    if (hd <= 32)
      launch_attention<T, 1>(out, out_stride, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, hd, s);
    else if (hd <= 64)
      launch_attention<T, 2>(out, out_stride, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, hd, s);
    else if (hd <= 128)
      launch_attention<T, 4>(out, out_stride, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, hd, s);
    else
      launch_attention<T, 8>(out, out_stride, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, hd, s);
  });
}

}  // namespace jg::cuda
