#include "comm.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "errors.h"

namespace jg {

using namespace js;

namespace {

Napi::FunctionReference* comm_ctor = nullptr;

// A collective on the libuv pool: `work` runs there, `result` builds the value on the JS thread.
class CommTask : public Napi::AsyncWorker {
 public:
  CommTask(Napi::Env env, const char* name, std::function<void()> work, std::function<Napi::Value(Napi::Env)> result,
           Napi::Object owner)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        name_(name),
        work_(std::move(work)),
        result_(std::move(result)),
        owner_(Napi::Persistent(owner)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      work_();
    } catch (const std::exception&) {
      error_ = CallError::current(name_);
      SetError(error_.message);
    }
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    deferred_.Resolve(result_ ? result_(Env()) : Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    Napi::Error err = e;
    error_.annotate(err);
    deferred_.Reject(err.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  const char* name_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> result_;
  Napi::ObjectReference owner_;
  CallError error_;
};

Napi::Promise queue(Napi::Env env, const char* name, std::function<void()> work,
                    std::function<Napi::Value(Napi::Env)> result, Napi::Object owner) {
  auto* task = new CommTask(env, name, std::move(work), std::move(result), owner);
  Napi::Promise p = task->promise();
  task->Queue();
  return p;
}

double timeout_arg(const Napi::Value& v) {
  if (!v.IsNumber() || !(v.As<Napi::Number>().DoubleValue() > 0))
    expected("a number of seconds > 0", "timeoutSeconds", describe(v));
  return v.As<Napi::Number>().DoubleValue();
}

std::string what_arg(const Napi::Value& v) { return v.IsString() ? v.As<Napi::String>().Utf8Value() : "a collective"; }

}  // namespace

Napi::Function Comm::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "Communicator",
                                 {
                                     InstanceAccessor("rank", &Comm::Rank, nullptr),
                                     InstanceAccessor("size", &Comm::Size, nullptr),
                                     InstanceAccessor("library", &Comm::Library, nullptr),
                                     InstanceMethod("allReduce", &Comm::AllReduce),
                                     InstanceMethod("allReduceF32", &Comm::AllReduceF32),
                                     InstanceMethod("reduceScatterF32", &Comm::ReduceScatterF32),
                                     InstanceMethod("allGatherF32", &Comm::AllGatherF32),
                                     InstanceMethod("broadcast", &Comm::Broadcast),
                                     InstanceMethod("barrier", &Comm::Barrier),
                                     InstanceMethod("abort", &Comm::Abort),
                                     InstanceMethod("finalize", &Comm::Finalize),
                                 });
  comm_ctor = new Napi::FunctionReference(Napi::Persistent(f));
  env.AddCleanupHook([] { delete comm_ctor; });
  return f;
}

// new Communicator(): MPI_COMM_WORLD, initialising MPI (once per process).
Comm::Comm(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Comm>(info) {
  try {
    comm_ = &Communicator::world();
  } catch (const std::exception&) {
    CallError::current("Communicator").to_js(info.Env()).ThrowAsJavaScriptException();
  }
}

Communicator& Comm::from_js(const Napi::Value& v, const char* name) {
  if (!v.IsObject() || !comm_ctor || !v.As<Napi::Object>().InstanceOf(comm_ctor->Value()))
    expected("a Communicator", name, describe(v));
  Comm* c = Napi::ObjectWrap<Comm>::Unwrap(v.As<Napi::Object>());
  if (!c->comm_) expected("a working Communicator", name, "one whose MPI failed to start");
  return *c->comm_;
}

Napi::Value Comm::Rank(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), comm_ ? comm_->rank() : 0); }
Napi::Value Comm::Size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), comm_ ? comm_->size() : 1); }
Napi::Value Comm::Library(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), comm_ ? comm_->library() : "");
}

// allReduce(Float64Array, 'sum' | 'max', timeoutSeconds, what) -> Promise<Float64Array>: a new
// array with the element-wise sum (or max) over ranks.
Napi::Value Comm::AllReduce(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("allReduce", {
    Communicator& c = from_js(Value(), "this");
    auto data = std::make_shared<std::vector<double>>(typed<double>(info[0], napi_float64_array, "data"));
    const std::string op = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    if (op != "sum" && op != "max") expected("'sum' or 'max'", "op", describe(info[1]));
    const double timeout = timeout_arg(info[2]);
    const std::string what = what_arg(info[3]);
    const bool sum = op == "sum";
    return queue(info.Env(), "allReduce",
        [&c, data, sum, timeout, what] {
          if (sum) c.all_reduce_sum(data->data(), static_cast<int64_t>(data->size()), timeout, what);
          else c.all_reduce_max(data->data(), static_cast<int64_t>(data->size()), timeout, what);
        },
        [data](Napi::Env env) -> Napi::Value {
          auto out = Napi::Float64Array::New(env, data->size());
          if (!data->empty()) std::memcpy(out.Data(), data->data(), data->size() * sizeof(double));
          return out;
        }, Value());
  })
}

