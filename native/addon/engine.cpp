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
#include "task.h"

namespace jg {

namespace {

int64_t get_int(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw EngineError(str_cat("Expected a number for config field `", key, "`"));
  return v.As<Napi::Number>().Int64Value();
}
double get_double(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw EngineError(str_cat("Expected a number for config field `", key, "`"));
  return v.As<Napi::Number>().DoubleValue();
}

ModelConfig config_from_js(const Napi::Object& o) {
  ModelConfig c;
  c.d_model = get_int(o, "dModel");
  c.n_layers = get_int(o, "nLayers");
  c.n_heads = get_int(o, "nHeads");
  c.n_kv_heads = get_int(o, "nKvHeads");
  c.mlp_hidden = get_int(o, "mlpHiddenSize");
  c.vocab_size = get_int(o, "vocabSize");
  c.embedding_size = get_int(o, "embeddingSize");
  c.max_seq_len = get_int(o, "maxSequenceLength");
  c.mask_token_id = get_int(o, "maskTokenId");
  c.rope_theta = get_double(o, "ropeTheta");
  c.rms_norm_eps = get_double(o, "rmsNormEps");
  check_model_config(c);
  return c;
}

template <typename T>
std::vector<T> copy_typed(const Napi::Value& v, napi_typedarray_type type, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw EngineError(str_cat("Expected a", type == napi_int32_array ? "n Int32Array"
                                             : type == napi_float64_array ? " Float64Array" : " Float32Array",
                              " for `", what, "`"));
  auto a = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}

std::string get_string(const Napi::Value& v, const char* what) {
  if (!v.IsString()) throw EngineError(str_cat("Expected a string for `", what, "`"));
  return v.As<Napi::String>().Utf8Value();
}

void check_packed_batch(const std::vector<int32_t>& tokens, const std::vector<int32_t>& starts,
                        const std::vector<int32_t>& rows, const ModelConfig& cfg) {
  jg::check_packed_batch(tokens.data(), static_cast<int64_t>(tokens.size()), starts.data(),
                         static_cast<int64_t>(starts.size()), rows.data(), static_cast<int64_t>(rows.size()), cfg);
}

// The parameter a tensor name refers to; an unknown name is an error naming it.
const jg::ParamInfo* param_named(const cpu::Model& m, const std::string& name) {
  const jg::ParamInfo* p = m.layout().find(name);
  JG_CHECK(p, "Unknown tensor ", name);
  return p;
}

// Entry i of a `tensors` array: an object with a parameter `name`.
Napi::Object tensor_entry(const Napi::Array& arr, uint32_t i) {
  Napi::Value v = arr.Get(i);
  if (!v.IsObject()) throw EngineError(str_cat("Expected an object for `tensors[", i, "]`"));
  return v.As<Napi::Object>();
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

namespace {

// The decoding loop off the event loop, with progress through a thread-safe function (released
// on success and on error) and cancellation through the engine's abort flag.
class DecodeTask : public Napi::AsyncWorker {
 public:
  DecodeTask(Napi::Env env, Engine* engine, cpu::DecodeRequest req, cpu::DecodeOptions opts, Napi::Value on_progress,
             cpu::ForwardFn forward, Napi::Object owner)
      : Napi::AsyncWorker(env, "decode"),
        deferred_(Napi::Promise::Deferred::New(env)),
        engine_(engine),
        req_(std::move(req)),
        opts_(std::move(opts)),
        forward_(std::move(forward)) {
    engine_->Ref();
    if (!owner.IsEmpty()) owner_ = Napi::Persistent(owner);
    if (on_progress.IsFunction())
      tsfn_ = Napi::ThreadSafeFunction::New(env, on_progress.As<Napi::Function>(), "decode progress", 0, 1);
  }
  ~DecodeTask() override { engine_->Unref(); }

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      std::function<void(const cpu::DecodeProgress&)> progress;
      if (tsfn_) {
        const int64_t L = opts_.gen_length;
        progress = [this, L](const cpu::DecodeProgress& p) {
          auto* msg = new Message{p.committed, p.total, std::vector<int32_t>(p.canvas, p.canvas + L)};
          // Non-blocking: a slow listener drops updates instead of stalling the decoder.
          if (tsfn_.NonBlockingCall(msg, &Deliver) != napi_ok) delete msg;
        };
      }
      result_ = cpu::decode(engine_->model(), req_, opts_, engine_->abort_flag(), progress, forward_);
    } catch (const std::exception& e) {
      SetError(std::string("decode: ") + e.what());
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
    deferred_.Reject(e.Value());
  }

 private:
  struct Message {
    int64_t committed, total;
    std::vector<int32_t> canvas;
  };

  static void Deliver(Napi::Env env, Napi::Function fn, Message* msg) {
    if (env != nullptr && fn != nullptr) {
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
    engine_->unclaim();
    if (tsfn_) tsfn_.Release();
  }

  Napi::Promise::Deferred deferred_;
  Engine* engine_;
  cpu::DecodeRequest req_;
  cpu::DecodeOptions opts_;
  cpu::DecodeResult result_;
  cpu::ForwardFn forward_;
  Napi::ObjectReference owner_;
  Napi::ThreadSafeFunction tsfn_;
};

double get_double_or(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw EngineError(str_cat("Expected a number for `", key, "`"));
  return v.As<Napi::Number>().DoubleValue();
}

// An optional integer option: a double outside int64 (or NaN) must not reach a cast.
int64_t get_int_or(const Napi::Object& o, const char* key, int64_t fallback) {
  const double v = get_double_or(o, key, static_cast<double>(fallback));
  if (!(std::isfinite(v) && std::floor(v) == v && std::fabs(v) <= 9007199254740991.0))
    throw EngineError(str_cat("Expected an integer for `", key, "` but received ", v));
  return static_cast<int64_t>(v);
}

cpu::DecodeOptions decode_options_from_js(const Napi::Object& o) {
  cpu::DecodeOptions d;
  std::string rem = o.Get("remasking").IsString() ? o.Get("remasking").As<Napi::String>().Utf8Value() : "";
  if (rem == "low_confidence") d.remasking = cpu::Remasking::LOW_CONFIDENCE;
  else if (rem == "random") d.remasking = cpu::Remasking::RANDOM;
  else if (rem == "threshold") d.remasking = cpu::Remasking::THRESHOLD;
  else throw EngineError("Expected 'low_confidence', 'random' or 'threshold' for `remasking`");
  std::string conf = o.Get("confidence").IsString() ? o.Get("confidence").As<Napi::String>().Utf8Value() : "probability";
  if (conf == "probability") d.confidence = cpu::Confidence::PROBABILITY;
  else if (conf == "margin") d.confidence = cpu::Confidence::MARGIN;
  else if (conf == "entropy") d.confidence = cpu::Confidence::ENTROPY;
  else throw EngineError("Expected 'probability', 'margin' or 'entropy' for `confidence`");
  d.gen_length = get_int(o, "genLength");
  d.block_length = get_int(o, "blockLength");
  d.steps = get_int_or(o, "steps", 0);
  d.temperature = get_double_or(o, "temperature", 0);
  d.threshold = get_double_or(o, "threshold", 0.9);
  d.cfg_scale = get_double_or(o, "cfgScale", 0);
  d.min_new_tokens = get_int_or(o, "minNewTokens", 0);
  Napi::Value stop = o.Get("stopIds");
  if (!stop.IsUndefined()) d.stop_ids = copy_typed<int32_t>(stop, napi_int32_array, "stopIds");
  cpu::check_decode_options(d);
  return d;
}

}  // namespace

// decode(prompts: Int32Array, promptStarts: Int32Array, seeds: Float64Array, options, onProgress?)
// -> Promise<{tokens, logprobs, entropies, commitStep, nfe, transfers, maxSteps, forwardTokens}>
Napi::Value queue_decode(const Napi::CallbackInfo& info, Engine* engine, cpu::ForwardFn forward, Napi::Object owner) {
  Napi::Env env = info.Env();
  const ModelConfig& cfg = engine->model().config();
  cpu::DecodeRequest req;
  req.prompts = copy_typed<int32_t>(info[0], napi_int32_array, "prompts");
  req.prompt_starts = copy_typed<int32_t>(info[1], napi_int32_array, "promptStarts");
  auto seeds = copy_typed<double>(info[2], napi_float64_array, "seeds");
  if (!info[3].IsObject()) throw EngineError("Expected an object for `options`");
  cpu::DecodeOptions opts = decode_options_from_js(info[3].As<Napi::Object>());
  for (double sd : seeds) {
    JG_CHECK(sd >= 0 && sd <= 9007199254740991.0 && sd == std::floor(sd), "seeds must be integers in [0, 2^53)");
    req.seeds.push_back(static_cast<uint64_t>(sd));
  }
  cpu::check_decode_request(req, cfg);
  if (!engine->try_claim()) throw EngineError("The model is busy with another call");
  try {
    auto* task = new DecodeTask(env, engine, std::move(req), std::move(opts), info[4], std::move(forward), owner);
    Napi::Promise p = task->promise();
    task->Queue();
    return p;
  } catch (...) {
    engine->unclaim();
    throw;
  }
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
