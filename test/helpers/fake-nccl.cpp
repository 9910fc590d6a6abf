// A stand-in for libnccl.so.2, for the CUDA-on-CPU tier's tests only (test/gpu/nccl.test.ts builds
// it with mpicxx -shared; it is never shipped). The tier's device memory is host memory, so NCCL's
// collectives can be played by MPI on the same pointers: the engine's NCCL path (native/cuda/nccl.cpp:
// loading, the ABI it declares, the unique id's bootstrap, in-place calls, the wait and its
// time-out) runs unchanged against it.
//
// What it holds to, as NCCL does: the ABI (128-byte unique id passed by value, int enums, the
// version code major*10000 + minor*100 + patch), the in-place forms (ncclReduceScatter with recvbuff
// == sendbuff + rank * recvcount, ncclAllGather with sendbuff == recvbuff + rank * sendcount; other
// overlaps are refused), every rank passing the same unique id (checked at ncclCommInitRank), and
// collectives that complete later: each is a non-blocking MPI call, finished by
// ncclCommGetAsyncError, which answers ncclInProgress until then. One rank alone needs no MPI.
//
// Test hooks (environment): JUSTGRPO_FAKE_NCCL_SKIP_RANK=r: rank r accepts collectives but never
// takes part (a hung rank, for the time-out test); JUSTGRPO_FAKE_NCCL_LOG=prefix: each rank appends
// one line per call to prefix.<rank> ("init 2", "allreduce 4352 7", ...).
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

constexpr int kSuccess = 0, kInternalError = 3, kInvalidArgument = 4, kInvalidUsage = 5, kInProgress = 7;

struct Pending {
  MPI_Request req = MPI_REQUEST_NULL;
  std::vector<char> in, out;  // copies the call owns while MPI works
  void* dst = nullptr;        // where `out` goes when it completes (reduce-scatter)
};

struct Comm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, nranks = 1;
  bool skip = false;
  std::vector<Pending*> pending;
};

std::string last_error;

int fail(int code, const std::string& why) {
  last_error = why;
  return code;
}

void log_call(const Comm* c, const std::string& line) {
  const char* prefix = std::getenv("JUSTGRPO_FAKE_NCCL_LOG");
  if (!prefix || !*prefix) return;
  const std::string file = std::string(prefix) + "." + std::to_string(c->rank);
  if (FILE* f = std::fopen(file.c_str(), "a")) {
    std::fprintf(f, "%s\n", line.c_str());
    std::fclose(f);
  }
}

bool mpi_type(int dt, MPI_Datatype* t, size_t* size) {
  switch (dt) {
    case 0: *t = MPI_SIGNED_CHAR; *size = 1; return true;   // ncclInt8
    case 1: *t = MPI_UNSIGNED_CHAR; *size = 1; return true; // ncclUint8
    case 7: *t = MPI_FLOAT; *size = 4; return true;         // ncclFloat32
    case 8: *t = MPI_DOUBLE; *size = 8; return true;        // ncclFloat64
    default: return false;
  }
}

// NCCL's rule for the buffers of a collective whose input (n_in bytes) and output (n_out bytes)
// may overlap only in the one in-place arrangement.
bool overlap_ok(const void* send, size_t n_in, const void* recv, size_t n_out, const void* in_place_send) {
  const char* s = static_cast<const char*>(send);
  const char* r = static_cast<const char*>(recv);
  if (send == in_place_send) return true;
  return s + n_in <= r || r + n_out <= s;
}

// Finishes what MPI has finished; true when nothing is pending.
bool progress(Comm* c) {
  for (size_t i = 0; i < c->pending.size();) {
    Pending* p = c->pending[i];
    int done = 1;
    if (p->req != MPI_REQUEST_NULL) MPI_Test(&p->req, &done, MPI_STATUS_IGNORE);
    if (!done) {
      i++;
      continue;
    }
    if (p->dst) std::memcpy(p->dst, p->out.data(), p->out.size());
    delete p;
    c->pending.erase(c->pending.begin() + i);
  }
  return c->pending.empty();
}

int checked_comm(Comm* c, size_t count) {
  if (!c) return fail(kInvalidArgument, "null communicator");
  if (count > static_cast<size_t>(INT32_MAX)) return fail(kInvalidArgument, "the test NCCL takes at most 2^31 - 1 elements");
  return kSuccess;
}

}  // namespace

