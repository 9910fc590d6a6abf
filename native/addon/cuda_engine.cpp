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

namespace jg {

namespace {

// Argument helpers. The CPU Engine (engine.cpp) has the same rules; these are kept beside the CUDA
// engine so the two classes can change independently. Messages match the CPU engine's.
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
double get_double_or(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw EngineError(str_cat("Expected a number for `", key, "`"));
  return v.As<Napi::Number>().DoubleValue();
}
std::string get_string(const Napi::Value& v, const char* what) {
  if (!v.IsString()) throw EngineError(str_cat("Expected a string for `", what, "`"));
  return v.As<Napi::String>().Utf8Value();
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
  JG_CHECK(c.d_model > 0 && c.n_layers >= 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.mlp_hidden > 0,
           "Model sizes must be positive");
  JG_CHECK(c.d_model % c.n_heads == 0, "d_model must be divisible by n_heads");
  JG_CHECK(c.n_heads % c.n_kv_heads == 0, "n_heads must be divisible by n_kv_heads");
  JG_CHECK(c.head_dim() % 2 == 0, "The head dimension must be even for RoPE");
  JG_CHECK(c.embedding_size >= c.vocab_size && c.vocab_size > 0, "embedding_size must be >= vocab_size > 0");
  JG_CHECK(c.max_seq_len > 0, "max_sequence_length must be positive");
  return c;
}

template <typename T>
std::vector<T> copy_typed(const Napi::Value& v, napi_typedarray_type type, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw EngineError(str_cat("Expected a ",
                              type == napi_int32_array     ? "Int32Array"
                              : type == napi_float64_array ? "Float64Array"
                                                           : "Float32Array",
                              " for `", what, "`"));
  auto a = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}

void check_packed_batch(const std::vector<int32_t>& tokens, const std::vector<int32_t>& starts,
                        const std::vector<int32_t>& rows, const ModelConfig& cfg) {
  JG_CHECK(starts.size() >= 2 && starts[0] == 0 && starts.back() == static_cast<int32_t>(tokens.size()),
           "seqStarts must run from 0 to the number of tokens");
  for (size_t s = 0; s + 1 < starts.size(); s++) {
    int64_t len = starts[s + 1] - starts[s];
    JG_CHECK(len > 0, "Sequence ", s, " is empty");
    JG_CHECK(len <= cfg.max_seq_len, "Sequence ", s, " has ", len, " tokens but the model allows at most ",
             cfg.max_seq_len);
  }
  for (size_t i = 0; i < tokens.size(); i++)
    JG_CHECK(tokens[i] >= 0 && tokens[i] < cfg.vocab_size, "Token id ", tokens[i], " at position ", i,
             " is outside the vocabulary [0, ", cfg.vocab_size, ")");
  for (size_t r = 0; r < rows.size(); r++)
    JG_CHECK(rows[r] >= 0 && rows[r] < static_cast<int32_t>(tokens.size()), "Row ", rows[r],
             " is outside the batch of ", tokens.size(), " tokens");
}

const ParamInfo* param_named(const cuda::Model& m, const std::string& name) {
  const ParamInfo* p = m.layout().find(name);
  JG_CHECK(p, "Unknown tensor ", name);
  return p;
}

Napi::Object tensor_entry(const Napi::Array& arr, uint32_t i) {
  Napi::Value v = arr.Get(i);
  if (!v.IsObject()) throw EngineError(str_cat("Expected an object for `tensors[", i, "]`"));
  return v.As<Napi::Object>();
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
  d.steps = static_cast<int64_t>(get_double_or(o, "steps", 0));
  d.temperature = get_double_or(o, "temperature", 0);
  d.threshold = get_double_or(o, "threshold", 0.9);
  d.cfg_scale = get_double_or(o, "cfgScale", 0);
  d.min_new_tokens = static_cast<int64_t>(get_double_or(o, "minNewTokens", 0));
  Napi::Value stop = o.Get("stopIds");
  if (!stop.IsUndefined()) d.stop_ids = copy_typed<int32_t>(stop, napi_int32_array, "stopIds");
  cpu::check_decode_options(d);
  return d;
}

// A call off the event loop: runs `work` on the libuv pool, names the failing call in the error,
// resolves with `result()`; the engine is claimed before and released when it settles.
class CudaTask : public Napi::AsyncWorker {
 public:
  CudaTask(Napi::Env env, CudaEngine* engine, const char* name, std::function<void()> work,
           std::function<Napi::Value(Napi::Env)> result)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), engine_(engine), name_(name),
        work_(std::move(work)), result_(std::move(result)) {
    engine_->Ref();
  }
  ~CudaTask() override { engine_->Unref(); }
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
  CudaEngine* engine_;
  const char* name_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> result_;
};

Napi::Promise queue(Napi::Env env, CudaEngine* engine, const char* name, std::function<void()> work,
                    std::function<Napi::Value(Napi::Env)> result) {
  if (!engine->try_claim()) throw EngineError("The model is busy with another call");
  try {
    auto* task = new CudaTask(env, engine, name, std::move(work), std::move(result));
    Napi::Promise p = task->promise();
    task->Queue();
    return p;
  } catch (...) {
    engine->unclaim();
    throw;
  }
}

// decode() off the event loop with progress through a thread-safe function.
class CudaDecodeTask : public Napi::AsyncWorker {
 public:
  CudaDecodeTask(Napi::Env env, CudaEngine* engine, cpu::DecodeRequest req, cpu::DecodeOptions opts,
                 Napi::Value on_progress)
      : Napi::AsyncWorker(env, "decode"), deferred_(Napi::Promise::Deferred::New(env)), engine_(engine),
        req_(std::move(req)), opts_(std::move(opts)) {
    engine_->Ref();
    if (on_progress.IsFunction())
      tsfn_ = Napi::ThreadSafeFunction::New(env, on_progress.As<Napi::Function>(), "decode progress", 0, 1);
  }
  ~CudaDecodeTask() override { engine_->Unref(); }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      std::function<void(const cpu::DecodeProgress&)> progress;
      if (tsfn_) {
        const int64_t L = opts_.gen_length;
        progress = [this, L](const cpu::DecodeProgress& p) {
          auto* msg = new Message{p.committed, p.total, std::vector<int32_t>(p.canvas, p.canvas + L)};
          if (tsfn_.NonBlockingCall(msg, &Deliver) != napi_ok) delete msg;
        };
      }
      result_ = cuda::decode(engine_->model(), req_, opts_, engine_->abort_flag(), progress);
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
  CudaEngine* engine_;
  cpu::DecodeRequest req_;
  cpu::DecodeOptions opts_;
  cpu::DecodeResult result_;
  Napi::ThreadSafeFunction tsfn_;
};

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
    return queue(env, this, "loadTensors",
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
    return queue(env, this, "saveSafetensors",
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
    return queue(env, this, "forward",
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
    return queue(env, this, "initRandom", [&m, seed, stdev] { m.init_random(seed, stdev); }, nullptr);
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
    cpu::DecodeRequest req;
    req.prompts = copy_typed<int32_t>(info[0], napi_int32_array, "prompts");
    req.prompt_starts = copy_typed<int32_t>(info[1], napi_int32_array, "promptStarts");
    auto seeds = copy_typed<double>(info[2], napi_float64_array, "seeds");
    if (!info[3].IsObject()) throw EngineError("Expected an object for `options`");
    cpu::DecodeOptions opts = decode_options_from_js(info[3].As<Napi::Object>());
    JG_CHECK(req.prompt_starts.size() == seeds.size() + 1 && req.prompt_starts[0] == 0 &&
                 req.prompt_starts.back() == static_cast<int32_t>(req.prompts.size()),
             "promptStarts must run from 0 to the number of prompt tokens, one prompt per seed");
    for (size_t s = 0; s + 1 < req.prompt_starts.size(); s++)
      JG_CHECK(req.prompt_starts[s + 1] >= req.prompt_starts[s], "promptStarts must not decrease");
    for (size_t i = 0; i < req.prompts.size(); i++)
      JG_CHECK(req.prompts[i] >= 0 && req.prompts[i] < cfg.vocab_size, "Token id ", req.prompts[i],
               " at prompt position ", i, " is outside the vocabulary [0, ", cfg.vocab_size, ")");
    for (double sd : seeds) {
      JG_CHECK(sd >= 0 && sd <= 9007199254740991.0 && sd == std::floor(sd), "seeds must be integers in [0, 2^53)");
      req.seeds.push_back(static_cast<uint64_t>(sd));
    }
    if (!try_claim()) throw EngineError("The model is busy with another call");
    auto* task = new CudaDecodeTask(env, this, std::move(req), std::move(opts), info[4]);
    Napi::Promise p = task->promise();
    task->Queue();
    return p;
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
    return queue(env, this, "logprobs",
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