// allReduceF32(Float32Array, timeoutSeconds, what) -> Promise<void>: the sum over ranks, in place
// (the array is held until the call settles).
Napi::Value Comm::AllReduceF32(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("allReduceF32", {
    Communicator& c = from_js(Value(), "this");
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      expected("a Float32Array", "data", describe(info[0]));
    auto arr = info[0].As<Napi::Float32Array>();
    float* p = arr.Data();
    const int64_t n = static_cast<int64_t>(arr.ElementLength());
    const double timeout = timeout_arg(info[1]);
    const std::string what = what_arg(info[2]);
    auto keep = std::make_shared<Napi::ObjectReference>(Napi::Persistent(arr.As<Napi::Object>()));
    return queue(info.Env(), "allReduceF32", [&c, p, n, timeout, what] { c.all_reduce_sum(p, n, timeout, what); },
                 [keep](Napi::Env env) -> Napi::Value { return env.Undefined(); }, Value());
  })
}

// reduceScatterF32(Float32Array, timeoutSeconds) and allGatherF32(same): the ZeRO-1 step's
// collectives (MpiGradComm, as a Training's step calls them) in place on an array of size() equal blocks: afterwards block rank()
// holds the sum over ranks of every rank's block rank() (the other blocks undefined), or every
// block r holds rank r's block r.
Napi::Value Comm::ReduceScatterF32(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("reduceScatterF32", { return Blocks(info, true); })
}

Napi::Value Comm::AllGatherF32(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("allGatherF32", { return Blocks(info, false); })
}

Napi::Value Comm::Blocks(const Napi::CallbackInfo& info, bool reduce_scatter) {
  Communicator& c = from_js(Value(), "this");
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    expected("a Float32Array", "data", describe(info[0]));
  auto arr = info[0].As<Napi::Float32Array>();
  float* p = arr.Data();
  const int64_t n = static_cast<int64_t>(arr.ElementLength());
  if (n % c.size() != 0)
    expected(str_cat("a Float32Array of a multiple of ", c.size(), " elements (one block per rank)"), "data", str_cat(n, " elements"));
  const int64_t block = n / c.size();
  const double timeout = timeout_arg(info[1]);
  auto keep = std::make_shared<Napi::ObjectReference>(Napi::Persistent(arr.As<Napi::Object>()));
  return queue(info.Env(), reduce_scatter ? "reduceScatterF32" : "allGatherF32",
      [&c, p, block, timeout, reduce_scatter] {
        // Through the GradComm a Training's step gets (Backend::make_grad_comm's default).
        MpiGradComm g(c, timeout);
        if (reduce_scatter) g.reduce_scatter_sum(p, block);
        else g.all_gather(p, block * static_cast<int64_t>(sizeof(float)));
      },
      [keep](Napi::Env env) -> Napi::Value { return env.Undefined(); }, Value());
}

// broadcast(Uint8Array, root, timeoutSeconds, what) -> Promise<Uint8Array>: root's bytes on every
// rank (each rank passes an array of the same length).
Napi::Value Comm::Broadcast(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("broadcast", {
    Communicator& c = from_js(Value(), "this");
    auto data = std::make_shared<std::vector<uint8_t>>(typed<uint8_t>(info[0], napi_uint8_array, "data"));
    if (!info[1].IsNumber()) expected("a rank", "root", describe(info[1]));
    const int root = info[1].As<Napi::Number>().Int32Value();
    const double timeout = timeout_arg(info[2]);
    const std::string what = what_arg(info[3]);
    return queue(info.Env(), "broadcast",
        [&c, data, root, timeout, what] { c.broadcast(data->data(), static_cast<int64_t>(data->size()), root, timeout, what); },
        [data](Napi::Env env) -> Napi::Value {
          auto out = Napi::Uint8Array::New(env, data->size());
          if (!data->empty()) std::memcpy(out.Data(), data->data(), data->size());
          return out;
        }, Value());
  })
}

// barrier(timeoutSeconds, what) -> Promise<void>.
Napi::Value Comm::Barrier(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("barrier", {
    Communicator& c = from_js(Value(), "this");
    const double timeout = timeout_arg(info[0]);
    const std::string what = what_arg(info[1]);
    return queue(info.Env(), "barrier", [&c, timeout, what] { c.barrier(timeout, what); }, nullptr, Value());
  })
}

// abort(code): ends every rank of the job (MPI_Abort); does not return.
Napi::Value Comm::Abort(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("abort", {
    Communicator& c = from_js(Value(), "this");
    c.abort(info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1);
  })
}

// finalize(): MPI_Finalize, once every rank is done.
Napi::Value Comm::Finalize(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("finalize", {
    from_js(Value(), "this").finalize();
    return info.Env().Undefined();
  })
}

}  // namespace jg
