// NCCL found at run time, as MPI is (native/common/comm.cpp), so the CUDA binary keeps no NCCL
// dependency: a machine without NCCL (or a one-GPU run) loads and trains as before.
//
// Why dlopen and not a link: NCCL is not part of the CUDA toolkit the engine is built with; it
// comes with PyTorch's wheels (nvidia-nccl-cu12/13, or inside torch/lib), NVIDIA's containers, or a
// system package, in versions the user's driver and cluster dictate. The ten functions data
// parallelism needs are looked up with dlsym in whichever libnccl.so.2 is there, and their small
// ABI is declared here instead of including nccl.h (which no build machine is required to have):
//  - ncclUniqueId is a struct of 128 bytes (NCCL_UNIQUE_ID_BYTES), passed by value to
//    ncclCommInitRank; ncclComm_t is an opaque pointer; results, data types and reduction ops are
//    C enums (int-sized) whose values have been stable since NCCL 2.0: ncclSuccess 0,
//    ncclInProgress 7; ncclUint8 1, ncclFloat32 7; ncclSum 0.
//  - ncclGetVersion's code is major*10000 + minor*100 + patch since 2.9, major*1000 + minor*100 +
//    patch before.
//  - In-place forms: ncclAllReduce with sendbuff == recvbuff; ncclReduceScatter with recvbuff ==
//    sendbuff + rank * recvcount; ncclAllGather with sendbuff == recvbuff + rank * sendcount.
//
// Where it is looked for: JUSTGRPO_NCCL_LIBRARY (that file only), else libnccl.so.2 on the loader's
// path, else where pip puts it next to PyTorch (site-packages/nvidia/nccl/lib, torch/lib) under the
// active virtualenv or conda environment and the usual prefixes.
//
// Time-outs: NCCL's collectives are enqueued on the stream and never time out by themselves (a
// rank that died leaves the others spinning in a kernel). Every collective here is waited for by
// polling cudaStreamQuery and ncclCommGetAsyncError until a deadline; past it the communicator is
// aborted (ncclCommAbort ends the kernels) and the error says which collective it was. Unlike MPI,
// NCCL cannot say which rank never arrived: there is no side channel to ask the others on once a
// collective is stuck.
#include "nccl.h"

#include <dlfcn.h>
#include <glob.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "../common/check.h"
#include "../common/comm.h"
#include "buffer.h"
#include "check.h"
#include "model.h"

