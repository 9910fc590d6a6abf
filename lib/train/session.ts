// Gradients and AdamW state of one model: the TypeScript face of the native Trainer. Every call
// goes through the model's queue, so training and inference calls on one model never overlap.
import path from 'node:path';

import { CheckpointError, ConfigError, DistributedError, EngineError, InputError, InsufficientMemoryError } from '../errors.js';
import type { GenerateOptions, GenerateResult } from '../generate.js';
import { internals, type LladaModel, type ModelInternals } from '../model.js';
import { createNativeTrainer, unwrapNative, type NativeStepOptions, type NativeTrainer } from '../native/binding.js';
import { buildSafetensorsHeader, readSafetensorsHeader } from '../safetensors.js';
import type { Communicator } from './distributed.js';
import { formatMemoryPlan, memoryPlan, type MemoryPlanOptions } from './memory-plan.js';
import type { PackedBatch } from './objective.js';

export type OptimizerOptions = {
  /** Peak learning rate. */
  learningRate: number;
  /** AdamW beta1. Defaults to `0.9`. */
  adamBeta1: number;
  /** AdamW beta2. Defaults to `0.999`. */
  adamBeta2: number;
  /** AdamW epsilon. Defaults to `1e-8`. */
  adamEpsilon: number;
  /** Decoupled weight decay on weight matrices (not norm weights). Defaults to `0`. */
  weightDecay: number;
  /** Global gradient-norm clip; 0 disables. Defaults to `1.0`. */
  maxGradNorm: number;
  /** Non-finite gradient values: zeroed (the rest of the update applies) or the whole update skipped. Defaults to `'zero'`. */
  nonFiniteGradients?: 'zero' | 'skip';
};

/** A packed batch of (completion, position) inputs with the GRPO loss's per-row inputs. */
export type PolicyBatch = PackedBatch & { oldLogprobs: Float32Array; advantages: Float32Array; refLogprobs: Float32Array | null };
export type PolicySettings = { epsilonLow: number; epsilonHigh: number; beta: number; excludeIds: Int32Array };

export type StepResult = { gradNorm: number; nonFinite: number; clipped: boolean; skipped: boolean };

export const OPTIMIZER_FILE = 'optimizer.safetensors';

/** A backend that cannot shard its optimizer state (UNSUPPORTED) as the config's error; other errors as they are. */
function shardingError(err: unknown): unknown {
  if (err instanceof EngineError && /cannot shard/.test(err.message))
    return new ConfigError(`zeroStage 1 (optimizer-state sharding) is not available here: ${err.message.replace(/^(shardOptimizer|Trainer): /, '')}`, { cause: err });
  return err;
}

export class TrainingSession {
  readonly #trainer: NativeTrainer;
  readonly #model: ModelInternals;
  // The ranks the optimizer state is sharded over (shardOptimizer); null: this rank holds it whole.
  #shardComm: Communicator | null = null;

  private constructor(trainer: NativeTrainer, model: ModelInternals) {
    this.#trainer = trainer;
    this.#model = model;
  }

  /**
   * Allocates gradients and AdamW moments (12 bytes per parameter) for `model`. `shardOver`
   * (ZeRO-1): the ranks the AdamW state is sharded over, from the start (see shardOptimizer); this
   * rank then allocates its shard's moments only.
   */
  static create(
    model: LladaModel,
    options: { checkpointActivations?: boolean; memoryPlan?: MemoryPlanOptions; shardOver?: Communicator } = {},
  ): TrainingSession {
    const m = internals.get(model)!;
    // On the GPU memory is planned, not discovered: the plan is printed before anything is allocated.
    if (model.backend === 'cuda' && options.memoryPlan) {
      const o = { ...options.memoryPlan, checkpointActivations: options.checkpointActivations ?? false };
      const total = m.engine.deviceInfo().totalMemory;
      const cards = [{ name: `this GPU (${(total / 1e9).toFixed(0)} GB)`, bytes: total }].filter((c) => c.bytes > 0);
      process.stderr.write(`${formatMemoryPlan(memoryPlan(model.config, o), o, cards)}\n`);
    }
    if (model.backend !== 'cpu' && model.backend !== 'cuda')
      throw new InputError(`Training runs on the 'cpu' and 'cuda' backends, not on '${model.backend}'`);
    let trainer: NativeTrainer;
    const over = options.shardOver;
    const sharded = over !== undefined && over.size > 1 && over.native !== null;
    try {
      trainer = createNativeTrainer(m.engine, {
        checkpointActivations: options.checkpointActivations ?? false,
        ...(sharded ? { optimizerShard: { rank: over.rank, ranks: over.size } } : {}),
      });
    } catch (err) {
      if (err instanceof InsufficientMemoryError)
        throw new InsufficientMemoryError(`Training needs more memory than is available: ${err.message.replace(/^Trainer: /, '')}`, { cause: err });
      throw shardingError(err);
    }
    const session = new TrainingSession(trainer, m);
    if (sharded) session.#shardComm = over;
    return session;
  }

