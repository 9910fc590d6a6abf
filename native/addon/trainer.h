// The N-API class behind NativeTrainer (lib/native/binding.ts): gradients, AdamW state and the
// training workspace for one Engine's model. The trainer keeps its engine alive and claims it for
// the whole of every call, so a training call and an engine call never run at once.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "../common/buffer.h"
#include "../cpu/model.h"
#include "engine.h"

namespace jg {

class Trainer : public Napi::ObjectWrap<Trainer> {
 public:
  // engine_ctor: the Engine class, to check that the first constructor argument is one.
  static Napi::Function Init(Napi::Env env, Napi::Function engine_ctor);
  explicit Trainer(const Napi::CallbackInfo& info);

  // Gradients and AdamW moments share the parameters' layout (ParamLayout offsets); the moments
  // are fp32 whatever the weights were loaded from.
  struct State {
    FloatBuffer grads, m, v;
    cpu::TrainWorkspace workspace;
    int64_t step = 0;           // AdamW updates done; the next uses step + 1 for bias correction
    bool grads_zeroed = false;  // zeroGrad() was called: the next use zeroes first (in the worker)
    // The last rollout's kept forwards: steps 0..kept_steps-1, made under weights_version
    // kept_version; buffers stay allocated for the next rollout.
    std::vector<cpu::KeptForward> kept;
    int64_t kept_steps = 0, kept_bytes = 0;
    uint64_t kept_version = 0;
    explicit State(bool checkpoint) : workspace(checkpoint) {}
    float* live_grads();        // the gradients, zeroed first if zeroGrad() is pending
  };

 private:
  Napi::Value ZeroGrad(const Napi::CallbackInfo& info);
  Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info);
  Napi::Value CrossEntropyLoss(const Napi::CallbackInfo& info);
  Napi::Value PolicyLossBackward(const Napi::CallbackInfo& info);
  Napi::Value PolicyLoss(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value GetGrad(const Napi::CallbackInfo& info);
  Napi::Value SetGrad(const Napi::CallbackInfo& info);
  Napi::Value GetMoments(const Napi::CallbackInfo& info);
  Napi::Value SetMoments(const Napi::CallbackInfo& info);
  Napi::Value GetStepCount(const Napi::CallbackInfo& info);
  void SetStepCount(const Napi::CallbackInfo& info, const Napi::Value& value);
  Napi::Value SaveMoments(const Napi::CallbackInfo& info);
  Napi::Value LoadMoments(const Napi::CallbackInfo& info);
  Napi::Value WorkspaceBytes(const Napi::CallbackInfo& info);
  Napi::Value Rollout(const Napi::CallbackInfo& info);
  Napi::Value PolicyLossBackwardKept(const Napi::CallbackInfo& info);
  Napi::Value KeptSteps(const Napi::CallbackInfo& info);
  Napi::Value ReleaseKept(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  Napi::Value Loss(const Napi::CallbackInfo& info, const char* name, bool backward, bool policy);
  // The engine's model, checking that neither the trainer nor the engine is disposed.
  cpu::Model& live_model();
  // Runs a synchronous method body with the engine claimed.
  template <typename F>
  auto claimed(F&& body) -> decltype(body());

  Engine* engine_ = nullptr;
  Napi::ObjectReference engine_ref_;
  std::unique_ptr<State> state_;  // null after dispose()
};

}  // namespace jg
