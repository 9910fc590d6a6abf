// The AsyncWorkers behind every Promise-returning Engine and Trainer call. The engine is claimed
// before queueing and stays claimed (one call at a time) and referenced, with the calling object
// (`owner`, e.g. a Trainer), until the call settles.
#pragma once

#include <napi.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../common/check.h"
#include "../common/decode.h"
#include "engine.h"
#include "errors.h"

namespace jg {

// Runs `work` on the libuv pool, names the failing call in the error, and resolves with `result()`
// built on the JS thread.
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
    } catch (const std::exception&) {
      error_ = js::CallError::current(name_);
      SetError(error_.message);
    }
  }
  void OnOK() override {
    engine_->unclaim();
    Napi::HandleScope scope(Env());
    deferred_.Resolve(result_ ? result_(Env()) : Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    engine_->unclaim();
    Napi::Error err = e;
    error_.annotate(err);
    deferred_.Reject(err.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Engine* engine_;
  Napi::ObjectReference owner_;
  const char* name_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> result_;
  js::CallError error_;
};

// Claims the engine and queues a task; a failure before queueing releases the claim. Throws BUSY
// when another call holds the engine.
template <typename Task, typename... Args>
Napi::Promise queue_claimed(Napi::Env env, Engine* engine, Args&&... args) {
  if (!engine->try_claim()) JG_FAIL(ErrorKind::BUSY, "The model is busy with another call");
  try {
    auto* task = new Task(env, engine, std::forward<Args>(args)...);
    Napi::Promise p = task->promise();
    task->Queue();
    return p;
  } catch (...) {
    engine->unclaim();
    throw;
  }
}

inline Napi::Promise queue_task(Napi::Env env, Engine* engine, const char* name, std::function<void()> work,
                                std::function<Napi::Value(Napi::Env)> result, Napi::Object owner = Napi::Object()) {
  return queue_claimed<EngineTask>(env, engine, name, std::move(work), std::move(result), owner);
}

// The decoding loop off the event loop: `run` decodes (on the libuv pool), with progress through a
// thread-safe function (released on success and on error); cancellation is the engine's abort flag,
// which `run` passes on. Resolves with {tokens, logprobs, entropies, commitStep, nfe, transfers,
// maxSteps, forwardTokens}.
class DecodeTask : public Napi::AsyncWorker {
 public:
  using Progress = std::function<void(const DecodeProgress&)>;
  using Run = std::function<DecodeResult(const Progress&)>;

  DecodeTask(Napi::Env env, Engine* engine, int64_t gen_length, Run run, Napi::Value on_progress,
             Napi::Object owner = Napi::Object())
      : Napi::AsyncWorker(env, "decode"),
        deferred_(Napi::Promise::Deferred::New(env)),
        engine_(engine),
        gen_length_(gen_length),
        run_(std::move(run)) {
    engine_->Ref();
    if (!owner.IsEmpty()) owner_ = Napi::Persistent(owner);
    if (on_progress.IsFunction())
      tsfn_ = Napi::ThreadSafeFunction::New(env, on_progress.As<Napi::Function>(), "decode progress", 0, 1);
  }
  ~DecodeTask() override { engine_->Unref(); }

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      Progress progress;
      if (tsfn_) {
        const int64_t L = gen_length_;
        progress = [this, L](const DecodeProgress& p) {
          auto* msg = new Message{p.committed, p.total, std::vector<int32_t>(p.canvas, p.canvas + L), settled_};
          // Non-blocking: a slow listener drops updates instead of stalling the decoder.
          if (tsfn_.NonBlockingCall(msg, &Deliver) != napi_ok) delete msg;
        };
      }
      result_ = run_(progress);
    } catch (const std::exception&) {
      error_ = js::CallError::current("decode");
      SetError(error_.message);
    }
  }

  void OnOK() override {
    finish();
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Object out = Napi::Object::New(env);
    out.Set("tokens", to_array<int32_t, Napi::Int32Array>(env, result_.tokens));
    out.Set("logprobs", to_array<float, Napi::Float32Array>(env, result_.logprobs));
    out.Set("entropies", to_array<float, Napi::Float32Array>(env, result_.entropies));
    out.Set("commitStep", to_array<int32_t, Napi::Int32Array>(env, result_.commit_step));
    out.Set("nfe", to_array<int32_t, Napi::Int32Array>(env, result_.nfe));
    out.Set("transfers", to_array<int32_t, Napi::Int32Array>(env, result_.transfers));
    out.Set("maxSteps", Napi::Number::New(env, double(result_.max_steps)));
    out.Set("forwardTokens", Napi::Number::New(env, double(result_.forward_tokens)));
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override {
    finish();
    Napi::Error err = e;
    error_.annotate(err);
    deferred_.Reject(err.Value());
  }

 private:
  struct Message {
    int64_t committed, total;
    std::vector<int32_t> canvas;
    std::shared_ptr<std::atomic<bool>> settled;
  };

  // Runs on the JavaScript thread; an update still queued when the call settled is dropped, so no
  // progress callback ever follows the Promise's resolution.
  static void Deliver(Napi::Env env, Napi::Function fn, Message* msg) {
    if (env != nullptr && fn != nullptr && !msg->settled->load()) {
      auto canvas = Napi::Int32Array::New(env, msg->canvas.size());
      std::copy(msg->canvas.begin(), msg->canvas.end(), canvas.Data());
      fn.Call({Napi::Number::New(env, double(msg->committed)), Napi::Number::New(env, double(msg->total)), canvas});
    }
    delete msg;
  }

  template <typename T, typename A>
  static A to_array(Napi::Env env, const std::vector<T>& v) {
    A a = A::New(env, v.size());
    std::copy(v.begin(), v.end(), a.Data());
    return a;
  }

  void finish() {
    settled_->store(true);
    engine_->unclaim();
    if (tsfn_) tsfn_.Release();
  }

  Napi::Promise::Deferred deferred_;
  Engine* engine_;
  int64_t gen_length_;
  Run run_;
  DecodeResult result_;
  Napi::ObjectReference owner_;
  Napi::ThreadSafeFunction tsfn_;
  std::shared_ptr<std::atomic<bool>> settled_ = std::make_shared<std::atomic<bool>>(false);
  js::CallError error_;
};

}  // namespace jg
