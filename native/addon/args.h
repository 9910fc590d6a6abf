// Reading a JS call's arguments, for both engines (engine.cpp on the CPU, cuda_engine.cpp on a GPU):
// each reader throws EngineError naming the field or argument it could not use.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../common/check.h"
#include "../common/config.h"
#include "../cpu/decode.h"

namespace jg::js {

int64_t get_int(const Napi::Object& o, const char* key);
double get_double(const Napi::Object& o, const char* key);
// An optional field: `fallback` when undefined.
double get_double_or(const Napi::Object& o, const char* key, double fallback);
int64_t get_int_or(const Napi::Object& o, const char* key, int64_t fallback);
std::string get_string(const Napi::Value& v, const char* what);

template <typename T>
std::vector<T> copy_typed(const Napi::Value& v, napi_typedarray_type type, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw EngineError(str_cat("Expected a", type == napi_int32_array ? "n Int32Array"
                                             : type == napi_float64_array ? " Float64Array" : " Float32Array",
                              " for `", what, "`"));
  auto a = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}

// The engine's model config from the object lib/native/binding.ts passes, checked.
ModelConfig config_from_js(const Napi::Object& o);
void check_packed_batch(const std::vector<int32_t>& tokens, const std::vector<int32_t>& starts,
                        const std::vector<int32_t>& rows, const ModelConfig& cfg);
// Entry i of a `tensors` array: an object with a parameter `name`.
Napi::Object tensor_entry(const Napi::Array& arr, uint32_t i);
// decode(prompts, promptStarts, seeds, options, ...): the first four arguments, checked.
struct DecodeCall {
  cpu::DecodeRequest req;
  cpu::DecodeOptions opts;
};
DecodeCall decode_call_from_js(const Napi::CallbackInfo& info, const ModelConfig& cfg);

}  // namespace jg::js
