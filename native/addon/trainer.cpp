#include "trainer.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../common/check.h"
#include "../common/tensor_io.h"
#include "args.h"
#include "comm.h"
#include "errors.h"
#include "task.h"

namespace jg {

using namespace js;

namespace {

// The result of a loss call: {loss, logprobs} and, for the policy loss, {clipped}.
struct LossOut {
  double loss = 0;
  std::vector<float> logprobs;
  std::vector<uint8_t> region;
};

Napi::Value loss_result(Napi::Env env, const LossOut& out, bool policy) {
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

// {rank, ranks} of a shard: integers, 0 <= rank < ranks.
std::pair<int, int> shard_args(const Napi::Value& rank_js, const Napi::Value& ranks_js) {
  const double ranks = ranks_js.IsNumber() ? ranks_js.As<Napi::Number>().DoubleValue() : -1;
  if (!(ranks >= 1 && ranks <= 1 << 20 && std::floor(ranks) == ranks)) expected("an integer >= 1", "ranks", describe(ranks_js));
  const double rank = rank_js.IsNumber() ? rank_js.As<Napi::Number>().DoubleValue() : -1;
  if (!(rank >= 0 && rank < ranks && std::floor(rank) == rank))
    expected(str_cat("an integer in [0, ", static_cast<int>(ranks), ")"), "rank", describe(rank_js));
  return {static_cast<int>(rank), static_cast<int>(ranks)};
}

// The parameter a tensor entry names: {name, ...}.
const ParamInfo& entry_param(const ParamLayout& layout, const Napi::Object& t) {
  const std::string name = get_string(t.Get("name"), "name");
  const ParamInfo* p = layout.find(name);
  if (!p) expected("a parameter name", "name", str_cat("\"", name, "\""));
  return *p;
}

// The moment a tensor entry names: {moment: 'm' | 'v'}.
Moment entry_moment(const Napi::Object& t) {
  const std::string which = get_string(t.Get("moment"), "moment");
  if (which == "m") return Moment::M;
  if (which == "v") return Moment::V;
  expected("'m' or 'v'", "moment", str_cat("\"", which, "\""));
}

// A Float32Array of one parameter's size.
std::vector<float> param_data(const Napi::Value& v, const ParamInfo& p, const char* name) {
  std::vector<float> d = float32s(v, name);
  if (static_cast<int64_t>(d.size()) != p.numel) expected(str_cat("a Float32Array of ", p.numel, " elements"), name, describe(v));
  return d;
}

}  // namespace

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
                         InstanceMethod("shardOptimizer", &Trainer::ShardOptimizer),
                         InstanceAccessor("optimizerShard", &Trainer::GetOptimizerShard, nullptr),
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

// new Trainer(engine, {checkpointActivations?}): allocates gradients and AdamW moments on the
// engine's backend.
Trainer::Trainer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Trainer>(info) {
  try {
    auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(ctor->Value()))
      expected("an Engine", "engine", info.Length() < 1 ? std::string("undefined") : describe(info[0]));
    bool checkpoint = false;
    Napi::Value shard_js;
    if (info.Length() >= 2 && !info[1].IsUndefined()) {
      if (!info[1].IsObject()) expected("an options object", "options", describe(info[1]));
      checkpoint = get_bool_or(info[1].As<Napi::Object>(), "checkpointActivations", false);
      shard_js = info[1].As<Napi::Object>().Get("optimizerShard");
    }
    engine_ = Napi::ObjectWrap<Engine>::Unwrap(info[0].As<Napi::Object>());
    // A bf16-only model gains its fp32 masters here: not while another call reads the weights.
    if (engine_->busy() && !engine_->backend().has_master_weights())
      JG_FAIL(ErrorKind::BUSY, "The model is busy with another call");
    // optimizerShard: {rank, ranks} (ZeRO-1 from the start: the moments of that shard only).
    std::unique_ptr<OptimizerShard> shard;
    if (!shard_js.IsEmpty() && !shard_js.IsUndefined() && !shard_js.IsNull()) {
      if (!shard_js.IsObject()) expected("{rank, ranks}", "optimizerShard", describe(shard_js));
      const auto [rank, ranks] = shard_args(shard_js.As<Napi::Object>().Get("rank"), shard_js.As<Napi::Object>().Get("ranks"));
      shard = std::make_unique<OptimizerShard>(OptimizerShard::of(engine_->backend().layout().total(), rank, ranks));
    }
    training_ = engine_->backend().make_training(checkpoint, shard.get());
    engine_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
  } catch (const std::exception&) {
    CallError::current("Trainer").to_js(info.Env()).ThrowAsJavaScriptException();
  }
}

Training& Trainer::training() {
  JG_CHECK_AS(ErrorKind::DISPOSED, training_ != nullptr, "Trainer is disposed");
  engine_->backend();  // throws when the model is disposed
  return *training_;
}

Backend& Trainer::backend() {
  training();
  return engine_->backend();
}

template <typename F>
auto Trainer::claimed(F&& body) -> decltype(body()) {
  training();
  if (!engine_->try_claim()) JG_FAIL(ErrorKind::BUSY, "The model is busy with another call");
  struct Release {
    Engine* e;
    ~Release() { e->unclaim(); }
  } release{engine_};
  return body();
}

// zeroGrad(): O(1) here; the gradients are zeroed by the next call that uses them, off the event loop.
Napi::Value Trainer::ZeroGrad(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("zeroGrad", {
    claimed([&] { training_->zero_grad(); });
    return info.Env().Undefined();
  })
}

Napi::Value Trainer::Loss(const Napi::CallbackInfo& info, const char* name, bool backward, bool policy) {
  Backend& m = backend();
  const ModelConfig& cfg = m.config();
  auto b = std::make_shared<PackedBatch>(packed_batch_from_js(info[0], info[1], info[2], cfg));
  auto targets = std::make_shared<std::vector<int32_t>>(targets_from_js(info[3], b->n_rows(), {}, cfg));
  auto weights = std::make_shared<std::vector<float>>(weights_from_js(info[4], b->n_rows()));
  auto pa = std::make_shared<PolicyArgs>();
  if (policy) {
    if (info.Length() < 6 || !info[5].IsObject()) expected("an options object", "options", describe(info[5]));
    policy_args_from_js(*pa, info[5].As<Napi::Object>(), *targets, cfg);
  }
  pa->spec.weights = weights->data();
  auto out = std::make_shared<LossOut>();
  Training* t = training_.get();
  return queue_task(info.Env(), engine_, name,
      [t, b, targets, weights, pa, out, backward] {
        const int64_t R = b->n_rows();
        out->logprobs.assign(R, 0.0f);
        out->region.assign(R, 0);
        out->loss = t->loss(backward, b->batch(), b->rows.data(), targets->data(), R, pa->spec, out->logprobs.data(),
                            out->region.data());
      },
      [out, policy](Napi::Env env) { return loss_result(env, *out, policy); }, Value());
}

// crossEntropyBackward(tokens, seqStarts, rows, targets, weights) -> Promise<{loss, logprobs}>:
// forward and backward; gradients accumulate until zeroGrad().
Napi::Value Trainer::CrossEntropyBackward(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("crossEntropyBackward", { return Loss(info, "crossEntropyBackward", true, false); })
}

// crossEntropyLoss(...): the same loss and logprobs, forward only; gradients untouched.
Napi::Value Trainer::CrossEntropyLoss(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("crossEntropyLoss", { return Loss(info, "crossEntropyLoss", false, false); })
}

// policyLossBackward(tokens, seqStarts, rows, targets, weights, {oldLogprobs, advantages,
// refLogprobs?, epsilonLow, epsilonHigh, beta, excludeIds}) -> Promise<{loss, logprobs, clipped}>:
// JustGRPO's clipped-ratio loss fused with the head's log-softmax (excludeIds renormalised away),
// forward and backward; gradients accumulate until zeroGrad().
Napi::Value Trainer::PolicyLossBackward(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("policyLossBackward", { return Loss(info, "policyLossBackward", true, true); })
}

// policyLoss(...): the same loss, log-probs and clip regions, forward only.
Napi::Value Trainer::PolicyLoss(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("policyLoss", { return Loss(info, "policyLoss", false, true); })
}

// step({lr, beta1, beta2, eps, weightDecay, maxGradNorm, skipNonFinite?}, communicator?,
// timeoutSeconds?) -> Promise<{gradNorm, nonFinite, clipped, skipped}>: the backend's optimizer
// step (Training::step). With a communicator (data parallelism) the gradients are first summed over
// every rank, in the engine (they never pass through JavaScript), with each collective bounded by
// timeoutSeconds, and the statistics are global.
Napi::Value Trainer::Step(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("step", {
    training();
    if (info.Length() < 1 || !info[0].IsObject()) expected("an options object", "options", describe(info[0]));
    Napi::Object o = info[0].As<Napi::Object>();
    AdamWOptions a{get_number(o, "lr"), get_number(o, "beta1"), get_number(o, "beta2"), get_number(o, "eps"),
                   get_number(o, "weightDecay"), get_number(o, "maxGradNorm"), get_bool_or(o, "skipNonFinite", false)};
    if (!(std::isfinite(a.lr) && a.lr >= 0)) expected("a finite number >= 0", "lr", describe(o.Get("lr")));
    if (!(a.beta1 >= 0 && a.beta1 < 1)) expected("a number in [0, 1)", "beta1", describe(o.Get("beta1")));
    if (!(a.beta2 >= 0 && a.beta2 < 1)) expected("a number in [0, 1)", "beta2", describe(o.Get("beta2")));
    if (!(std::isfinite(a.eps) && a.eps > 0)) expected("a finite number > 0", "eps", describe(o.Get("eps")));
    if (!(std::isfinite(a.weight_decay) && a.weight_decay >= 0))
      expected("a finite number >= 0", "weightDecay", describe(o.Get("weightDecay")));
    if (!(a.max_grad_norm >= 0))
      expected("a number >= 0 (0 or Infinity: no clipping)", "maxGradNorm", describe(o.Get("maxGradNorm")));
    Communicator* c = nullptr;
    double timeout = 0;
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
      c = &Comm::from_js(info[1], "communicator");
      if (!info[2].IsNumber() || !(info[2].As<Napi::Number>().DoubleValue() > 0))
        expected("a number of seconds > 0", "timeoutSeconds", describe(info[2]));
      timeout = info[2].As<Napi::Number>().DoubleValue();
    }
    auto out = std::make_shared<StepStats>();
    Training* t = training_.get();
    Backend* b = &backend();
    // The trainer outlives the task (the task holds it), and tasks on one engine run one at a time:
    // grad_comm_ is made (NCCL's start-up is itself a collective) and used off the event loop.
    std::shared_ptr<GradComm>* gc = &grad_comm_;
    return queue_task(info.Env(), engine_, "step", [t, b, gc, c, timeout, out, a] {
          if (!c) {
            *out = t->step(a);
            return;
          }
          if (!*gc) *gc = b->make_grad_comm(*c, timeout);
          *out = t->step(a, **gc);
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Object r = Napi::Object::New(env);
          r.Set("gradNorm", Napi::Number::New(env, out->grad_norm));
          r.Set("nonFinite", Napi::Number::New(env, static_cast<double>(out->non_finite)));
          r.Set("clipped", Napi::Boolean::New(env, out->clipped));
          r.Set("skipped", Napi::Boolean::New(env, out->skipped));
          return r;
        }, Value());
  })
}

