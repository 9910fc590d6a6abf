// `justgrpo demo`: the whole method on a laptop CPU. Loads the shipped base model, evaluates it on
// the held-out split with a parallel decoder, runs JustGRPO (AR-order rollouts, exact likelihoods,
// plain GRPO) for a fixed number of steps, evaluates again, and writes the numbers and plots.
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

import type { TopLevelSpec } from 'vega-lite';

import { AbortError, ConfigError } from '../errors.js';
import { exists } from '../fsutil.js';
import type { EvalItem } from '../eval/tasks.js';
import { resolveModelDir } from '../hub/index.js';
import { loadModel, nativeDType, type ComputeDType } from '../model.js';
import { plotRun, writeChart } from '../plot.js';
import { parseGrpoConfig, type GrpoConfig } from '../train/grpo-config.js';
import { runGrpo, type GrpoStepMetrics } from '../train/grpo.js';
import { sampleTask, type DecodeSpec, type SampleRun } from './sampling.js';
import { DEMO_DATA_DIR, DEMO_GEN_LENGTH, DEMO_MODEL_DIR, checkDemoModel, taskItems } from './shipped.js';

/** The knobs of one demo run; `DEMO_FULL` and `DEMO_QUICK` are the two presets. */
export type DemoSettings = {
  /** JustGRPO optimizer steps. */
  grpoSteps: number;
  /** Prompts per step (each with numGenerations completions). */
  promptsPerStep: number;
  numGenerations: number;
  learningRate: number;
  /** Positions trained per completion (JustGRPO's exact likelihood at K random positions, weighted L / K). */
  lossPositions?: number;
  /** Held-out problems evaluated before and after. */
  evalItems: number;
  /** Samples per problem for pass@k (at `evalTemperature`). */
  evalSamples: number;
  evalTemperature: number;
  /** The decoder of the evaluation's greedy accuracy and pass@k. */
  evalDecoder: DecodeSpec;
  /** A second decoder whose greedy accuracy is reported too (the parallel decoder users run). */
  parallelDecoder: DecodeSpec;
};

// JustGRPO trains the model as an AR-order policy, so the headline numbers decode in that order;
// LLaDA's confidence-ordered block decoding is reported beside them.
const EVAL_DECODER: DecodeSpec = { name: 'AR order', decoder: 'ar' };
const PARALLEL_DECODER: DecodeSpec = { name: 'low_confidence b8', decoder: 'low_confidence', blockLength: 8, steps: DEMO_GEN_LENGTH };

// Sized for about three minutes on a quiet 2-core CPU: a JustGRPO step (64 rollouts of 24 tokens
// and the exact AR-order likelihood of every completion token) takes about 0.8 s, each evaluation
// of the 500 held-out problems about 15 s. lr 5e-5 (seed 0, 200 steps): 2e-4 made the model worse
// (greedy AR-order accuracy 53.6 -> 45.6%), 5e-5 and 2e-5 better (56.2%, 56.6%), 5e-5 the most
// at temperature 1 (pass@1 43.4 -> 50.4%).
export const DEMO_FULL = {
  grpoSteps: 200, promptsPerStep: 8, numGenerations: 8, learningRate: 5e-5,
  evalItems: 500, evalSamples: 4, evalTemperature: 1.0, evalDecoder: EVAL_DECODER, parallelDecoder: PARALLEL_DECODER,
} as const satisfies DemoSettings;

export const DEMO_QUICK = {
  ...DEMO_FULL, grpoSteps: 4, promptsPerStep: 4, evalItems: 32, evalSamples: 2,
} as const satisfies DemoSettings;

/** Accuracy and friends of one model at one point of the demo. */
export type DemoEval = {
  /** Greedy (temperature 0) accuracy with the evaluation decoder. */
  accuracy: number;
  /** Greedy accuracy with the parallel decoder. */
  parallelAccuracy: number;
  /** Unbiased pass@k at the sampling temperature, k = 1..evalSamples. */
  passAtK: number[];
  /** Mean completion length (tokens before end-of-turn) of the greedy completions. */
  meanLength: number;
  /** Generated tokens per second of the greedy and sampled decoding together. */
  tokensPerSecond: number;
  greedy: SampleRun;
  sampled: SampleRun;
  parallel: SampleRun;
};

