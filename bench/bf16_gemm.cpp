// The CPU backend's bf16 products (native/cpu/onednn.cpp: single-threaded oneDNN matmuls on plain
// row-major inputs, split over our thread pool) against oneDNN's own matmul at the same shapes
// (threaded by oneDNN, weights reordered once into its preferred layout, as a framework would),
// OpenBLAS's fp32 sgemm as the engine's fp32 path runs it, and the cost of rounding inputs to bf16.
// Shapes: the model's forward (x @ W^T), input-gradient (dy @ W) and weight-gradient (dy^T @ x)
// products. Built and run by bench/bf16_gemm.sh.
#include <cblas.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../native/cpu/onednn.h"

using Clock = std::chrono::steady_clock;

// Median seconds of `reps` calls after one warm-up; with reps 0, one call's seconds, no warm-up.
double median_time(int reps, const std::function<void()>& fn) {
  if (reps == 0) {
    const auto t0 = Clock::now();
    fn();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }
  fn();
  std::vector<double> t;
  for (int i = 0; i < reps; i++) {
    const auto t0 = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Shape {
  const char* what;
  int64_t M, N, K;
  bool tb;  // op(B) = B^T with B (N,K): the forward's weight
};

int main(int argc, char** argv) {
  const std::string size = argc > 1 ? argv[1] : "tiny";
  const int reps = argc > 2 ? std::atoi(argv[2]) : 20;
  // tiny: d 256, mlp 768; small: d 1024, mlp 2816; llada: d 4096, mlp 12288. Tokens: a rollout
  // step of G 8 x (32 + 32) = 512 rows (tiny, small), 512 for LLaDA-8B's forward.
  int64_t d = 256, mlp = 768, N = 512;
  if (size == "small") d = 1024, mlp = 2816;
  if (size == "llada") d = 4096, mlp = 12288;
  const std::vector<Shape> shapes = {
      {"q_proj fwd", N, d, d, true},        {"ff_proj fwd", N, mlp, d, true},   {"ff_out fwd", N, d, mlp, true},
      {"ff_proj dinp", N, d, mlp, false},   {"ff_out dinp", N, mlp, d, false},  {"ff_proj dW", mlp, d, N, false},
      {"ff_out dW", d, mlp, N, false},
  };
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  std::printf("%s shapes, %d reps, medians; GFLOP/s\n", size.c_str(), reps);
  std::printf("%-14s %6s %6s %6s | %9s %9s %9s | %9s %9s\n", "product", "M", "N", "K", "ours", "oneDNN", "ours/dnn",
              "sgemm", "round GB/s");
  for (const Shape& s : shapes) {
    std::vector<float> a(s.M * s.K), b(s.K * s.N), c(s.M * s.N);
    for (float& x : a) x = dist(rng);
    for (float& x : b) x = dist(rng);
    std::vector<uint16_t> a16(a.size()), b16(b.size());
    jg::cpu::to_bf16(a16.data(), a.data(), a.size());
    jg::cpu::to_bf16(b16.data(), b.data(), b.size());
    const double flops = 2.0 * s.M * s.N * s.K;
    const int64_t ldb = s.tb ? s.K : s.N;
    auto ours_call = [&] {
      jg::cpu::gemm_bf16(s.tb, s.M, s.N, s.K, a16.data(), s.K, b16.data(), ldb, 0.0f, c.data(), s.N);
    };
    // oneDNN's own: plain bf16 source, weights in the layout it asks for (reordered once, untimed).
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    dnnl::memory::desc src_md({s.M, s.K}, dt::bf16, tag::ab), dst_md({s.M, s.N}, dt::f32, tag::ab);
    dnnl::memory::desc wany({s.K, s.N}, dt::bf16, tag::any);
    dnnl::memory::desc wplain({s.K, s.N}, dt::bf16, s.tb ? tag::ba : tag::ab);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, wany, dst_md), eng);
    dnnl::memory src(src_md, eng, a16.data()), dst(dst_md, eng, c.data()), wp(wplain, eng, b16.data());
    dnnl::memory w(pd.weights_desc(), eng);
    dnnl::reorder(wp, w).execute(strm, wp, w);
    dnnl::matmul mm(pd);
    auto theirs_call = [&] {
      mm.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, dst}});
      strm.wait();
    };
    // Alternately (A/B), so that load from elsewhere on the machine hits both alike.
    ours_call();
    theirs_call();
    std::vector<double> to, tt;
    for (int r = 0; r < reps; r++) {
      to.push_back(median_time(0, ours_call));
      tt.push_back(median_time(0, theirs_call));
    }
    std::sort(to.begin(), to.end());
    std::sort(tt.begin(), tt.end());
    const double ours = to[to.size() / 2], theirs = tt[tt.size() / 2];
    const double sg = median_time(std::max(3, reps / 4), [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, s.M, s.N, s.K, 1.0f, a.data(), s.K,
                  b.data(), ldb, 0.0f, c.data(), s.N);
    });
    const double round = median_time(reps, [&] { jg::cpu::to_bf16(a16.data(), a.data(), a.size()); });
    std::printf("%-14s %6ld %6ld %6ld | %9.1f %9.1f %8.0f%% | %9.1f %9.2f   (%s)\n", s.what, long(s.M), long(s.N),
                long(s.K), flops / ours * 1e-9, flops / theirs * 1e-9, 100 * theirs / ours, flops / sg * 1e-9,
                6.0 * a.size() / round * 1e-9, pd.impl_info_str());
  }
  std::printf("ours: %s\n", jg::cpu::onednn_describe().c_str());
  return 0;
}
