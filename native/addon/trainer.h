// The N-API class behind NativeTrainer (lib/native/binding.ts): gradients, AdamW state and the
// training workspace for one Engine's model, made by its backend (Backend::make_training). The
// trainer keeps its engine alive and claims it for the whole of every call, so a training call and
// an engine call never run at once. Argument checks only; the numerics are the backend's.
#pragma once

#include <napi.h>

#include <memory>

#include "../common/backend.h"
#include "engine.h"

namespace jg {

class Trainer : public Napi::ObjectWrap<Trainer> {
 public:
  // engine_ctor: the Engine class, to check that the first constructor argument is one.
  static Napi::Function Init(Napi::Env env, Napi::Function engine_ctor);
  explicit Trainer(const Napi::CallbackInfo& info);

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
  Napi::Value ShardOptimizer(const Napi::CallbackInfo& info);
  Napi::Value GetOptimizerShard(const Napi::CallbackInfo& info);
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
  // The training state and its engine's model, checking that neither is disposed.
  Training& training();
  Backend& backend();
  // Runs a synchronous method body with the engine claimed.
  template <typename F>
  auto claimed(F&& body) -> decltype(body());

  Engine* engine_ = nullptr;
  Napi::ObjectReference engine_ref_;
  std::unique_ptr<Training> training_;  // null after dispose()
  // The collectives of data-parallel steps (Backend::make_grad_comm), made on the first step given
  // a communicator; one per trainer, as a job has one world.
  std::shared_ptr<GradComm> grad_comm_;
};

}  // namespace jg
