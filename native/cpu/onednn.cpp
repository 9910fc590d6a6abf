#include "onednn.h"

#include "../common/check.h"

// Built without oneDNN's header (no libdnnl-dev where it was compiled): bf16 says so and fp32 is
// unchanged.
#ifndef JUSTGRPO_ONEDNN

namespace jg::cpu {

namespace {
const char* kNoOnednn =
    "This build of justgrpo has no bf16 products on the CPU: it was compiled without oneDNN's header "
    "(Debian/Ubuntu: apt-get install libdnnl-dev, then rebuild)";
}

void onednn_require() { JG_FAIL(ErrorKind::UNSUPPORTED, kNoOnednn); }
std::string onednn_describe() { return kNoOnednn; }
void to_bf16(uint16_t*, const float*, int64_t) { onednn_require(); }
void to_bf16_transposed(uint16_t*, const float*, int64_t, int64_t) { onednn_require(); }
void gemm_bf16(bool, int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t, float, float*,
               int64_t) {
  onednn_require();
}

}  // namespace jg::cpu

#else

#include <cblas.h>
#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "op_timer.h"
#include "threadpool.h"

namespace jg::cpu {

namespace {

// The oneDNN C functions this file calls, looked up once from the loaded library.
struct Api {
  std::string error;  // why oneDNN is not available (empty when it is)
  std::string where;  // the file that was loaded
  decltype(&dnnl_engine_create) engine_create;
  decltype(&dnnl_stream_create) stream_create;
  decltype(&dnnl_stream_wait) stream_wait;
  decltype(&dnnl_memory_desc_init_by_strides) memory_desc_init_by_strides;
  decltype(&dnnl_matmul_desc_init) matmul_desc_init;
  decltype(&dnnl_primitive_attr_create) primitive_attr_create;
  decltype(&dnnl_primitive_attr_destroy) primitive_attr_destroy;
  decltype(&dnnl_post_ops_create) post_ops_create;
  decltype(&dnnl_post_ops_destroy) post_ops_destroy;
  decltype(&dnnl_post_ops_append_sum) post_ops_append_sum;
  decltype(&dnnl_primitive_attr_set_post_ops) primitive_attr_set_post_ops;
  decltype(&dnnl_primitive_desc_create) primitive_desc_create;
  decltype(&dnnl_primitive_desc_destroy) primitive_desc_destroy;
  decltype(&dnnl_primitive_create) primitive_create;
  decltype(&dnnl_primitive_destroy) primitive_destroy;
  decltype(&dnnl_memory_create) memory_create;
  decltype(&dnnl_memory_destroy) memory_destroy;
  decltype(&dnnl_memory_set_data_handle) memory_set_data_handle;
  decltype(&dnnl_primitive_execute) primitive_execute;
  decltype(&dnnl_get_effective_cpu_isa) get_effective_cpu_isa;
  decltype(&dnnl_version) version;
  // libgomp's, which oneDNN (Debian's build threads with OpenMP) brings in: each of our threads
  // sets its own OpenMP thread count to 1, so a matmul it runs is single-threaded and the pool
  // threads the products, as it does the OpenBLAS ones.
  void (*omp_set_num_threads)(int) = nullptr;
  dnnl_engine_t engine = nullptr;
  // oneDNN has no bf16 matmul for this CPU (2.6 needs AVX-512; on AVX2 it has none): the products
  // widen their bf16 inputs to fp32 and run through OpenBLAS. The products of bf16 values are exact
  // in fp32, so this computes what the bf16 kernels do, up to the order of the fp32 sums.
  bool widen = false;
  // JUSTGRPO_BF16_PRODUCTS=openblas asks for the widened products where oneDNN has bf16 kernels too:
  // on AVX512-BF16 without AMX, oneDNN 2.6's bf16 matmul can trail OpenBLAS's AVX-512 sgemm.
  bool widen_asked = false;
};

// This .node file's directory, where the prebuilt package may carry libdnnl.so.2.
std::string own_dir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&own_dir), &info) == 0 || !info.dli_fname) return "";
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

