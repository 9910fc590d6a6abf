// The config of `justgrpo train` (JustGRPO): names after TRL's GRPOConfig, defaults after JustGRPO.
import { z } from 'zod';
import { dataSourceSchema } from './datasource.js';

import { BF16_ALIAS, type ExtraAlias } from '../configfile.js';
import { ConfigError } from '../errors.js';
import { LOSS_TYPES } from './advantages.js';
import { modelSchema, parseConfig } from './run.js';

export const grpoConfigSchema = z.strictObject({
  /** A Hugging Face LLaDA directory, or `{init: {...}}` for a random model with the character tokenizer. */
  model: modelSchema,
  data: z.strictObject({
    /** JSONL or a Hub data set (hf://datasets/owner/name or {hub, config, split}); the prompt is `prompt` or `question`; every other column reaches the reward functions. */
    train: dataSourceSchema,
    onBadLine: z.enum(['stop', 'skip']).default('stop'),
    /** Wrap prompts in the chat template as a user message; defaults to whether the tokenizer has one. */
    chatTemplate: z.boolean().optional(),
    /** Prompts longer than this many tokens: an error, or dropped. */
    overlong: z.enum(['error', 'skip']).default('error'),
  }),
  /** Built-in rewards by name ('gsm8k', 'math') and/or functions exported by `rewardModule`. */
  rewardFunctions: z.array(z.string()).min(1).default(['gsm8k']),
  /** A JavaScript module whose named exports are reward functions, relative to the config file. */
  rewardModule: z.string().optional(),
  /** One weight per reward function; defaults to 1 each. */
  rewardWeights: z.array(z.number()).optional(),
  /** Map 0/1 rewards to -1/+1 as JustGRPO does (advantages are unchanged; the reward metric is not). */
  signedRewards: z.boolean().default(false),
  /**
   * A reward function that throws, returns the wrong length, or non-finite values: stop ('error'),
   * score those samples 0 and count them ('zero'), or skip the step's update and count it ('skip').
   */
  onRewardError: z.enum(['error', 'zero', 'skip']).default('error'),
  /** Seconds a reward function may take per call; past it the call counts as failed (onRewardError). */
  rewardTimeout: z.number().positive().default(600),
  /** Completions per prompt (G). */
  numGenerations: z.number().int().min(2).default(16),
  /** Prompts per rollout batch. */
  promptsPerStep: z.number().int().positive().default(64),
  /** Rollout batches per optimizer step. */
  gradientAccumulationSteps: z.number().int().positive().default(1),
  /** Tokens generated per completion (the AR rollout's gen_length). */
  maxCompletionLength: z.number().int().positive().default(256),
  temperature: z.number().min(0).default(1.0),
  learningRate: z.number().positive().default(5e-6),
  lrSchedulerType: z.enum(['constant', 'linear', 'cosine']).default('constant'),
  warmupSteps: z.number().int().min(0).default(0),
  adamBeta1: z.number().min(0).lt(1).default(0.9),
  adamBeta2: z.number().min(0).lt(1).default(0.999),
  adamEpsilon: z.number().positive().default(1e-8),
  weightDecay: z.number().min(0).default(0),
  maxGradNorm: z.number().min(0).default(1.0),
  /**
   * Optimizer-state sharding across data-parallel ranks (ZeRO stage 1): 0 keeps the whole AdamW
   * state on every rank; 1 gives each rank the moments of 1/ranks of the parameters (the gradients
   * are reduce-scattered, each rank updates its share, the weights are all-gathered). Same updates
   * to fp32 round-off; one rank: nothing to share (no effect).
   */
  zeroStage: z.literal([0, 1]).default(0),
  /** Non-finite gradient values: zeroed and counted (JustGRPO's reference), or the step skipped and counted. */
  nonFiniteGradients: z.enum(['zero', 'skip']).default('zero'),
  /** Stop (before applying the step, keeping the last checkpoint) when |loss| exceeds this; a non-finite loss always stops. */
  maxLoss: z.number().positive().optional(),
  /** Optimizer passes over each rollout batch, all against the rollout's own log-probs. */
  numIterations: z.number().int().positive().default(1),
  epsilon: z.number().positive().default(0.2),
  /** Upper clip; defaults to epsilon. */
  epsilonHigh: z.number().positive().optional(),
  /** KL coefficient against a frozen reference model (k3 estimator); 0 = none. */
  beta: z.number().min(0).default(0),
  /** The reference model for beta > 0; defaults to the starting model. */
  refModel: z.string().optional(),
  /**
   * How per-token terms are summed into the loss: 'justgrpo' (the paper's: 1 / (L x completions with
   * a nonzero advantage)), or TRL's 'grpo' (per-sequence token mean, then the mean), 'bnpo' (active
   * tokens of the local batch), 'dr_grpo' (L x batch size), 'dapo' (active tokens of the whole
   * accumulated batch). Formulas: lib/train/advantages.ts, tokenWeights.
   */
  lossType: z.enum(LOSS_TYPES).default('justgrpo'),
  scaleRewards: z.enum(['group', 'batch', 'none']).default('group'),
  /** Completions that never end (no end-of-text / end-of-turn token) get advantage 0. */
  maskTruncatedCompletions: z.boolean().default(false),
  /** Train on K random positions per completion (weighted L / K, unbiased); all positions when unset. */
  lossPositions: z.number().int().positive().optional(),
  /**
   * MiB of the rollout's activations kept for the loss. With the learner's weights unchanged since
   * the rollout (the first optimizer pass), the loss's input at (completion, t) is exactly what
   * the sampler fed at step t, so the loss runs backward through the kept activations instead of
   * running the forward again. Steps beyond the budget, and later passes, recompute. 0 turns it off.
   */
  reuseRolloutMemoryMB: z.number().min(0).default(4096),
  /** Tokens per forward/backward of the loss (the memory budget of the packed (sample, t) batch). */
  maxTokensPerBatch: z.number().int().positive().default(16384),
  /**
   * Compute dtype of the model: 'fp32' (exact), or 'bf16' (the CPU's matrix products with bf16
   * inputs and fp32 sums through oneDNN; fp32 master weights, optimizer and everything else).
   */
  dtype: z.enum(['fp32', 'bf16']).default('fp32'),
  /** Where the model trains: 'cpu', or 'cuda' (the GPU; its memory plan is printed before training starts). */
  backend: z.enum(['cpu', 'cuda']).default('cpu'),
  checkpointActivations: z.boolean().default(false),
  maxSteps: z.number().int().positive().default(125),
  seed: z.number().int().min(0).default(0),
  outputDir: z.string().default('runs/grpo'),
  saveSteps: z.number().int().positive().default(25),
  saveTotalLimit: z.number().int().positive().default(2),
  loggingSteps: z.number().int().positive().default(1),
  /** Every logging step, append each completion with its prompt, rewards and advantage to completions.jsonl in outputDir (TRL's log_completions). */
  logCompletions: z.boolean().default(false),
  /** Held-out evaluation with a parallel decoder every evalSteps steps (and at the end). */
  eval: z
    .strictObject({
      data: dataSourceSchema,
      limit: z.number().int().positive().default(100),
      evalSteps: z.number().int().positive().default(25),
      decoder: z.enum(['ar', 'low_confidence', 'random', 'threshold']).default('low_confidence'),
      genLength: z.number().int().positive().optional(),
      blockLength: z.number().int().positive().optional(),
      steps: z.number().int().positive().optional(),
      threshold: z.number().min(0).max(1).optional(),
    })
    .optional(),
});