extern "C" {

struct ncclUniqueId {
  char internal[128];
};

int ncclGetVersion(int* version) {
  *version = 29900;  // "2.99.0": no real NCCL has it, so logs show the stand-in
  return kSuccess;
}

const char* ncclGetErrorString(int r) {
  switch (r) {
    case kSuccess: return "no error";
    case kInternalError: return "internal error (test NCCL)";
    case kInvalidArgument: return "invalid argument (test NCCL)";
    case kInvalidUsage: return "invalid usage (test NCCL)";
    case kInProgress: return "operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(void*) { return last_error.c_str(); }

int ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof(*id));
  std::snprintf(id->internal, sizeof(id->internal), "test-nccl %ld %ld", static_cast<long>(std::time(nullptr)),
                static_cast<long>(std::clock()) ^ static_cast<long>(reinterpret_cast<intptr_t>(id)));
  return kSuccess;
}

int ncclCommInitRank(Comm** out, int nranks, ncclUniqueId id, int rank) {
  if (nranks < 1 || rank < 0 || rank >= nranks) return fail(kInvalidArgument, "bad rank or rank count");
  if (id.internal[0] == 0) return fail(kInvalidArgument, "an empty unique id (was it broadcast from rank 0?)");
  auto* c = new Comm;
  c->rank = rank;
  c->nranks = nranks;
  const char* skip = std::getenv("JUSTGRPO_FAKE_NCCL_SKIP_RANK");
  c->skip = skip && *skip && std::atoi(skip) == rank;
  if (nranks > 1) {
    int init = 0, size = 0, me = 0;
    MPI_Initialized(&init);
    if (!init) {
      delete c;
      return fail(kInvalidUsage, "the test NCCL needs MPI started by its caller for more than one rank");
    }
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (size != nranks || me != rank) {
      delete c;
      return fail(kInvalidArgument, "rank and rank count differ from MPI's world");
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
    // Every rank must hold rank 0's id: equal bytewise minimum and maximum.
    unsigned char lo[128], hi[128];
    MPI_Allreduce(id.internal, lo, 128, MPI_UNSIGNED_CHAR, MPI_MIN, c->mpi);
    MPI_Allreduce(id.internal, hi, 128, MPI_UNSIGNED_CHAR, MPI_MAX, c->mpi);
    if (std::memcmp(lo, hi, 128) != 0) {
      MPI_Comm_free(&c->mpi);
      delete c;
      return fail(kInvalidArgument, "the ranks passed different unique ids");
    }
  }
  log_call(c, "init " + std::to_string(nranks));
  *out = c;
  return kSuccess;
}

int ncclAllReduce(const void* send, void* recv, size_t count, int dt, int op, Comm* c, void* /*stream*/) {
  MPI_Datatype t;
  size_t es = 0;
  if (int e = checked_comm(c, count)) return e;
  if (!mpi_type(dt, &t, &es) || op != 0) return fail(kInvalidArgument, "the test NCCL sums int8, uint8, float and double only");
  if (!overlap_ok(send, count * es, recv, count * es, recv)) return fail(kInvalidArgument, "overlapping buffers");
  log_call(c, "allreduce " + std::to_string(count) + " " + std::to_string(dt));
  if (send != recv) std::memcpy(recv, send, count * es);
  if (c->nranks == 1 || c->skip) return kSuccess;
  auto* p = new Pending;
  MPI_Iallreduce(MPI_IN_PLACE, recv, static_cast<int>(count), t, MPI_SUM, c->mpi, &p->req);
  c->pending.push_back(p);
  return kSuccess;
}

int ncclReduceScatter(const void* send, void* recv, size_t recvcount, int dt, int op, Comm* c, void* /*stream*/) {
  MPI_Datatype t;
  size_t es = 0;
  if (int e = checked_comm(c, recvcount)) return e;
  if (!mpi_type(dt, &t, &es) || op != 0) return fail(kInvalidArgument, "the test NCCL sums int8, uint8, float and double only");
  const size_t block = recvcount * es;
  if (!overlap_ok(send, c->nranks * block, recv, block, static_cast<char*>(recv) - c->rank * block))
    return fail(kInvalidArgument, "overlapping buffers that are not the in-place form (recvbuff = sendbuff + rank * recvcount)");
  log_call(c, "reducescatter " + std::to_string(recvcount) + " " + std::to_string(dt));
  auto* p = new Pending;
  p->in.assign(static_cast<const char*>(send), static_cast<const char*>(send) + c->nranks * block);
  p->out.assign(p->in.begin() + c->rank * block, p->in.begin() + (c->rank + 1) * block);
  p->dst = recv;
  if (c->nranks > 1 && !c->skip)
    MPI_Ireduce_scatter_block(p->in.data(), p->out.data(), static_cast<int>(recvcount), t, MPI_SUM, c->mpi, &p->req);
  c->pending.push_back(p);
  return kSuccess;
}

int ncclAllGather(const void* send, void* recv, size_t sendcount, int dt, Comm* c, void* /*stream*/) {
  MPI_Datatype t;
  size_t es = 0;
  if (int e = checked_comm(c, sendcount)) return e;
  if (!mpi_type(dt, &t, &es)) return fail(kInvalidArgument, "the test NCCL gathers int8, uint8, float and double only");
  const size_t block = sendcount * es;
  if (!overlap_ok(send, block, recv, c->nranks * block, static_cast<char*>(recv) + c->rank * block))
    return fail(kInvalidArgument, "overlapping buffers that are not the in-place form (sendbuff = recvbuff + rank * sendcount)");
  log_call(c, "allgather " + std::to_string(sendcount) + " " + std::to_string(dt));
  auto* p = new Pending;
  p->in.assign(static_cast<const char*>(send), static_cast<const char*>(send) + block);
  if (c->nranks == 1 || c->skip) {
    std::memcpy(static_cast<char*>(recv) + c->rank * block, p->in.data(), block);
  } else {
    MPI_Iallgather(p->in.data(), static_cast<int>(sendcount), t, recv, static_cast<int>(sendcount), t, c->mpi, &p->req);
  }
  c->pending.push_back(p);
  return kSuccess;
}

int ncclCommGetAsyncError(Comm* c, int* result) {
  if (!c) return fail(kInvalidArgument, "null communicator");
  *result = progress(c) ? kSuccess : kInProgress;
  return kSuccess;
}

// MPI cannot cancel a collective: an abandoned one keeps its buffers (leaked) and its
// communicator, and the job is expected to end.
static int release(Comm* c) {
  if (!c) return kSuccess;
  log_call(c, "release");
  if (!progress(c)) return kSuccess;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (c->mpi != MPI_COMM_NULL && !finalized) MPI_Comm_free(&c->mpi);
  delete c;
  return kSuccess;
}

int ncclCommDestroy(Comm* c) { return release(c); }
int ncclCommAbort(Comm* c) { return release(c); }

}  // extern "C"
