// Resource faults: a checkpoint write that runs out of disk (a small tmpfs, when the tests run as
// root where mounting works; a file-size limit, RLIMIT_FSIZE, everywhere) fails with one clear
// message and leaves the previous checkpoint intact; a request that does not fit in memory fails
// before anything is allocated, naming the bytes it needed.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { InsufficientMemoryError, loadModel, LladaModel, charModelConfig } from '../../lib/index.js';
import { TrainingSession } from '../../lib/train/session.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const tmp = tmpDir();
const data = path.join(root, 'examples', 'data', 'arith-tiny.jsonl');

function sftConfig(out: string, over: Record<string, unknown> = {}): string {
  const file = path.join(tmp, `cfg-${path.basename(out)}.json`);
  writeFileSync(file, JSON.stringify({
    model: { init: { dModel: 32, nLayers: 1, nHeads: 2, mlpHiddenSize: 48, maxSequenceLength: 96, seed: 1 } },
    data: { train: data }, batchSize: 4, maxSteps: 6, saveSteps: 1, saveTotalLimit: 10, outputDir: out, seed: 2, ...over,
  }));
  return file;
}

/** Runs the CLI in a shell with `prefix` (e.g. a ulimit) before it; returns status and stderr. */
function cliRun(args: string[], prefix = ''): { status: number | null; stderr: string } {
  const quoted = [process.execPath, cli, ...args].map((a) => `'${a}'`).join(' ');
  const r = spawnSync('bash', ['-c', `${prefix} exec ${quoted}`], { encoding: 'utf8', env: { ...process.env, JUSTGRPO_NUM_THREADS: '1' } });
  return { status: r.status, stderr: r.stderr };
}

const checkpoints = (out: string) => readdirSync(out).filter((n) => /^checkpoint-\d+$/.test(n)).map((n) => Number(n.split('-')[1])).sort((a, b) => a - b);

/** The kept checkpoint is whole: it loads, and its optimizer state is there. */
async function expectIntact(dir: string) {
  for (const f of ['config.json', 'model.safetensors', 'optimizer.safetensors', 'trainer_state.json', 'tokenizer.json'])
    expect(existsSync(path.join(dir, f)), `${dir}/${f}`).toBe(true);
  const m = await loadModel(dir);
  expect(m.numParams).toBeGreaterThan(0);
  await m.dispose();
}

describe('disk full during a checkpoint write', () => {
  const mnt = path.join(tmp, 'tmpfs');
  let mounted = false;
  afterAll(() => {
    if (mounted) spawnSync('umount', [mnt]);
  });

  it('a full tmpfs: one clear error, the previous checkpoint intact, resumable once there is room', async () => {
    mkdirSync(mnt, { recursive: true });
    // One checkpoint of this model is about 200 KB: room for two and a half.
    const m = process.getuid?.() === 0 ? spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=520k', 'tmpfs', mnt], { encoding: 'utf8' }) : null;
    if (!m || m.status !== 0) {
      console.log(`skipped the tmpfs case: mounting a tmpfs needs root (${m ? m.stderr.trim() : 'not root'}); the RLIMIT_FSIZE case below covers the same path`);
      return;
    }
    mounted = true;
    const out = path.join(mnt, 'run');
    const r = cliRun(['sft', '--config', sftConfig(out)]);
    expect(r.status).toBe(1);
    const kept = checkpoints(out);
    expect(kept.length).toBeGreaterThanOrEqual(1);
    const last = kept.at(-1)!;
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(
      `^justgrpo: Cannot write checkpoint ${out}/checkpoint-${last + 1}: .*No space left on device \\(the disk is full or a size limit was hit: free space and resume\\); nothing was lost: the newest complete checkpoint is ${out}/checkpoint-${last}$`));
    expect(readdirSync(out).filter((n) => /\.(tmp|old)-/.test(n))).toEqual([]);
    await expectIntact(path.join(out, `checkpoint-${last}`));
    // Room again (older checkpoints removed): the run resumes and finishes.
    for (const s of kept.slice(0, -1)) rmSync(path.join(out, `checkpoint-${s}`), { recursive: true });
    const again = cliRun(['sft', '--resume', out, '--max-steps', String(last + 1)]);
    expect(again.stderr).not.toMatch(/Cannot write/);
    expect(again.status).toBe(0);
    expect(checkpoints(out).at(-1)).toBe(last + 1);
  }, 120_000);

  it('a file-size limit (RLIMIT_FSIZE) on the resumed run: clear error, the previous checkpoint intact', async () => {
    const out = path.join(tmp, 'fsize');
    const first = cliRun(['sft', '--config', sftConfig(out, { maxSteps: 2 })]);
    expect(first.status, first.stderr).toBe(0);
    // 100 KB per file: the optimizer state (about 120 KB) no longer fits. SIGXFSZ ignored: write() fails with EFBIG.
    const r = cliRun(['sft', '--resume', out, '--max-steps', '4'], "ulimit -f 100; trap '' XFSZ;");
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(
      `^justgrpo: Cannot write checkpoint ${out}/checkpoint-3: .*File too large \\(the disk is full or a size limit was hit: free space and resume\\); nothing was lost: the newest complete checkpoint is ${out}/checkpoint-2$`));
    expect(checkpoints(out)).toEqual([1, 2]);
    expect(readdirSync(out).filter((n) => /\.(tmp|old)-/.test(n))).toEqual([]);
    await expectIntact(path.join(out, 'checkpoint-2'));
  }, 120_000);
});

