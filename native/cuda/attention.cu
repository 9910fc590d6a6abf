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
    attention_kernel(T* out, int64_t out_stride, float* lse, const T* q, int64_t q_stride, const T* k, const T* v,
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
    // lse (N, H) for the backward: the log-sum-exp of the row's scaled scores.
    if (lse != nullptr && lane == 0) lse[(start + r) * gridDim.y + h] = m[i] + logf(l[i]);
#pragma unroll
    for (int t = 0; t < DPL; t++) {
      const int64_t d = lane + 32 * t;
      if (d < hd) store_f32(out, (start + r) * out_stride + h * hd + d, o[i][t] * inv);
    }
  }
}

template <typename T, int DPL>
void launch_attention(void* out, int64_t out_stride, float* lse, const void* q, int64_t q_stride, const void* k, const void* v,
                      int64_t kv_stride, const int32_t* seq_starts, int64_t n_seqs, int64_t max_len, int64_t H,
                      int64_t KV, int64_t hd, cudaStream_t s) {
  const size_t smem = attention_smem_bytes(hd);
  auto kernel = attention_kernel<T, DPL>;
  if (smem > 48 * 1024)
    JG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>((max_len + kQueryTile - 1) / kQueryTile), static_cast<unsigned>(H),
                  static_cast<unsigned>(n_seqs));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  JG_LAUNCH(kernel, grid, kWarps * 32, smem, s, static_cast<T*>(out), out_stride, lse, static_cast<const T*>(q),
            q_stride, static_cast<const T*>(k), static_cast<const T*>(v), kv_stride, seq_starts, H / KV, hd, scale);
  JG_CUDA_LAUNCHED("attention_kernel");
}

// ---- Backward, flash-style: the probabilities are recomputed from the forward's lse, never stored.
// For a query row i and key j: s = q_i.k_j * scale, p = exp(s - lse_i), dp = dout_i.v_j,
// D_i = dout_i.out_i, ds = p (dp - D_i) scale; then dq_i += sum_j ds k_j, dk_j += sum_i ds q_i,
// dv_j += sum_i p dout_i. Two kernels, so every gradient row has one owner and no atomics are
// needed: one block per (query tile, head, sequence) for dq, and one per (key tile, kv head,
// sequence) for dk and dv, which visits the group's query heads and then the query rows in order.
// D is recomputed where it is needed (hd products per row and tile: 1/32 of the score work).
//
// Shared memory rows are hd + 1 floats, so lanes reading different rows read different banks.
constexpr int kKeysPerWarp = kKeyTile / kWarps;  // 8: the dk/dv kernel's keys per warp

// q, dout (16 rows each), k, v (32 rows each), lse and D (16 each), and p, ds (per warp 16 x 8 each).
inline size_t attention_backward_smem_bytes(int64_t hd) {
  return sizeof(float) * (2 * kQueryTile * (hd + 1) + 2 * kKeyTile * (hd + 1) + 2 * kQueryTile +
                          2 * kWarps * kQueryTile * kKeysPerWarp);
}

// Loads rows [r0, r0 + rows) of a (sequence-local) tensor into smem rows of hd + 1; zeros past L.
template <typename T>
__device__ __forceinline__ void load_tile(float* dst, const T* src, int64_t stride, int64_t start, int64_t r0,
                                          int rows, int64_t L, int64_t col, int64_t hd) {
  for (int64_t idx = threadIdx.x; idx < rows * hd; idx += blockDim.x) {
    const int64_t r = idx / hd, d = idx % hd;
    dst[r * (hd + 1) + d] = r0 + r < L ? load_f32(src, (start + r0 + r) * stride + col + d) : 0.0f;
  }
}

