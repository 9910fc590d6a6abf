#include "tensor_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

#include "check.h"
#include "memory.h"

namespace jg {

namespace {
constexpr int64_t kChunkBytes = 16 << 20;

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

DType dtype_from_name(const std::string& name) {
  if (name == "F32") return DType::F32;
  if (name == "BF16") return DType::BF16;
  if (name == "F16") return DType::F16;
  throw EngineError(str_cat("Unsupported dtype ", name, " (expected F32, BF16 or F16)"));
}

int dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

float bf16_to_f32(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
  uint32_t u = bits_of(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40);  // keep it a quiet NaN
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0x1f) return float_of(sign | 0x7f800000 | (man << 13));  // inf / NaN
  if (exp == 0) {
    // zero or subnormal: man * 2^-24, exact in fp32
    float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  return float_of(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
  uint32_t u = bits_of(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  if (std::isnan(f)) return sign | 0x7e00;
  float a = std::fabs(f);
  if (a >= 65520.0f) return sign | 0x7c00;  // rounds to inf
  if (a < 6.103515625e-05f) {
    // subnormal range: round a / 2^-24 to nearest even
    float m = std::nearbyint(std::ldexp(a, 24));
    return sign | static_cast<uint16_t>(m);
  }
  uint32_t au = bits_of(a);
  au += 0xfff + ((au >> 13) & 1);
  return sign | static_cast<uint16_t>((au >> 13) - (112 << 10));
}

namespace {

// Reads numel elements of dtype at byte `offset` of the file in chunks: each chunk's raw bytes go
// to direct(done, n) when it returns a place for them (no copy), else to a scratch buffer handed
// to convert(done, n, bytes). Checks the file's size against the tensor first.
template <typename Direct, typename Convert>
void read_chunks(int64_t numel, DType dtype, const std::string& path, int64_t offset, const std::string& tensor_name,
                 Direct direct, Convert convert) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  JG_CHECK_AS(ErrorKind::CHECKPOINT, fd >= 0, "Cannot open ", path, ": ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  JG_CHECK_AS(ErrorKind::CHECKPOINT, ::fstat(fd, &st) == 0, "Cannot stat ", path, ": ", std::strerror(errno));
  JG_CHECK_AS(ErrorKind::CHECKPOINT, numel >= 0, "Tensor ", tensor_name, " has a negative size ", numel);
  const int64_t bytes = checked_mul(numel, dtype_size(dtype));
  // Compared as `bytes <= size - offset`: `offset + bytes` could overflow for a lying offset.
  JG_CHECK_AS(ErrorKind::CHECKPOINT, offset >= 0 && bytes >= 0 && offset <= st.st_size && bytes <= st.st_size - offset, "Tensor ", tensor_name,
           " in ", path, " needs ", bytes < 0 ? std::string("more than 2^63 bytes") : str_cat(bytes, " bytes"),
           " from offset ", offset, " but the file has ", st.st_size);
  const int esize = dtype_size(dtype);
  std::vector<char> scratch;
  int64_t done = 0;  // elements
  while (done < numel) {
    int64_t n = std::min<int64_t>(numel - done, kChunkBytes / esize);
    char* target = direct(done, n);
    if (!target) target = (scratch.resize(static_cast<size_t>(n * esize)), scratch.data());
    int64_t want = n * esize, got = 0;
    while (got < want) {
      ssize_t r = ::pread(fd, target + got, want - got, offset + done * esize + got);
      if (r < 0 && errno == EINTR) continue;
      JG_CHECK_AS(ErrorKind::CHECKPOINT, r > 0, "Cannot read tensor ", tensor_name, " from ", path, ": ",
               r == 0 ? "unexpected end of file" : std::strerror(errno));
      got += r;
    }
    if (target == scratch.data()) convert(done, n, scratch.data());
    done += n;
  }
}

}  // namespace

void read_tensor(float* dst, int64_t numel, DType dtype, const std::string& path, int64_t offset,
                 const std::string& tensor_name) {
  read_chunks(
      numel, dtype, path, offset, tensor_name,
      [&](int64_t done, int64_t) { return dtype == DType::F32 ? reinterpret_cast<char*>(dst + done) : nullptr; },
      [&](int64_t done, int64_t n, const char* raw) {
        const uint16_t* half = reinterpret_cast<const uint16_t*>(raw);
        if (dtype == DType::BF16)
          for (int64_t i = 0; i < n; i++) dst[done + i] = bf16_to_f32(half[i]);
        else
          for (int64_t i = 0; i < n; i++) dst[done + i] = f16_to_f32(half[i]);
      });
}

void read_tensor_bf16(uint16_t* dst, int64_t numel, DType dtype, const std::string& path, int64_t offset,
                      const std::string& tensor_name) {
  read_chunks(
      numel, dtype, path, offset, tensor_name,
      [&](int64_t done, int64_t) { return dtype == DType::BF16 ? reinterpret_cast<char*>(dst + done) : nullptr; },
      [&](int64_t done, int64_t n, const char* raw) {
        if (dtype == DType::F32) {
          const float* f = reinterpret_cast<const float*>(raw);
          for (int64_t i = 0; i < n; i++) dst[done + i] = f32_to_bf16(f[i]);
        } else {
          const uint16_t* half = reinterpret_cast<const uint16_t*>(raw);
          for (int64_t i = 0; i < n; i++) dst[done + i] = f32_to_bf16(f16_to_f32(half[i]));
        }
      });
}

TensorWriter::TensorWriter(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  JG_CHECK_AS(ErrorKind::STORAGE, fd_ >= 0, "Cannot create ", path, ": ", std::strerror(errno));
}

TensorWriter::~TensorWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void TensorWriter::write_bytes(const void* data, int64_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    JG_CHECK_AS(ErrorKind::STORAGE, w > 0, "Cannot write ", path_, ": ", std::strerror(errno));
    p += w;
    n -= w;
  }
}

void TensorWriter::write_tensor(const float* src, int64_t numel, DType dtype) {
  if (dtype == DType::F32) {
    write_bytes(src, numel * 4);
    return;
  }
  std::vector<uint16_t> half;
  for (int64_t done = 0; done < numel;) {
    int64_t n = std::min<int64_t>(numel - done, kChunkBytes / 2);
    half.resize(n);
    for (int64_t i = 0; i < n; i++)
      half[i] = dtype == DType::BF16 ? f32_to_bf16(src[done + i]) : f32_to_f16(src[done + i]);
    write_bytes(half.data(), n * 2);
    done += n;
  }
}

void TensorWriter::write_tensor_bf16(const uint16_t* src, int64_t numel, DType dtype) {
  if (dtype == DType::BF16) {
    write_bytes(src, numel * 2);
    return;
  }
  std::vector<float> wide;
  for (int64_t done = 0; done < numel;) {
    int64_t n = std::min<int64_t>(numel - done, kChunkBytes / 4);
    wide.resize(n);
    for (int64_t i = 0; i < n; i++) wide[i] = bf16_to_f32(src[done + i]);
    write_tensor(wide.data(), n, dtype);
    done += n;
  }
}

void TensorWriter::finish() {
  JG_CHECK_AS(ErrorKind::STORAGE, ::fsync(fd_) == 0, "Cannot sync ", path_, ": ", std::strerror(errno));
  int fd = fd_;
  fd_ = -1;
  JG_CHECK_AS(ErrorKind::STORAGE, ::close(fd) == 0, "Cannot close ", path_, ": ", std::strerror(errno));
}

}  // namespace jg
