#include "layout.h"

#include "check.h"

namespace jg {

ParamLayout::ParamLayout(const ModelConfig& cfg) {
  const int64_t d = cfg.d_model, kv = cfg.kv_dim(), mlp = cfg.mlp_hidden, V = cfg.embedding_size;
  wte = add("model.transformer.wte.weight", {V, d});
  for (int64_t i = 0; i < cfg.n_layers; i++) {
    const std::string p = str_cat("model.transformer.blocks.", i, ".");
    LayerParams l;
    l.attn_norm = add(p + "attn_norm.weight", {d});
    l.q_proj = add(p + "q_proj.weight", {d, d});
    l.k_proj = add(p + "k_proj.weight", {kv, d});
    l.v_proj = add(p + "v_proj.weight", {kv, d});
    l.attn_out = add(p + "attn_out.weight", {d, d});
    l.ff_norm = add(p + "ff_norm.weight", {d});
    l.ff_proj = add(p + "ff_proj.weight", {mlp, d});
    l.up_proj = add(p + "up_proj.weight", {mlp, d});
    l.ff_out = add(p + "ff_out.weight", {d, mlp});
    layers.push_back(l);
  }
  ln_f = add("model.transformer.ln_f.weight", {d});
  lm_head = add("model.transformer.ff_out.weight", {V, d});
}

int64_t ParamLayout::add(const std::string& name, std::vector<int64_t> shape) {
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  // Keep every tensor 64-byte aligned inside the block.
  int64_t offset = (total_ + 15) / 16 * 16;
  index_[name] = params_.size();
  params_.push_back({name, std::move(shape), offset, numel});
  total_ = offset + numel;
  return offset;
}

const ParamInfo* ParamLayout::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}

}  // namespace jg
