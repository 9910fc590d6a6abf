// Device memory owned by one object: grows to the largest size asked for (contents not kept), never
// shrinks until release(), and says how much it wanted when the GPU is out of memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "check.h"

namespace jg::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }

  void* reserve(size_t bytes, const char* what) {
    if (bytes <= bytes_) return ptr_;
    release();
    if (bytes == 0) return nullptr;
    cudaError_t e = cudaMalloc(&ptr_, bytes);
    if (e != cudaSuccess) {
      ptr_ = nullptr;
      cudaGetLastError();  // clear the sticky-free allocation error
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw OutOfMemoryError(str_cat("Out of memory on the GPU: ", what, " needs ", bytes, " bytes (", bytes >> 20,
                                     " MiB) but ", free_b >> 20, " MiB of ", total_b >> 20, " MiB are free"));
    }
    bytes_ = bytes;
    return ptr_;
  }
  template <typename T>
  T* reserve_as(size_t count, const char* what) {
    return static_cast<T*>(reserve(count * sizeof(T), what));
  }
  void release() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Makes `device` current on the calling thread for the scope (N-API work runs on pool threads,
// and the current device is per thread).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    JG_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) JG_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() {
    int now = -1;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
};

}  // namespace jg::cuda
