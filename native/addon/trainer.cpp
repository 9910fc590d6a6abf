#include "trainer.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../common/check.h"
#include "../common/memory.h"
#include "../common/tensor_io.h"
#include "../cpu/loss.h"
#include "../cpu/ops.h"
#include "task.h"

namespace jg {

namespace {

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    static const char* names[] = {"Int8Array",   "Uint8Array",   "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array", "Int32Array",   "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    auto t = v.As<Napi::TypedArray>();
    int type = static_cast<int>(t.TypedArrayType());
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

// One message shape for every argument error, as lib/errors.ts `expected` writes it.
[[noreturn]] void expected(const std::string& what, const std::string& name, const std::string& received) {
  throw EngineError(str_cat("Expected ", what, " for `", name, "` but received ", received));
}

template <typename T>
std::vector<T> typed(const Napi::Value& v, napi_typedarray_type type, const char* type_name, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    expected(str_cat("a", type_name[0] == 'I' ? "n " : " ", type_name), name, describe(v));
  auto a = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
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

// The arguments of crossEntropyBackward / crossEntropyLoss, copied and validated.
struct RowBatch {
  std::vector<int32_t> tokens, starts, rows, targets;
  std::vector<float> weights;
};

RowBatch read_row_batch(const Napi::CallbackInfo& info, const ModelConfig& cfg) {
  RowBatch b;
  b.tokens = typed<int32_t>(info[0], napi_int32_array, "Int32Array", "tokens");
  b.starts = typed<int32_t>(info[1], napi_int32_array, "Int32Array", "seqStarts");
  b.rows = typed<int32_t>(info[2], napi_int32_array, "Int32Array", "rows");
  b.targets = typed<int32_t>(info[3], napi_int32_array, "Int32Array", "targets");
  b.weights = typed<float>(info[4], napi_float32_array, "Float32Array", "weights");
  const int64_t N = static_cast<int64_t>(b.tokens.size()), R = static_cast<int64_t>(b.rows.size());
  if (N == 0) expected("at least one token", "tokens", "an empty Int32Array");
  for (int64_t i = 0; i < N; i++)
    if (b.tokens[i] < 0 || b.tokens[i] >= cfg.vocab_size)
      expected(str_cat("token ids in [0, ", cfg.vocab_size, ")"), "tokens", str_cat(b.tokens[i], " at index ", i));
  const int64_t S = static_cast<int64_t>(b.starts.size());
  if (S < 2 || b.starts[0] != 0 || b.starts[S - 1] != N)
    expected(str_cat("sequence offsets from 0 to tokens.length (", N, ")"), "seqStarts",
             S == 0 ? std::string("an empty Int32Array")
                    : str_cat(S, " offsets from ", b.starts[0], " to ", b.starts[S - 1]));
  for (int64_t s = 0; s + 1 < S; s++) {
    int64_t len = int64_t(b.starts[s + 1]) - b.starts[s];
    if (len < 1 || len > cfg.max_seq_len)
      expected(str_cat("sequences of 1 to ", cfg.max_seq_len, " tokens"), "seqStarts",
               str_cat("a sequence ", s, " of ", len, " tokens"));
  }
  for (int64_t r = 0; r < R; r++)
    if (b.rows[r] < 0 || b.rows[r] >= N)
      expected(str_cat("row indices in [0, ", N, ")"), "rows", str_cat(b.rows[r], " at index ", r));
  if (static_cast<int64_t>(b.targets.size()) != R)
    expected(str_cat("one target per row (", R, ")"), "targets", describe(info[3]));
  for (int64_t r = 0; r < R; r++)
    if (b.targets[r] < 0 || b.targets[r] >= cfg.embedding_size)
      expected(str_cat("target ids in [0, ", cfg.embedding_size, ")"), "targets", str_cat(b.targets[r], " at index ", r));
  if (static_cast<int64_t>(b.weights.size()) != R)
    expected(str_cat("one weight per row (", R, ")"), "weights", describe(info[4]));
  for (int64_t r = 0; r < R; r++)
    if (!std::isfinite(b.weights[r]))
      expected("finite weights", "weights", str_cat(b.weights[r], " at index ", r));
  return b;
}

// The policy loss's own inputs: {oldLogprobs, advantages, refLogprobs?, epsilonLow, epsilonHigh, beta, excludeIds}.
struct PolicyArgs {
  std::vector<float> old_lp, adv, ref_lp;
  double eps_low = 0.2, eps_high = 0.2, beta = 0;
  std::vector<int32_t> excluded;
};

PolicyArgs read_policy_args(const Napi::Object& o, const std::vector<int32_t>& targets, const ModelConfig& cfg) {
  PolicyArgs pa;
  const int64_t R = static_cast<int64_t>(targets.size());
  pa.old_lp = typed<float>(o.Get("oldLogprobs"), napi_float32_array, "Float32Array", "oldLogprobs");
  pa.adv = typed<float>(o.Get("advantages"), napi_float32_array, "Float32Array", "advantages");
  pa.eps_low = get_number(o, "epsilonLow");
  pa.eps_high = get_number(o, "epsilonHigh");
  pa.beta = get_number(o, "beta");
  pa.excluded = typed<int32_t>(o.Get("excludeIds"), napi_int32_array, "Int32Array", "excludeIds");
  if (static_cast<int64_t>(pa.old_lp.size()) != R) expected(str_cat("one log-prob per row (", R, ")"), "oldLogprobs", describe(o.Get("oldLogprobs")));
  if (static_cast<int64_t>(pa.adv.size()) != R) expected(str_cat("one advantage per row (", R, ")"), "advantages", describe(o.Get("advantages")));
  for (int64_t r = 0; r < R; r++) {
    if (!std::isfinite(pa.old_lp[r])) expected("finite log-probs", "oldLogprobs", str_cat(pa.old_lp[r], " at index ", r));
    if (!std::isfinite(pa.adv[r])) expected("finite advantages", "advantages", str_cat(pa.adv[r], " at index ", r));
  }
  if (!(pa.eps_low > 0 && pa.eps_low < 1)) expected("a number in (0, 1)", "epsilonLow", describe(o.Get("epsilonLow")));
  if (!(pa.eps_high > 0 && std::isfinite(pa.eps_high))) expected("a finite number > 0", "epsilonHigh", describe(o.Get("epsilonHigh")));
  if (!(pa.beta >= 0 && std::isfinite(pa.beta))) expected("a finite number >= 0", "beta", describe(o.Get("beta")));
  if (pa.beta > 0) {
    pa.ref_lp = typed<float>(o.Get("refLogprobs"), napi_float32_array, "Float32Array", "refLogprobs");
    if (static_cast<int64_t>(pa.ref_lp.size()) != R) expected(str_cat("one log-prob per row (", R, ")"), "refLogprobs", describe(o.Get("refLogprobs")));
  }
  for (int32_t id : pa.excluded)
    if (id < 0 || id >= cfg.embedding_size) expected(str_cat("ids in [0, ", cfg.embedding_size, ")"), "excludeIds", str_cat(id));
  for (int64_t r = 0; r < R; r++)
    for (int32_t id : pa.excluded)
      if (targets[r] == id) expected("targets outside excludeIds", "targets", str_cat(id, " at index ", r));
  return pa;
}

// The result of a policy loss call: {loss, logprobs, clipped}.
struct PolicyOut {
  double loss = 0;
  std::vector<float> logprobs;
  std::vector<uint8_t> region;
};

Napi::Value policy_result(Napi::Env env, const PolicyOut& out, bool policy) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", Napi::Number::New(env, out.loss));
  auto lp = Napi::Float32Array::New(env, out.logprobs.size());
  if (!out.logprobs.empty()) std::memcpy(lp.Data(), out.logprobs.data(), out.logprobs.size() * sizeof(float));
  o.Set("logprobs", lp);
  if (policy) {
    auto reg = Napi::Uint8Array::New(env, out.region.size());
    if (!out.region.empty()) std::memcpy(reg.Data(), out.region.data(), out.region.size());
    o.Set("clipped", reg);
  }
  return o;
}

// The moment a tensor entry names: {name, moment: 'm' | 'v'}.
const ParamInfo& entry_param(const cpu::Model& m, const Napi::Object& t) {
  std::string name = get_string(t.Get("name"), "name");
  const ParamInfo* p = m.layout().find(name);
  if (!p) expected("a parameter name", "name", str_cat("\"", name, "\""));
  return *p;
}

float* entry_moment(Trainer::State& st, const Napi::Object& t) {
  std::string which = get_string(t.Get("moment"), "moment");
  if (which == "m") return st.m.data();
  if (which == "v") return st.v.data();
  expected("'m' or 'v'", "moment", str_cat("\"", which, "\""));
}

}  // namespace

float* Trainer::State::live_grads() {
  if (grads_zeroed) {
    std::memset(grads.data(), 0, static_cast<size_t>(grads.size()) * sizeof(float));
    grads_zeroed = false;
  }
  return grads.data();
}

Napi::Function Trainer::Init(Napi::Env env, Napi::Function engine_ctor) {
  // The Engine class travels as the class's data, so the constructor can check its argument.
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(engine_ctor));
  env.AddCleanupHook([ctor] { delete ctor; });
  return DefineClass(env, "Trainer",
                     {
                         InstanceMethod("zeroGrad", &Trainer::ZeroGrad),
                         InstanceMethod("crossEntropyBackward", &Trainer::CrossEntropyBackward),
                         InstanceMethod("crossEntropyLoss", &Trainer::CrossEntropyLoss),
                         InstanceMethod("policyLossBackward", &Trainer::PolicyLossBackward),
                         InstanceMethod("policyLoss", &Trainer::PolicyLoss),
                         InstanceMethod("step", &Trainer::Step),
                         InstanceMethod("getGrad", &Trainer::GetGrad),
                         InstanceMethod("setGrad", &Trainer::SetGrad),
                         InstanceMethod("getMoments", &Trainer::GetMoments),
                         InstanceMethod("setMoments", &Trainer::SetMoments),
                         InstanceAccessor("stepCount", &Trainer::GetStepCount, &Trainer::SetStepCount),
                         InstanceMethod("saveMoments", &Trainer::SaveMoments),
                         InstanceMethod("loadMoments", &Trainer::LoadMoments),
                         InstanceMethod("workspaceBytes", &Trainer::WorkspaceBytes),
                         InstanceMethod("rollout", &Trainer::Rollout),
                         InstanceMethod("policyLossBackwardKept", &Trainer::PolicyLossBackwardKept),
                         InstanceMethod("keptSteps", &Trainer::KeptSteps),
                         InstanceMethod("releaseKept", &Trainer::ReleaseKept),
                         InstanceMethod("dispose", &Trainer::Dispose),
                     },
                     ctor);
}

Trainer::Trainer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Trainer>(info) {
  Napi::Env env = info.Env();
  try {
    auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(ctor->Value()))
      expected("an Engine", "engine", info.Length() < 1 ? std::string("undefined") : describe(info[0]));
    bool checkpoint = false;
    if (info.Length() >= 2 && !info[1].IsUndefined()) {
      if (!info[1].IsObject()) expected("an options object", "options", describe(info[1]));
      Napi::Value c = info[1].As<Napi::Object>().Get("checkpointActivations");
      if (!c.IsUndefined() && !c.IsBoolean()) expected("a boolean", "checkpointActivations", describe(c));
      checkpoint = c.IsBoolean() && c.As<Napi::Boolean>().Value();
    }
    engine_ = Napi::ObjectWrap<Engine>::Unwrap(info[0].As<Napi::Object>());
    if (!engine_->has_model()) throw EngineError("Model is disposed");
    // The layout never changes after the model is made, so reading it needs no claim.
    const int64_t total = engine_->model().layout().total();
    // Checked together first: three buffers that each fit can still not fit side by side.
    check_fits(checked_mul(3 * total, static_cast<int64_t>(sizeof(float))), "gradients and AdamW moments");
    auto st = std::make_unique<State>(checkpoint);
    st->grads.resize(total, "gradients");
    st->m.resize(total, "AdamW first moments");
    st->v.resize(total, "AdamW second moments");
    state_ = std::move(st);
    engine_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
  } catch (const std::exception& e) {
    Napi::Error::New(env, std::string("Trainer: ") + e.what()).ThrowAsJavaScriptException();
  }
}

