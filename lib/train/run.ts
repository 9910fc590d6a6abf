// What `justgrpo sft` and `justgrpo train` share: the model a config names, config validation, and
// the run loop (runTraining): where a run writes, its lock, metrics, evaluation, checkpoints,
// interruption and resume. A method (sft.ts, grpo.ts) supplies its setup and one optimizer step.
import { constants, existsSync } from 'node:fs';
import { access, mkdir, readdir, rm, rmdir, stat } from 'node:fs/promises';
import path from 'node:path';

import { z } from 'zod';

import { charModelConfig, charTokenizerFiles } from '../chartokenizer.js';
import { normalizeConfigKeys, type ExtraAlias } from '../configfile.js';
import { ConfigError, StorageError } from '../errors.js';
import { isHubId } from '../hub/index.js';
import { LladaModel, loadModel, type Backend, type ComputeDType } from '../model.js';
import { exists } from '../fsutil.js';
import { Tokenizer } from '../tokenizer.js';
import { checkpointDir, listCheckpoints, MetricsLog, readTrainerState, resolveCheckpoint, saveCheckpoint, TRAINER_STATE_FILE, type TrainerState } from './checkpoint.js';
import { agree, anyRank, LocalCommunicator, type Communicator } from './distributed.js';
import { withLastCheckpoint } from './faults.js';
import { acquireLock } from './lock.js';
import { Rng, STREAM } from './rng.js';
import type { TrainingSession } from './session.js';

/** `model: {init: {...}}`: a random model with the character tokenizer. */
export const initSchema = z.strictObject({
  dModel: z.number().int().positive(),
  nLayers: z.number().int().min(0),
  nHeads: z.number().int().positive(),
  nKvHeads: z.number().int().positive().optional(),
  mlpHiddenSize: z.number().int().positive(),
  maxSequenceLength: z.number().int().positive().default(512),
  seed: z.number().int().min(0).default(0),
  initStd: z.number().positive().default(0.02),
});

export const modelSchema = z.union([z.string(), z.strictObject({ init: initSchema })]);

/**
 * Validates a parsed config: keys in camelCase or TRL's snake_case (`extras`: TRL names that differ
 * more); one error names the file and every field at fault.
 */
export function parseConfig<S extends z.ZodType>(schema: S, raw: unknown, source: string, extras: Record<string, ExtraAlias> = {}): z.output<S> {
  const { value, spelling } = normalizeConfigKeys(schema, raw, source, extras);
  const r = schema.safeParse(value);
  if (!r.success) {
    // The longest prefix of the path the file spelled its own way (array indices keep theirs).
    const name = (p: PropertyKey[]) => {
      for (let n = p.length; n > 0; n--) {
        const written = spelling.get(p.slice(0, n).join('.'));
        if (written !== undefined) return [written, ...p.slice(n)].join('.');
      }
      return p.join('.') || '(root)';
    };
    throw new ConfigError(`${source}: ${r.error.issues.map((issue) => `\`${name(issue.path)}\`: ${issue.message}`).join('; ')}`);
  }
  return r.data;
}

/**
 * A path a config gives, relative to the config's directory; an `hf://` URL stays as written, and so
 * does a model's Hub id (`owner/name[@revision]`) unless a path of that name exists there (a local
 * path wins). Data files never read as Hub ids (`data/train.jsonl` is a path).
 */
export function resolveSource(baseDir: string, p: string, kind: 'model' | 'data' = 'data'): string {
  if (p.startsWith('hf://')) return p;
  const local = path.resolve(baseDir, p);
  return kind === 'model' && isHubId(p) && !existsSync(local) ? p : local;
}

/** The model a config names: a directory (relative to baseDir) or a Hub id, or a random one; in `dtype`. */
export async function openModel(
  model: z.output<typeof modelSchema>, baseDir: string, dtype: ComputeDType = 'fp32', backend: Backend = 'cpu',
): Promise<LladaModel> {
  // Training (and its KL reference) keeps fp32 masters with bf16: it updates the checkpoint's own values.
  if (typeof model === 'string') return loadModel(resolveSource(baseDir, model, 'model'), { dtype, backend, masterWeights: true });
  const { seed, initStd, ...size } = model.init;
  const files = charTokenizerFiles();
  const tokenizer = Tokenizer.fromJSON(JSON.parse(files['tokenizer.json']!), JSON.parse(files['tokenizer_config.json']!));
  return LladaModel.random(charModelConfig(size), { seed, initStd, files, tokenizer, dtype, backend, masterWeights: true });
}