describe('requests that do not fit in memory', () => {
  it('a model far larger than the machine fails before allocating, with the size it needed', async () => {
    const rss = process.memoryUsage().rss;
    // d 16384, 64 layers, mlp 65536: about 275 billion parameters, 1.1 TB in fp32.
    const config = charModelConfig({ dModel: 16384, nLayers: 64, nHeads: 128, mlpHiddenSize: 65536, maxSequenceLength: 512 });
    const t0 = performance.now();
    const err = await LladaModel.random(config).then(() => null, (e: unknown) => e as Error);
    expect(err).toBeInstanceOf(InsufficientMemoryError);
    expect(err!.message).toMatch(/model parameters needs \d{13,} bytes \([\d.]+ MiB\) but only \d+ bytes \([\d.]+ MiB\) are available/);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(process.memoryUsage().rss - rss).toBeLessThan(64 * 1024 * 1024);
  });

  it("a config.json claiming such a model: the error names the file", async () => {
    const dir = path.join(tmp, 'huge-config');
    execFileSync(process.execPath, [cli, 'init', '--out', dir, '--d-model', '32', '--layers', '1', '--heads', '2', '--mlp', '32']);
    const cfgFile = path.join(dir, 'config.json');
    const { readFileSync } = await import('node:fs');
    const c = JSON.parse(readFileSync(cfgFile, 'utf8'));
    writeFileSync(cfgFile, JSON.stringify({ ...c, d_model: 32768, n_heads: 256, n_kv_heads: 256, n_layers: 200, mlp_hidden_size: 100000, mlp_ratio: null }));
    await expect(loadModel(dir)).rejects.toThrow(new RegExp(`^${cfgFile}: the model does not fit: Out of memory: model parameters needs \\d+ bytes`));
  });

  it('training state (gradients and two AdamW moments) that does not fit beside the weights fails as a whole', async () => {
    // About 10M parameters: 40 MB of weights fit under a 100 MB limit, 120 MB of training state do not.
    const m = await LladaModel.random(charModelConfig({ dModel: 512, nLayers: 3, nHeads: 8, mlpHiddenSize: 1536, maxSequenceLength: 64 }));
    const saved = process.env.JUSTGRPO_MEMORY_LIMIT;
    process.env.JUSTGRPO_MEMORY_LIMIT = String(100 * 1024 * 1024);
    try {
      expect(() => TrainingSession.create(m)).toThrow(InsufficientMemoryError);
      expect(() => TrainingSession.create(m)).toThrow(/^Training needs more memory than is available: Out of memory: gradients and AdamW moments needs \d+ bytes \(1[12]\d\.\d MiB\) but only 104857600 bytes/);
    } finally {
      if (saved === undefined) delete process.env.JUSTGRPO_MEMORY_LIMIT;
      else process.env.JUSTGRPO_MEMORY_LIMIT = saved;
      await m.dispose();
    }
  });

  it('a forward pass whose logits do not fit fails before allocating them', async () => {
    const m = await loadModel(path.join(FIXTURES, 'mha_f32'));
    const saved = process.env.JUSTGRPO_MEMORY_LIMIT;
    process.env.JUSTGRPO_MEMORY_LIMIT = String(80 * 1024 * 1024);
    try {
      const T = m.config.maxSequenceLength;
      // 5000 sequences with every position read: 5000 * T rows of embeddingSize logits.
      const ids = Array.from({ length: 5000 }, () => Array.from({ length: T }, (_, t) => t % 10));
      const err = await m.logits(ids).then(() => null, (e: unknown) => e as Error);
      expect(err).toBeInstanceOf(InsufficientMemoryError);
      expect(err!.message).toMatch(/forward: Out of memory: the (logits|forward pass's activations) needs \d+ bytes \([\d.]+ MiB\) but only 83886080 bytes/);
      // Within the limit, the same model still answers.
      expect((await m.logits([[1, 2, 3]])).length).toBe(3 * m.config.embeddingSize);
    } finally {
      if (saved === undefined) delete process.env.JUSTGRPO_MEMORY_LIMIT;
      else process.env.JUSTGRPO_MEMORY_LIMIT = saved;
      await m.dispose();
    }
  });
});
