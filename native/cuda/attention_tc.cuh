// The tensor-core variant of attention_forward for bf16 and head dimensions 64 or 128 (LLaDA's):
// the same flash-style loop, with the two products per key tile (S = Q K^T, O += P V) on the tensor
// cores through WMMA (bf16 in, fp32 accumulation), and the online softmax in fp32 in between.
//
// Block: 4 warps, 16 query rows each (64 rows); key tiles of 64. Shared memory holds the Q, K, V
// tiles (bf16), and per warp its scores (fp32), probabilities (bf16) and running output (fp32); two
// lanes share each query row for the softmax. Rows are padded (8 bf16 / 4 fp32) so every WMMA tile
// pointer stays 32-byte aligned, as load_matrix_sync requires.
#pragma once

#include <mma.h>

#include "common.cuh"

namespace jg::cuda {

namespace tc {

constexpr int kWarps = 4;
constexpr int kRows = 16 * kWarps;  // query rows per block
constexpr int kKeys = 64;           // keys per tile

struct Layout {
  int64_t hd, ldh, lds, ldp, ldo;  // leading dimensions of the bf16 tiles, scores, probabilities, output
  size_t q, k, v, s, p, o, bytes;  // byte offsets of the regions and the total
  __host__ __device__ explicit Layout(int64_t hd_) : hd(hd_), ldh(hd_ + 8), lds(kKeys + 4), ldp(kKeys + 8), ldo(hd_ + 4) {
    q = 0;
    k = q + sizeof(__nv_bfloat16) * kRows * ldh;
    v = k + sizeof(__nv_bfloat16) * kKeys * ldh;
    s = v + sizeof(__nv_bfloat16) * kKeys * ldh;
    p = s + sizeof(float) * kWarps * 16 * lds;
    o = p + sizeof(__nv_bfloat16) * kWarps * 16 * ldp;
    bytes = o + sizeof(float) * kWarps * 16 * ldo;
  }
};

template <int HD>
__global__ void __launch_bounds__(kWarps * 32)
    attention_tc_kernel(__nv_bfloat16* out, int64_t out_stride, const __nv_bfloat16* q, int64_t q_stride,
                        const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t kv_stride, const int32_t* seq_starts,
                        int64_t group, float scale) {
  using namespace nvcuda;
  JG_DYNAMIC_SHARED(unsigned char, smem);
  const Layout lay(HD);
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(smem + lay.q);
  __nv_bfloat16* k_s = reinterpret_cast<__nv_bfloat16*>(smem + lay.k);
  __nv_bfloat16* v_s = reinterpret_cast<__nv_bfloat16*>(smem + lay.v);

  const int64_t seq = blockIdx.z, h = blockIdx.y, hk = h / group;
  const int64_t start = seq_starts[seq], L = seq_starts[seq + 1] - start;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kRows;
  if (q0 >= L) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  float* s_w = reinterpret_cast<float*>(smem + lay.s) + warp * 16 * lay.lds;
  __nv_bfloat16* p_w = reinterpret_cast<__nv_bfloat16*>(smem + lay.p) + warp * 16 * lay.ldp;
  float* o_w = reinterpret_cast<float*>(smem + lay.o) + warp * 16 * lay.ldo;

  const __nv_bfloat16 zero = __float2bfloat16_rn(0.0f);
  for (int64_t idx = tid; idx < kRows * HD; idx += blockDim.x) {
    const int64_t r = idx / HD, d = idx % HD;
    q_s[r * lay.ldh + d] = q0 + r < L ? q[(start + q0 + r) * q_stride + h * HD + d] : zero;
  }
  for (int64_t idx = lane; idx < 16 * HD; idx += 32) o_w[(idx / HD) * lay.ldo + idx % HD] = 0.0f;

  // Lanes 2r and 2r+1 own query row r of the warp: columns [32 * half, 32 * half + 32) of a score
  // tile and [half * HD/2, (half + 1) * HD/2) of the output row.
  const int row = lane >> 1, half = lane & 1;
  float m = -INFINITY, l = 0.0f;

  for (int64_t k0 = 0; k0 < L; k0 += kKeys) {
    __syncthreads();  // the previous K and V tiles are consumed (and q_s is written, the first time)
    for (int64_t idx = tid; idx < kKeys * HD; idx += blockDim.x) {
      const int64_t j = idx / HD, d = idx % HD;
      const bool ok = k0 + j < L;
      const int64_t src = (start + k0 + j) * kv_stride + hk * HD + d;
      k_s[j * lay.ldh + d] = ok ? k[src] : zero;
      v_s[j * lay.ldh + d] = ok ? v[src] : zero;
    }
    __syncthreads();

    // S (16 x 64) = Q_w (16 x HD) K^T (HD x 64); K^T read as a column-major view of k_s.
    for (int j = 0; j < kKeys / 16; j++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < HD / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
        wmma::load_matrix_sync(a, q_s + (warp * 16) * lay.ldh + kk * 16, lay.ldh);
        wmma::load_matrix_sync(b, k_s + (j * 16) * lay.ldh + kk * 16, lay.ldh);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(s_w + j * 16, acc, lay.lds, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax over this tile for the lane's half row; probabilities rounded to bf16 once,
    // and the sum taken over the rounded values the product below uses.
    float tile_max = -INFINITY;
    for (int c = half * 32; c < half * 32 + 32; c++)
      if (k0 + c < L) tile_max = fmaxf(tile_max, s_w[row * lay.lds + c] * scale);
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);  // finite: key k0 is valid
    float sum = 0.0f;
    for (int c = half * 32; c < half * 32 + 32; c++) {
      float pc = 0.0f;
      if (k0 + c < L) pc = __bfloat162float(__float2bfloat16_rn(expf(s_w[row * lay.lds + c] * scale - m_new)));
      p_w[row * lay.ldp + c] = __float2bfloat16_rn(pc);
      sum += pc;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    const float corr = expf(m - m_new);  // 0 on the first tile
    l = l * corr + sum;
    m = m_new;
    for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); c++) o_w[row * lay.ldo + c] *= corr;
    __syncwarp();

    // O_w (16 x HD) += P_w (16 x 64) V (64 x HD), accumulating in place in o_w.
    for (int jd = 0; jd < HD / 16; jd++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, o_w + jd * 16, lay.ldo, wmma::mem_row_major);
      for (int kk = 0; kk < kKeys / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
        wmma::load_matrix_sync(a, p_w + kk * 16, lay.ldp);
        wmma::load_matrix_sync(b, v_s + (kk * 16) * lay.ldh + jd * 16, lay.ldh);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(o_w + jd * 16, acc, lay.ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }

  const int64_t r = q0 + warp * 16 + row;
  if (r < L) {
    const float inv = 1.0f / l;
    for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); c++)
      out[(start + r) * out_stride + h * HD + c] = __float2bfloat16_rn(o_w[row * lay.ldo + c] * inv);
  }
}

}  // namespace tc

}  // namespace jg::cuda