// dq: 4 warps of 4 query rows; in a key tile lane j takes key j for the warp's rows (as the
// forward), and for dq each lane owns hd/32 dimensions.
template <typename T, int DPL>
__global__ void __launch_bounds__(kWarps * 32)
    attention_backward_dq_kernel(float* dq, int64_t dq_stride, const float* dout, int64_t dout_stride, const T* q,
                                 int64_t q_stride, const T* k, const T* v, int64_t kv_stride, const T* out,
                                 int64_t out_stride, const float* lse, const int32_t* seq_starts, int64_t H,
                                 int64_t group, int64_t hd, float scale) {
  JG_DYNAMIC_SHARED(float, smem);
  const int64_t P = hd + 1;
  float* q_s = smem;                    // (16, P)
  float* do_s = q_s + kQueryTile * P;   // (16, P)
  float* k_s = do_s + kQueryTile * P;   // (32, P)
  float* v_s = k_s + kKeyTile * P;      // (32, P)

  const int64_t seq = blockIdx.z, h = blockIdx.y, hk = h / group;
  const int64_t start = seq_starts[seq], L = seq_starts[seq + 1] - start;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kQueryTile;
  if (q0 >= L) return;  // the whole block, before any barrier
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  load_tile(q_s, q, q_stride, start, q0, kQueryTile, L, h * hd, hd);
  load_tile(do_s, dout, dout_stride, start, q0, kQueryTile, L, h * hd, hd);
  __syncthreads();

  float D[kRowsPerWarp], row_lse[kRowsPerWarp], acc[kRowsPerWarp][DPL];
  bool row_ok[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; i++) {
    const int64_t r = warp * kRowsPerWarp + i, row = start + q0 + r;
    row_ok[i] = q0 + r < L;
    float part = 0.0f;
    if (row_ok[i])
      for (int64_t d = lane; d < hd; d += 32) part += do_s[r * P + d] * load_f32(out, row * out_stride + h * hd + d);
    D[i] = warp_sum(part);
    row_lse[i] = row_ok[i] ? lse[row * H + h] : 0.0f;
#pragma unroll
    for (int t = 0; t < DPL; t++) acc[i][t] = 0.0f;
  }

  for (int64_t k0 = 0; k0 < L; k0 += kKeyTile) {
    __syncthreads();  // the previous tile is consumed
    load_tile(k_s, k, kv_stride, start, k0, kKeyTile, L, hk * hd, hd);
    load_tile(v_s, v, kv_stride, start, k0, kKeyTile, L, hk * hd, hd);
    __syncthreads();
    const bool valid = k0 + lane < L;
    const float* kj = k_s + lane * P;
    const float* vj = v_s + lane * P;
    float ds[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; i++) {
      const float* qi = q_s + (warp * kRowsPerWarp + i) * P;
      const float* doi = do_s + (warp * kRowsPerWarp + i) * P;
      float dot = 0.0f, dp = 0.0f;
      for (int64_t d = 0; d < hd; d++) {
        dot += qi[d] * kj[d];
        dp += doi[d] * vj[d];
      }
      const float p = valid && row_ok[i] ? expf(dot * scale - row_lse[i]) : 0.0f;
      ds[i] = p * (dp - D[i]) * scale;
    }
    const int n_keys = static_cast<int>(L - k0 < kKeyTile ? L - k0 : kKeyTile);
    for (int j = 0; j < n_keys; j++) {
      float dsj[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; i++) dsj[i] = __shfl_sync(0xffffffffu, ds[i], j);
#pragma unroll
      for (int t = 0; t < DPL; t++) {
        const int64_t d = lane + 32 * t;
        if (d < hd) {
          const float kv = k_s[j * P + d];
#pragma unroll
          for (int i = 0; i < kRowsPerWarp; i++) acc[i][t] += dsj[i] * kv;
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; i++) {
    if (!row_ok[i]) continue;
    const int64_t row = start + q0 + warp * kRowsPerWarp + i;
#pragma unroll
    for (int t = 0; t < DPL; t++) {
      const int64_t d = lane + 32 * t;
      if (d < hd) dq[row * dq_stride + h * hd + d] += acc[i][t];
    }
  }
}

// dk, dv: a block owns 32 keys of one kv head (8 per warp; each lane hd/32 dimensions of each) and
// sweeps the group's query heads, then their rows 16 at a time: per tile, lane (i = lane % 16,
// keys lane / 16 + 2c) computes p and ds for 4 of the warp's 128 (row, key) pairs into shared
// memory, then every lane adds the tile's rows in order into its keys' dimensions.
template <typename T, int DPL>
__global__ void __launch_bounds__(kWarps * 32)
    attention_backward_dkv_kernel(float* dk, float* dv, int64_t dkv_stride, const float* dout, int64_t dout_stride,
                                  const T* q, int64_t q_stride, const T* k, const T* v, int64_t kv_stride, const T* out,
                                  int64_t out_stride, const float* lse, const int32_t* seq_starts, int64_t H,
                                  int64_t group, int64_t hd, float scale) {
  JG_DYNAMIC_SHARED(float, smem);
  const int64_t P = hd + 1;
  float* q_s = smem;                                  // (16, P)
  float* do_s = q_s + kQueryTile * P;                 // (16, P)
  float* k_s = do_s + kQueryTile * P;                 // (32, P)
  float* v_s = k_s + kKeyTile * P;                    // (32, P)
  float* lse_s = v_s + kKeyTile * P;                  // (16)
  float* D_s = lse_s + kQueryTile;                    // (16)
  float* p_s = D_s + kQueryTile;                      // (4 warps, 16 rows, 8 keys)
  float* ds_s = p_s + kWarps * kQueryTile * kKeysPerWarp;

  const int64_t seq = blockIdx.z, hk = blockIdx.y;
  const int64_t start = seq_starts[seq], L = seq_starts[seq + 1] - start;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kKeyTile;
  if (k0 >= L) return;  // the whole block, before any barrier
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  load_tile(k_s, k, kv_stride, start, k0, kKeyTile, L, hk * hd, hd);
  load_tile(v_s, v, kv_stride, start, k0, kKeyTile, L, hk * hd, hd);

  float dk_acc[kKeysPerWarp][DPL], dv_acc[kKeysPerWarp][DPL];
#pragma unroll
  for (int jj = 0; jj < kKeysPerWarp; jj++)
#pragma unroll
    for (int t = 0; t < DPL; t++) dk_acc[jj][t] = dv_acc[jj][t] = 0.0f;

  const int pi = lane % kQueryTile, pj = lane / kQueryTile;  // this lane's row, and first key (of 2)
  float* pw = p_s + warp * kQueryTile * kKeysPerWarp;
  float* dsw = ds_s + warp * kQueryTile * kKeysPerWarp;
  for (int64_t h = hk * group; h < (hk + 1) * group; h++) {
    for (int64_t q0 = 0; q0 < L; q0 += kQueryTile) {
      __syncthreads();  // the previous tile is consumed (and, the first time, k_s and v_s are written)
      load_tile(q_s, q, q_stride, start, q0, kQueryTile, L, h * hd, hd);
      load_tile(do_s, dout, dout_stride, start, q0, kQueryTile, L, h * hd, hd);
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; i++) {
        const int64_t r = warp * kRowsPerWarp + i, row = start + q0 + r;
        float part = 0.0f;
        if (q0 + r < L)
          for (int64_t d = lane; d < hd; d += 32)
            part += dout[row * dout_stride + h * hd + d] * load_f32(out, row * out_stride + h * hd + d);
        part = warp_sum(part);
        if (lane == 0) {
          D_s[r] = part;
          lse_s[r] = q0 + r < L ? lse[row * H + h] : 0.0f;
        }
      }
      __syncthreads();
      const bool row_ok = q0 + pi < L;
      const float* qi = q_s + pi * P;
      const float* doi = do_s + pi * P;
#pragma unroll
      for (int c = 0; c < kKeysPerWarp / 2; c++) {
        const int jj = pj + 2 * c, j = warp * kKeysPerWarp + jj;
        const float* kj = k_s + j * P;
        const float* vj = v_s + j * P;
        float dot = 0.0f, dp = 0.0f;
        for (int64_t d = 0; d < hd; d++) {
          dot += qi[d] * kj[d];
          dp += doi[d] * vj[d];
        }
        const float p = row_ok && k0 + j < L ? expf(dot * scale - lse_s[pi]) : 0.0f;
        pw[pi * kKeysPerWarp + jj] = p;
        dsw[pi * kKeysPerWarp + jj] = p * (dp - D_s[pi]) * scale;
      }
      __syncwarp();  // the warp's p and ds are written
#pragma unroll
      for (int jj = 0; jj < kKeysPerWarp; jj++)
        for (int i = 0; i < kQueryTile; i++) {
          const float a = dsw[i * kKeysPerWarp + jj], b = pw[i * kKeysPerWarp + jj];
#pragma unroll
          for (int t = 0; t < DPL; t++) {
            const int64_t d = lane + 32 * t;
            if (d < hd) {
              dk_acc[jj][t] += a * q_s[i * P + d];
              dv_acc[jj][t] += b * do_s[i * P + d];
            }
          }
        }
    }
  }

#pragma unroll
  for (int jj = 0; jj < kKeysPerWarp; jj++) {
    const int64_t j = k0 + warp * kKeysPerWarp + jj;
    if (j >= L) continue;
#pragma unroll
    for (int t = 0; t < DPL; t++) {
      const int64_t d = lane + 32 * t;
      if (d < hd) {
        dk[(start + j) * dkv_stride + hk * hd + d] += dk_acc[jj][t];
        dv[(start + j) * dkv_stride + hk * hd + d] += dv_acc[jj][t];
      }
    }
  }
}

template <typename T, int DPL>
void launch_attention_backward(float* dq, int64_t dq_stride, float* dk, float* dv, int64_t dkv_stride,
                               const float* dout, int64_t dout_stride, const void* q, int64_t q_stride, const void* k,
                               const void* v, int64_t kv_stride, const void* out, int64_t out_stride, const float* lse,
                               const int32_t* seq_starts, int64_t n_seqs, int64_t max_len, int64_t H, int64_t KV,
                               int64_t hd, cudaStream_t s) {
  const size_t smem = attention_backward_smem_bytes(hd);
  auto dq_kernel = attention_backward_dq_kernel<T, DPL>;
  auto dkv_kernel = attention_backward_dkv_kernel<T, DPL>;
  if (smem > 48 * 1024) {
    JG_CUDA_CHECK(cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    JG_CUDA_CHECK(cudaFuncSetAttribute(dkv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const T* qt = static_cast<const T*>(q);
  const T* kt = static_cast<const T*>(k);
  const T* vt = static_cast<const T*>(v);
  const T* ot = static_cast<const T*>(out);
  const dim3 dq_grid(static_cast<unsigned>((max_len + kQueryTile - 1) / kQueryTile), static_cast<unsigned>(H),
                     static_cast<unsigned>(n_seqs));
  JG_LAUNCH(dq_kernel, dq_grid, kWarps * 32, smem, s, dq, dq_stride, dout, dout_stride, qt, q_stride, kt, vt,
            kv_stride, ot, out_stride, lse, seq_starts, H, H / KV, hd, scale);
  JG_CUDA_LAUNCHED("attention_backward_dq_kernel");
  const dim3 dkv_grid(static_cast<unsigned>((max_len + kKeyTile - 1) / kKeyTile), static_cast<unsigned>(KV),
                      static_cast<unsigned>(n_seqs));
  JG_LAUNCH(dkv_kernel, dkv_grid, kWarps * 32, smem, s, dk, dv, dkv_stride, dout, dout_stride, qt, q_stride, kt, vt,
            kv_stride, ot, out_stride, lse, seq_starts, H, H / KV, hd, scale);
  JG_CUDA_LAUNCHED("attention_backward_dkv_kernel");
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
  attention_forward(out, out_stride, nullptr, q, q_stride, k, v, kv_stride, t, seq_starts, n_seqs, max_len, H, KV, hd,
                    s);
}

// The CUDA-core kernel, saving lse (N, H) when it is not null (the tensor-core one does not).
void attention_forward(void* out, int64_t out_stride, float* lse, const void* q, int64_t q_stride, const void* k,
                       const void* v, int64_t kv_stride, DType t, const int32_t* seq_starts, int64_t n_seqs,
                       int64_t max_len, int64_t H, int64_t KV, int64_t hd, cudaStream_t s) {
  if (n_seqs == 0 || max_len == 0) return;
  JG_CHECK(hd > 0 && hd <= 256, "The CUDA attention kernel supports head dimensions up to 256, not ", hd);
  JG_CHECK(KV > 0 && H % KV == 0, "n_heads must be a multiple of n_kv_heads");
  JG_CHECK(max_len <= 65535LL * kQueryTile && H <= 65535 && n_seqs <= 65535, "Attention grid too large");
  JG_DISPATCH(t, T, {
    if (hd <= 32)
      launch_attention<T, 1>(out, out_stride, lse, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, hd, s);
    else if (hd <= 64)
      launch_attention<T, 2>(out, out_stride, lse, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, hd, s);
    else if (hd <= 128)
      launch_attention<T, 4>(out, out_stride, lse, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, hd, s);
    else
      launch_attention<T, 8>(out, out_stride, lse, q, q_stride, k, v, kv_stride, seq_starts, n_seqs, max_len, H, KV, hd, s);
  });
}

// dq (N, H*hd) +=, dk, dv (N, KV*hd) += fp32; dout fp32; q, k, v, out of dtype t; lse (N, H) from the forward
void attention_backward(float* dq, int64_t dq_stride, float* dk, float* dv, int64_t dkv_stride, const float* dout,
                        int64_t dout_stride, const void* q, int64_t q_stride, const void* k, const void* v,
                        int64_t kv_stride, const void* out, int64_t out_stride, const float* lse, DType t,
                        const int32_t* seq_starts, int64_t n_seqs, int64_t max_len, int64_t H, int64_t KV,
                        int64_t hd, cudaStream_t s) {
  if (n_seqs == 0 || max_len == 0) return;
  JG_CHECK(hd > 0 && hd <= 256, "The CUDA attention backward supports head dimensions up to 256, not ", hd);
  JG_CHECK(KV > 0 && H % KV == 0, "n_heads must be a multiple of n_kv_heads");
  JG_CHECK(max_len <= 65535LL * kQueryTile && H <= 65535 && n_seqs <= 65535, "Attention grid too large");
  JG_DISPATCH(t, T, {
    if (hd <= 32)
      launch_attention_backward<T, 1>(dq, dq_stride, dk, dv, dkv_stride, dout, dout_stride, q, q_stride, k, v,
                                      kv_stride, out, out_stride, lse, seq_starts, n_seqs, max_len, H, KV, hd, s);
    else if (hd <= 64)
      launch_attention_backward<T, 2>(dq, dq_stride, dk, dv, dkv_stride, dout, dout_stride, q, q_stride, k, v,
                                      kv_stride, out, out_stride, lse, seq_starts, n_seqs, max_len, H, KV, hd, s);
    else if (hd <= 128)
      launch_attention_backward<T, 4>(dq, dq_stride, dk, dv, dkv_stride, dout, dout_stride, q, q_stride, k, v,
                                      kv_stride, out, out_stride, lse, seq_starts, n_seqs, max_len, H, KV, hd, s);
    else
      launch_attention_backward<T, 8>(dq, dq_stride, dk, dv, dkv_stride, dout, dout_stride, q, q_stride, k, v,
                                      kv_stride, out, out_stride, lse, seq_starts, n_seqs, max_len, H, KV, hd, s);
  });
}

}  // namespace jg::cuda
