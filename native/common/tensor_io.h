// Raw tensor data to and from safetensors files. The JSON header is parsed and validated in
// TypeScript (lib/safetensors.ts); these functions move bytes at offsets it has checked, converting
// between the stored dtype and the engine's fp32, in bounded chunks (no whole-file buffer).
#pragma once

#include <cstdint>
#include <string>

namespace jg {

enum class DType { F32, BF16, F16 };

DType dtype_from_name(const std::string& name);  // "F32" | "BF16" | "F16"
int dtype_size(DType t);

float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);  // round to nearest even; NaN stays NaN
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even; overflow to inf

// Reads numel elements of dtype at byte `offset` of the file into dst (fp32). Throws naming the
// file and tensor if the file is shorter than claimed or a read fails.
void read_tensor(float* dst, int64_t numel, DType dtype, const std::string& path, int64_t offset,
                 const std::string& tensor_name);
// The same into bf16: BF16 data is copied as it is (no widening, no rounding), F32 and F16 are
// rounded to nearest even once.
void read_tensor_bf16(uint16_t* dst, int64_t numel, DType dtype, const std::string& path, int64_t offset,
                      const std::string& tensor_name);

// An open file being written; converts fp32 tensors to the dtype on the way.
class TensorWriter {
 public:
  explicit TensorWriter(const std::string& path);
  ~TensorWriter();
  void write_bytes(const void* data, int64_t n);
  void write_tensor(const float* src, int64_t numel, DType dtype);
  // From bf16 values: BF16 is written as it is (lossless), F32 and F16 from the widened values.
  void write_tensor_bf16(const uint16_t* src, int64_t numel, DType dtype);
  void finish();  // flush, fsync, close; throws on failure (e.g. disk full)

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace jg
