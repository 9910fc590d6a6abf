// The decoding loops: one full forward pass per step (no KV cache: bidirectional attention makes a
// cache inexact). AR-order rollout is block decoding with block_length 1 and steps = gen_length.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "model.h"

namespace jg::cpu {

enum class Remasking { LOW_CONFIDENCE, RANDOM, THRESHOLD };
enum class Confidence { PROBABILITY, MARGIN, ENTROPY };

struct DecodeOptions {
  Remasking remasking = Remasking::LOW_CONFIDENCE;
  Confidence confidence = Confidence::PROBABILITY;
  int64_t gen_length = 0;
  int64_t block_length = 0;
  int64_t steps = 0;            // ignored by THRESHOLD
  double temperature = 0;
  double threshold = 0.9;       // THRESHOLD only
  double cfg_scale = 0;         // classifier-free guidance; 0 = off
  int64_t min_new_tokens = 0;   // stop_ids are forbidden at completion positions below this
  std::vector<int32_t> stop_ids;
};

// One prompt per sequence; several sequences may share a prompt (G samples) with different seeds.
struct DecodeRequest {
  std::vector<int32_t> prompts;       // packed
  std::vector<int32_t> prompt_starts; // n + 1
  std::vector<uint64_t> seeds;        // n
};

// Per sequence s and completion position j, at index s * gen_length + j.
struct DecodeResult {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;   // log p of the committed token when it was committed (model's distribution)
  std::vector<float> entropies;  // entropy of the sampling distribution at that moment
  std::vector<int32_t> commit_step;  // the step (forward pass of that sequence) that committed it
  std::vector<int32_t> nfe;      // per sequence: forward passes (a guided step counts 2)
  std::vector<int32_t> transfers;  // per sequence, per step: tokens committed (n * max_steps, -1 padded)
  int64_t max_steps = 0;
  int64_t forward_tokens = 0;    // tokens run through the layers, over all steps (identical sequences once)
};

struct DecodeProgress {
  int64_t committed, total;     // tokens committed so far, over all sequences
  const int32_t* canvas;        // sequence 0's completion (gen_length ids; mask where not yet decided)
};

// Checks (gen_length, block_length, steps) as LLaDA does; throws EngineError naming the rule.
void check_decode_options(const DecodeOptions& o);

// Checks a request against the model: one prompt per seed, prompt_starts from 0 to the number of
// prompt tokens and not decreasing, token ids in the vocabulary, seeds below 2^53.
void check_decode_request(const DecodeRequest& req, const ModelConfig& cfg);

// LLaDA's schedule: `mask_count` tokens over `steps` steps, base each and the remainder first.
std::vector<int64_t> transfer_schedule(int64_t mask_count, int64_t steps);

// The forward pass of decoding step `step` (0, 1, ...): logits (n_rows, embedding_size) at `rows`.
// Empty: the model's forward. The trainer's rollout passes one that keeps activations.
using ForwardFn = std::function<void(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows, int64_t step)>;

DecodeResult decode(Model& model, const DecodeRequest& req, const DecodeOptions& opts,
                    const std::atomic<bool>* abort, const std::function<void(const DecodeProgress&)>& progress,
                    const ForwardFn& forward = {});

}  // namespace jg::cpu
