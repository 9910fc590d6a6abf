// The model's parameters, by LLaDA's Hugging Face tensor names, in one contiguous fp32 block.
// Every backend and the checkpoint code go through this table; nothing else knows the names.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "config.h"

namespace jg {

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // in elements, from the start of the block
  int64_t numel = 0;
};

// Offsets of one transformer block's tensors.
struct LayerParams {
  int64_t attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj, up_proj, ff_out;
};

class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& cfg);

  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo* find(const std::string& name) const;
  int64_t total() const { return total_; }

  int64_t wte, ln_f, lm_head;
  std::vector<LayerParams> layers;

 private:
  int64_t add(const std::string& name, std::vector<int64_t> shape);

  std::vector<ParamInfo> params_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;
};

}  // namespace jg
