import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { axisFormat, ema, plotRun } from '../../lib/plot.js';
import { tmpDir } from '../helpers/tmp.js';

const tmp = tmpDir();

describe('plotRun', () => {
  it('renders the curves of metrics.jsonl to SVG and PNG, skipping a cut-short last line', async () => {
    const lines = Array.from({ length: 5 }, (_, i) => JSON.stringify({ step: i + 1, reward: 0.1 * i, loss: 1 / (i + 1), grad_norm: 0.5 }));
    writeFileSync(path.join(tmp, 'metrics.jsonl'), lines.join('\n') + '\n' + JSON.stringify({ step: 3, 'eval/reward': 0.25 }) + '\n{"step": 6, "rew');
    const files = await plotRun(tmp);
    expect(files.map((f) => path.basename(f)).sort()).toEqual(['metrics.png', 'metrics.svg', 'reward.png', 'reward.svg']);
    const svg = readFileSync(path.join(tmp, 'plots', 'reward.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('held-out reward');
    const png = readFileSync(path.join(tmp, 'plots', 'metrics.png'));
    expect(png.subarray(1, 4).toString()).toBe('PNG');
  });

  it('panels have titles and units; a learning rate of 5e-5 reads 5e-5, fractions read in percent, steps are whole', async () => {
    const dir = path.join(tmp, 'units');
    const lines = Array.from({ length: 4 }, (_, i) => JSON.stringify({ step: i + 1, reward: [0.5, 0.2, 0.4, 0.3][i], learning_rate: 5e-5, frac_reward_zero_std: 0.25 * i, loss: 1e-9 * i }));
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'metrics.jsonl'), lines.join('\n') + '\n');
    await plotRun(dir, { formats: ['svg'] });
    const svg = readFileSync(path.join(dir, 'plots', 'metrics.svg'), 'utf8');
    const texts = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
    for (const t of ['rollout reward (mean per completion)', 'learning rate', 'groups with equal rewards (no learning signal)', '% of groups', 'EMA (0.6)', 'per step', 'step'])
      expect(texts, t).toContain(t);
    expect(texts).toContain('5e-5');
    expect(texts.filter((t) => /^\d+%$/.test(t!)).length).toBeGreaterThan(2);
    // Step ticks are whole numbers only.
    for (const t of ['1.5', '2.5', '3.5', '1.2', '1.4', '2.2']) expect(texts).not.toContain(t);
  });

  it('ema is TensorBoard smoothing with its bias correction', () => {
    expect(ema([1, 1, 1])).toEqual([1, 1, 1].map(() => expect.closeTo(1, 12)));
    const w = 0.6;
    const s1 = (1 - w) * 2, s2 = w * s1 + (1 - w) * 4;
    expect(ema([2, 4])).toEqual([expect.closeTo(s1 / (1 - w), 12), expect.closeTo(s2 / (1 - w ** 2), 12)]);
  });

  it('axisFormat: percent for fractions, scientific for tiny or huge values', () => {
    expect(axisFormat([5e-5])).toBe('.2~e');
    expect(axisFormat([3e6])).toBe('.2~e');
    expect(axisFormat([0.3, 12])).toBeUndefined();
    expect(axisFormat([0.25], true)).toBe('.0%');
  });

  it('a directory without metrics is a clear error', async () => {
    await expect(plotRun(path.join(tmp, 'nope'))).rejects.toThrow(/Cannot read .*metrics\.jsonl.*run directory/);
  });
});
