// MPI found at run time, so the prebuilt binary keeps no MPI dependency.
//
// Why dlopen and not an optional module built with mpicc: a module compiled from source needs a
// compiler and the MPI headers on every machine that installs the package (and a rebuild whenever
// the cluster's MPI changes), while the handful of MPI calls data parallelism needs (init, rank,
// size, four non-blocking collectives, test, abort) can be called through function pointers looked
// up with dlsym in whichever libmpi the launcher put on the machine. Two ABIs cover the MPI
// libraries in use:
//  - Open MPI (libmpi.so.40): handles are pointers, the addresses of exported globals
//    (MPI_COMM_WORLD is &ompi_mpi_comm_world, MPI_FLOAT &ompi_mpi_float, MPI_SUM &ompi_mpi_op_sum);
//    MPI_Request is a pointer; MPI_IN_PLACE is (void*)1.
//  - MPICH and its ABI family (libmpi.so.12: MPICH, Intel MPI, MVAPICH, Cray MPICH): handles are
//    32-bit integer constants (MPI_COMM_WORLD 0x44000000, MPI_FLOAT 0x4c00040a, MPI_SUM
//    0x58000003); MPI_Request is an int; MPI_IN_PLACE is (void*)-1.
// Handles travel here as 64-bit integers. Passing one where the callee takes an int is sound on the
// 64-bit ABIs we build for (an int argument reads the low half of its register or stack slot), and
// a request written as an int into zeroed 64-bit storage reads back as the same value on a
// little-endian machine. MPI_Status differs in size between the two, so it always gets a buffer
// larger than either.
//
// Time-outs: MPI's blocking collectives wait forever for a rank that died or hangs. Every collective
// here is the non-blocking MPI_I* form polled with MPI_Test until a deadline; on time-out each rank
// offers its collective count to every other rank and waits a moment for theirs: ranks that do not
// answer are named as the ones that never arrived.
#include "comm.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "check.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "comm.cpp reads MPICH's 32-bit handles from 64-bit storage, which assumes a little-endian machine"
#endif

namespace jg {

namespace {

using H = uint64_t;  // any MPI handle of either ABI

constexpr int kThreadSerialized = 2;  // MPI_THREAD_SERIALIZED, the same value in both ABIs
constexpr int kDiagTag = 0x6a67;      // the time-out diagnosis's messages

struct Mpi {
  std::string error;    // why no MPI could be loaded (empty when one was)
  std::string file;     // the library loaded
  bool open_mpi = false;
  H comm_world = 0, t_float = 0, t_double = 0, t_byte = 0, op_sum = 0, op_max = 0, errors_return = 0;
  void* in_place = nullptr;

