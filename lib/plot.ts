// `justgrpo plot RUN_DIR`: the curves of metrics.jsonl as SVG (vega-lite, rendered by vega without a
// browser) and PNG (resvg).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vl from 'vega-lite';

import { InputError } from './errors.js';

/** Metrics drawn, in order, when a run has them. */
const CURVES = [
  'reward', 'eval/reward', 'loss', 'grad_norm', 'learning_rate', 'entropy', 'completions/mean_length',
  'frac_reward_zero_std', 'clip_ratio/region_mean', 'kl', 'tokens_per_second', 'step_time',
];

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
    CURVES.filter((k) => typeof r[k] === 'number' && Number.isFinite(r[k])).map((k) => ({ step: r.step, metric: k, value: r[k]! })),
  );
  if (long.length === 0) throw new InputError(`${file} has no metrics to plot`);
  const metrics = CURVES.filter((k) => long.some((d) => d.metric === k));
  const out = options.out ?? path.join(runDir, 'plots');
  const formats = options.formats ?? ['svg', 'png'];
  await mkdir(out, { recursive: true });
  const charts: [string, vl.TopLevelSpec][] = [
    ['metrics', {
      data: { values: long },
      facet: { row: { field: 'metric', type: 'nominal', sort: metrics, title: null } },
      spec: {
        width: 480, height: 110,
        mark: { type: 'line', point: { size: 12 } },
        encoding: {
          x: { field: 'step', type: 'quantitative', title: 'step' },
          y: { field: 'value', type: 'quantitative', title: null, scale: { zero: false } },
        },
      },
      resolve: { scale: { y: 'independent' } },
    }],
  ];
  const rewardRows = long.filter((d) => d.metric === 'reward' || d.metric === 'eval/reward');
  if (rewardRows.length > 0)
    charts.push(['reward', {
      data: { values: rewardRows },
      width: 560, height: 300, title: 'reward',
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'step', type: 'quantitative' },
        y: { field: 'value', type: 'quantitative', title: 'mean reward' },
        color: { field: 'metric', type: 'nominal', title: null },
      },
    }]);
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
