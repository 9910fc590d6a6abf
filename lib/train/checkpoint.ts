// Training checkpoints: a Hugging Face model directory plus optimizer.safetensors and
// trainer_state.json, written whole or not at all (temporary directory + rename), keeping the last N.
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { CheckpointError, StorageError } from '../errors.js';
import { atomicDirectory, exists, parseJsonText, readRegularFile, writeFileSynced } from '../fsutil.js';
import { internals, type LladaModel } from '../model.js';
import type { TrainingSession } from './session.js';

export const TRAINER_STATE_FILE = 'trainer_state.json';
export const METRICS_FILE = 'metrics.jsonl';

export type TrainerState = {
  /** Which command wrote it ('sft' | 'grpo'). */
  kind: string;
  /** Optimizer updates done. */
  step: number;
  /** Training examples consumed (the data position). */
  examplesSeen: number;
  /** All randomness derives from (seed, purpose, step, index); nothing else to restore. */
  seed: number;
  /** The resolved config of the run. */
  config: Record<string, unknown>;
  version: 1;
};

const CHECKPOINT_RE = /^checkpoint-(\d+)$/;

export function checkpointDir(outputDir: string, step: number): string {
  return path.join(outputDir, `checkpoint-${step}`);
}

/** Writes checkpoint-<step> atomically and deletes all but the newest `keep` checkpoints. */
export async function saveCheckpoint(
  outputDir: string,
  model: LladaModel,
  session: TrainingSession,
  state: TrainerState,
  keep: number,
): Promise<string> {
  const dir = checkpointDir(outputDir, state.step);
  try {
    await atomicDirectory(dir, async (tmp) => {
      await internals.get(model)!.writeInto(tmp);
      await session.saveOptimizer(tmp);
      await writeFileSynced(path.join(tmp, TRAINER_STATE_FILE), JSON.stringify(state, null, 2) + '\n');
    });
  } catch (err) {
    // The temporary directory is gone (atomicDirectory removes it); older checkpoints are untouched.
    const steps = await listCheckpoints(outputDir);
    const kept = steps.length ? `the newest complete checkpoint is ${checkpointDir(outputDir, steps[steps.length - 1]!)}` : 'no earlier checkpoint exists';
    const msg = (err as Error).message;
    const full = /ENOSPC|No space left|EFBIG|File too large|EDQUOT|quota/i.test(msg) ? ' (the disk is full or a size limit was hit: free space and resume)' : '';
    throw new StorageError(`Cannot write checkpoint ${dir}: ${msg}${full}; nothing was lost: ${kept}`, { cause: err });
  }
  const steps = await listCheckpoints(outputDir);
  // Renamed away first, so a kill during the deletion never leaves a half-deleted checkpoint-N.
  for (const s of steps.slice(0, Math.max(0, steps.length - keep))) {
    const old = `${checkpointDir(outputDir, s)}.old-${process.pid}`;
    await rename(checkpointDir(outputDir, s), old);
    await rm(old, { recursive: true, force: true });
  }
  return dir;
}

/** Steps of the complete checkpoints in a run directory, oldest first (temporaries are ignored). */
export async function listCheckpoints(outputDir: string): Promise<number[]> {
  let names: string[];
  try {
    names = await readdir(outputDir);
  } catch {
    return [];
  }
  return names
    .map((n) => CHECKPOINT_RE.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/** A checkpoint directory, or a run directory (its newest checkpoint). */
export async function resolveCheckpoint(dir: string): Promise<string> {
  if (await exists(path.join(dir, TRAINER_STATE_FILE))) return dir;
  const steps = await listCheckpoints(dir);
  if (steps.length === 0) throw new CheckpointError(`${dir} holds no ${TRAINER_STATE_FILE} and no checkpoint-N directory to resume from`);
  return checkpointDir(dir, steps[steps.length - 1]!);
}

export async function readTrainerState(dir: string, kind: string): Promise<TrainerState> {
  const file = path.join(dir, TRAINER_STATE_FILE);
  let state: TrainerState;
  try {
    state = parseJsonText(await readRegularFile(file)) as TrainerState;
  } catch (err) {
    throw new CheckpointError(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (state.kind !== kind) throw new CheckpointError(`${file} was written by \`justgrpo ${state.kind}\`, not \`justgrpo ${kind}\``);
  if (!Number.isInteger(state.step) || !Number.isInteger(state.examplesSeen) || typeof state.config !== 'object')
    throw new CheckpointError(`${file}: \`step\`, \`examplesSeen\` or \`config\` is missing or malformed`);
  return state;
}

/**
 * Metrics of a run, one JSON object per line. On resume the lines after the checkpoint's step are
 * dropped (they belong to the interrupted run), so no step appears twice or goes missing.
 */
export class MetricsLog {
  readonly file: string;

  /** `file`: the log's name in outputDir (completions.jsonl is one too). */
  constructor(outputDir: string, file: string = METRICS_FILE) {
    this.file = path.join(outputDir, file);
  }

  async truncateAfter(step: number): Promise<void> {
    if (!(await exists(this.file))) return;
    const kept: string[] = [];
    for (const line of (await readFile(this.file, 'utf8')).split('\n')) {
      try {
        if (JSON.parse(line).step <= step) kept.push(line);
      } catch {
        // a line cut short by a kill
      }
    }
    const tmp = `${this.file}.tmp-${process.pid}`;
    await writeFile(tmp, kept.map((l) => l + '\n').join(''));
    await rename(tmp, this.file);
  }

  async append(record: Record<string, unknown>): Promise<void> {
    try {
      await writeFile(this.file, JSON.stringify(record) + '\n', { flag: 'a' });
    } catch (err) {
      throw new StorageError(`Cannot append to ${this.file}: ${(err as Error).message}`, { cause: err });
    }
  }
}
