// The N-API class behind lib/native/binding.ts: one Engine per loaded model.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "../cpu/decode.h"
#include "../cpu/model.h"

namespace jg {

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Engine(const Napi::CallbackInfo& info);

  // Claimed by each native call for its whole duration; a second call while one runs is refused.
  bool try_claim() {
    if (busy_.exchange(true)) return false;
    abort_.store(false);
    return true;
  }
  void unclaim() { busy_.store(false); }
  cpu::Model& model() { return *model_; }
  bool has_model() const { return model_ != nullptr; }  // false after dispose()
  // Set by cancel(); long loops poll it between steps.
  const std::atomic<bool>* abort_flag() const { return &abort_; }
  // Bumped whenever the weights change (loadTensors, initRandom, setParam, a trainer's step), so
  // activations kept from a forward pass can be checked against the weights that made them.
  uint64_t weights_version() const { return weights_version_.load(); }
  void weights_changed() { weights_version_++; }

 private:
  Napi::Value ParamInfo(const Napi::CallbackInfo& info);
  Napi::Value NumParams(const Napi::CallbackInfo& info);
  Napi::Value TokensComputed(const Napi::CallbackInfo& info);
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

  cpu::Model& live_model(const Napi::Env& env);

  std::unique_ptr<cpu::Model> model_;
  std::atomic<bool> busy_{false};
  std::atomic<bool> abort_{false};
  std::atomic<uint64_t> weights_version_{0};
  cpu::TrainWorkspace logprob_ws_;  // the head's chunked log-softmax for logprobs()
};

// decode(prompts, promptStarts, seeds, options, onProgress): checks the arguments, claims the engine
// and queues the decoding loop. `forward` replaces the model's forward pass at each step (see
// cpu::decode); `owner` (the Trainer whose buffers `forward` fills) stays referenced until the call
// settles. The engine must have its model.
Napi::Value queue_decode(const Napi::CallbackInfo& info, Engine* engine, cpu::ForwardFn forward = {},
                         Napi::Object owner = Napi::Object());

}  // namespace jg
