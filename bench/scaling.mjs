// The JustGRPO step's scaling study (`npm run bench:scaling`, and part of the full `npm run bench`):
// step time against gen length, group size and model size, ours and the PyTorch reference, with
// where the time goes (rollout / loss / optimizer; GEMM / attention / other) and a plot; then the
// position-subsampled loss (lossPositions): time saved against the growth of the gradient's variance.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { LladaModel, toRawConfig } from '../dist/index.js';
import { benchModelConfig, runBench } from '../dist/bench.js';
import { writeChart } from '../dist/plot.js';
import { GRPOTrainer } from '../dist/train/grpo.js';
import { parseGrpoConfig } from '../dist/train/grpo-config.js';
import { table, torchBest, torchPython } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const parity = { parity: ({ completionIds }) => completionIds.map((ids) => ids.filter((x) => x % 2 === 0).length / ids.length) };

async function grpoTrainer(name, over) {
  const config = benchModelConfig(name);
  const model = await LladaModel.random(config, { seed: 0 });
  const cfg = parseGrpoConfig({ model: 'x', data: { train: 'x' }, numGenerations: 8, promptsPerStep: 1, maxCompletionLength: 32, learningRate: 1e-5, maxSteps: 1000, ...over }, 'bench');
  const trainer = await GRPOTrainer.create(model, cfg, { rewardFunctions: parity });
  const prompt = { ids: Array.from({ length: 32 }, (_, t) => (t * 7) % (config.vocabSize - 3)), text: '', columns: {}, source: '' };
  return { config, model, trainer, prompt };
}

/** One step after a warm-up, with its phases and op classes (seconds): `justgrpo bench`'s JustGRPO section. */
async function timedStep(name, G, gen) {
  const model = await LladaModel.random(benchModelConfig(name), { seed: 0 });
  try {
    const r = await runBench(model, { sections: ['grpo'], runs: 1, numGenerations: G, promptLength: 32, genLength: gen });
    return r.grpo.steps[0];
  } finally {
    await model.dispose();
  }
}

export async function benchScaling({ quick = false } = {}) {
  const py = torchPython();
  console.log('\n## JustGRPO step scaling (1 prompt of 32 tokens; ours with rollout reuse; PyTorch: torch 1 / BLAS 2)');
  const points = [];
  const rows = [['config', 'G', 'gen', 'ours s', 'rollout', 'loss', 'optim', 'GEMM', 'attention', 'other', 'PyTorch s', 'speed-up']];
  const gens = quick ? [32, 64] : [32, 64, 128, 256];
  const torchGens = quick ? [32] : [32, 64, 128];
  const cases = [
    ...gens.map((gen) => ['tiny', 8, gen]),
    ...(quick ? [] : [['tiny', 4, 32], ['tiny', 16, 32], ['small', 8, 32]]),
  ];
  for (const [name, G, gen] of cases) {
    const r = await timedStep(name, G, gen);
    let theirs = null;
    if (py && (name === 'tiny' ? torchGens.includes(gen) : !quick)) {
      const t = torchBest(py, 'torch_train.py', { task: 'grpo', config: toRawConfig(benchModelConfig(name)), prompt: 32, samples: G, gen, runs: 1, warmup: name === 'tiny' && gen <= 64 }, [[1, 2]]);
      theirs = t.median_s;
    }
    const pct = (x) => `${((100 * x) / r.seconds).toFixed(0)}%`;
    rows.push([name, G, gen, r.seconds.toFixed(2), r.rollout.toFixed(2), r.loss.toFixed(2), r.optimizer.toFixed(2),
      pct(r.gemm), pct(r.attention), pct(r.other),
      theirs === null ? '' : theirs.toFixed(2), theirs === null ? '' : `${(theirs / r.seconds).toFixed(2)}x`]);
    points.push({ name, G, gen, who: 'ours', seconds: r.seconds });
    if (theirs !== null) points.push({ name, G, gen, who: 'PyTorch', seconds: theirs });
  }
  table(rows);
  const out = path.join(here, 'out');
  mkdirSync(out, { recursive: true });
  const series = points.filter((p) => p.name === 'tiny' && p.G === 8);
  const files = await writeChart({
    data: { values: series },
    width: 480, height: 300, title: 'JustGRPO step time, tiny model, G 8 (log-log; O(L^2) has slope 2)',
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'gen', type: 'quantitative', title: 'gen length', scale: { type: 'log', base: 2 } },
      y: { field: 'seconds', type: 'quantitative', title: 'seconds per step', scale: { type: 'log' } },
      color: { field: 'who', type: 'nominal', title: null },
    },
  }, out, 'grpo-scaling');
  console.log(`plot: ${files.join(', ')}`);
  if (series.length >= 2) {
    const ours = series.filter((p) => p.who === 'ours');
    const a = ours[0], b = ours[ours.length - 1];
    console.log(`growth exponent (ours, gen ${a.gen} -> ${b.gen}): ${(Math.log(b.seconds / a.seconds) / Math.log(b.gen / a.gen)).toFixed(2)}`);
  }
  await benchLossPositions(quick);
}

