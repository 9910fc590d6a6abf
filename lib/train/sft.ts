// `justgrpo sft`: LLaDA's masked-diffusion supervised fine-tuning (and pre-training on {text}),
// with gradient accumulation, AdamW, schedules, checkpoints and exact resume.
import path from 'node:path';

import { z } from 'zod';

import { InputError } from '../errors.js';
import { saveCheckpoint, type TrainerState } from './checkpoint.js';
import { checkLoss, withLastCheckpoint } from './faults.js';
import { readJsonl, tokenizeExamples } from './data.js';
import { maskedDiffusionBatch } from './objective.js';
import { Rng, STREAM } from './rng.js';
import { epochSampler, modelSchema, openMetrics, openRun, parseConfig } from './run.js';
import { learningRateAt } from './schedule.js';
import { TrainingSession } from './session.js';

/** The config of `justgrpo sft` (JSON or YAML). Paths are relative to the config file. */
export const sftConfigSchema = z.strictObject({
  /** A Hugging Face LLaDA directory, or `{init: {...}}` for a random model with the character tokenizer. */
  model: modelSchema,
  data: z.strictObject({
    /** JSONL of {prompt, response}, {question, answer} or {text}. */
    train: z.string(),
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
  checkpointActivations: z.boolean().default(false),
  seed: z.number().int().min(0).default(0),
  outputDir: z.string().default('runs/sft'),
  saveSteps: z.number().int().positive().default(100),
  saveTotalLimit: z.number().int().positive().default(2),
  loggingSteps: z.number().int().positive().default(1),
});

export type SftConfig = z.output<typeof sftConfigSchema>;
export type SftConfigInput = z.input<typeof sftConfigSchema>;

/** Validates a parsed config; errors name the file and the field. */
export function parseSftConfig(raw: unknown, source: string): SftConfig {
  return parseConfig(sftConfigSchema, raw, source);
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

export type SftHooks = {
  /** Called once the run is set up. */
  onStart?: (info: { totalSteps: number; startStep: number; examples: number; numParams: number; outputDir: string }) => void;
  /** Called after every optimizer step. */
  onStep?: (m: SftStepMetrics) => void;
  /** Called between backward and the optimizer step (gradient surgery, fault injection in tests). */
  onGradients?: (step: number, session: TrainingSession) => void | Promise<void>;
  /** Called after each checkpoint is written. */
  onCheckpoint?: (dir: string) => void;
  /** Stops after the current step (a checkpoint is written first). */
  signal?: AbortSignal;
};

export type SftResult = { outputDir: string; checkpoint: string | null; steps: number; lastLoss: number | null };

/**
 * Runs SFT. Fresh: `config` (with `baseDir` for its relative paths). Resume: `resume` (a checkpoint
 * or run directory): the config stored in the checkpoint, with `overrides` applied on top.
 */
export async function runSft(
  args: { config?: SftConfig; baseDir?: string; resume?: string; overrides?: Partial<SftConfig> },
  hooks: SftHooks = {},
): Promise<SftResult> {
  const { config, baseDir, model, checkpoint: ckpt, state, restart } = await openRun('sft', parseSftConfig, args);
  // Paths are stored absolute so a resumed run finds them from anywhere.
  const trainFile = path.resolve(baseDir, config.data.train);
  const outputDir = path.resolve(baseDir, config.outputDir);
  const resolved: SftConfig = { ...config, data: { ...config.data, train: trainFile }, outputDir };
  let session: TrainingSession | null = null;
  try {
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

    const metrics = await openMetrics(outputDir, state, restart);

    session = TrainingSession.create(model, { checkpointActivations: config.checkpointActivations });
    if (ckpt) await session.loadOptimizer(ckpt);
    const startStep = state?.step ?? 0;
    hooks.onStart?.({ totalSteps, startStep, examples: examples.length, numParams: model.numParams, outputDir });

    const exampleAt = epochSampler(examples, config.seed);
    const stateAt = (step: number): TrainerState => ({
      kind: 'sft', step, examplesSeen: step * perStep, seed: config.seed, config: resolved as unknown as Record<string, unknown>, version: 1,
    });

    let lastLoss: number | null = null, lastCheckpoint: string | null = null;
    let step = startStep;
    while (step < totalSteps) {
      const t0 = performance.now();
      session.zeroGrad();
      let loss = 0, tokens = 0;
      for (let micro = 0; micro < config.gradientAccumulationSteps; micro++) {
        const first = step * perStep + micro * config.batchSize;
        const batchExamples = Array.from({ length: config.batchSize }, (_, i) => exampleAt(first + i));
        const batch = maskedDiffusionBatch(batchExamples, (i) => new Rng(config.seed, STREAM.mask, first + i), {
          maskTokenId: mc.maskTokenId,
          padTokenId: config.padToLongest ? mc.eosTokenId : null,
          maskEps: config.maskEps,
          sequencesPerStep: perStep,
        });
        tokens += batch.numTokens;
        if (batch.rows.length > 0) loss += (await session.lossBackward(batch)).loss;
      }
      checkLoss(loss, step + 1, config.maxLoss);
      await hooks.onGradients?.(step + 1, session);
      const lr = learningRateAt(step, { ...config, totalSteps });
      const r = await session.step(lr, config);
      step++;
      const seconds = (performance.now() - t0) / 1000;
      lastLoss = loss;
      const m: SftStepMetrics = {
        step, loss, learning_rate: lr, grad_norm: r.gradNorm, non_finite: r.nonFinite, skipped: r.skipped ? 1 : 0, num_tokens: tokens,
        tokens_per_second: tokens / seconds, step_time: seconds, epoch: (step * perStep) / examples.length,
      };
      if (step % config.loggingSteps === 0 || step === totalSteps) await metrics.append(m);
      hooks.onStep?.(m);
      const stop = hooks.signal?.aborted ?? false;
      if (step % config.saveSteps === 0 || step === totalSteps || stop) {
        lastCheckpoint = await saveCheckpoint(outputDir, model, session, stateAt(step), config.saveTotalLimit);
        hooks.onCheckpoint?.(lastCheckpoint);
      }
      if (stop) break;
    }
    return { outputDir, checkpoint: lastCheckpoint, steps: step, lastLoss };
  } catch (err) {
    throw await withLastCheckpoint(err, outputDir);
  } finally {
    session?.dispose();
    await model.dispose();
  }
}