Api load() {
  Api a;
  void* lib = nullptr;
  std::string tried;
  for (const std::string& name : {own_dir() + "libdnnl.so.2", std::string("libdnnl.so.2")}) {
    lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      a.where = name;
      break;
    }
    tried += str_cat(tried.empty() ? "" : "; ", dlerror());
  }
  if (!lib) {
    a.error = str_cat("bf16 on the CPU needs oneDNN (libdnnl.so.2; Debian/Ubuntu: apt-get install libdnnl2), "
                      "which could not be loaded: ", tried);
    return a;
  }
  bool ok = true;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    if (!fn && ok) {
      ok = false;
      a.error = str_cat("oneDNN at ", a.where, " lacks ", name, " (version 2.x is needed)");
    }
  };
  sym(a.engine_create, "dnnl_engine_create");
  sym(a.stream_create, "dnnl_stream_create");
  sym(a.stream_wait, "dnnl_stream_wait");
  sym(a.memory_desc_init_by_strides, "dnnl_memory_desc_init_by_strides");
  sym(a.matmul_desc_init, "dnnl_matmul_desc_init");
  sym(a.primitive_attr_create, "dnnl_primitive_attr_create");
  sym(a.primitive_attr_destroy, "dnnl_primitive_attr_destroy");
  sym(a.post_ops_create, "dnnl_post_ops_create");
  sym(a.post_ops_destroy, "dnnl_post_ops_destroy");
  sym(a.post_ops_append_sum, "dnnl_post_ops_append_sum");
  sym(a.primitive_attr_set_post_ops, "dnnl_primitive_attr_set_post_ops");
  sym(a.primitive_desc_create, "dnnl_primitive_desc_create");
  sym(a.primitive_desc_destroy, "dnnl_primitive_desc_destroy");
  sym(a.primitive_create, "dnnl_primitive_create");
  sym(a.primitive_destroy, "dnnl_primitive_destroy");
  sym(a.memory_create, "dnnl_memory_create");
  sym(a.memory_destroy, "dnnl_memory_destroy");
  sym(a.memory_set_data_handle, "dnnl_memory_set_data_handle");
  sym(a.primitive_execute, "dnnl_primitive_execute");
  sym(a.get_effective_cpu_isa, "dnnl_get_effective_cpu_isa");
  sym(a.version, "dnnl_version");
  if (!ok) return a;
  // Absent from a oneDNN built with another threading runtime; then its matmuls thread as it does.
  a.omp_set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(lib, "omp_set_num_threads"));
  if (a.engine_create(&a.engine, dnnl_cpu, 0) != dnnl_success) {
    a.error = "oneDNN could not create a CPU engine";
    return a;
  }
  // Whether this CPU has a bf16 matmul at all: a small one, made and dropped.
  dnnl_memory_desc_t bf, f32;
  const dnnl_dims_t dims{16, 16}, strides{16, 1};
  a.memory_desc_init_by_strides(&bf, 2, dims, dnnl_bf16, strides);
  a.memory_desc_init_by_strides(&f32, 2, dims, dnnl_f32, strides);
  dnnl_matmul_desc_t md;
  dnnl_primitive_desc_t pd = nullptr;
  if (a.matmul_desc_init(&md, &bf, &bf, nullptr, &f32) == dnnl_success &&
      a.primitive_desc_create(&pd, &md, nullptr, a.engine, nullptr) == dnnl_success) {
    a.primitive_desc_destroy(pd);
  } else {
    a.widen = true;
  }
  const char* env = std::getenv("JUSTGRPO_BF16_PRODUCTS");
  if (env && std::strcmp(env, "openblas") == 0 && !a.widen) a.widen = a.widen_asked = true;
  return a;
}

// Loaded once; never unloaded (primitives made from it live in threads' caches until exit).
const Api& api() {
  static const Api a = load();
  return a;
}

// Every oneDNN call: a failure names the call, file and line.
#define JG_DNNL(call)                                                                              \
  do {                                                                                             \
    const dnnl_status_t s_ = (call);                                                               \
    if (s_ != dnnl_success)                                                                        \
      JG_FAIL(::jg::ErrorKind::INTERNAL, "oneDNN call ", #call, " failed (status ", int(s_), ")"); \
  } while (0)

const char* isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core (bf16 emulated)";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni (bf16 emulated)";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_all: return "below SSE4.1, no oneDNN kernels";
    default: return "unknown ISA";
  }
}

// One matmul shape, made once per thread: the primitive and its three memory objects, whose data
// handles are set per call.
struct Gemm {
  dnnl_primitive_t prim = nullptr;
  dnnl_memory_t a = nullptr, b = nullptr, c = nullptr;
};
using Key = std::tuple<bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool>;

// Shapes vary with batch lengths (evaluation prompts), so the cache is bounded; past this many
// shapes it starts over (a primitive costs ~0.1 ms to make, a GEMM of these sizes far more).
constexpr size_t kMaxCached = 256;