cpu::Model& Trainer::live_model() {
  if (!state_) throw EngineError("Trainer is disposed");
  if (!engine_->has_model()) throw EngineError("Model is disposed");
  return engine_->model();
}

template <typename F>
auto Trainer::claimed(F&& body) -> decltype(body()) {
  live_model();
  if (!engine_->try_claim()) throw EngineError("The model is busy with another call");
  struct Release {
    Engine* e;
    ~Release() { e->unclaim(); }
  } release{engine_};
  return body();
}

// Wraps a synchronous method body: errors become JavaScript errors naming the method.
#define JG_TRAINER_METHOD(name, ...)                                                                 \
  try {                                                                                             \
    __VA_ARGS__                                                                                     \
  } catch (const std::exception& e) {                                                               \
    Napi::Error::New(info.Env(), std::string(name ": ") + e.what()).ThrowAsJavaScriptException();   \
    return info.Env().Undefined();                                                                  \
  }

// zeroGrad(): O(1) here; the gradients are zeroed by the next call that uses them, off the event loop.
Napi::Value Trainer::ZeroGrad(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("zeroGrad", {
    claimed([&] { state_->grads_zeroed = true; });
    return info.Env().Undefined();
  })
}

Napi::Value Trainer::Loss(const Napi::CallbackInfo& info, const char* name, bool backward, bool policy) {
  Napi::Env env = info.Env();
  cpu::Model& m = live_model();
  const ModelConfig& cfg = m.config();
  auto batch = std::make_shared<RowBatch>(read_row_batch(info, cfg));
  auto pa = std::make_shared<PolicyArgs>();
  if (policy) {
    if (info.Length() < 6 || !info[5].IsObject()) expected("an options object", "options", describe(info[5]));
    *pa = read_policy_args(info[5].As<Napi::Object>(), batch->targets, cfg);
  }
  auto out = std::make_shared<PolicyOut>();
  State* st = state_.get();
  return queue_task(env, engine_, name,
      [&m, st, batch, pa, out, backward, policy] {
        const RowBatch& b = *batch;
        const int64_t R = static_cast<int64_t>(b.rows.size());
        out->logprobs.assign(R, 0.0f);
        cpu::Batch cb{b.tokens.data(), b.starts.data(), static_cast<int64_t>(b.starts.size()) - 1};
        float* grads = backward ? st->live_grads() : nullptr;
        if (policy) {
          out->region.assign(R, 0);
          cpu::GrpoLoss loss({pa->old_lp.data(), pa->adv.data(), b.weights.data(), pa->ref_lp.empty() ? nullptr : pa->ref_lp.data(),
                              pa->eps_low, pa->eps_high, pa->beta},
                             out->region.data());
          loss.excluded = pa->excluded;
          out->loss = m.loss(grads, st->workspace, cb, b.rows.data(), b.targets.data(), R, loss, out->logprobs.data());
        } else {
          cpu::CrossEntropyLoss loss(b.weights.data());
          out->loss = m.loss(grads, st->workspace, cb, b.rows.data(), b.targets.data(), R, loss, out->logprobs.data());
        }
      },
      [out, policy](Napi::Env env) { return policy_result(env, *out, policy); }, Value());
}

