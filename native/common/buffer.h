// A 64-byte aligned fp32 buffer that reports its size when the allocation fails.
//
// Buffers of 1 MiB and more are mapped directly (mmap) rather than taken from malloc: the kernel
// hands out zero pages, so no memset touches them up front (a page costs its first touch when the
// engine first writes it, and pages never written cost nothing), and a buffer that grows keeps the
// pages it has (mremap): only the new part is fresh memory. Workspaces sized by the batch (which
// varies from step to step, e.g. with how many rollouts are identical) then stop paying for their
// whole size again each time they grow; on some virtual machines a first touch costs seconds per GiB.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "check.h"
#include "memory.h"

namespace jg {

class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(int64_t n, const char* what) { resize(n, what); }
  ~FloatBuffer() { release(); }
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  FloatBuffer(FloatBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), mapped_(std::exchange(o.mapped_, 0)) {}
  FloatBuffer& operator=(FloatBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(mapped_, o.mapped_);
    return *this;
  }

  // Grows to hold at least n floats. Zero-filled when first allocated; after growing, the part
  // beyond the old size is zero and the rest holds whatever was there (callers write before they read).
  void resize(int64_t n, const char* what) {
    if (n <= size_) return;
    const int64_t floats = checked_mul(n, static_cast<int64_t>(sizeof(float)));
    check_fits(floats < 0 || floats > INT64_MAX - 63 ? -1 : floats, what);
    size_t bytes = (static_cast<size_t>(floats) + 63) / 64 * 64;
#if defined(__linux__)
    if (bytes >= kMapBytes) {
      bytes = (bytes + kPage - 1) / kPage * kPage;
      void* p = mapped_ ? mremap(data_, mapped_, bytes, MREMAP_MAYMOVE)
                        : mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) fail(what, bytes);
      if (!mapped_) std::free(data_);  // a smaller malloc'd buffer before (contents not kept)
      data_ = static_cast<float*>(p);
      mapped_ = bytes;
      size_ = n;
      return;
    }
#endif
    release();
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!data_) fail(what, bytes);
    std::memset(data_, 0, bytes);
    size_ = n;
  }
  // Grows to hold at least n floats keeping every value held now (the new part is zero). A mapped
  // buffer grows in place (mremap); a small one is copied.
  void grow_keep(int64_t n, const char* what) {
    if (n <= size_) return;
    if (mapped_) {
      resize(n, what);
      return;
    }
    FloatBuffer bigger(n, what);
    if (size_ > 0) std::memcpy(bigger.data_, data_, static_cast<size_t>(size_) * sizeof(float));
    *this = std::move(bigger);
  }
  void release() {
#if defined(__linux__)
    if (mapped_) munmap(data_, mapped_);
    else
#endif
      std::free(data_);
    data_ = nullptr;
    size_ = 0;
    mapped_ = 0;
  }

  float* data() { return data_; }
  const float* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  static constexpr size_t kMapBytes = size_t(1) << 20;
  static constexpr size_t kPage = 4096;

  [[noreturn]] static void fail(const char* what, size_t bytes) {
    throw OutOfMemoryError(str_cat("Out of memory: ", what, " needs ", bytes, " bytes (", bytes / (1 << 20), " MiB)"));
  }

  float* data_ = nullptr;
  int64_t size_ = 0;
  size_t mapped_ = 0;  // bytes mapped (0: malloc'd or empty)
};

}  // namespace jg
