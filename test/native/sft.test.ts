// `justgrpo sft` end to end: learning, checkpoints, bad configs, and exact resume after SIGKILL.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { loadModel } from '../../lib/index.js';
import { parseSftConfig, runSft, type SftConfigInput } from '../../lib/train/sft.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const tmp = tmpDir();
const data = path.join(root, 'examples', 'data', 'arith-tiny.jsonl');

function config(over: Partial<SftConfigInput> = {}): SftConfigInput {
  return {
    model: { init: { dModel: 64, nLayers: 2, nHeads: 4, mlpHiddenSize: 128, maxSequenceLength: 96, seed: 1, initStd: 0.05 } },
    data: { train: data },
    batchSize: 8, learningRate: 3e-3, maxSteps: 12, saveSteps: 3, saveTotalLimit: 2, seed: 4,
    ...over,
  };
}

const metrics = (dir: string) =>
  readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number });

describe('sft', () => {
  it('lowers the loss, writes metrics and keeps the last checkpoints', async () => {
    const out = path.join(tmp, 'learn');
    const r = await runSft({ config: parseSftConfig(config({ maxSteps: 40, saveSteps: 10, outputDir: out }), 'test') });
    expect(r.steps).toBe(40);
    const m = metrics(out);
    expect(m.map((x) => x.step)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    const first = m.slice(0, 5).reduce((a, x) => a + x.loss, 0) / 5;
    const last = m.slice(-5).reduce((a, x) => a + x.loss, 0) / 5;
    expect(last).toBeLessThan(first * 0.6);
    expect(readdirSync(out).filter((d) => d.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-30', 'checkpoint-40']);
    const ckpt = path.join(out, 'checkpoint-40');
    for (const f of ['config.json', 'model.safetensors', 'optimizer.safetensors', 'trainer_state.json', 'tokenizer.json'])
      expect(existsSync(path.join(ckpt, f)), f).toBe(true);
    const state = JSON.parse(readFileSync(path.join(ckpt, 'trainer_state.json'), 'utf8'));
    expect(state).toMatchObject({ kind: 'sft', step: 40, examplesSeen: 320, seed: 4 });
    const model = await loadModel(ckpt);
    expect(model.config.dModel).toBe(64);
    await model.dispose();
  });

  it('a run killed with SIGKILL and resumed gives bit-identical losses and weights', async () => {
    const full = path.join(tmp, 'full');
    await runSft({ config: parseSftConfig(config({ outputDir: full }), 'test') });

    const cfgFile = path.join(tmp, 'kill.json');
    const killed = path.join(tmp, 'killed');
    writeFileSync(cfgFile, JSON.stringify(config({ outputDir: killed })));
    const child = spawn(process.execPath, [cli, 'sft', '--config', cfgFile], { stdio: 'ignore' });
    // Kill somewhere after the second checkpoint (step 6), mid-step or mid-write.
    let linesAtKill = 0;
    await new Promise<void>((resolve, reject) => {
      const poll = setInterval(() => {
        const file = path.join(killed, 'metrics.jsonl');
        const n = existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).length : 0;
        if (n >= 7) {
          linesAtKill = n;
          child.kill('SIGKILL');
          clearInterval(poll);
        }
      }, 2);
      child.on('exit', (code, signal) => {
        clearInterval(poll);
        if (signal === 'SIGKILL') resolve();
        else reject(new Error(`the run finished (code ${code}) before it could be killed`));
      });
    });
    expect(linesAtKill).toBeLessThan(12);
    // No checkpoint directory is half written: every checkpoint-N has its trainer state.
    for (const d of readdirSync(killed).filter((n) => /^checkpoint-\d+$/.test(n)))
      expect(existsSync(path.join(killed, d, 'trainer_state.json'))).toBe(true);

    const resumed = spawnSync(process.execPath, [cli, 'sft', '--resume', killed], { encoding: 'utf8' });
    expect(resumed.status, resumed.stderr).toBe(0);
    const a = metrics(full), b = metrics(killed);
    expect(b.map((x) => x.step)).toEqual(a.map((x) => x.step));
    expect(b.map((x) => x.loss)).toEqual(a.map((x) => x.loss));
    const wa = readFileSync(path.join(full, 'checkpoint-12', 'model.safetensors'));
    const wb = readFileSync(path.join(killed, 'checkpoint-12', 'model.safetensors'));
    expect(wb.equals(wa)).toBe(true);
    const oa = readFileSync(path.join(full, 'checkpoint-12', 'optimizer.safetensors'));
    expect(readFileSync(path.join(killed, 'checkpoint-12', 'optimizer.safetensors')).equals(oa)).toBe(true);
  });

  it('--max-steps on resume extends a finished run', async () => {
    const out = path.join(tmp, 'extend');
    await runSft({ config: parseSftConfig(config({ maxSteps: 3, outputDir: out }), 'test') });
    const r = await runSft({ resume: out, overrides: { maxSteps: 5 } });
    expect(r.steps).toBe(5);
    expect(metrics(out).map((x) => x.step)).toEqual([1, 2, 3, 4, 5]);
  });

  it.each([
    [{ learningRate: 'fast' }, /`learningRate`: Invalid input: expected number, received string/],
    [{ batchSize: 0 }, /`batchSize`/],
    [{ lrSchedulerType: 'step' }, /`lrSchedulerType`/],
    [{ unknownField: 1 }, /unknown key `unknownField`/],
  ])('refuses a bad config %o', (patch, message) => {
    expect(() => parseSftConfig({ ...config(), ...patch }, 'cfg.json')).toThrow(message);
  });

  it('refuses to write over another run and a checkpoint of another command', async () => {
    const out = path.join(tmp, 'twice');
    await runSft({ config: parseSftConfig(config({ maxSteps: 1, outputDir: out }), 'test') });
    await expect(runSft({ config: parseSftConfig(config({ maxSteps: 1, outputDir: out }), 'test') })).rejects.toThrow(/already holds a run/);
    const state = path.join(out, 'checkpoint-1', 'trainer_state.json');
    writeFileSync(state, readFileSync(state, 'utf8').replace('"kind": "sft"', '"kind": "grpo"'));
    await expect(runSft({ resume: out })).rejects.toThrow(/written by `justgrpo grpo`, not `justgrpo sft`/);
  });

  it('a data file with a malformed line names file:line', async () => {
    const bad = path.join(tmp, 'bad.jsonl');
    writeFileSync(bad, '{"prompt": "a", "response": "b"}\n{oops\n');
    await expect(runSft({ config: parseSftConfig(config({ data: { train: bad }, outputDir: path.join(tmp, 'b') }), 'test') })).rejects.toThrow(
      `${bad}:2: not valid JSON`,
    );
  });

  it('the CLI runs examples/sft-tiny.json settings and reports one clear error for a missing config', () => {
    const r = spawnSync(process.execPath, [cli, 'sft', '--config', path.join(tmp, 'nope.json')], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^justgrpo: Cannot read .*nope\.json/);
    const ok = spawnSync(process.execPath, [cli, 'sft', '--config', path.join(root, 'examples', 'sft-tiny.json'), '--out', path.join(tmp, 'ex'), '--max-steps', '2', '--json'], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    const lines = ok.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.at(-1)).toMatchObject({ event: 'done', steps: 2 });
  });
});