// crossEntropyBackward(tokens, seqStarts, rows, targets, weights) -> Promise<{loss, logprobs}>:
// forward and backward; gradients accumulate until zeroGrad().
Napi::Value Trainer::CrossEntropyBackward(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("crossEntropyBackward", { return Loss(info, "crossEntropyBackward", true, false); })
}

// crossEntropyLoss(...): the same loss and logprobs, forward only; gradients untouched.
Napi::Value Trainer::CrossEntropyLoss(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("crossEntropyLoss", { return Loss(info, "crossEntropyLoss", false, false); })
}

// policyLossBackward(tokens, seqStarts, rows, targets, weights, {oldLogprobs, advantages,
// refLogprobs?, epsilonLow, epsilonHigh, beta, excludeIds}) -> Promise<{loss, logprobs, clipped}>:
// JustGRPO's clipped-ratio loss fused with the head's log-softmax (excludeIds renormalised away),
// forward and backward; gradients accumulate until zeroGrad().
Napi::Value Trainer::PolicyLossBackward(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("policyLossBackward", { return Loss(info, "policyLossBackward", true, true); })
}

// policyLoss(...): the same loss, log-probs and clip regions, forward only.
Napi::Value Trainer::PolicyLoss(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("policyLoss", { return Loss(info, "policyLoss", false, true); })
}