export type DemoEvent =
  | { kind: 'start'; settings: DemoSettings; out: string; model: string; numParams: number; seed: number }
  | { kind: 'eval'; label: 'before' | 'after'; what: 'greedy' | 'sampled' | 'parallel'; fraction: number; correct: number; done: number }
  | { kind: 'evalDone'; label: 'before' | 'after'; result: DemoEval }
  | { kind: 'trainStart'; totalSteps: number }
  | { kind: 'trainPhase'; step: number; phase: string }
  | { kind: 'trainStep'; metrics: GrpoStepMetrics };

export type DemoOptions = {
  /** Where everything is written. */
  out: string;
  /** Seed of JustGRPO's rollouts and prompt order and of the sampled evaluation. Defaults to `0`. */
  seed?: number;
  /** The preset (or your own settings). Defaults to `DEMO_FULL`. */
  settings?: DemoSettings;
  /** The base model. Defaults to the shipped one. */
  model?: string;
  /** Compute dtype of training and evaluation (`'bf16'`: the CPU's bf16 products). Defaults to `'fp32'`. */
  dtype?: ComputeDType;
  /** Stops after the current step or batch. */
  signal?: AbortSignal;
  onEvent?: (e: DemoEvent) => void;
};

export type DemoResult = {
  seed: number;
  settings: DemoSettings;
  model: string;
  before: Omit<DemoEval, 'greedy' | 'sampled' | 'parallel'>;
  after: Omit<DemoEval, 'greedy' | 'sampled' | 'parallel'>;
  /** JustGRPO's per-step metrics (reward is the AR-order rollouts' mean reward at temperature 1). */
  train: { steps: number; seconds: number; rewardFirst: number; rewardLast: number; checkpoint: string };
  seconds: { total: number; evalBefore: number; train: number; evalAfter: number };
  files: { results: string; metrics: string; checkpoint: string; plots: string[]; samples: string[] };
};

async function evaluate(modelDir: string, items: EvalItem[], s: DemoSettings, seed: number, label: 'before' | 'after', o: DemoOptions): Promise<DemoEval> {
  const model = await loadModel(modelDir, { dtype: o.dtype ?? 'fp32' });
  try {
    const base = { genLength: DEMO_GEN_LENGTH, chatTemplate: false, signal: o.signal };
    const greedy = await sampleTask(model, items, s.evalDecoder, {
      ...base, temperature: 0, samples: 1, seed,
      onProgress: (fraction, correct, done) => o.onEvent?.({ kind: 'eval', label, what: 'greedy', fraction, correct, done }),
    });
    const sampled = await sampleTask(model, items, s.evalDecoder, {
      ...base, temperature: s.evalTemperature, samples: s.evalSamples, seed,
      onProgress: (fraction, correct, done) => o.onEvent?.({ kind: 'eval', label, what: 'sampled', fraction, correct, done }),
    });
    const parallel = await sampleTask(model, items, s.parallelDecoder, {
      ...base, temperature: 0, samples: 1, seed,
      onProgress: (fraction, correct, done) => o.onEvent?.({ kind: 'eval', label, what: 'parallel', fraction, correct, done }),
    });
    const tokens = (greedy.items * greedy.samples + sampled.items * sampled.samples) * DEMO_GEN_LENGTH;
    const result: DemoEval = {
      accuracy: greedy.accuracy, parallelAccuracy: parallel.accuracy, passAtK: sampled.passAtK, meanLength: greedy.meanLength,
      tokensPerSecond: tokens / (greedy.decodeSeconds + sampled.decodeSeconds), greedy, sampled, parallel,
    };
    o.onEvent?.({ kind: 'evalDone', label, result });
    return result;
  } finally {
    await model.dispose();
  }
}

