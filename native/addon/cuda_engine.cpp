// Compiled to nothing unless the build has the CUDA backend (JUSTGRPO_CUDA): binding.gyp's CPU
// build globs native/addon/*.cpp too.
#ifdef JUSTGRPO_CUDA
#include "cuda_engine.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "../common/check.h"
#include "../common/tensor_io.h"
#include "../cuda/decode.h"
#include "args.h"
#include "task.h"

namespace jg {

using namespace js;

namespace {

const ParamInfo* param_named(const cuda::Model& m, const std::string& name) {
  const ParamInfo* p = m.layout().find(name);
  JG_CHECK(p, "Unknown tensor ", name);
  return p;
}

}  // namespace

#define JG_CUDA_METHOD_BODY(name, ...)                                                            \
  try {                                                                                           \
    __VA_ARGS__                                                                                   \
  } catch (const std::exception& e) {                                                             \
    Napi::Error::New(info.Env(), std::string(name ": ") + e.what()).ThrowAsJavaScriptException(); \
    return info.Env().Undefined();                                                                \
  }

Napi::Function CudaEngine::Init(Napi::Env env) {
  return DefineClass(env, "CudaEngine",
                     {
                         InstanceMethod("paramInfo", &CudaEngine::ParamInfo),
                         InstanceMethod("numParams", &CudaEngine::NumParams),
                         InstanceMethod("tokensComputed", &CudaEngine::TokensComputed),
                         InstanceMethod("deviceInfo", &CudaEngine::DeviceInfo),
                         InstanceMethod("loadTensors", &CudaEngine::LoadTensors),
                         InstanceMethod("saveSafetensors", &CudaEngine::SaveSafetensors),
                         InstanceMethod("forward", &CudaEngine::Forward),
                         InstanceMethod("initRandom", &CudaEngine::InitRandom),
                         InstanceMethod("getParam", &CudaEngine::GetParam),
                         InstanceMethod("setParam", &CudaEngine::SetParam),
                         InstanceMethod("decode", &CudaEngine::Decode),
                         InstanceMethod("logprobs", &CudaEngine::Logprobs),
                         InstanceMethod("cancel", &CudaEngine::Cancel),
                         InstanceMethod("dispose", &CudaEngine::Dispose),
                     });
}

CudaEngine::CudaEngine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CudaEngine>(info) {
  try {
    if (info.Length() < 1 || !info[0].IsObject()) throw EngineError("Expected a config object");
    int device = 0;
    DType dtype = DType::BF16;
    if (info.Length() >= 2 && info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      device = static_cast<int>(get_double_or(o, "device", 0));
      if (o.Get("dtype").IsString()) {
        const std::string t = o.Get("dtype").As<Napi::String>().Utf8Value();
        if (t == "F32") dtype = DType::F32;
        else if (t == "BF16") dtype = DType::BF16;
        else throw EngineError("Expected 'BF16' or 'F32' for `dtype`");
      }
    }
    model_ = std::make_unique<cuda::Model>(config_from_js(info[0].As<Napi::Object>()), device, dtype);
  } catch (const std::exception& e) {
    Napi::Error::New(info.Env(), std::string("CudaEngine: ") + e.what()).ThrowAsJavaScriptException();
  }
}

cuda::Model& CudaEngine::live_model() {
  if (!model_) throw EngineError("Model is disposed");
  return *model_;
}

Napi::Value CudaEngine::ParamInfo(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("paramInfo", {
    Napi::Env env = info.Env();
    const auto& params = live_model().layout().params();
    Napi::Array out = Napi::Array::New(env, params.size());
    for (size_t i = 0; i < params.size(); i++) {
      Napi::Object p = Napi::Object::New(env);
      p.Set("name", params[i].name);
      Napi::Array shape = Napi::Array::New(env, params[i].shape.size());
      for (size_t j = 0; j < params[i].shape.size(); j++) shape.Set(j, Napi::Number::New(env, double(params[i].shape[j])));
      p.Set("shape", shape);
      out.Set(i, p);
    }
    return out;
  })
}

Napi::Value CudaEngine::TokensComputed(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("tokensComputed", { return Napi::Number::New(info.Env(), double(live_model().tokens_computed())); })
}

Napi::Value CudaEngine::NumParams(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("numParams", { return Napi::Number::New(info.Env(), double(live_model().n_params())); })
}

// deviceInfo() -> {device, name, totalMemory, computeCapability, dtype}
Napi::Value CudaEngine::DeviceInfo(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("deviceInfo", {
    Napi::Env env = info.Env();
    cuda::Model& m = live_model();
    cudaDeviceProp prop;
    JG_CUDA_CHECK(cudaGetDeviceProperties(&prop, m.device()));
    Napi::Object o = Napi::Object::New(env);
    o.Set("device", m.device());
    o.Set("name", std::string(prop.name));
    o.Set("totalMemory", double(prop.totalGlobalMem));
    o.Set("computeCapability", str_cat(prop.major, ".", prop.minor));
    o.Set("dtype", m.dtype() == DType::F32 ? "F32" : "BF16");
    return o;
  })
}

Napi::Value CudaEngine::LoadTensors(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("loadTensors", {
    Napi::Env env = info.Env();
    cuda::Model& m = live_model();
    std::string path = get_string(info[0], "path");
    if (!info[1].IsArray()) throw EngineError("Expected an array for `tensors`");
    struct Item {
      const jg::ParamInfo* param;
      int64_t offset;
      DType dtype;
    };
    std::vector<Item> items;
    Napi::Array arr = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Object t = tensor_entry(arr, i);
      const jg::ParamInfo* p = param_named(m, get_string(t.Get("name"), "name"));
      items.push_back({p, get_int(t, "offset"), dtype_from_name(get_string(t.Get("dtype"), "dtype"))});
    }
    return queue_task(env, this, "loadTensors",
                 [&m, path, items] {
                   for (const Item& it : items) m.load_tensor(*it.param, it.dtype, path, it.offset);
                 },
                 nullptr);
  })
}

