// The backend-parity entry point. Inputs arrive as named typed arrays and sizes as named numbers;
// outputs go back as named typed arrays. The CPU side calls native/cpu directly; the CUDA side (in
// CUDA builds) uploads, converts activations and weights to the requested dtype, runs the kernel,
// and converts back to fp32. Small shapes only: everything here is synchronous.
#include "testops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "../common/check.h"
#include "../common/tensor_io.h"
#include "../cpu/ops.h"
#include "../cpu/sampling.h"

#ifdef JUSTGRPO_CUDA
#include <cuda_runtime_api.h>

#include <memory>

#include "../cuda/buffer.h"
#include "../cuda/matmul.h"
#include "../cuda/model.h"
#include "../cuda/ops.h"
#include "../cuda/sampling.h"
#endif

namespace jg {

namespace {

struct Args {
  Napi::Object inputs, sizes;

  template <typename A, typename T>
  std::vector<T> get(const char* name, napi_typedarray_type type) const {
    Napi::Value v = inputs.Get(name);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
      throw EngineError(str_cat("testOp: input `", name, "` is missing or of the wrong type"));
    A a = v.As<A>();
    return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
  }
  std::vector<float> f32(const char* name) const { return get<Napi::Float32Array, float>(name, napi_float32_array); }
  std::vector<double> f64(const char* name) const { return get<Napi::Float64Array, double>(name, napi_float64_array); }
  std::vector<int32_t> i32(const char* name) const { return get<Napi::Int32Array, int32_t>(name, napi_int32_array); }
  double num(const char* name) const {
    Napi::Value v = sizes.Get(name);
    if (!v.IsNumber()) throw EngineError(str_cat("testOp: size `", name, "` is missing"));
    return v.As<Napi::Number>().DoubleValue();
  }
  int64_t i(const char* name) const { return static_cast<int64_t>(num(name)); }
  double num_or(const char* name, double fallback) const {
    Napi::Value v = sizes.Get(name);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
  }
};

struct Outputs {
  std::map<std::string, std::vector<float>> f32;
  std::map<std::string, std::vector<int32_t>> i32;
  std::map<std::string, std::vector<double>> f64;
};

void check_size(const std::vector<float>& v, int64_t n, const char* name) {
  JG_CHECK(static_cast<int64_t>(v.size()) == n, "testOp: `", name, "` has ", v.size(), " elements, expected ", n);
}

// The decoders' commit rule (cpu/decode.cpp), for one sequence's rows: highest confidence first,
// ties to the lower position; the threshold rule or the schedule's count.
void select_reference(std::vector<int32_t>& commit, int32_t* k_out, const std::vector<double>& conf, bool use_threshold,
                      double threshold, int64_t k_sched) {
  const int64_t count = static_cast<int64_t>(conf.size());
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return conf[a] > conf[b]; });
  int64_t k;
  if (use_threshold) {
    k = 1;
    while (k < count && conf[order[k]] >= threshold) k++;
    k = std::min(k, count);
  } else {
    k = std::min(count, k_sched);
  }
  commit.assign(count, 0);
  for (int64_t i = 0; i < k; i++) commit[order[i]] = 1;
  *k_out = static_cast<int32_t>(k);
}

// Confidences of the `select` op's rows: the chosen measure, or the random decoder's uniform.
std::vector<double> select_confidences(const Args& a, int64_t R) {
  const int kind = static_cast<int>(a.i("kind"));
  if (kind == 3) {
    const uint64_t seed = static_cast<uint64_t>(a.i("seed")), index = static_cast<uint64_t>(a.i("randomIndex"));
    std::vector<double> c(R);
    for (int64_t r = 0; r < R; r++) c[r] = cpu::uniform_open(cpu::row_key(seed, 0, r), index);
    return c;
  }
  std::vector<double> c = a.f64(kind == 0 ? "prob" : kind == 1 ? "margin" : "certainty");
  JG_CHECK(static_cast<int64_t>(c.size()) == R, "testOp: confidences must have R entries");
  return c;
}

