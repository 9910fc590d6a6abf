// The engine's whole C++ path in one program, for AddressSanitizer + UndefinedBehaviorSanitizer +
// LeakSanitizer (npm run test:asan): forward over a packed batch of unequal sequences, loss and
// backward with and without activation checkpointing, gradient clipping and AdamW, every decoder,
// tensor I/O round trips in every dtype, and the refusals (bad batches, configs, memory). Prints
// what it checked; any sanitizer report fails the run.
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../common/check.h"
#include "../common/memory.h"
#include "../common/tensor_io.h"
#include "../common/validate.h"
#include "../common/decode.h"
#include "../cpu/model.h"
#include "../cpu/ops.h"

using namespace jg;

namespace {

int checks = 0;
void expect(bool ok, const std::string& what) {
  checks++;
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    std::exit(1);
  }
}

template <typename F>
void expect_throws(F&& f, const std::string& what) {
  try {
    f();
  } catch (const EngineError&) {
    checks++;
    return;
  }
  expect(false, what + " did not throw");
}

ModelConfig config(int64_t kv_heads) {
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = kv_heads, c.mlp_hidden = 48;
  c.vocab_size = 40, c.embedding_size = 48, c.max_seq_len = 24, c.mask_token_id = 39;
  c.rope_theta = 10000, c.rms_norm_eps = 1e-5;
  return c;
}

void randomize(cpu::Model& m, uint32_t seed) {
  for (int64_t i = 0; i < m.layout().total(); i++) {
    seed = seed * 1664525u + 1013904223u;
    m.params()[i] = (static_cast<float>(seed >> 8) / 16777216.0f - 0.5f) * 0.4f;
  }
}

void run_model(int64_t kv_heads) {
  cpu::Model m(config(kv_heads));
  randomize(m, 7 + kv_heads);
  const ModelConfig& c = m.config();
  // Three sequences of 5, 1 and 9 tokens; rows in every sequence, one repeated.
  std::vector<int32_t> tokens{1, 2, 3, 39, 5, 7, 11, 39, 39, 12, 13, 14, 15, 16, 17};
  std::vector<int32_t> starts{0, 5, 6, 15}, rows{0, 3, 5, 7, 8, 8, 14};
  check_packed_batch(tokens.data(), 15, starts.data(), 4, rows.data(), 7, c);
  Batch b{tokens.data(), starts.data(), 3};
  std::vector<float> logits(rows.size() * c.embedding_size);
  m.forward(logits.data(), b, rows.data(), static_cast<int64_t>(rows.size()));
  for (float x : logits) expect(std::isfinite(x), "finite logits");

  std::vector<int32_t> targets{4, 3, 9, 2, 30, 30, 47};
  std::vector<float> weights{0.1f, 0.2f, 0.3f, 0.1f, 0.5f, 0.5f, 1.0f}, lp(rows.size()), lp2(rows.size());
  FloatBuffer grads(m.layout().total(), "gradients"), m1(m.layout().total(), "m"), v1(m.layout().total(), "v");
  for (bool ckpt : {false, true}) {
    cpu::TrainWorkspace ws(ckpt);
    cpu::CrossEntropyLoss ce(weights.data());
    const double a = m.loss(grads.data(), ws, b, rows.data(), targets.data(), 7, ce, lp.data());
    const double inf = m.loss(nullptr, ws, b, rows.data(), targets.data(), 7, ce, lp2.data());
    expect(std::isfinite(a) && a == inf, "loss with and without grads agree");
    std::vector<float> old(lp.begin(), lp.end()), adv{1, -1, 0.5f, -0.5f, 1, 1, -1};
    std::vector<uint8_t> region(7);
    cpu::GrpoLoss g({old.data(), adv.data(), weights.data(), old.data(), 0.2, 0.28, 0.04}, region.data());
    g.excluded = {39};
    m.loss(grads.data(), ws, b, rows.data(), targets.data(), 7, g, lp.data());
  }
  grads.data()[3] = NAN;
  grads.data()[5] = INFINITY;
  expect(cpu::nonfinite_zero(grads.data(), m.layout().total()) == 2, "two non-finite gradients zeroed");
  const double norm = std::sqrt(cpu::grad_sumsq(grads.data(), m.layout().total()));
  expect(std::isfinite(norm) && norm > 0, "finite gradient norm");
  cpu::grad_scale(grads.data(), static_cast<float>(1.0 / (norm + 1e-6)), m.layout().total());
  for (const ParamInfo& p : m.layout().params())
    cpu::adamw_update(m.params() + p.offset, m1.data() + p.offset, v1.data() + p.offset, grads.data() + p.offset, p.numel,
                      {1e-3, 0.9, 0.999, 1e-8, p.shape.size() == 2 ? 0.1 : 0.0, 1});

  // Every decoder, with guidance, temperature and an early stop.
  DecodeRequest req;
  req.prompts = {1, 2, 3, 4, 5, 6};
  req.prompt_starts = {0, 2, 6};
  req.seeds = {1, 2};
  std::atomic<bool> abort{false};
  for (auto rem : {Decoder::LOW_CONFIDENCE, Decoder::RANDOM, Decoder::THRESHOLD})
    for (auto conf : {Confidence::PROBABILITY, Confidence::MARGIN, Confidence::ENTROPY}) {
      DecodeOptions o;
      o.decoder = rem, o.confidence = conf, o.gen_length = 8, o.block_length = 4, o.steps = 8;
      o.temperature = conf == Confidence::MARGIN ? 1.0 : 0.0;
      o.cfg_scale = conf == Confidence::ENTROPY ? 1.5 : 0.0;
      o.min_new_tokens = 2, o.stop_ids = {38};
      auto r = decode(m, req, o, &abort, [](const DecodeProgress&) {});
      expect(r.tokens.size() == 16, "decode returns gen_length tokens per sequence");
      for (int32_t t : r.tokens) expect(t >= 0 && t < c.vocab_size && t != c.mask_token_id, "decoded ids are tokens");
    }
  DecodeOptions ar;
  ar.gen_length = 6, ar.block_length = 1, ar.steps = 6, ar.temperature = 1.0;
  auto r = decode(m, req, ar, &abort, nullptr);
  for (float x : r.logprobs) expect(std::isfinite(x) && x <= 0, "AR log-probs");
  abort = true;
  expect_throws([&] { decode(m, req, ar, &abort, nullptr); }, "an aborted decode");

  // Refusals.
  std::vector<int32_t> bad_starts{0, 2147483647, 15};
  expect_throws([&] { check_packed_batch(tokens.data(), 15, bad_starts.data(), 3, rows.data(), 7, c); }, "overflowing seqStarts");
  std::vector<int32_t> neg_starts{0, -2147483647 - 1, 15};
  expect_throws([&] { check_packed_batch(tokens.data(), 15, neg_starts.data(), 3, rows.data(), 7, c); }, "negative seqStarts");
  DecodeOptions huge = ar;
  huge.gen_length = int64_t(1) << 40;
  expect_throws([&] { decode(m, req, huge, nullptr, nullptr); }, "a genLength beyond 2^31");
  huge = ar, huge.block_length = 3, huge.gen_length = 3, huge.steps = 2147483646;
  expect_throws([&] { decode(m, req, huge, nullptr, nullptr); }, "a step count whose schedule does not fit");
}

