// `npm run bench`: the engine next to the PyTorch reference of the same algorithm on this machine,
// in one run, as medians and ratios. Sections: forward pass, tokenizer, rewards (where built).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Benchmark from 'benchmark';

import { LladaModel, charTokenizerFiles, Tokenizer, toRawConfig } from '../dist/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const quick = process.argv.includes('--quick');

export const CONFIGS = {
  tiny: { dModel: 256, nLayers: 4, nHeads: 4, nKvHeads: 4, mlpHiddenSize: 768, vocabSize: 104 },
  small: { dModel: 1024, nLayers: 8, nHeads: 16, nKvHeads: 16, mlpHiddenSize: 2816, vocabSize: 512 },
};

export function modelConfig(c) {
  return {
    ...c, headDim: c.dModel / c.nHeads, embeddingSize: c.vocabSize, maxSequenceLength: 4096, ropeTheta: 10000,
    rmsNormEps: 1e-5, maskTokenId: c.vocabSize - 1, eosTokenId: c.vocabSize - 2, padTokenId: c.vocabSize - 2, bosTokenId: c.vocabSize - 3,
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export async function timeMedian(fn, runs) {
  await fn(); // warm-up
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    times.push((performance.now() - t0) / 1000);
  }
  return median(times);
}

/** The python3 that has torch (Debian's python3-torch lives under /usr/bin/python3), or null. */
export function torchPython() {
  for (const py of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return null;
}

/**
 * Runs a PyTorch bench script under each thread setting and keeps the fastest: torch's intra-op
 * threads and OpenBLAS's threads compete for the same cores, and which split wins depends on shape.
 */
export function torchBest(py, script, spec, settings = [[1, 2], [2, 1]]) {
  let best = null;
  for (const [torchThreads, blasThreads] of settings) {
    const r = spawnSync(py, [path.join(here, script), JSON.stringify({ ...spec, threads: torchThreads })], {
      encoding: 'utf8',
      env: { ...process.env, OPENBLAS_NUM_THREADS: String(blasThreads), OMP_NUM_THREADS: String(blasThreads) },
    });
    if (r.status !== 0) throw new Error(`${script} failed: ${r.stderr}`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop());
    if (!best || out.median_s < best.median_s) best = { ...out, setting: `torch ${torchThreads} / BLAS ${blasThreads}` };
  }
  return best;
}

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  for (const r of rows) console.log(r.map((c, i) => String(c).padEnd(widths[i])).join('  '));
}

async function benchForward(py) {
  console.log('\n## Forward pass, fp32 CPU (logits for every position)');
  const rows = [['config', 'tokens', 'ours tok/s', 'PyTorch tok/s', 'PyTorch threads', 'ratio']];
  const shapes = quick ? { tiny: [4, 64] } : { tiny: [8, 128], small: [4, 128] };
  for (const [name, [B, T]] of Object.entries(shapes)) {
    const config = modelConfig(CONFIGS[name]);
    const model = await LladaModel.random(config, { seed: 0 });
    const ids = Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 31 + t * 17) % config.vocabSize));
    const runs = name === 'tiny' ? 10 : 5;
    const ours = (B * T) / (await timeMedian(() => model.logits(ids), runs));
    await model.dispose();
    let torchRate = 'n/a', setting = 'python3-torch not installed', ratio = 'n/a';
    if (py) {
      const t = torchBest(py, 'torch_forward.py', { config: toRawConfig(config), batch: B, seq: T, runs });
      torchRate = ((B * T) / t.median_s).toFixed(0);
      setting = t.setting;
      ratio = `${(ours / Number(torchRate)).toFixed(2)}x`;
    }
    rows.push([`${name} (d ${config.dModel}, ${config.nLayers} layers)`, `${B}x${T}`, ours.toFixed(0), torchRate, setting, ratio]);
  }
  table(rows);
}

async function benchTokenizer() {
  console.log('\n## Tokenizer (JS side, benchmark.js)');
  const files = charTokenizerFiles();
  const tok = Tokenizer.fromJSON(JSON.parse(files['tokenizer.json']), JSON.parse(files['tokenizer_config.json']));
  const text = 'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. '.repeat(10);
  await new Promise((resolve) => {
    new Benchmark.Suite()
      .add('encode 1 KB (character tokenizer)', () => tok.encode(text))
      .add('chat template + encode', () => tok.encodeChat([{ role: 'user', content: text }]))
      .on('cycle', (e) => console.log(String(e.target)))
      .on('complete', resolve)
      .run({ async: false });
  });
}

async function main() {
  const py = torchPython();
  console.log(`justgrpo bench (${quick ? 'quick' : 'full'}); PyTorch: ${py ?? 'not found (apt-get install python3-torch)'}`);
  await benchForward(py);
  await benchTokenizer();
  if (existsSync(path.join(here, 'rewards.mjs'))) {
    console.log('\n## Rewards');
    const { bench } = await import('./rewards.mjs');
    await bench();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