// step({lr, beta1, beta2, eps, weightDecay, maxGradNorm}) -> Promise<{gradNorm, nonFinite, clipped}>.
// A step after zeroGrad() with no backward in between sees zero gradients: the moments decay and
// the update and weight decay still apply, as in PyTorch with zero-filled (not None) gradients.
// Non-finite gradient elements are zeroed and counted; gradNorm is the global L2 norm after that
// and before clipping (as torch.nn.utils.clip_grad_norm_ returns it); with maxGradNorm > 0 the
// gradients are scaled in place by maxGradNorm / (gradNorm + 1e-6) when that is below 1. Then
// AdamW updates every parameter, with weight decay on the 2-D weight matrices only (embedding,
// projections, LM head), never on the RMSNorm weights. The gradients are left as clipped.
Napi::Value Trainer::Step(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("step", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model();
    if (info.Length() < 1 || !info[0].IsObject()) expected("an options object", "options", describe(info[0]));
    Napi::Object o = info[0].As<Napi::Object>();
    const double lr = get_number(o, "lr"), beta1 = get_number(o, "beta1"), beta2 = get_number(o, "beta2");
    const double eps = get_number(o, "eps"), wd = get_number(o, "weightDecay"), max_norm = get_number(o, "maxGradNorm");
    if (!(std::isfinite(lr) && lr >= 0)) expected("a finite number >= 0", "lr", describe(o.Get("lr")));
    if (!(beta1 >= 0 && beta1 < 1)) expected("a number in [0, 1)", "beta1", describe(o.Get("beta1")));
    if (!(beta2 >= 0 && beta2 < 1)) expected("a number in [0, 1)", "beta2", describe(o.Get("beta2")));
    if (!(std::isfinite(eps) && eps > 0)) expected("a finite number > 0", "eps", describe(o.Get("eps")));
    if (!(std::isfinite(wd) && wd >= 0)) expected("a finite number >= 0", "weightDecay", describe(o.Get("weightDecay")));
    if (!(max_norm >= 0)) expected("a number >= 0 (0 or Infinity: no clipping)", "maxGradNorm", describe(o.Get("maxGradNorm")));
    Napi::Value skip_v = o.Get("skipNonFinite");
    if (!skip_v.IsUndefined() && !skip_v.IsBoolean()) expected("a boolean", "skipNonFinite", describe(skip_v));
    const bool skip_non_finite = skip_v.IsBoolean() && skip_v.As<Napi::Boolean>().Value();
    struct Out {
      double norm = 0;
      int64_t non_finite = 0;
      bool clipped = false, skipped = false;
    };
    auto out = std::make_shared<Out>();
    State* st = state_.get();
    engine_->weights_changed();
    return queue_task(env, engine_, "step",
        [&m, st, out, lr, beta1, beta2, eps, wd, max_norm, skip_non_finite] {
          const int64_t total = m.layout().total();
          float* g = st->live_grads();
          out->non_finite = cpu::nonfinite_zero(g, total);
          // skipNonFinite: one bad value drops the whole update (weights, moments, step count unchanged).
          if (skip_non_finite && out->non_finite > 0) {
            out->skipped = true;
            return;
          }
          out->norm = std::sqrt(cpu::grad_sumsq(g, total));
          if (max_norm > 0 && std::isfinite(max_norm)) {
            const double coef = max_norm / (out->norm + 1e-6);
            if (coef < 1.0) {
              cpu::grad_scale(g, static_cast<float>(coef), total);
              out->clipped = true;
            }
          }
          st->step++;
          for (const ParamInfo& p : m.layout().params()) {
            const bool matrix = p.shape.size() == 2;
            cpu::AdamWParams hp{lr, beta1, beta2, eps, matrix ? wd : 0.0, st->step};
            cpu::adamw_update(m.params() + p.offset, st->m.data() + p.offset, st->v.data() + p.offset, g + p.offset,
                              p.numel, hp);
          }
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Object r = Napi::Object::New(env);
          r.Set("gradNorm", Napi::Number::New(env, out->norm));
          r.Set("nonFinite", Napi::Number::New(env, static_cast<double>(out->non_finite)));
          r.Set("clipped", Napi::Boolean::New(env, out->clipped));
          r.Set("skipped", Napi::Boolean::New(env, out->skipped));
          return r;
        }, Value());
  })
}

