// Crash safety, end to end: `justgrpo sft` and `justgrpo train` as child processes, killed with
// SIGKILL at random moments (half of the kills aimed at a checkpoint being written: the moment a
// checkpoint-N.tmp-* directory appears, plus a random delay), resumed each time with --resume, and
// checked against an uninterrupted run of the same config:
//   (a) after every kill, every checkpoint-N directory is complete (all files, valid safetensors
//       headers whose data fill the file exactly, trainer_state.json of step N);
//   (b) the final weights and optimizer state equal the uninterrupted run's, byte for byte;
//   (c) metrics.jsonl holds steps 1..maxSteps once each, with the uninterrupted run's losses.
//
// `npm run test:crash [-- KILLS [SEED]]` runs it with more kills (default 8 per command);
// test/native/crash-safety.test.ts runs a short version in `npm test`.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');

const MODEL = { init: { dModel: 32, nLayers: 1, nHeads: 2, mlpHiddenSize: 48, maxSequenceLength: 48, seed: 1, initStd: 0.05 } };
const TIME_FIELDS = /time|per_second/;

function configFor(kind, dir) {
  const data = path.join(dir, 'data.jsonl');
  writeFileSync(data, Array.from({ length: 12 }, (_, i) => JSON.stringify({ prompt: `What is ${i} + ${i + 3}?`, response: `${2 * i + 3}` })).join('\n') + '\n');
  if (kind === 'sft')
    return { model: MODEL, data: { train: data }, batchSize: 4, learningRate: 0.003, maxSteps: 8, saveSteps: 1, saveTotalLimit: 2, seed: 3 };
  const rewards = path.join(dir, 'rewards.mjs');
  writeFileSync(rewards, 'export const even = ({ completionIds }) => completionIds.map((ids) => ids.filter((t) => t % 2 === 0).length / ids.length);\n');
  return {
    model: MODEL, data: { train: data }, rewardModule: rewards, rewardFunctions: ['even'], numGenerations: 4, promptsPerStep: 1,
    maxCompletionLength: 6, temperature: 1, learningRate: 0.01, maxSteps: 6, saveSteps: 1, saveTotalLimit: 2, seed: 3,
  };
}

const command = (kind) => (kind === 'sft' ? 'sft' : 'train');

/** Checks (a): every checkpoint-N directory in `out` is complete. Returns the steps found. */
export function checkCheckpoints(out) {
  const steps = [];
  for (const name of existsSync(out) ? readdirSync(out) : []) {
    const m = /^checkpoint-(\d+)$/.exec(name);
    if (!m) continue;
    const dir = path.join(out, name);
    for (const f of ['config.json', 'model.safetensors', 'optimizer.safetensors', 'trainer_state.json', 'tokenizer.json'])
      if (!existsSync(path.join(dir, f))) throw new Error(`${dir} is missing ${f}`);
    for (const f of ['model.safetensors', 'optimizer.safetensors']) {
      const file = path.join(dir, f);
      const bytes = readFileSync(file);
      const n = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
      let end = 0;
      for (const [k, v] of Object.entries(header)) if (k !== '__metadata__') end = Math.max(end, v.data_offsets[1]);
      if (8 + n + end !== bytes.length) throw new Error(`${file}: header says ${8 + n + end} bytes, the file has ${bytes.length}`);
    }
    const state = JSON.parse(readFileSync(path.join(dir, 'trainer_state.json'), 'utf8'));
    if (state.step !== Number(m[1])) throw new Error(`${dir}/trainer_state.json says step ${state.step}`);
    JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    steps.push(state.step);
  }
  return steps.sort((a, b) => a - b);
}

function metricsOf(out) {
  const file = path.join(out, 'metrics.jsonl');
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

function withoutTimes(m) {
  return Object.fromEntries(Object.entries(m).filter(([k]) => !TIME_FIELDS.test(k)));
}

/**
 * One child run; resolves when it exits or is killed. `aim`: null (no kill), 'checkpoint' (kill
 * while checkpoint-`target` is being written, after 0-12 ms), or 'random' (kill once this child
 * has reported step `target` - 1, or started when that is where it resumes, after a random part
 * of a step's time).
 */
function runChild(args, out, aim, target, stepMs, rand) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, JUSTGRPO_NUM_THREADS: '1' } });
    let stderr = '', stdout = '', done = false, timer = null, reported = -1;
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.on('data', (d) => {
      stdout += d;
      for (let i; (i = stdout.indexOf('\n')) >= 0; stdout = stdout.slice(i + 1)) {
        const line = JSON.parse(stdout.slice(0, i));
        if (line.event === 'start') reported = line.startStep;
        else if (typeof line.step === 'number' && 'loss' in line) reported = line.step;
      }
    });
    let killedDuringWrite = false;
    const kill = () => {
      if (done) return;
      killedDuringWrite = existsSync(out) && readdirSync(out).some((n) => /^checkpoint-\d+\.tmp-/.test(n));
      child.kill('SIGKILL');
    };
    const writing = () => existsSync(out) && readdirSync(out).some((n) => n.startsWith(`checkpoint-${target}.tmp-`));
    const poll = () => {
      if (done) return;
      if (aim === 'checkpoint' && writing()) timer = setTimeout(kill, Math.floor(rand() * 12));
      // A write faster than the poll was missed: kill right after it instead.
      else if (aim === 'checkpoint' && existsSync(path.join(out, `checkpoint-${target}`))) kill();
      else if (aim === 'random' && reported >= target - 1) timer = setTimeout(kill, Math.floor(rand() * stepMs));
      else timer = setTimeout(poll, 1);
    };
    if (aim) poll();
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      done = true;
      if (timer) clearTimeout(timer);
      if (signal === 'SIGKILL') resolve({ killed: true, killedDuringWrite });
      else if (code === 0) resolve({ killed: false });
      else reject(new Error(`justgrpo ${args.join(' ')} exited with ${code}: ${stderr.slice(-2000)}`));
    });
  });
}

