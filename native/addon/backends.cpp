#include "backends.h"

#include "../common/check.h"
#include "../cpu/model.h"
#ifdef JUSTGRPO_CUDA
#include "../cuda/model.h"
#include "../cuda/nccl.h"
#include "args.h"
#include "comm.h"
#include "errors.h"
#endif

namespace jg {

std::vector<std::string> backend_names() {
#ifdef JUSTGRPO_CUDA
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

std::unique_ptr<Backend> make_backend(const ModelConfig& cfg, const BackendOptions& o) {
  if (o.backend == "cpu") return std::make_unique<cpu::Model>(cfg, o.dtype.value_or(DType::F32), o.master_weights);
#ifdef JUSTGRPO_CUDA
  if (o.backend == "cuda") return std::make_unique<cuda::Model>(cfg, o.device, o.dtype.value_or(DType::BF16), o.master_weights);
#endif
  JG_FAIL(ErrorKind::UNSUPPORTED, "Backend '", o.backend, "' is not in this build");
}

void export_backend_info(Napi::Env env, Napi::Object exports) {
#ifdef JUSTGRPO_CUDA
  Napi::Object o = Napi::Object::New(env);
  o.Set("deviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
          return Napi::Number::New(info.Env(), cuda::device_count(nullptr));
        }));
  // Why there is no device (empty when there is one): the CUDA runtime's error, e.g. no driver.
  o.Set("unavailableReason", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
          std::string why;
          return Napi::String::New(info.Env(), cuda::device_count(&why) > 0 ? "" : why);
        }));
  o.Set("runtimeVersion", cuda::runtime_version());
  // The NCCL library this process can load: {loaded, name, error} (nothing is loaded until asked).
  o.Set("ncclLibrary", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
          const cuda::NcclLibrary& lib = cuda::nccl_library();
          Napi::Object r = Napi::Object::New(info.Env());
          r.Set("loaded", lib.loaded);
          r.Set("name", lib.name);
          r.Set("error", lib.error);
          return r;
        }));
  // ncclProbe({device?, communicator?, sizes?, iters?, timeoutSeconds?}) -> {library, rank, ranks,
  // failures, timings: [{bytes, seconds, algbw, busbw}]}: NCCL's collectives checked and the
  // all-reduce timed (cuda::nccl_probe), for bench/gpu and the tier's tests; synchronous. Without
  // a communicator, one rank and no MPI. Not part of the public API.
  o.Set("ncclProbe", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
          JG_JS_METHOD("ncclProbe", {
            Napi::Object a = info[0].IsObject() ? info[0].As<Napi::Object>() : Napi::Object::New(info.Env());
            const int device = static_cast<int>(js::get_int_or(a, "device", 0));
            const int iters = static_cast<int>(js::get_int_or(a, "iters", 5));
            const double timeout = js::get_number_or(a, "timeoutSeconds", 60);
            Communicator* world = nullptr;
            if (a.Has("communicator") && !a.Get("communicator").IsUndefined() && !a.Get("communicator").IsNull())
              world = &Comm::from_js(a.Get("communicator"), "communicator");
            std::vector<int64_t> sizes;
            if (a.Has("sizes") && !a.Get("sizes").IsUndefined())
              for (double s : js::typed<double>(a.Get("sizes"), napi_float64_array, "sizes")) sizes.push_back(static_cast<int64_t>(s));
            const cuda::NcclProbe p = cuda::nccl_probe(device, world, sizes, iters, timeout);
            Napi::Env e = info.Env();
            Napi::Object r = Napi::Object::New(e);
            r.Set("library", p.library);
            r.Set("rank", p.rank);
            r.Set("ranks", p.ranks);
            Napi::Array failures = Napi::Array::New(e, p.failures.size());
            for (size_t i = 0; i < p.failures.size(); i++) failures.Set(i, p.failures[i]);
            r.Set("failures", failures);
            Napi::Array timings = Napi::Array::New(e, p.timings.size());
            for (size_t i = 0; i < p.timings.size(); i++) {
              Napi::Object t = Napi::Object::New(e);
              t.Set("bytes", static_cast<double>(p.timings[i].bytes));
              t.Set("seconds", p.timings[i].seconds);
              t.Set("algbw", p.timings[i].algbw);
              t.Set("busbw", p.timings[i].busbw);
              timings.Set(i, t);
            }
            r.Set("timings", timings);
            return r;
          })
        }));
  exports.Set("cuda", o);
#else
  (void)env;
  (void)exports;
#endif
}

}  // namespace jg