Napi::Value Trainer::GetGrad(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("getGrad", {
    Napi::Env env = info.Env();
    const ParamInfo* p = live_model().layout().find(get_string(info[0], "name"));
    if (!p) expected("a parameter name", "name", describe(info[0]));
    return claimed([&]() -> Napi::Value {
      auto out = Napi::Float32Array::New(env, p->numel);  // zero-filled
      if (!state_->grads_zeroed) std::memcpy(out.Data(), state_->grads.data() + p->offset, p->numel * sizeof(float));
      return out;
    });
  })
}

// setGrad(name, data): overwrites one parameter's gradient (a Float32Array of its size); for
// gradient surgery between backward and step, and for injecting faults in tests.
Napi::Value Trainer::SetGrad(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("setGrad", {
    const ParamInfo* p = live_model().layout().find(get_string(info[0], "name"));
    if (!p) expected("a parameter name", "name", describe(info[0]));
    auto g = typed<float>(info[1], napi_float32_array, "Float32Array", "data");
    if (static_cast<int64_t>(g.size()) != p->numel)
      expected(str_cat("a Float32Array of ", p->numel, " elements"), "data", describe(info[1]));
    claimed([&] { std::memcpy(state_->live_grads() + p->offset, g.data(), p->numel * sizeof(float)); });
    return info.Env().Undefined();
  })
}

