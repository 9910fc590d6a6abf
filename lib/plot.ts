// `justgrpo plot RUN_DIR`: the curves of metrics.jsonl as SVG (vega-lite, rendered by vega without a
// browser) and PNG (resvg).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vl from 'vega-lite';

import { InputError } from './errors.js';

/** A metric drawn when a run has it: its panel title and the unit of its axis. */
type Curve = { key: string; title: string; unit: string; percent?: boolean };

/** Metrics drawn, in order, when a run has them. Fractions are drawn in percent, as the CLI prints them. */
const CURVES: Curve[] = [
  { key: 'reward', title: 'rollout reward (mean per completion)', unit: 'reward' },
  { key: 'eval/reward', title: 'held-out reward', unit: 'reward' },
  { key: 'loss', title: 'loss', unit: 'loss' },
  { key: 'grad_norm', title: 'gradient norm', unit: 'L2 norm' },
  { key: 'learning_rate', title: 'learning rate', unit: 'learning rate' },
  { key: 'entropy', title: 'sampling entropy', unit: 'nats per token' },
  { key: 'completions/mean_length', title: 'completion length', unit: 'tokens' },
  { key: 'frac_reward_zero_std', title: 'groups with equal rewards (no learning signal)', unit: '% of groups', percent: true },
  { key: 'clip_ratio/region_mean', title: 'clipped tokens', unit: '% of tokens', percent: true },
  { key: 'kl', title: 'KL to the reference model', unit: 'nats per token' },
  { key: 'tokens_per_second', title: 'throughput', unit: 'tokens/s' },
  { key: 'step_time', title: 'step time', unit: 's' },
];

/** The smoothing weight of the reward's EMA line (TensorBoard's default). */
export const EMA_WEIGHT = 0.6;

/**
 * TensorBoard's smoothing: s_t = w s_(t-1) + (1 - w) x_t from s_0 = 0, divided by 1 - w^t so the
 * first points are not pulled toward 0.
 */
export function ema(xs: readonly number[], weight = EMA_WEIGHT): number[] {
  let s = 0;
  return xs.map((x, i) => {
    s = weight * s + (1 - weight) * x;
    return s / (1 - weight ** (i + 1));
  });
}

/**
 * The d3 format of an axis: percent for fractions, scientific for values too small or large to
 * read in fixed point (a learning rate of 5e-5 would print as 0), the default otherwise.
 */
export function axisFormat(values: readonly number[], percent = false): string | undefined {
  if (percent) return '.0%';
  const big = Math.max(0, ...values.map(Math.abs));
  return big > 0 && (big < 1e-2 || big >= 1e5) ? '.2~e' : undefined;
}

/** The axis of a panel: `axisFormat`'s format, with 0 written as 0 on a scientific axis (not 0e+0). */
function valueAxis(values: readonly number[], percent = false): Record<string, string> {
  const format = axisFormat(values, percent);
  if (format === undefined) return {};
  return format.endsWith('e') ? { labelExpr: `datum.value === 0 ? '0' : format(datum.value, '${format}')` } : { format };
}

/** The step axis: whole steps only. */
export const STEP_AXIS = { format: 'd', tickMinStep: 1 } as const;
/** The step scale: the run's steps, not from 0. */
const STEP_SCALE = { zero: false, nice: false, padding: 8 } as const;

export type PlotOptions = {
  /** Where to write the files. Defaults to `RUN_DIR/plots`. */
  out?: string;
  /** File formats. Defaults to `['svg', 'png']`. */
  formats?: ('svg' | 'png')[];
};

