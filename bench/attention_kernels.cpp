// Micro-benchmark and accuracy check of the CPU attention kernels (native/cpu/attention.cpp), old
// against new in one process. Build and run with bench/attention_kernels.sh, which compiles the
// working tree's kernels as jg::cpu and a base commit's as jg_old::cpu (-Djg=jg_old).
//
//   attention_kernels check [STEP]    errors of old and new vs a float64 reference; exp_f32 vs std::exp over every
//                                     STEP-th float (default 1: all 2.2e9 in [-104, 89], a few minutes)
//   attention_kernels time WHICH SHAPE REPS   WHICH: old|new|both, SHAPE: small|tiny|llada; median ms
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../native/cpu/simd.h"

#define ATTN_DECLS                                                                                               \
  void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,                 \
                         const int32_t* seq_starts, int64_t n_seqs, int64_t H, int64_t KV, int64_t hd);          \
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,    \
                          const float* v, const float* out, const float* lse, const int32_t* seq_starts,         \
                          int64_t n_seqs, int64_t H, int64_t KV, int64_t hd);                                    \
  void attention_rows_forward(float* out, const float* q, const float* k, const float* v, const int32_t* rows,  \
                              int64_t R, const int32_t* seq_starts, int64_t n_seqs, int64_t H, int64_t KV,       \
                              int64_t hd);
namespace jg::cpu {
ATTN_DECLS
}
namespace jg_old::cpu {
ATTN_DECLS
}

namespace {

struct Problem {
  std::vector<int32_t> starts;
  int64_t H, KV, hd, N;
  std::vector<float> q, k, v, dout;
};

Problem make_problem(const std::vector<int>& lens, int64_t H, int64_t KV, int64_t hd, uint32_t seed, float amp) {
  Problem p;
  p.H = H, p.KV = KV, p.hd = hd;
  p.starts.push_back(0);
  for (int l : lens) p.starts.push_back(p.starts.back() + l);
  p.N = p.starts.back();
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& x, int64_t n, float a) {
    x.resize(n);
    for (auto& e : x) e = a * nd(rng);
  };
  fill(p.q, p.N * H * hd, amp);
  fill(p.k, p.N * KV * hd, amp);
  fill(p.v, p.N * KV * hd, 1.0f);
  fill(p.dout, p.N * H * hd, 1.0f);
  return p;
}

struct Result {
  std::vector<float> out, lse, dq, dk, dv;
};

template <class Fwd, class Bwd>
Result run(const Problem& p, Fwd fwd, Bwd bwd) {
  Result r;
  const int64_t n_seqs = static_cast<int64_t>(p.starts.size()) - 1;
  r.out.assign(p.N * p.H * p.hd, 0);
  r.lse.assign(p.N * p.H, 0);
  // Gradients start non-zero to check that they accumulate.
  r.dq.assign(p.N * p.H * p.hd, 0.25f);
  r.dk.assign(p.N * p.KV * p.hd, -0.5f);
  r.dv.assign(p.N * p.KV * p.hd, 0.125f);
  fwd(r.out.data(), r.lse.data(), p.q.data(), p.k.data(), p.v.data(), p.starts.data(), n_seqs, p.H, p.KV, p.hd);
  bwd(r.dq.data(), r.dk.data(), r.dv.data(), p.dout.data(), p.q.data(), p.k.data(), p.v.data(), r.out.data(),
      r.lse.data(), p.starts.data(), n_seqs, p.H, p.KV, p.hd);
  return r;
}

// The same math in float64, straight from the definition.
struct RefResult {
  std::vector<double> out, lse, dq, dk, dv;
};

