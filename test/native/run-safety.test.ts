// Runs that must not destroy data or end silently: resume writes only where it was told to, one
// run per output directory (a lock), reward functions that never settle or overflow the group
// statistics, SIGINT, output directories that cannot be used; and the run loop frees kept
// rollout activations before evaluating.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { ConfigError, InputError, StorageError } from '../../lib/index.js';
import { parseGrpoConfig, type GrpoConfigInput } from '../../lib/train/grpo-config.js';
import { runGrpo } from '../../lib/train/grpo.js';
import { LOCK_FILE } from '../../lib/train/lock.js';
import type { TrainingSession } from '../../lib/train/session.js';
import { parseSftConfig, runSft } from '../../lib/train/sft.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const tmp = tmpDir();
const sftData = path.join(root, 'examples', 'data', 'arith-tiny.jsonl');
const TINY = { dModel: 32, nLayers: 1, nHeads: 2, mlpHiddenSize: 48, maxSequenceLength: 96, seed: 1 };

const sft = (out: string, over: Record<string, unknown> = {}) =>
  parseSftConfig({ model: { init: TINY }, data: { train: sftData }, batchSize: 4, maxSteps: 3, saveSteps: 1, outputDir: out, seed: 2, ...over }, 'test');
const lines = (file: string) => readFileSync(file, 'utf8').trim().split('\n');

const grpoData = path.join(tmp, 'prompts.jsonl');
writeFileSync(grpoData, Array.from({ length: 4 }, (_, i) => JSON.stringify({ prompt: `Say ${i}`, answer: String(i) })).join('\n') + '\n');

/** A reward module exporting `body` as the function `r`. */
function rewardModule(name: string, body: string): string {
  const file = path.join(tmp, `${name}.mjs`);
  writeFileSync(file, `export function r({ completions }) { ${body} }\n`);
  return file;
}

const grpo = (out: string, over: Partial<GrpoConfigInput> = {}) =>
  parseGrpoConfig({
    model: { init: { ...TINY, maxSequenceLength: 64 } }, data: { train: grpoData }, numGenerations: 4, promptsPerStep: 2,
    maxCompletionLength: 6, learningRate: 3e-3, maxSteps: 2, saveSteps: 1, outputDir: out, seed: 1,
    rewardModule: rewardModule('digits', 'return completions.map((c) => (c.match(/\\d/g) ?? []).length / 6);'), rewardFunctions: ['r'],
    ...over,
  }, 'test');

function cliRun(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, JUSTGRPO_NUM_THREADS: '1' }, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('resume writes only where it was told to', () => {
  it('--config F --resume DIR (no checkpoint in DIR) starts in DIR and leaves F\'s outputDir alone', async () => {
    const finished = path.join(tmp, 'finished');
    await runSft({ config: sft(finished) });
    const before = readFileSync(path.join(finished, 'metrics.jsonl'), 'utf8');
    const dir = path.join(tmp, 'resume-here');
    const r = await runSft({ config: sft(finished), resume: dir });
    expect(r.outputDir).toBe(dir);
    expect(existsSync(r.checkpoint!)).toBe(true);
    expect(r.checkpoint!.startsWith(dir + path.sep)).toBe(true);
    expect(readFileSync(path.join(finished, 'metrics.jsonl'), 'utf8')).toBe(before);
    expect(readdirSync(finished).filter((n) => n.startsWith('checkpoint-'))).toEqual(['checkpoint-2', 'checkpoint-3']);
  });

  it('refuses to start over a directory whose metrics belong to a run that was not interrupted', async () => {
    const dir = path.join(tmp, 'metrics-only');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'metrics.jsonl'), '{"step":1,"loss":1}\n{"step":2,"loss":0.5}\n');
    const err = await runSft({ config: sft(dir), resume: dir }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/holds no checkpoint to resume, and its metrics\.jsonl belongs to a run that was not interrupted; nothing was changed/);
    expect(lines(path.join(dir, 'metrics.jsonl'))).toHaveLength(2);
    expect(existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });

  it('a run killed before its first checkpoint (its lock left behind) starts over in the same directory', async () => {
    const dir = path.join(tmp, 'killed-early');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'metrics.jsonl'), '{"step":1,"loss":9}\n');
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: Number(dead.stdout), host: hostname(), started: '' }));
    const r = await runSft({ config: sft(dir), resume: dir });
    expect(r.steps).toBe(3);
    expect(lines(path.join(dir, 'metrics.jsonl')).map((l) => JSON.parse(l).step)).toEqual([1, 2, 3]);
    expect(existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });

  it('--out naming another directory than --resume is refused', async () => {
    const dir = path.join(tmp, 'resume-a');
    await expect(runSft({ config: sft(dir), resume: dir, overrides: { outputDir: path.join(tmp, 'resume-b') } })).rejects.toThrow(/--out names another directory/);
  });

  it('a fresh run refuses a directory that holds checkpoints', async () => {
    const dir = path.join(tmp, 'has-checkpoints');
    await runSft({ config: sft(dir, { maxSteps: 1 }) });
    writeFileSync(path.join(dir, 'metrics.jsonl'), '');
    const { rmSync } = await import('node:fs');
    rmSync(path.join(dir, 'metrics.jsonl'));
    await expect(runSft({ config: sft(dir) })).rejects.toThrow(/already holds a run \(checkpoint-1\)/);
    expect(existsSync(path.join(dir, 'checkpoint-1'))).toBe(true);
  });
});

