#include "engine.h"

#include <cstring>
#include <string>
#include <vector>

#include "../common/check.h"
#include "../common/memory.h"
#include "../common/tensor_io.h"
#include "args.h"
#include "backends.h"
#include "errors.h"
#include "task.h"

namespace jg {

using namespace js;

Napi::Function Engine::Init(Napi::Env env) {
  return DefineClass(env, "Engine",
                     {
                         InstanceMethod("paramInfo", &Engine::ParamInfo),
                         InstanceMethod("numParams", &Engine::NumParams),
                         InstanceMethod("tokensComputed", &Engine::TokensComputed),
                         InstanceMethod("deviceInfo", &Engine::DeviceInfo),
                         InstanceMethod("memoryBytes", &Engine::MemoryBytes),
                         InstanceMethod("loadTensors", &Engine::LoadTensors),
                         InstanceMethod("saveSafetensors", &Engine::SaveSafetensors),
                         InstanceMethod("forward", &Engine::Forward),
                         InstanceMethod("initRandom", &Engine::InitRandom),
                         InstanceMethod("getParam", &Engine::GetParam),
                         InstanceMethod("setParam", &Engine::SetParam),
                         InstanceMethod("decode", &Engine::Decode),
                         InstanceMethod("logprobs", &Engine::Logprobs),
                         InstanceMethod("cancel", &Engine::Cancel),
                         InstanceMethod("dispose", &Engine::Dispose),
                     });
}

Engine::Engine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Engine>(info) {
  try {
    if (info.Length() < 1 || !info[0].IsObject()) expected("a config object", "config", describe(info[0]));
    BackendOptions o;
    if (info.Length() >= 2 && !info[1].IsUndefined()) {
      if (!info[1].IsObject()) expected("an options object", "options", describe(info[1]));
      Napi::Object opts = info[1].As<Napi::Object>();
      if (!opts.Get("backend").IsUndefined()) o.backend = get_string(opts.Get("backend"), "backend");
      const int64_t device = get_int_or(opts, "device", 0);
      if (device < 0 || device > 1 << 20) expected("a device index >= 0", "device", str_cat(device));
      o.device = static_cast<int>(device);
      if (!opts.Get("dtype").IsUndefined()) {
        const std::string t = get_string(opts.Get("dtype"), "dtype");
        if (t != "F32" && t != "BF16") expected("'BF16' or 'F32'", "dtype", str_cat("\"", t, "\""));
        o.dtype = dtype_from_name(t);
      }
      o.master_weights = get_bool_or(opts, "masterWeights", true);
    }
    backend_ = make_backend(config_from_js(info[0].As<Napi::Object>()), o);
  } catch (const std::exception&) {
    CallError::current("Engine").to_js(info.Env()).ThrowAsJavaScriptException();
  }
}

Backend& Engine::backend() {
  JG_CHECK_AS(ErrorKind::DISPOSED, backend_ != nullptr, "Model is disposed");
  return *backend_;
}

Napi::Value Engine::ParamInfo(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("paramInfo", {
    Napi::Env env = info.Env();
    const auto& params = backend().layout().params();
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

Napi::Value Engine::NumParams(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("numParams", { return Napi::Number::New(info.Env(), double(backend().n_params())); })
}

// tokensComputed(): tokens that went through the layers so far (identical sequences in a batch once).
Napi::Value Engine::TokensComputed(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("tokensComputed", { return Napi::Number::New(info.Env(), double(backend().tokens_computed())); })
}

// deviceInfo() -> {backend, device, name, totalMemory, computeCapability, dtype}
Napi::Value Engine::DeviceInfo(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("deviceInfo", {
    Napi::Env env = info.Env();
    const jg::DeviceInfo d = backend().device_info();
    Napi::Object o = Napi::Object::New(env);
    o.Set("backend", d.backend);
    o.Set("device", Napi::Number::New(env, double(d.device)));
    o.Set("name", d.name);
    o.Set("totalMemory", d.total_memory);
    o.Set("computeCapability", d.compute_capability);
    o.Set("dtype", d.dtype);
    return o;
  })
}

// memoryBytes() -> {weightsFp32, weightsBf16, workspace}: bytes the model holds (-1: not counted
// by this backend).
Napi::Value Engine::MemoryBytes(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("memoryBytes", {
    Napi::Env env = info.Env();
    const jg::MemoryReport r = backend().memory_report();
    Napi::Object o = Napi::Object::New(env);
    o.Set("weightsFp32", Napi::Number::New(env, double(r.weights_fp32)));
    o.Set("weightsBf16", Napi::Number::New(env, double(r.weights_bf16)));
    o.Set("workspace", Napi::Number::New(env, double(r.workspace)));
    return o;
  })
}

// loadTensors(path, [{name, offset, dtype}]) -> Promise<[{name, nonFinite, numel}]>: reads tensors from one
// safetensors file whose header lib/safetensors.ts has validated; resolves with the tensors that hold
// NaN or infinite values, and how many (the caller decides whether that is an error).
Napi::Value Engine::LoadTensors(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("loadTensors", {
    Backend& m = backend();
    std::string path = get_string(info[0], "path");
    if (!info[1].IsArray()) expected("an array", "tensors", describe(info[1]));
    struct Item {
      const jg::ParamInfo* param;
      int64_t offset;
      DType dtype;
    };
    std::vector<Item> items;
    Napi::Array arr = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Object t = tensor_entry(arr, i);
      const jg::ParamInfo& p = param_named(m.layout(), t.Get("name"));
      items.push_back({&p, get_int64(t, "offset"), dtype_from_name(get_string(t.Get("dtype"), "dtype"))});
    }
    m.weights_changed();
    struct Bad {
      const jg::ParamInfo* param;
      int64_t count;
    };
    auto bad = std::make_shared<std::vector<Bad>>();
    return queue_task(info.Env(), this, "loadTensors",
        [&m, path, items, bad] {
          for (const Item& it : items) {
            m.load_tensor(*it.param, it.dtype, path, it.offset);
            if (const int64_t n = m.count_non_finite(*it.param)) bad->push_back({it.param, n});
          }
        },
        [bad](Napi::Env env) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, bad->size());
          for (size_t i = 0; i < bad->size(); i++) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("name", (*bad)[i].param->name);
            o.Set("nonFinite", Napi::Number::New(env, double((*bad)[i].count)));
            o.Set("numel", Napi::Number::New(env, double((*bad)[i].param->numel)));
            out.Set(i, o);
          }
          return out;
        });
  })
}

