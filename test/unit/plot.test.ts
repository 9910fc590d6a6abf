import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { plotRun } from '../../lib/plot.js';
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
    expect(svg).toContain('eval/reward');
    const png = readFileSync(path.join(tmp, 'plots', 'metrics.png'));
    expect(png.subarray(1, 4).toString()).toBe('PNG');
  });

  it('a directory without metrics is a clear error', async () => {
    await expect(plotRun(path.join(tmp, 'nope'))).rejects.toThrow(/Cannot read .*metrics\.jsonl.*run directory/);
  });
});
