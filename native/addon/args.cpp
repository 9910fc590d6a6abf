#include "args.h"

#include <cmath>

#include "../common/validate.h"

namespace jg::js {

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    static const char* names[] = {"Int8Array",   "Uint8Array",   "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array", "Int32Array",   "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    auto t = v.As<Napi::TypedArray>();
    const int type = static_cast<int>(t.TypedArrayType());
    const char* name = type >= 0 && type < 11 ? names[type] : "typed array";
    return str_cat("a ", name, " of length ", t.ElementLength());
  }
  if (v.IsArray()) return str_cat("an array of length ", v.As<Napi::Array>().Length());
  if (v.IsNumber()) return str_cat("number ", v.As<Napi::Number>().DoubleValue());
  if (v.IsString()) return str_cat("string \"", v.As<Napi::String>().Utf8Value(), "\"");
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "boolean true" : "boolean false";
  if (v.IsBuffer()) return "a Buffer";
  if (v.IsObject()) return "an object";
  return "a value of another type";
}

std::string get_string(const Napi::Value& v, const char* name) {
  if (!v.IsString()) expected("a string", name, describe(v));
  return v.As<Napi::String>().Utf8Value();
}

double get_number(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) expected("a number", key, describe(v));
  return v.As<Napi::Number>().DoubleValue();
}

double get_number_or(const Napi::Object& o, const char* key, double fallback) {
  return o.Get(key).IsUndefined() ? fallback : get_number(o, key);
}

// A double outside int64 (or NaN) must not reach a cast.
int64_t get_int_or(const Napi::Object& o, const char* key, int64_t fallback) {
  const double v = get_number_or(o, key, static_cast<double>(fallback));
  if (!(std::isfinite(v) && std::floor(v) == v && std::fabs(v) <= 9007199254740991.0))
    expected("an integer", key, str_cat(v));
  return static_cast<int64_t>(v);
}

int64_t get_int64(const Napi::Object& o, const char* key) {
  get_number(o, key);
  return o.Get(key).As<Napi::Number>().Int64Value();
}

bool get_bool_or(const Napi::Object& o, const char* key, bool fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) expected("a boolean", key, describe(v));
  return v.As<Napi::Boolean>().Value();
}

ModelConfig config_from_js(const Napi::Object& o) {
  auto field = [&](const char* key) {
    Napi::Value v = o.Get(key);
    if (!v.IsNumber()) throw EngineError(str_cat("Expected a number for config field `", key, "` but received ", describe(v)));
    return v.As<Napi::Number>();
  };
  // Int64Value saturates (and maps NaN to 0), so no double reaches an undefined cast; the checks
  // below refuse what does not fit.
  ModelConfig c;
  c.d_model = field("dModel").Int64Value();
  c.n_layers = field("nLayers").Int64Value();
  c.n_heads = field("nHeads").Int64Value();
  c.n_kv_heads = field("nKvHeads").Int64Value();
  c.mlp_hidden = field("mlpHiddenSize").Int64Value();
  c.vocab_size = field("vocabSize").Int64Value();
  c.embedding_size = field("embeddingSize").Int64Value();
  c.max_seq_len = field("maxSequenceLength").Int64Value();
  c.mask_token_id = field("maskTokenId").Int64Value();
  c.rope_theta = field("ropeTheta").DoubleValue();
  c.rms_norm_eps = field("rmsNormEps").DoubleValue();
  check_model_config(c);
  return c;
}

PackedBatch packed_batch_from_js(const Napi::Value& tokens, const Napi::Value& starts, const Napi::Value& rows,
                                 const ModelConfig& cfg) {
  PackedBatch b{int32s(tokens, "tokens"), int32s(starts, "seqStarts"), int32s(rows, "rows")};
  check_packed_batch(b.tokens.data(), static_cast<int64_t>(b.tokens.size()), b.starts.data(),
                     static_cast<int64_t>(b.starts.size()), b.rows.data(), b.n_rows(), cfg);
  return b;
}

std::vector<int32_t> excluded_from_js(const Napi::Value& v, const ModelConfig& cfg) {
  std::vector<int32_t> ids = int32s(v, "excludeIds");
  for (int32_t id : ids)
    if (id < 0 || id >= cfg.embedding_size) expected(str_cat("ids in [0, ", cfg.embedding_size, ")"), "excludeIds", str_cat(id));
  return ids;
}

std::vector<int32_t> targets_from_js(const Napi::Value& v, int64_t n_rows, const std::vector<int32_t>& excluded,
                                     const ModelConfig& cfg) {
  std::vector<int32_t> t = int32s(v, "targets");
  if (static_cast<int64_t>(t.size()) != n_rows) expected(str_cat("one target per row (", n_rows, ")"), "targets", describe(v));
  for (int64_t r = 0; r < n_rows; r++) {
    if (t[r] < 0 || t[r] >= cfg.embedding_size)
      expected(str_cat("target ids in [0, ", cfg.embedding_size, ")"), "targets", str_cat(t[r], " at index ", r));
    for (int32_t id : excluded)
      if (t[r] == id) expected("targets outside excludeIds", "targets", str_cat(id, " at index ", r));
  }
  return t;
}

std::vector<float> weights_from_js(const Napi::Value& v, int64_t n_rows) {
  std::vector<float> w = float32s(v, "weights");
  if (static_cast<int64_t>(w.size()) != n_rows) expected(str_cat("one weight per row (", n_rows, ")"), "weights", describe(v));
  for (int64_t r = 0; r < n_rows; r++)
    if (!std::isfinite(w[r])) expected("finite weights", "weights", str_cat(w[r], " at index ", r));
  return w;
}

