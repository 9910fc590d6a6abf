// libFuzzer target: native/common/tensor_io, the code that reads a stranger's weight file at
// offsets and dtypes taken from its header, plus the name -> parameter and dtype-name lookups a
// `loadTensors` entry goes through. Invariants: a read either throws EngineError or fills exactly
// numel floats from bytes that exist; the 16-bit conversions round-trip every non-NaN pattern.
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../common/check.h"
#include "../common/layout.h"
#include "../common/tensor_io.h"
#include "input.h"

namespace {

char g_scratch[] = "/tmp/jg-fuzz-tensor-XXXXXX";

// One scratch file per process, removed at exit.
std::string scratch_file() {
  static const bool made = [] {
    int fd = mkstemp(g_scratch);
    if (fd < 0) std::abort();
    close(fd);
    std::atexit([] { unlink(g_scratch); });
    return true;
  }();
  (void)made;
  return g_scratch;
}

jg::ModelConfig tiny() {
  jg::ModelConfig c;
  c.d_model = 8, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1, c.mlp_hidden = 12;
  c.vocab_size = 10, c.embedding_size = 12, c.max_seq_len = 8, c.mask_token_id = 9;
  c.rope_theta = 10000, c.rms_norm_eps = 1e-5;
  return c;
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  jg::fuzz::Input in(data, size);
  static const jg::ParamLayout layout(tiny());
  const int64_t numel = in.i64();
  const int64_t offset = in.i64();
  const std::string dtype_name = in.str(6);
  const std::string tensor = in.str(40);
  size_t file_len = 0;
  const uint8_t* file = in.rest(&file_len);

  // The 16-bit conversions on every pair of file bytes.
  for (size_t i = 0; i + 1 < file_len; i += 2) {
    uint16_t h;
    std::memcpy(&h, file + i, 2);
    const float b = jg::bf16_to_f32(h), f = jg::f16_to_f32(h);
    check(std::isnan(b) ? std::isnan(jg::bf16_to_f32(jg::f32_to_bf16(b))) : jg::f32_to_bf16(b) == h, "bf16 round trip");
    check(std::isnan(f) ? std::isnan(jg::f16_to_f32(jg::f32_to_f16(f))) : jg::f32_to_f16(f) == h, "f16 round trip");
  }
  if (file_len >= 4) {
    float x;
    std::memcpy(&x, file, 4);
    const float h = jg::f16_to_f32(jg::f32_to_f16(x)), bf = jg::bf16_to_f32(jg::f32_to_bf16(x));
    check(std::isnan(x) == std::isnan(h) && std::isnan(x) == std::isnan(bf), "NaN survives conversion");
    if (std::isfinite(x) && std::fabs(x) < 65504.0f) check(std::fabs(h - x) <= std::fabs(x) * 0x1p-11f + 0x1p-25f, "f16 rounding error");
  }

  // A tensor entry: name and dtype as loadTensors looks them up.
  const jg::ParamInfo* p = layout.find(tensor);
  jg::DType dtype = jg::DType::F32;
  try {
    dtype = jg::dtype_from_name(dtype_name);
  } catch (const jg::EngineError&) {
    return 0;
  }

  const std::string path = scratch_file();
  {
    int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC);
    if (fd < 0) std::abort();
    if (file_len && ::write(fd, file, file_len) != static_cast<ssize_t>(file_len)) std::abort();
    ::close(fd);
  }
  // The destination holds exactly what the read may fill: a parameter's size, or a small buffer
  // (any numel beyond what the file can hold must be refused before a byte is written).
  const int64_t cap = p ? p->numel : 4096;
  std::vector<float> dst(static_cast<size_t>(cap));
  const int64_t n = p ? p->numel : numel;
  try {
    jg::read_tensor(dst.data(), n, dtype, path, offset, p ? p->name : tensor);
    check(n <= cap, "a read larger than the file succeeded");
    const int64_t es = jg::dtype_size(dtype);
    check(offset >= 0 && offset + n * es <= static_cast<int64_t>(file_len), "a read past the end succeeded");
    for (int64_t i = 0; i < n; i++) {
      float want;
      if (dtype == jg::DType::F32) std::memcpy(&want, file + offset + 4 * i, 4);
      else {
        uint16_t h;
        std::memcpy(&h, file + offset + 2 * i, 2);
        want = dtype == jg::DType::BF16 ? jg::bf16_to_f32(h) : jg::f16_to_f32(h);
      }
      check(std::memcmp(&want, &dst[i], 4) == 0, "read_tensor returned other bytes than the file holds");
    }
  } catch (const jg::EngineError&) {
  }
  return 0;
}