/**
 * lossPositions K: the loss phase's time, and the variance of the K-position gradient around the
 * full one on the same rollouts (relative: E||g_K - g||^2 / ||g||^2 over several position draws).
 */
async function benchLossPositions(quick) {
  const L = 32, draws = quick ? 3 : 6;
  console.log(`\n## lossPositions (tiny, G 8, gen ${L}): loss time and gradient variance over ${draws} position draws`);
  const rows = [['K', 'loss + optimizer s', 'saved', 'relative variance']];
  // A learning rate far below fp32 resolution keeps the weights fixed, so every draw sees the same model.
  const base = { learningRate: 1e-30, maxGradNorm: 0 };
  const { model, trainer, prompt } = await grpoTrainer('tiny', { ...base, reuseRolloutMemoryMB: 0 });
  const roll = await model.generate([prompt.ids], { decoder: 'ar', genLength: L, temperature: 1, numSamples: 8, seed: 3 });
  const rewards = parity.parity({ completionIds: roll.tokens });
  const r = { promptIds: [prompt.ids], completionIds: roll.tokens, rewards, oldLogprobs: roll.logprobs };
  const names = model.parameterInfo().map((p) => p.name);
  const grads = () => names.map((n) => trainer.session.getGrad(n));
  const t0 = performance.now();
  await trainer.trainOnRollouts(r, 0);
  const fullTime = (performance.now() - t0) / 1000;
  const full = grads();
  const norm2 = full.reduce((a, g) => a + g.reduce((s, x) => s + x * x, 0), 0);
  rows.push([L, fullTime.toFixed(2), '', '0']);
  for (const K of quick ? [8] : [16, 8, 4]) {
    const { model: m2, trainer: t2 } = await grpoTrainer('tiny', { ...base, reuseRolloutMemoryMB: 0, lossPositions: K });
    for (const n of names) await m2.setParameter(n, await model.getParameter(n));
    let time = 0, dev = 0;
    for (let d = 0; d < draws; d++) {
      const t1 = performance.now();
      await t2.trainOnRollouts(r, d);
      time += (performance.now() - t1) / 1000;
      const g = names.map((n) => t2.session.getGrad(n));
      dev += g.reduce((a, gi, i) => a + gi.reduce((s, x, j) => s + (x - full[i][j]) ** 2, 0), 0);
    }
    rows.push([K, (time / draws).toFixed(2), `${(100 * (1 - time / draws / fullTime)).toFixed(0)}%`, (dev / draws / norm2).toFixed(3)]);
    t2.dispose();
    await m2.dispose();
  }
  trainer.dispose();
  await model.dispose();
  table(rows);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await benchScaling({ quick: process.argv.includes('--quick') });