Napi::Value CudaEngine::SaveSafetensors(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("saveSafetensors", {
    Napi::Env env = info.Env();
    cuda::Model& m = live_model();
    std::string path = get_string(info[0], "path");
    if (!info[1].IsBuffer()) throw EngineError("Expected a Buffer for `header`");
    auto hb = info[1].As<Napi::Buffer<char>>();
    std::vector<char> header(hb.Data(), hb.Data() + hb.Length());
    if (!info[2].IsArray()) throw EngineError("Expected an array for `tensors`");
    std::vector<std::pair<const jg::ParamInfo*, DType>> items;
    Napi::Array arr = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Object t = tensor_entry(arr, i);
      const jg::ParamInfo* p = param_named(m, get_string(t.Get("name"), "name"));
      items.emplace_back(p, dtype_from_name(get_string(t.Get("dtype"), "dtype")));
    }
    return queue_task(env, this, "saveSafetensors",
                 [&m, path, header, items] {
                   TensorWriter w(path);
                   w.write_bytes(header.data(), static_cast<int64_t>(header.size()));
                   std::vector<float> host;
                   for (const auto& [p, dtype] : items) {
                     host.resize(p->numel);
                     m.get_param(host.data(), *p);
                     w.write_tensor(host.data(), p->numel, dtype);
                   }
                   w.finish();
                 },
                 nullptr);
  })
}

Napi::Value CudaEngine::Forward(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("forward", {
    Napi::Env env = info.Env();
    cuda::Model& m = live_model();
    const ModelConfig& cfg = m.config();
    auto tokens = copy_typed<int32_t>(info[0], napi_int32_array, "tokens");
    auto starts = copy_typed<int32_t>(info[1], napi_int32_array, "seqStarts");
    auto rows = copy_typed<int32_t>(info[2], napi_int32_array, "rows");
    check_packed_batch(tokens, starts, rows, cfg);
    auto out = Napi::Float32Array::New(env, static_cast<int64_t>(rows.size()) * cfg.embedding_size);
    auto out_ref = std::make_shared<Napi::Reference<Napi::Float32Array>>(Napi::Persistent(out));
    float* out_data = out.Data();
    return queue_task(env, this, "forward",
                 [&m, tokens = std::move(tokens), starts = std::move(starts), rows = std::move(rows), out_data] {
                   cuda::Batch b{tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1};
                   m.forward(out_data, b, rows.data(), static_cast<int64_t>(rows.size()));
                 },
                 [out_ref](Napi::Env) -> Napi::Value { return out_ref->Value(); });
  })
}

Napi::Value CudaEngine::InitRandom(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("initRandom", {
    Napi::Env env = info.Env();
    cuda::Model& m = live_model();
    if (!info[0].IsNumber() || !info[1].IsNumber()) throw EngineError("Expected (seed: number, std: number)");
    uint64_t seed = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
    float stdev = info[1].As<Napi::Number>().FloatValue();
    return queue_task(env, this, "initRandom", [&m, seed, stdev] { m.init_random(seed, stdev); }, nullptr);
  })
}