// saveSafetensors(path, header, [{name, dtype}]): writes the header bytes (length prefix included,
// built by lib/safetensors.ts) and then each tensor converted to its dtype; fsyncs before resolving.
Napi::Value Engine::SaveSafetensors(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("saveSafetensors", {
    Backend& m = backend();
    std::string path = get_string(info[0], "path");
    if (!info[1].IsBuffer()) expected("a Buffer", "header", describe(info[1]));
    auto hb = info[1].As<Napi::Buffer<char>>();
    std::vector<char> header(hb.Data(), hb.Data() + hb.Length());
    if (!info[2].IsArray()) expected("an array", "tensors", describe(info[2]));
    std::vector<std::pair<const jg::ParamInfo*, DType>> items;
    Napi::Array arr = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Object t = tensor_entry(arr, i);
      items.emplace_back(&param_named(m.layout(), t.Get("name")), dtype_from_name(get_string(t.Get("dtype"), "dtype")));
    }
    return queue_task(info.Env(), this, "saveSafetensors",
        [&m, path, header, items] {
          TensorWriter w(path);
          w.write_bytes(header.data(), static_cast<int64_t>(header.size()));
          for (const auto& [p, dtype] : items) m.write_tensor(w, *p, dtype);
          w.finish();
        },
        nullptr);
  })
}

// forward(tokens: Int32Array, seqStarts: Int32Array, rows: Int32Array) -> Promise<Float32Array>
// of shape (rows.length, embedding_size).
Napi::Value Engine::Forward(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("forward", {
    Napi::Env env = info.Env();
    Backend& m = backend();
    auto b = std::make_shared<PackedBatch>(packed_batch_from_js(info[0], info[1], info[2], m.config()));
    const int64_t out_len = b->n_rows() * m.config().embedding_size;
    // Both checked before anything is allocated: the logits here, the activations in the worker.
    check_fits(out_len * static_cast<int64_t>(sizeof(float)), "the logits");
    check_fits(m.forward_workspace_bytes(static_cast<int64_t>(b->tokens.size()), b->n_rows()),
               "the forward pass's activations");
    auto out = Napi::Float32Array::New(env, out_len);
    auto out_ref = std::make_shared<Napi::Reference<Napi::Float32Array>>(Napi::Persistent(out));
    float* out_data = out.Data();
    return queue_task(env, this, "forward",
        [&m, b, out_data] { m.forward(out_data, b->batch(), b->rows.data(), b->n_rows()); },
        [out_ref](Napi::Env) -> Napi::Value { return out_ref->Value(); });
  })
}

