// The N-API class behind NativeCommunicator (lib/native/binding.ts): MPI's world communicator
// (native/common/comm.h). Collectives run off the event loop and resolve a Promise; each has a
// time-out, and a failure names the rank that did not answer.
#pragma once

#include <napi.h>

#include "../common/comm.h"

namespace jg {

class Comm : public Napi::ObjectWrap<Comm> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Comm(const Napi::CallbackInfo& info);
  // The communicator a JavaScript value wraps; an INPUT error naming `name` otherwise.
  static Communicator& from_js(const Napi::Value& v, const char* name);

 private:
  Napi::Value Rank(const Napi::CallbackInfo& info);
  Napi::Value Size(const Napi::CallbackInfo& info);
  Napi::Value Library(const Napi::CallbackInfo& info);
  Napi::Value AllReduce(const Napi::CallbackInfo& info);
  Napi::Value AllReduceF32(const Napi::CallbackInfo& info);
  Napi::Value ReduceScatterF32(const Napi::CallbackInfo& info);
  Napi::Value AllGatherF32(const Napi::CallbackInfo& info);
  Napi::Value Blocks(const Napi::CallbackInfo& info, bool reduce_scatter);
  Napi::Value Broadcast(const Napi::CallbackInfo& info);
  Napi::Value Barrier(const Napi::CallbackInfo& info);
  Napi::Value Abort(const Napi::CallbackInfo& info);
  Napi::Value Finalize(const Napi::CallbackInfo& info);

  Communicator* comm_ = nullptr;
};

}  // namespace jg
