// What a first hour with the CLI hit, each reproduced once: the shipped model under default
// settings, generate's default gen length on a short model, errors in CLI flags, saving into a
// directory that holds other files, progress after generate settled, and empty runs or tables.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { createTinyModel, loadModel, type LladaModel } from '../../lib/index.js';
import { DEMO_MODEL_DIR } from '../../lib/demo/shipped.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const tmp = tmpDir();
const justgrpo = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd: tmp });
const heldout = path.join(DEMO_MODEL_DIR, 'data', 'heldout.jsonl');
const disposables: LladaModel[] = [];
afterAll(async () => {
  for (const m of disposables) await m.dispose();
});

describe('the shipped model with default settings', () => {
  it('says how it wants prompts: no chat template (it was trained on raw questions)', async () => {
    const model = await loadModel(DEMO_MODEL_DIR);
    disposables.push(model);
    expect(model.tokenizer.hasChatTemplate).toBe(false);
  });

  it('eval scores as well with the defaults as with --raw', () => {
    const plain = justgrpo('eval', '--model', DEMO_MODEL_DIR, '--task', heldout, '--limit', '16', '--json');
    expect(plain.status, plain.stderr).toBe(0);
    const raw = justgrpo('eval', '--model', DEMO_MODEL_DIR, '--task', heldout, '--limit', '16', '--raw', '--json');
    const a = JSON.parse(plain.stdout), b = JSON.parse(raw.stdout);
    expect(a.accuracy).toBeGreaterThanOrEqual(0.25);
    expect(a.accuracy).toBe(b.accuracy);
    // The default gen length (256) does not fit a 128-token model: eval says what it uses instead.
    expect(plain.stderr).toMatch(/--gen-length 32 \(the default 256 does not fit/);
  });

  it("generate's default --gen-length fits a model whose maximum length is 128", () => {
    const r = justgrpo('generate', '--model', DEMO_MODEL_DIR, '--prompt', 'Ann has 8 apples, wins 5, buys 7. How many apples?', '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^justgrpo: --gen-length 64 \(the default 128 does not fit: the model's maximum length is 128 and the prompt has 50 tokens\)/);
    expect(JSON.parse(r.stdout).completions[0].tokens).toHaveLength(64);
    expect(JSON.parse(r.stdout).completions[0].text).toMatch(/####/);
  });
});

describe('CLI errors name CLI flags', () => {
  it('a gen length too long for the model, and a block length that does not divide it', () => {
    const long = justgrpo('generate', '--model', DEMO_MODEL_DIR, '--prompt', 'Ann has 8 apples', '--gen-length', '120', '--block-length', '8');
    expect(long.status).toBe(1);
    expect(long.stderr).toMatch(/^justgrpo: A prompt of \d+ tokens plus --gen-length 120 exceeds the model's maximum length 128\n$/);
    const block = justgrpo('eval', '--model', DEMO_MODEL_DIR, '--task', heldout, '--limit', '2', '--gen-length', '30', '--block-length', '7');
    expect(block.status).toBe(1);
    expect(block.stderr).toContain('--block-length');
    expect(block.stderr).not.toMatch(/blockLength|genLength|\.cpp:\d+/);
    const passk = justgrpo('passk', '--limit', '2', '--samples', '2', '--gen-length', '30', '--block-lengths', '7');
    expect(passk.status).toBe(1);
    expect(passk.stderr).toMatch(/for `--block-lengths` but received/);
  });
});

describe('no empty runs or tables', () => {
  it('eval --limit 0 and --samples 4 at temperature 0 are clear errors', () => {
    const zero = justgrpo('eval', '--model', DEMO_MODEL_DIR, '--task', heldout, '--limit', '0');
    expect(zero.status).not.toBe(0);
    expect(zero.stderr).toMatch(/--limit must be an integer >= 1/);
    const greedy = justgrpo('eval', '--model', DEMO_MODEL_DIR, '--task', heldout, '--samples', '4');
    expect(greedy.status).toBe(1);
    expect(greedy.stderr).toMatch(/^justgrpo: --samples 4 at --temperature 0 draws 4 identical greedy completions per item; give a --temperature > 0/);
  });

  it('train --max-steps 0 is refused before anything is written', () => {
    const config = path.join(tmp, 'grpo.json');
    writeFileSync(config, JSON.stringify({ model: DEMO_MODEL_DIR, data: { train: heldout } }));
    const out = path.join(tmp, 'zero-steps');
    const r = justgrpo('train', '--config', config, '--max-steps', '0', '--out', out);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--max-steps must be an integer >= 1/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('saving into a directory that holds other files', () => {
  it('model.save keeps files it does not write and replaces an earlier save (stale shards removed)', async () => {
    const dir = path.join(tmp, 'mine');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'notes.txt'), 'my notes');
    const model = await createTinyModel({ dModel: 32, nLayers: 1, nHeads: 2, nKvHeads: 2, mlpHiddenSize: 32, maxSequenceLength: 64, seed: 1 });
    disposables.push(model);
    await model.save(dir, { maxShardBytes: 20_000 });
    expect(readdirSync(dir).filter((f) => f.startsWith('model-')).length).toBeGreaterThan(1);
    await model.save(dir);
    expect(readFileSync(path.join(dir, 'notes.txt'), 'utf8')).toBe('my notes');
    expect(readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors', 'notes.txt', 'tokenizer.json', 'tokenizer_config.json']);
    const again = await loadModel(dir);
    disposables.push(again);
    expect(await again.getParameter('model.transformer.ln_f.weight')).toEqual(await model.getParameter('model.transformer.ln_f.weight'));
  });

  it('init --out into a directory with other files keeps them', () => {
    const dir = path.join(tmp, 'init-here');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'keep.me'), 'x');
    const r = justgrpo('init', '--out', dir, '--d-model', '32', '--layers', '1', '--heads', '2', '--mlp', '32');
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(path.join(dir, 'keep.me'), 'utf8')).toBe('x');
    expect(existsSync(path.join(dir, 'model.safetensors'))).toBe(true);
  });
});

describe('demo --quick', () => {
  it('says it is a smoke test whose before/after difference is noise, and points at the full demo', () => {
    const r = justgrpo('demo', '--quick', '--steps', '1', '--out', path.join(tmp, 'demo'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/This was a smoke test: 1 step and 32 problems .* the before\/after difference at this size is noise\. Run `justgrpo demo` \(no --quick\)/);
    // Its plots exist (the PNGs were looked at by eye when the panels changed).
    for (const f of ['metrics.png', 'reward.png', 'accuracy.png']) expect(existsSync(path.join(tmp, 'demo', 'plots', f)), f).toBe(true);
  });
});

describe('generate progress', () => {
  // The engine's last progress call and its completion race to the event loop; without the guard,
  // some of these 30 calls see a progress call after they settled (15 on the dev machine).
  it('onProgress never fires after the promise settled', async () => {
    const model = await loadModel(DEMO_MODEL_DIR);
    disposables.push(model);
    const prompt = model.tokenizer.encode('Ann has 8 apples, wins 5, buys 7.');
    let late = 0, calls = 0;
    for (const decoder of ['low_confidence', 'ar', 'threshold'] as const)
      for (let round = 0; round < 10; round++) {
        let settled = false;
        await model.generate(prompt, {
          decoder, genLength: 32, blockLength: 8, numSamples: (round % 4) + 1, onProgress: () => {
            calls++;
            if (settled) late++;
          },
        });
        settled = true;
        await new Promise((r) => setTimeout(r, 5));
      }
    expect(calls).toBeGreaterThan(0);
    expect(late).toBe(0);
  });
});