/**
 * TRL's GRPOConfig names that are more than the snake_case spelling of a field here. TRL's
 * per_device_train_batch_size counts completions (a multiple of num_generations); promptsPerStep
 * counts prompts, so it is that divided by numGenerations.
 */
const GRPO_TRL_NAMES: Record<string, ExtraAlias> = {
  model_name_or_path: { to: 'model' },
  gradient_checkpointing: { to: 'checkpointActivations' },
  bf16: BF16_ALIAS,
  per_device_train_batch_size: {
    to: 'promptsPerStep',
    convert: (value, config, source) => {
      const G = config.numGenerations ?? grpoConfigSchema.shape.numGenerations.parse(undefined);
      if (typeof value !== 'number' || typeof G !== 'number' || !Number.isInteger(value / G) || value <= 0)
        throw new ConfigError(`${source}: \`per_device_train_batch_size\` counts completions and must be a positive multiple of numGenerations (${String(G)}) but is ${JSON.stringify(value)}; promptsPerStep = per_device_train_batch_size / numGenerations`);
      return value / G;
    },
  },
};

export type GrpoConfig = z.output<typeof grpoConfigSchema>;
export type GrpoConfigInput = z.input<typeof grpoConfigSchema>;

/** The config `GRPOTrainer.create` takes: a GrpoConfig whose `model` and `data` are optional (a trainer gets its model and prompts from code). */
export const grpoTrainerConfigSchema = grpoConfigSchema.partial({ model: true, data: true });
export type GrpoTrainerConfig = z.output<typeof grpoTrainerConfigSchema>;
export type GrpoTrainerConfigInput = z.input<typeof grpoTrainerConfigSchema>;

/** Validates a trainer config from code, applying the same defaults as a config file. */
export function parseTrainerConfig(raw: unknown, source: string): GrpoTrainerConfig {
  return checkGrpoConfig(parseConfig(grpoTrainerConfigSchema, raw ?? {}, source, GRPO_TRL_NAMES), source);
}

export function parseGrpoConfig(raw: unknown, source: string): GrpoConfig {
  return checkGrpoConfig(parseConfig(grpoConfigSchema, raw, source, GRPO_TRL_NAMES), source);
}

// What the schema cannot say: fields that must agree with each other.
function checkGrpoConfig<C extends GrpoTrainerConfig>(c: C, source: string): C {
  if (c.rewardWeights && c.rewardWeights.length !== c.rewardFunctions.length)
    throw new ConfigError(`${source}: \`rewardWeights\` has ${c.rewardWeights.length} entries for ${c.rewardFunctions.length} reward functions`);
  if (c.lossPositions !== undefined && c.lossPositions > c.maxCompletionLength)
    throw new ConfigError(`${source}: \`lossPositions\` (${c.lossPositions}) exceeds \`maxCompletionLength\` (${c.maxCompletionLength})`);
  return c;
}
