// `justgrpo sft`: LLaDA's masked-diffusion supervised fine-tuning (and pre-training on {text}),
// with gradient accumulation, AdamW and schedules; the run loop (checkpoints, exact resume, metrics)
// is run.ts's runTraining.
import path from 'node:path';

import { z } from 'zod';

import { BF16_ALIAS, type ExtraAlias } from '../configfile.js';
import { InputError } from '../errors.js';
import { LocalCommunicator, shard } from './distributed.js';
import { checkLoss } from './faults.js';
import { readJsonl, tokenizeExamples } from './data.js';
import { dataSourceSchema } from './datasource.js';
import { maskedDiffusionBatch } from './objective.js';
import { Rng, STREAM } from './rng.js';
import { epochSampler, modelSchema, parseConfig, resolveSource, runTraining, type RunArgs, type RunHooks, type RunResult } from './run.js';
import { learningRateAt } from './schedule.js';
import { TrainingSession } from './session.js';

/** The config of `justgrpo sft` (JSON or YAML). Paths are relative to the config file. */
export const sftConfigSchema = z.strictObject({
  /** A Hugging Face LLaDA directory, or `{init: {...}}` for a random model with the character tokenizer. */
  model: modelSchema,
  data: z.strictObject({
    /** JSONL (or a Hub data set: hf://datasets/owner/name or {hub, config, split}) of {prompt, response}, {question, answer} or {text}. */
    train: dataSourceSchema,
    /** Malformed lines: stop with file:line, or skip and count. */
    onBadLine: z.enum(['stop', 'skip']).default('stop'),
    /** Examples longer than maxLength: error, skip, or truncate the response. */
    overlong: z.enum(['error', 'skip', 'truncate']).default('error'),
    /** Longest example in tokens; defaults to the model's max_sequence_length. */
    maxLength: z.number().int().positive().optional(),
    /** Wrap prompts in the chat template; defaults to whether the tokenizer has one. */
    chatTemplate: z.boolean().optional(),
  }),
  batchSize: z.number().int().positive().default(8),
  gradientAccumulationSteps: z.number().int().positive().default(1),
  learningRate: z.number().positive().default(1e-4),
  lrSchedulerType: z.enum(['constant', 'linear', 'cosine']).default('constant'),
  warmupSteps: z.number().int().min(0).default(0),
  /** Optimizer steps; overrides numEpochs. */
  maxSteps: z.number().int().positive().optional(),
  numEpochs: z.number().positive().default(1),
  weightDecay: z.number().min(0).default(0),
  adamBeta1: z.number().min(0).lt(1).default(0.9),
  adamBeta2: z.number().min(0).lt(1).default(0.999),
  adamEpsilon: z.number().positive().default(1e-8),
  maxGradNorm: z.number().min(0).default(1.0),
  /**
   * Optimizer-state sharding across data-parallel ranks (ZeRO stage 1): 0 keeps the whole AdamW
   * state on every rank; 1 gives each rank the moments of 1/ranks of the parameters (the gradients
   * are reduce-scattered, each rank updates its share, the weights are all-gathered). Same updates
   * to fp32 round-off; one rank: nothing to share (no effect).
   */
  zeroStage: z.literal([0, 1]).default(0),
  /** Non-finite gradient values: zeroed and counted (the rest of the update applies), or the step skipped and counted. */
  nonFiniteGradients: z.enum(['zero', 'skip']).default('zero'),
  /** Stop (before applying the step, keeping the last checkpoint) when |loss| exceeds this; a non-finite loss always stops. */
  maxLoss: z.number().positive().optional(),
  /** Floor of the masking probability: p_mask = (1 - maskEps) t + maskEps. */
  maskEps: z.number().gt(0).lt(1).default(1e-3),
  /** Pad responses with eos to the longest sequence of the micro-batch, as LLaDA's SFT does (teaches the eos tail). */
  padToLongest: z.boolean().default(true),
  /**
   * Compute dtype of the model: 'fp32' (exact), or 'bf16' (the CPU's matrix products with bf16
   * inputs and fp32 sums through oneDNN; fp32 master weights, optimizer and everything else).
   */
  dtype: z.enum(['fp32', 'bf16']).default('fp32'),
  /** Where the model trains: 'cpu', or 'cuda' (the GPU; its memory plan is printed before training starts). */
  backend: z.enum(['cpu', 'cuda']).default('cpu'),
  checkpointActivations: z.boolean().default(false),
  seed: z.number().int().min(0).default(0),
  outputDir: z.string().default('runs/sft'),
  saveSteps: z.number().int().positive().default(100),
  saveTotalLimit: z.number().int().positive().default(2),
  loggingSteps: z.number().int().positive().default(1),
});

export type SftConfig = z.output<typeof sftConfigSchema>;
export type SftConfigInput = z.input<typeof sftConfigSchema>;

/** TRL's SFTConfig names that are more than the snake_case spelling of a field here. */
const SFT_TRL_NAMES: Record<string, ExtraAlias> = {
  per_device_train_batch_size: { to: 'batchSize' },
  gradient_checkpointing: { to: 'checkpointActivations' },
  bf16: BF16_ALIAS,
  num_train_epochs: { to: 'numEpochs' },
  model_name_or_path: { to: 'model' },
};

/** Validates a parsed config; errors name the file and the field. */
export function parseSftConfig(raw: unknown, source: string): SftConfig {
  return parseConfig(sftConfigSchema, raw, source, SFT_TRL_NAMES);
}

export type SftStepMetrics = {
  step: number;
  loss: number;
  learning_rate: number;
  grad_norm: number;
  non_finite: number;
  /** 1 when the update was skipped (nonFiniteGradients: 'skip'). */
  skipped: number;
  num_tokens: number;
  tokens_per_second: number;
  step_time: number;
  epoch: number;
};