Napi::Value Trainer::GetGrad(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("getGrad", {
    const ParamInfo* p = backend().layout().find(get_string(info[0], "name"));
    if (!p) expected("a parameter name", "name", describe(info[0]));
    return claimed([&]() -> Napi::Value {
      auto out = Napi::Float32Array::New(info.Env(), p->numel);
      training_->get_grad(out.Data(), *p);
      return out;
    });
  })
}

// setGrad(name, data): overwrites one parameter's gradient (a Float32Array of its size); for
// gradient surgery between backward and step, and for injecting faults in tests.
Napi::Value Trainer::SetGrad(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("setGrad", {
    const ParamInfo* p = backend().layout().find(get_string(info[0], "name"));
    if (!p) expected("a parameter name", "name", describe(info[0]));
    auto g = param_data(info[1], *p, "data");
    claimed([&] { training_->set_grad(*p, g.data()); });
    return info.Env().Undefined();
  })
}

// getMoments(name) -> {m, v}: copies of the AdamW moments of one parameter.
Napi::Value Trainer::GetMoments(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("getMoments", {
    Napi::Env env = info.Env();
    const ParamInfo* p = backend().layout().find(get_string(info[0], "name"));
    if (!p) expected("a parameter name", "name", describe(info[0]));
    return claimed([&]() -> Napi::Value {
      auto m = Napi::Float32Array::New(env, p->numel);
      auto v = Napi::Float32Array::New(env, p->numel);
      training_->get_moment(m.Data(), *p, Moment::M);
      training_->get_moment(v.Data(), *p, Moment::V);
      Napi::Object o = Napi::Object::New(env);
      o.Set("m", m);
      o.Set("v", v);
      return o;
    });
  })
}

