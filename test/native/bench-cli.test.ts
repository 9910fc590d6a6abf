// `justgrpo bench`: the measurements a user sizes a run with, on a model directory, without writing to it.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const tmp = tmpDir();
const run = (...args: string[]) => execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

type Step = { seconds: number; rollout: number; reward: number; loss: number; optimizer: number; gemm: number; attention: number; other: number; gemmGflops: number; pageFaults: number; rolloutShared: number };

describe('justgrpo bench', () => {
  const dir = path.join(tmp, 'model');
  run('init', '--out', dir, '--d-model', '64', '--layers', '2', '--heads', '4', '--mlp', '128');
  const weights = () => readFileSync(path.join(dir, 'model.safetensors'));

  it('measures forward, both decoders and JustGRPO steps, and leaves the model directory as it was', () => {
    const before = weights();
    const r = JSON.parse(run('bench', '--model', dir, '--num-generations', '2', '--prompt-length', '6', '--gen-length', '4', '--runs', '2', '--json'));
    expect(weights().equals(before)).toBe(true);
    expect(r).toMatchObject({ numGenerations: 2, promptLength: 6, genLength: 4, runs: 2, model: { dModel: 64, nLayers: 2, backend: 'cpu' } });
    expect(r.forward.tokens).toBe(2 * 10);
    expect(r.forward.tokensPerSecond).toBeCloseTo(r.forward.tokens / r.forward.seconds, 6);
    expect(r.decode.map((d: { decoder: string; nfe: number }) => [d.decoder, d.nfe])).toEqual([['ar', 4], ['low_confidence', 4]]);
    expect(r.grpo.steps).toHaveLength(2);
    expect(r.grpo.keptMiB).toBeGreaterThan(0);
    expect(r.grpo.firstStepSeconds).toBeGreaterThan(0);
    for (const s of r.grpo.steps as Step[]) {
      // The phases tile the step; the op clocks fit inside it.
      const phases = s.rollout + s.reward + s.loss + s.optimizer;
      expect(phases).toBeLessThanOrEqual(s.seconds + 1e-3);
      expect(phases).toBeGreaterThan(0.8 * s.seconds);
      expect(s.gemm).toBeGreaterThan(0);
      expect(s.gemm + s.attention).toBeLessThanOrEqual(s.seconds);
      expect(s.other).toBeCloseTo(s.seconds - s.gemm - s.attention, 9);
      expect(s.gemmGflops).toBeGreaterThan(0);
      expect(s.rolloutShared).toBeGreaterThanOrEqual(0);
      expect(s.rolloutShared).toBeLessThan(1);
    }
    expect(r.grpo.medianSeconds).toBeCloseTo((r.grpo.steps[0].seconds + r.grpo.steps[1].seconds) / 2, 9);
  });

  it('runs single sections, with rollout reuse off on request, and prints a table without --json', () => {
    const r = JSON.parse(run('bench', '--size', 'tiny', '--only', 'grpo', '--num-generations', '2', '--gen-length', '3', '--runs', '1', '--reuse-rollout-memory-mb', '0', '--json'));
    expect(r.forward).toBeUndefined();
    expect(r.decode).toBeUndefined();
    expect(r.model).toMatchObject({ dModel: 256, nLayers: 4, vocabSize: 104 });
    expect(r.grpo.keptMiB).toBe(0);
    const text = run('bench', '--model', dir, '--only', 'forward,decode', '--num-generations', '1', '--gen-length', '2', '--runs', '1');
    expect(text).toMatch(/^forward \(\d+ tokens/m);
    expect(text).toMatch(/^decode low_confidence \(block 2\), T 1: .* NFE 2$/m);
    expect(text).not.toMatch(/JustGRPO/);
  });

  it('bad options are one clear error each', () => {
    const fail = (...args: string[]) => {
      const r = spawnSync(process.execPath, [cli, 'bench', ...args], { encoding: 'utf8' });
      expect(r.status).not.toBe(0);
      return r.stderr;
    };
    expect(fail('--only', 'grpo,sft')).toMatch(/--only takes a comma-separated list of forward, decode, grpo/);
    expect(fail('--num-generations', '0')).toMatch(/--num-generations must be an integer >= 1/);
    expect(fail('--size', 'huge')).toMatch(/--size must be one of tiny, small/);
    expect(fail('--model', path.join(tmp, 'nowhere'))).toMatch(/nowhere.*config\.json/);
    const long = fail('--model', dir, '--gen-length', '100000', '--only', 'forward');
    expect(long).toMatch(/promptLength \+ genLength \(100032\) exceeds the model's maxSequenceLength/);
    expect(long.trim().split('\n').filter((l) => !l.startsWith('bench:'))).toHaveLength(1);
  });
});