describe('one run per output directory', () => {
  it('a second run into the directory of a running one fails at once, naming the holder', async () => {
    const dir = path.join(tmp, 'locked');
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const first = runSft({ config: sft(dir, { maxSteps: 2 }) }, { onGradients: async (step) => {
      if (step === 1) {
        started();
        await held;
      }
    } });
    await running;
    const err = await runSft({ config: sft(dir, { maxSteps: 2 }) }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(`${dir} is in use by another run (pid ${process.pid}, since ${JSON.parse(readFileSync(path.join(dir, LOCK_FILE), 'utf8')).started}); wait for it or choose another --out`);
    release();
    const r = await first;
    expect(lines(path.join(dir, 'metrics.jsonl')).map((l) => JSON.parse(l).step)).toEqual([1, 2]);
    expect(r.steps).toBe(2);
    expect(existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });

  it('a damaged (empty) lock is taken over; no lock temporaries are left', async () => {
    const dir = path.join(tmp, 'empty-lock');
    mkdirSync(dir);
    writeFileSync(path.join(dir, LOCK_FILE), '');
    const r = await runSft({ config: sft(dir, { maxSteps: 1 }) });
    expect(r.steps).toBe(1);
    expect(readdirSync(dir).filter((n) => n.startsWith(LOCK_FILE))).toEqual([]);
  });

  it('a lock held on another host is refused with the host named', async () => {
    const dir = path.join(tmp, 'other-host');
    mkdirSync(dir);
    writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: 1, host: 'elsewhere.example', started: 'then' }));
    await expect(runSft({ config: sft(dir) })).rejects.toThrow(`${dir} is in use by a run on host elsewhere.example (pid 1, since then); if that run is gone, delete ${path.join(dir, LOCK_FILE)}`);
  });
});

describe('reward functions that never settle or overflow', () => {
  it('a reward that never settles fails the run after rewardTimeout (onRewardError: error)', async () => {
    const mod = rewardModule('never', 'return new Promise(() => {});');
    const err = await runGrpo({ config: grpo(path.join(tmp, 'never'), { rewardModule: mod, rewardTimeout: 0.5 }) }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/^Reward function `r` failed: did not return within rewardTimeout \(0\.5 s\)/);
  });

  it("with onRewardError: 'zero' the timed-out scores are 0 and counted, and the run finishes", async () => {
    const mod = rewardModule('never2', 'return new Promise(() => {});');
    const out = path.join(tmp, 'never-zero');
    const r = await runGrpo({ config: grpo(out, { rewardModule: mod, rewardTimeout: 0.2, onRewardError: 'zero', maxSteps: 1 }) });
    expect(r.steps).toBe(1);
    expect(JSON.parse(lines(path.join(out, 'metrics.jsonl'))[0]!)['rewards/r/errors']).toBe(8);
  });

  it('the CLI exits non-zero with the message (it exited 0 with nothing written)', () => {
    const file = path.join(tmp, 'never-cli.json');
    writeFileSync(file, JSON.stringify({ ...grpo(path.join(tmp, 'never-cli')), rewardModule: rewardModule('never3', 'return new Promise(() => {});'), rewardTimeout: 1 }));
    const r = cliRun(['train', '--config', file]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^justgrpo: Reward function `r` failed: did not return within rewardTimeout \(1 s\)/m);
  });

  it('a command left waiting on nothing (a reward module whose import never finishes) exits 1 with a message, not 0', () => {
    const mod = path.join(tmp, 'stuck-import.mjs');
    writeFileSync(mod, 'await new Promise(() => {});\nexport function r({ completions }) { return completions.map(() => 0); }\n');
    const file = path.join(tmp, 'stuck-cli.json');
    writeFileSync(file, JSON.stringify({ ...grpo(path.join(tmp, 'stuck-cli')), rewardModule: mod }));
    const r = cliRun(['train', '--config', file]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^justgrpo: the command stopped without finishing: it was waiting on something that will never happen/m);
  });

  it('rewards of +-1e308 (finite, but their mean and std are not) stop the run instead of training on NaN', async () => {
    const mod = rewardModule('huge', 'return completions.map((_, i) => (i % 2 ? 1e308 : -1e308));');
    const err = await runGrpo({ config: grpo(path.join(tmp, 'huge'), { rewardModule: mod }) }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/the rewards of prompt 0 at step 1 \(from -1e\+308 to 1e\+308\) give a non-finite mean or standard deviation/);
  });

  it("with onRewardError: 'zero' the overflowing groups get advantage 0 and are counted", async () => {
    const mod = rewardModule('huge2', 'return completions.map((_, i) => (i < 4 ? (i % 2 ? 1e308 : -1e308) : i % 3));');
    const out = path.join(tmp, 'huge-zero');
    await runGrpo({ config: grpo(out, { rewardModule: mod, onRewardError: 'zero', maxSteps: 1 }) });
    const m = JSON.parse(lines(path.join(out, 'metrics.jsonl'))[0]!);
    expect(m.reward_errors).toBe(4);
    expect(Number.isFinite(m.loss)).toBe(true);
    expect(m.reward_std).not.toBeNull();
  });
});