Outputs run_cpu(const std::string& op, const Args& a) {
  Outputs o;
  if (op == "embedding") {
    const int64_t N = a.i("N"), C = a.i("C");
    auto wte = a.f32("wte");
    auto tokens = a.i32("tokens");
    std::vector<float> out(N * C);
    cpu::embedding_forward(out.data(), tokens.data(), wte.data(), N, C);
    o.f32["out"] = out;
  } else if (op == "rmsnorm") {
    const int64_t N = a.i("N"), C = a.i("C");
    auto inp = a.f32("inp"), w = a.f32("weight");
    check_size(inp, N * C, "inp");
    std::vector<float> out(N * C);
    cpu::rmsnorm_forward(out.data(), nullptr, inp.data(), w.data(), N, C, static_cast<float>(a.num("eps")));
    o.f32["out"] = out;
  } else if (op == "matmul") {
    const int64_t N = a.i("N"), C = a.i("C"), OC = a.i("OC");
    auto inp = a.f32("inp"), w = a.f32("weight");
    check_size(inp, N * C, "inp");
    check_size(w, OC * C, "weight");
    std::vector<float> out(N * OC);
    cpu::matmul_forward(out.data(), inp.data(), w.data(), N, C, OC);
    o.f32["out"] = out;
  } else if (op == "rope") {
    const int64_t N = a.i("N"), H = a.i("H"), hd = a.i("hd"), max_len = a.i("maxLen");
    auto x = a.f32("x");
    auto pos = a.i32("pos");
    check_size(x, N * H * hd, "x");
    std::vector<float> cos_t(max_len * hd / 2), sin_t(max_len * hd / 2);
    cpu::rope_table(cos_t.data(), sin_t.data(), max_len, hd, a.num("theta"));
    cpu::rope_forward(x.data(), pos.data(), cos_t.data(), sin_t.data(), N, H, hd);
    o.f32["out"] = x;
  } else if (op == "attention") {
    const int64_t H = a.i("H"), KV = a.i("KV"), hd = a.i("hd");
    auto q = a.f32("q"), k = a.f32("k"), v = a.f32("v");
    auto starts = a.i32("seqStarts");
    const int64_t S = static_cast<int64_t>(starts.size()) - 1, N = starts.back();
    check_size(q, N * H * hd, "q");
    check_size(k, N * KV * hd, "k");
    std::vector<float> out(N * H * hd);
    cpu::attention_forward(out.data(), nullptr, q.data(), k.data(), v.data(), starts.data(), S, H, KV, hd);
    o.f32["out"] = out;
  } else if (op == "swiglu") {
    const int64_t N = a.i("N"), M = a.i("M");
    auto g = a.f32("gate"), u = a.f32("up");
    std::vector<float> out(N * M);
    cpu::swiglu_forward(out.data(), g.data(), u.data(), N, M);
    o.f32["out"] = out;
  } else if (op == "residual") {
    auto x = a.f32("x"), y = a.f32("y");
    cpu::residual_forward(x.data(), y.data(), static_cast<int64_t>(x.size()));
    o.f32["out"] = x;
  } else if (op == "sample") {
    const int64_t R = a.i("R"), V = a.i("V"), ld = a.i("ld"), n_all = a.i("nAll");
    auto logits = a.f32("logits");
    auto ex = a.i32("excluded");
    auto early = a.i32("early");
    const uint64_t seed = static_cast<uint64_t>(a.i("seed"));
    const double temperature = a.num("temperature");
    std::vector<int32_t> token(R);
    std::vector<float> lp(R), ent(R);
    std::vector<double> prob(R), margin(R), cert(R);
    for (int64_t r = 0; r < R; r++) {
      cpu::RowSample s;
      cpu::sample_row(&s, logits.data() + r * ld, V, ex.data(), early[r] ? static_cast<int64_t>(ex.size()) : n_all,
                      temperature, cpu::row_key(seed, 0, r));
      token[r] = s.token;
      lp[r] = s.logprob;
      ent[r] = s.entropy;
      prob[r] = s.prob;
      margin[r] = s.margin;
      cert[r] = s.certainty;
    }
    o.i32["token"] = token;
    o.f32["logprob"] = lp;
    o.f32["entropy"] = ent;
    o.f64["prob"] = prob;
    o.f64["margin"] = margin;
    o.f64["certainty"] = cert;
  } else if (op == "logprob") {
    const int64_t R = a.i("R"), V = a.i("V");
    auto logits = a.f32("logits");
    auto targets = a.i32("targets");
    auto ex = a.i32("excluded");
    for (int32_t id : ex)
      for (int64_t r = 0; r < R; r++) logits[r * V + id] = -std::numeric_limits<float>::infinity();
    std::vector<float> out(R), lse(R);
    cpu::logsoftmax_forward(out.data(), lse.data(), logits.data(), targets.data(), R, V);
    o.f32["out"] = out;
  } else if (op == "select") {
    auto row_begin = a.i32("rowBegin");
    auto k_sched = a.i32("kSched");
    const int64_t S = static_cast<int64_t>(row_begin.size()) - 1, R = row_begin.back();
    const std::vector<double> conf = select_confidences(a, R);
    std::vector<int32_t> commit(R), k(S);
    for (int64_t s = 0; s < S; s++) {
      std::vector<double> c(conf.begin() + row_begin[s], conf.begin() + row_begin[s + 1]);
      std::vector<int32_t> cm;
      select_reference(cm, &k[s], c, a.num("useThreshold") != 0, a.num("threshold"), k_sched[s]);
      std::copy(cm.begin(), cm.end(), commit.begin() + row_begin[s]);
    }
    o.i32["commit"] = commit;
    o.i32["k"] = k;
  } else {
    throw EngineError(str_cat("testOp: unknown op ", op));
  }
  return o;
}