  int (*Initialized)(int*);
  int (*Finalized)(int*);
  int (*Init_thread)(int*, char***, int, int*);
  int (*Finalize)();
  int (*Abort)(H, int);
  int (*Comm_rank)(H, int*);
  int (*Comm_size)(H, int*);
  int (*Comm_set_errhandler)(H, H);
  int (*Get_library_version)(char*, int*);
  int (*Error_string)(int, char*, int*);
  int (*Iallreduce)(const void*, void*, int, H, H, H, H*);
  int (*Ibcast)(void*, int, H, int, H, H*);
  int (*Ibarrier)(H, H*);
  int (*Ireduce_scatter_block)(const void*, void*, int, H, H, H, H*);
  int (*Iallgather)(const void*, int, H, void*, int, H, H, H*);
  int (*Isend)(const void*, int, H, int, int, H, H*);
  int (*Irecv)(void*, int, H, int, int, H, H*);
  int (*Test)(H*, int*, void*);
};

template <typename F>
bool bind(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

// The library named by JUSTGRPO_MPI_LIBRARY (and no other), else each soname in turn, the one the
// launcher's environment points at first. RTLD_GLOBAL: Open MPI loads its own plugins, which look up
// libmpi's symbols in the global scope.
Mpi load_mpi() {
  Mpi m;
  std::vector<std::string> names;
  if (const char* lib = std::getenv("JUSTGRPO_MPI_LIBRARY"); lib && *lib) names.push_back(lib);  // that one only
  else if (std::getenv("OMPI_COMM_WORLD_SIZE")) names.insert(names.end(), {"libmpi.so.40", "libmpi.so.12", "libmpich.so.12", "libmpi.so"});
  else names.insert(names.end(), {"libmpi.so.12", "libmpich.so.12", "libmpi.so.40", "libmpi.so"});  // Debian: libmpich.so.12
  void* lib = nullptr;
  std::string tried;
  for (const std::string& n : names) {
    lib = dlopen(n.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (lib) {
      m.file = n;
      break;
    }
    const char* why = dlerror();
    tried += str_cat(tried.empty() ? "" : "; ", why ? why : n);
  }
  if (!lib) {
    m.error = str_cat(
        "No MPI library could be loaded (", tried,
        "). Install Open MPI or MPICH (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev), or set "
        "JUSTGRPO_MPI_LIBRARY to the path of libmpi.so");
    return m;
  }
  bool ok = bind(lib, "MPI_Initialized", m.Initialized) && bind(lib, "MPI_Finalized", m.Finalized) &&
            bind(lib, "MPI_Init_thread", m.Init_thread) && bind(lib, "MPI_Finalize", m.Finalize) &&
            bind(lib, "MPI_Abort", m.Abort) && bind(lib, "MPI_Comm_rank", m.Comm_rank) &&
            bind(lib, "MPI_Comm_size", m.Comm_size) && bind(lib, "MPI_Comm_set_errhandler", m.Comm_set_errhandler) &&
            bind(lib, "MPI_Get_library_version", m.Get_library_version) &&
            bind(lib, "MPI_Error_string", m.Error_string) && bind(lib, "MPI_Iallreduce", m.Iallreduce) &&
            bind(lib, "MPI_Ibcast", m.Ibcast) && bind(lib, "MPI_Ibarrier", m.Ibarrier) &&
            bind(lib, "MPI_Ireduce_scatter_block", m.Ireduce_scatter_block) && bind(lib, "MPI_Iallgather", m.Iallgather) &&
            bind(lib, "MPI_Isend", m.Isend) && bind(lib, "MPI_Irecv", m.Irecv) && bind(lib, "MPI_Test", m.Test);
  if (!ok) {
    m.error = str_cat(m.file, " lacks an MPI-3 function (", dlerror(), "); justgrpo needs MPI 3.0 or newer");
    return m;
  }
  if (void* world = dlsym(lib, "ompi_mpi_comm_world")) {
    auto addr = [&](const char* name) {
      void* p = dlsym(lib, name);
      if (!p) m.error = str_cat(m.file, " looks like Open MPI but lacks ", name);
      return reinterpret_cast<H>(p);
    };
    m.open_mpi = true;
    m.comm_world = reinterpret_cast<H>(world);
    m.t_float = addr("ompi_mpi_float");
    m.t_double = addr("ompi_mpi_double");
    m.t_byte = addr("ompi_mpi_byte");
    m.op_sum = addr("ompi_mpi_op_sum");
    m.op_max = addr("ompi_mpi_op_max");
    m.errors_return = addr("ompi_mpi_errors_return");
    m.in_place = reinterpret_cast<void*>(1);
  } else {
    m.comm_world = 0x44000000;
    m.t_float = 0x4c00040a;
    m.t_double = 0x4c00080b;
    m.t_byte = 0x4c00010d;
    m.op_sum = 0x58000003;
    m.op_max = 0x58000001;
    m.errors_return = 0x54000001;
    m.in_place = reinterpret_cast<void*>(-1);
  }
  return m;
}

Mpi& mpi() {
  static Mpi m = load_mpi();
  return m;
}

std::mutex world_mu;
Communicator* world_ptr = nullptr;

// Ranks in a list, "rank 1" or "ranks 1, 3".
std::string ranks_text(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); i++) s += str_cat(i ? ", " : "", ranks[i]);
  return s;
}

}  // namespace

Communicator& Communicator::world() {
  std::lock_guard<std::mutex> lock(world_mu);
  if (!world_ptr) world_ptr = new Communicator();  // lives as long as the process: MPI can start once
  return *world_ptr;
}

bool Communicator::initialised() {
  std::lock_guard<std::mutex> lock(world_mu);
  return world_ptr != nullptr;
}

Communicator::Communicator() {
  Mpi& m = mpi();
  if (!m.error.empty()) JG_FAIL(ErrorKind::UNSUPPORTED, m.error);
  int done = 0;
  check(m.Finalized(&done), "MPI_Finalized", "start-up");
  if (done) JG_FAIL(ErrorKind::UNSUPPORTED, "MPI was finalized in this process; it cannot start again");
  int init = 0, provided = 0;
  check(m.Initialized(&init), "MPI_Initialized", "start-up");
  if (!init) check(m.Init_thread(nullptr, nullptr, kThreadSerialized, &provided), "MPI_Init_thread", "start-up");
  else provided = kThreadSerialized;
  // Collectives run on the libuv pool, a different thread each time, one at a time.
  if (provided < kThreadSerialized)
    JG_FAIL(ErrorKind::UNSUPPORTED, m.file, " offers thread level ", provided,
            "; justgrpo calls MPI from worker threads one at a time and needs MPI_THREAD_SERIALIZED");
  // Errors come back as return codes (and then as a message naming the call), not as an abort
  // inside the library.
  check(m.Comm_set_errhandler(m.comm_world, m.errors_return), "MPI_Comm_set_errhandler", "start-up");
  check(m.Comm_rank(m.comm_world, &rank_), "MPI_Comm_rank", "start-up");
  check(m.Comm_size(m.comm_world, &size_), "MPI_Comm_size", "start-up");
  char version[8192] = {0};
  int len = 0;
  if (m.Get_library_version(version, &len) == 0) {
    std::string v(version, std::min<int>(std::max(len, 0), static_cast<int>(sizeof(version))));
    v = v.substr(0, v.find_first_of(",\n"));
    for (char& ch : v) if (ch == '\t') ch = ' ';  // MPICH: "MPICH Version:\t4.0.2"
    library_ = str_cat(v, " (", m.file, ")");
  } else {
    library_ = m.file;
  }
}

void Communicator::check(int rc, const char* call, const std::string& what) {
  if (rc == 0) return;
  char text[1024] = {0};
  int len = 0;
  std::string why = mpi().Error_string && mpi().Error_string(rc, text, &len) == 0 ? std::string(text, len) : str_cat("error ", rc);
  JG_FAIL(ErrorKind::INTERNAL, "Rank ", rank_, ": ", call, " failed during ", what, ": ", why);
}

void Communicator::wait(uint64_t& req, double timeout_s, const std::string& what) {
  using clock = std::chrono::steady_clock;
  Mpi& m = mpi();
  const auto start = clock::now();
  const auto limit = std::chrono::duration<double>(timeout_s);
  alignas(16) unsigned char status[64];
  for (;;) {
    int flag = 0;
    check(m.Test(&req, &flag, status), "MPI_Test", what);
    if (flag) return;
    const auto elapsed = clock::now() - start;
    if (elapsed > limit) break;
    // Progress happens inside MPI_Test: spin briefly (a collective between healthy ranks usually
    // completes in microseconds), then poll at a rate that leaves the cores to the other ranks.
    if (elapsed > std::chrono::seconds(1)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    else if (elapsed > std::chrono::microseconds(200)) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  // Abandoned: buffers the collective still owns may be written later, so the job must end
  // (abort()); the diagnosis's own buffers are static for the same reason.
  failed_ = str_cat(what, " timed out");
  static std::vector<int64_t> mine, theirs;
  static std::vector<H> reqs;
  mine.assign(size_, seq_);
  theirs.assign(size_, -1);
  reqs.assign(2 * size_, 0);
  for (int r = 0; r < size_; r++) {
    if (r == rank_) continue;
    check(m.Isend(&mine[r], 8, m.t_byte, r, kDiagTag, m.comm_world, &reqs[2 * r]), "MPI_Isend", "the time-out diagnosis");
    check(m.Irecv(&theirs[r], 8, m.t_byte, r, kDiagTag, m.comm_world, &reqs[2 * r + 1]), "MPI_Irecv", "the time-out diagnosis");
  }
  // Healthy ranks reach the same collective within about the time-out of one another.
  const auto grace = std::chrono::duration<double>(std::clamp(timeout_s, 1.0, 10.0));
  const auto diag_start = clock::now();
  std::vector<bool> answered(size_, false);
  answered[rank_] = true;
  while (clock::now() - diag_start < grace) {
    bool all = true;
    for (int r = 0; r < size_; r++) {
      if (answered[r]) continue;
      int flag = 0;
      if (m.Test(&reqs[2 * r + 1], &flag, status) == 0 && flag) answered[r] = true;
      else all = false;
    }
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::vector<int> silent, elsewhere;
  for (int r = 0; r < size_; r++) {
    if (!answered[r]) silent.push_back(r);
    else if (r != rank_ && theirs[r] != seq_) elsewhere.push_back(r);
  }
  std::string msg = str_cat("Rank ", rank_, ": ", what, " (collective ", seq_, ") timed out after ", timeout_s, " s");
  if (!silent.empty())
    msg += str_cat(": ", ranks_text(silent), " did not answer (dead, hung, or far behind the others)");
  if (!elsewhere.empty()) msg += str_cat("; ", ranks_text(elsewhere), " answered from another collective (the ranks disagree on the sequence of collectives)");
  if (silent.empty() && elsewhere.empty()) msg += ": every rank answered, so the collective itself is stuck";
  msg += "; the job stops (raise the time-out with JUSTGRPO_COLLECTIVE_TIMEOUT if ranks are merely slow)";
  failed_ = msg;
  JG_FAIL(ErrorKind::INTERNAL, msg);
}

void Communicator::usable() {
  if (!failed_.empty()) JG_FAIL(ErrorKind::INTERNAL, "The communicator is unusable after an earlier failure: ", failed_);
  if (finalized_) JG_FAIL(ErrorKind::INTERNAL, "The communicator was finalized");
}

void Communicator::reduce(void* data, int64_t n, Type type, Op op, double timeout_s, const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  usable();
  Mpi& m = mpi();
  const H t = type == Type::FLOAT ? m.t_float : m.t_double;
  const size_t elem = type == Type::FLOAT ? 4 : 8;
  // MPI counts are ints: a gradient buffer of billions of elements goes in chunks.
  constexpr int64_t kChunk = int64_t{1} << 30;
  for (int64_t off = 0; off < n || (n == 0 && off == 0); off += kChunk) {
    const int count = static_cast<int>(std::min(kChunk, n - off));
    H req = 0;
    seq_++;
    check(m.Iallreduce(m.in_place, static_cast<char*>(data) + off * elem, count, t, op == Op::SUM ? m.op_sum : m.op_max,
                       m.comm_world, &req),
          "MPI_Iallreduce", what);
    wait(req, timeout_s, what);
    if (n == 0) break;
  }
}

void Communicator::all_reduce_sum(float* data, int64_t n, double timeout_s, const std::string& what) {
  reduce(data, n, Type::FLOAT, Op::SUM, timeout_s, what);
}

void Communicator::all_reduce_sum(double* data, int64_t n, double timeout_s, const std::string& what) {
  reduce(data, n, Type::DOUBLE, Op::SUM, timeout_s, what);
}

void Communicator::all_reduce_max(double* data, int64_t n, double timeout_s, const std::string& what) {
  reduce(data, n, Type::DOUBLE, Op::MAX, timeout_s, what);
}

// MPI counts are ints, and a block cannot be split across calls without a copy: blocks up to
// 2^31 - 1 elements (8 GB of fp32 per rank) go in one call.
void Communicator::reduce_scatter_sum(float* data, int64_t block, double timeout_s, const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  usable();
  JG_CHECK_AS(ErrorKind::UNSUPPORTED, block >= 0 && block <= INT_MAX, what, ": a block of ", block,
              " elements is more than one MPI call takes (2^31 - 1)");
  Mpi& m = mpi();
  H req = 0;
  seq_++;
  // In place, MPI reads every block from the buffer and writes the result at its start.
  check(m.Ireduce_scatter_block(m.in_place, data, static_cast<int>(block), m.t_float, m.op_sum, m.comm_world, &req),
        "MPI_Ireduce_scatter_block", what);
  wait(req, timeout_s, what);
  if (rank_ != 0 && block > 0)
    std::memmove(data + block * rank_, data, static_cast<size_t>(block) * sizeof(float));
}

void Communicator::all_gather(void* data, int64_t block_bytes, double timeout_s, const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  usable();
  JG_CHECK(block_bytes % 4 == 0, what, ": expected a block of a multiple of 4 bytes but received ", block_bytes);
  const int64_t count = block_bytes / 4;  // counted in 4-byte units, so a block can reach 8 GB
  JG_CHECK_AS(ErrorKind::UNSUPPORTED, count <= INT_MAX, what, ": a block of ", block_bytes,
              " bytes is more than one MPI call takes (8 GB)");
  Mpi& m = mpi();
  H req = 0;
  seq_++;
  check(m.Iallgather(m.in_place, 0, m.t_float, data, static_cast<int>(count), m.t_float, m.comm_world, &req),
        "MPI_Iallgather", what);
  wait(req, timeout_s, what);
}

void Communicator::broadcast(void* data, int64_t bytes, int root, double timeout_s, const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  usable();
  JG_CHECK(root >= 0 && root < size_, "Expected a rank in [0, ", size_, ") for `root` but received ", root);
  Mpi& m = mpi();
  constexpr int64_t kChunk = int64_t{1} << 30;
  for (int64_t off = 0; off < bytes || (bytes == 0 && off == 0); off += kChunk) {
    H req = 0;
    seq_++;
    check(m.Ibcast(static_cast<char*>(data) + off, static_cast<int>(std::min(kChunk, bytes - off)), m.t_byte, root,
                   m.comm_world, &req),
          "MPI_Ibcast", what);
    wait(req, timeout_s, what);
    if (bytes == 0) break;
  }
}

void Communicator::barrier(double timeout_s, const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  usable();
  Mpi& m = mpi();
  H req = 0;
  seq_++;
  check(m.Ibarrier(m.comm_world, &req), "MPI_Ibarrier", what);
  wait(req, timeout_s, what);
}

std::unique_ptr<GradComm> Backend::make_grad_comm(Communicator& world, double timeout_s) {
  return std::make_unique<MpiGradComm>(world, timeout_s);
}

void Communicator::abort(int code) {
  // No lock: abort() must work while a worker thread is stuck polling a collective.
  mpi().Abort(mpi().comm_world, code);
  std::_Exit(code);
}

void Communicator::finalize() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finalized_) return;
  finalized_ = true;
  mpi().Finalize();
}

}  // namespace jg