// initRandom(seed, std): normal(0, std) matrices, ones for norm weights; deterministic per seed.
Napi::Value Engine::InitRandom(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("initRandom", {
    Backend& m = backend();
    if (!info[0].IsNumber() || !info[1].IsNumber()) throw EngineError("Expected (seed: number, std: number)");
    const uint64_t seed = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
    const float stdev = info[1].As<Napi::Number>().FloatValue();
    m.weights_changed();
    return queue_task(info.Env(), this, "initRandom", [&m, seed, stdev] { m.init_random(seed, stdev); }, nullptr);
  })
}

Napi::Value Engine::GetParam(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("getParam", {
    Backend& m = backend();
    const jg::ParamInfo& p = param_named(m.layout(), info[0]);
    if (busy()) JG_FAIL(ErrorKind::BUSY, "The model is busy with another call");
    auto out = Napi::Float32Array::New(info.Env(), p.numel);
    m.get_param(out.Data(), p);
    return out;
  })
}

Napi::Value Engine::SetParam(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("setParam", {
    Backend& m = backend();
    const jg::ParamInfo& p = param_named(m.layout(), info[0]);
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      expected("a Float32Array", "data", describe(info[1]));
    auto data = info[1].As<Napi::Float32Array>();
    JG_CHECK(static_cast<int64_t>(data.ElementLength()) == p.numel, "Tensor ", p.name, " has ", p.numel,
             " elements but `data` has ", data.ElementLength());
    if (busy()) JG_FAIL(ErrorKind::BUSY, "The model is busy with another call");
    m.set_param(p, data.Data());
    m.weights_changed();
    return info.Env().Undefined();
  })
}

// decode(prompts: Int32Array, promptStarts: Int32Array, seeds: Float64Array, options, onProgress?)
// -> Promise<{tokens, logprobs, entropies, commitStep, nfe, transfers, maxSteps, forwardTokens}>
Napi::Value queue_decode(const Napi::CallbackInfo& info, Engine* engine, ForwardHook forward, Napi::Object owner) {
  Backend& m = engine->backend();
  DecodeCall call = decode_call_from_js(info, m.config());
  const int64_t L = call.opts.gen_length;
  return queue_claimed<DecodeTask>(info.Env(), engine, L,
      [&m, engine, call = std::move(call), forward = std::move(forward)](const DecodeTask::Progress& progress) {
        return decode(m, call.req, call.opts, engine->abort_flag(), progress, forward);
      },
      info[4], owner);
}

Napi::Value Engine::Decode(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("decode", { return queue_decode(info, this); })
}

// logprobs(tokens, seqStarts, rows, targets, excludeIds) -> Promise<Float32Array>: log p(target)
// at each row of a packed batch, with the excluded ids' probability renormalised away; the LM
// head runs only for the rows and never holds all their logits at once. Used for a frozen
// reference policy, which needs no gradients.
Napi::Value Engine::Logprobs(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("logprobs", {
    Backend& m = backend();
    auto b = std::make_shared<PackedBatch>(packed_batch_from_js(info[0], info[1], info[2], m.config()));
    auto excluded = std::make_shared<std::vector<int32_t>>(excluded_from_js(info[4], m.config()));
    auto targets = std::make_shared<std::vector<int32_t>>(targets_from_js(info[3], b->n_rows(), *excluded, m.config()));
    auto out = std::make_shared<std::vector<float>>(b->n_rows());
    return queue_task(info.Env(), this, "logprobs",
        [&m, b, targets, excluded, out] { m.logprobs(out->data(), b->batch(), b->rows.data(), targets->data(), b->n_rows(), *excluded); },
        [out](Napi::Env env) -> Napi::Value {
          auto a = Napi::Float32Array::New(env, out->size());
          std::copy(out->begin(), out->end(), a.Data());
          return a;
        });
  })
}

// cancel(): the running decode stops at its next step and rejects with "Aborted".
Napi::Value Engine::Cancel(const Napi::CallbackInfo& info) {
  abort_.store(true);
  return info.Env().Undefined();
}

Napi::Value Engine::Dispose(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("dispose", {
    if (busy()) JG_FAIL(ErrorKind::BUSY, "The model is busy with another call; await it before dispose()");
    backend_.reset();
    return info.Env().Undefined();
  })
}

}  // namespace jg
