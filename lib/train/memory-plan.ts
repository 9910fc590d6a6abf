// The GPU memory a training run needs, from the model's shape and the run's options, before
// anything is allocated: weights, fp32 master weights, AdamW moments, gradients, the rollout's
// forward activations, the loss's saved activations and backward temporaries (the same layout
// native/cuda/training.cpp carves, piece by piece), and the fixed extras. Printed before GPU
// training starts (by rank 0: the figures are per rank); says whether the run fits a given card and
// what to change when it does not. With zeroStage 1 over several ranks each holds the AdamW moments
// of its block of the parameters only (OptimizerShard in native/common/backend.h).
import type { ModelConfig } from '../config.js';

/** The shapes of a training run on the GPU. */
export type MemoryPlanOptions = {
  /** Weights and activations. Defaults to `'bf16'`. */
  dtype?: 'bf16' | 'fp32';
  /** Keep only each layer's input and recompute the layer in backward. Defaults to `false`. */
  checkpointActivations?: boolean;
  /** Sequences decoded together in one rollout (JustGRPO: promptsPerStep x numGenerations). Defaults to `0` (no rollout: SFT). */
  rolloutSequences?: number;
  /** Tokens of one rollout sequence (prompt + completion). Defaults to `0`. */
  rolloutLength?: number;
  /** Tokens of one loss call's packed batch (maxTokensPerBatch). Defaults to `16384`. */
  lossTokens?: number;
  /** LM-head rows of one loss call. Defaults to lossTokens / rolloutLength (one row per JustGRPO input), or lossTokens when there is no rollout. */
  lossRows?: number;
  /** Bytes of the rollout's activations kept for the loss (reuseRolloutMemoryMB: the budget, an upper bound). Defaults to `0`. */
  keptBytes?: number;
  /** Data-parallel ranks (one GPU each). Defaults to `1`. */
  ranks?: number;
  /** 1: the AdamW moments sharded over the ranks (ZeRO-1). Defaults to `0`. */
  zeroStage?: 0 | 1;
};

export type MemoryPlan = {
  /** Bytes of each part. */
  weights: number;
  masterWeights: number;
  /** This rank's AdamW moments: all of them, or with zeroStage 1 its shard's. */
  moments: number;
  gradients: number;
  keptActivations: number;
  /** The rollout's forward buffers (they stay allocated through the loss). */
  rolloutWorkspace: number;
  /** The loss call's saved activations and backward temporaries. */
  lossWorkspace: number;
  /** lossWorkspace with activation checkpointing (for the advice). */
  lossWorkspaceCheckpointed: number;
  /** cuBLAS workspace, RoPE table and staging. */
  fixed: number;
  total: number;
  /** Parameters counted. */
  params: number;
  /** The parameters whose moments this rank holds (params, or its shard's block under zeroStage 1). */
  momentParams: number;
};

/** The LM head's rows per chunk (native/cuda/training.cpp kHeadChunkFloats, grid limit 65535). */
const HEAD_CHUNK_FLOATS = 2 ** 24;
const CUBLAS_WORKSPACE = 32 * 2 ** 20;
const STAGING = 2 * 16 * 2 ** 20;
const GB = 1e9;

/** Parameters of a LLaDA model: embedding and untied head (embeddingSize x d), per layer two norms, four attention and three MLP matrices, ln_f. */
export function parameterCount(c: Pick<ModelConfig, 'dModel' | 'nLayers' | 'nHeads' | 'nKvHeads' | 'mlpHiddenSize' | 'embeddingSize'>): number {
  const d = c.dModel, kv = (d / c.nHeads) * c.nKvHeads, mlp = c.mlpHiddenSize;
  const layer = 2 * d + 2 * d * d + 2 * kv * d + 3 * mlp * d;
  return 2 * c.embeddingSize * d + c.nLayers * layer + d;
}

/**
 * Bytes of one loss call's workspace on the GPU: cuda::Training::plan's pieces, each rounded up to
 * 256 bytes, for N tokens and R rows.
 */
