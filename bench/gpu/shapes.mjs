// Model shapes and the arithmetic of a forward pass, shared by bench.mjs and report.mjs (and
// mirrored in torch_bench.py): what a call costs in FLOPs and bytes, so the report can say how close
// a run came to the card's limits.
export const PRESETS = {
  // LLaDA-8B (DESIGN.md): d 4096, 32 layers, 32 heads (32 kv), mlp 12288, vocab 126464.
  llada8b: { d: 4096, layers: 32, heads: 32, kv: 32, mlp: 12288, vocab: 126464 },
  small: { d: 1024, layers: 8, heads: 16, kv: 16, mlp: 2816, vocab: 32768 },
  tiny: { d: 128, layers: 2, heads: 4, kv: 4, mlp: 256, vocab: 512 },
};

/** The raw config.json of a preset (what parseModelConfig reads). */
export function rawConfig(p, maxLen = 4096) {
  return {
    d_model: p.d, n_layers: p.layers, n_heads: p.heads, n_kv_heads: p.kv, mlp_hidden_size: p.mlp,
    vocab_size: p.vocab, embedding_size: p.vocab, max_sequence_length: maxLen, mask_token_id: p.vocab - 128,
    eos_token_id: p.vocab - 383, pad_token_id: p.vocab - 383, bos_token_id: p.vocab - 384,
    rope_theta: 500000, rms_norm_eps: 1e-5, activation_type: 'silu', block_type: 'llama', model_type: 'llada',
  };
}

export function numParams(p) {
  const hd = p.d / p.heads;
  const layer = 2 * p.d + p.d * p.d * 2 + 2 * p.kv * hd * p.d + 3 * p.d * p.mlp;
  return p.layers * layer + 2 * p.vocab * p.d + p.d;
}

/**
 * FLOPs of one forward over `tokens` tokens in sequences of length T, with the LM head at `rows` rows:
 * the projections and the MLP per token, attention's scores and weighted sum (4 T d per token per
 * layer, bidirectional: every row sees T keys), and the head.
 */
export function forwardFlops(p, tokens, T, rows) {
  const hd = p.d / p.heads;
  const perToken = 2 * (2 * p.d * p.d + 2 * p.d * p.kv * hd + 3 * p.d * p.mlp);
  const attention = 4 * T * p.d;
  return p.layers * tokens * (perToken + attention) + 2 * rows * p.d * p.vocab;
}

/** Bytes a forward must move at least: every weight once (bf16) and the layer activations twice. */
export function forwardBytes(p, tokens, bytesPerWeight = 2) {
  const acts = p.layers * tokens * (6 * p.d + 3 * p.mlp) * 2 * 2;
  return numParams(p) * bytesPerWeight + acts;
}

// Dense bf16 tensor-core peak by the vendor's datasheet (SXM parts), TFLOP/s, and HBM bandwidth, TB/s.
export const DATASHEET = {
  H200: { bf16: 989, hbm: 4.8 },
  H100: { bf16: 989, hbm: 3.35 },
  A100: { bf16: 312, hbm: 2.0 },
};

export function datasheetFor(name) {
  for (const [k, v] of Object.entries(DATASHEET)) if (String(name).includes(k)) return { card: k, ...v };
  return null;
}
