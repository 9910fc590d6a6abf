// LLaDA's config.json, validated and normalised. The field names are LLaDA's (snake_case) on disk
// and camelCase in TypeScript.
import { z } from 'zod';

import { ConfigError } from './errors.js';

/** The normalised model configuration, as `model.config`. */
export type ModelConfig = {
  dModel: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  mlpHiddenSize: number;
  /** Ids a tokenizer may produce; token ids must be below it. */
  vocabSize: number;
  /** Rows of the embedding and the LM head (>= vocabSize); logits span it. */
  embeddingSize: number;
  maxSequenceLength: number;
  ropeTheta: number;
  rmsNormEps: number;
  maskTokenId: number;
  eosTokenId: number | null;
  padTokenId: number | null;
  bosTokenId: number | null;
};

const int = (min: number) => z.number().int().min(min);
const optionalId = int(0).nullish();

const rawSchema = z.looseObject({
  d_model: int(1),
  n_layers: int(0),
  n_heads: int(1),
  n_kv_heads: int(1).nullish(),
  mlp_hidden_size: int(1).nullish(),
  mlp_ratio: z.number().positive().nullish(),
  vocab_size: int(1),
  embedding_size: int(1).nullish(),
  max_sequence_length: int(1),
  rope_theta: z.number().positive(),
  rms_norm_eps: z.number().positive().nullish(),
  mask_token_id: int(0),
  eos_token_id: optionalId,
  pad_token_id: optionalId,
  bos_token_id: optionalId,
  // Architecture switches the engine implements one value of; other values are refused.
  weight_tying: z.literal(false).nullish(),
  include_bias: z.literal(false).nullish(),
  include_qkv_bias: z.literal(false).nullish(),
  block_type: z.literal('llama').nullish(),
  activation_type: z.enum(['silu', 'swiglu']).nullish(),
  layer_norm_type: z.enum(['rms', 'rmsnorm', 'default', 'low_precision_rms']).nullish(),
  rope: z.literal(true).nullish(),
  alibi: z.literal(false).nullish(),
  clip_qkv: z.null().optional(),
  attention_layer_norm: z.literal(false).nullish(),
  scale_logits: z.literal(false).nullish(),
  multi_query_attention: z.literal(false).nullish(),
  layer_norm_with_affine: z.literal(true).nullish(),
  bias_for_layer_norm: z.literal(false).nullish(),
  input_emb_norm: z.literal(false).nullish(),
});

export type RawModelConfig = z.input<typeof rawSchema>;

/** Validates a parsed config.json and returns the normalised config. `source` names the file in errors. */
export function parseModelConfig(raw: unknown, source = 'config.json'): ModelConfig {
  checkNesting(raw, source);
  const r = rawSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const field = issue.path.join('.') || '(root)';
    const got = issue.path.reduce<unknown>((o, k) => (o as Record<PropertyKey, unknown> | undefined)?.[k], raw);
    throw new ConfigError(
      `${source}: field \`${field}\` is invalid (${issue.message}); found ${JSON.stringify(got) ?? 'nothing'}`,
    );
  }
  const c = r.data;
  const nKvHeads = c.n_kv_heads ?? c.n_heads;
  const mlp = c.mlp_hidden_size ?? (c.mlp_ratio ? Math.round(c.mlp_ratio * c.d_model) : undefined);
  const fail = (msg: string) => {
    throw new ConfigError(`${source}: ${msg}`);
  };
  if (mlp === undefined) fail('one of `mlp_hidden_size` or `mlp_ratio` is required');
  if (mlp !== undefined && !(Number.isSafeInteger(mlp) && mlp >= 1))
    fail(`\`mlp_ratio\` (${c.mlp_ratio}) times \`d_model\` (${c.d_model}) rounds to ${mlp}, not a usable MLP size (a positive integer below 2^53)`);
  if (c.d_model % c.n_heads !== 0) fail(`\`d_model\` (${c.d_model}) must be divisible by \`n_heads\` (${c.n_heads})`);
  if (c.n_heads % nKvHeads !== 0) fail(`\`n_heads\` (${c.n_heads}) must be divisible by \`n_kv_heads\` (${nKvHeads})`);
  const headDim = c.d_model / c.n_heads;
  if (headDim % 2 !== 0) fail(`the head dimension d_model / n_heads (${headDim}) must be even for RoPE`);
  const embeddingSize = c.embedding_size ?? c.vocab_size;
  if (embeddingSize < c.vocab_size)
    fail(`\`embedding_size\` (${embeddingSize}) must be at least \`vocab_size\` (${c.vocab_size})`);
  if (c.mask_token_id >= c.vocab_size)
    fail(`\`mask_token_id\` (${c.mask_token_id}) must be below \`vocab_size\` (${c.vocab_size})`);
  return {
    dModel: c.d_model,
    nLayers: c.n_layers,
    nHeads: c.n_heads,
    nKvHeads,
    headDim,
    mlpHiddenSize: mlp!,
    vocabSize: c.vocab_size,
    embeddingSize,
    maxSequenceLength: c.max_sequence_length,
    ropeTheta: c.rope_theta,
    rmsNormEps: c.rms_norm_eps ?? 1e-5,
    maskTokenId: c.mask_token_id,
    eosTokenId: c.eos_token_id ?? null,
    padTokenId: c.pad_token_id ?? null,
    bosTokenId: c.bos_token_id ?? null,
  };
}