// getMoments(name) -> {m, v}: copies of the AdamW moments of one parameter.
Napi::Value Trainer::GetMoments(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("getMoments", {
    Napi::Env env = info.Env();
    const ParamInfo* p = live_model().layout().find(get_string(info[0], "name"));
    if (!p) expected("a parameter name", "name", describe(info[0]));
    return claimed([&]() -> Napi::Value {
      auto m = Napi::Float32Array::New(env, p->numel);
      auto v = Napi::Float32Array::New(env, p->numel);
      std::memcpy(m.Data(), state_->m.data() + p->offset, p->numel * sizeof(float));
      std::memcpy(v.Data(), state_->v.data() + p->offset, p->numel * sizeof(float));
      Napi::Object o = Napi::Object::New(env);
      o.Set("m", m);
      o.Set("v", v);
      return o;
    });
  })
}

// setMoments(name, m, v): overwrites one parameter's moments (Float32Arrays of its size).
Napi::Value Trainer::SetMoments(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("setMoments", {
    const ParamInfo* p = live_model().layout().find(get_string(info[0], "name"));
    if (!p) expected("a parameter name", "name", describe(info[0]));
    auto m = typed<float>(info[1], napi_float32_array, "Float32Array", "m");
    auto v = typed<float>(info[2], napi_float32_array, "Float32Array", "v");
    if (static_cast<int64_t>(m.size()) != p->numel)
      expected(str_cat("a Float32Array of ", p->numel, " elements"), "m", describe(info[1]));
    if (static_cast<int64_t>(v.size()) != p->numel)
      expected(str_cat("a Float32Array of ", p->numel, " elements"), "v", describe(info[2]));
    claimed([&] {
      std::memcpy(state_->m.data() + p->offset, m.data(), p->numel * sizeof(float));
      std::memcpy(state_->v.data() + p->offset, v.data(), p->numel * sizeof(float));
    });
    return info.Env().Undefined();
  })
}

Napi::Value Trainer::GetStepCount(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("stepCount", {
    if (!state_) throw EngineError("Trainer is disposed");
    return Napi::Number::New(info.Env(), static_cast<double>(state_->step));
  })
}

void Trainer::SetStepCount(const Napi::CallbackInfo& info, const Napi::Value& value) {
  try {
    double n = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
    if (!(n >= 0 && n <= 9007199254740991.0 && std::floor(n) == n))
      expected("a non-negative integer", "stepCount", describe(value));
    claimed([&] { state_->step = static_cast<int64_t>(n); });
  } catch (const std::exception& e) {
    Napi::Error::New(info.Env(), std::string("stepCount: ") + e.what()).ThrowAsJavaScriptException();
  }
}

// saveMoments(path, header, [{name, moment}]): writes the header bytes (length prefix included,
// built by lib/safetensors.ts) and then each listed moment as F32, in order; fsyncs before resolving.
Napi::Value Trainer::SaveMoments(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("saveMoments", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model();
    std::string path = get_string(info[0], "path");
    if (!info[1].IsBuffer()) expected("a Buffer", "header", describe(info[1]));
    auto hb = info[1].As<Napi::Buffer<char>>();
    auto header = std::make_shared<std::vector<char>>(hb.Data(), hb.Data() + hb.Length());
    if (!info[2].IsArray()) expected("an array", "tensors", describe(info[2]));
    std::vector<std::pair<const float*, int64_t>> items;
    Napi::Array arr = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      if (!arr.Get(i).IsObject()) expected("{name, moment} objects", "tensors", describe(arr.Get(i)));
      Napi::Object t = arr.Get(i).As<Napi::Object>();
      const ParamInfo& p = entry_param(m, t);
      items.emplace_back(entry_moment(*state_, t) + p.offset, p.numel);
    }
    return queue_task(env, engine_, "saveMoments",
        [path, header, items] {
          TensorWriter w(path);
          w.write_bytes(header->data(), static_cast<int64_t>(header->size()));
          for (const auto& [src, n] : items) w.write_tensor(src, n, DType::F32);
          w.finish();
        },
        nullptr, Value());
  })
}

