import { describe, expect, it } from 'vitest';

import { ConfigError, parseModelConfig, toRawConfig } from '../../lib/index.js';

// LLaDA-8B-Instruct's config.json, the fields that matter.
const LLADA_8B = {
  activation_type: 'silu', alibi: false, attention_layer_norm: false, block_type: 'llama', d_model: 4096,
  embedding_size: 126464, eos_token_id: 126081, include_bias: false, include_qkv_bias: false,
  input_emb_norm: false, layer_norm_type: 'rms', layer_norm_with_affine: true, mask_token_id: 126336,
  max_sequence_length: 4096, mlp_hidden_size: 12288, mlp_ratio: 4, multi_query_attention: null, n_heads: 32,
  n_kv_heads: 32, n_layers: 32, pad_token_id: 126081, rms_norm_eps: 1e-5, rope: true, rope_theta: 500000,
  scale_logits: false, vocab_size: 126464, weight_tying: false, clip_qkv: null, model_type: 'llada',
};

describe('parseModelConfig', () => {
  it("normalises LLaDA-8B's config", () => {
    const c = parseModelConfig(LLADA_8B);
    expect(c).toMatchObject({ dModel: 4096, nLayers: 32, nHeads: 32, nKvHeads: 32, headDim: 128, mlpHiddenSize: 12288,
      vocabSize: 126464, embeddingSize: 126464, maskTokenId: 126336, eosTokenId: 126081, ropeTheta: 500000 });
  });

  it('fills n_kv_heads, embedding_size and mlp_hidden_size from their fallbacks', () => {
    const { n_kv_heads: _a, embedding_size: _b, mlp_hidden_size: _c, ...rest } = LLADA_8B;
    const c = parseModelConfig({ ...rest, n_kv_heads: null });
    expect([c.nKvHeads, c.embeddingSize, c.mlpHiddenSize]).toEqual([32, 126464, 16384]);
  });

  it('round-trips through toRawConfig', () => {
    const c = parseModelConfig(LLADA_8B);
    expect(parseModelConfig(toRawConfig(c))).toEqual(c);
  });

  it.each([
    [{ rope_theta: -1 }, /field `rope_theta`/],
    [{ n_layers: 2.5 }, /field `n_layers`.*2\.5/],
    [{ clip_qkv: 8 }, /field `clip_qkv`/],
    [{ block_type: 'sequential' }, /field `block_type`/],
    [{ mask_token_id: 126464 }, /`mask_token_id` \(126464\) must be below `vocab_size`/],
    [{ n_kv_heads: 5 }, /`n_heads` \(32\) must be divisible by `n_kv_heads` \(5\)/],
    [{ embedding_size: 100 }, /`embedding_size` \(100\) must be at least `vocab_size`/],
  ])('refuses %o', (patch, message) => {
    expect(() => parseModelConfig({ ...LLADA_8B, ...patch }, 'x/config.json')).toThrow(ConfigError);
    expect(() => parseModelConfig({ ...LLADA_8B, ...patch }, 'x/config.json')).toThrow(message);
  });
});
