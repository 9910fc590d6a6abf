// A 64-byte aligned fp32 buffer that reports its size when the allocation fails.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "check.h"
#include "memory.h"

namespace jg {

class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(int64_t n, const char* what) { resize(n, what); }
  ~FloatBuffer() { std::free(data_); }
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  FloatBuffer(FloatBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  FloatBuffer& operator=(FloatBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }

  // Grows to hold at least n floats (contents are not kept); zero-filled when first allocated.
  void resize(int64_t n, const char* what) {
    if (n <= size_) return;
    const int64_t floats = checked_mul(n, static_cast<int64_t>(sizeof(float)));
    check_fits(floats < 0 || floats > INT64_MAX - 63 ? -1 : floats, what);
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
    size_t bytes = (static_cast<size_t>(floats) + 63) / 64 * 64;
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!data_)
      throw OutOfMemoryError(str_cat("Out of memory: ", what, " needs ", bytes, " bytes (", bytes / (1 << 20), " MiB)"));
    std::memset(data_, 0, bytes);
    size_ = n;
  }
  void release() {
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
  }

  float* data() { return data_; }
  const float* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  float* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace jg
