// Reads fuzzer bytes as values: small numbers most of the time (so the checks' interesting edges are
// hit often), any int32/int64 when the marker byte asks for it (so overflow edges are hit too).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace jg::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  size_t left() const { return static_cast<size_t>(end_ - p_); }
  uint8_t byte() { return p_ < end_ ? *p_++ : 0; }
  template <typename T>
  T raw() {
    T v{};
    const size_t n = std::min(sizeof(T), left());
    std::memcpy(&v, p_, n);
    p_ += n;
    return v;
  }
  // A byte >= 0xF0 is followed by a full-width value; anything else is a small signed number.
  int32_t i32() {
    const uint8_t b = byte();
    return b >= 0xF0 ? raw<int32_t>() : static_cast<int32_t>(static_cast<int8_t>(b));
  }
  int64_t i64() {
    const uint8_t b = byte();
    return b >= 0xF0 ? raw<int64_t>() : static_cast<int64_t>(static_cast<int8_t>(b));
  }
  std::string str(size_t max) {
    const size_t n = std::min<size_t>(byte() % (max + 1), left());
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  const uint8_t* rest(size_t* n) {
    *n = left();
    const uint8_t* r = p_;
    p_ = end_;
    return r;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace jg::fuzz
