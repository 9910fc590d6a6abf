#include "backends.h"

#include "../common/check.h"
#include "../cpu/model.h"
#ifdef JUSTGRPO_CUDA
#include "../cuda/model.h"
#endif

namespace jg {

std::vector<std::string> backend_names() {
#ifdef JUSTGRPO_CUDA
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

std::unique_ptr<Backend> make_backend(const ModelConfig& cfg, const BackendOptions& o) {
  if (o.backend == "cpu") return std::make_unique<cpu::Model>(cfg, o.dtype.value_or(DType::F32), o.master_weights);
#ifdef JUSTGRPO_CUDA
  if (o.backend == "cuda") return std::make_unique<cuda::Model>(cfg, o.device, o.dtype.value_or(DType::BF16), o.master_weights);
#endif
  JG_FAIL(ErrorKind::UNSUPPORTED, "Backend '", o.backend, "' is not in this build");
}

void export_backend_info(Napi::Env env, Napi::Object exports) {
#ifdef JUSTGRPO_CUDA
  Napi::Object o = Napi::Object::New(env);
  o.Set("deviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
          return Napi::Number::New(info.Env(), cuda::device_count(nullptr));
        }));
  // Why there is no device (empty when there is one): the CUDA runtime's error, e.g. no driver.
  o.Set("unavailableReason", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
          std::string why;
          return Napi::String::New(info.Env(), cuda::device_count(&why) > 0 ? "" : why);
        }));
  o.Set("runtimeVersion", cuda::runtime_version());
  exports.Set("cuda", o);
#else
  (void)env;
  (void)exports;
#endif
}

}  // namespace jg