// setMoments(name, m, v): overwrites one parameter's moments (Float32Arrays of its size).
Napi::Value Trainer::SetMoments(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("setMoments", {
    const ParamInfo* p = backend().layout().find(get_string(info[0], "name"));
    if (!p) expected("a parameter name", "name", describe(info[0]));
    auto m = param_data(info[1], *p, "m");
    auto v = param_data(info[2], *p, "v");
    claimed([&] {
      training_->set_moment(*p, Moment::M, m.data());
      training_->set_moment(*p, Moment::V, v.data());
    });
    return info.Env().Undefined();
  })
}

Napi::Value Trainer::GetStepCount(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("stepCount", {
    JG_CHECK_AS(ErrorKind::DISPOSED, training_ != nullptr, "Trainer is disposed");
    return Napi::Number::New(info.Env(), static_cast<double>(training_->step_count()));
  })
}

void Trainer::SetStepCount(const Napi::CallbackInfo& info, const Napi::Value& value) {
  try {
    const double n = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
    if (!(n >= 0 && n <= 9007199254740991.0 && std::floor(n) == n))
      expected("a non-negative integer", "stepCount", describe(value));
    claimed([&] { training_->set_step_count(static_cast<int64_t>(n)); });
  } catch (const std::exception&) {
    CallError::current("stepCount").to_js(info.Env()).ThrowAsJavaScriptException();
  }
}