/** The JustGRPO config the demo trains with. */
export function demoGrpoConfig(s: DemoSettings, seed: number, modelDir: string, outputDir: string, dtype: ComputeDType = 'fp32'): GrpoConfig {
  return parseGrpoConfig({
    model: modelDir,
    dtype: nativeDType(dtype) === 'BF16' ? 'bf16' : 'fp32',
    data: { train: path.join(DEMO_DATA_DIR, 'train.jsonl'), chatTemplate: false },
    rewardFunctions: ['gsm8k'],
    numGenerations: s.numGenerations,
    promptsPerStep: s.promptsPerStep,
    maxCompletionLength: DEMO_GEN_LENGTH,
    temperature: 1.0,
    learningRate: s.learningRate,
    ...(s.lossPositions ? { lossPositions: s.lossPositions } : {}),
    maxSteps: s.grpoSteps,
    seed,
    outputDir,
    saveSteps: s.grpoSteps,
    saveTotalLimit: 1,
    loggingSteps: 1,
  }, 'demo settings');
}

const strip = ({ greedy: _g, sampled: _s, parallel: _p, ...rest }: DemoEval) => rest;

/** Runs the demo; see the file comment. */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const s = o.settings ?? DEMO_FULL;
  const seed = o.seed ?? 0;
  // A Hub id is fetched once here; everything after reads the local snapshot.
  const modelDir = path.resolve(o.model ? await resolveModelDir(o.model) : DEMO_MODEL_DIR);
  if (!o.model) checkDemoModel();
  const out = path.resolve(o.out);
  const grpoDir = path.join(out, 'grpo');
  if (await exists(path.join(grpoDir, 'metrics.jsonl'))) throw new ConfigError(`${out} already holds a demo run; choose another --out`);
  await mkdir(out, { recursive: true });
  const { items: all } = await taskItems('arith');
  if (s.evalItems > all.length) throw new ConfigError(`evalItems ${s.evalItems} exceeds the ${all.length} held-out problems`);
  const items = all.slice(0, s.evalItems);
  const t0 = performance.now();
  {
    const m = await loadModel(modelDir);
    o.onEvent?.({ kind: 'start', settings: s, out, model: modelDir, numParams: m.numParams, seed });
    await m.dispose();
  }
  // The evaluation's draws use a seed of their own, so before and after see the same noise.
  const evalSeed = 1_000_000 + seed;
  const before = await evaluate(modelDir, items, s, evalSeed, 'before', o);
  const t1 = performance.now();
  const rewards: number[] = [];
  o.onEvent?.({ kind: 'trainStart', totalSteps: s.grpoSteps });
  const run = await runGrpo({ config: demoGrpoConfig(s, seed, modelDir, grpoDir, o.dtype), baseDir: out }, {
    signal: o.signal,
    onPhase: (step, phase) => o.onEvent?.({ kind: 'trainPhase', step, phase }),
    onStep: (m) => {
      rewards.push(m.reward);
      o.onEvent?.({ kind: 'trainStep', metrics: m });
    },
  });
  if (!run.checkpoint) throw new ConfigError(`JustGRPO wrote no checkpoint in ${grpoDir}`);
  if (o.signal?.aborted) throw new AbortError(`Demo interrupted after ${run.steps} JustGRPO steps; the checkpoint is ${run.checkpoint}`);
  const t2 = performance.now();
  const after = await evaluate(run.checkpoint, items, s, evalSeed, 'after', o);
  const t3 = performance.now();

  const plotsDir = path.join(out, 'plots');
  const plots = await plotRun(grpoDir, { out: plotsDir });
  plots.push(...(await writeChart(accuracyChart(before, after, s), plotsDir, 'accuracy')));
  const samples: string[] = [];
  for (const [label, e] of [['before', before], ['after', after]] as const) {
    const file = path.join(out, `samples-${label}.jsonl`);
    await writeFile(file, e.greedy.examples.map((x) => JSON.stringify(x)).join('\n') + '\n');
    samples.push(file);
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const window = Math.max(1, Math.min(5, Math.floor(rewards.length / 2)));
  const result: DemoResult = {
    seed, settings: s, model: modelDir,
    before: strip(before), after: strip(after),
    train: {
      steps: run.steps, seconds: (t2 - t1) / 1000, checkpoint: run.checkpoint,
      rewardFirst: mean(rewards.slice(0, window)), rewardLast: mean(rewards.slice(-window)),
    },
    seconds: { total: (t3 - t0) / 1000, evalBefore: (t1 - t0) / 1000, train: (t2 - t1) / 1000, evalAfter: (t3 - t2) / 1000 },
    files: { results: path.join(out, 'results.json'), metrics: path.join(grpoDir, 'metrics.jsonl'), checkpoint: run.checkpoint, plots, samples },
  };
  const tmp = `${result.files.results}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(result, null, 2) + '\n');
  await rename(tmp, result.files.results);
  return result;
}

function accuracyChart(before: DemoEval, after: DemoEval, s: DemoSettings): TopLevelSpec {
  const k = s.evalSamples;
  const metrics = [`greedy, ${s.evalDecoder.name}`, `greedy, ${s.parallelDecoder.name}`, `pass@1, T=${s.evalTemperature}`, `pass@${k}, T=${s.evalTemperature}`];
  const rows = ([['base', before], ['JustGRPO', after]] as const).flatMap(([model, ev]) =>
    [ev.accuracy, ev.parallelAccuracy, ev.passAtK[0]!, ev.passAtK[k - 1]!].map((value, i) => ({ model, metric: metrics[i]!, value })));
  // Percent, as the console table prints it; each bar carries its value.
  const y = { field: 'value', type: 'quantitative', title: 'accuracy (%)', scale: { domain: [0, 1] }, axis: { format: '.0%' } };
  const x = { field: 'model', type: 'nominal', title: null, sort: ['base', 'JustGRPO'], axis: { labelAngle: 0 } };
  return {
    data: { values: rows },
    title: { text: `held-out accuracy before and after JustGRPO (${s.evalItems} problems)`, anchor: 'start' },
    facet: { column: { field: 'metric', type: 'nominal', title: null, sort: metrics, header: { labelFontSize: 12, labelLimit: 400 } } },
    spacing: 16,
    spec: {
      width: 210, height: 220,
      layer: [
        { mark: { type: 'bar' }, encoding: { x, y, color: { field: 'model', type: 'nominal', title: null, sort: ['base', 'JustGRPO'] } } },
        { mark: { type: 'text', dy: -8 }, encoding: { x, y, text: { field: 'value', type: 'quantitative', format: '.1%' } } },
      ],
    },
  } as unknown as TopLevelSpec;
}

/** The before/after table as text lines. */
export function demoTable(r: DemoResult): string[] {
  const k = r.settings.evalSamples, T = r.settings.evalTemperature;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const rows: [string, string, string][] = [
    ['', 'base', 'JustGRPO'],
    [`accuracy (greedy, ${r.settings.evalDecoder.name})`, pct(r.before.accuracy), pct(r.after.accuracy)],
    [`accuracy (greedy, ${r.settings.parallelDecoder.name})`, pct(r.before.parallelAccuracy), pct(r.after.parallelAccuracy)],
    [`pass@1 (T=${T}, ${k} samples)`, pct(r.before.passAtK[0]!), pct(r.after.passAtK[0]!)],
    [`pass@${k} (T=${T})`, pct(r.before.passAtK[k - 1]!), pct(r.after.passAtK[k - 1]!)],
    ['mean completion length (tokens)', r.before.meanLength.toFixed(1), r.after.meanLength.toFixed(1)],
    ['decoding tokens/s', r.before.tokensPerSecond.toFixed(0), r.after.tokensPerSecond.toFixed(0)],
  ];
  const w0 = Math.max(...rows.map((x) => x[0].length)), w1 = Math.max(...rows.map((x) => x[1].length));
  return rows.map(([a, b, c]) => `${a.padEnd(w0)}  ${b.padStart(w1)}  ${c.padStart(8)}`);
}