RefResult reference(const Problem& p) {
  RefResult r;
  const int64_t H = p.H, KV = p.KV, hd = p.hd, group = H / KV;
  const int64_t qs = H * hd, ks = KV * hd;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  r.out.assign(p.N * qs, 0);
  r.lse.assign(p.N * H, 0);
  r.dq.assign(p.N * qs, 0.25);
  r.dk.assign(p.N * ks, -0.5);
  r.dv.assign(p.N * ks, 0.125);
  for (size_t s = 0; s + 1 < p.starts.size(); s++) {
    const int64_t a = p.starts[s], L = p.starts[s + 1] - a;
    for (int64_t h = 0; h < H; h++) {
      const int64_t hk = h / group;
      for (int64_t n = a; n < a + L; n++) {
        std::vector<double> sc(L), pr(L), dp(L);
        double mx = -INFINITY;
        for (int64_t j = 0; j < L; j++) {
          double d = 0;
          for (int64_t i = 0; i < hd; i++) d += double(p.q[n * qs + h * hd + i]) * p.k[(a + j) * ks + hk * hd + i];
          sc[j] = d * scale;
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < L; j++) sum += std::exp(sc[j] - mx);
        const double lse = mx + std::log(sum);
        r.lse[n * H + h] = lse;
        for (int64_t j = 0; j < L; j++) pr[j] = std::exp(sc[j] - lse);
        for (int64_t i = 0; i < hd; i++) {
          double o = 0;
          for (int64_t j = 0; j < L; j++) o += pr[j] * p.v[(a + j) * ks + hk * hd + i];
          r.out[n * qs + h * hd + i] = o;
        }
        double D = 0;
        for (int64_t i = 0; i < hd; i++) D += double(p.dout[n * qs + h * hd + i]) * r.out[n * qs + h * hd + i];
        for (int64_t j = 0; j < L; j++) {
          double d = 0;
          for (int64_t i = 0; i < hd; i++) d += double(p.dout[n * qs + h * hd + i]) * p.v[(a + j) * ks + hk * hd + i];
          const double ds = pr[j] * (d - D) * scale;
          for (int64_t i = 0; i < hd; i++) {
            r.dq[n * qs + h * hd + i] += ds * p.k[(a + j) * ks + hk * hd + i];
            r.dk[(a + j) * ks + hk * hd + i] += ds * p.q[n * qs + h * hd + i];
            r.dv[(a + j) * ks + hk * hd + i] += pr[j] * p.dout[n * qs + h * hd + i];
          }
        }
      }
    }
  }
  return r;
}

// Max |got - ref| / (max |ref| over the tensor): an error relative to the tensor's scale.
double rel_err(const std::vector<float>& got, const std::vector<double>& ref) {
  double scale = 0, e = 0;
  for (double x : ref) scale = std::max(scale, std::fabs(x));
  for (size_t i = 0; i < ref.size(); i++) {
    const double d = std::fabs(double(got[i]) - ref[i]);
    e = std::isnan(d) ? INFINITY : std::max(e, d);
  }
  return e / std::max(scale, 1e-30);
}
// Max |got - ref| / max(|ref|, floor) elementwise.
double elem_err(const std::vector<float>& got, const std::vector<double>& ref, double floor) {
  double e = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double d = std::fabs(double(got[i]) - ref[i]) / std::max(std::fabs(ref[i]), floor);
    e = std::isnan(d) ? INFINITY : std::max(e, d);
  }
  return e;
}

int64_t ulp_diff(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return (std::isnan(a) && std::isnan(b)) ? 0 : INT64_MAX;
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if (ia < 0) ia = INT32_MIN - ia;
  if (ib < 0) ib = INT32_MIN - ib;
  return std::llabs(int64_t(ia) - int64_t(ib));
}

// exp8 (and exp_f32 for the tail) through a multiversioned function, so this machine's clone is
// what is measured, as in the kernels.
JG_MULTIVERSION void exp_array(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) jg::cpu::store8(y + i, jg::cpu::exp8(jg::cpu::load8(x + i)));
  for (; i < n; i++) y[i] = jg::cpu::exp_f32(x[i]);
}
// exp_f32 alone, which must give the same bits lane by lane.
JG_MULTIVERSION __attribute__((noinline)) float exp_scalar(float x) { return jg::cpu::exp_f32(x); }

