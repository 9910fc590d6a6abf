// One persistent pool of worker threads for the CPU kernels: no thread is created per call.
// OpenBLAS keeps its own threads for GEMMs; GEMMs and our kernels run in turn, never at once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace jg::cpu {

class ThreadPool {
 public:
  // The process-wide pool; its size comes from JUSTGRPO_NUM_THREADS or the number of cores, the
  // spin before sleeping from JUSTGRPO_SPIN_US (default 50 microseconds; 0 sleeps at once).
  static ThreadPool& global();

  explicit ThreadPool(int n_threads, int64_t spin_ns = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over [0, n) split into chunks of at least `grain` items, on the calling
  // thread and the workers; returns when all are done. Calls from several threads take turns.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop();
  void run_chunks();
  // Waits up to spin_ns_ for `done` to hold before the caller sleeps on a condition variable:
  // within a layer the next kernel follows in microseconds, and waking a sleeping thread costs more.
  template <typename Done>
  void spin(Done done) const;

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time
  std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  std::atomic<int> active_{0};
  int64_t spin_ns_ = 0;

  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 1;
  int64_t next_ = 0;  // guarded by mutex_
};

// Shorthand for ThreadPool::global().parallel_for.
inline void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  ThreadPool::global().parallel_for(n, grain, fn);
}

}  // namespace jg::cpu
