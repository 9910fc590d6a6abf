// The AsyncWorkers behind every Promise-returning Engine and Trainer call. The engine is claimed
// before queueing and stays claimed (one call at a time) and referenced, with the calling object
// (`owner`, e.g. a Trainer), until the call settles.
#pragma once

#include <napi.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <mutex>
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
    if (on_progress.IsFunction()) {
      tsfn_ = Napi::ThreadSafeFunction::New(env, on_progress.As<Napi::Function>(), "decode progress", 0, 1);
      on_progress_ = Napi::Persistent(on_progress.As<Napi::Function>());
    }
  }
  ~DecodeTask() override { engine_->Unref(); }

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      Progress progress;
      if (tsfn_) {
        const int64_t L = gen_length_;
        progress = [this, L](const DecodeProgress& p) {
          progress_->push({p.committed, p.total, std::vector<int32_t>(p.canvas, p.canvas + L)});
          // Non-blocking: the JavaScript thread drains the queue when it gets to it; the decoder
          // never waits for a listener.
          auto* ref = new std::shared_ptr<ProgressQueue>(progress_);
          if (tsfn_.NonBlockingCall(ref, &Deliver) != napi_ok) delete ref;
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
  };

  // Updates on their way to the listener: the worker pushes, the JavaScript thread drains (from a
  // thread-safe call, and once more before the call settles, so every update reaches the listener
  // before the Promise does and none after it). Bounded: past kMax pending, the oldest are dropped.
  struct ProgressQueue {
    static constexpr size_t kMax = 256;
    std::mutex mu;
    std::deque<Message> pending;
    bool settled = false;
    void push(Message m) {
      std::lock_guard<std::mutex> lock(mu);
      if (pending.size() == kMax) pending.pop_front();
      pending.push_back(std::move(m));
    }
    // The pending updates, or none once the call has settled.
    std::deque<Message> take(bool settle) {
      std::lock_guard<std::mutex> lock(mu);
      std::deque<Message> out;
      if (!settled) out.swap(pending);
      settled = settled || settle;
      return out;
    }
  };

  static void Call(Napi::Env env, Napi::Function fn, std::deque<Message> messages) {
    for (const Message& m : messages) {
      auto canvas = Napi::Int32Array::New(env, m.canvas.size());
      std::copy(m.canvas.begin(), m.canvas.end(), canvas.Data());
      fn.Call({Napi::Number::New(env, double(m.committed)), Napi::Number::New(env, double(m.total)), canvas});
    }
  }

  static void Deliver(Napi::Env env, Napi::Function fn, std::shared_ptr<ProgressQueue>* ref) {
    if (env != nullptr && fn != nullptr) Call(env, fn, (*ref)->take(false));
    delete ref;
  }

  template <typename T, typename A>
  static A to_array(Napi::Env env, const std::vector<T>& v) {
    A a = A::New(env, v.size());
    std::copy(v.begin(), v.end(), a.Data());
    return a;
  }

  // On the JavaScript thread, before the Promise settles: the last updates reach the listener now.
  void finish() {
    engine_->unclaim();
    if (tsfn_) {
      std::deque<Message> last = progress_->take(true);
      if (!on_progress_.IsEmpty()) {
        try {
          Call(Env(), on_progress_.Value(), std::move(last));
        } catch (const Napi::Error&) {
          // A listener that throws does not change the call's outcome.
        }
      }
      tsfn_.Release();
    }
  }

  Napi::Promise::Deferred deferred_;
  Engine* engine_;
  int64_t gen_length_;
  Run run_;
  DecodeResult result_;
  Napi::ObjectReference owner_;
  Napi::ThreadSafeFunction tsfn_;
  Napi::FunctionReference on_progress_;
  std::shared_ptr<ProgressQueue> progress_ = std::make_shared<ProgressQueue>();
  js::CallError error_;
};

}  // namespace jg