void check_exp(int64_t step) {
  // Every step-th float in [-104, 89] (step 1: all of them), in chunks, then the specials.
  struct Acc {
    int64_t ulp = 0;
    double rel = 0;
    float worst = 0;
  } all, neg, den;
  int64_t bad_special = 0, count = 0, scalar_mismatch = 0;
  const float specials[] = {-INFINITY, INFINITY, NAN, -1e30f, 1e30f, -0.0f, 0.0f, -87.4f, -103.97f, -110.0f, 88.72f,
                            88.73f};
  std::vector<float> xs, ys;
  float next = -104.0f;
  bool done = false, specials_done = false;
  while (!specials_done) {
    xs.clear();
    if (!done) {
      for (; next <= 89.0f && xs.size() < (1u << 20);) {
        xs.push_back(next);
        uint32_t b;
        std::memcpy(&b, &next, 4);
        b = next < 0 ? (b >= uint32_t(step) + 0x80000000u ? b - step : 0) : b + step;
        std::memcpy(&next, &b, 4);
      }
      done = next > 89.0f;
    } else {
      xs.assign(std::begin(specials), std::end(specials));
      specials_done = true;
    }
    ys.resize(xs.size());
    exp_array(ys.data(), xs.data(), static_cast<int64_t>(xs.size()));
    count += static_cast<int64_t>(xs.size());
    for (size_t i = 0; i < xs.size(); i += 7) {
      const float y1 = exp_scalar(xs[i]);
      if (std::memcmp(&y1, &ys[i], 4) && !(std::isnan(y1) && std::isnan(ys[i]))) scalar_mismatch++;
    }
    for (size_t i = 0; i < xs.size(); i++) {
      const float x = xs[i], y = ys[i], ref = std::exp(x);
      const double dref = std::exp(double(x));
      if (!(x >= -104.0f && x <= 89.0f)) {
        // specials: must match std::exp (up to denormal rounding)
        if (ulp_diff(y, ref) > 0 && !(std::fabs(y - ref) < 1e-37f)) {
          std::printf("  special x=%g: exp_f32 %g std::exp %g\n", x, y, ref);
          bad_special++;
        }
        continue;
      }
      const int64_t u = ulp_diff(y, ref);
      if (x >= -87.3f && x <= 88.7f) {
        const double rel = std::fabs(double(y) - dref) / dref;
        Acc* accs[2] = {&all, x <= 0 ? &neg : nullptr};
        for (Acc* a : accs)
          if (a) {
            if (u > a->ulp) a->ulp = u, a->worst = x;
            a->rel = std::max(a->rel, rel);
          }
      } else {
        // denormal / overflow zone: absolute error for tiny results, inf for overflow
        const double abs_err = std::fabs(double(y) - dref);
        if (x < 0) {
          if (abs_err > den.rel) den.rel = abs_err, den.worst = x;
        } else if (!(std::isinf(y) == std::isinf(ref) && (std::isinf(y) || u <= 2))) {
          std::printf("  overflow zone x=%.9g: exp_f32 %g std::exp %g\n", x, y, ref);
          bad_special++;
        }
      }
    }
  }
  std::printf("exp_f32 over all floats in [-87.3, 88.7] (%lld inputs): max %lld ulp vs std::exp (at x=%.9g), max rel "
              "err vs exact %.3g\n",
              (long long)count, (long long)all.ulp, all.worst, all.rel);
  std::printf("exp_f32 over [-87.3, 0]: max %lld ulp vs std::exp (at x=%.9g), max rel err vs exact %.3g (%.2f ulp of "
              "2^-24)\n",
              (long long)neg.ulp, neg.worst, neg.rel, neg.rel / 5.9604645e-8);
  std::printf("exp_f32 over [-104, -87.3] (denormal results): max abs err vs exact %.3g (at x=%.9g); smallest "
              "denormal 1.4e-45\n",
              den.rel, den.worst);
  std::printf("exp_f32 specials (-inf, +inf, NaN, +-1e30, -110, ...): %lld mismatches vs std::exp\n",
              (long long)bad_special);
  std::printf("exp_f32 (scalar) vs exp8 (vector), every 7th input: %lld differ in bits\n", (long long)scalar_mismatch);
}