export type SftHooks = RunHooks<SftStepMetrics> & {
  /** Called once the run is set up. */
  onStart?: (info: { totalSteps: number; startStep: number; examples: number; numParams: number; outputDir: string }) => void;
  /**
   * Called between backward and the optimizer step (gradient surgery, fault injection in tests),
   * with this rank's gradients: under data parallelism the step sums them over the ranks.
   */
  onGradients?: (step: number, session: TrainingSession) => void | Promise<void>;
};

export type SftResult = RunResult & { lastLoss: number | null };

/**
 * Runs SFT. Fresh: `config` (with `baseDir` for its relative paths). Resume: `resume` (a checkpoint
 * or run directory): the config stored in the checkpoint, with `overrides` applied on top.
 */
export async function runSft(
  args: Omit<RunArgs<SftConfig>, 'config'> & { config?: SftConfig | SftConfigInput },
  hooks: SftHooks = {},
): Promise<SftResult> {
  // A config from code gets the defaults a config file gets (parsing a parsed one changes nothing).
  const parsed = args.config && parseSftConfig(args.config, 'runSft config');
  const comm = args.communicator ?? new LocalCommunicator();
  const { last, ...result } = await runTraining('sft', parseSftConfig, { ...args, config: parsed }, hooks, async ({ config, baseDir, outputDir }, model) => {
    // Paths are stored absolute so a resumed run finds them from anywhere (Hub data sets as they are).
    const trainFile = resolveSource(baseDir, config.data.train);
    const resolved: SftConfig = { ...config, data: { ...config.data, train: trainFile }, outputDir };
    const tok = model.tokenizer;
    const mc = model.config;
    const { records, skipped } = await readJsonl(trainFile, { onBadLine: config.data.onBadLine });
    const eot = tok.tokenToId('<|eot_id|>');
    const { examples } = tokenizeExamples(records, trainFile, tok, { bos: mc.bosTokenId, eos: mc.eosTokenId, eot }, {
      maxLength: Math.min(config.data.maxLength ?? mc.maxSequenceLength, mc.maxSequenceLength),
      overlong: config.data.overlong,
      chatTemplate: config.data.chatTemplate,
    });
    if (examples.length === 0)
      throw new InputError(`${trainFile}: no usable examples${skipped ? ` (${skipped} malformed lines skipped)` : ''}`);
    const perStep = config.batchSize * config.gradientAccumulationSteps;
    const totalSteps = config.maxSteps ?? Math.max(1, Math.ceil((config.numEpochs * examples.length) / perStep));
    const session = TrainingSession.create(model, {
      checkpointActivations: config.checkpointActivations,
      // Printed once, by rank 0.
      memoryPlan: comm.rank === 0 ? { dtype: model.deviceInfo().dtype === 'BF16' ? 'bf16' : 'fp32', lossTokens: config.batchSize * (config.data.maxLength ?? mc.maxSequenceLength), ranks: comm.size, zeroStage: config.zeroStage } : undefined,
      // ZeRO-1: this rank allocates its shard of the AdamW state only.
      shardOver: config.zeroStage === 1 ? comm : undefined,
    });
    const exampleAt = epochSampler(examples, config.seed);
    return {
      session, totalSteps, examplesPerStep: perStep, resolved: resolved as unknown as Record<string, unknown>,
      started: (startStep) => hooks.onStart?.({ totalSteps, startStep, examples: examples.length, numParams: model.numParams, outputDir }),
      dispose: () => session.dispose(),
      // One optimizer step: gradientAccumulationSteps micro-batches of masked-diffusion cross-entropy.
      // With several ranks each takes its shard of every micro-batch: example i keeps its global
      // index (its masking draws) and the micro-batch's longest length (its padding), so the summed
      // loss and gradients are one process's.
      step: async (step) => {
        const t0 = performance.now();
        session.zeroGrad();
        let loss = 0, tokens = 0;
        const part = shard(config.batchSize, comm.rank, comm.size);
        for (let micro = 0; micro < config.gradientAccumulationSteps; micro++) {
          const first = step * perStep + micro * config.batchSize;
          const batchExamples = Array.from({ length: config.batchSize }, (_, i) => exampleAt(first + i));
          const padTo = Math.max(...batchExamples.map((e) => e.prompt.length + e.response.length));
          const mine = batchExamples.slice(part.start, part.end);
          if (mine.length === 0) continue;
          const batch = maskedDiffusionBatch(mine, (i) => new Rng(config.seed, STREAM.mask, first + part.start + i), {
            maskTokenId: mc.maskTokenId,
            padTokenId: config.padToLongest ? mc.eosTokenId : null,
            maskEps: config.maskEps,
            sequencesPerStep: perStep,
            padTo,
          });
          tokens += batch.numTokens;
          if (batch.rows.length > 0) loss += (await session.lossBackward(batch)).loss;
        }
        [loss, tokens] = Array.from(await comm.allReduce([loss, tokens], 'sum', 'the sum of the loss'));
        checkLoss(loss, step + 1, config.maxLoss);
        await hooks.onGradients?.(step + 1, session);
        const lr = learningRateAt(step, { ...config, totalSteps });
        const r = await session.step(lr, config, comm);
        const [seconds] = await comm.allReduce([(performance.now() - t0) / 1000], 'max', 'the step time');
        return {
          step: step + 1, loss, learning_rate: lr, grad_norm: r.gradNorm, non_finite: r.nonFinite, skipped: r.skipped ? 1 : 0, num_tokens: tokens,
          tokens_per_second: tokens / seconds!, step_time: seconds!, epoch: ((step + 1) * perStep) / examples.length,
        };
      },
    };
  });
  return { ...result, lastLoss: last?.loss ?? null };
}
