// The CPU's entry in the op table's test harness: each op of native/common/ops.h on small host
// arrays, the reference every other backend is compared with (test/gpu/parity.mjs). Backward mode
// (the call passes `dout`): ops with a backward also return their gradients (`dinp`, `dweight`,
// ...), starting from the inputs of those names where given, since gradients accumulate.
#include <cmath>
#include <limits>
#include <vector>

#include "../common/decode.h"
#include "../common/ops.h"
#include "../common/rope.h"
#include "ops.h"
#include "sampling.h"

namespace jg::cpu {

bool test_op(Op op, const OpArgs& a, OpOutputs& o) {
  switch (op) {
    case OP_EMBEDDING: {
      const int64_t N = a.i("N"), C = a.i("C");
      std::vector<float> out(N * C);
      embedding_forward(out.data(), a.i32s("tokens").data(), a.f32s("wte").data(), N, C);
      o.f32["out"] = out;
      if (a.backward()) {
        auto dwte = a.grad_init("dwte", static_cast<int64_t>(a.f32s("wte").size()));
        embedding_backward(dwte.data(), a.f32n("dout", N * C).data(), a.i32s("tokens").data(), N, C);
        o.f32["dwte"] = dwte;
      }
      return true;
    }
    case OP_RMSNORM: {
      const int64_t N = a.i("N"), C = a.i("C");
      auto inp = a.f32n("inp", N * C);
      auto weight = a.f32n("weight", C);
      std::vector<float> out(N * C), rstd(N);
      rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, C, static_cast<float>(a.num("eps")));
      o.f32["out"] = out;
      if (a.backward()) {
        auto dinp = a.grad_init("dinp", N * C), dweight = a.grad_init("dweight", C);
        rmsnorm_backward(dinp.data(), dweight.data(), a.f32n("dout", N * C).data(), inp.data(), weight.data(),
                         rstd.data(), N, C);
        o.f32["rstd"] = rstd;
        o.f32["dinp"] = dinp;
        o.f32["dweight"] = dweight;
      }
      return true;
    }
    case OP_MATMUL: {
      const int64_t N = a.i("N"), C = a.i("C"), OC = a.i("OC");
      std::vector<float> out(N * OC);
      matmul_forward(out.data(), a.f32n("inp", N * C).data(), a.f32n("weight", OC * C).data(), N, C, OC);
      o.f32["out"] = out;
      return true;
    }
    case OP_ROPE: {
      const int64_t N = a.i("N"), H = a.i("H"), hd = a.i("hd"), max_len = a.i("maxLen");
      auto x = a.f32n("x", N * H * hd);
      std::vector<float> cos_t(max_len * hd / 2), sin_t(max_len * hd / 2);
      rope_table(cos_t.data(), sin_t.data(), max_len, hd, a.num("theta"));
      rope_forward(x.data(), a.i32s("pos").data(), cos_t.data(), sin_t.data(), N, H, hd);
      o.f32["out"] = x;
      if (a.backward()) {
        auto dx = a.f32n("dout", N * H * hd);
        rope_backward(dx.data(), a.i32s("pos").data(), cos_t.data(), sin_t.data(), N, H, hd);
        o.f32["dx"] = dx;
      }
      return true;
    }
    case OP_ATTENTION: {
      const int64_t H = a.i("H"), KV = a.i("KV"), hd = a.i("hd");
      const auto& starts = a.i32s("seqStarts");
      const int64_t S = static_cast<int64_t>(starts.size()) - 1, N = starts.back();
      auto q = a.f32n("q", N * H * hd), k = a.f32n("k", N * KV * hd), v = a.f32n("v", N * KV * hd);
      std::vector<float> out(N * H * hd), lse(N * H);
      attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), starts.data(), S, H, KV, hd);
      o.f32["out"] = out;
      if (a.backward()) {
        auto dq = a.grad_init("dq", N * H * hd), dk = a.grad_init("dk", N * KV * hd), dv = a.grad_init("dv", N * KV * hd);
        attention_backward(dq.data(), dk.data(), dv.data(), a.f32n("dout", N * H * hd).data(), q.data(), k.data(),
                           v.data(), out.data(), lse.data(), starts.data(), S, H, KV, hd);
        o.f32["lse"] = lse;
        o.f32["dq"] = dq;
        o.f32["dk"] = dk;
        o.f32["dv"] = dv;
      }
      return true;
    }
    case OP_SWIGLU: {
      const int64_t N = a.i("N"), M = a.i("M");
      std::vector<float> out(N * M);
      auto gate = a.f32n("gate", N * M), up = a.f32n("up", N * M);
      swiglu_forward(out.data(), gate.data(), up.data(), N, M);
      o.f32["out"] = out;
      if (a.backward()) {
        auto dgate = a.grad_init("dgate", N * M), dup = a.grad_init("dup", N * M);
        swiglu_backward(dgate.data(), dup.data(), a.f32n("dout", N * M).data(), gate.data(), up.data(), N, M);
        o.f32["dgate"] = dgate;
        o.f32["dup"] = dup;
      }
      return true;
    }
    case OP_RESIDUAL: {
      auto x = a.f32s("x");
      const int64_t n = static_cast<int64_t>(x.size());
      residual_forward(x.data(), a.f32n("y", n).data(), n);
      o.f32["out"] = x;
      if (a.backward()) {
        auto dy = a.grad_init("dy", n);
        residual_backward(dy.data(), a.f32n("dout", n).data(), n);
        o.f32["dy"] = dy;
      }
      return true;
    }
    case OP_LOGSOFTMAX: {
      const int64_t R = a.i("R"), V = a.i("V");
      std::vector<float> lp(R), lse(R);
      logsoftmax_forward(lp.data(), lse.data(), a.f32n("logits", R * V).data(), a.i32s("targets").data(), R, V);
      o.f32["out"] = lp;
      o.f32["lse"] = lse;
      return true;
    }
    case OP_ADAMW: {
      auto param = a.f32s("param");
      const int64_t n = static_cast<int64_t>(param.size());
      auto m = a.f32n("m", n), v = a.f32n("v", n);
      const AdamWParams hp{a.num("lr"), a.num("beta1"), a.num("beta2"), a.num("eps"), a.num("weightDecay"), a.i("step")};
      auto grad = a.f32n("grad", n);
      // With maxGradNorm, the step's gradient handling first, as Training::step does it: non-finite
      // entries zeroed, the norm, and the clip when the norm is above maxGradNorm.
      if (a.sizes.count("maxGradNorm")) {
        o.i32["nonFinite"] = {static_cast<int32_t>(nonfinite_zero(grad.data(), n))};
        const double sumsq = grad_sumsq(grad.data(), n);
        o.f64["sumsq"] = {sumsq};
        const double coef = a.num("maxGradNorm") / (std::sqrt(sumsq) + 1e-6);
        if (coef < 1.0) grad_scale(grad.data(), static_cast<float>(coef), n);
        o.f32["grad"] = grad;
      }
      adamw_update(param.data(), m.data(), v.data(), grad.data(), n, hp);
      o.f32["param"] = param;
      o.f32["m"] = m;
      o.f32["v"] = v;
      return true;
    }
    case OP_SAMPLE: {
      const int64_t R = a.i("R"), V = a.i("V"), ld = a.i("ld"), n_all = a.i("nAll");
      const auto& logits = a.f32n("logits", R * ld);
      const auto& ex = a.i32s("excluded");
      const auto& early = a.i32s("early");
      const uint64_t seed = static_cast<uint64_t>(a.i("seed"));
      std::vector<RowSample> samples(R);
      for (int64_t r = 0; r < R; r++)
        sample_row(&samples[r], logits.data() + r * ld, V, ex.data(), early[r] ? static_cast<int64_t>(ex.size()) : n_all,
                   a.num("temperature"), row_key(seed, 0, r));
      o.set_samples(samples);
      return true;
    }
    case OP_LOGPROB: {
      const int64_t R = a.i("R"), V = a.i("V");
      auto logits = a.f32n("logits", R * V);
      for (int32_t id : a.i32s("excluded"))
        for (int64_t r = 0; r < R; r++) logits[r * V + id] = -std::numeric_limits<float>::infinity();
      std::vector<float> out(R), lse(R);
      logsoftmax_forward(out.data(), lse.data(), logits.data(), a.i32s("targets").data(), R, V);
      o.f32["out"] = out;
      return true;
    }
    case OP_SELECT: {
      const auto& row_begin = a.i32s("rowBegin");
      const auto& k_sched = a.i32s("kSched");
      const int64_t S = static_cast<int64_t>(row_begin.size()) - 1, R = row_begin.back();
      const auto kind = static_cast<ConfidenceKind>(a.i("kind"));
      const uint64_t seed = static_cast<uint64_t>(a.num_or("seed", 0));
      std::vector<RowSample> samples(R);
      std::vector<uint64_t> keys(R);
      for (int64_t r = 0; r < R; r++) keys[r] = row_key(seed, 0, r);
      if (kind != ConfidenceKind::RANDOM) {
        const auto &p = a.f64s("prob"), &m = a.f64s("margin"), &c = a.f64s("certainty");
        JG_CHECK(static_cast<int64_t>(p.size()) == R && static_cast<int64_t>(m.size()) == R &&
                     static_cast<int64_t>(c.size()) == R,
                 "testOp: confidences must have R entries");
        for (int64_t r = 0; r < R; r++) samples[r] = RowSample{0, 0.0f, 0.0f, p[r], m[r], c[r]};
      }
      std::vector<uint8_t> commit(R);
      std::vector<int32_t> k(S);
      select_commits(commit.data(), k.data(), samples.data(), keys.data(), row_begin.data(), S, kind,
                     static_cast<uint64_t>(a.num_or("randomIndex", 0)), a.num("useThreshold") != 0, a.num("threshold"),
                     k_sched.data());
      o.i32["commit"] = std::vector<int32_t>(commit.begin(), commit.end());
      o.i32["k"] = k;
      return true;
    }
    case OP_COUNT:
      break;
  }
  return false;
}

}  // namespace jg::cpu
