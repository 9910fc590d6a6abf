// The CUDA-on-CPU tier's own checks: what native/cuda/compat promises, against direct formulas, so a
// wrong stand-in cannot make the parity suites pass by being wrong the same way twice. Run by
// test/gpu/tier-selftest.test.ts; prints `PASS name` or `FAIL name: why` per check, exits 1 on any
// failure.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

int failures = 0;

void report(const std::string& name, bool ok, const std::string& why = "") {
  std::printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name.c_str(), ok ? "" : ": ", ok ? "" : why.c_str());
  if (!ok) failures++;
}

uint16_t bits(float f) { return __float2bfloat16_rn(f).bits; }
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void check_bf16() {
  // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0); just above rounds up.
  const bool ties = bits(1.0f + 0x1p-8f) == 0x3f80 && bits(1.0f + 3 * 0x1p-8f) == 0x3f82 &&
                    bits(from_bits(0x3f808001)) == 0x3f81;
  report("bf16 rounds to nearest, ties to even", ties);
  const bool special = (bits(NAN) & 0x7fc0) == 0x7fc0 && bits(INFINITY) == 0x7f80 && bits(-0.0f) == 0x8000 &&
                       __bfloat162float(__float2bfloat16_rn(3.0f)) == 3.0f;
  report("bf16 keeps NaN, inf, -0 and exact values", special);
}

// out[t] for each thread of one block of `threads`: the shuffles as CUDA defines them.
__global__ void shuffle_kernel(int* out, int kind, int arg, int width) {
  const int t = threadIdx.x, v = 1000 + t;
  int r = 0;
  if (kind == 0) r = __shfl_sync(0xffffffffu, v, arg, width);
  if (kind == 1) r = __shfl_xor_sync(0xffffffffu, v, arg, width);
  if (kind == 2) r = __shfl_down_sync(0xffffffffu, v, arg, width);
  if (kind == 3) r = __shfl_up_sync(0xffffffffu, v, arg, width);
  out[t] = r;
}

int expected_shuffle(int kind, int t, int arg, int width) {
  const int lane = t & 31, base = t & ~31, seg = lane & ~(width - 1), in = lane & (width - 1);
  int src = lane;
  if (kind == 0) src = seg + (arg & (width - 1));
  if (kind == 1) src = ((lane ^ arg) & ~(width - 1)) == seg ? lane ^ arg : lane;
  if (kind == 2) src = in + arg < width ? lane + arg : lane;
  if (kind == 3) src = in - arg >= 0 ? lane - arg : lane;
  return 1000 + base + src;
}

void check_shuffles() {
  int* d = nullptr;
  cudaMalloc(&d, 128 * sizeof(int));
  const char* names[] = {"__shfl_sync", "__shfl_xor_sync", "__shfl_down_sync", "__shfl_up_sync"};
  for (int kind = 0; kind < 4; kind++) {
    bool ok = true;
    std::string why;
    for (int width : {32, 16, 8})
      for (int arg : {1, 3, 5, 16}) {
        if (arg >= width && kind != 0) continue;
        JG_LAUNCH(shuffle_kernel, 1, 128, 0, nullptr, d, kind, arg, width);
        std::vector<int> h(128);
        cudaMemcpy(h.data(), d, 128 * sizeof(int), cudaMemcpyDeviceToHost);
        for (int t = 0; t < 128; t++)
          if (h[t] != expected_shuffle(kind, t, arg, width) && ok) {
            ok = false;
            why = "width " + std::to_string(width) + " arg " + std::to_string(arg) + " thread " + std::to_string(t) +
                  ": " + std::to_string(h[t]) + " != " + std::to_string(expected_shuffle(kind, t, arg, width));
          }
      }
    report(std::string(names[kind]) + " over 32-lane warps (widths 32, 16, 8)", ok, why);
  }
  cudaFree(d);
}

__global__ void empty_kernel(int* out) {
  if (out) out[0] = 1;
}

void check_launch_limits() {
  cudaGetLastError();
  JG_LAUNCH(empty_kernel, 1, 1025, 0, nullptr, nullptr);
  const bool big_block = cudaGetLastError() != cudaSuccess;
  JG_LAUNCH(empty_kernel, dim3(1, 65536), 32, 0, nullptr, nullptr);
  const bool big_grid = cudaGetLastError() != cudaSuccess;
  JG_LAUNCH(empty_kernel, 1, 32, 64 * 1024, nullptr, nullptr);
  const bool smem_without_attr = cudaGetLastError() != cudaSuccess;
  cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
  JG_LAUNCH(empty_kernel, 1, 32, 64 * 1024, nullptr, nullptr);
  const bool smem_with_attr = cudaGetLastError() == cudaSuccess;
  cudaDeviceSynchronize();
  report("launch refuses >1024 threads, grid.y > 65535, >48 KiB dynamic shared memory without the attribute",
         big_block && big_grid && smem_without_attr);
  report("launch accepts 64 KiB dynamic shared memory after cudaFuncSetAttribute", smem_with_attr);
}