export function lossWorkspaceBytes(
  c: Pick<ModelConfig, 'dModel' | 'nLayers' | 'nHeads' | 'nKvHeads' | 'mlpHiddenSize' | 'embeddingSize'>,
  dtype: 'bf16' | 'fp32', checkpoint: boolean, N: number, R: number,
): number {
  const es = dtype === 'bf16' ? 2 : 4;
  const d = c.dModel, H = c.nHeads, kv = (d / c.nHeads) * c.nKvHeads, mlp = c.mlpHiddenSize, V = c.embeddingSize, L = c.nLayers;
  const qkd = d + 2 * kv;
  let used = 0;
  const take = (bytes: number) => (used += Math.ceil(bytes / 256) * 256);
  for (let l = 0; l <= L; l++) take(N * d * 4);
  const sets = checkpoint ? Math.min(L, 1) : L;
  for (let l = 0; l < sets; l++) {
    for (const b of [N * d * es, N * 4, N * qkd * es, N * d * es, N * H * 4, N * d * 4, N * d * es, N * 4, N * 2 * mlp * es, N * mlp * es]) take(b);
  }
  take(R * d * 4);
  take(R * d * es);
  take(R * 4);
  const chunk = Math.max(1, Math.min(R, Math.floor(HEAD_CHUNK_FLOATS / Math.max(V, 1)), 65535));
  take(chunk * V * 4);
  if (es !== 4) take(chunk * V * es);
  for (const b of [R * 4, R * 4, R * 4, R * 8, R]) take(b);
  for (const b of [R * d * 4, R * d * 4, N * d * 4, N * d * 4, N * d * 4, N * qkd * 4, N * mlp * 4, N * 2 * mlp * 4]) take(b);
  if (es !== 4) take(Math.max(R * d, N * qkd, N * 2 * mlp) * es);
  return used;
}

/** The rollout's forward buffers (cuda::Model::run_layers and head, and the decoder's logits) for S sequences of T tokens, one row each. */
function rolloutBytes(c: Pick<ModelConfig, 'dModel' | 'nHeads' | 'nKvHeads' | 'mlpHiddenSize' | 'embeddingSize'>, es: number, S: number, T: number): number {
  const d = c.dModel, kv = (d / c.nHeads) * c.nKvHeads, mlp = c.mlpHiddenSize, N = S * T;
  return N * d * 4 + N * es * (d + d + 2 * kv + d + 2 * mlp + mlp) + S * d * (4 + es) + S * c.embeddingSize * 4 + N * 16;
}

export function memoryPlan(config: ModelConfig | Parameters<typeof lossWorkspaceBytes>[0], options: MemoryPlanOptions = {}): MemoryPlan {
  const dtype = options.dtype ?? 'bf16';
  const es = dtype === 'bf16' ? 2 : 4;
  const params = parameterCount(config);
  const S = options.rolloutSequences ?? 0, T = options.rolloutLength ?? 0;
  const N = options.lossTokens ?? 16384;
  const R = options.lossRows ?? (T > 0 ? Math.max(1, Math.floor(N / T)) : N);
  const weights = params * es;
  const masterWeights = dtype === 'bf16' ? params * 4 : 0;
  const momentParams = shardElements(params, options.ranks ?? 1, options.zeroStage ?? 0);
  const moments = momentParams * 8;
  const gradients = params * 4;
  const keptActivations = options.keptBytes ?? 0;
  const rolloutWorkspace = S > 0 && T > 0 ? rolloutBytes(config, es, S, T) : 0;
  const lossWorkspace = lossWorkspaceBytes(config, dtype, options.checkpointActivations ?? false, N, R);
  const lossWorkspaceCheckpointed = lossWorkspaceBytes(config, dtype, true, N, R);
  const maxLen = 'maxSequenceLength' in config ? (config as ModelConfig).maxSequenceLength : 4096;
  const fixed = CUBLAS_WORKSPACE + STAGING + maxLen * (config.dModel / config.nHeads) * 4;
  const total = weights + masterWeights + moments + gradients + keptActivations + rolloutWorkspace + lossWorkspace + fixed;
  return { weights, masterWeights, moments, gradients, keptActivations, rolloutWorkspace, lossWorkspace, lossWorkspaceCheckpointed, fixed, total, params, momentParams };
}

/**
 * Elements of the optimizer state one rank holds: all `params`, or under zeroStage 1 with several
 * ranks the block OptimizerShard::of gives (ceil(params / ranks) rounded up to 64 elements).
 */
export function shardElements(params: number, ranks: number, zeroStage: 0 | 1): number {
  if (zeroStage !== 1 || ranks <= 1) return params;
  return Math.ceil(Math.ceil(params / ranks) / 64) * 64;
}