// loadMoments(path, [{name, moment, offset, dtype}]): reads moments from a safetensors file whose
// header lib/safetensors.ts has validated (offset: absolute byte offset of the data).
Napi::Value Trainer::LoadMoments(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("loadMoments", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model();
    std::string path = get_string(info[0], "path");
    if (!info[1].IsArray()) expected("an array", "tensors", describe(info[1]));
    struct Item {
      float* dst;
      const ParamInfo* param;
      int64_t offset;
      DType dtype;
    };
    std::vector<Item> items;
    Napi::Array arr = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      if (!arr.Get(i).IsObject()) expected("{name, moment, offset, dtype} objects", "tensors", describe(arr.Get(i)));
      Napi::Object t = arr.Get(i).As<Napi::Object>();
      const ParamInfo& p = entry_param(m, t);
      double offset = get_number(t, "offset");
      if (!(offset >= 0 && std::floor(offset) == offset)) expected("a non-negative integer", "offset", describe(t.Get("offset")));
      items.push_back({entry_moment(*state_, t) + p.offset, &p, static_cast<int64_t>(offset),
                       dtype_from_name(get_string(t.Get("dtype"), "dtype"))});
    }
    return queue_task(env, engine_, "loadMoments",
        [path, items] {
          for (const Item& it : items) read_tensor(it.dst, it.param->numel, it.dtype, path, it.offset, it.param->name);
        },
        nullptr, Value());
  })
}

// workspaceBytes(nTokens, nRows): training memory crossEntropyBackward needs for that shape,
// beyond the 12 bytes per parameter of gradients and moments held since construction.
Napi::Value Trainer::WorkspaceBytes(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("workspaceBytes", {
    cpu::Model& m = live_model();
    if (!info[0].IsNumber()) expected("a number", "nTokens", describe(info[0]));
    if (!info[1].IsNumber()) expected("a number", "nRows", describe(info[1]));
    int64_t n = info[0].As<Napi::Number>().Int64Value(), r = info[1].As<Napi::Number>().Int64Value();
    if (n < 1) expected("a positive integer", "nTokens", describe(info[0]));
    if (r < 0) expected("a non-negative integer", "nRows", describe(info[1]));
    return Napi::Number::New(info.Env(), static_cast<double>(m.train_workspace_bytes(
                                             n, r, true, state_->workspace.checkpoint_activations())));
  })
}

// dispose(): frees gradients, moments and workspace, and lets go of the engine.
// rollout(prompts, promptStarts, seeds, options, onProgress, keepBytes): engine.decode() whose steps
// also keep their activations, from step 0 on while their total stays within keepBytes, for
// policyLossBackwardKept. The logits, and so the tokens, are exactly decode()'s.
Napi::Value Trainer::Rollout(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("rollout", {
    cpu::Model& m = live_model();
    if (!info[5].IsNumber() || !(info[5].As<Napi::Number>().DoubleValue() >= 0))
      expected("a number of bytes >= 0", "keepBytes", describe(info[5]));
    const double budget = info[5].As<Napi::Number>().DoubleValue();
    State* st = state_.get();
    Engine* engine = engine_;
    // Runs in the worker with the engine claimed, so nothing else touches the kept state.
    cpu::ForwardFn forward = [st, &m, engine, budget](float* logits, const cpu::Batch& b, const int32_t* rows,
                                                      int64_t R, int64_t step) {
      if (step == 0) {
        st->kept_steps = 0;
        st->kept_bytes = 0;
        st->kept_version = engine->weights_version();
      }
      if (step == st->kept_steps) {
        const int64_t need = m.kept_bytes(b.n_tokens(), R);
        if (static_cast<double>(st->kept_bytes + need) <= budget) {
          if (static_cast<int64_t>(st->kept.size()) <= step) st->kept.resize(step + 1);
          try {
            m.forward_keep(st->kept[step], st->workspace, logits, b, rows, R);
            st->kept_steps = step + 1;
            // Less than `need` when identical sequences were kept once.
            st->kept_bytes += m.kept_bytes(st->kept[step].n_tokens(), R);
            return;
          } catch (const OutOfMemoryError&) {
            // The machine cannot hold this step's activations (forward_keep allocates before it
            // computes anything): keep the steps so far and run the rest as plain forwards.
            st->kept[step].release();
          }
        }
      }
      m.forward(logits, b, rows, R);
    };
    return queue_decode(info, engine_, std::move(forward), Value());
  })
}

