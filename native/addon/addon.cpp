// Registers the native classes and reports what this build supports.
#include <cblas.h>
#include <napi.h>

#include <string>

#include "../common/ops.h"
#include "../cpu/onednn.h"
#include "../cpu/op_timer.h"
#include "backends.h"
#include "comm.h"
#include "engine.h"
#include "trainer.h"

namespace jg {
Napi::Value TestOp(const Napi::CallbackInfo& info);  // testops.cpp
}  // namespace jg

namespace {

// opTimes(start): with true, zeroes the GEMM and attention clocks and starts them; with false, stops
// them. Returns the seconds counted so far and the GEMMs' floating-point operations: {gemm, attention, gemmFlops}.
Napi::Value OpTimes(const Napi::CallbackInfo& info) {
  auto& clock = jg::cpu::op_clock();
  const bool start = info.Length() > 0 && info[0].ToBoolean();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("gemm", Napi::Number::New(info.Env(), clock.ns[0].load() * 1e-9));
  o.Set("attention", Napi::Number::New(info.Env(), clock.ns[1].load() * 1e-9));
  o.Set("gemmFlops", Napi::Number::New(info.Env(), static_cast<double>(clock.gemm_flops.load())));
  if (start) {
    clock.ns[0] = 0;
    clock.ns[1] = 0;
    clock.gemm_flops = 0;
  }
  clock.on = start;
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", jg::Engine::Init(env));
  exports.Set("Trainer", jg::Trainer::Init(env, exports.Get("Engine").As<Napi::Function>()));
  // MPI's world communicator (data parallelism), loaded from the system's libmpi when first made.
  exports.Set("Communicator", jg::Comm::Init(env));
  const auto names = jg::backend_names();
  Napi::Array backends = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); i++) backends.Set(i, Napi::String::New(env, names[i]));
  exports.Set("backends", backends);
  jg::export_backend_info(env, exports);
  // One op of one backend on small arrays: the backend parity tests (test/gpu).
  exports.Set("testOp", Napi::Function::New(env, jg::TestOp, "testOp"));
  Napi::Array ops = Napi::Array::New(env, jg::OP_COUNT);
  for (int i = 0; i < jg::OP_COUNT; i++) ops.Set(i, Napi::String::New(env, jg::OP_NAMES[i]));
  exports.Set("ops", ops);
  exports.Set("opTimes", Napi::Function::New(env, OpTimes, "opTimes"));
  // Which OpenBLAS and which of its kernel sets this CPU got (it dispatches at load).
  exports.Set("blas", std::string(openblas_get_config()) + " (core " + openblas_get_corename() + ")");
  // What runs the CPU's bf16 products: oneDNN's version and the ISA it picked, or why there is none.
  // A function: it opens oneDNN, which nothing else does until bf16 is asked for.
  exports.Set("bf16Kernels", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                return Napi::String::New(info.Env(), jg::cpu::onednn_describe());
              }, "bf16Kernels"));
  return exports;
}

}  // namespace

NODE_API_MODULE(justgrpo, Init)