/** The arguments of runSft / runGrpo: a fresh run (`config`, relative to `baseDir`) or a resume. */
export type RunArgs<C> = {
  config?: C;
  /** The directory the config's relative paths are relative to. Defaults to the working directory. */
  baseDir?: string;
  /** A checkpoint-N directory or a run directory (its newest checkpoint) to continue. */
  resume?: string;
  /** Fields on top of the config (a resumed run's is the one stored in its checkpoint). */
  overrides?: Partial<C>;
  /**
   * Data parallelism: the ranks this run spans (lib/train/distributed.ts, `openCommunicator`). Every
   * rank calls the run with the same arguments; rank 0 alone writes (lock, metrics, checkpoints).
   * Defaults to one process.
   */
  communicator?: Communicator;
};

/** The fields of a run config the driver reads. */
export type RunConfig = {
  model: z.output<typeof modelSchema>;
  /** The model's compute dtype (the CPU's bf16 products, or fp32). */
  dtype?: ComputeDType;
  /** Where the model runs. */
  backend?: Backend;
  outputDir: string;
  seed: number;
  saveSteps: number;
  saveTotalLimit: number;
  loggingSteps: number;
};

/** The hooks every run takes. */
export type RunHooks<M> = {
  /** Called after every optimizer step. */
  onStep?: (m: M) => void;
  /** Called after each checkpoint is written. */
  onCheckpoint?: (dir: string) => void;
  /** Stops after the current step (a checkpoint is written first); the result says `interrupted`. */
  signal?: AbortSignal;
};

export type RunResult = {
  outputDir: string;
  /** The newest checkpoint this run wrote (null: none). */
  checkpoint: string | null;
  /** Optimizer steps done, counting those before a resume. */
  steps: number;
  /** Stopped by its signal before the last step; `--resume outputDir` continues it. */
  interrupted: boolean;
};

/** What a run is about to be, before anything is loaded or written. */
export type RunPlan<C> = {
  config: C;
  /** The directory the config's relative paths are relative to ('/' on resume: stored paths are absolute). */
  baseDir: string;
  /** Where checkpoints and metrics go: the resumed run's directory on resume, unless --out says otherwise. */
  outputDir: string;
  /** The checkpoint resumed from, and its state; null for a fresh run. */
  checkpoint: string | null;
  state: TrainerState | null;
  /** `--resume DIR` with a config, where DIR holds no checkpoint: start over in DIR, if DIR holds nothing or an interrupted run. */
  restart: boolean;
};

/**
 * A training method as the driver runs it: a session and one optimizer step. Paths, the lock,
 * metrics, evaluation, checkpoints, interruption and clean-up are the driver's (`runTraining`).
 */
export type RunMethod<M> = {
  session: TrainingSession;
  totalSteps: number;
  /** Examples (SFT) or prompts (GRPO) one step consumes: the data position of trainer_state.json. */
  examplesPerStep: number;
  /** The config as checkpoints store it (every path absolute). */
  resolved: Record<string, unknown>;
  /** Called once, before the first step, with the step the run starts from. */
  started?: (startStep: number) => void;
  /** Optimizer step `step` + 1 (steps count from 0 here); returns its metrics, logged by the driver. */
  step: (step: number) => Promise<M>;
  /** Whether an evaluation follows `step` (0: before training). */
  evalDue?: (step: number) => boolean;
  /** The evaluation's metrics, logged with the step. Kept rollout activations are freed first. */
  evaluate?: (step: number) => Promise<Record<string, number>>;
  dispose?: () => Promise<void> | void;
};

/**
 * Where a run goes, from its arguments; loads nothing. On resume the output directory is the run
 * the checkpoint belongs to (or --out): a resume writes only where it was told to.
 */
