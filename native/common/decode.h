// Decoding, written once for every backend: one full forward pass per step (no KV cache:
// bidirectional attention makes a cache inexact). AR-order rollout is block decoding with
// block_length 1 and steps = gen_length. The loop (decode.cpp) keeps the canvases, the transfer
// schedule and the commit bookkeeping; each step's work on the model (forward of the active
// canvases, guidance, sampling, the choice of rows to commit) is one Backend::decode_step call.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "batch.h"
#include "config.h"
#include "sampling.h"

namespace jg {

class Backend;

// LLaDA's decoders: low-confidence remasking, random order, and Fast-dLLM's confidence threshold.
enum class Decoder { LOW_CONFIDENCE, RANDOM, THRESHOLD };
enum class Confidence { PROBABILITY, MARGIN, ENTROPY };

struct DecodeOptions {
  Decoder decoder = Decoder::LOW_CONFIDENCE;
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

// The forward pass of decoding step `step` (0, 1, ...) in place of the backend's own: logits
// (n_rows, embedding_size) at `rows`, where the backend's decode step keeps them (the host on the
// CPU, the device on CUDA: a hook comes from the same backend's Training). A trainer's rollout passes one that keeps the
// step's activations for the loss.
using ForwardHook = std::function<void(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows, int64_t step)>;

// One decoding step, as the loop hands it to a backend.
struct DecodeStep {
  Batch batch;          // the active canvases, then (guided) their unconditional twins, in the same order
  const int32_t* rows;  // n_rows conditional rows (the masked positions of each canvas's current
  int64_t n_rows;       // block, in position order), then (guided) the same rows of the twins
  bool guided;          // logits = uncond + scale * (cond - uncond)
  float guidance_scale;
  // Sampling: row r draws from its key; it excludes excluded[0 .. n_early) when early[r] is 1 (below
  // min_new_tokens: the mask token and the stop ids), else excluded[0 .. n_all) (the mask token).
  const uint64_t* keys;  // (n_rows) row_key(sequence seed, the sequence's step, position)
  const uint8_t* early;  // (n_rows)
  const int32_t* excluded;
  int n_all, n_early;
  double temperature;
  // The choice of rows to commit, per active sequence a: its rows are row_begin[a] .. row_begin[a+1].
  const int32_t* row_begin;  // (n_seqs + 1)
  int64_t n_seqs;
  ConfidenceKind confidence;
  uint64_t random_index;  // the draw index of RANDOM's uniform (one no token uses)
  bool use_threshold;     // THRESHOLD's rule, else the schedule's count k_sched[a]
  double threshold;
  const int32_t* k_sched;  // (n_seqs)
  int64_t step;                // the loop's step, for `forward`
  const ForwardHook* forward;  // null: the backend's own forward
};

// A step's outcome on the host: every row's sample, whether it is committed, and how many rows each
// sequence commits.
struct DecodeStepResult {
  std::vector<RowSample> samples;  // (n_rows)
  std::vector<uint8_t> commit;     // (n_rows) 0/1
  std::vector<int32_t> k;          // (n_seqs)
};

// The commit rule on the host (the CPU backend's, and the reference the CUDA kernel is tested
// against): a sequence's rows ranked by confidence, highest first, ties to the lower position (a
// stable sort); the first k of that order are committed. Threshold rule: k = max(1, rows with
// confidence >= threshold); schedule: k = min(rows, k_sched[a]). RANDOM's confidence is
// uniform_open(keys[r], random_index), independent of the Gumbel noise.
void select_commits(uint8_t* commit, int32_t* k, const RowSample* samples, const uint64_t* keys,
                    const int32_t* row_begin, int64_t n_seqs, ConfidenceKind confidence, uint64_t random_index,
                    bool use_threshold, double threshold, const int32_t* k_sched);

// Decodes every sequence of the request on `backend`. `abort` is polled between steps (the call
// then throws ABORTED); `progress` is called after each step; `forward` replaces the backend's
// forward pass (see ForwardHook).
DecodeResult decode(Backend& backend, const DecodeRequest& req, const DecodeOptions& opts,
                    const std::atomic<bool>* abort, const std::function<void(const DecodeProgress&)>& progress,
                    const ForwardHook& forward = {});

}  // namespace jg