/**
 * Runs one command uninterrupted and once with `kills` SIGKILLs and resumes; checks (a), (b), (c).
 * Returns what happened, for the report.
 */
export async function crashTest(kind, { kills = 3, seed = 1, log = () => {} } = {}) {
  let s = seed >>> 0 || 1;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const dir = mkdtempSync(path.join(os.tmpdir(), `jg-crash-${kind}-`));
  try {
    const config = configFor(kind, dir);
    const cfgFile = path.join(dir, 'config.json');
    writeFileSync(cfgFile, JSON.stringify(config));
    const steps = config.maxSteps;

    const full = path.join(dir, 'full');
    const t0 = Date.now();
    const ref = spawnSync(process.execPath, [cli, command(kind), '--config', cfgFile, '--out', full], { encoding: 'utf8', env: { ...process.env, JUSTGRPO_NUM_THREADS: '1' } });
    if (ref.status !== 0) throw new Error(`the uninterrupted ${kind} run failed: ${ref.stderr}`);
    const fullMs = Date.now() - t0;

    // A step's time as the uninterrupted run measured it (optimizer step plus checkpoint, roughly).
    const stepMs = Math.max(5, 2000 * metricsOf(full).reduce((a, m) => a + (m.step_time ?? 0), 0) / steps);
    const out = path.join(dir, 'killed');
    const args = [command(kind), '--config', cfgFile, '--out', out, '--resume', out];
    let killsDone = 0, duringWrite = 0, runs = 0, finished = false;
    const seen = [];
    while (!finished) {
      // Targets spread over the run: a step after the newest checkpoint.
      const newest = checkCheckpoints(out).at(-1) ?? 0;
      const aim = killsDone >= kills || newest >= steps ? null : rand() < 0.5 ? 'checkpoint' : 'random';
      const target = newest + 1 + Math.floor(rand() * Math.min(3, steps - newest));
      const r = await runChild(args, out, aim, target, stepMs, rand);
      runs++;
      const ckpts = checkCheckpoints(out); // (a)
      if (r.killed) {
        killsDone++;
        if (r.killedDuringWrite) duringWrite++;
        seen.push(ckpts.length ? ckpts[ckpts.length - 1] : 0);
        log(`${kind}: kill ${killsDone} (${aim}, step ${target}${r.killedDuringWrite ? ', during a checkpoint write' : ''}), newest checkpoint ${seen.at(-1)}`);
      } else finished = true;
      if (runs > kills + 20) throw new Error(`${kind}: the run did not finish after ${runs} starts`);
    }

    // (b) bit-identical final weights and optimizer state.
    for (const f of ['model.safetensors', 'optimizer.safetensors']) {
      const a = readFileSync(path.join(full, `checkpoint-${steps}`, f)), b = readFileSync(path.join(out, `checkpoint-${steps}`, f));
      if (!a.equals(b)) throw new Error(`${kind}: checkpoint-${steps}/${f} differs from the uninterrupted run's`);
    }
    // (c) every step once, with the uninterrupted run's values.
    const ma = metricsOf(full).filter((m) => 'loss' in m), mb = metricsOf(out).filter((m) => 'loss' in m);
    const got = mb.map((m) => m.step);
    if (got.join() !== Array.from({ length: steps }, (_, i) => i + 1).join()) throw new Error(`${kind}: metrics.jsonl steps are ${got.join(',')}`);
    for (let i = 0; i < steps; i++)
      if (JSON.stringify(withoutTimes(ma[i])) !== JSON.stringify(withoutTimes(mb[i])))
        throw new Error(`${kind}: step ${i + 1} metrics differ: ${JSON.stringify(withoutTimes(ma[i]))} vs ${JSON.stringify(withoutTimes(mb[i]))}`);
    const leftovers = readdirSync(out).filter((n) => /\.(tmp|old)-/.test(n));
    if (leftovers.length) throw new Error(`${kind}: temporaries left after the final run: ${leftovers.join(', ')}`);
    return { kind, kills: killsDone, duringWrite, starts: runs, steps, fullMs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const kills = Number(process.argv[2] ?? 8), seed = Number(process.argv[3] ?? Date.now() % 1e6);
  if (!existsSync(cli)) {
    console.error(`crash-test: ${cli} is missing; run npm run build first`);
    process.exit(1);
  }
  console.log(`crash-test: ${kills} kills per command, seed ${seed}`);
  let failed = 0;
  for (const kind of ['sft', 'grpo']) {
    try {
      const r = await crashTest(kind, { kills, seed, log: (m) => console.log(`  ${m}`) });
      console.log(`${kind}: ${r.kills} kills (${r.duringWrite} during a checkpoint write), ${r.starts} starts; checkpoints always complete, final weights and optimizer state bit-identical, metrics steps 1..${r.steps} once each`);
    } catch (err) {
      failed++;
      console.error(`${kind}: FAILED: ${err.message}`);
    }
  }
  process.exit(failed ? 1 : 0);
}
