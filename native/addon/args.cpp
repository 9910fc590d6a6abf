#include "args.h"

#include <cmath>

#include "../common/validate.h"

namespace jg::js {

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

// A double outside int64 (or NaN) must not reach a cast.
int64_t get_int_or(const Napi::Object& o, const char* key, int64_t fallback) {
  const double v = get_double_or(o, key, static_cast<double>(fallback));
  if (!(std::isfinite(v) && std::floor(v) == v && std::fabs(v) <= 9007199254740991.0))
    throw EngineError(str_cat("Expected an integer for `", key, "` but received ", v));
  return static_cast<int64_t>(v);
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
  check_model_config(c);
  return c;
}

void check_packed_batch(const std::vector<int32_t>& tokens, const std::vector<int32_t>& starts,
                        const std::vector<int32_t>& rows, const ModelConfig& cfg) {
  jg::check_packed_batch(tokens.data(), static_cast<int64_t>(tokens.size()), starts.data(),
                         static_cast<int64_t>(starts.size()), rows.data(), static_cast<int64_t>(rows.size()), cfg);
}

Napi::Object tensor_entry(const Napi::Array& arr, uint32_t i) {
  Napi::Value v = arr.Get(i);
  if (!v.IsObject()) throw EngineError(str_cat("Expected an object for `tensors[", i, "]`"));
  return v.As<Napi::Object>();
}

namespace {

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

DecodeCall decode_call_from_js(const Napi::CallbackInfo& info, const ModelConfig& cfg) {
  DecodeCall call;
  call.req.prompts = copy_typed<int32_t>(info[0], napi_int32_array, "prompts");
  call.req.prompt_starts = copy_typed<int32_t>(info[1], napi_int32_array, "promptStarts");
  auto seeds = copy_typed<double>(info[2], napi_float64_array, "seeds");
  if (!info[3].IsObject()) throw EngineError("Expected an object for `options`");
  call.opts = decode_options_from_js(info[3].As<Napi::Object>());
  for (double sd : seeds) {
    JG_CHECK(sd >= 0 && sd <= 9007199254740991.0 && sd == std::floor(sd), "seeds must be integers in [0, 2^53)");
    call.req.seeds.push_back(static_cast<uint64_t>(sd));
  }
  cpu::check_decode_request(call.req, cfg);
  return call;
}

}  // namespace jg::js