struct ThreadState {
  dnnl_stream_t stream = nullptr;
  std::map<Key, Gemm> cache;
  ~ThreadState() {
    const Api& a = api();
    for (auto& [k, g] : cache) {
      a.primitive_destroy(g.prim);
      a.memory_destroy(g.a);
      a.memory_destroy(g.b);
      a.memory_destroy(g.c);
    }
  }
};

ThreadState& thread_state() {
  thread_local ThreadState ts;
  if (!ts.stream) {
    const Api& a = api();
    if (a.omp_set_num_threads) a.omp_set_num_threads(1);
    JG_DNNL(a.stream_create(&ts.stream, a.engine, dnnl_stream_default_flags));
  }
  return ts;
}

Gemm& gemm_for(ThreadState& ts, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
               bool beta) {
  const Key key{tb, M, N, K, lda, ldb, ldc, beta};
  auto it = ts.cache.find(key);
  if (it != ts.cache.end()) return it->second;
  const Api& a = api();
  if (ts.cache.size() >= kMaxCached) {
    for (auto& [k, g] : ts.cache) {
      a.primitive_destroy(g.prim);
      a.memory_destroy(g.a);
      a.memory_destroy(g.b);
      a.memory_destroy(g.c);
    }
    ts.cache.clear();
  }
  dnnl_memory_desc_t ad, bd, cd;
  const dnnl_dims_t a_dims{M, K}, a_strides{lda, 1}, b_dims{K, N}, c_dims{M, N}, c_strides{ldc, 1};
  const dnnl_dims_t b_strides{tb ? 1 : ldb, tb ? ldb : 1};
  JG_DNNL(a.memory_desc_init_by_strides(&ad, 2, a_dims, dnnl_bf16, a_strides));
  JG_DNNL(a.memory_desc_init_by_strides(&bd, 2, b_dims, dnnl_bf16, b_strides));
  JG_DNNL(a.memory_desc_init_by_strides(&cd, 2, c_dims, dnnl_f32, c_strides));
  dnnl_matmul_desc_t md;
  JG_DNNL(a.matmul_desc_init(&md, &ad, &bd, nullptr, &cd));
  dnnl_primitive_attr_t attr = nullptr;
  dnnl_post_ops_t ops = nullptr;
  JG_DNNL(a.primitive_attr_create(&attr));
  if (beta) {
    JG_DNNL(a.post_ops_create(&ops));
    JG_DNNL(a.post_ops_append_sum(ops, 1.0f));
    JG_DNNL(a.primitive_attr_set_post_ops(attr, ops));
  }
  dnnl_primitive_desc_t pd = nullptr;
  const dnnl_status_t s = a.primitive_desc_create(&pd, &md, attr, a.engine, nullptr);
  if (ops) a.post_ops_destroy(ops);
  a.primitive_attr_destroy(attr);
  if (s != dnnl_success)
    JG_FAIL(ErrorKind::INTERNAL, "oneDNN has no bf16 matmul for (", M, "x", K, ") @ (", K, "x", N, ") (status ", int(s), ")");
  Gemm g;
  const dnnl_status_t s2 = a.primitive_create(&g.prim, pd);
  a.primitive_desc_destroy(pd);
  JG_DNNL(s2);
  JG_DNNL(a.memory_create(&g.a, &ad, a.engine, DNNL_MEMORY_NONE));
  JG_DNNL(a.memory_create(&g.b, &bd, a.engine, DNNL_MEMORY_NONE));
  JG_DNNL(a.memory_create(&g.c, &cd, a.engine, DNNL_MEMORY_NONE));
  return ts.cache.emplace(key, g).first->second;
}

inline float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// The product without oneDNN's kernels (Api::widen): the bf16 inputs widened to fp32, one
// single-threaded OpenBLAS sgemm (the caller splits the work over the pool, as for oneDNN's).
void widened_gemm(bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
                  int64_t ldb, bool beta, float* C, int64_t ldc) {
  // The pool splits the product; each block is one single-threaded sgemm, as the fp32 products run.
  static const bool single = (openblas_set_num_threads(1), true);
  (void)single;
  thread_local std::vector<float> wa, wb;
  wa.resize(M * K);
  wb.resize(K * N);
  for (int64_t i = 0; i < M; i++)
    for (int64_t k = 0; k < K; k++) wa[i * K + k] = from_bf16(A[i * lda + k]);
  const int64_t rows = tb ? N : K, cols = tb ? K : N;  // B as stored
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) wb[i * cols + j] = from_bf16(B[i * ldb + j]);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(M), blasint(N), blasint(K), 1.0f,
              wa.data(), blasint(K), wb.data(), blasint(cols), beta ? 1.0f : 0.0f, C, blasint(ldc));
}

