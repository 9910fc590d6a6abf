// What `justgrpo sft` and `justgrpo train` share: the model a config names, config validation,
// and opening a run fresh or from a checkpoint.
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';

import { z } from 'zod';

import { charModelConfig, charTokenizerFiles } from '../chartokenizer.js';
import { ConfigError } from '../errors.js';
import { LladaModel, loadModel, type ComputeDType } from '../model.js';
import { exists } from '../fsutil.js';
import { Tokenizer } from '../tokenizer.js';
import { listCheckpoints, MetricsLog, readTrainerState, resolveCheckpoint, TRAINER_STATE_FILE, type TrainerState } from './checkpoint.js';
import { Rng, STREAM } from './rng.js';

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

/** Validates a parsed config; the error names the file and the field. */
export function parseConfig<S extends z.ZodType>(schema: S, raw: unknown, source: string): z.output<S> {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ConfigError(`${source}: \`${issue.path.join('.') || '(root)'}\`: ${issue.message}`);
  }
  return r.data;
}

/** The model a config names: a directory (relative to baseDir), or a random one; in `dtype`. */
export async function openModel(model: z.output<typeof modelSchema>, baseDir: string, dtype: ComputeDType = 'fp32'): Promise<LladaModel> {
  if (typeof model === 'string') return loadModel(path.resolve(baseDir, model), { dtype });
  const { seed, initStd, ...size } = model.init;
  const files = charTokenizerFiles();
  const tokenizer = Tokenizer.fromJSON(JSON.parse(files['tokenizer.json']!), JSON.parse(files['tokenizer_config.json']!));
  return LladaModel.random(charModelConfig(size), { seed, initStd, files, tokenizer, dtype });
}

export type OpenedRun<C> = {
  config: C;
  /** The directory the config's relative paths are relative to ('/' on resume: stored paths are absolute). */
  baseDir: string;
  model: LladaModel;
  /** The checkpoint resumed from, and its state; null for a fresh run. */
  checkpoint: string | null;
  state: TrainerState | null;
  /** `--resume` of a run that never wrote a checkpoint, with its config: started over. */
  restart?: boolean;
};

/**
 * A fresh run (`config`, relative to `baseDir`) or a resumed one (`resume`: a checkpoint or run
 * directory; the config stored in it, with `overrides` on top).
 */
export async function openRun<C extends { model: z.output<typeof modelSchema>; dtype?: ComputeDType }>(
  kind: 'sft' | 'grpo',
  parse: (raw: unknown, source: string) => C,
  args: { config?: C; baseDir?: string; resume?: string; overrides?: Partial<C> },
): Promise<OpenedRun<C>> {
  // A run killed before its first checkpoint has nothing to resume: with its config given too, it
  // starts over in the same directory (restart: its metrics are discarded).
  if (args.resume && args.config && !(await hasCheckpoint(args.resume))) {
    const config = { ...args.config, ...args.overrides };
    const baseDir = args.baseDir ?? process.cwd();
    return { config, baseDir, model: await openModel(config.model, baseDir, config.dtype), checkpoint: null, state: null, restart: true };
  }
  if (args.resume) {
    const checkpoint = await resolveCheckpoint(args.resume);
    const state = await readTrainerState(checkpoint, kind);
    const config = parse({ ...state.config, ...args.overrides }, path.join(checkpoint, 'trainer_state.json'));
    return { config, baseDir: '/', model: await loadModel(checkpoint, { dtype: config.dtype }), checkpoint, state };
  }
  if (!args.config) throw new ConfigError('Give a config for a new run, or a checkpoint to resume');
  const config = { ...args.config, ...args.overrides };
  const baseDir = args.baseDir ?? process.cwd();
  return { config, baseDir, model: await openModel(config.model, baseDir, config.dtype), checkpoint: null, state: null };
}

async function hasCheckpoint(dir: string): Promise<boolean> {
  return (await exists(path.join(dir, TRAINER_STATE_FILE))) || (await listCheckpoints(dir)).length > 0;
}

/** Deletes what a killed run left behind: checkpoint directories it was writing or replacing. */
async function removeTemporaries(outputDir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(outputDir);
  } catch {
    return;
  }
  for (const n of names)
    if (/^checkpoint-\d+\.(tmp|old)-/.test(n)) await rm(path.join(outputDir, n), { recursive: true, force: true });
}

/**
 * The metrics log of a run directory: truncated to the checkpoint's step on resume; a fresh run
 * refuses a directory that already holds one (nothing is overwritten).
 */
export async function openMetrics(outputDir: string, state: TrainerState | null, restart = false): Promise<MetricsLog> {
  const metrics = new MetricsLog(outputDir);
  await removeTemporaries(outputDir);
  if (state) await metrics.truncateAfter(state.step);
  else if (restart) await rm(metrics.file, { force: true });
  else if (await exists(metrics.file))
    throw new ConfigError(`${outputDir} already holds a run (${path.basename(metrics.file)}); resume it with --resume ${outputDir} or choose another --out`);
  await mkdir(outputDir, { recursive: true });
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