#ifdef JUSTGRPO_CUDA
// Device copies of test inputs, freed when the call ends.
struct Dev {
  DType t;
  std::vector<std::unique_ptr<cuda::DeviceBuffer>> bufs;

  void* alloc(size_t bytes) {
    bufs.push_back(std::make_unique<cuda::DeviceBuffer>());
    return bufs.back()->reserve(std::max<size_t>(bytes, 1), "test data");
  }
  template <typename T>
  T* raw(const std::vector<T>& v) {
    T* d = static_cast<T*>(alloc(v.size() * sizeof(T)));
    JG_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
  }
  // An activation or weight: fp32 on the host, the test's dtype on the device.
  void* act(const std::vector<float>& v) {
    float* f = raw(v);
    void* d = alloc(v.size() * cuda::act_size(t));
    cuda::convert_from_f32(d, t, f, static_cast<int64_t>(v.size()), nullptr);
    return d;
  }
  void* act_empty(int64_t n) { return alloc(n * cuda::act_size(t)); }
  std::vector<float> act_back(const void* d, int64_t n) {
    float* f = static_cast<float*>(alloc(n * sizeof(float)));
    cuda::convert_to_f32(f, d, t, n, nullptr);
    return back(f, n);
  }
  template <typename T>
  std::vector<T> back(const T* d, int64_t n) {
    std::vector<T> h(n);
    JG_CUDA_CHECK(cudaDeviceSynchronize());
    JG_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

Outputs run_cuda(const std::string& op, const Args& a, DType t) {
  std::string why;
  JG_CHECK(cuda::device_count(&why) > 0, "testOp: no CUDA device: ", why);
  cuda::DeviceScope scope(static_cast<int>(a.num_or("device", 0)));
  Dev dev{t, {}};
  Outputs o;
  const cudaStream_t s = nullptr;
  if (op == "embedding") {
    const int64_t N = a.i("N"), C = a.i("C");
    float* out = static_cast<float*>(dev.alloc(N * C * 4));
    cuda::embedding_forward(out, dev.raw(a.i32("tokens")), dev.act(a.f32("wte")), t, N, C, s);
    o.f32["out"] = dev.back(out, N * C);
  } else if (op == "rmsnorm") {
    const int64_t N = a.i("N"), C = a.i("C");
    void* out = dev.act_empty(N * C);
    cuda::rmsnorm_forward(out, dev.raw(a.f32("inp")), dev.act(a.f32("weight")), t, N, C,
                          static_cast<float>(a.num("eps")), s);
    o.f32["out"] = dev.act_back(out, N * C);
  } else if (op == "matmul") {
    const int64_t N = a.i("N"), C = a.i("C"), OC = a.i("OC");
    float* out = static_cast<float*>(dev.alloc(N * OC * 4));
    cuda::Blas blas(s);
    blas.matmul_forward(out, DType::F32, OC, dev.act(a.f32("inp")), dev.act(a.f32("weight")), t, N, C, OC);
    o.f32["out"] = dev.back(out, N * OC);
  } else if (op == "rope") {
    const int64_t N = a.i("N"), H = a.i("H"), hd = a.i("hd"), max_len = a.i("maxLen");
    std::vector<float> table(max_len * hd);
    cpu::rope_table(table.data(), table.data() + max_len * hd / 2, max_len, hd, a.num("theta"));
    const float* d_table = dev.raw(table);
    void* x = dev.act(a.f32("x"));
    cuda::rope_forward(x, t, H * hd, dev.raw(a.i32("pos")), d_table, d_table + max_len * hd / 2, N, H, hd, s);
    o.f32["out"] = dev.act_back(x, N * H * hd);
  } else if (op == "attention") {
    const int64_t H = a.i("H"), KV = a.i("KV"), hd = a.i("hd");
    auto starts = a.i32("seqStarts");
    const int64_t S = static_cast<int64_t>(starts.size()) - 1, N = starts.back();
    int64_t max_len = 0;
    for (int64_t i = 0; i < S; i++) max_len = std::max<int64_t>(max_len, starts[i + 1] - starts[i]);
    // q|k|v side by side in one buffer, rows (H + 2 KV) * hd apart, as the model's fused projection
    // lays them out; the output likewise strided by a padded row.
    const int64_t qd = H * hd, kd = KV * hd, stride = qd + 2 * kd, out_stride = qd + 8;
    auto q = a.f32("q"), k = a.f32("k"), v = a.f32("v");
    std::vector<float> packed(N * stride);
    for (int64_t n = 0; n < N; n++) {
      std::copy(q.begin() + n * qd, q.begin() + (n + 1) * qd, packed.begin() + n * stride);
      std::copy(k.begin() + n * kd, k.begin() + (n + 1) * kd, packed.begin() + n * stride + qd);
      std::copy(v.begin() + n * kd, v.begin() + (n + 1) * kd, packed.begin() + n * stride + qd + kd);
    }
    char* qkv = static_cast<char*>(dev.act(packed));
    const int es = cuda::act_size(t);
    void* out = dev.act_empty(N * out_stride);
    cuda::attention_forward(out, out_stride, qkv, stride, qkv + qd * es, qkv + (qd + kd) * es, stride, t,
                            dev.raw(starts), S, max_len, H, KV, hd, s,
                            static_cast<cuda::AttentionImpl>(static_cast<int>(a.num_or("impl", 0))));
    auto full = dev.act_back(out, N * out_stride);
    std::vector<float> res(N * qd);
    for (int64_t n = 0; n < N; n++)
      std::copy(full.begin() + n * out_stride, full.begin() + n * out_stride + qd, res.begin() + n * qd);
    o.f32["out"] = res;
  } else if (op == "swiglu") {
    const int64_t N = a.i("N"), M = a.i("M");
    auto g = a.f32("gate"), u = a.f32("up");
    std::vector<float> gu(N * 2 * M);
    for (int64_t n = 0; n < N; n++) {
      std::copy(g.begin() + n * M, g.begin() + (n + 1) * M, gu.begin() + n * 2 * M);
      std::copy(u.begin() + n * M, u.begin() + (n + 1) * M, gu.begin() + n * 2 * M + M);
    }
    char* d_gu = static_cast<char*>(dev.act(gu));
    void* out = dev.act_empty(N * M);
    cuda::swiglu_forward(out, d_gu, d_gu + M * cuda::act_size(t), 2 * M, t, N, M, s);
    o.f32["out"] = dev.act_back(out, N * M);
  } else if (op == "residual") {
    auto x = a.f32("x");
    const int64_t n = static_cast<int64_t>(x.size());
    float* dx = dev.raw(x);
    cuda::residual_forward(dx, dev.act(a.f32("y")), t, n, s);
    o.f32["out"] = dev.back(dx, n);
  } else if (op == "sample") {
    const int64_t R = a.i("R"), V = a.i("V"), ld = a.i("ld");
    auto ex = a.i32("excluded");
    auto early32 = a.i32("early");
    std::vector<uint8_t> early(early32.begin(), early32.end());
    const uint64_t seed = static_cast<uint64_t>(a.i("seed"));
    std::vector<uint64_t> keys(R);
    for (int64_t r = 0; r < R; r++) keys[r] = cpu::row_key(seed, 0, r);
    auto* out = static_cast<cuda::RowSample*>(dev.alloc(R * sizeof(cuda::RowSample)));
    cuda::sample_rows(out, dev.raw(a.f32("logits")), ld, R, V, dev.raw(ex), static_cast<int>(a.i("nAll")),
                      static_cast<int>(ex.size()), dev.raw(early), a.num("temperature"), dev.raw(keys), s);
    auto h = dev.back(out, R);
    std::vector<int32_t> token(R);
    std::vector<float> lp(R), ent(R);
    std::vector<double> prob(R), margin(R), cert(R);
    for (int64_t r = 0; r < R; r++) {
      token[r] = h[r].token;
      lp[r] = h[r].logprob;
      ent[r] = h[r].entropy;
      prob[r] = h[r].prob;
      margin[r] = h[r].margin;
      cert[r] = h[r].certainty;
    }
    o.i32["token"] = token;
    o.f32["logprob"] = lp;
    o.f32["entropy"] = ent;
    o.f64["prob"] = prob;
    o.f64["margin"] = margin;
    o.f64["certainty"] = cert;
  } else if (op == "logprob") {
    const int64_t R = a.i("R"), V = a.i("V");
    auto ex = a.i32("excluded");
    float* out = static_cast<float*>(dev.alloc(R * 4));
    cuda::logprob_rows(out, dev.raw(a.f32("logits")), dev.raw(a.i32("targets")), R, V, dev.raw(ex),
                       static_cast<int>(ex.size()), s);
    o.f32["out"] = dev.back(out, R);
  } else if (op == "select") {
    auto row_begin = a.i32("rowBegin");
    auto k_sched = a.i32("kSched");
    const int64_t S = static_cast<int64_t>(row_begin.size()) - 1, R = row_begin.back();
    const int kind = static_cast<int>(a.i("kind"));
    std::vector<cuda::RowSample> samples(R);
    std::vector<uint64_t> keys(R);
    const uint64_t seed = static_cast<uint64_t>(a.num_or("seed", 0));
    for (int64_t r = 0; r < R; r++) keys[r] = cpu::row_key(seed, 0, r);
    if (kind != 3) {
      auto p = a.f64("prob"), m = a.f64("margin"), c = a.f64("certainty");
      for (int64_t r = 0; r < R; r++) samples[r] = cuda::RowSample{0, 0.0f, 0.0f, p[r], m[r], c[r]};
    }
    auto* commit = static_cast<uint8_t*>(dev.alloc(R));
    auto* k = static_cast<int32_t*>(dev.alloc(S * 4));
    cuda::select_commits(commit, k, dev.raw(samples), dev.raw(keys), dev.raw(row_begin), S,
                         static_cast<cuda::ConfidenceKind>(kind), static_cast<uint64_t>(a.num_or("randomIndex", 0)),
                         a.num("useThreshold") != 0, a.num("threshold"), dev.raw(k_sched), s);
    auto hc = dev.back(commit, R);
    o.i32["commit"] = std::vector<int32_t>(hc.begin(), hc.end());
    o.i32["k"] = dev.back(k, S);
  } else {
    throw EngineError(str_cat("testOp: unknown op ", op));
  }
  JG_CUDA_CHECK(cudaDeviceSynchronize());
  return o;
}
#endif

}  // namespace

Napi::Value TestOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (info.Length() < 5 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString() || !info[3].IsObject() ||
        !info[4].IsObject())
      throw EngineError("testOp: expected (backend, op, dtype, inputs, sizes)");
    const std::string backend = info[0].As<Napi::String>(), op = info[1].As<Napi::String>();
    const DType t = dtype_from_name(info[2].As<Napi::String>());
    Args a{info[3].As<Napi::Object>(), info[4].As<Napi::Object>()};
    Outputs o;
    if (backend == "cpu") {
      o = run_cpu(op, a);
    } else if (backend == "cuda") {
#ifdef JUSTGRPO_CUDA
      o = run_cuda(op, a, t);
#else
      throw EngineError("testOp: this build has no CUDA backend");
#endif
    } else {
      throw EngineError(str_cat("testOp: unknown backend ", backend));
    }
    (void)t;
    Napi::Object out = Napi::Object::New(env);
    for (auto& [k, v] : o.f32) {
      auto arr = Napi::Float32Array::New(env, v.size());
      std::copy(v.begin(), v.end(), arr.Data());
      out.Set(k, arr);
    }
    for (auto& [k, v] : o.i32) {
      auto arr = Napi::Int32Array::New(env, v.size());
      std::copy(v.begin(), v.end(), arr.Data());
      out.Set(k, arr);
    }
    for (auto& [k, v] : o.f64) {
      auto arr = Napi::Float64Array::New(env, v.size());
      std::copy(v.begin(), v.end(), arr.Data());
      out.Set(k, arr);
    }
    return out;
  } catch (const std::exception& e) {
    Napi::Error::New(env, e.what()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

}  // namespace jg
