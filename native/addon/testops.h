// testOp(backend, op, dtype, inputs, sizes): runs one op of one backend on small host arrays, for the
// backend parity tests (test/gpu) in the style of ggml's test-backend-ops. Not part of the public API.
#pragma once

#include <napi.h>

namespace jg {

Napi::Value TestOp(const Napi::CallbackInfo& info);

}  // namespace jg
