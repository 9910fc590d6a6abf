// The op set, declared once. Every backend implements these under the same names (<op>_forward /
// <op>_backward in native/cpu/ops.h and native/cuda/ops.h) and runs each one on small host arrays
// through test_op (native/<backend>/testops.cpp), which is how testOp (native/addon/testops.cpp)
// and the backend parity harness (test/gpu/parity.mjs) compare a backend with the CPU, op by op.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "check.h"
#include "sampling.h"
#include "tensor_io.h"

namespace jg {

enum Op {
  OP_EMBEDDING,
  OP_RMSNORM,
  OP_MATMUL,
  OP_ROPE,
  OP_ATTENTION,
  OP_SWIGLU,
  OP_RESIDUAL,
  OP_LOGSOFTMAX,  // log-softmax gathered at the target: the LM head's losses
  OP_ADAMW,
  OP_SAMPLE,      // the decoders' per-row sampling and confidences
  OP_LOGPROB,     // log p(target) with excluded ids removed (the reference policy)
  OP_SELECT,      // the decoders' choice of rows to commit
  OP_COUNT,
};

inline constexpr const char* OP_NAMES[] = {
    "embedding", "rmsnorm",    "matmul", "rope",   "attention", "swiglu",
    "residual",  "logsoftmax", "adamw",  "sample", "logprob",   "select",
};

static_assert(sizeof(OP_NAMES) / sizeof(OP_NAMES[0]) == OP_COUNT, "OP_NAMES must name every op");

// One op's test call: named host arrays in, sizes by name, and the dtype the backend should compute
// in (the CPU computes in fp32 whatever it is asked).
struct OpArgs {
  std::map<std::string, std::vector<float>> f32;
  std::map<std::string, std::vector<int32_t>> i32;
  std::map<std::string, std::vector<double>> f64;
  std::map<std::string, double> sizes;
  DType dtype = DType::F32;

  template <typename T>
  static const std::vector<T>& find(const std::map<std::string, std::vector<T>>& m, const char* name) {
    auto it = m.find(name);
    JG_CHECK(it != m.end(), "testOp: input `", name, "` is missing or of the wrong type");
    return it->second;
  }
  const std::vector<float>& f32s(const char* name) const { return find(f32, name); }
  const std::vector<int32_t>& i32s(const char* name) const { return find(i32, name); }
  const std::vector<double>& f64s(const char* name) const { return find(f64, name); }
  double num(const char* name) const {
    auto it = sizes.find(name);
    JG_CHECK(it != sizes.end(), "testOp: size `", name, "` is missing");
    return it->second;
  }
  int64_t i(const char* name) const { return static_cast<int64_t>(num(name)); }
  double num_or(const char* name, double fallback) const {
    auto it = sizes.find(name);
    return it == sizes.end() ? fallback : it->second;
  }
  // An input of n floats.
  std::vector<float> f32n(const char* name, int64_t n) const {
    const std::vector<float>& v = f32s(name);
    JG_CHECK(static_cast<int64_t>(v.size()) == n, "testOp: `", name, "` has ", v.size(), " elements, expected ", n);
    return v;
  }
  bool has(const char* name) const { return f32.count(name) != 0; }
  // Backward mode: a call that passes `dout` asks an op with a backward for its gradients too.
  bool backward() const { return has("dout"); }
  // A gradient's starting value (gradients accumulate): the input of that name if given, else zeros.
  std::vector<float> grad_init(const char* name, int64_t n) const {
    return has(name) ? f32n(name, n) : std::vector<float>(n, 0.0f);
  }
};

struct OpOutputs {
  std::map<std::string, std::vector<float>> f32;
  std::map<std::string, std::vector<int32_t>> i32;
  std::map<std::string, std::vector<double>> f64;

  // The `sample` op's outputs: each field of R rows' samples as its own array.
  void set_samples(const std::vector<RowSample>& s) {
    const size_t R = s.size();
    std::vector<int32_t>& token = i32["token"];
    std::vector<float>&lp = f32["logprob"], &ent = f32["entropy"];
    std::vector<double>&prob = f64["prob"], &margin = f64["margin"], &cert = f64["certainty"];
    token.resize(R), lp.resize(R), ent.resize(R), prob.resize(R), margin.resize(R), cert.resize(R);
    for (size_t r = 0; r < R; r++) {
      token[r] = s[r].token;
      lp[r] = s[r].logprob;
      ent[r] = s[r].entropy;
      prob[r] = s[r].prob;
      margin[r] = s[r].margin;
      cert[r] = s[r].certainty;
    }
  }
};

}  // namespace jg
