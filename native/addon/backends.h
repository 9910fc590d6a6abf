// The backends this build has, and how the Engine makes one: the only place that names them.
#pragma once

#include <napi.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../common/backend.h"

namespace jg {

struct BackendOptions {
  std::string backend = "cpu";
  int device = 0;
  // The compute dtype; unset: each backend's default (the CPU: F32, its exact reference path, with
  // BF16 its matrix products in bf16; CUDA: BF16 weights and activations).
  std::optional<DType> dtype;
  // With BF16: keep fp32 master weights beside the bf16 copy from the start (false: bf16 weights
  // only, for inference; training widens them into masters when it starts). Ignored in F32.
  bool master_weights = true;
};

// "cpu", and "cuda" in CUDA builds.
std::vector<std::string> backend_names();
// A model for `cfg` on the named backend; INPUT for a name this build does not have.
std::unique_ptr<Backend> make_backend(const ModelConfig& cfg, const BackendOptions& o);
// Adds what a backend tells about the machine to the module's exports (CUDA builds: exports.cuda =
// {deviceCount(), unavailableReason(), runtimeVersion}).
void export_backend_info(Napi::Env env, Napi::Object exports);

}  // namespace jg