// policyLossBackwardKept(step, targets, weights, options): policyLossBackward on the batch and rows of
// the last rollout's step `step`, through its kept activations (no forward pass). One target,
// weight, old log-prob and advantage per row of that step (for the AR rollout: one per sequence).
Napi::Value Trainer::PolicyLossBackwardKept(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("policyLossBackwardKept", {
    Napi::Env env = info.Env();
    cpu::Model& m = live_model();
    const ModelConfig& cfg = m.config();
    State* st = state_.get();
    if (!info[0].IsNumber()) expected("a step number", "step", describe(info[0]));
    const double step_d = info[0].As<Napi::Number>().DoubleValue();
    const bool stale = st->kept_version != engine_->weights_version();
    if (!(step_d >= 0 && step_d < static_cast<double>(st->kept_steps) && step_d == std::floor(step_d)) || stale)
      expected(stale ? str_cat("a kept step, but the weights changed since the rollout kept them")
                     : str_cat("a kept step in [0, ", st->kept_steps, ")"),
               "step", describe(info[0]));
    const int64_t step = static_cast<int64_t>(step_d);
    const int64_t R = st->kept[step].n_rows();
    auto targets = std::make_shared<std::vector<int32_t>>(typed<int32_t>(info[1], napi_int32_array, "Int32Array", "targets"));
    auto weights = std::make_shared<std::vector<float>>(typed<float>(info[2], napi_float32_array, "Float32Array", "weights"));
    if (static_cast<int64_t>(targets->size()) != R) expected(str_cat("one target per kept row (", R, ")"), "targets", describe(info[1]));
    if (static_cast<int64_t>(weights->size()) != R) expected(str_cat("one weight per kept row (", R, ")"), "weights", describe(info[2]));
    for (int64_t r = 0; r < R; r++) {
      if ((*targets)[r] < 0 || (*targets)[r] >= cfg.embedding_size)
        expected(str_cat("target ids in [0, ", cfg.embedding_size, ")"), "targets", str_cat((*targets)[r], " at index ", r));
      if (!std::isfinite((*weights)[r])) expected("finite weights", "weights", str_cat((*weights)[r], " at index ", r));
    }
    if (!info[3].IsObject()) expected("an options object", "options", describe(info[3]));
    auto pa = std::make_shared<PolicyArgs>(read_policy_args(info[3].As<Napi::Object>(), *targets, cfg));
    auto out = std::make_shared<PolicyOut>();
    return queue_task(env, engine_, "policyLossBackwardKept",
        [&m, st, step, targets, weights, pa, out] {
          const int64_t R = static_cast<int64_t>(targets->size());
          out->logprobs.assign(R, 0.0f);
          out->region.assign(R, 0);
          cpu::GrpoLoss loss({pa->old_lp.data(), pa->adv.data(), weights->data(),
                              pa->ref_lp.empty() ? nullptr : pa->ref_lp.data(), pa->eps_low, pa->eps_high, pa->beta},
                             out->region.data());
          loss.excluded = pa->excluded;
          out->loss = m.backward_kept(st->live_grads(), st->kept[step], st->workspace, targets->data(), loss,
                                      out->logprobs.data());
        },
        [out](Napi::Env env) { return policy_result(env, *out, true); }, Value());
  })
}

// keptSteps() -> {steps, bytes}: how many of the last rollout's steps are kept (0 once the weights
// have changed since), and their bytes.
Napi::Value Trainer::KeptSteps(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("keptSteps", {
    live_model();
    const bool fresh = state_->kept_version == engine_->weights_version();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("steps", Napi::Number::New(info.Env(), fresh ? static_cast<double>(state_->kept_steps) : 0.0));
    o.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(state_->kept_bytes)));
    return o;
  })
}

// releaseKept(): frees the kept activations' memory.
Napi::Value Trainer::ReleaseKept(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("releaseKept", {
    claimed([&] {
      for (cpu::KeptForward& k : state_->kept) k.release();
      state_->kept.clear();
      state_->kept_steps = 0;
      state_->kept_bytes = 0;
    });
    return info.Env().Undefined();
  })
}

Napi::Value Trainer::Dispose(const Napi::CallbackInfo& info) {
  JG_TRAINER_METHOD("dispose", {
    if (!state_) return info.Env().Undefined();
    if (!engine_->try_claim()) throw EngineError("The model is busy with another call; await it before dispose()");
    state_.reset();
    engine_->unclaim();
    engine_ref_.Reset();
    return info.Env().Undefined();
  })
}

}  // namespace jg