void tensor_io() {
  char dir[] = "/tmp/jg-asan-XXXXXX";
  expect(mkdtemp(dir) != nullptr, "temporary directory");
  const std::string path = std::string(dir) + "/t.safetensors";
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); i++) x[i] = std::sin(static_cast<float>(i)) * 100;
  x[1] = NAN, x[2] = INFINITY, x[3] = 1e-30f, x[4] = 70000.0f;
  {
    TensorWriter w(path);
    const char header[8] = {0};
    w.write_bytes(header, 8);
    w.write_tensor(x.data(), 1000, DType::F32);
    w.write_tensor(x.data(), 1000, DType::BF16);
    w.write_tensor(x.data(), 1000, DType::F16);
    w.finish();
  }
  std::vector<float> y(1000);
  read_tensor(y.data(), 1000, DType::F32, path, 8, "f32");
  for (size_t i = 0; i < x.size(); i++) expect(std::isnan(x[i]) ? std::isnan(y[i]) : x[i] == y[i], "F32 round trip");
  read_tensor(y.data(), 1000, DType::BF16, path, 8 + 4000, "bf16");
  read_tensor(y.data(), 1000, DType::F16, path, 8 + 6000, "f16");
  expect(std::isnan(y[1]) && std::isinf(y[2]) && std::isinf(y[4]), "F16 keeps NaN and overflows to inf");
  expect_throws([&] { read_tensor(y.data(), 1000, DType::F32, path, 8 + 6000, "short"); }, "a read past the end");
  expect_throws([&] { read_tensor(y.data(), int64_t(1) << 62, DType::F32, path, int64_t(1) << 62, "overflow"); },
                "a read whose end overflows");
  expect_throws([&] { read_tensor(y.data(), -5, DType::F32, path, 0, "negative"); }, "a negative size");
  expect_throws([&] { TensorWriter w(std::string(dir) + "/no/such/dir/x"); }, "a writer in a missing directory");
  unlink(path.c_str());
  rmdir(dir);
}

void refusals() {
  ModelConfig c = config(2);
  c.n_heads = 3;
  expect_throws([&] { cpu::Model m(c); }, "d_model not divisible by n_heads");
  c = config(2);
  c.d_model = int64_t(1) << 40;
  expect_throws([&] { cpu::Model m(c); }, "a d_model beyond 2^31");
  c = config(2);
  c.d_model = 65536, c.n_layers = 60000, c.n_heads = 512, c.mlp_hidden = 1 << 30;
  try {
    cpu::Model m(c);
    expect(false, "a model of 2^60 bytes was allocated");
  } catch (const OutOfMemoryError& e) {
    expect(std::string(e.what()).find("needs") != std::string::npos, "the memory error names the size");
  } catch (const EngineError& e) {
    expect(std::string(e.what()).find("parameters") != std::string::npos, "the size error names the parameters");
  }
  c = config(2);
  c.d_model = 16384, c.n_layers = 64, c.n_heads = 128, c.mlp_hidden = 65536;  // ~1 TB
  try {
    cpu::Model m(c);
    expect(false, "a model of 1 TB was allocated");
  } catch (const OutOfMemoryError& e) {
    expect(std::string(e.what()).find("model parameters needs") != std::string::npos, std::string("message: ") + e.what());
  }
}

}  // namespace

int main() {
  setenv("JUSTGRPO_NUM_THREADS", "2", 0);
  run_model(4);  // multi-head
  run_model(2);  // grouped-query
  run_model(1);  // multi-query
  tensor_io();
  refusals();
  std::printf("sanitize_main: %d checks passed\n", checks);
  return 0;
}
