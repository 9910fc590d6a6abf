// The AsyncWorker behind every Promise-returning engine and trainer call: runs `work` on the libuv
// pool, names the failing call in the error, and resolves with `result()` built on the JS thread.
// The engine was claimed before queueing and stays claimed (one call at a time) and referenced, with
// the calling object (`owner`, e.g. a Trainer), until the call settles.
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <utility>

#include "../common/check.h"
#include "engine.h"

namespace jg {

class EngineTask : public Napi::AsyncWorker {
 public:
  EngineTask(Napi::Env env, Engine* engine, const char* name, std::function<void()> work,
             std::function<Napi::Value(Napi::Env)> result, Napi::Object owner = Napi::Object())
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        engine_(engine),
        name_(name),
        work_(std::move(work)),
        result_(std::move(result)) {
    engine_->Ref();
    if (!owner.IsEmpty()) owner_ = Napi::Persistent(owner);
  }
  ~EngineTask() override { engine_->Unref(); }

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      SetError(std::string(name_) + ": " + e.what());
    }
  }
  void OnOK() override {
    engine_->unclaim();
    Napi::HandleScope scope(Env());
    deferred_.Resolve(result_ ? result_(Env()) : Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    engine_->unclaim();
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Engine* engine_;
  Napi::ObjectReference owner_;
  const char* name_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> result_;
};

// Claims the engine and queues a task; a failure before queueing releases the claim. Throws
// EngineError when another call holds the engine.
inline Napi::Promise queue_task(Napi::Env env, Engine* engine, const char* name, std::function<void()> work,
                                std::function<Napi::Value(Napi::Env)> result, Napi::Object owner = Napi::Object()) {
  if (!engine->try_claim()) throw EngineError("The model is busy with another call");
  try {
    auto* task = new EngineTask(env, engine, name, std::move(work), std::move(result), owner);
    Napi::Promise p = task->promise();
    task->Queue();
    return p;
  } catch (...) {
    engine->unclaim();
    throw;
  }
}

}  // namespace jg