void run_gemm(bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
              int64_t ldb, bool beta, float* C, int64_t ldc) {
  const Api& a = api();
  if (a.widen) {
    widened_gemm(tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  ThreadState& ts = thread_state();
  Gemm& g = gemm_for(ts, tb, M, N, K, lda, ldb, ldc, beta);
  JG_DNNL(a.memory_set_data_handle(g.a, const_cast<uint16_t*>(A)));
  JG_DNNL(a.memory_set_data_handle(g.b, const_cast<uint16_t*>(B)));
  JG_DNNL(a.memory_set_data_handle(g.c, C));
  const dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, g.a}, {DNNL_ARG_WEIGHTS, g.b}, {DNNL_ARG_DST, g.c}};
  JG_DNNL(a.primitive_execute(g.prim, ts.stream, 3, args));
  JG_DNNL(a.stream_wait(ts.stream));
}

// Below this many multiply-adds a product runs whole on the calling thread.
constexpr double kSplitWork = 1 << 18;

inline uint16_t bf16_round(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  // Round to nearest even on the 16 dropped bits; a NaN keeps a set quiet bit (so stays NaN).
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded);
}

}  // namespace

void onednn_require() {
  const Api& a = api();
  if (!a.error.empty()) JG_FAIL(ErrorKind::UNSUPPORTED, a.error);
}

std::string onednn_describe() {
  const Api& a = api();
  if (!a.error.empty()) return a.error;
  const dnnl_version_t* v = a.version();
  return str_cat("oneDNN ", v->major, ".", v->minor, ".", v->patch, ", ", isa_name(a.get_effective_cpu_isa()),
                 a.widen_asked ? ": the bf16 inputs widened to fp32 for OpenBLAS (JUSTGRPO_BF16_PRODUCTS=openblas)"
                 : a.widen     ? ": no bf16 matmul for this CPU, the bf16 inputs widened to fp32 for OpenBLAS"
                               : "");
}

void to_bf16(uint16_t* dst, const float* src, int64_t n) {
  parallel_for(n, 1 << 15, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) dst[i] = bf16_round(src[i]);
  });
}

void to_bf16_transposed(uint16_t* dst, const float* src, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 32;
  const int64_t col_tiles = (cols + kTile - 1) / kTile;
  parallel_for(col_tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t c0 = t * kTile, c1 = std::min(cols, c0 + kTile);
      for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
        const int64_t r1 = std::min(rows, r0 + kTile);
        for (int64_t c = c0; c < c1; c++)
          for (int64_t r = r0; r < r1; r++) dst[c * rows + r] = bf16_round(src[r * cols + c]);
      }
    }
  });
}

void gemm_bf16(bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
               int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  onednn_require();
  const OpTimer timer(OpClass::GEMM);
  if (op_clock().on.load(std::memory_order_relaxed)) op_clock().gemm_flops += 2 * M * N * K;
  const bool add = beta != 0.0f;
  if (K == 0) {
    if (!add)
      for (int64_t i = 0; i < M; i++) std::memset(C + i * ldc, 0, static_cast<size_t>(N) * sizeof(float));
    return;
  }
  const int T = ThreadPool::global().size();
  if (T == 1 || static_cast<double>(M) * N * K < kSplitWork) {
    run_gemm(tb, M, N, K, A, lda, B, ldb, add, C, ldc);
    return;
  }
  // As the fp32 products: the longer side in T blocks rounded to 16; each element is summed over
  // the whole of K by one call, so the result does not depend on the split's block sizes beyond
  // the kernel oneDNN picks for a block's shape.
  const bool by_rows = M >= N;
  const int64_t len = by_rows ? M : N;
  const int64_t block = std::max<int64_t>(16, (len + T - 1) / T + 15) / 16 * 16;
  const int64_t n_blocks = (len + block - 1) / block;
  std::mutex error_mutex;
  std::exception_ptr error;
  parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
    try {
      for (int64_t b = b0; b < b1; b++) {
        const int64_t lo = b * block, n = std::min(block, len - lo);
        if (by_rows) {
          run_gemm(tb, n, N, K, A + lo * lda, lda, B, ldb, add, C + lo * ldc, ldc);
        } else {
          run_gemm(tb, M, n, K, A, lda, tb ? B + lo * ldb : B + lo, ldb, add, C + lo, ldc);
        }
      }
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace jg::cpu

#endif  // JUSTGRPO_ONEDNN
