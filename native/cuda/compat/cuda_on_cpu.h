// The CUDA-on-CPU tier: the CUDA names native/cuda uses, mapped onto the HIP CPU Runtime (a
// header-only library that runs kernels on CPU threads, each block's threads as fibers), so that the
// same kernel sources compile with g++ and their parity tests run in CI without a GPU.
//
// Reached through the stand-in headers in compat/include (cuda_runtime.h, cuda_bf16.h, mma.h,
// cublas_v2.h), which come first on the include path of the tier's build only (CMake option
// JUSTGRPO_CUDA_ON_CPU); nvcc never sees this directory.
//
// What it fills that HIP-CPU lacks: a bf16 type; 32-lane *_sync shuffles (HIP-CPU's are 64-lane and
// wrong for lanes past the width); __syncwarp; the rounded intrinsics; rsqrtf and cospi; the launch
// macro and dynamic shared memory (JG_LAUNCH, JG_DYNAMIC_SHARED, which common.cuh defines with
// <<<...>>> and extern __shared__ for nvcc); cudaFuncSetAttribute; and launch checks a GPU makes
// (block size, grid size, dynamic shared memory beyond 48 KiB without the attribute).
//
// What it cannot check (a GPU with compute-sanitizer must): a warp runs its lanes one after another
// and every shuffle or __syncwarp is a barrier of the whole block, so warp-level races and missing
// __syncwarp between lanes of one warp go unseen; CPU math (expf, log) instead of the GPU's; no FMA
// contraction (built with -ffp-contract=off); tensor-core accumulation order.
#pragma once

#include <hip/hip_runtime.h>

// HIP-CPU marks device functions and kernels __attribute__((simd)); GCC then emits the vector clones
// of every inline device function as strong symbols in each translation unit, and the link fails on
// the duplicates. Here they are plain functions; kernels keep `flatten` (everything inlined).
#undef __device__
#define __device__
#undef __global__
#define __global__ __attribute__((flatten))
// CUDA's __forceinline__ implies inline linkage; HIP-CPU defines it empty for GCC, which would make
// every helper in a header a duplicate symbol.
#undef __forceinline__
#define __forceinline__ inline __attribute__((always_inline))

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

// ---- bf16 -------------------------------------------------------------------------------------

