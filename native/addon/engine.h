// The N-API class behind NativeEngine (lib/native/binding.ts): one model on one backend, chosen at
// construction. Argument checks and error kinds only; the numerics live behind the Backend
// interface (native/common/backend.h).
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "../common/backend.h"
#include "../common/decode.h"

namespace jg {

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Init(Napi::Env env);
  // new Engine(config, {backend?: 'cpu' | 'cuda', device?: number, dtype?: 'F32' | 'BF16'})
  explicit Engine(const Napi::CallbackInfo& info);

  // Claimed by each native call for its whole duration; a second call while one runs is refused.
  bool try_claim() {
    if (busy_.exchange(true)) return false;
    abort_.store(false);
    return true;
  }
  void unclaim() { busy_.store(false); }
  bool busy() const { return busy_.load(); }
  // The model; throws DISPOSED after dispose().
  Backend& backend();
  bool has_backend() const { return backend_ != nullptr; }
  // Set by cancel(); long loops poll it between steps.
  const std::atomic<bool>* abort_flag() const { return &abort_; }

 private:
  Napi::Value ParamInfo(const Napi::CallbackInfo& info);
  Napi::Value NumParams(const Napi::CallbackInfo& info);
  Napi::Value TokensComputed(const Napi::CallbackInfo& info);
  Napi::Value DeviceInfo(const Napi::CallbackInfo& info);
  Napi::Value MemoryBytes(const Napi::CallbackInfo& info);
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

  std::unique_ptr<Backend> backend_;
  std::atomic<bool> busy_{false};
  std::atomic<bool> abort_{false};
};

// decode(prompts, promptStarts, seeds, options, onProgress): checks the arguments, claims the engine
// and queues the decoding loop. `forward` replaces the backend's forward pass (see ForwardHook);
// `owner` (the Trainer whose state `forward` fills) stays referenced until the call settles.
Napi::Value queue_decode(const Napi::CallbackInfo& info, Engine* engine, ForwardHook forward = {},
                         Napi::Object owner = Napi::Object());

}  // namespace jg
