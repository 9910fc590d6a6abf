// The embedded default end to end, small: the shipped base model reproduces from its recipe (a
// prefix of the run, to round-off), and the demo pipeline (SFT a few steps, one JustGRPO step,
// evaluation before and after, plots) runs and reports numbers that hang together.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { readConfigFile } from '../../lib/configfile.js';
import { runDemo, DEMO_QUICK, type DemoSettings } from '../../lib/demo/demo.js';
import { forkingTable, passKTable, runPassK } from '../../lib/demo/passk.js';
import { DEMO_MODEL_DIR, DEMO_RECIPE_DIR, taskItems } from '../../lib/demo/shipped.js';
import { loadModel } from '../../lib/index.js';
import { arithSplits, toJsonl } from '../../lib/tasks/arith.js';
import { parseSftConfig, runSft } from '../../lib/train/sft.js';
import { tmpDir } from '../helpers/tmp.js';

const tmp = tmpDir();
const lines = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);

describe('the shipped demo model', () => {
  it('is a loadable LLaDA directory with the character tokenizer', async () => {
    const model = await loadModel(DEMO_MODEL_DIR);
    try {
      expect(model.numParams).toBeGreaterThan(100_000);
      expect(model.numParams).toBeLessThan(5_000_000);
      expect(model.tokenizer.decode(model.tokenizer.encode('12+9=21\n#### 21'))).toBe('12+9=21\n#### 21');
    } finally {
      await model.dispose();
    }
  });

  // The shipped weights are bit for bit what the recipe gives on this engine (reproduce.sh checks the
  // whole run); an engine change that reorders fp32 sums would reproduce the first steps to
  // round-off only, so losses and gradient norms are compared to 1e-6 relative. The data order,
  // learning rates and token counts match exactly.
  it('reproduces from its recipe: the first SFT steps match the shipped run', async () => {
    const file = await readConfigFile(path.join(DEMO_RECIPE_DIR, 'sft.json'));
    const config = parseSftConfig(file.raw, 'sft.json');
    const out = path.join(tmp, 'sft-prefix');
    const steps = 6;
    await runSft({ config, baseDir: file.baseDir, overrides: { maxSteps: steps, outputDir: out, saveSteps: steps } });
    const ours = lines(path.join(out, 'metrics.jsonl'));
    const shipped = lines(path.join(DEMO_RECIPE_DIR, 'metrics.jsonl')).slice(0, steps);
    expect(ours.map((m) => m.step)).toEqual(shipped.map((m) => m.step));
    for (const key of ['learning_rate', 'num_tokens']) expect(ours.map((m) => m[key]), key).toEqual(shipped.map((m) => m[key]));
    for (const key of ['loss', 'grad_norm'])
      ours.forEach((m, i) => expect(Math.abs(m[key]! - shipped[i]![key]!) / Math.abs(shipped[i]![key]!), `${key} at step ${i + 1}`).toBeLessThan(1e-6));
  });
});