// Storage only, like CUDA's: conversions go through the named intrinsics.
struct __nv_bfloat16 {
  uint16_t bits;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{static_cast<uint16_t>((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return __nv_bfloat16{static_cast<uint16_t>(u >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- math: the rounded intrinsics are the plain operations (no contraction in this build) ----

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double cospi(double x) { return std::cos(M_PI * x); }

namespace jg::cuda_on_cpu {

[[noreturn]] inline void device_trap(const char* what) {
  std::fprintf(stderr, "CUDA-on-CPU: %s\n", what);
  std::abort();  // a GPU would fault the kernel; here the test process stops with the reason
}

// Linear thread index inside the block.
inline int flat_thread() {
  return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}
inline int block_threads() { return static_cast<int>(blockDim.x * blockDim.y * blockDim.z); }

// One exchange of a value between the lanes of every warp: each thread publishes v, and reads the
// value of lane `src` of its own warp. Every thread of the block must call it (it is a block barrier
// twice): the kernels shuffle only in block-uniform control flow.
template <typename T>
inline T warp_exchange(T v, int src) {
  thread_local static T slots[1024];  // one block runs on one OS thread at a time
  const int t = flat_thread();
  slots[t] = v;
  __syncthreads();
  const int from = (t & ~31) + src;
  if (from >= block_threads()) device_trap("shuffle from a lane outside the block (a partial warp)");
  const T r = slots[from];
  __syncthreads();
  return r;
}

inline void check_mask(unsigned mask) {
  if (mask != 0xffffffffu) device_trap("shuffle with a partial lane mask (not emulated)");
}

// Dynamic shared memory: the launch's byte count, 128-byte aligned, kept per OS thread (one block
// at a time runs on each).
inline unsigned char* dynamic_shared() {
  thread_local static std::vector<unsigned char> storage;
  const size_t bytes = scratchpad_size(domain(::hip::detail::Tile::this_tile()));
  if (storage.size() < bytes + 128) storage.resize(bytes + 128);
  const uintptr_t p = reinterpret_cast<uintptr_t>(storage.data());
  return reinterpret_cast<unsigned char*>((p + 127) & ~uintptr_t(127));
}

// The launch checks a GPU makes before it runs a kernel; a failure becomes the next
// cudaGetLastError(), as on a GPU.
inline std::mutex& attr_mutex() {
  static std::mutex m;
  return m;
}
inline std::unordered_map<const void*, int>& max_dynamic_smem() {
  static std::unordered_map<const void*, int> m;
  return m;
}
inline hipError_t& pending_error() {
  thread_local hipError_t e = hipSuccess;
  return e;
}

// A kernel's identity for cudaFuncSetAttribute: its address, whether named or held in a pointer.
template <typename F>
inline const void* kernel_id(F* f) {
  return reinterpret_cast<const void*>(f);
}

inline bool launch_ok(const void* kernel, dim3 grid, dim3 block, size_t smem) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  bool ok = threads >= 1 && threads <= 1024 && block.z <= 64 && grid.x >= 1 && grid.y >= 1 && grid.z >= 1 &&
            grid.y <= 65535 && grid.z <= 65535 && grid.x <= 0x7fffffffu;
  if (ok && smem > 48 * 1024) {
    std::lock_guard<std::mutex> lock(attr_mutex());
    auto it = max_dynamic_smem().find(kernel);
    ok = it != max_dynamic_smem().end() && smem <= static_cast<size_t>(it->second);
  }
  // 227 KiB: the most dynamic shared memory a block may have (sm_90); sm_80 allows 163 KiB.
  if (smem > 227 * 1024) ok = false;
  if (!ok && pending_error() == hipSuccess) pending_error() = hipErrorInvalidConfiguration;
  return ok;
}

}  // namespace jg::cuda_on_cpu

// ---- warp primitives: 32 lanes ------------------------------------------------------------------

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  jg::cuda_on_cpu::check_mask(mask);
  const int lane = jg::cuda_on_cpu::flat_thread() & 31;
  return jg::cuda_on_cpu::warp_exchange(v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  jg::cuda_on_cpu::check_mask(mask);
  const int lane = jg::cuda_on_cpu::flat_thread() & 31;
  const int src = lane ^ lane_mask;
  // A source past the lane's segment of `width` lanes reads the lane's own value, as on a GPU.
  return jg::cuda_on_cpu::warp_exchange(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  jg::cuda_on_cpu::check_mask(mask);
  const int lane = jg::cuda_on_cpu::flat_thread() & 31;
  const int src = lane + static_cast<int>(delta);
  return jg::cuda_on_cpu::warp_exchange(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  jg::cuda_on_cpu::check_mask(mask);
  const int lane = jg::cuda_on_cpu::flat_thread() & 31;
  const int src = lane - static_cast<int>(delta);
  return jg::cuda_on_cpu::warp_exchange(v, src >= (lane & ~(width - 1)) ? src : lane);
}
// A barrier of the whole block: stricter than a warp's, so a missing one between warps is seen, a
// missing one between lanes of one warp only where a later lane wrote what an earlier one reads.
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  jg::cuda_on_cpu::check_mask(mask);
  __syncthreads();
}

// ---- launches and dynamic shared memory (nvcc's versions are in native/cuda/common.cuh) -------

#define JG_LAUNCH(kernel, grid, block, smem, stream, ...)                                                    \
  do {                                                                                                      \
    if (::jg::cuda_on_cpu::launch_ok(::jg::cuda_on_cpu::kernel_id(kernel), dim3(grid), dim3(block), (smem))) { \
      hipLaunchKernelGGL(kernel, dim3(grid), dim3(block), static_cast<std::uint32_t>(smem), (stream), __VA_ARGS__); \
    }                                                                                                        \
  } while (0)

#define JG_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::jg::cuda_on_cpu::dynamic_shared())

// ---- the runtime API -----------------------------------------------------------------------------

using cudaError_t = hipError_t;
using cudaStream_t = hipStream_t;
using cudaDeviceProp = hipDeviceProp_t;
using cudaMemcpyKind = hipMemcpyKind;
constexpr cudaError_t cudaSuccess = hipSuccess;
constexpr cudaError_t cudaErrorMemoryAllocation = hipErrorOutOfMemory;
constexpr cudaError_t cudaErrorNotReady = hipErrorNotReady;
constexpr cudaMemcpyKind cudaMemcpyHostToDevice = hipMemcpyHostToDevice;
constexpr cudaMemcpyKind cudaMemcpyDeviceToHost = hipMemcpyDeviceToHost;
constexpr cudaMemcpyKind cudaMemcpyDeviceToDevice = hipMemcpyDeviceToDevice;
constexpr cudaMemcpyKind cudaMemcpyHostToHost = hipMemcpyHostToHost;
constexpr cudaMemcpyKind cudaMemcpyDefault = hipMemcpyDefault;
constexpr auto cudaStreamNonBlocking = hipStreamNonBlocking;

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

template <typename F>
inline cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > 227 * 1024)
    return hipErrorInvalidValue;
  std::lock_guard<std::mutex> lock(jg::cuda_on_cpu::attr_mutex());
  jg::cuda_on_cpu::max_dynamic_smem()[jg::cuda_on_cpu::kernel_id(kernel)] = value;
  return hipSuccess;
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t mine = std::exchange(jg::cuda_on_cpu::pending_error(), hipSuccess);
  const cudaError_t theirs = hipGetLastError();
  return mine != hipSuccess ? mine : theirs;
}
inline const char* cudaGetErrorName(cudaError_t e) { return hipGetErrorName(e); }
inline const char* cudaGetErrorString(cudaError_t e) { return hipGetErrorString(e); }

inline cudaError_t cudaGetDeviceCount(int* n) { return hipGetDeviceCount(n); }
inline cudaError_t cudaGetDevice(int* d) { return hipGetDevice(d); }
inline cudaError_t cudaSetDevice(int d) { return hipSetDevice(d); }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) { return hipGetDeviceProperties(p, d); }
inline cudaError_t cudaRuntimeGetVersion(int* v) { return hipRuntimeGetVersion(v); }
inline cudaError_t cudaDeviceSynchronize() { return hipDeviceSynchronize(); }
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) { return hipMemGetInfo(free_b, total_b); }

// cudaMalloc's guarantees, which HIP-CPU's plain malloc lacks: 256-byte alignment (WMMA and vector
// loads rely on it) and cudaErrorMemoryAllocation when memory runs out. Under ASan the rounding-up
// tail is poisoned, so a kernel that runs past the bytes it asked for is still reported.
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return hipErrorInvalidValue;
  *p = nullptr;
  if (bytes == 0) return hipSuccess;
  const size_t rounded = (bytes + 255) / 256 * 256;
  *p = std::aligned_alloc(256, rounded);
  if (!*p) return hipErrorOutOfMemory;
#if defined(__SANITIZE_ADDRESS__)
  __asan_poison_memory_region(static_cast<char*>(*p) + bytes, rounded - bytes);
#endif
  return hipSuccess;
}
template <typename T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
// Like CUDA's, it waits for the device first: a kernel still running may be using the memory.
inline cudaError_t cudaFree(void* p) {
  if (!p) return hipSuccess;
  hipDeviceSynchronize();
  std::free(p);  // ASan's free takes the chunk back whole, the poisoned tail included
  return hipSuccess;
}
inline cudaError_t cudaMallocHost(void** p, size_t bytes) { return hipHostMalloc(p, bytes); }
inline cudaError_t cudaFreeHost(void* p) { return hipHostFree(p); }

inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  return hipStreamCreateWithFlags(s, static_cast<hipStreamFlags>(flags));
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) { return hipStreamDestroy(s); }
inline cudaError_t cudaStreamSynchronize(cudaStream_t s) { return hipStreamSynchronize(s); }
inline cudaError_t cudaStreamQuery(cudaStream_t s) { return hipStreamQuery(s); }

inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return hipMemcpy(dst, src, bytes, kind);
}
// CUDA reads a pageable host source before the call returns; HIP-CPU reads it when the stream gets
// there. Host-to-device copies therefore wait for their stream here, so a host vector the caller
// frees or reuses after the call is read in time (stricter than CUDA with pinned memory: a missing
// synchronisation before reusing a pinned buffer is not seen here).
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = {}) {
  const cudaError_t e = hipMemcpyAsync(dst, src, bytes, kind, s);
  if (e != hipSuccess || kind != hipMemcpyHostToDevice) return e;
  return hipStreamSynchronize(s);
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t s = {}) {
  return hipMemsetAsync(dst, value, bytes, s);
}