namespace jg::cuda {

namespace {

// The ABI subset (see the comment at the top).
struct UniqueId {
  char internal[128];
};
using Comm = void*;
using Result = int;
constexpr Result kSuccess = 0, kInProgress = 7;
constexpr int kUint8 = 1, kFloat32 = 7;
constexpr int kSum = 0;

struct Nccl {
  NcclLibrary info;
  Result (*GetVersion)(int*);
  Result (*GetUniqueId)(UniqueId*);
  Result (*CommInitRank)(Comm*, int, UniqueId, int);
  Result (*CommDestroy)(Comm);
  Result (*CommAbort)(Comm);
  Result (*CommGetAsyncError)(Comm, Result*);
  Result (*AllReduce)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
  Result (*ReduceScatter)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
  Result (*AllGather)(const void*, void*, size_t, int, Comm, cudaStream_t);
  const char* (*GetErrorString)(Result);
  const char* (*GetLastError)(Comm) = nullptr;  // NCCL 2.13 and newer: the detail of the last error
};

template <typename F>
bool bind(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

// pip's places for libnccl.so.2 next to PyTorch, under the environments a user runs from.
std::vector<std::string> beside_pytorch() {
  std::vector<std::string> prefixes;
  for (const char* v : {"VIRTUAL_ENV", "CONDA_PREFIX"})
    if (const char* p = std::getenv(v); p && *p) prefixes.push_back(p);
  if (const char* home = std::getenv("HOME"); home && *home) prefixes.push_back(str_cat(home, "/.local"));
  for (const char* p : {"/usr/local", "/usr", "/opt/conda"}) prefixes.push_back(p);
  std::vector<std::string> out;
  for (const std::string& p : prefixes) {
    for (const char* sub : {"nvidia/nccl/lib/libnccl.so.2", "torch/lib/libnccl.so.2"}) {
      const std::string pattern = str_cat(p, "/lib/python3*/*-packages/", sub);
      glob_t g;
      if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; i++) out.push_back(g.gl_pathv[i]);
      globfree(&g);
    }
  }
  return out;
}

Nccl load_nccl() {
  Nccl n{};
  std::vector<std::string> names;
  const char* named = std::getenv("JUSTGRPO_NCCL_LIBRARY");
  if (named && *named) {
    names.push_back(named);
  } else {
    names.push_back("libnccl.so.2");
    for (const std::string& f : beside_pytorch()) names.push_back(f);
  }
  void* lib = nullptr;
  std::string file, tried;
  for (const std::string& name : names) {
    lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      file = name;
      break;
    }
    const char* why = dlerror();
    tried += str_cat(tried.empty() ? "" : "; ", why ? why : name);
  }
  if (!lib) {
    n.info.error = named && *named
        ? str_cat("JUSTGRPO_NCCL_LIBRARY=", named, " cannot be loaded (", tried, ")")
        : str_cat("no NCCL library was found (", tried,
                  "); install NCCL (it comes with PyTorch's CUDA wheels as nvidia-nccl) or set JUSTGRPO_NCCL_LIBRARY "
                  "to the path of libnccl.so.2");
    return n;
  }
  const bool ok = bind(lib, "ncclGetVersion", n.GetVersion) && bind(lib, "ncclGetUniqueId", n.GetUniqueId) &&
                  bind(lib, "ncclCommInitRank", n.CommInitRank) && bind(lib, "ncclCommDestroy", n.CommDestroy) &&
                  bind(lib, "ncclCommAbort", n.CommAbort) && bind(lib, "ncclCommGetAsyncError", n.CommGetAsyncError) &&
                  bind(lib, "ncclAllReduce", n.AllReduce) && bind(lib, "ncclReduceScatter", n.ReduceScatter) &&
                  bind(lib, "ncclAllGather", n.AllGather) && bind(lib, "ncclGetErrorString", n.GetErrorString);
  if (!ok) {
    n.info.error = str_cat(file, " lacks an NCCL function (", dlerror(), "); justgrpo needs NCCL 2.4 or newer");
    return n;
  }
  bind(lib, "ncclGetLastError", n.GetLastError);
  int code = 0;
  if (n.GetVersion(&code) != kSuccess) {
    n.info.error = str_cat(file, ": ncclGetVersion failed");
    return n;
  }
  const int major = code >= 10000 ? code / 10000 : code / 1000;
  const int minor = code >= 10000 ? code % 10000 / 100 : code % 1000 / 100;
  n.info.loaded = true;
  n.info.name = str_cat("NCCL ", major, ".", minor, ".", code % 100, " (", file, ")");
  return n;
}

Nccl& nccl() {
  static Nccl n = load_nccl();
  return n;
}

std::string nccl_error(Result r, Comm comm) {
  Nccl& n = nccl();
  std::string s = str_cat(n.GetErrorString ? n.GetErrorString(r) : "error", " (", r, ")");
  if (comm && n.GetLastError) {
    const char* last = n.GetLastError(comm);
    if (last && *last) s += str_cat(": ", last);
  }
  return s;
}

void print_line(const std::string& s) {
  std::fprintf(stderr, "%s\n", s.c_str());
  std::fflush(stderr);
}

}  // namespace

const NcclLibrary& nccl_library() { return nccl().info; }

NcclGradComm::NcclGradComm(int device, cudaStream_t stream, Communicator* world, double timeout_s)
    : device_(device), stream_(stream), world_(world), timeout_(timeout_s) {
  Nccl& n = nccl();
  JG_CHECK_AS(ErrorKind::UNSUPPORTED, n.info.loaded, "NCCL cannot be used: ", n.info.error);
  if (world_) {
    rank_ = world_->rank();
    size_ = world_->size();
  }
  UniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (rank_ == 0) {
    const Result r = n.GetUniqueId(&id);
    JG_CHECK_AS(ErrorKind::INTERNAL, r == kSuccess, "Rank 0: ncclGetUniqueId failed: ", nccl_error(r, nullptr));
  }
  // Every rank reaches this broadcast before ncclCommInitRank, which (a collective without a
  // deadline of its own) then only waits for ranks that are alive and on their way.
  if (world_) world_->broadcast(&id, sizeof(id), 0, timeout_, "the broadcast of NCCL's unique id");
  DeviceScope scope(device_);
  Comm c = nullptr;
  const Result r = n.CommInitRank(&c, size_, id, rank_);
  JG_CHECK_AS(ErrorKind::INTERNAL, r == kSuccess, "Rank ", rank_, ": ncclCommInitRank (", size_, " ranks, GPU ", device_,
              ") failed: ", nccl_error(r, nullptr));
  comm_ = c;
}