describe('the demo pipeline', () => {
  it('SFT from scratch on the task for a few steps lowers the loss and leaves a loadable checkpoint', async () => {
    const dataFile = path.join(tmp, 'train.jsonl');
    writeFileSync(dataFile, toJsonl(arithSplits({ train: 64, heldout: 0 }, 5).train));
    const out = path.join(tmp, 'sft');
    const r = await runSft({
      config: parseSftConfig({
        model: { init: { dModel: 32, nLayers: 1, nHeads: 2, mlpHiddenSize: 64, maxSequenceLength: 128, seed: 3, initStd: 0.05 } },
        data: { train: dataFile, chatTemplate: false },
        batchSize: 8, learningRate: 1e-2, maxSteps: 12, saveSteps: 12, outputDir: out, seed: 1,
      }, 'test'),
    });
    const m = lines(path.join(out, 'metrics.jsonl'));
    expect(m).toHaveLength(12);
    const mean = (xs: Record<string, number>[]) => xs.reduce((a, x) => a + x.loss!, 0) / xs.length;
    expect(mean(m.slice(-3))).toBeLessThan(mean(m.slice(0, 3)));
    const model = await loadModel(r.checkpoint!);
    expect(model.numParams).toBeGreaterThan(0);
    await model.dispose();
  });

  it('one JustGRPO step from the shipped model changes it, and before / after evaluations and plots are written', async () => {
    // The likelihood at 4 random positions per completion keeps the step (and the test) short.
    const settings: DemoSettings = { ...DEMO_QUICK, grpoSteps: 1, promptsPerStep: 4, numGenerations: 8, lossPositions: 4, evalItems: 8, evalSamples: 3 };
    const out = path.join(tmp, 'demo');
    const events: string[] = [];
    const r = await runDemo({ out, seed: 0, settings, onEvent: (e) => events.push(e.kind) });
    expect(events[0]).toBe('start');
    expect(events).toContain('trainStep');
    expect(events.filter((e) => e === 'evalDone')).toHaveLength(2);
    for (const e of [r.before, r.after]) {
      expect(e.accuracy).toBeGreaterThanOrEqual(0);
      expect(e.accuracy).toBeLessThanOrEqual(1);
      expect(e.parallelAccuracy).toBeGreaterThanOrEqual(0);
      expect(e.parallelAccuracy).toBeLessThanOrEqual(1);
      expect(e.passAtK).toHaveLength(3);
      // pass@k never falls as k grows.
      expect(e.passAtK[1]!).toBeGreaterThanOrEqual(e.passAtK[0]! - 1e-12);
      expect(e.passAtK[2]!).toBeGreaterThanOrEqual(e.passAtK[1]! - 1e-12);
      expect(e.meanLength).toBeGreaterThan(0);
      expect(e.meanLength).toBeLessThanOrEqual(24);
      expect(e.tokensPerSecond).toBeGreaterThan(0);
    }
    const m = lines(r.files.metrics);
    expect(m).toHaveLength(1);
    expect(m[0]!.step).toBe(1);
    // The shipped model is right sometimes, so some group has reward variance and the step moves the weights.
    expect(m[0]!.frac_reward_zero_std).toBeLessThan(1);
    expect(m[0]!.grad_norm).toBeGreaterThan(0);
    const [base, trained] = await Promise.all([loadModel(DEMO_MODEL_DIR), loadModel(r.files.checkpoint)]);
    try {
      const name = 'model.transformer.ff_out.weight';
      const a = await base.getParameter(name), b = await trained.getParameter(name);
      expect(a.some((x, i) => x !== b[i])).toBe(true);
    } finally {
      await base.dispose();
      await trained.dispose();
    }
    const saved = JSON.parse(readFileSync(r.files.results, 'utf8'));
    expect(saved.before.accuracy).toBe(r.before.accuracy);
    for (const f of [...r.files.plots, ...r.files.samples]) expect(existsSync(f), f).toBe(true);
    expect(r.files.plots.some((f) => f.endsWith('accuracy.png'))).toBe(true);
    expect(r.files.plots.some((f) => f.endsWith('reward.svg'))).toBe(true);
    // A second run into the same directory is refused before anything is overwritten.
    await expect(runDemo({ out, settings })).rejects.toThrow(/already holds a demo run/);
  });

  it('passk compares decoders on the same problems and reports entropy by decoding order', async () => {
    const model = await loadModel(DEMO_MODEL_DIR);
    try {
      const { items, chatTemplate } = await taskItems('arith');
      const r = await runPassK(model, 'arith', items.slice(0, 4), { genLength: 24, samples: 2, temperature: 1, seed: 0, blockLengths: [24, 8], chatTemplate });
      expect(r.runs.map((x) => x.spec.name)).toEqual(['ar', 'low_confidence b24', 'low_confidence b8', 'random b24']);
      for (const run of r.runs) {
        expect(run.passAtK).toHaveLength(2);
        expect(run.passAtK[1]!).toBeGreaterThanOrEqual(run.passAtK[0]! - 1e-12);
        expect(run.entropyByOrder).toHaveLength(24);
        expect(run.meanEntropy).toBeGreaterThan(0);
      }
      // In AR order the r-th committed token is the token at position r.
      const ar = r.runs[0]!;
      ar.entropyByOrder.forEach((v, i) => {
        if (Number.isFinite(v)) expect(v).toBeCloseTo(ar.entropyByPosition[i]!, 12);
      });
      expect(ar.commitStepByPosition.slice(0, 5)).toEqual([0, 1, 2, 3, 4]);
      expect(passKTable(r)).toHaveLength(2 + r.runs.length);
      const forks = forkingTable(r);
      expect(forks).toHaveLength(2 + r.runs.length);
      // AR order commits position i at step i, so its forking positions' mean step is their mean position.
      const positions = /positions ([\d, ]+) \(/.exec(forks[0]!)![1]!.split(', ').map(Number);
      const meanPos = positions.reduce((a, b) => a + b, 0) / positions.length;
      expect(forks[2]).toContain(`| ${meanPos.toFixed(1)} / `);
    } finally {
      await model.dispose();
    }
  });
});
