/**
 * The evaluation harness: generate completions for a task's prompts with any decoder, score them
 * with the task's verifier, and report accuracy, pass@k, tokens/s and NFE with per-sample records.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expected, InputError } from '../errors.js';
import { humanevalProgram, verify } from '../rewards/registry.js';
import { defaultSandbox, type Sandbox } from '../rewards/sandbox.js';
import { defaultKs, meanPassAtK } from './passk.js';
import type { EvalItem, EvalTask, TaskKind } from './tasks.js';

/** One generated completion. */
export type GenerateOutput = {
  /** The decoded completion (prompt excluded). */
  text: string;
  /** Forward passes (function evaluations) spent on it. */
  nfe?: number;
  /** Tokens generated for it. */
  tokens?: number;
};

/** Generates one completion per prompt, in order (the caller applies the chat template). */
export type GenerateFn = (prompts: string[]) => Promise<GenerateOutput[]>;

/** Progress details passed with each {@link RunEvalOptions.onProgress} call. */
export type EvalProgress = {
  /** Completions generated so far. */
  generated: number;
  /** Completions scored so far. */
  scored: number;
  /** Completions in total (items x samples). */
  total: number;
  /** Correct completions among those scored. */
  correct: number;
};

/** Options for {@link runEval}. */
export type RunEvalOptions = {
  task: EvalTask;
  generate: GenerateFn;
  /** Evaluate only the first `limit` items. Defaults to all of them. */
  limit?: number;
  /** Completions per item (the n of pass@k). Defaults to `1`. */
  samples?: number;
  /** The k values for pass@k, each at most `samples`. Defaults to 1, the powers of two below `samples`, and `samples`. */
  ks?: number[];
  /** Prompts per `generate` call. Defaults to `8`. */
  batchSize?: number;
  /** Sandbox for code tasks. Defaults to the process-wide {@link defaultSandbox}. */
  sandbox?: Sandbox;
  /** Wall-clock limit per code program in milliseconds. Defaults to `5000`. */
  codeTimeoutMs?: number;
  /** Called after each generated batch and each scored completion; `fraction` counts both. */
  onProgress?: (fraction: number, progress: EvalProgress) => void;
  /** Stops between batches (and kills running code) when aborted. */
  signal?: AbortSignal;
};

/** What happened to one completion. */
export type EvalRecord = {
  /** The item's id. */
  id: string;
  /** Which of the item's samples (0-based). */
  sample: number;
  prompt: string;
  completion: string;
  /** The answer the verifier read (for code, the program that ran), or null when none was found. */
  extracted: string | null;
  /** The verdict: the answer is right, or every test passed. */
  correct: boolean;
  /** The task's reward (GSM8K/MATH: 1 or 0; code: format + pass rate). */
  reward: number;
  nfe?: number;
  tokens?: number;
  /** Code: fraction of tests passed. */
  passRate?: number;
  /** Code: JustGRPO's format reward. */
  format?: number;
  /** Code: why tests failed. */
  failures?: string[];
};

/** Aggregate results of a run. */
export type EvalResults = {
  task: string;
  kind: TaskKind | 'mixed';
  /** Items evaluated. */
  items: number;
  /** Completions per item. */
  samples: number;
  /** Correct completions over all completions (with one sample, this is pass@1). */
  accuracy: number;
  correct: number;
  total: number;
  /** Unbiased pass@k averaged over items, keyed `pass@1`, `pass@2`, ... */
  passAtK: Record<string, number>;
  /** Generated tokens per second of generation time, or null when `generate` reports no token counts. */
  tokensPerSecond: number | null;
  /** Mean forward passes per completion, or null when `generate` reports none. */
  meanNfe: number | null;
  /** Mean generated tokens per completion, or null when `generate` reports none. */
  meanTokens: number | null;
  /** Time spent inside `generate`. */
  generationSeconds: number;
  /** Wall-clock time of the whole run. */
  elapsedSeconds: number;
};

/** Results plus one record per completion. */
export type EvalReport = { results: EvalResults; records: EvalRecord[] };

export { humanevalProgram };

type Scored = Pick<EvalRecord, 'extracted' | 'correct' | 'reward' | 'passRate' | 'format' | 'failures'>;

async function score(item: EvalItem, completion: string, opts: RunEvalOptions, sandbox: () => Promise<Sandbox>): Promise<Scored> {
  const sb = item.kind === 'code' ? await sandbox() : undefined;
  return verify(item, completion, { sandbox: sb, timeoutMs: opts.codeTimeoutMs, signal: opts.signal });
}

/**
 * Evaluates `generate` on a task: prompts go out in batches (each item's `samples` copies
 * together), completions are scored as they arrive (code runs concurrently in the sandbox while
 * the next batch generates), and the report holds accuracy, pass@k, throughput and every record.
 */
