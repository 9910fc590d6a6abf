// libFuzzer target: the engine's request checks (packed batches, rows, targets, decode requests and
// options, model configs) followed by the real kernels whenever the checks accept. Invariant: a
// request is refused with EngineError or runs without touching memory it does not own (run under
// AddressSanitizer) and gives finite log-probs.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "../common/check.h"
#include "../common/validate.h"
#include "../common/decode.h"
#include "../cpu/model.h"
#include "input.h"

namespace {

jg::ModelConfig tiny() {
  jg::ModelConfig c;
  c.d_model = 8, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1, c.mlp_hidden = 12;
  c.vocab_size = 10, c.embedding_size = 12, c.max_seq_len = 8, c.mask_token_id = 9;
  c.rope_theta = 10000, c.rms_norm_eps = 1e-5;
  return c;
}

jg::cpu::Model& model() {
  static jg::cpu::Model* m = [] {
    auto* m = new jg::cpu::Model(tiny());
    uint32_t s = 1;
    for (int64_t i = 0; i < m->layout().total(); i++) {
      s = s * 1664525u + 1013904223u;
      m->params()[i] = (static_cast<float>(s >> 8) / 16777216.0f - 0.5f) * 0.5f;
    }
    return m;
  }();
  return *m;
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

std::vector<int32_t> ints(jg::fuzz::Input& in, size_t max) {
  std::vector<int32_t> v(in.byte() % (max + 1));
  for (auto& x : v) x = in.i32();
  return v;
}

void batch_case(jg::fuzz::Input& in, bool backward) {
  jg::cpu::Model& m = model();
  const jg::ModelConfig& cfg = m.config();
  auto tokens = ints(in, 24), starts = ints(in, 6), rows = ints(in, 12), targets = ints(in, 12);
  jg::check_packed_batch(tokens.data(), static_cast<int64_t>(tokens.size()), starts.data(),
                         static_cast<int64_t>(starts.size()), rows.data(), static_cast<int64_t>(rows.size()), cfg);
  jg::Batch b{tokens.data(), starts.data(), static_cast<int64_t>(starts.size()) - 1};
  const int64_t R = static_cast<int64_t>(rows.size());
  if (!backward) {
    std::vector<float> out(R * cfg.embedding_size);
    m.forward(out.data(), b, rows.data(), R);
    for (float x : out) check(std::isfinite(x), "finite logits");
    return;
  }
  // The trainer's checks: one target per row, in [0, embedding_size), not excluded.
  targets.resize(R, 0);
  for (auto& t : targets)
    if (t < 0 || t >= cfg.embedding_size) return;
  static jg::FloatBuffer grads(m.layout().total(), "gradients");
  static jg::cpu::TrainWorkspace ws(false), ws_ckpt(true);
  std::vector<float> weights(R, 0.5f), logprobs(R);
  jg::cpu::CrossEntropyLoss loss(weights.data());
  const double l = m.loss(grads.data(), in.byte() & 1 ? ws_ckpt : ws, b, rows.data(), targets.data(), R, loss, logprobs.data());
  check(std::isfinite(l), "finite loss");
  for (float lp : logprobs) check(std::isfinite(lp) && lp <= 0, "log-probs <= 0");
}

void decode_case(jg::fuzz::Input& in) {
  jg::DecodeOptions o;
  const uint8_t mode = in.byte();
  o.decoder = static_cast<jg::Decoder>(mode % 3);
  o.confidence = static_cast<jg::Confidence>((mode / 3) % 3);
  o.gen_length = in.i64();
  o.block_length = in.i64();
  o.steps = in.i64();
  o.temperature = (mode & 0x40) ? in.byte() / 64.0 : 0.0;
  o.threshold = in.byte() / 200.0;
  o.cfg_scale = (mode & 0x80) ? in.byte() / 64.0 : 0.0;
  o.min_new_tokens = in.i64();
  o.stop_ids = ints(in, 3);
  jg::DecodeRequest req;
  req.prompts = ints(in, 8);
  req.prompt_starts = ints(in, 4);
  const size_t n = in.byte() % 4;
  for (size_t i = 0; i < n; i++) req.seeds.push_back(static_cast<uint64_t>(in.i64()));
  jg::check_decode_options(o);
  jg::check_decode_request(req, model().config());
  // Low-confidence decoding takes exactly `steps` passes, as asked: a large count is slow, not wrong.
  if (o.steps > 64) return;
  std::atomic<bool> abort{false};
  auto r = jg::decode(model(), req, o, &abort, nullptr);
  for (int32_t t : r.tokens) check(t >= 0 && t < model().config().embedding_size && t != model().config().mask_token_id, "decoded ids are real tokens");
}

void config_case(jg::fuzz::Input& in) {
  jg::ModelConfig c;
  c.d_model = in.i64(), c.n_layers = in.i64(), c.n_heads = in.i64(), c.n_kv_heads = in.i64();
  c.mlp_hidden = in.i64(), c.vocab_size = in.i64(), c.embedding_size = in.i64(), c.max_seq_len = in.i64();
  c.mask_token_id = in.i64();
  c.rope_theta = in.byte() * 100.0, c.rms_norm_eps = in.byte() ? 1e-5 : 0.0;
  jg::cpu::Model m(c);  // throws EngineError (bad config) or OutOfMemoryError (over JUSTGRPO_MEMORY_LIMIT)
  std::vector<int32_t> tokens{0}, starts{0, 1}, rows{0};
  std::vector<float> out(c.embedding_size);
  m.forward(out.data(), jg::Batch{tokens.data(), starts.data(), 1}, rows.data(), 1);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Configs that pass the checks but are large must be refused by the memory check, not allocated.
  setenv("JUSTGRPO_MEMORY_LIMIT", "67108864", 1);
  setenv("JUSTGRPO_NUM_THREADS", "1", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  jg::fuzz::Input in(data, size);
  try {
    switch (in.byte() % 4) {
      case 0: batch_case(in, false); break;
      case 1: batch_case(in, true); break;
      case 2: decode_case(in); break;
      default: config_case(in); break;
    }
  } catch (const jg::EngineError&) {
  }
  return 0;
}