export async function planRun<C extends RunConfig>(
  kind: 'sft' | 'grpo',
  parse: (raw: unknown, source: string) => C,
  args: RunArgs<C>,
): Promise<RunPlan<C>> {
  const out = args.overrides?.outputDir;
  if (args.resume) {
    const resumeDir = path.resolve(args.resume);
    if (!(await hasCheckpoint(resumeDir))) {
      // A run killed before its first checkpoint has nothing to resume: with its config given too,
      // it starts over, in the directory --resume names and nowhere else.
      if (!args.config) await resolveCheckpoint(resumeDir);
      if (out !== undefined && path.resolve(out) !== resumeDir)
        throw new ConfigError(`${resumeDir} holds no checkpoint to resume, and --out names another directory (${path.resolve(out)}); a resumed run writes only into the run it resumes`);
      const config = { ...args.config!, ...args.overrides, outputDir: resumeDir };
      return { config, baseDir: args.baseDir ?? process.cwd(), outputDir: resumeDir, checkpoint: null, state: null, restart: true };
    }
    const checkpoint = await resolveCheckpoint(resumeDir);
    const state = await readTrainerState(checkpoint, kind);
    const runDir = checkpoint === resumeDir ? path.dirname(checkpoint) : resumeDir;
    const outputDir = out !== undefined ? path.resolve(out) : runDir;
    const config = parse({ ...state.config, ...args.overrides, outputDir }, path.join(checkpoint, TRAINER_STATE_FILE));
    return { config, baseDir: '/', outputDir, checkpoint, state, restart: false };
  }
  if (!args.config) throw new ConfigError('Give a config for a new run, or a checkpoint to resume');
  const config = { ...args.config, ...args.overrides };
  const baseDir = args.baseDir ?? process.cwd();
  return { config, baseDir, outputDir: path.resolve(baseDir, config.outputDir), checkpoint: null, state: null, restart: false };
}

/**
 * The run loop both methods share: plan, lock the output directory, load the model, let the method
 * set itself up, then step / log / evaluate / checkpoint until done or interrupted; the lock is
 * released and everything disposed on every path.
 */
export async function runTraining<C extends RunConfig, M extends { step: number }>(
  kind: 'sft' | 'grpo',
  parse: (raw: unknown, source: string) => C,
  args: RunArgs<C>,
  hooks: RunHooks<M>,
  setup: (plan: RunPlan<C>, model: LladaModel) => Promise<RunMethod<M>>,
): Promise<RunResult & { last: M | null }> {
  const comm = args.communicator ?? new LocalCommunicator();
  // Rank 0 owns the output directory; the other ranks read (config, data, checkpoint) and write nothing.
  const lead = comm.rank === 0;
  let plan: RunPlan<C> | null = null, lock: Awaited<ReturnType<typeof acquireLock>> | null = null, created = false;
  let model: LladaModel | null = null, method: RunMethod<M> | null = null, wrote = false;
  try {
    let startError: unknown;
    let metrics: MetricsLog | null = null;
    try {
      plan = await planRun(kind, parse, args);
      if (lead) {
        created = await makeOutputDir(plan.outputDir);
        const dir = plan.outputDir;
        lock = await acquireLock(dir).catch((err: unknown) => {
          throw wrapOutputError(err, dir);
        });
      }
      const { dtype, backend } = plan.config;
      model = plan.checkpoint ? await loadModel(plan.checkpoint, { dtype, backend, masterWeights: true }) : await openModel(plan.config.model, plan.baseDir, dtype, backend);
      method = await setup(plan, model);
      if (lead) {
        metrics = await openMetrics(plan.outputDir, plan.state, plan.restart, lock!.stale !== null);
        wrote = true;
      }
      if (plan.checkpoint) await method.session.loadOptimizer(plan.checkpoint);
    } catch (err) {
      startError = err ?? new Error('start-up failed');
    }
    // A rank that failed to start would leave the others waiting at their first collective.
    await agree(comm, startError, 'to start the run');
    const { session, totalSteps } = method!;
    const { outputDir, state } = plan!;
    const c = plan!.config;
    const startStep = state?.step ?? 0;
    method!.started?.(startStep);
    const stateAt = (step: number): TrainerState => ({
      kind, step, examplesSeen: step * method!.examplesPerStep, seed: c.seed, config: method!.resolved, version: 1,
    });
    const evaluate = async (step: number) => {
      if (!method!.evaluate || !method!.evalDue?.(step)) return;
      // Up to reuseRolloutMemoryMB of kept rollout activations would otherwise stay allocated
      // through the evaluation's decoding.
      await session.releaseKept();
      const m = await method!.evaluate(step);
      await metrics?.append({ step, ...m });
    };
    if (startStep === 0) await evaluate(0);
    let step = startStep, checkpoint: string | null = null, last: M | null = null, interrupted = false;
    // Stop requests are per process (a signal may reach one rank only): every rank stops at the same step.
    const stopRequested = () => anyRank(comm, hooks.signal?.aborted ?? false, 'the stop check');
    while (step < totalSteps) {
      if (await stopRequested()) {
        interrupted = true;
        break;
      }
      last = await method!.step(step);
      step++;
      if (step % c.loggingSteps === 0 || step === totalSteps) await metrics?.append(last);
      hooks.onStep?.(last);
      await evaluate(step);
      const stop = await stopRequested();
      if (step % c.saveSteps === 0 || step === totalSteps || stop) {
        // With a sharded optimizer every rank takes part in writing the moments (a gather); rank 0 writes.
        if (lead) checkpoint = await saveCheckpoint(outputDir, model!, session, stateAt(step), c.saveTotalLimit);
        else {
          await session.saveOptimizer(null);
          checkpoint = checkpointDir(outputDir, step);
        }
        hooks.onCheckpoint?.(checkpoint);
      }
      if (stop && step < totalSteps) interrupted = true;
      if (stop) break;
    }
    await session.releaseKept();
    // No rank leaves before rank 0 has written its last checkpoint (a launcher may end the job as
    // soon as one rank exits).
    if (comm.size > 1) await comm.barrier('the end of the run');
    if (interrupted && checkpoint === null) checkpoint = plan!.checkpoint;
    return { outputDir, checkpoint, steps: step, interrupted, last };
  } catch (err) {
    throw plan && lead ? await withLastCheckpoint(err, plan.outputDir) : err;
  } finally {
    await method?.dispose?.();
    await model?.dispose();
    await lock?.release();
    if (plan && created && !wrote) await rmdir(plan.outputDir).catch(() => {});
  }
}

