// `justgrpo passk`: the Flexibility Trap's figure in miniature. pass@k for k = 1..K when the same
// model decodes in AR order, in confidence order (low-confidence remasking at several block
// lengths) and in random order, at one temperature; plus the entropy of the sampling distribution
// at each committed token by position and by decoding order, where "forking" tokens that a
// confidence-ordered decoder leaves for last show up with collapsed entropy.
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { expected } from '../errors.js';
import type { EvalItem } from '../eval/tasks.js';
import type { LladaModel } from '../model.js';
import { STEP_AXIS, writeChart } from '../plot.js';
import { sampleTask, type DecodeSpec, type SampleRun } from './sampling.js';

export type PassKOptions = {
  genLength: number;
  /** Largest k (samples per problem). */
  samples: number;
  temperature: number;
  seed: number;
  /** Block lengths of the confidence-ordered decoder (each must divide genLength). */
  blockLengths: number[];
  /** Wrap prompts in the chat template. Defaults to whether the tokenizer has one. */
  chatTemplate?: boolean;
  /** Also decode in random order (one block, LLaDA's 'random' remasking). Defaults to `true`. */
  random?: boolean;
  onProgress?: (spec: DecodeSpec, index: number, count: number, fraction: number) => void;
  signal?: AbortSignal;
};

/** The decoders compared: AR order, low-confidence at each block length, random order. */
export function passKSpecs(o: Pick<PassKOptions, 'genLength' | 'blockLengths' | 'random'>): DecodeSpec[] {
  const specs: DecodeSpec[] = [{ name: 'ar', decoder: 'ar' }];
  for (const b of o.blockLengths) {
    if (!Number.isInteger(b) || b < 1 || o.genLength % b !== 0) throw expected(`block lengths that divide the generation length ${o.genLength}`, 'blockLengths', b);
    specs.push({ name: `low_confidence b${b}`, decoder: 'low_confidence', blockLength: b, steps: o.genLength });
  }
  if (o.random ?? true) specs.push({ name: `random b${o.genLength}`, decoder: 'random', blockLength: o.genLength, steps: o.genLength });
  return specs;
}

export type PassKReport = {
  task: string;
  items: number;
  samples: number;
  temperature: number;
  genLength: number;
  runs: Omit<SampleRun, 'correctPerItem' | 'examples'>[];
};

/** Samples every item `samples` times with each decoder. */
export async function runPassK(model: LladaModel, task: string, items: readonly EvalItem[], o: PassKOptions): Promise<PassKReport> {
  const specs = passKSpecs(o);
  const runs: PassKReport['runs'] = [];
  for (const [i, spec] of specs.entries()) {
    // Every decoder sees the same seeds, so the comparison is paired.
    const { correctPerItem: _c, examples: _e, ...r } = await sampleTask(model, items, spec, {
      genLength: o.genLength, temperature: o.temperature, samples: o.samples, seed: o.seed, chatTemplate: o.chatTemplate, signal: o.signal,
      onProgress: (f) => o.onProgress?.(spec, i, specs.length, f),
    });
    runs.push(r);
  }
  return { task, items: items.length, samples: o.samples, temperature: o.temperature, genLength: o.genLength, runs };
}

/** The k values shown in the table: 1, powers of two, and K. */
function tableKs(K: number): number[] {
  const ks = new Set<number>([1]);
  for (let k = 2; k < K; k *= 2) ks.add(k);
  ks.add(K);
  return [...ks];
}

/** The pass@k-by-decoder table and the entropy summary, as markdown lines. */
export function passKTable(r: PassKReport): string[] {
  const ks = tableKs(r.samples);
  const lines = [
    `| decoder | ${ks.map((k) => `pass@${k}`).join(' | ')} | mean entropy at commit (nats) | entropy, first / last quarter decoded | mean length |`,
    `| --- | ${ks.map(() => '---').join(' | ')} | --- | --- | --- |`,
  ];
  for (const run of r.runs) {
    const q = quarterEntropies(run.entropyByOrder);
    lines.push(`| ${run.spec.name} | ${ks.map((k) => (100 * run.passAtK[k - 1]!).toFixed(1)).join(' | ')} | ${run.meanEntropy.toFixed(3)} | ${q[0].toFixed(3)} / ${q[1].toFixed(3)} | ${run.meanLength.toFixed(1)} |`);
  }
  return lines;
}

