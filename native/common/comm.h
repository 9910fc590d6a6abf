// Data parallelism across processes: the system's MPI, found at run time (comm.cpp says how and
// why). One process-wide communicator over MPI_COMM_WORLD; every collective has a deadline, so a
// dead or hung rank ends the job with an error naming it instead of a hang.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "backend.h"

namespace jg {

class Communicator {
 public:
  // The world communicator, initialising MPI on first use (MPI can be initialised once per
  // process). Throws UNSUPPORTED, saying what was tried, where no MPI library can be loaded.
  static Communicator& world();
  // Whether world() has been made (without making it).
  static bool initialised();

  int rank() const { return rank_; }
  int size() const { return size_; }
  // "Open MPI v4.1.4 (libmpi.so.40)": the library and the file it came from.
  const std::string& library() const { return library_; }

  // In place, element-wise sums over all ranks. `what` names the collective in errors; each waits at
  // most timeout_s seconds. After a time-out the communicator refuses further calls (MPI's state is
  // undefined once a collective is abandoned); abort() then ends the job.
  void all_reduce_sum(float* data, int64_t n, double timeout_s, const std::string& what);
  void all_reduce_sum(double* data, int64_t n, double timeout_s, const std::string& what);
  void all_reduce_max(double* data, int64_t n, double timeout_s, const std::string& what);
  // data holds size() blocks of `block` floats; afterwards block rank() holds the sum over ranks of
  // every rank's block rank() (the other blocks are left undefined).
  void reduce_scatter_sum(float* data, int64_t block, double timeout_s, const std::string& what);
  // data holds size() blocks of `block_bytes` bytes (a multiple of 4); afterwards every rank holds
  // every rank's own block, in place.
  void all_gather(void* data, int64_t block_bytes, double timeout_s, const std::string& what);
  // `bytes` bytes from `root` to every rank.
  void broadcast(void* data, int64_t bytes, int root, double timeout_s, const std::string& what);
  void barrier(double timeout_s, const std::string& what);
  // MPI_Abort: every rank of the job ends with `code`.
  [[noreturn]] void abort(int code);
  // MPI_Finalize (once every rank has called it; after a failure, use abort()).
  void finalize();

 private:
  Communicator();
  enum class Type { FLOAT, DOUBLE, BYTE };
  enum class Op { SUM, MAX };
  void reduce(void* data, int64_t n, Type type, Op op, double timeout_s, const std::string& what);
  // Throws unless the communicator can start another collective (call with mu_ held).
  void usable();
  // Waits for request `req` (MPI_Test polling) until the deadline; on time-out, names the ranks that
  // did not answer a short exchange of "which collective are you in" messages, and throws.
  void wait(uint64_t& req, double timeout_s, const std::string& what);
  void check(int rc, const char* call, const std::string& what);

  std::mutex mu_;  // MPI is initialised as MPI_THREAD_SERIALIZED: one call at a time, from any thread
  int rank_ = 0, size_ = 1;
  std::string library_;
  int64_t seq_ = 0;      // collectives started, the same count on every healthy rank
  std::string failed_;   // why the communicator is unusable (a time-out), or empty
  bool finalized_ = false;
};

// The MPI world's collectives as a Training step calls them (backend.h, GradComm): host memory,
// each collective bounded by timeout_s.
class MpiGradComm final : public GradComm {
 public:
  MpiGradComm(Communicator& world, double timeout_s) : c_(world), timeout_(timeout_s) {}
  int rank() const override { return c_.rank(); }
  int size() const override { return c_.size(); }
  bool on_device() const override { return false; }
  std::string name() const override { return c_.library(); }
  void all_reduce_sum(float* data, int64_t n) override { c_.all_reduce_sum(data, n, timeout_, "the all-reduce of the gradients"); }
  void reduce_scatter_sum(float* data, int64_t block) override {
    c_.reduce_scatter_sum(data, block, timeout_, "the reduce-scatter of the gradients");
  }
  void all_gather(void* data, int64_t block_bytes) override {
    c_.all_gather(data, block_bytes, timeout_, "the all-gather of the updated weights");
  }
  void all_reduce_host(double* data, int64_t n) override { c_.all_reduce_sum(data, n, timeout_, "the sum of the step's statistics"); }

 private:
  Communicator& c_;
  double timeout_;
};

}  // namespace jg