// shardOptimizer(rank, ranks): ZeRO-1 (Training::shard_optimizer): from now on this trainer keeps
// the AdamW state of OptimizerShard::of(layout total, rank, ranks) only; before the first step.
Napi::Value Trainer::ShardOptimizer(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("shardOptimizer", {
    training();
    const auto [rank, ranks] = shard_args(info[0], info[1]);
    const int64_t total = backend().layout().total();
    claimed([&] { training_->shard_optimizer(OptimizerShard::of(total, rank, ranks)); });
    return info.Env().Undefined();
  })
}

// optimizerShard -> {begin, end, block, rank, ranks} | null (the whole optimizer state here).
Napi::Value Trainer::GetOptimizerShard(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("optimizerShard", {
    const OptimizerShard* s = training().optimizer_shard();
    if (!s) return info.Env().Null();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("begin", Napi::Number::New(info.Env(), static_cast<double>(s->begin)));
    o.Set("end", Napi::Number::New(info.Env(), static_cast<double>(s->end)));
    o.Set("block", Napi::Number::New(info.Env(), static_cast<double>(s->block)));
    o.Set("rank", Napi::Number::New(info.Env(), s->rank));
    o.Set("ranks", Napi::Number::New(info.Env(), s->ranks));
    return o;
  })
}

