// The CLI as users run it: the compiled dist/cli/main.js (npm test compiles it first).
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const tmp = tmpDir();
const run = (...args: string[]) => execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describe('justgrpo CLI', () => {
  it('--version prints the package version', () => {
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
    expect(run('--version').trim()).toBe(pkg.version);
  });

  it('init writes a model that info reads', () => {
    const out = path.join(tmp, 'tiny');
    const init = JSON.parse(run('init', '--out', out, '--d-model', '64', '--layers', '2', '--heads', '4', '--kv-heads', '2', '--mlp', '128', '--json'));
    expect(init.out).toBe(out);
    const info = JSON.parse(run('info', '--model', out, '--json'));
    expect(info.numParams).toBe(init.numParams);
    expect(info.config).toMatchObject({ dModel: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, mlpHiddenSize: 128 });
    // 2 * V * d + per layer (2d + d*d*2 + 2*kv*d + 3*d*mlp) + d
    const V = info.config.embeddingSize, d = 64, kv = 32, mlp = 128;
    expect(info.numParams).toBe(2 * V * d + 2 * (2 * d + 2 * d * d + 2 * kv * d + 3 * d * mlp) + d);
    expect(run('info', '--model', out)).toMatch(/parameters\s+\d/);
  });

  it('init is deterministic per seed', () => {
    run('init', '--out', path.join(tmp, 'a'), '--d-model', '32', '--layers', '1', '--heads', '2', '--mlp', '32', '--seed', '5');
    run('init', '--out', path.join(tmp, 'b'), '--d-model', '32', '--layers', '1', '--heads', '2', '--mlp', '32', '--seed', '5');
    run('init', '--out', path.join(tmp, 'c'), '--d-model', '32', '--layers', '1', '--heads', '2', '--mlp', '32', '--seed', '6');
    const w = (d: string) => readFileSync(path.join(tmp, d, 'model.safetensors'));
    expect(w('a').equals(w('b'))).toBe(true);
    expect(w('a').equals(w('c'))).toBe(false);
  });

  it('generate prints completions, NFE and tokens/s as JSON', () => {
    const out = path.join(tmp, 'gen');
    run('init', '--out', out, '--d-model', '32', '--layers', '1', '--heads', '2', '--mlp', '32');
    const r = JSON.parse(run('generate', '--model', out, '--prompt', 'What is 2+3?', '--gen-length', '16', '--block-length', '8', '--steps', '8', '--json'));
    expect(r.nfe).toBe(8);
    expect(r.completions).toHaveLength(1);
    expect(r.completions[0].tokens).toHaveLength(16);
    expect(typeof r.completions[0].text).toBe('string');
    expect(r.tokensPerSecond).toBeGreaterThan(0);
    const ar = JSON.parse(run('generate', '--model', out, '--prompt', 'x', '--raw', '--decoder', 'ar', '--gen-length', '4', '--samples', '3', '--temperature', '1', '--json'));
    expect(ar.promptTokens).toBe(1);
    expect(ar.completions.map((c: { nfe: number }) => c.nfe)).toEqual([4, 4, 4]);
    const bad = spawnSync(process.execPath, [cli, 'generate', '--model', out, '--prompt', 'x', '--gen-length', '10', '--block-length', '4'], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    // The CLI names its flags, not generate()'s option names.
    expect(bad.stderr).toMatch(/^justgrpo: Expected a --block-length that divides --gen-length \(10\)/);
  });

  it('eval scores a JSONL task and writes results.json and samples.jsonl', () => {
    const out = path.join(tmp, 'evalmodel');
    run('init', '--out', out, '--d-model', '32', '--layers', '1', '--heads', '2', '--mlp', '32', '--max-length', '128');
    const task = path.join(tmp, 'task.jsonl');
    writeFileSync(task, [{ question: 'What is 1+1?', answer: '#### 2' }, { question: 'What is 2+2?', answer: '#### 4' }].map((r) => JSON.stringify(r)).join('\n') + '\n');
    const dir = path.join(tmp, 'evalout');
    const r = JSON.parse(run('eval', '--model', out, '--task', task, '--gen-length', '8', '--block-length', '8', '--samples', '2', '--temperature', '1', '--out', dir, '--json'));
    expect(r).toMatchObject({ items: 2, samples: 2, total: 4 });
    expect(r.passAtK).toHaveProperty(['pass@2']);
    expect(r.meanNfe).toBe(8);
    const samples = readFileSync(path.join(dir, 'samples.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(samples).toHaveLength(4);
    expect(samples[0]).toHaveProperty('completion');
  });

  it('a bad model directory is one clear line and exit code 1', () => {
    const r = spawnSync(process.execPath, [cli, 'info', '--model', path.join(tmp, 'nope')], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^justgrpo: Cannot read .*nope\/config\.json/);
  });

  it('a bad flag value is refused', () => {
    const r = spawnSync(process.execPath, [cli, 'init', '--out', path.join(tmp, 'x'), '--layers', 'two'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--layers must be a non-negative integer/);
  });
});