/**
 * The forking-token view: the completion positions where AR-order sampling is most uncertain (the
 * top `n` by AR entropy, among positions most completions reach), and for each decoder the mean
 * entropy at commit there and the mean step at which they were committed. Empty without an 'ar' run.
 */
export function forkingTable(r: PassKReport, n = 4): string[] {
  const ar = r.runs.find((x) => x.spec.decoder === 'ar');
  if (!ar) return [];
  // Positions reached by most completions (shorter than the mean length): the tail is a few samples.
  const reach = Math.floor(Math.min(...r.runs.map((x) => x.meanLength)));
  const top = ar.entropyByPosition.map((v, i) => [v, i] as const).filter(([v, i]) => Number.isFinite(v) && i < reach)
    .sort((a, b) => b[0] - a[0]).slice(0, n).map(([, i]) => i).sort((a, b) => a - b);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const lines = [
    `| decoder | entropy at positions ${top.join(', ')} (AR's most uncertain) | mean | committed at step (of ${r.genLength}) | mean step, these / all |`,
    '| --- | --- | --- | --- | --- |',
  ];
  for (const run of r.runs) {
    const all = run.commitStepByPosition.filter((x) => Number.isFinite(x));
    lines.push(`| ${run.spec.name} | ${top.map((i) => run.entropyByPosition[i]!.toFixed(2)).join(' / ')} | ${mean(top.map((i) => run.entropyByPosition[i]!)).toFixed(3)} | ` +
      `${top.map((i) => run.commitStepByPosition[i]!.toFixed(1)).join(' / ')} | ${mean(top.map((i) => run.commitStepByPosition[i]!)).toFixed(1)} / ${mean(all).toFixed(1)} |`);
  }
  return lines;
}

// Mean entropy over the first and the last quarter of the decoding order (ranks with data).
function quarterEntropies(byOrder: number[]): [number, number] {
  const xs = byOrder.filter((x) => Number.isFinite(x));
  const q = Math.max(1, Math.floor(xs.length / 4));
  const mean = (a: number[]) => a.reduce((s, x) => s + x, 0) / Math.max(1, a.length);
  return [mean(xs.slice(0, q)), mean(xs.slice(-q))];
}

/** Writes passk.json and the plots (pass@k curves, entropy by decoding order and by position). */
export async function writePassK(r: PassKReport, out: string, formats: ('svg' | 'png')[] = ['svg', 'png']): Promise<string[]> {
  await mkdir(out, { recursive: true });
  const json = path.join(out, 'passk.json');
  await writeFile(`${json}.tmp`, JSON.stringify(r, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
  await rename(`${json}.tmp`, json);
  const files = [json];
  const curve = r.runs.flatMap((run) => run.passAtK.map((p, i) => ({ decoder: run.spec.name, k: i + 1, value: p })));
  files.push(...(await writeChart({
    data: { values: curve },
    title: `pass@k by decoding order (${r.task}, T=${r.temperature}, ${r.items} problems)`,
    width: 420, height: 280,
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'k', type: 'quantitative', title: 'k (samples per problem)', scale: { type: 'log', base: 2 }, axis: { values: tableKs(r.samples), format: 'd' } },
      y: { field: 'value', type: 'quantitative', title: 'pass@k (%)', scale: { zero: false }, axis: { format: '.0%' } },
      color: { field: 'decoder', type: 'nominal' },
    },
  }, out, 'passk', formats)));
  // Entropy at commit against the decoding rank or the completion position, one line per decoder.
  const entropyChart = (key: 'entropyByOrder' | 'entropyByPosition', x: string, xTitle: string, title: string, name: string) =>
    writeChart({
      data: { values: r.runs.flatMap((run) => run[key].flatMap((v, i) => (Number.isFinite(v) ? [{ decoder: run.spec.name, [x]: i, value: v }] : []))) },
      title,
      width: 420, height: 260,
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: x, type: 'quantitative', title: xTitle, axis: STEP_AXIS },
        y: { field: 'value', type: 'quantitative', title: 'entropy (nats)' },
        color: { field: 'decoder', type: 'nominal' },
      },
    }, out, name, formats);
  files.push(...(await entropyChart('entropyByOrder', 'rank', 'r-th token committed', 'entropy at commit by decoding order', 'entropy-by-order')));
  files.push(...(await entropyChart('entropyByPosition', 'position', 'completion position', 'entropy at commit by completion position', 'entropy-by-position')));
  return files;
}