async function hasCheckpoint(dir: string): Promise<boolean> {
  return (await exists(path.join(dir, TRAINER_STATE_FILE))) || (await listCheckpoints(dir)).length > 0;
}

/** Creates the output directory (and its parents); true if it did not exist. Errors say what is in the way. */
async function makeOutputDir(dir: string): Promise<boolean> {
  const existed = await stat(dir).then((s) => s.isDirectory(), () => false);
  try {
    await mkdir(dir, { recursive: true });
    await access(dir, constants.W_OK);
  } catch (err) {
    throw wrapOutputError(err, dir);
  }
  return !existed;
}

function wrapOutputError(err: unknown, dir: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === undefined) return err;
  const why: Record<string, string> = {
    EEXIST: 'a file of that name is in the way', ENOTDIR: 'a file is in the way (a path component is not a directory)',
    EACCES: 'permission denied', EPERM: 'permission denied', EROFS: 'the file system is read-only', ENOSPC: 'the disk is full',
  };
  return new StorageError(`Cannot use ${dir} as the output directory: ${why[code] ?? (err as Error).message}; choose another --out`, { cause: err });
}

/** Deletes what a killed run left behind: checkpoint directories it was writing or replacing, a lock it was writing. */
async function removeTemporaries(outputDir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(outputDir);
  } catch {
    return;
  }
  for (const n of names)
    if (/^checkpoint-\d+\.(tmp|old)-|^run\.lock\.tmp-/.test(n)) await rm(path.join(outputDir, n), { recursive: true, force: true });
}

/**
 * The metrics log of a run directory: truncated to the checkpoint's step on resume. A fresh run
 * refuses a directory that already holds a run; a restart (--resume of a run with no checkpoint)
 * replaces only the metrics of a run that was interrupted (its lock was left by a dead process).
 */
export async function openMetrics(outputDir: string, state: TrainerState | null, restart = false, interrupted = false): Promise<MetricsLog> {
  const metrics = new MetricsLog(outputDir);
  await removeTemporaries(outputDir);
  const resumeHint = `resume it with --resume ${outputDir} or choose another --out`;
  if (state) await metrics.truncateAfter(state.step);
  else if (!restart && (await listCheckpoints(outputDir)).length > 0)
    throw new ConfigError(`${outputDir} already holds a run (checkpoint-${(await listCheckpoints(outputDir)).at(-1)}); ${resumeHint}`);
  else if (await exists(metrics.file)) {
    if (restart && interrupted) await rm(metrics.file, { force: true });
    else if (restart)
      throw new ConfigError(`${outputDir} holds no checkpoint to resume, and its ${path.basename(metrics.file)} belongs to a run that was not interrupted; nothing was changed: choose another directory, or delete ${metrics.file} to start over there`);
    else throw new ConfigError(`${outputDir} already holds a run (${path.basename(metrics.file)}); ${resumeHint}`);
  }
  return metrics;
}

/** Item g of an endless stream of epochs, each a fresh seeded shuffle: the data position is just g. */
export function epochSampler<T>(items: readonly T[], seed: number): (g: number) => T {
  const perms = new Map<number, number[]>();
  return (g) => {
    const epoch = Math.floor(g / items.length);
    if (!perms.has(epoch)) perms.set(epoch, new Rng(seed, STREAM.shuffle, epoch).permutation(items.length));
    return items[perms.get(epoch)![g % items.length]!]!;
  };
}
