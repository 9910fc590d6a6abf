#include "engine.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../common/check.h"
#include "../common/memory.h"
#include "../common/tensor_io.h"
#include "../common/validate.h"
#include "../cpu/decode.h"
#include "../cpu/loss.h"
#include "args.h"
#include "task.h"

namespace jg {

using namespace js;

namespace {

// The parameter a tensor name refers to; an unknown name is an error naming it.
const jg::ParamInfo* param_named(const cpu::Model& m, const std::string& name) {
  const jg::ParamInfo* p = m.layout().find(name);
  JG_CHECK(p, "Unknown tensor ", name);
  return p;
}

}  // namespace

Napi::Function Engine::Init(Napi::Env env) {
  return DefineClass(env, "Engine",
                     {
                         InstanceMethod("paramInfo", &Engine::ParamInfo),
                         InstanceMethod("numParams", &Engine::NumParams),
                         InstanceMethod("tokensComputed", &Engine::TokensComputed),
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
  Napi::Env env = info.Env();
  try {
    if (info.Length() < 1 || !info[0].IsObject()) throw EngineError("Expected a config object");
    model_ = std::make_unique<cpu::Model>(config_from_js(info[0].As<Napi::Object>()));
  } catch (const std::exception& e) {
    Napi::Error::New(env, std::string("Engine: ") + e.what()).ThrowAsJavaScriptException();
  }
}

cpu::Model& Engine::live_model(const Napi::Env& env) {
  if (!model_) throw EngineError("Model is disposed");
  (void)env;
  return *model_;
}

// Wraps a synchronous method body: engine errors become JavaScript errors naming the method.
#define JG_METHOD_BODY(name, ...)                                                            \
  try {                                                                                      \
    __VA_ARGS__                                                                              \
  } catch (const std::exception& e) {                                                        \
    Napi::Error::New(info.Env(), std::string(name ": ") + e.what()).ThrowAsJavaScriptException(); \
    return info.Env().Undefined();                                                           \
  }

Napi::Value Engine::ParamInfo(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("paramInfo", {
    Napi::Env env = info.Env();
    const auto& params = live_model(env).layout().params();
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
  JG_METHOD_BODY("numParams", { return Napi::Number::New(info.Env(), double(live_model(info.Env()).n_params())); })
}

// tokensComputed(): tokens that went through the layers so far (identical sequences in a batch once).
Napi::Value Engine::TokensComputed(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("tokensComputed", { return Napi::Number::New(info.Env(), double(live_model(info.Env()).tokens_computed())); })
}

// loadTensors(path, [{name, offset, dtype}]): reads tensors from one safetensors file whose header
// lib/safetensors.ts has validated.
Napi::Value Engine::LoadTensors(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("loadTensors", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model(env);
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
    weights_changed();
    return queue_task(env, this, "loadTensors",
        [&m, path, items] {
          for (const Item& it : items) read_tensor(m.params() + it.param->offset, it.param->numel, it.dtype, path, it.offset, it.param->name);
        },
        nullptr);
  })
}

// saveSafetensors(path, header, [{name, dtype}]): writes the header bytes (length prefix included,
// built by lib/safetensors.ts) and then each tensor converted to its dtype; fsyncs before resolving.
Napi::Value Engine::SaveSafetensors(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("saveSafetensors", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model(env);
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
          for (const auto& [p, dtype] : items) w.write_tensor(m.params() + p->offset, p->numel, dtype);
          w.finish();
        },
        nullptr);
  })
}

// forward(tokens: Int32Array, seqStarts: Int32Array, rows: Int32Array) -> Promise<Float32Array>
// of shape (rows.length, embedding_size).
Napi::Value Engine::Forward(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("forward", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model(env);
    const ModelConfig& cfg = m.config();
    auto tokens = copy_typed<int32_t>(info[0], napi_int32_array, "tokens");
    auto starts = copy_typed<int32_t>(info[1], napi_int32_array, "seqStarts");
    auto rows = copy_typed<int32_t>(info[2], napi_int32_array, "rows");
    check_packed_batch(tokens, starts, rows, cfg);
    const int64_t out_len = static_cast<int64_t>(rows.size()) * cfg.embedding_size;
    // Both checked before anything is allocated: the logits here, the activations in the worker.
    check_fits(out_len * static_cast<int64_t>(sizeof(float)), "the logits");
    check_fits(m.forward_workspace_bytes(static_cast<int64_t>(tokens.size()), static_cast<int64_t>(rows.size())),
               "the forward pass's activations");
    auto out = Napi::Float32Array::New(env, out_len);
    auto out_ref = std::make_shared<Napi::Reference<Napi::Float32Array>>(Napi::Persistent(out));
    float* out_data = out.Data();
    return queue_task(env, this, "forward",
        [&m, tokens = std::move(tokens), starts = std::move(starts), rows = std::move(rows), out_data] {
          cpu::Batch b{tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1};
          m.forward(out_data, b, rows.data(), static_cast<int64_t>(rows.size()));
        },
        [out_ref](Napi::Env) -> Napi::Value { return out_ref->Value(); });
  })
}