/** Deepest nesting of objects and arrays a config.json may have (real ones nest 3 or 4 levels). */
export const MAX_CONFIG_DEPTH = 64;

/**
 * Refuses a config nested deeper than MAX_CONFIG_DEPTH, naming the field: unknown fields are kept
 * and written back into every checkpoint, and JSON.stringify of a very deep value overflows the
 * stack, which would fail each checkpoint write after training ran. Walks without recursion.
 */
function checkNesting(raw: unknown, source: string): void {
  const stack: { value: unknown; path: string[] }[] = [{ value: raw, path: [] }];
  while (stack.length > 0) {
    const { value, path } = stack.pop()!;
    if (typeof value !== 'object' || value === null) continue;
    if (path.length >= MAX_CONFIG_DEPTH) {
      const shown = path.length > 6 ? `${path.slice(0, 3).join('.')}...${path.slice(-2).join('.')}` : path.join('.');
      throw new ConfigError(`${source}: field \`${shown}\` is nested more than ${MAX_CONFIG_DEPTH} levels deep (under \`${path[0]}\`); model configs nest a few levels`);
    }
    for (const [k, v] of Object.entries(value)) stack.push({ value: v, path: [...path, k] });
  }
}

/** A config.json in LLaDA's layout for a normalised config (what `model.save` writes for new models). */
export function toRawConfig(c: ModelConfig): Record<string, unknown> {
  return {
    architectures: ['LLaDAModelLM'],
    model_type: 'llada',
    d_model: c.dModel,
    n_layers: c.nLayers,
    n_heads: c.nHeads,
    n_kv_heads: c.nKvHeads,
    mlp_hidden_size: c.mlpHiddenSize,
    mlp_ratio: c.mlpHiddenSize / c.dModel,
    vocab_size: c.vocabSize,
    embedding_size: c.embeddingSize,
    max_sequence_length: c.maxSequenceLength,
    rope_theta: c.ropeTheta,
    rms_norm_eps: c.rmsNormEps,
    mask_token_id: c.maskTokenId,
    eos_token_id: c.eosTokenId,
    pad_token_id: c.padTokenId,
    bos_token_id: c.bosTokenId,
    activation_type: 'silu',
    block_type: 'llama',
    layer_norm_type: 'rms',
    weight_tying: false,
    include_bias: false,
    include_qkv_bias: false,
    rope: true,
    alibi: false,
    attention_layer_norm: false,
    scale_logits: false,
    layer_norm_with_affine: true,
    bias_for_layer_norm: false,
    input_emb_norm: false,
    torch_dtype: 'float32',
  };
}