async function render(spec: vl.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Renders a run's metrics; returns the files written. */
export async function plotRun(runDir: string, options: PlotOptions = {}): Promise<string[]> {
  const file = path.join(runDir, 'metrics.jsonl');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new InputError(`Cannot read ${file}: ${(err as Error).message} (plot takes a run directory of justgrpo sft or train)`);
  }
  const rows: Record<string, number>[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      rows.push(JSON.parse(line));
    } catch {
      // a line cut short by a kill: skip it
    }
  }
  const long = rows.flatMap((r) =>
    CURVES.filter((c) => typeof r[c.key] === 'number' && Number.isFinite(r[c.key])).map((c) => ({ step: r.step!, metric: c.key, value: r[c.key]! })),
  );
  if (long.length === 0) throw new InputError(`${file} has no metrics to plot`);
  const out = options.out ?? path.join(runDir, 'plots');
  const formats = options.formats ?? ['svg', 'png'];
  await mkdir(out, { recursive: true });
  const series = (key: string) => long.filter((d) => d.metric === key);
  const smoothed = (key: string) => {
    const xs = series(key);
    return ema(xs.map((d) => d.value)).map((value, i) => ({ step: xs[i]!.step, value }));
  };
  // The raw reward of each step as points (a step's batch is noisy), its EMA as the line to read.
  const rewardLayers = (raw: string, smooth: string) => [
    { data: { values: series('reward').map((d) => ({ ...d, series: raw })) }, mark: { type: 'point', filled: true, size: 30, opacity: 0.6 } },
    { data: { values: smoothed('reward').map((d) => ({ ...d, series: smooth })) }, mark: { type: 'line', strokeWidth: 2 } },
  ];
  const panels = CURVES.filter((c) => series(c.key).length > 0).map((c) => {
    const encoding = {
      x: { field: 'step', type: 'quantitative', title: 'step', axis: STEP_AXIS, scale: STEP_SCALE },
      y: { field: 'value', type: 'quantitative', title: c.unit, scale: { zero: false }, axis: valueAxis(series(c.key).map((d) => d.value), c.percent) },
    };
    if (c.key === 'reward') {
      const raw = 'per step', smooth = `EMA (${EMA_WEIGHT})`;
      return {
        title: c.title, width: 480, height: 120,
        encoding: { ...encoding, color: { field: 'series', type: 'nominal', title: null, scale: { domain: [raw, smooth] } } },
        layer: rewardLayers(raw, smooth),
      };
    }
    return { title: c.title, width: 480, height: 110, data: { values: series(c.key) }, mark: { type: 'line', point: { size: 16 } }, encoding };
  });
  const charts: [string, vl.TopLevelSpec][] = [['metrics', { vconcat: panels, spacing: 24, resolve: { scale: { color: 'independent' } } } as vl.TopLevelSpec]];
  if (series('reward').length > 0 || series('eval/reward').length > 0) {
    const raw = 'rollout reward, per step', smooth = `rollout reward, EMA (${EMA_WEIGHT})`, held = 'held-out reward';
    const all = [...series('reward'), ...series('eval/reward')].map((d) => d.value);
    charts.push(['reward', {
      width: 560, height: 300, title: 'reward during training',
      encoding: {
        x: { field: 'step', type: 'quantitative', title: 'step', axis: STEP_AXIS, scale: STEP_SCALE },
        y: { field: 'value', type: 'quantitative', title: 'mean reward', axis: valueAxis(all) },
        color: {
          field: 'series', type: 'nominal', title: null, legend: { labelLimit: 400, orient: 'bottom' },
          scale: { domain: [...(series('reward').length ? [raw, smooth] : []), ...(series('eval/reward').length ? [held] : [])] },
        },
      },
      layer: [
        ...rewardLayers(raw, smooth),
        { data: { values: series('eval/reward').map((d) => ({ ...d, series: held })) }, mark: { type: 'line', point: true, strokeDash: [6, 3] } },
      ],
    } as vl.TopLevelSpec]);
  }
  const written: string[] = [];
  for (const [name, spec] of charts) written.push(...(await writeChart(spec, out, name, formats)));
  return written;
}

/** Renders one vega-lite spec to OUT/NAME.svg and/or .png (OUT must exist); returns the files written. */
export async function writeChart(spec: vl.TopLevelSpec, out: string, name: string, formats: ('svg' | 'png')[] = ['svg', 'png']): Promise<string[]> {
  const written: string[] = [];
  const svg = await render({ $schema: 'https://vega.github.io/schema/vega-lite/v5.json', background: 'white', ...spec } as vl.TopLevelSpec);
  if (formats.includes('svg')) {
    await writeFile(path.join(out, `${name}.svg`), svg);
    written.push(path.join(out, `${name}.svg`));
  }
  if (formats.includes('png')) {
    const png = new Resvg(svg, { fitTo: { mode: 'zoom', value: 2 }, font: { loadSystemFonts: true } }).render().asPng();
    await writeFile(path.join(out, `${name}.png`), png);
    written.push(path.join(out, `${name}.png`));
  }
  return written;
}