// initRandom(seed, std): normal(0, std) matrices, ones for norm weights; deterministic per seed.
Napi::Value Engine::InitRandom(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("initRandom", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model(env);
    if (!info[0].IsNumber() || !info[1].IsNumber()) throw EngineError("Expected (seed: number, std: number)");
    uint64_t seed = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
    float stdev = info[1].As<Napi::Number>().FloatValue();
    weights_changed();
    return queue_task(env, this, "initRandom",
        [&m, seed, stdev] {
          // One generator per tensor, seeded from (seed, index), so tensors do not depend on each other.
          const auto& params = m.layout().params();
          for (size_t i = 0; i < params.size(); i++) {
            float* p = m.params() + params[i].offset;
            if (params[i].shape.size() == 1) {
              std::fill(p, p + params[i].numel, 1.0f);
              continue;
            }
            std::mt19937_64 rng(seed * 1000003ULL + i);
            std::normal_distribution<float> dist(0.0f, stdev);
            for (int64_t j = 0; j < params[i].numel; j++) p[j] = dist(rng);
          }
        },
        nullptr);
  })
}

Napi::Value Engine::GetParam(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("getParam", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model(env);
    const std::string name = get_string(info[0], "name");
    const jg::ParamInfo* p = param_named(m, name);
    if (busy_.load()) throw EngineError("The model is busy with another call");
    auto out = Napi::Float32Array::New(env, p->numel);
    std::memcpy(out.Data(), m.params() + p->offset, p->numel * sizeof(float));
    return out;
  })
}

Napi::Value Engine::SetParam(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("setParam", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model(env);
    const std::string name = get_string(info[0], "name");
    const jg::ParamInfo* p = param_named(m, name);
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw EngineError("Expected a Float32Array for `data`");
    auto data = info[1].As<Napi::Float32Array>();
    JG_CHECK(static_cast<int64_t>(data.ElementLength()) == p->numel, "Tensor ", name, " has ", p->numel,
             " elements but `data` has ", data.ElementLength());
    if (busy_.load()) throw EngineError("The model is busy with another call");
    std::memcpy(m.params() + p->offset, data.Data(), p->numel * sizeof(float));
    weights_changed();
    return env.Undefined();
  })
}

// decode(prompts: Int32Array, promptStarts: Int32Array, seeds: Float64Array, options, onProgress?)
// -> Promise<{tokens, logprobs, entropies, commitStep, nfe, transfers, maxSteps, forwardTokens}>
Napi::Value queue_decode(const Napi::CallbackInfo& info, Engine* engine, cpu::ForwardFn forward, Napi::Object owner) {
  DecodeCall call = decode_call_from_js(info, engine->model().config());
  const int64_t L = call.opts.gen_length;
  return queue_claimed<DecodeTask<Engine>>(info.Env(), engine, L,
      [engine, call = std::move(call), forward = std::move(forward)](const DecodeTask<Engine>::Progress& progress) {
        return cpu::decode(engine->model(), call.req, call.opts, engine->abort_flag(), progress, forward);
      },
      info[4], owner);
}

Napi::Value Engine::Decode(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("decode", {
    live_model(info.Env());
    return queue_decode(info, this);
  })
}

// logprobs(tokens, seqStarts, rows, targets, excludeIds) -> Promise<Float32Array>: log p(target)
// at each row of a packed batch, with the excluded ids' probability renormalised away; the LM
// head runs only for the rows and never holds all their logits at once. Used for a frozen
// reference policy, which needs no gradients.
Napi::Value Engine::Logprobs(const Napi::CallbackInfo& info) {
  JG_METHOD_BODY("logprobs", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model(env);
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
    cpu::TrainWorkspace* ws = &logprob_ws_;
    return queue_task(env, this, "logprobs",
        [&m, ws, tokens = std::move(tokens), starts = std::move(starts), rows = std::move(rows),
         targets = std::move(targets), excluded = std::move(excluded), out] {
          std::vector<float> zero(rows.size(), 0.0f);
          cpu::CrossEntropyLoss loss(zero.data());
          loss.excluded = excluded;
          cpu::Batch b{tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1};
          m.loss(nullptr, *ws, b, rows.data(), targets.data(), static_cast<int64_t>(rows.size()), loss, out->data());
        },
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
  JG_METHOD_BODY("dispose", {
    if (busy_.load()) throw EngineError("The model is busy with another call; await it before dispose()");
    model_.reset();
    logprob_ws_.release();
    return info.Env().Undefined();
  })
}

}  // namespace jg