  /** AdamW updates applied so far. */
  get stepCount(): number {
    return this.#trainer.stepCount;
  }

  zeroGrad(): void {
    this.#trainer.zeroGrad();
  }

  /** Forward + backward of the weighted cross-entropy at the batch's rows; gradients accumulate. */
  lossBackward(b: PackedBatch): Promise<{ loss: number; logprobs: Float32Array }> {
    return this.#model.run(() => this.#trainer.crossEntropyBackward(b.tokens, b.seqStarts, b.rows, b.targets, b.weights));
  }

  /** The same loss, forward only. */
  loss(b: PackedBatch): Promise<{ loss: number; logprobs: Float32Array }> {
    return this.#model.run(() => this.#trainer.crossEntropyLoss(b.tokens, b.seqStarts, b.rows, b.targets, b.weights));
  }

  /** The GRPO loss at the batch's rows (see NativeTrainer.policyLossBackward); gradients accumulate. */
  policyLossBackward(b: PolicyBatch, o: PolicySettings): Promise<{ loss: number; logprobs: Float32Array; clipped: Uint8Array }> {
    return this.#model.run(() => this.#trainer.policyLossBackward(b.tokens, b.seqStarts, b.rows, b.targets, b.weights, {
      oldLogprobs: b.oldLogprobs, advantages: b.advantages, ...(b.refLogprobs ? { refLogprobs: b.refLogprobs } : {}), ...o,
    }));
  }

  /** The same loss, forward only. */
  policyLoss(b: PolicyBatch, o: PolicySettings): Promise<{ loss: number; logprobs: Float32Array; clipped: Uint8Array }> {
    return this.#model.run(() => this.#trainer.policyLoss(b.tokens, b.seqStarts, b.rows, b.targets, b.weights, {
      oldLogprobs: b.oldLogprobs, advantages: b.advantages, ...(b.refLogprobs ? { refLogprobs: b.refLogprobs } : {}), ...o,
    }));
  }

  /**
   * The AR rollout of model.generate() through the trainer: each step's activations are kept, while
   * their total stays within keepBytes, so the loss can run backward through them
   * (policyLossBackwardKept) instead of running the forward again.
   */
  rollout(prompts: number[][], options: GenerateOptions, keepBytes: number): Promise<GenerateResult> {
    return this.#model.generate(prompts, options, (p, s, seeds, o, onProgress) => this.#trainer.rollout(p, s, seeds, o, onProgress, keepBytes));
  }

  /** Steps of the last rollout whose activations are kept (0 once the weights have changed), and their bytes. */
  keptSteps(): { steps: number; bytes: number } {
    return this.#trainer.keptSteps();
  }

  /** The GRPO loss at kept rollout step `step` (one row per sequence), backward only; gradients accumulate. */
  policyLossBackwardKept(
    step: number, b: { targets: Int32Array; weights: Float32Array; oldLogprobs: Float32Array; advantages: Float32Array; refLogprobs: Float32Array | null },
    o: PolicySettings,
  ): Promise<{ loss: number; logprobs: Float32Array; clipped: Uint8Array }> {
    return this.#model.run(() => this.#trainer.policyLossBackwardKept(step, b.targets, b.weights, {
      oldLogprobs: b.oldLogprobs, advantages: b.advantages, ...(b.refLogprobs ? { refLogprobs: b.refLogprobs } : {}), ...o,
    }));
  }

  /** Frees the kept rollout activations. */
  releaseKept(): Promise<void> {
    return this.#model.run(async () => this.#trainer.releaseKept());
  }

  /**
   * Zeroes and counts non-finite gradients, clips, applies AdamW at `lr`. With a communicator of
   * more than one rank (data parallelism) the gradients are first summed over every rank in the
   * engine (they never pass through JavaScript), and the statistics are global.
   */
  async step(lr: number, o: OptimizerOptions, comm?: Communicator): Promise<StepResult> {
    const opts: NativeStepOptions = {
      lr, beta1: o.adamBeta1, beta2: o.adamBeta2, eps: o.adamEpsilon, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm,
      skipNonFinite: o.nonFiniteGradients === 'skip',
    };
    if (!comm || comm.size === 1 || comm.native === null) return this.#model.run(() => this.#trainer.step(opts));
    const native = unwrapNative(comm.native);
    try {
      return await this.#model.run(() => this.#trainer.step(opts, native, comm.timeoutSeconds));
    } catch (err) {
      if (err instanceof Error && /^step: Rank \d+: /.test(err.message))
        throw new DistributedError(err.message.replace(/^step: /, ''), { cause: err });
      throw err;
    }
  }

  getGrad(name: string): Float32Array {
    return this.#trainer.getGrad(name);
  }

  /** Overwrites one parameter's gradient before `step` (gradient surgery; fault injection in tests). */
  setGrad(name: string, data: Float32Array): void {
    this.#trainer.setGrad(name, data);
  }

  /**
   * ZeRO-1 (optimizer-state sharding): from now on this rank keeps the AdamW moments of its
   * 1/comm.size share of the parameters only; the step reduce-scatters the gradients, updates the
   * shard and all-gathers the weights. Call before the first step and before loadOptimizer. One
   * rank: nothing to share, the state stays whole.
   */
  shardOptimizer(comm: Communicator): void {
    if (comm.size === 1 || comm.native === null) return;
    try {
      this.#trainer.shardOptimizer(comm.rank, comm.size);
    } catch (err) {
      throw shardingError(err);
    }
    this.#shardComm = comm;
  }

  /** Whether this rank holds a shard of the optimizer state (shardOptimizer over several ranks). */
  get optimizerSharded(): boolean {
    return this.#shardComm !== null;
  }

  /**
   * Writes the AdamW moments (`<param>.exp_avg`, `<param>.exp_avg_sq`, F32) and the step count, in
   * one format whatever the sharding. With a sharded optimizer every rank calls it: the moments are
   * gathered one parameter at a time and rank 0 writes into `dir`; the other ranks pass null.
   */
  async saveOptimizer(dir: string | null): Promise<void> {
    const comm = this.#shardComm;
    if (dir === null && comm === null) return;
    const params = this.#model.engine.paramInfo();
    const tensors = params.flatMap((p) => [
      { name: `${p.name}.exp_avg`, dtype: 'F32' as const, shape: p.shape, param: p.name, moment: 'm' as const },
      { name: `${p.name}.exp_avg_sq`, dtype: 'F32' as const, shape: p.shape, param: p.name, moment: 'v' as const },
    ]);
    const { header } = buildSafetensorsHeader(tensors, { format: 'justgrpo-adamw', step: String(this.stepCount) });
    const file = dir === null ? null : path.join(dir, OPTIMIZER_FILE);
    const items = tensors.map((t) => ({ name: t.param, moment: t.moment }));
    if (comm === null) {
      await this.#model.run(() => this.#trainer.saveMoments(file, header, items));
      return;
    }
    const native = unwrapNative(comm.native!);
    try {
      await this.#model.run(() => this.#trainer.saveMoments(file, header, items, native, comm.timeoutSeconds));
    } catch (err) {
      if (err instanceof Error && /^saveMoments: Rank \d+: /.test(err.message))
        throw new DistributedError(err.message.replace(/^saveMoments: /, ''), { cause: err });
      throw err;
    }
  }

  /**
   * Restores moments and step count written by saveOptimizer (by any number of ranks, sharded or
   * not); a sharded rank reads its shard's part only. Errors name the file and tensor.
   */
  async loadOptimizer(dir: string): Promise<void> {
    const file = path.join(dir, OPTIMIZER_FILE);
    const header = await readSafetensorsHeader(file);
    const step = Number(header.metadata.step);
    if (!Number.isInteger(step) || step < 0) throw new CheckpointError(`${file}: metadata \`step\` is missing or not an integer`);
    const items: { name: string; moment: 'm' | 'v'; offset: number; dtype: 'F32' }[] = [];
    for (const p of this.#model.engine.paramInfo()) {
      for (const [suffix, moment] of [['exp_avg', 'm'], ['exp_avg_sq', 'v']] as const) {
        const t = header.tensors.get(`${p.name}.${suffix}`);
        if (!t) throw new CheckpointError(`${file}: missing tensor ${p.name}.${suffix}`);
        if (t.dtype !== 'F32' || t.shape.join() !== p.shape.join())
          throw new CheckpointError(`${file}: tensor ${p.name}.${suffix} is ${t.dtype} [${t.shape}], expected F32 [${p.shape}]`);
        items.push({ name: p.name, moment, offset: t.offset, dtype: 'F32' as const });
      }
    }
    try {
      await this.#model.run(() => this.#trainer.loadMoments(file, items));
    } catch (err) {
      throw new CheckpointError(`${file}: ${(err as Error).message}`, { cause: err });
    }
    this.#trainer.stepCount = step;
  }

  dispose(): void {
    this.#trainer.dispose();
  }
}