// cublasGemmEx against the column-major definition, every op combination, padded leading
// dimensions, alpha and beta, and NaN in C where beta is 0 (cuBLAS never reads it then).
void check_gemm(bool bf16_in, bool bf16_out) {
  std::mt19937 gen(7);
  std::normal_distribution<float> nd;
  const int m = 37, n = 19, k = 45;
  cublasHandle_t h;
  cublasCreate(&h);
  bool ok = true;
  std::string why;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (float beta : {0.0f, 0.5f}) {
        const int lda = (ta ? k : m) + 3, ldb = (tb ? n : k) + 2, ldc = m + 5;
        const int a_cols = ta ? m : k, b_cols = tb ? k : n;
        std::vector<float> A(lda * a_cols), B(ldb * b_cols), C(ldc * n);
        for (float& x : A) x = nd(gen);
        for (float& x : B) x = nd(gen);
        for (float& x : C) x = beta == 0.0f ? NAN : nd(gen);
        // Inputs as the GEMM sees them (rounded to bf16 when they are bf16).
        auto round_in = [&](std::vector<float>& v) {
          if (bf16_in)
            for (float& x : v) x = __bfloat162float(__float2bfloat16_rn(x));
        };
        round_in(A);
        round_in(B);
        std::vector<float> C_in = C;
        if (bf16_out)
          for (float& x : C_in) x = std::isnan(x) ? x : __bfloat162float(__float2bfloat16_rn(x));
        const size_t es_in = bf16_in ? 2 : 4, es_out = bf16_out ? 2 : 4;
        void *dA, *dB, *dC;
        cudaMalloc(&dA, A.size() * es_in);
        cudaMalloc(&dB, B.size() * es_in);
        cudaMalloc(&dC, C.size() * es_out);
        auto upload = [&](void* d, const std::vector<float>& v, bool as_bf16) {
          if (!as_bf16) {
            cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice);
            return;
          }
          std::vector<__nv_bfloat16> b(v.size());
          for (size_t i = 0; i < v.size(); i++) b[i] = __float2bfloat16_rn(v[i]);
          cudaMemcpy(d, b.data(), b.size() * 2, cudaMemcpyHostToDevice);
        };
        upload(dA, A, bf16_in);
        upload(dB, B, bf16_in);
        upload(dC, C_in, bf16_out);
        const float alpha = 1.5f;
        const cudaDataType_t ti = bf16_in ? CUDA_R_16BF : CUDA_R_32F, to = bf16_out ? CUDA_R_16BF : CUDA_R_32F;
        const cublasStatus_t st =
            cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, dA, ti,
                         lda, dB, ti, ldb, &beta, dC, to, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        cudaDeviceSynchronize();
        std::vector<float> got(C.size());
        if (bf16_out) {
          std::vector<__nv_bfloat16> b(C.size());
          cudaMemcpy(b.data(), dC, b.size() * 2, cudaMemcpyDeviceToHost);
          for (size_t i = 0; i < b.size(); i++) got[i] = __bfloat162float(b[i]);
        } else {
          cudaMemcpy(got.data(), dC, got.size() * 4, cudaMemcpyDeviceToHost);
        }
        if (st != CUBLAS_STATUS_SUCCESS) {
          ok = false;
          why = "status " + std::string(cublasGetStatusName(st));
        }
        for (int j = 0; j < n && ok; j++)
          for (int i = 0; i < m && ok; i++) {
            double want = 0;
            for (int p = 0; p < k; p++)
              want += static_cast<double>(ta ? A[p + i * lda] : A[i + p * lda]) * (tb ? B[j + p * ldb] : B[p + j * ldb]);
            want = alpha * want + (beta == 0.0f ? 0.0 : beta * static_cast<double>(C_in[i + j * ldc]));
            // fp32 accumulation of 45 terms; one bf16 rounding of the output (2^-9 relative).
            const double tol = 1e-4 * (1 + std::fabs(want)) + (bf16_out ? std::fabs(want) * 0x1p-8 : 0.0);
            if (!(std::fabs(got[i + j * ldc] - want) <= tol)) {
              ok = false;
              why = "op " + std::to_string(ta) + std::to_string(tb) + " beta " + std::to_string(beta) + " C(" +
                    std::to_string(i) + "," + std::to_string(j) + ") = " + std::to_string(got[i + j * ldc]) +
                    " != " + std::to_string(want);
            }
          }
        // Padding rows of C (i >= m) are never written.
        for (int j = 0; j < n && ok; j++)
          for (int i = m; i < ldc && ok; i++)
            if (!(std::isnan(got[i + j * ldc]) && std::isnan(C_in[i + j * ldc])) && got[i + j * ldc] != C_in[i + j * ldc]) {
              ok = false;
              why = "wrote C's padding at (" + std::to_string(i) + "," + std::to_string(j) + ")";
            }
        cudaFree(dA);
        cudaFree(dB);
        cudaFree(dC);
      }
  const float one = 1.0f, zero = 0.0f;
  float out = 0.0f;
  const bool bad_ld = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, 4, 4, 8, &one, &one, CUDA_R_32F, 7, &one, CUDA_R_32F,
                                   8, &zero, nullptr, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE;
  const bool bad_types = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, &one, CUDA_R_32F, 4, &one,
                                      CUDA_R_32F, 4, &zero, &out, CUDA_R_16BF, 4, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED;
  cublasDestroy(h);
  report(std::string("cublasGemmEx ") + (bf16_in ? "bf16" : "fp32") + " -> " + (bf16_out ? "bf16" : "fp32") +
             ": op N/T both sides, leading dimensions, alpha, beta, beta 0 never reads C",
         ok, why);
  if (!bf16_in && !bf16_out) report("cublasGemmEx refuses lda below the stored rows and fp32 -> bf16", bad_ld && bad_types);
}