export async function runEval(options: RunEvalOptions): Promise<EvalReport> {
  const { task, generate } = options;
  const samples = options.samples ?? 1;
  const batchSize = options.batchSize ?? 8;
  if (!Number.isInteger(samples) || samples < 1) throw expected('a positive integer', 'samples', samples);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw expected('a positive integer', 'batchSize', batchSize);
  // An evaluation of nothing would report an empty table.
  if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit < 1)) {
    throw expected('a positive integer', 'limit', options.limit);
  }
  if (task.items.length === 0) throw new InputError(`Task ${task.name} has no items to evaluate`);
  const ks = options.ks ?? defaultKs(samples);
  for (const k of ks) if (!Number.isInteger(k) || k < 1 || k > samples) throw expected(`integers from 1 to samples (${samples})`, 'ks', ks);

  const started = performance.now();
  const items = task.items.slice(0, options.limit ?? task.items.length);
  const jobs = items.flatMap((item) => Array.from({ length: samples }, (_, sample) => ({ item, sample })));
  const records: EvalRecord[] = new Array(jobs.length);
  const progress: EvalProgress = { generated: 0, scored: 0, total: jobs.length, correct: 0 };
  const report = () => options.onProgress?.(jobs.length === 0 ? 1 : (progress.generated + progress.scored) / (2 * jobs.length), { ...progress });
  let sandboxPromise: Promise<Sandbox> | undefined;
  const sandbox = () => (sandboxPromise ??= options.sandbox ? Promise.resolve(options.sandbox) : defaultSandbox());

  let generationMs = 0;
  const scoring: Promise<void>[] = [];
  for (let start = 0; start < jobs.length; start += batchSize) {
    options.signal?.throwIfAborted();
    const batch = jobs.slice(start, start + batchSize);
    const t0 = performance.now();
    const outputs = await generate(batch.map((j) => j.item.prompt));
    generationMs += performance.now() - t0;
    if (!Array.isArray(outputs) || outputs.length !== batch.length) {
      throw expected(`an array of ${batch.length} outputs`, 'generate()', outputs);
    }
    progress.generated += batch.length;
    report();
    batch.forEach(({ item, sample }, j) => {
      const out = outputs[j]!;
      const at = start + j;
      scoring.push(
        score(item, out.text, options, sandbox).then((s) => {
          records[at] = {
            id: item.id,
            sample,
            prompt: item.prompt,
            completion: out.text,
            ...s,
            ...(out.nfe !== undefined ? { nfe: out.nfe } : {}),
            ...(out.tokens !== undefined ? { tokens: out.tokens } : {}),
          };
          progress.scored++;
          if (s.correct) progress.correct++;
          report();
        }),
      );
    });
  }
  await Promise.all(scoring);
  // Code killed by an abort would otherwise be reported as failing its tests.
  options.signal?.throwIfAborted();

  const byItem = new Map<string, { n: number; c: number }>();
  for (const r of records) {
    const e = byItem.get(r.id) ?? { n: 0, c: 0 };
    e.n++;
    if (r.correct) e.c++;
    byItem.set(r.id, e);
  }
  const passAtK: Record<string, number> = {};
  if (byItem.size > 0) for (const k of ks) passAtK[`pass@${k}`] = meanPassAtK([...byItem.values()], k);
  const mean = (xs: number[]) => (xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length);
  const tokens = records.filter((r) => r.tokens !== undefined).map((r) => r.tokens!);
  const nfes = records.filter((r) => r.nfe !== undefined).map((r) => r.nfe!);
  const correct = records.filter((r) => r.correct).length;
  const results: EvalResults = {
    task: task.name,
    kind: task.kind,
    items: items.length,
    samples,
    accuracy: records.length === 0 ? 0 : correct / records.length,
    correct,
    total: records.length,
    passAtK,
    tokensPerSecond: tokens.length === 0 || generationMs === 0 ? null : tokens.reduce((a, b) => a + b, 0) / (generationMs / 1000),
    meanNfe: mean(nfes),
    meanTokens: mean(tokens),
    generationSeconds: generationMs / 1000,
    elapsedSeconds: (performance.now() - started) / 1000,
  };
  return { results, records };
}

/** Paths written by {@link writeEvalOutputs}. */
export type EvalOutputPaths = { results: string; samples: string };

/**
 * Writes `results.json` (the aggregate results) and `samples.jsonl` (one record per line) into
 * `dir`, creating it; each file is written to a temp name and renamed, so readers never see half a file.
 */
export async function writeEvalOutputs(dir: string, report: EvalReport): Promise<EvalOutputPaths> {
  await mkdir(dir, { recursive: true });
  const paths = { results: path.join(dir, 'results.json'), samples: path.join(dir, 'samples.jsonl') };
  const write = async (file: string, text: string) => {
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, text);
    await rename(tmp, file);
  };
  await write(paths.results, JSON.stringify(report.results, null, 2) + '\n');
  await write(paths.samples, report.records.map((r) => JSON.stringify(r)).join('\n') + (report.records.length ? '\n' : ''));
  return paths;
}