/** What to change when `plan` does not fit `capacity` bytes, largest saving first; empty when it fits. */
export function memoryAdvice(plan: MemoryPlan, options: MemoryPlanOptions, capacity: number): string[] {
  if (plan.total <= capacity) return [];
  const out: string[] = [];
  const state = plan.weights + plan.masterWeights + plan.moments + plan.gradients;
  if (state > capacity) {
    // No batch setting helps: the advice is about the state only.
    out.push(
      `the parameters' state alone (weights ${fmt(plan.weights)}, master ${fmt(plan.masterWeights)}, AdamW moments ` +
        `${fmt(plan.moments)}, gradients ${fmt(plan.gradients)}) is ${fmt(state)}: no batch setting fits; ` +
        (plan.momentParams === plan.params
          ? 'this needs zeroStage 1 over several GPUs (each holds its share of the AdamW moments), optimizer state in bf16 or 8 bits (not offered yet), or a smaller model'
          : 'this needs more ranks, optimizer state in bf16 or 8 bits (not offered yet), or a smaller model'),
    );
    const fp32State = plan.params * 8 + plan.moments;
    if ((options.dtype ?? 'bf16') === 'bf16' && fp32State < capacity)
      out.push(`or dtype 'fp32', which needs no separate master copy (${fmt(fp32State)} of state instead of ${fmt(state)}) but runs the products in fp32`);
    return out;
  }
  if (plan.keptActivations > capacity / 20)
    out.push(`lower reuseRolloutMemoryMB (the rollout may keep ${fmt(plan.keptActivations)} of activations for the loss)`);
  if (plan.rolloutWorkspace > capacity / 10)
    out.push(`the rollout decodes all sequences at once (${fmt(plan.rolloutWorkspace)}): lower promptsPerStep and raise gradientAccumulationSteps`);
  if (!options.checkpointActivations && plan.lossWorkspace - plan.lossWorkspaceCheckpointed > capacity / 50)
    out.push(`checkpointActivations: true (the loss workspace falls from ${fmt(plan.lossWorkspace)} to ${fmt(plan.lossWorkspaceCheckpointed)})`);
  if (plan.lossWorkspace > capacity / 20) out.push(`lower maxTokensPerBatch (the loss workspace is ${fmt(plan.lossWorkspace)} at ${options.lossTokens ?? 16384} tokens)`);
  return out;
}

export function fmt(bytes: number): string {
  return `${(bytes / GB).toFixed(1)} GB`;
}

/** The plan as printed before GPU training starts, with a verdict for each card size. */
export function formatMemoryPlan(plan: MemoryPlan, options: MemoryPlanOptions, cards: { name: string; bytes: number }[]): string {
  const ranks = options.ranks ?? 1;
  const rows: [string, number][] = [
    ['weights', plan.weights], ['fp32 master weights', plan.masterWeights],
    [plan.momentParams < plan.params ? `AdamW moments (1/${ranks})` : 'AdamW moments', plan.moments],
    ['gradients', plan.gradients], ['kept rollout activations', plan.keptActivations], ['rollout workspace', plan.rolloutWorkspace],
    ['loss workspace', plan.lossWorkspace], ['cuBLAS, RoPE, staging', plan.fixed],
  ];
  const count = plan.params >= 1e9 ? `${(plan.params / 1e9).toFixed(2)}B` : `${(plan.params / 1e6).toFixed(2)}M`;
  const per = ranks > 1 ? `, per rank of ${ranks}${plan.momentParams < plan.params ? ', zeroStage 1: AdamW moments sharded' : ''}` : '';
  const lines = [`GPU memory plan (${count} parameters, ${options.dtype ?? 'bf16'}${options.checkpointActivations ? ', activation checkpointing' : ''}${per}):`];
  for (const [name, b] of rows) lines.push(`  ${name.padEnd(26)} ${fmt(b).padStart(10)}`);
  lines.push(`  ${'total'.padEnd(26)} ${fmt(plan.total).padStart(10)}`);
  for (const card of cards) {
    const advice = memoryAdvice(plan, options, card.bytes);
    lines.push(advice.length === 0 ? `  fits ${card.name}` : `  does not fit ${card.name}: ${advice.join('; ')}`);
  }
  return lines.join('\n');
}
