// NCCL for the CUDA backend's data parallelism: the gradients summed over the ranks' GPUs on the
// model's stream, never through host memory. NCCL is found at run time (nccl.cpp says how and why),
// so the CUDA binary keeps no NCCL dependency; the ranks find each other over MPI (rank 0's NCCL
// unique id is broadcast over the world communicator), which also carries the step's host
// statistics.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../common/backend.h"

namespace jg {
class Communicator;  // ../common/comm.h
}

namespace jg::cuda {

// The NCCL library this process loaded (once, on first use): "NCCL 2.21.5 (libnccl.so.2)", or why
// none could be loaded (what was tried, and the variable that names the file).
struct NcclLibrary {
  bool loaded = false;
  std::string name;   // "NCCL 2.21.5 (libnccl.so.2)"
  std::string error;  // when not loaded
};
const NcclLibrary& nccl_library();

// GradComm over NCCL (backend.h): float pointers are device memory on `device`, collectives run on
// `stream` (the model's), and each is waited for until a deadline (NCCL's own calls never time
// out). world: the MPI communicator that bootstraps NCCL and sums host statistics; null for one
// rank alone, which needs no MPI at all (the 1-GPU smoke test).
class NcclGradComm final : public GradComm {
 public:
  // Collective over every rank of `world` (each calls it at the same point). Throws UNSUPPORTED
  // where NCCL cannot be loaded.
  NcclGradComm(int device, cudaStream_t stream, Communicator* world, double timeout_s);
  ~NcclGradComm() override;
  NcclGradComm(const NcclGradComm&) = delete;
  NcclGradComm& operator=(const NcclGradComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool on_device() const override { return true; }
  std::string name() const override { return nccl_library().name; }
  void all_reduce_sum(float* data, int64_t n) override;
  void reduce_scatter_sum(float* data, int64_t block) override;
  void all_gather(void* data, int64_t block_bytes) override;
  void all_reduce_host(double* data, int64_t n) override;

 private:
  // Waits for the collective just enqueued (`what`) until the deadline; on a time-out or an
  // asynchronous NCCL error, aborts the communicator and throws.
  void wait(const char* what);
  void usable(const char* what) const;

  int device_;
  cudaStream_t stream_;
  Communicator* world_;
  double timeout_;
  int rank_ = 0, size_ = 1;
  void* comm_ = nullptr;  // ncclComm_t
  int64_t seq_ = 0;       // collectives enqueued, the same count on every healthy rank
  std::string failed_;    // why the communicator is unusable, or empty
};

// The collectives this backend's steps use, for Model::make_grad_comm: NCCL where it loads on every
// rank, else MPI on host memory with one printed line saying why; JUSTGRPO_NCCL=0 asks for MPI,
// JUSTGRPO_NCCL=1 makes a missing NCCL an error.
std::unique_ptr<GradComm> make_grad_comm(int device, cudaStream_t stream, Communicator& world, double timeout_s);

// The NCCL checks of bench/gpu (and of the CUDA-on-CPU tier's tests): on `device`, a communicator
// over `world` (null: one rank, no MPI), then an all-reduce, a reduce-scatter and an all-gather in
// place checked element by element against their exact sums, then the all-reduce timed at each of
// `sizes` bytes (`iters` runs after one warm-up; bus bandwidth = bytes / time * 2 (n - 1) / n, 0 for
// one rank).
struct NcclProbe {
  std::string library;
  int rank = 0, ranks = 1;
  std::vector<std::string> failures;  // empty when every check passed
  struct Timing {
    int64_t bytes;
    double seconds, algbw, busbw;  // per all-reduce; GB/s (1e9 bytes)
  };
  std::vector<Timing> timings;
};
NcclProbe nccl_probe(int device, Communicator* world, const std::vector<int64_t>& sizes, int iters, double timeout_s);

}  // namespace jg::cuda