const ParamInfo& param_named(const ParamLayout& layout, const Napi::Value& name) {
  const std::string n = get_string(name, "name");
  const ParamInfo* p = layout.find(n);
  JG_CHECK(p, "Unknown tensor ", n);
  return *p;
}

Napi::Object tensor_entry(const Napi::Array& arr, uint32_t i) {
  Napi::Value v = arr.Get(i);
  if (!v.IsObject()) expected("an object", str_cat("tensors[", i, "]"), describe(v));
  return v.As<Napi::Object>();
}

namespace {

DecodeOptions decode_options_from_js(const Napi::Object& o) {
  DecodeOptions d;
  const Napi::Value dec = o.Get("decoder");
  const std::string name = dec.IsString() ? dec.As<Napi::String>().Utf8Value() : "";
  if (name == "low_confidence") d.decoder = Decoder::LOW_CONFIDENCE;
  else if (name == "random") d.decoder = Decoder::RANDOM;
  else if (name == "threshold") d.decoder = Decoder::THRESHOLD;
  else expected("'low_confidence', 'random' or 'threshold'", "decoder", describe(dec));
  const Napi::Value conf = o.Get("confidence");
  const std::string c = conf.IsString() ? conf.As<Napi::String>().Utf8Value() : conf.IsUndefined() ? "probability" : "";
  if (c == "probability") d.confidence = Confidence::PROBABILITY;
  else if (c == "margin") d.confidence = Confidence::MARGIN;
  else if (c == "entropy") d.confidence = Confidence::ENTROPY;
  else expected("'probability', 'margin' or 'entropy'", "confidence", describe(conf));
  d.gen_length = get_int_or(o, "genLength", 0);
  d.block_length = get_int_or(o, "blockLength", 0);
  d.steps = get_int_or(o, "steps", 0);
  d.temperature = get_number_or(o, "temperature", 0);
  d.threshold = get_number_or(o, "threshold", 0.9);
  d.cfg_scale = get_number_or(o, "cfgScale", 0);
  d.min_new_tokens = get_int_or(o, "minNewTokens", 0);
  Napi::Value stop = o.Get("stopIds");
  if (!stop.IsUndefined()) d.stop_ids = int32s(stop, "stopIds");
  check_decode_options(d);
  return d;
}

}  // namespace

DecodeCall decode_call_from_js(const Napi::CallbackInfo& info, const ModelConfig& cfg) {
  DecodeCall call;
  call.req.prompts = int32s(info[0], "prompts");
  call.req.prompt_starts = int32s(info[1], "promptStarts");
  auto seeds = typed<double>(info[2], napi_float64_array, "seeds");
  if (!info[3].IsObject()) expected("an object", "options", describe(info[3]));
  call.opts = decode_options_from_js(info[3].As<Napi::Object>());
  for (double sd : seeds) {
    JG_CHECK(sd >= 0 && sd <= 9007199254740991.0 && sd == std::floor(sd), "seeds must be integers in [0, 2^53)");
    call.req.seeds.push_back(static_cast<uint64_t>(sd));
  }
  check_decode_request(call.req, cfg);
  return call;
}

void policy_args_from_js(PolicyArgs& pa, const Napi::Object& o, const std::vector<int32_t>& targets,
                         const ModelConfig& cfg) {
  const int64_t R = static_cast<int64_t>(targets.size());
  pa.old_lp = float32s(o.Get("oldLogprobs"), "oldLogprobs");
  pa.adv = float32s(o.Get("advantages"), "advantages");
  LossSpec& s = pa.spec;
  s.kind = LossSpec::Kind::GRPO;
  s.eps_low = get_number(o, "epsilonLow");
  s.eps_high = get_number(o, "epsilonHigh");
  s.beta = get_number(o, "beta");
  s.excluded = excluded_from_js(o.Get("excludeIds"), cfg);
  if (static_cast<int64_t>(pa.old_lp.size()) != R) expected(str_cat("one log-prob per row (", R, ")"), "oldLogprobs", describe(o.Get("oldLogprobs")));
  if (static_cast<int64_t>(pa.adv.size()) != R) expected(str_cat("one advantage per row (", R, ")"), "advantages", describe(o.Get("advantages")));
  for (int64_t r = 0; r < R; r++) {
    if (!std::isfinite(pa.old_lp[r])) expected("finite log-probs", "oldLogprobs", str_cat(pa.old_lp[r], " at index ", r));
    if (!std::isfinite(pa.adv[r])) expected("finite advantages", "advantages", str_cat(pa.adv[r], " at index ", r));
  }
  if (!(s.eps_low > 0 && s.eps_low < 1)) expected("a number in (0, 1)", "epsilonLow", describe(o.Get("epsilonLow")));
  if (!(s.eps_high > 0 && std::isfinite(s.eps_high))) expected("a finite number > 0", "epsilonHigh", describe(o.Get("epsilonHigh")));
  if (!(s.beta >= 0 && std::isfinite(s.beta))) expected("a finite number >= 0", "beta", describe(o.Get("beta")));
  if (s.beta > 0) {
    pa.ref_lp = float32s(o.Get("refLogprobs"), "refLogprobs");
    if (static_cast<int64_t>(pa.ref_lp.size()) != R) expected(str_cat("one log-prob per row (", R, ")"), "refLogprobs", describe(o.Get("refLogprobs")));
  }
  for (int64_t r = 0; r < R; r++)
    for (int32_t id : s.excluded)
      if (targets[r] == id) expected("targets outside excludeIds", "targets", str_cat(id, " at index ", r));
  s.old_logprobs = pa.old_lp.data();
  s.advantages = pa.adv.data();
  s.ref_logprobs = pa.ref_lp.empty() ? nullptr : pa.ref_lp.data();
}

}  // namespace jg::js
