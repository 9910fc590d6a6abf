// The CUDA backend's entry in the op table's test harness: each op of native/common/ops.h on small
// host arrays, uploaded, converted to the requested dtype, run, and converted back to fp32, so
// test/gpu/parity.mjs can compare it with the CPU's (native/cpu/testops.cpp). Synchronous; small
// shapes only. Backward mode (the call passes `dout`) as on the CPU: the gradients too, fp32, from
// the inputs of their names where given; strided rows where the model uses them (the fused q|k|v
// and gate|up buffers and their gradients).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "../common/ops.h"
#include "../common/rope.h"
#include "../common/sampling.h"
#include "buffer.h"
#include "matmul.h"
#include "model.h"
#include "ops.h"
#include "sampling.h"

namespace jg::cuda {

namespace {

// Device copies of test inputs, freed when the call ends.
struct Dev {
  DType t;
  std::vector<std::unique_ptr<DeviceBuffer>> bufs;

  void* alloc(size_t bytes) {
    bufs.push_back(std::make_unique<DeviceBuffer>());
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
    void* d = alloc(v.size() * act_size(t));
    convert_from_f32(d, t, f, static_cast<int64_t>(v.size()), nullptr);
    return d;
  }
  void* act_empty(int64_t n) { return alloc(n * act_size(t)); }
  std::vector<float> act_back(const void* d, int64_t n) {
    float* f = static_cast<float*>(alloc(n * sizeof(float)));
    convert_to_f32(f, d, t, n, nullptr);
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

}  // namespace

bool test_op(Op op, const OpArgs& a, OpOutputs& o) {
  const DType t = a.dtype;
  std::string why;
  JG_CHECK(device_count(&why) > 0, "testOp: no CUDA device: ", why);
  DeviceScope scope(static_cast<int>(a.num_or("device", 0)));
  Dev dev{t, {}};
  const cudaStream_t s = nullptr;
  if (op == OP_EMBEDDING) {
    const int64_t N = a.i("N"), C = a.i("C");
    float* out = static_cast<float*>(dev.alloc(N * C * 4));
    const int32_t* tokens = dev.raw(a.i32s("tokens"));
    embedding_forward(out, tokens, dev.act(a.f32s("wte")), t, N, C, s);
    o.f32["out"] = dev.back(out, N * C);
    if (a.backward()) {
      const int64_t VC = static_cast<int64_t>(a.f32s("wte").size());
      float* dwte = dev.raw(a.grad_init("dwte", VC));
      embedding_backward(dwte, dev.raw(a.f32n("dout", N * C)), tokens, N, C, s);
      o.f32["dwte"] = dev.back(dwte, VC);
    }
  } else if (op == OP_RMSNORM) {
    const int64_t N = a.i("N"), C = a.i("C");
    void* out = dev.act_empty(N * C);
    const float* inp = dev.raw(a.f32n("inp", N * C));
    const void* weight = dev.act(a.f32n("weight", C));
    float* rstd = a.backward() ? static_cast<float*>(dev.alloc(N * 4)) : nullptr;
    rmsnorm_forward(out, rstd, inp, weight, t, N, C, static_cast<float>(a.num("eps")), s);
    o.f32["out"] = dev.act_back(out, N * C);
    if (a.backward()) {
      float* dinp = dev.raw(a.grad_init("dinp", N * C));
      float* dweight = dev.raw(a.grad_init("dweight", C));
      rmsnorm_backward(dinp, dweight, dev.raw(a.f32n("dout", N * C)), inp, weight, t, rstd, N, C, s);
      o.f32["rstd"] = dev.back(rstd, N);
      o.f32["dinp"] = dev.back(dinp, N * C);
      o.f32["dweight"] = dev.back(dweight, C);
    }
  } else if (op == OP_MATMUL) {
    const int64_t N = a.i("N"), C = a.i("C"), OC = a.i("OC");
    float* out = static_cast<float*>(dev.alloc(N * OC * 4));
    Blas blas(s);
    blas.matmul_forward(out, DType::F32, OC, dev.act(a.f32s("inp")), dev.act(a.f32s("weight")), t, N, C, OC);
    o.f32["out"] = dev.back(out, N * OC);
  } else if (op == OP_ROPE) {
    const int64_t N = a.i("N"), H = a.i("H"), hd = a.i("hd"), max_len = a.i("maxLen");
    std::vector<float> table(max_len * hd);
    rope_table(table.data(), table.data() + max_len * hd / 2, max_len, hd, a.num("theta"));
    const float* d_table = dev.raw(table);
    void* x = dev.act(a.f32s("x"));
    const int32_t* pos = dev.raw(a.i32s("pos"));
    rope_forward(x, t, H * hd, pos, d_table, d_table + max_len * hd / 2, N, H, hd, s);
    o.f32["out"] = dev.act_back(x, N * H * hd);
    if (a.backward()) {
      // Rows padded apart, as the q and k parts of a fused d(qkv) buffer are.
      const int64_t row = H * hd, stride = row + 8;
      auto d = a.f32n("dout", N * row);
      std::vector<float> padded(N * stride, 0.0f);
      for (int64_t n = 0; n < N; n++) std::copy(d.begin() + n * row, d.begin() + (n + 1) * row, padded.begin() + n * stride);
      float* dx = dev.raw(padded);
      rope_backward(dx, stride, pos, d_table, d_table + max_len * hd / 2, N, H, hd, s);
      auto back = dev.back(dx, N * stride);
      std::vector<float> res(N * row);
      for (int64_t n = 0; n < N; n++)
        std::copy(back.begin() + n * stride, back.begin() + n * stride + row, res.begin() + n * row);
      o.f32["dx"] = res;
    }
  } else if (op == OP_ATTENTION) {
    const int64_t H = a.i("H"), KV = a.i("KV"), hd = a.i("hd");
    auto starts = a.i32s("seqStarts");
    const int64_t S = static_cast<int64_t>(starts.size()) - 1, N = starts.back();
    int64_t max_len = 0;
    for (int64_t i = 0; i < S; i++) max_len = std::max<int64_t>(max_len, starts[i + 1] - starts[i]);
    // q|k|v side by side in one buffer, rows (H + 2 KV) * hd apart, as the model's fused projection
    // lays them out; the output likewise strided by a padded row.
    const int64_t qd = H * hd, kd = KV * hd, stride = qd + 2 * kd, out_stride = qd + 8;
    auto q = a.f32s("q"), k = a.f32s("k"), v = a.f32s("v");
    std::vector<float> packed(N * stride);
    for (int64_t n = 0; n < N; n++) {
      std::copy(q.begin() + n * qd, q.begin() + (n + 1) * qd, packed.begin() + n * stride);
      std::copy(k.begin() + n * kd, k.begin() + (n + 1) * kd, packed.begin() + n * stride + qd);
      std::copy(v.begin() + n * kd, v.begin() + (n + 1) * kd, packed.begin() + n * stride + qd + kd);
    }
    char* qkv = static_cast<char*>(dev.act(packed));
    const int es = act_size(t);
    void* out = dev.act_empty(N * out_stride);
    const int32_t* d_starts = dev.raw(starts);
    float* lse = a.backward() ? static_cast<float*>(dev.alloc(N * H * 4)) : nullptr;
    if (lse != nullptr)
      attention_forward(out, out_stride, lse, qkv, stride, qkv + qd * es, qkv + (qd + kd) * es, stride, t, d_starts, S,
                        max_len, H, KV, hd, s);
    else
      attention_forward(out, out_stride, qkv, stride, qkv + qd * es, qkv + (qd + kd) * es, stride, t, d_starts, S,
                        max_len, H, KV, hd, s, static_cast<AttentionImpl>(static_cast<int>(a.num_or("impl", 0))));
    auto full = dev.act_back(out, N * out_stride);
    std::vector<float> res(N * qd);
    for (int64_t n = 0; n < N; n++)
      std::copy(full.begin() + n * out_stride, full.begin() + n * out_stride + qd, res.begin() + n * qd);
    o.f32["out"] = res;
    if (lse != nullptr) {
      // dq|dk|dv side by side in one fp32 buffer (the model's d(qkv)), dout rows padded apart.
      auto dq0 = a.grad_init("dq", N * qd), dk0 = a.grad_init("dk", N * kd), dv0 = a.grad_init("dv", N * kd);
      std::vector<float> dpacked(N * stride);
      for (int64_t n = 0; n < N; n++) {
        std::copy(dq0.begin() + n * qd, dq0.begin() + (n + 1) * qd, dpacked.begin() + n * stride);
        std::copy(dk0.begin() + n * kd, dk0.begin() + (n + 1) * kd, dpacked.begin() + n * stride + qd);
        std::copy(dv0.begin() + n * kd, dv0.begin() + (n + 1) * kd, dpacked.begin() + n * stride + qd + kd);
      }
      float* dqkv = dev.raw(dpacked);
      auto d = a.f32n("dout", N * qd);
      const int64_t dout_stride = qd + 4;
      std::vector<float> dpad(N * dout_stride, 0.0f);
      for (int64_t n = 0; n < N; n++) std::copy(d.begin() + n * qd, d.begin() + (n + 1) * qd, dpad.begin() + n * dout_stride);
      attention_backward(dqkv, stride, dqkv + qd, dqkv + qd + kd, stride, dev.raw(dpad), dout_stride, qkv, stride,
                         qkv + qd * es, qkv + (qd + kd) * es, stride, out, out_stride, lse, t, d_starts, S, max_len, H,
                         KV, hd, s);
      auto g = dev.back(dqkv, N * stride);
      std::vector<float> dq(N * qd), dk(N * kd), dv(N * kd);
      for (int64_t n = 0; n < N; n++) {
        std::copy(g.begin() + n * stride, g.begin() + n * stride + qd, dq.begin() + n * qd);
        std::copy(g.begin() + n * stride + qd, g.begin() + n * stride + qd + kd, dk.begin() + n * kd);
        std::copy(g.begin() + n * stride + qd + kd, g.begin() + (n + 1) * stride, dv.begin() + n * kd);
      }
      o.f32["lse"] = dev.back(lse, N * H);
      o.f32["dq"] = dq;
      o.f32["dk"] = dk;
      o.f32["dv"] = dv;
    }
  } else if (op == OP_SWIGLU) {
    const int64_t N = a.i("N"), M = a.i("M");
    auto g = a.f32s("gate"), u = a.f32s("up");
    std::vector<float> gu(N * 2 * M);
    for (int64_t n = 0; n < N; n++) {
      std::copy(g.begin() + n * M, g.begin() + (n + 1) * M, gu.begin() + n * 2 * M);
      std::copy(u.begin() + n * M, u.begin() + (n + 1) * M, gu.begin() + n * 2 * M + M);
    }
    char* d_gu = static_cast<char*>(dev.act(gu));
    void* out = dev.act_empty(N * M);
    swiglu_forward(out, d_gu, d_gu + M * act_size(t), 2 * M, t, N, M, s);
    o.f32["out"] = dev.act_back(out, N * M);
    if (a.backward()) {
      // dgate|dup side by side, as the model's d(ff_proj|up_proj) buffer.
      auto dg0 = a.grad_init("dgate", N * M), du0 = a.grad_init("dup", N * M);
      std::vector<float> dgu(N * 2 * M);
      for (int64_t n = 0; n < N; n++) {
        std::copy(dg0.begin() + n * M, dg0.begin() + (n + 1) * M, dgu.begin() + n * 2 * M);
        std::copy(du0.begin() + n * M, du0.begin() + (n + 1) * M, dgu.begin() + n * 2 * M + M);
      }
      float* d_dgu = dev.raw(dgu);
      swiglu_backward(d_dgu, d_dgu + M, 2 * M, dev.raw(a.f32n("dout", N * M)), d_gu, d_gu + M * act_size(t), 2 * M, t, N,
                      M, s);
      auto g = dev.back(d_dgu, N * 2 * M);
      std::vector<float> dgate(N * M), dup(N * M);
      for (int64_t n = 0; n < N; n++) {
        std::copy(g.begin() + n * 2 * M, g.begin() + n * 2 * M + M, dgate.begin() + n * M);
        std::copy(g.begin() + n * 2 * M + M, g.begin() + (n + 1) * 2 * M, dup.begin() + n * M);
      }
      o.f32["dgate"] = dgate;
      o.f32["dup"] = dup;
    }
  } else if (op == OP_RESIDUAL) {
    auto x = a.f32s("x");
    const int64_t n = static_cast<int64_t>(x.size());
    float* dx = dev.raw(x);
    residual_forward(dx, dev.act(a.f32n("y", n)), t, n, s);
    o.f32["out"] = dev.back(dx, n);
    if (a.backward()) {
      float* dy = dev.raw(a.grad_init("dy", n));
      residual_backward(dy, dev.raw(a.f32n("dout", n)), n, s);
      o.f32["dy"] = dev.back(dy, n);
    }
  } else if (op == OP_ADAMW) {
    auto param = a.f32s("param");
    const int64_t n = static_cast<int64_t>(param.size());
    float* d_param = dev.raw(param);
    float* m = dev.raw(a.f32n("m", n));
    float* v = dev.raw(a.f32n("v", n));
    float* grad = dev.raw(a.f32n("grad", n));
    // With maxGradNorm, the step's gradient handling first, as the CPU's Training::step does it.
    if (a.sizes.count("maxGradNorm")) {
      auto* count = static_cast<int64_t*>(dev.alloc(8));
      auto* sumsq = static_cast<double*>(dev.alloc(8));
      JG_CUDA_CHECK(cudaMemsetAsync(count, 0, 8, s));
      JG_CUDA_CHECK(cudaMemsetAsync(sumsq, 0, 8, s));
      nonfinite_zero(grad, n, count, s);
      grad_sumsq(grad, n, sumsq, s);
      const double ss = dev.back(sumsq, 1)[0];
      o.i32["nonFinite"] = {static_cast<int32_t>(dev.back(count, 1)[0])};
      o.f64["sumsq"] = {ss};
      const double coef = a.num("maxGradNorm") / (std::sqrt(ss) + 1e-6);
      if (coef < 1.0) grad_scale(grad, static_cast<float>(coef), n, s);
      o.f32["grad"] = dev.back(grad, n);
    }
    // In bf16 mode the update also writes the bf16 copy the products read.
    void* bf16 = t == DType::BF16 ? dev.act_empty(n) : nullptr;
    const AdamWParams hp{a.num("lr"), a.num("beta1"), a.num("beta2"), a.num("eps"), a.num("weightDecay"), a.i("step")};
    adamw_update(d_param, m, v, grad, bf16, n, hp, s);
    o.f32["param"] = dev.back(d_param, n);
    o.f32["m"] = dev.back(m, n);
    o.f32["v"] = dev.back(v, n);
    if (bf16 != nullptr) o.f32["paramBf16"] = dev.act_back(bf16, n);
  } else if (op == OP_SAMPLE) {
    const int64_t R = a.i("R"), V = a.i("V"), ld = a.i("ld");
    auto ex = a.i32s("excluded");
    auto early32 = a.i32s("early");
    std::vector<uint8_t> early(early32.begin(), early32.end());
    const uint64_t seed = static_cast<uint64_t>(a.i("seed"));
    std::vector<uint64_t> keys(R);
    for (int64_t r = 0; r < R; r++) keys[r] = row_key(seed, 0, r);
    auto* out = static_cast<RowSample*>(dev.alloc(R * sizeof(RowSample)));
    sample_rows(out, dev.raw(a.f32s("logits")), ld, R, V, dev.raw(ex), static_cast<int>(a.i("nAll")),
                      static_cast<int>(ex.size()), dev.raw(early), a.num("temperature"), dev.raw(keys), s);
    o.set_samples(dev.back(out, R));
  } else if (op == OP_LOGPROB) {
    const int64_t R = a.i("R"), V = a.i("V");
    auto ex = a.i32s("excluded");
    float* out = static_cast<float*>(dev.alloc(R * 4));
    logprob_rows(out, dev.raw(a.f32s("logits")), dev.raw(a.i32s("targets")), R, V, dev.raw(ex),
                       static_cast<int>(ex.size()), s);
    o.f32["out"] = dev.back(out, R);
  } else if (op == OP_SELECT) {
    auto row_begin = a.i32s("rowBegin");
    auto k_sched = a.i32s("kSched");
    const int64_t S = static_cast<int64_t>(row_begin.size()) - 1, R = row_begin.back();
    const int kind = static_cast<int>(a.i("kind"));
    std::vector<RowSample> samples(R);
    std::vector<uint64_t> keys(R);
    const uint64_t seed = static_cast<uint64_t>(a.num_or("seed", 0));
    for (int64_t r = 0; r < R; r++) keys[r] = row_key(seed, 0, r);
    if (kind != 3) {
      auto p = a.f64s("prob"), m = a.f64s("margin"), c = a.f64s("certainty");
      for (int64_t r = 0; r < R; r++) samples[r] = RowSample{0, 0.0f, 0.0f, p[r], m[r], c[r]};
    }
    auto* commit = static_cast<uint8_t*>(dev.alloc(R));
    auto* k = static_cast<int32_t*>(dev.alloc(S * 4));
    select_commits(commit, k, dev.raw(samples), dev.raw(keys), dev.raw(row_begin), S,
                         static_cast<ConfidenceKind>(kind), static_cast<uint64_t>(a.num_or("randomIndex", 0)),
                         a.num("useThreshold") != 0, a.num("threshold"), dev.raw(k_sched), s);
    auto hc = dev.back(commit, R);
    o.i32["commit"] = std::vector<int32_t>(hc.begin(), hc.end());
    o.i32["k"] = dev.back(k, S);
  } else {
    return false;  // logsoftmax: the head's fused loss on the GPU is not in the op table yet
  }
  JG_CUDA_CHECK(cudaDeviceSynchronize());
  return true;
}

}  // namespace jg::cuda
