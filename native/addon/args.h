// Reading a JS call's arguments, for every method of the Engine and the Trainer: each reader throws
// an EngineError (kind INPUT) naming the argument or field in the one message shape lib/errors.ts
// `expected` writes: "Expected <what> for `<name>` but received <what came>".
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../common/check.h"
#include "../common/config.h"
#include "../common/decode.h"
#include "../common/layout.h"
#include "../common/loss.h"

namespace jg::js {

// What a value is, for messages: "undefined", "a Float32Array of length 3", "number 2", ...
std::string describe(const Napi::Value& v);
using jg::expected;

std::string get_string(const Napi::Value& v, const char* name);
// A required number field of an object.
double get_number(const Napi::Object& o, const char* key);
// Optional fields: `fallback` when undefined; integers must be whole and within 2^53.
double get_number_or(const Napi::Object& o, const char* key, double fallback);
int64_t get_int_or(const Napi::Object& o, const char* key, int64_t fallback);
bool get_bool_or(const Napi::Object& o, const char* key, bool fallback);
// A required number as int64, saturating (byte offsets: the file's size bounds them later).
int64_t get_int64(const Napi::Object& o, const char* key);

template <typename T>
std::vector<T> typed(const Napi::Value& v, napi_typedarray_type type, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    expected(type == napi_int32_array     ? "an Int32Array"
             : type == napi_float64_array ? "a Float64Array"
             : type == napi_uint8_array   ? "a Uint8Array"
                                          : "a Float32Array",
             name, describe(v));
  auto a = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}
inline std::vector<int32_t> int32s(const Napi::Value& v, const char* name) { return typed<int32_t>(v, napi_int32_array, name); }
inline std::vector<float> float32s(const Napi::Value& v, const char* name) { return typed<float>(v, napi_float32_array, name); }

// The engine's model config from the object lib/native/binding.ts passes, checked.
ModelConfig config_from_js(const Napi::Object& o);

// A packed batch (tokens, seqStarts, rows) as the engine's methods take it, copied and checked.
struct PackedBatch {
  std::vector<int32_t> tokens, starts, rows;
  Batch batch() const { return {tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1}; }
  int64_t n_rows() const { return static_cast<int64_t>(rows.size()); }
};
PackedBatch packed_batch_from_js(const Napi::Value& tokens, const Napi::Value& starts, const Napi::Value& rows,
                                 const ModelConfig& cfg);
// One target per row, each in [0, embedding_size) and outside `excluded`.
std::vector<int32_t> targets_from_js(const Napi::Value& v, int64_t n_rows, const std::vector<int32_t>& excluded,
                                     const ModelConfig& cfg);
// Ids in [0, embedding_size).
std::vector<int32_t> excluded_from_js(const Napi::Value& v, const ModelConfig& cfg);
// One finite weight per row.
std::vector<float> weights_from_js(const Napi::Value& v, int64_t n_rows);

// The parameter a name refers to.
const ParamInfo& param_named(const ParamLayout& layout, const Napi::Value& name);
// Entry i of a `tensors` array: an object with a parameter `name`.
Napi::Object tensor_entry(const Napi::Array& arr, uint32_t i);

// decode(prompts, promptStarts, seeds, options, ...): the first four arguments, checked.
struct DecodeCall {
  DecodeRequest req;
  DecodeOptions opts;
};
DecodeCall decode_call_from_js(const Napi::CallbackInfo& info, const ModelConfig& cfg);

// The GRPO loss's own inputs {oldLogprobs, advantages, refLogprobs?, epsilonLow, epsilonHigh, beta,
// excludeIds}, for rows with these targets. The spec points into the vectors (the caller sets its
// weights).
struct PolicyArgs {
  std::vector<float> old_lp, adv, ref_lp;
  LossSpec spec;
};
void policy_args_from_js(PolicyArgs& out, const Napi::Object& o, const std::vector<int32_t>& targets,
                         const ModelConfig& cfg);

}  // namespace jg::js