// saveMoments(path, header, [{name, moment}], communicator?, timeoutSeconds?): writes the header
// bytes (length prefix included, built by lib/safetensors.ts) and then each listed moment as F32,
// in order; fsyncs before resolving. With a communicator (a sharded optimizer) every rank calls it
// with the same list: each moment is summed over the ranks (each holds its shard's part, zeros
// elsewhere), one parameter at a time, and rank 0 alone writes; the other ranks' path is ignored.
Napi::Value Trainer::SaveMoments(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("saveMoments", {
    const ParamLayout& layout = backend().layout();
    Communicator* c = nullptr;
    double timeout = 0;
    if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) {
      c = &Comm::from_js(info[3], "communicator");
      if (!info[4].IsNumber() || !(info[4].As<Napi::Number>().DoubleValue() > 0))
        expected("a number of seconds > 0", "timeoutSeconds", describe(info[4]));
      timeout = info[4].As<Napi::Number>().DoubleValue();
    }
    const bool writes = !c || c->rank() == 0;
    std::string path = writes ? get_string(info[0], "path") : std::string();
    if (!info[1].IsBuffer()) expected("a Buffer", "header", describe(info[1]));
    auto hb = info[1].As<Napi::Buffer<char>>();
    auto header = std::make_shared<std::vector<char>>(hb.Data(), hb.Data() + hb.Length());
    if (!info[2].IsArray()) expected("an array", "tensors", describe(info[2]));
    std::vector<std::pair<const ParamInfo*, Moment>> items;
    Napi::Array arr = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      if (!arr.Get(i).IsObject()) expected("{name, moment} objects", "tensors", describe(arr.Get(i)));
      Napi::Object t = arr.Get(i).As<Napi::Object>();
      items.emplace_back(&entry_param(layout, t), entry_moment(t));
    }
    Training* t = training_.get();
    return queue_task(info.Env(), engine_, "saveMoments",
        [t, path, header, items, c, timeout, writes] {
          std::unique_ptr<TensorWriter> w;
          if (writes) {
            w = std::make_unique<TensorWriter>(path);
            w->write_bytes(header->data(), static_cast<int64_t>(header->size()));
          }
          if (!c) {
            for (const auto& [p, which] : items) t->write_moment(*w, *p, which);
          } else {
            // One parameter's moment at a time: the memory this takes is bounded by the largest.
            std::vector<float> buf;
            for (const auto& [p, which] : items) {
              buf.resize(static_cast<size_t>(p->numel));
              t->get_moment(buf.data(), *p, which);
              c->all_reduce_sum(buf.data(), p->numel, timeout, str_cat("the gather of the optimizer state (", p->name, ")"));
              if (w) w->write_tensor(buf.data(), p->numel, DType::F32);
            }
          }
          if (w) w->finish();
        },
        nullptr, Value());
  })
}

// loadMoments(path, [{name, moment, offset, dtype}]): reads moments from a safetensors file whose
// header lib/safetensors.ts has validated (offset: absolute byte offset of the data).
Napi::Value Trainer::LoadMoments(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("loadMoments", {
    const ParamLayout& layout = backend().layout();
    std::string path = get_string(info[0], "path");
    if (!info[1].IsArray()) expected("an array", "tensors", describe(info[1]));
    struct Item {
      const ParamInfo* param;
      Moment which;
      int64_t offset;
      DType dtype;
    };
    std::vector<Item> items;
    Napi::Array arr = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      if (!arr.Get(i).IsObject()) expected("{name, moment, offset, dtype} objects", "tensors", describe(arr.Get(i)));
      Napi::Object t = arr.Get(i).As<Napi::Object>();
      const ParamInfo& p = entry_param(layout, t);
      const Moment which = entry_moment(t);
      const double offset = get_number(t, "offset");
      if (!(offset >= 0 && std::floor(offset) == offset)) expected("a non-negative integer", "offset", describe(t.Get("offset")));
      items.push_back({&p, which, static_cast<int64_t>(offset), dtype_from_name(get_string(t.Get("dtype"), "dtype"))});
    }
    Training* t = training_.get();
    return queue_task(info.Env(), engine_, "loadMoments",
        [t, path, items] {
          for (const Item& it : items) t->read_moment(*it.param, it.which, it.dtype, path, it.offset);
        },
        nullptr, Value());
  })
}

// workspaceBytes(nTokens, nRows): training memory crossEntropyBackward needs for that shape,
// beyond the 12 bytes per parameter of gradients and moments held since construction.
Napi::Value Trainer::WorkspaceBytes(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("workspaceBytes", {
    Training& t = training();
    if (!info[0].IsNumber()) expected("a number", "nTokens", describe(info[0]));
    if (!info[1].IsNumber()) expected("a number", "nRows", describe(info[1]));
    const int64_t n = info[0].As<Napi::Number>().Int64Value(), r = info[1].As<Napi::Number>().Int64Value();
    if (n < 1) expected("a positive integer", "nTokens", describe(info[0]));
    if (r < 0) expected("a non-negative integer", "nRows", describe(info[1]));
    return Napi::Number::New(info.Env(), static_cast<double>(t.workspace_bytes(n, r)));
  })
}

// rollout(prompts, promptStarts, seeds, options, onProgress, keepBytes): engine.decode() whose steps
// also keep their activations, from step 0 on while their total stays within keepBytes, for
// policyLossBackwardKept. The logits, and so the tokens, are exactly decode()'s.
Napi::Value Trainer::Rollout(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("rollout", {
    Training& t = training();
    if (!info[5].IsNumber() || !(info[5].As<Napi::Number>().DoubleValue() >= 0))
      expected("a number of bytes >= 0", "keepBytes", describe(info[5]));
    return queue_decode(info, engine_, t.keeping_forward(info[5].As<Napi::Number>().DoubleValue()), Value());
  })
}

