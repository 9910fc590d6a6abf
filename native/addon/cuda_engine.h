// The N-API class behind a CUDA-backed NativeEngine (lib/native/binding.ts): one model on one GPU,
// with the same methods as Engine. Compiled only in CUDA builds (JUSTGRPO_CUDA).
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "../cuda/model.h"

namespace jg {

class CudaEngine : public Napi::ObjectWrap<CudaEngine> {
 public:
  static Napi::Function Init(Napi::Env env);
  // new CudaEngine(config, {device?: number, dtype?: 'BF16' | 'F32'})
  explicit CudaEngine(const Napi::CallbackInfo& info);

  bool try_claim() {
    if (busy_.exchange(true)) return false;
    abort_.store(false);
    return true;
  }
  void unclaim() { busy_.store(false); }
  cuda::Model& model() { return *model_; }
  const std::atomic<bool>* abort_flag() const { return &abort_; }

 private:
  Napi::Value ParamInfo(const Napi::CallbackInfo& info);
  Napi::Value NumParams(const Napi::CallbackInfo& info);
  Napi::Value TokensComputed(const Napi::CallbackInfo& info);
  Napi::Value DeviceInfo(const Napi::CallbackInfo& info);
  Napi::Value LoadTensors(const Napi::CallbackInfo& info);
  Napi::Value SaveSafetensors(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value InitRandom(const Napi::CallbackInfo& info);
  Napi::Value GetParam(const Napi::CallbackInfo& info);
  Napi::Value SetParam(const Napi::CallbackInfo& info);
  Napi::Value Decode(const Napi::CallbackInfo& info);
  Napi::Value Logprobs(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  cuda::Model& live_model();

  std::unique_ptr<cuda::Model> model_;
  std::atomic<bool> busy_{false};
  std::atomic<bool> abort_{false};
};

// exports.cuda: {deviceCount(), deviceProperties(i), why} for tests and `justgrpo info`.
Napi::Object cuda_exports(Napi::Env env);

}  // namespace jg