void check(int64_t exp_step) {
  check_exp(exp_step);
  struct Cfg {
    std::vector<int> lens;
    int64_t H, KV, hd;
    float amp;
  };
  const std::vector<Cfg> cfgs = {
      {{64, 64, 64}, 4, 4, 64, 1.0f},
      {{1, 7, 13, 33, 65, 100}, 6, 2, 64, 1.0f},
      {{5, 31, 17}, 8, 2, 16, 1.0f},
      {{3, 9, 40}, 4, 1, 13, 1.0f},
      {{19, 70}, 4, 2, 72, 1.0f},
      {{37, 130}, 2, 2, 128, 1.0f},
      {{11, 47}, 3, 3, 100, 3.0f},   // sharp softmax: scores spread over tens
      {{2, 23, 129}, 6, 3, 40, 0.3f},
  };
  std::printf("\nerrors vs float64 reference, max |err| / max |ref| per tensor (lse: max abs)\n");
  std::printf("%-34s %-4s %9s %9s %9s %9s %9s %9s\n", "config", "impl", "out", "lse", "dq", "dk", "dv", "out(el)");
  for (const auto& c : cfgs) {
    Problem p = make_problem(c.lens, c.H, c.KV, c.hd, 1234 + static_cast<uint32_t>(c.hd), c.amp);
    RefResult ref = reference(p);
    Result rn = run(p, jg::cpu::attention_forward, jg::cpu::attention_backward);
    Result ro = run(p, jg_old::cpu::attention_forward, jg_old::cpu::attention_backward);
    std::string name = "lens";
    for (int l : c.lens) name += " " + std::to_string(l);
    name += " H" + std::to_string(c.H) + " KV" + std::to_string(c.KV) + " hd" + std::to_string(c.hd);
    for (int w = 0; w < 2; w++) {
      const Result& r = w ? rn : ro;
      double lse_err = 0;
      for (size_t i = 0; i < ref.lse.size(); i++) lse_err = std::max(lse_err, std::fabs(r.lse[i] - ref.lse[i]));
      std::printf("%-34s %-4s %9.2e %9.2e %9.2e %9.2e %9.2e %9.2e\n", name.c_str(), w ? "new" : "old",
                  rel_err(r.out, ref.out), lse_err, rel_err(r.dq, ref.dq), rel_err(r.dk, ref.dk),
                  rel_err(r.dv, ref.dv), elem_err(r.out, ref.out, 1e-3));
    }
    // values whose bits differ between old and new (zero when BASE holds the same arithmetic)
    auto ndiff = [](const std::vector<float>& a, const std::vector<float>& b) {
      int64_t d = 0;
      for (size_t i = 0; i < a.size(); i++) d += std::memcmp(&a[i], &b[i], 4) != 0;
      return static_cast<long long>(d);
    };
    std::printf("%-34s bits differ: out %lld lse %lld dq %lld dk %lld dv %lld\n", "", ndiff(ro.out, rn.out),
                ndiff(ro.lse, rn.lse), ndiff(ro.dq, rn.dq), ndiff(ro.dk, rn.dk), ndiff(ro.dv, rn.dv));
    // rows forward: the same numbers as the full forward, row by row
    std::vector<int32_t> rows;
    for (int64_t n = p.N - 1; n >= 0; n -= 3) rows.push_back(static_cast<int32_t>(n));
    std::vector<float> ro_out(rows.size() * c.H * c.hd), rq(rows.size() * c.H * c.hd);
    for (size_t r = 0; r < rows.size(); r++)
      std::copy_n(p.q.data() + rows[r] * c.H * c.hd, c.H * c.hd, rq.data() + r * c.H * c.hd);
    jg::cpu::attention_rows_forward(ro_out.data(), rq.data(), p.k.data(), p.v.data(), rows.data(),
                                    static_cast<int64_t>(rows.size()), p.starts.data(),
                                    static_cast<int64_t>(p.starts.size()) - 1, c.H, c.KV, c.hd);
    int64_t mism = 0;
    for (size_t r = 0; r < rows.size(); r++)
      for (int64_t i = 0; i < c.H * c.hd; i++) mism += ro_out[r * c.H * c.hd + i] != rn.out[rows[r] * c.H * c.hd + i];
    if (mism) std::printf("  rows_forward differs from forward in %lld values\n", (long long)mism);
    // determinism: a second run gives the same bits
    Result rn2 = run(p, jg::cpu::attention_forward, jg::cpu::attention_backward);
    if (std::memcmp(rn2.dk.data(), rn.dk.data(), rn.dk.size() * 4) ||
        std::memcmp(rn2.out.data(), rn.out.data(), rn.out.size() * 4))
      std::printf("  NOT DETERMINISTIC\n");
  }
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void time_it(const std::string& which, const std::string& shape, int reps) {
  // small: the profiled GRPO step's tiny model; tiny: an eighth of it (for valgrind --tool=callgrind
  // instruction counts); llada: LLaDA-8B's heads (32 x 128) on two sequences of 256.
  Problem p = shape == "small"  ? make_problem(std::vector<int>(256, 64), 4, 4, 64, 7, 1.0f)
              : shape == "tiny" ? make_problem(std::vector<int>(32, 64), 4, 4, 64, 7, 1.0f)
                                : make_problem(std::vector<int>(2, 256), 32, 32, 128, 7, 1.0f);
  const int64_t n_seqs = static_cast<int64_t>(p.starts.size()) - 1;
  std::vector<float> out(p.N * p.H * p.hd), lse(p.N * p.H), dq(p.q.size()), dk(p.k.size()), dv(p.v.size());
  struct Impl {
    const char* name;
    decltype(&jg::cpu::attention_forward) fwd;
    decltype(&jg::cpu::attention_backward) bwd;
    std::vector<double> tf, tb;
  };
  std::vector<Impl> impls;
  if (which == "old" || which == "both")
    impls.push_back({"old", jg_old::cpu::attention_forward, jg_old::cpu::attention_backward, {}, {}});
  if (which == "new" || which == "both")
    impls.push_back({"new", jg::cpu::attention_forward, jg::cpu::attention_backward, {}, {}});
  for (int r = 0; r < reps + 1; r++)
    for (auto& im : impls) {  // interleaved, so load changes on the machine hit both alike
      double t0 = now_ms();
      im.fwd(out.data(), lse.data(), p.q.data(), p.k.data(), p.v.data(), p.starts.data(), n_seqs, p.H, p.KV, p.hd);
      double t1 = now_ms();
      im.bwd(dq.data(), dk.data(), dv.data(), p.dout.data(), p.q.data(), p.k.data(), p.v.data(), out.data(),
             lse.data(), p.starts.data(), n_seqs, p.H, p.KV, p.hd);
      double t2 = now_ms();
      if (r > 0) im.tf.push_back(t1 - t0), im.tb.push_back(t2 - t1);  // first run is warm-up
    }
  auto med = [](std::vector<double> x) {
    std::sort(x.begin(), x.end());
    return x.empty() ? 0.0 : x[x.size() / 2];
  };
  std::printf("shape %s (N %lld, H %lld, KV %lld, hd %lld, %lld seqs), %d reps, median ms:\n", shape.c_str(),
              (long long)p.N, (long long)p.H, (long long)p.KV, (long long)p.hd, (long long)n_seqs, reps);
  for (auto& im : impls)
    std::printf("  %s  forward %8.2f  backward %8.2f  (min %8.2f / %8.2f)\n", im.name, med(im.tf), med(im.tb),
                *std::min_element(im.tf.begin(), im.tf.end()), *std::min_element(im.tb.begin(), im.tb.end()));
  if (impls.size() == 2)
    std::printf("  speed-up  forward %.2fx  backward %.2fx\n", med(impls[0].tf) / med(impls[1].tf),
                med(impls[0].tb) / med(impls[1].tb));
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "check";
  if (mode == "check") {
    check(argc > 2 ? std::atoll(argv[2]) : 1);
  } else if (mode == "time") {
    time_it(argc > 2 ? argv[2] : "both", argc > 3 ? argv[3] : "small", argc > 4 ? std::atoi(argv[4]) : 7);
  } else {
    std::fprintf(stderr, "usage: %s check [step] | time old|new|both small|tiny|llada [reps]\n", argv[0]);
    return 2;
  }
  return 0;
}