// policyLossBackwardKept(step, targets, weights, options): policyLossBackward on the batch and rows of
// the last rollout's step `step`, through its kept activations (no forward pass). One target,
// weight, old log-prob and advantage per row of that step (for the AR rollout: one per sequence).
Napi::Value Trainer::PolicyLossBackwardKept(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("policyLossBackwardKept", {
    Training& t = training();
    const ModelConfig& cfg = backend().config();
    if (!info[0].IsNumber()) expected("a step number", "step", describe(info[0]));
    const double step_d = info[0].As<Napi::Number>().DoubleValue();
    const int64_t kept = t.kept_steps();
    const bool stale = kept == 0 && t.kept_bytes() > 0;
    if (!(step_d >= 0 && step_d < static_cast<double>(kept) && step_d == std::floor(step_d)))
      expected(stale ? std::string("a kept step, but the weights changed since the rollout kept them")
                     : str_cat("a kept step in [0, ", kept, ")"),
               "step", describe(info[0]));
    const int64_t step = static_cast<int64_t>(step_d);
    const int64_t R = t.kept_rows(step);
    auto targets = std::make_shared<std::vector<int32_t>>(int32s(info[1], "targets"));
    if (static_cast<int64_t>(targets->size()) != R) expected(str_cat("one target per kept row (", R, ")"), "targets", describe(info[1]));
    for (int64_t r = 0; r < R; r++)
      if ((*targets)[r] < 0 || (*targets)[r] >= cfg.embedding_size)
        expected(str_cat("target ids in [0, ", cfg.embedding_size, ")"), "targets", str_cat((*targets)[r], " at index ", r));
    auto weights = std::make_shared<std::vector<float>>(float32s(info[2], "weights"));
    if (static_cast<int64_t>(weights->size()) != R) expected(str_cat("one weight per kept row (", R, ")"), "weights", describe(info[2]));
    for (int64_t r = 0; r < R; r++)
      if (!std::isfinite((*weights)[r])) expected("finite weights", "weights", str_cat((*weights)[r], " at index ", r));
    if (!info[3].IsObject()) expected("an options object", "options", describe(info[3]));
    auto pa = std::make_shared<PolicyArgs>();
    policy_args_from_js(*pa, info[3].As<Napi::Object>(), *targets, cfg);
    pa->spec.weights = weights->data();
    auto out = std::make_shared<LossOut>();
    Training* tp = &t;
    return queue_task(info.Env(), engine_, "policyLossBackwardKept",
        [tp, step, targets, weights, pa, out] {
          const int64_t R = static_cast<int64_t>(targets->size());
          out->logprobs.assign(R, 0.0f);
          out->region.assign(R, 0);
          out->loss = tp->backward_kept(step, targets->data(), pa->spec, out->logprobs.data(), out->region.data());
        },
        [out](Napi::Env env) { return loss_result(env, *out, true); }, Value());
  })
}

// keptSteps() -> {steps, bytes}: how many of the last rollout's steps are kept (0 once the weights
// have changed since), and their bytes.
Napi::Value Trainer::KeptSteps(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("keptSteps", {
    Training& t = training();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("steps", Napi::Number::New(info.Env(), static_cast<double>(t.kept_steps())));
    o.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(t.kept_bytes())));
    return o;
  })
}

// releaseKept(): frees the kept activations' memory.
Napi::Value Trainer::ReleaseKept(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("releaseKept", {
    claimed([&] { training_->release_kept(); });
    return info.Env().Undefined();
  })
}

// dispose(): frees gradients, moments and workspace, and lets go of the engine.
Napi::Value Trainer::Dispose(const Napi::CallbackInfo& info) {
  JG_JS_METHOD("dispose", {
    if (!training_) return info.Env().Undefined();
    if (!engine_->try_claim())
      JG_FAIL(ErrorKind::BUSY, "The model is busy with another call; await it before dispose()");
    training_.reset();
    engine_->unclaim();
    engine_ref_.Reset();
    return info.Env().Undefined();
  })
}

}  // namespace jg