NcclGradComm::~NcclGradComm() {
  // Abort, not destroy: at a step boundary nothing is in flight, so it loses nothing, and unlike
  // ncclCommDestroy (which in some versions waits for the other ranks) it cannot hang a process
  // that is shutting down while its peers are elsewhere.
  if (comm_) nccl().CommAbort(static_cast<Comm>(comm_));
}

void NcclGradComm::usable(const char* what) const {
  JG_CHECK_AS(ErrorKind::INTERNAL, failed_.empty(), "Rank ", rank_, ": cannot run ", what,
              ": the NCCL communicator was aborted after an earlier failure: ", failed_);
}

void NcclGradComm::wait(const char* what) {
  using clock = std::chrono::steady_clock;
  Nccl& n = nccl();
  Comm c = static_cast<Comm>(comm_);
  const auto start = clock::now();
  const auto limit = std::chrono::duration<double>(timeout_);
  for (;;) {
    // The stream says whether the kernels are done; the communicator says whether NCCL met an
    // error (a peer's connection lost) or, for a communicator still in progress, is not done yet.
    Result async = kSuccess;
    const Result q = n.CommGetAsyncError(c, &async);
    if (q != kSuccess || (async != kSuccess && async != kInProgress)) {
      const std::string why = nccl_error(q != kSuccess ? q : async, c);
      n.CommAbort(c);
      comm_ = nullptr;
      failed_ = str_cat(what, " failed: ", why);
      JG_FAIL(ErrorKind::INTERNAL, "Rank ", rank_, ": NCCL reported an error during ", what, " (collective ", seq_,
              "): ", why, "; the NCCL communicator was aborted and the job stops");
    }
    const cudaError_t e = cudaStreamQuery(stream_);
    if (e == cudaSuccess && async == kSuccess) return;
    if (e != cudaSuccess && e != cudaErrorNotReady) cuda_fail(e, "cudaStreamQuery", __FILE__, __LINE__);
    const auto elapsed = clock::now() - start;
    if (elapsed > limit) break;
    // Spin briefly (a healthy collective takes microseconds to milliseconds), then poll at a rate
    // that leaves the CPU to the rest of the process.
    if (elapsed > std::chrono::seconds(1)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    else if (elapsed > std::chrono::microseconds(200)) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  n.CommAbort(c);
  comm_ = nullptr;
  failed_ = str_cat(what, " timed out");
  JG_FAIL(ErrorKind::INTERNAL, "Rank ", rank_, ": ", what, " (NCCL collective ", seq_, ", GPU ", device_, ") timed out after ",
          timeout_, " s: some rank did not take part (dead, hung, or far behind the others); NCCL cannot say which one, "
          "so look for the rank that stopped logging. The NCCL communicator was aborted and the job stops (raise the "
          "time-out with JUSTGRPO_COLLECTIVE_TIMEOUT if ranks are merely slow)");
}

namespace {

// The CUDA-on-CPU tier's test NCCL works on host memory when it is called, while the tier's
// kernels run on CPU threads behind the stream: there the gradients must be final before the call.
// On a GPU the stream orders the collective after the kernels that wrote its input.
void input_ready(cudaStream_t s) {
#ifdef JUSTGRPO_CUDA_ON_CPU
  JG_CUDA_CHECK(cudaStreamSynchronize(s));
#else
  (void)s;
#endif
}

}  // namespace

void NcclGradComm::all_reduce_sum(float* data, int64_t n) {
  const char* what = "the all-reduce of the gradients";
  usable(what);
  DeviceScope scope(device_);
  input_ready(stream_);
  seq_++;
  const Result r = nccl().AllReduce(data, data, static_cast<size_t>(n), kFloat32, kSum, static_cast<Comm>(comm_), stream_);
  JG_CHECK_AS(ErrorKind::INTERNAL, r == kSuccess, "Rank ", rank_, ": ncclAllReduce failed during ", what, ": ",
              nccl_error(r, static_cast<Comm>(comm_)));
  wait(what);
}

void NcclGradComm::reduce_scatter_sum(float* data, int64_t block) {
  const char* what = "the reduce-scatter of the gradients";
  usable(what);
  DeviceScope scope(device_);
  input_ready(stream_);
  seq_++;
  // In place: this rank's block of the input is where its sums go.
  const Result r = nccl().ReduceScatter(data, data + block * rank_, static_cast<size_t>(block), kFloat32, kSum,
                                        static_cast<Comm>(comm_), stream_);
  JG_CHECK_AS(ErrorKind::INTERNAL, r == kSuccess, "Rank ", rank_, ": ncclReduceScatter failed during ", what, ": ",
              nccl_error(r, static_cast<Comm>(comm_)));
  wait(what);
}

void NcclGradComm::all_gather(void* data, int64_t block_bytes) {
  const char* what = "the all-gather of the updated weights";
  usable(what);
  DeviceScope scope(device_);
  input_ready(stream_);
  seq_++;
  char* base = static_cast<char*>(data);
  // In place: this rank's own block is the input.
  const Result r = nccl().AllGather(base + block_bytes * rank_, base, static_cast<size_t>(block_bytes), kUint8,
                                    static_cast<Comm>(comm_), stream_);
  JG_CHECK_AS(ErrorKind::INTERNAL, r == kSuccess, "Rank ", rank_, ": ncclAllGather failed during ", what, ": ",
              nccl_error(r, static_cast<Comm>(comm_)));
  wait(what);
}

void NcclGradComm::all_reduce_host(double* data, int64_t n) {
  if (world_) world_->all_reduce_sum(data, n, timeout_, "the sum of the step's statistics");
}

std::unique_ptr<GradComm> make_grad_comm(int device, cudaStream_t stream, Communicator& world, double timeout_s) {
  const char* env = std::getenv("JUSTGRPO_NCCL");
  const std::string mode = env ? env : "";
  JG_CHECK(mode.empty() || mode == "0" || mode == "1",
           "Expected 0 (MPI through host memory) or 1 (NCCL, required) for `JUSTGRPO_NCCL` but received '", mode, "'");
  const bool lead = world.rank() == 0;
  if (mode == "0") {
    if (lead) print_line(str_cat("Data parallelism: gradients summed over ", world.library(), " through host memory (JUSTGRPO_NCCL=0)"));
    return std::make_unique<MpiGradComm>(world, timeout_s);
  }
  // Every rank must take the same path: which ranks cannot load NCCL is settled with one all-reduce.
  const NcclLibrary& lib = nccl_library();
  std::vector<double> missing(world.size(), 0.0);
  missing[world.rank()] = lib.loaded ? 0.0 : 1.0;
  world.all_reduce_sum(missing.data(), world.size(), timeout_s, "the check that every rank can load NCCL");
  std::vector<int> without;
  for (int r = 0; r < world.size(); r++)
    if (missing[r] != 0) without.push_back(r);
  if (!without.empty()) {
    std::string ranks;
    for (size_t i = 0; i < without.size(); i++) ranks += str_cat(i ? ", " : "", without[i]);
    const std::string why = lib.loaded
        ? str_cat(without.size() == 1 ? "rank " : "ranks ", ranks, " cannot load NCCL (rank ", world.rank(), " has ",
                  lib.name, ")")
        : str_cat("rank ", world.rank(), ": ", lib.error);
    JG_CHECK_AS(ErrorKind::UNSUPPORTED, mode != "1", "NCCL was asked for (JUSTGRPO_NCCL=1) but ", why);
    if (lead)
      print_line(str_cat("Data parallelism: NCCL is not used (", why, "); gradients go through host memory over ",
                         world.library(), " (JUSTGRPO_NCCL=0 says this is intended)"));
    return std::make_unique<MpiGradComm>(world, timeout_s);
  }
  auto comm = std::make_unique<NcclGradComm>(device, stream, &world, timeout_s);
  if (lead)
    print_line(str_cat("Data parallelism: gradients summed on the GPUs by ", lib.name, " (", world.size(),
                       " ranks, bootstrapped over ", world.library(), ")"));
  return comm;
}

std::unique_ptr<GradComm> Model::make_grad_comm(Communicator& world, double timeout_s) {
  return cuda::make_grad_comm(device_, stream_, world, timeout_s);
}

NcclProbe nccl_probe(int device, Communicator* world, const std::vector<int64_t>& sizes, int iters, double timeout_s) {
  JG_CHECK(iters >= 1, "Expected iters >= 1 but received ", iters);
  DeviceScope scope(device);
  cudaStream_t stream = nullptr;
  JG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  struct StreamGuard {
    cudaStream_t s;
    ~StreamGuard() {
      cudaStreamSynchronize(s);
      cudaStreamDestroy(s);
    }
  } guard{stream};
  NcclProbe out;
  NcclGradComm comm(device, stream, world, timeout_s);
  out.library = comm.name();
  out.rank = comm.rank();
  out.ranks = comm.size();
  const int n = comm.size(), me = comm.rank();
  const int64_t block = 1000;  // small values, so every sum is exact in fp32
  DeviceBuffer buf;
  float* d = buf.reserve_as<float>(n * block, "the NCCL probe");
  std::vector<float> h(n * block);
  auto upload = [&] {
    JG_CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  };
  auto download = [&] {
    JG_CUDA_CHECK(cudaStreamSynchronize(stream));
    JG_CUDA_CHECK(cudaMemcpy(h.data(), d, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
  };
  auto expect = [&](const char* what, int64_t i, float got, float want) {
    if (got != want && out.failures.size() < 8)
      out.failures.push_back(str_cat(what, ": element ", i, " is ", got, ", expected ", want));
  };
  // All-reduce: rank r holds r + 1 + i % 7; the sum is n (n + 1) / 2 + n (i % 7).
  for (int64_t i = 0; i < n * block; i++) h[i] = static_cast<float>(me + 1 + i % 7);
  upload();
  comm.all_reduce_sum(d, n * block);
  download();
  for (int64_t i = 0; i < n * block; i++) expect("all-reduce", i, h[i], static_cast<float>(n * (n + 1) / 2 + n * (i % 7)));
  // Reduce-scatter: rank r holds (r + 1) (i % 5 + 1) everywhere; block `me` then holds the sums.
  for (int64_t i = 0; i < n * block; i++) h[i] = static_cast<float>((me + 1) * (i % 5 + 1));
  upload();
  comm.reduce_scatter_sum(d, block);
  download();
  for (int64_t i = me * block; i < (me + 1) * block; i++)
    expect("reduce-scatter", i, h[i], static_cast<float>(n * (n + 1) / 2 * (i % 5 + 1)));
  // All-gather: rank r fills its own block with 1000 r + i % 13, the rest with -1.
  for (int64_t i = 0; i < n * block; i++) h[i] = i / block == me ? static_cast<float>(1000 * me + i % 13) : -1.0f;
  upload();
  comm.all_gather(d, block * static_cast<int64_t>(sizeof(float)));
  download();
  for (int64_t i = 0; i < n * block; i++) expect("all-gather", i, h[i], static_cast<float>(1000 * (i / block) + i % 13));

  int64_t most = 0;
  for (int64_t s : sizes) {
    JG_CHECK(s >= 4 && s % 4 == 0, "Expected probe sizes that are multiples of 4 bytes but received ", s);
    most = std::max(most, s);
  }
  if (most == 0) return out;
  float* big = buf.reserve_as<float>(most / 4, "the NCCL bandwidth probe");
  JG_CUDA_CHECK(cudaMemsetAsync(big, 0, most, stream));
  for (int64_t bytes : sizes) {
    comm.all_reduce_sum(big, bytes / 4);  // warm-up: NCCL sets up its channels on first use
    if (world) world->barrier(timeout_s, "the NCCL probe's barrier");
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; i++) comm.all_reduce_sum(big, bytes / 4);
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    if (world) world->all_reduce_max(&sec, 1, timeout_s, "the NCCL probe's timings");
    const double algbw = static_cast<double>(bytes) / sec / 1e9;
    out.timings.push_back({bytes, sec, algbw, n > 1 ? algbw * 2.0 * (n - 1) / n : 0.0});
  }
  return out;
}

}  // namespace jg::cuda