Napi::Value CudaEngine::GetParam(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("getParam", {
    Napi::Env env = info.Env();
    cuda::Model& m = live_model();
    const jg::ParamInfo* p = param_named(m, get_string(info[0], "name"));
    if (busy_.load()) throw EngineError("The model is busy with another call");
    auto out = Napi::Float32Array::New(env, p->numel);
    m.get_param(out.Data(), *p);
    return out;
  })
}

Napi::Value CudaEngine::SetParam(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("setParam", {
    Napi::Env env = info.Env();
    cuda::Model& m = live_model();
    const std::string name = get_string(info[0], "name");
    const jg::ParamInfo* p = param_named(m, name);
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw EngineError("Expected a Float32Array for `data`");
    auto data = info[1].As<Napi::Float32Array>();
    JG_CHECK(static_cast<int64_t>(data.ElementLength()) == p->numel, "Tensor ", name, " has ", p->numel,
             " elements but `data` has ", data.ElementLength());
    if (busy_.load()) throw EngineError("The model is busy with another call");
    m.set_param(*p, data.Data());
    return env.Undefined();
  })
}

Napi::Value CudaEngine::Decode(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("decode", {
    Napi::Env env = info.Env();
    cuda::Model& m = live_model();
    const ModelConfig& cfg = m.config();
    DecodeCall call = decode_call_from_js(info, cfg);
    const int64_t L = call.opts.gen_length;
    return queue_claimed<DecodeTask<CudaEngine>>(env, this, L,
        [this, call = std::move(call)](const DecodeTask<CudaEngine>::Progress& progress) {
          return cuda::decode(model(), call.req, call.opts, abort_flag(), progress);
        },
        info[4]);
  })
}

Napi::Value CudaEngine::Logprobs(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("logprobs", {
    Napi::Env env = info.Env();
    cuda::Model& m = live_model();
    const ModelConfig& cfg = m.config();
    auto tokens = copy_typed<int32_t>(info[0], napi_int32_array, "tokens");
    auto starts = copy_typed<int32_t>(info[1], napi_int32_array, "seqStarts");
    auto rows = copy_typed<int32_t>(info[2], napi_int32_array, "rows");
    auto targets = copy_typed<int32_t>(info[3], napi_int32_array, "targets");
    auto excluded = copy_typed<int32_t>(info[4], napi_int32_array, "excludeIds");
    check_packed_batch(tokens, starts, rows, cfg);
    JG_CHECK(targets.size() == rows.size(), "one target per row is required");
    for (size_t r = 0; r < rows.size(); r++) {
      JG_CHECK(targets[r] >= 0 && targets[r] < cfg.embedding_size, "Target ", targets[r], " is outside [0, ",
               cfg.embedding_size, ")");
      for (int32_t id : excluded) JG_CHECK(targets[r] != id, "Target ", id, " at row ", r, " is an excluded id");
    }
    for (int32_t id : excluded) JG_CHECK(id >= 0 && id < cfg.embedding_size, "Excluded id ", id, " is out of range");
    auto out = std::make_shared<std::vector<float>>(rows.size());
    return queue_task(env, this, "logprobs",
                 [&m, tokens = std::move(tokens), starts = std::move(starts), rows = std::move(rows),
                  targets = std::move(targets), excluded = std::move(excluded), out] {
                   cuda::Batch b{tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1};
                   m.logprobs(out->data(), b, rows.data(), targets.data(), static_cast<int64_t>(rows.size()), excluded);
                 },
                 [out](Napi::Env env) -> Napi::Value {
                   auto a = Napi::Float32Array::New(env, out->size());
                   std::copy(out->begin(), out->end(), a.Data());
                   return a;
                 });
  })
}

Napi::Value CudaEngine::Cancel(const Napi::CallbackInfo& info) {
  abort_.store(true);
  return info.Env().Undefined();
}

Napi::Value CudaEngine::Dispose(const Napi::CallbackInfo& info) {
  JG_CUDA_METHOD_BODY("dispose", {
    if (busy_.load()) throw EngineError("The model is busy with another call; await it before dispose()");
    model_.reset();
    return info.Env().Undefined();
  })
}

Napi::Object cuda_exports(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("deviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
          return Napi::Number::New(info.Env(), cuda::device_count(nullptr));
        }));
  // Why there is no device (empty when there is one): the CUDA runtime's error, e.g. no driver.
  o.Set("unavailableReason", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
          std::string why;
          return Napi::String::New(info.Env(), cuda::device_count(&why) > 0 ? "" : why);
        }));
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  o.Set("runtimeVersion", runtime);
  return o;
}

}  // namespace jg

#endif  // JUSTGRPO_CUDA
