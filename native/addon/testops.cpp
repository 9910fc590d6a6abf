// testOp(backend, op, dtype, inputs, sizes): one op of the table (native/common/ops.h) on one
// backend, on small host arrays, for the backend parity tests (test/gpu) in the style of ggml's
// test-backend-ops. Converts between JavaScript and OpArgs/OpOutputs and dispatches; each
// backend's test_op (native/<backend>/testops.cpp) runs the op. Not part of the public API.
#include <napi.h>

#include <string>

#include "../common/ops.h"
#include "../cpu/ops.h"
#include "errors.h"
#ifdef JUSTGRPO_CUDA
#include "../cuda/ops.h"
#endif

namespace jg {

namespace {

using TestOpFn = bool (*)(Op, const OpArgs&, OpOutputs&);

// The backends' test_op by name; null where this build lacks the backend.
TestOpFn backend_test_op(const std::string& backend) {
  if (backend == "cpu") return &cpu::test_op;
#ifdef JUSTGRPO_CUDA
  if (backend == "cuda") return &cuda::test_op;
#endif
  return nullptr;
}

OpArgs args_from_js(const Napi::Object& inputs, const Napi::Object& sizes, DType dtype) {
  OpArgs a;
  a.dtype = dtype;
  Napi::Array names = inputs.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    const std::string name = names.Get(i).As<Napi::String>();
    Napi::Value v = inputs.Get(name);
    if (!v.IsTypedArray()) continue;
    auto t = v.As<Napi::TypedArray>();
    if (t.TypedArrayType() == napi_float32_array) {
      auto x = v.As<Napi::Float32Array>();
      a.f32[name].assign(x.Data(), x.Data() + x.ElementLength());
    } else if (t.TypedArrayType() == napi_int32_array) {
      auto x = v.As<Napi::Int32Array>();
      a.i32[name].assign(x.Data(), x.Data() + x.ElementLength());
    } else if (t.TypedArrayType() == napi_float64_array) {
      auto x = v.As<Napi::Float64Array>();
      a.f64[name].assign(x.Data(), x.Data() + x.ElementLength());
    }
  }
  names = sizes.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    const std::string name = names.Get(i).As<Napi::String>();
    if (sizes.Get(name).IsNumber()) a.sizes[name] = sizes.Get(name).As<Napi::Number>().DoubleValue();
  }
  return a;
}

template <typename T, typename A>
void set_arrays(Napi::Env env, Napi::Object& out, const std::map<std::string, std::vector<T>>& arrays) {
  for (const auto& [k, v] : arrays) {
    auto arr = A::New(env, v.size());
    std::copy(v.begin(), v.end(), arr.Data());
    out.Set(k, arr);
  }
}

}  // namespace

Napi::Value TestOp(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("testOp", {
    Napi::Env env = info.Env();
    if (info.Length() < 5 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString() || !info[3].IsObject() ||
        !info[4].IsObject())
      throw EngineError("testOp: expected (backend, op, dtype, inputs, sizes)");
    const std::string backend = info[0].As<Napi::String>(), name = info[1].As<Napi::String>();
    int op = 0;
    while (op < OP_COUNT && name != OP_NAMES[op]) op++;
    JG_CHECK(op < OP_COUNT, "testOp: unknown op ", name);
    const TestOpFn run = backend_test_op(backend);
    JG_CHECK_AS(ErrorKind::UNSUPPORTED, run, "testOp: this build has no backend ", backend);
    OpOutputs o;
    const bool ran = run(static_cast<Op>(op), args_from_js(info[3].As<Napi::Object>(), info[4].As<Napi::Object>(),
                                                           dtype_from_name(info[2].As<Napi::String>())), o);
    JG_CHECK_AS(ErrorKind::UNSUPPORTED, ran, "testOp: backend ", backend, " does not have op ", name);
    Napi::Object out = Napi::Object::New(env);
    set_arrays<float, Napi::Float32Array>(env, out, o.f32);
    set_arrays<int32_t, Napi::Int32Array>(env, out, o.i32);
    set_arrays<double, Napi::Float64Array>(env, out, o.f64);
    return out;
  })
}

}  // namespace jg
