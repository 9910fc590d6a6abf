// C++ exceptions into JavaScript errors, for every native method: the message is "<call>: <what>",
// `code` is the ErrorKind's code (ERR_JG_*, mapped to the TypeScript error classes in
// lib/native/binding.ts) and `where` the file:line that threw, kept out of the message.
#pragma once

#include <napi.h>

#include <exception>
#include <new>
#include <string>

#include "../common/check.h"

namespace jg::js {

// What a failed call left behind, captured where it failed (a worker thread, for async calls)
// and turned into a JavaScript Error on the JavaScript thread.
struct CallError {
  std::string message;
  ErrorKind kind = ErrorKind::INTERNAL;
  std::string where;

  // The exception being handled (call only inside a catch block), named after the failing call.
  static CallError current(const std::string& call) {
    CallError c;
    try {
      throw;
    } catch (const EngineError& e) {
      c = {call + ": " + e.what(), e.kind, e.where};
    } catch (const std::bad_alloc& e) {
      c = {call + ": " + e.what(), ErrorKind::OUT_OF_MEMORY, ""};
    } catch (const std::exception& e) {
      c = {call + ": " + e.what(), ErrorKind::INTERNAL, ""};
    }
    return c;
  }
  // Sets code and where on an Error whose message is already ours.
  void annotate(Napi::Error& err) const {
    err.Set("code", Napi::String::New(err.Env(), error_code(kind)));
    if (!where.empty()) err.Set("where", Napi::String::New(err.Env(), where));
  }
  Napi::Error to_js(Napi::Env env) const {
    Napi::Error err = Napi::Error::New(env, message);
    annotate(err);
    return err;
  }
};

}  // namespace jg::js

// The body of a synchronous method: an exception becomes a JavaScript error naming the call.
#define JG_JS_METHOD(call, ...)                                                         \
  try {                                                                                 \
    __VA_ARGS__                                                                         \
  } catch (const std::exception&) {                                                    \
    ::jg::js::CallError::current(call).to_js(info.Env()).ThrowAsJavaScriptException(); \
    return info.Env().Undefined();                                                      \
  }
