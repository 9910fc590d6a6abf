// Wall time spent in GEMMs and in attention, for the benchmarks' "where the time goes": off unless
// switched on (then two clock reads per call). Ops run one at a time from the calling thread (their
// parallel parts inside), so the times add up without double counting.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace jg::cpu {

enum class OpClass { GEMM = 0, ATTENTION = 1 };

struct OpClock {
  std::atomic<bool> on{false};
  std::atomic<int64_t> ns[2] = {};
  std::atomic<int64_t> gemm_flops{0};  // 2*M*N*K of every GEMM timed
};

inline OpClock& op_clock() {
  static OpClock clock;
  return clock;
}

class OpTimer {
 public:
  explicit OpTimer(OpClass c) : c_(static_cast<int>(c)), on_(op_clock().on.load(std::memory_order_relaxed)) {
    if (on_) t0_ = std::chrono::steady_clock::now();
  }
  ~OpTimer() {
    if (on_) op_clock().ns[c_] += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_).count();
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  int c_;
  bool on_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace jg::cpu
