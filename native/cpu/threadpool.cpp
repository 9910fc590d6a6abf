#include "threadpool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define JG_CPU_RELAX() _mm_pause()
#else
#define JG_CPU_RELAX() ((void)0)
#endif

namespace jg::cpu {

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(
      []() -> int {
        if (const char* env = std::getenv("JUSTGRPO_NUM_THREADS")) {
          int n = std::atoi(env);
          if (n > 0) return n;
        }
        return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      }(),
      []() -> int64_t {
        const char* env = std::getenv("JUSTGRPO_SPIN_US");
        return env ? std::max(0, std::atoi(env)) * int64_t(1000) : 50000;
      }());
  return pool;
}

ThreadPool::ThreadPool(int n_threads, int64_t spin_ns) : spin_ns_(spin_ns) {
  for (int i = 1; i < n_threads; i++) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  for (;;) {
    int64_t begin;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      begin = next_;
      next_ += chunk_;
    }
    if (begin >= n_) return;
    (*fn_)(begin, std::min(n_, begin + chunk_));
  }
}

template <typename Done>
void ThreadPool::spin(Done done) const {
  if (spin_ns_ <= 0) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns_);
  for (int i = 0; !done(); i++) {
    JG_CPU_RELAX();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return;
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    spin([&] { return generation_.load(std::memory_order_acquire) != seen; });
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_chunks();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int threads = size();
  if (threads == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  // Four chunks per thread balance uneven rows without much locking.
  int64_t chunk = std::max(grain, (n + 4 * threads - 1) / (4 * threads));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = &fn;
    n_ = n;
    chunk_ = chunk;
    next_ = 0;
    active_ = static_cast<int>(workers_.size());
    generation_++;
  }
  work_cv_.notify_all();
  run_chunks();
  spin([&] { return active_.load(std::memory_order_acquire) == 0; });
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return active_ == 0; });
  fn_ = nullptr;
}

}  // namespace jg::cpu