describe('interruption and unusable output directories (CLI)', () => {
  it('SIGINT to the process group: the step finishes, a checkpoint is written, exit 130, and the summary says where to resume', async () => {
    const out = path.join(tmp, 'sigint');
    const file = path.join(tmp, 'sigint.json');
    writeFileSync(file, JSON.stringify(grpo(out, { maxSteps: 1000, saveSteps: 1000 })));
    // Its own process group, signalled as a whole, as Ctrl-C in a terminal does (the tokenizer
    // process, which every GRPO step uses, must not die of it).
    const child = spawn(process.execPath, [cli, 'train', '--config', file, '--json'], { env: { ...process.env, JUSTGRPO_NUM_THREADS: '1' }, detached: true });
    let stderr = '', stdout = '', sent = false;
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.on('data', (d) => {
      stdout += d;
      // Once: a second SIGINT ends the process at once, as Ctrl-C twice should.
      if (!sent && /"step":2,/.test(stdout)) {
        sent = true;
        process.kill(-child.pid!, 'SIGINT');
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code, stderr).toBe(130);
    const m = /interrupted after step (\d+); the checkpoint (\S+) holds it: resume with --resume (\S+)$/m.exec(stderr);
    expect(m, stderr).not.toBeNull();
    expect(m![2]).toBe(path.join(out, `checkpoint-${m![1]}`));
    expect(m![3]).toBe(out);
    expect(existsSync(m![2]!)).toBe(true);
    expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toMatchObject({ event: 'done', interrupted: true });
    const again = cliRun(['train', '--resume', out, '--max-steps', String(Number(m![1]) + 1)]);
    expect(again.status, again.stderr).toBe(0);
  });

  it('--out naming a file: one line, no stack trace, nothing written', () => {
    const file = path.join(tmp, 'a-file');
    writeFileSync(file, 'keep me');
    const cfg = path.join(tmp, 'out-file.json');
    writeFileSync(cfg, JSON.stringify(sft(path.join(tmp, 'unused'))));
    const r = cliRun(['sft', '--config', cfg, '--out', file]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`justgrpo: Cannot use ${file} as the output directory: a file of that name is in the way; choose another --out\n`);
    expect(readFileSync(file, 'utf8')).toBe('keep me');
    const below = cliRun(['sft', '--config', cfg, '--out', path.join(file, 'run')]);
    expect(below.stderr).toMatch(/^justgrpo: Cannot use .* as the output directory: a file is in the way \(a path component is not a directory\); choose another --out\n$/);
  });

  it('--out in a location that cannot be written: one line, no stack trace', () => {
    const cfg = path.join(tmp, 'out-ro.json');
    writeFileSync(cfg, JSON.stringify(sft(path.join(tmp, 'unused'))));
    // /sys refuses new directories even to root (EPERM or EROFS).
    const r = cliRun(['sft', '--config', cfg, '--out', '/sys/justgrpo-test-run']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^justgrpo: Cannot use \/sys\/justgrpo-test-run as the output directory: (permission denied|the file system is read-only); choose another --out\n$/);
  });

  it('library: an unusable outputDir is a StorageError', async () => {
    const file = path.join(tmp, 'another-file');
    writeFileSync(file, '');
    await expect(runSft({ config: sft(file) })).rejects.toThrow(StorageError);
  });
});

describe('kept rollout activations', () => {
  it('are freed before each evaluation (and were held after the rollout); GRPO runs call onCheckpoint', async () => {
    const out = path.join(tmp, 'kept');
    let session: TrainingSession | null = null;
    const heldAtGradients: number[] = [], heldAtEval: number[] = [], checkpoints: string[] = [];
    await runGrpo({ config: grpo(out, { maxSteps: 2, eval: { data: grpoData, evalSteps: 1, limit: 2, decoder: 'low_confidence', genLength: 4, blockLength: 4, steps: 4 } }) }, {
      onGradients: (_step, s) => {
        session = s;
        heldAtGradients.push(s.keptSteps().bytes);
      },
      onEval: ({ step }) => {
        if (step > 0) heldAtEval.push(session!.keptSteps().bytes);
      },
      onCheckpoint: (dir) => checkpoints.push(path.basename(dir)),
    });
    // The shared run loop gives GRPO the hook only SFT had.
    expect(checkpoints).toEqual(['checkpoint-1', 'checkpoint-2']);
    expect(heldAtGradients).toHaveLength(2);
    expect(heldAtGradients.every((b) => b > 0)).toBe(true);
    expect(heldAtEval).toEqual([0, 0]);
  });
});