// One warp: D = A B + C through WMMA, A row- or column-major, B row- or column-major, C loaded
// from and D stored to padded shared-style arrays.
template <typename LA, typename LB>
__global__ void wmma_kernel(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(fa, a, 24);
  wmma::load_matrix_sync(fb, b, 24);
  wmma::load_matrix_sync(acc, c, 20, wmma::mem_row_major);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 20, wmma::mem_col_major);
}

template <typename LA, typename LB>
bool check_wmma_layout(std::string* why) {
  constexpr bool a_row = std::is_same_v<LA, nvcuda::wmma::row_major>, b_row = std::is_same_v<LB, nvcuda::wmma::row_major>;
  std::mt19937 gen(11);
  std::normal_distribution<float> nd;
  std::vector<__nv_bfloat16> a(16 * 24), b(16 * 24);
  std::vector<float> c(16 * 20), d(16 * 20, 0.0f);
  for (auto& x : a) x = __float2bfloat16_rn(nd(gen));
  for (auto& x : b) x = __float2bfloat16_rn(nd(gen));
  for (auto& x : c) x = nd(gen);
  __nv_bfloat16 *da, *db;
  float *dc, *dd;
  cudaMalloc(&da, a.size() * 2);
  cudaMalloc(&db, b.size() * 2);
  cudaMalloc(&dc, c.size() * 4);
  cudaMalloc(&dd, d.size() * 4);
  cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dc, c.data(), c.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dd, d.data(), d.size() * 4, cudaMemcpyHostToDevice);
  JG_LAUNCH((wmma_kernel<LA, LB>), 1, 32, 0, nullptr, dd, da, db, dc);
  cudaMemcpy(d.data(), dd, d.size() * 4, cudaMemcpyDeviceToHost);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  cudaFree(dd);
  for (int r = 0; r < 16; r++)
    for (int col = 0; col < 16; col++) {
      double want = c[r * 20 + col];
      for (int p = 0; p < 16; p++)
        want += static_cast<double>(__bfloat162float(a_row ? a[r * 24 + p] : a[r + p * 24])) *
                __bfloat162float(b_row ? b[p * 24 + col] : b[p + col * 24]);
      const float got = d[r + col * 20];  // stored column-major
      if (!(std::fabs(got - want) <= 1e-4 * (1 + std::fabs(want)))) {
        *why = std::string(a_row ? "A row" : "A col") + (b_row ? ", B row" : ", B col") + ": D(" + std::to_string(r) +
               "," + std::to_string(col) + ") = " + std::to_string(got) + " != " + std::to_string(want);
        return false;
      }
    }
  return true;
}

void check_wmma() {
  using namespace nvcuda::wmma;
  std::string why;
  const bool ok = check_wmma_layout<row_major, row_major>(&why) && check_wmma_layout<row_major, col_major>(&why) &&
                  check_wmma_layout<col_major, row_major>(&why) && check_wmma_layout<col_major, col_major>(&why);
  report("WMMA m16n16k16 bf16: load (row/col major, padded ld), mma, store (row/col major) match A B + C", ok, why);
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each line out before a trap could stop the program
  check_bf16();
  check_shuffles();
  check_launch_limits();
  check_gemm(false, false);
  check_gemm(true, false);
  check_gemm(true, true);
  check_wmma();
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
