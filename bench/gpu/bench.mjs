// justgrpo's engine on LLaDA-8B's shapes with random bf16 weights made on the device: forward
// tokens/s at two sequence lengths, and decoding tokens/s for the AR rollout (JustGRPO's sampler),
// low-confidence and threshold decoding. Writes JSON for report.mjs.
//
//   node bench/gpu/bench.mjs --json out.json                       # on the GPU (needs dist/ and a CUDA build)
//   node bench/gpu/bench.mjs --backend cpu --preset tiny --json o  # the same logic on the CPU (a dry run)
//
// Decoding is timed over a window of steps (after warm-up steps) and extrapolated to the whole
// generation: every step of a decoder costs the same (the sequence length is fixed), so tokens/s
// is tokens committed in the window over the window's time. Each decoder's run is then cancelled.
import { performance } from 'node:perf_hooks';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { PRESETS, forwardBytes, forwardFlops, numParams, rawConfig } from './shapes.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// dist/model.js, not dist/index.js: its imports are the few packages prepare.sh carries.
const { LladaModel } = await import(path.join(root, 'dist', 'model.js'));
const { parseModelConfig } = await import(path.join(root, 'dist', 'config.js'));
const { nativeInfo } = await import(path.join(root, 'dist', 'native', 'binding.js'));

function args() {
  const a = { preset: 'llada8b', backend: 'cuda', batch: 16, seqs: [512, 1024], prompt: 100, gen: 256, block: 32,
    reps: 3, warmSteps: 2, steps: 6, json: '' };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, ''), v = argv[++i];
    if (k === 'seqs') a.seqs = v.split(',').map(Number);
    else if (k in a) a[k] = typeof a[k] === 'number' ? Number(v) : v;
    else throw new Error(`unknown option --${k}`);
  }
  return a;
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

function randomIds(n, vocab, seed) {
  // Ordinary ids, below the special ones at the top of the vocabulary.
  const hi = vocab > 2000 ? vocab - 1000 : Math.floor(vocab / 2);
  let s = seed >>> 0;
  return Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % hi));
}

async function timeForward(model, p, B, T, reps) {
  const ids = Array.from({ length: B }, (_, b) => randomIds(T, p.vocab, 1000 + b));
  const positions = ids.map(() => [T - 1]);
  await model.logitsAt(ids, positions); // warm-up: buffers grow, cuBLAS picks its kernels
  const ts = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await model.logitsAt(ids, positions);
    ts.push((performance.now() - t0) / 1000);
  }
  const s = median(ts);
  const flops = forwardFlops(p, B * T, T, B);
  return { B, T, s, tokens_per_s: (B * T) / s, tflops: flops / s / 1e12, flops, bytes: forwardBytes(p, B * T) };
}

// Decodes until `warm + steps` progress reports have arrived, timing the last `steps`, then cancels.
async function timeDecode(model, p, a, options) {
  const prompts = Array.from({ length: a.batch }, (_, b) => randomIds(a.prompt, p.vocab, 7 + b));
  const ac = new AbortController();
  const marks = [];
  const t0 = performance.now();
  try {
    await model.generate(prompts, {
      ...options, genLength: a.gen, signal: ac.signal,
      onProgress: (fraction) => {
        marks.push({ t: performance.now(), committed: fraction * a.batch * a.gen });
        if (marks.length >= a.warmSteps + a.steps + 1) ac.abort();
      },
    });
  } catch (err) {
    if (!ac.signal.aborted) throw err;
  }
  const total = (performance.now() - t0) / 1000;
  if (marks.length < 2) return { steps_timed: 0, note: `finished in ${total.toFixed(2)} s before the window` };
  const first = marks[Math.min(a.warmSteps, marks.length - 2)], last = marks[marks.length - 1];
  const window = (last.t - first.t) / 1000, steps = marks.indexOf(last) - marks.indexOf(first);
  const committed = last.committed - first.committed;
  const T = a.prompt + a.gen;
  const stepFlops = forwardFlops(p, a.batch * T, T, a.batch * (options.decoder === 'ar' ? 1 : a.block));
  return {
    G: a.batch, prompt: a.prompt, gen: a.gen, block: options.decoder === 'ar' ? 1 : a.block, steps_timed: steps, s_per_step: window / steps,
    tokens_per_step: committed / steps, tokens_per_s: committed / window, tflops: stepFlops / (window / steps) / 1e12,
  };
}

const a = args();
const p = PRESETS[a.preset];
if (!p) throw new Error(`unknown preset ${a.preset}`);
const maxLen = Math.max(...a.seqs, a.prompt + a.gen);
const config = parseModelConfig(rawConfig(p, maxLen), `(${a.preset} preset)`);
const t0 = performance.now();
const model = await LladaModel.random(config, { backend: a.backend, dtype: 'BF16', seed: 1, initStd: 0.02 });
const res = {
  engine: 'justgrpo', preset: a.preset, backend: a.backend, params: numParams(p), native: nativeInfo(),
  init_s: (performance.now() - t0) / 1000, forward: [], decode: {},
};
try {
  for (const T of a.seqs) {
    const f = await timeForward(model, p, a.batch, T, a.reps);
    res.forward.push(f);
    console.log(`forward B ${f.B} T ${f.T}: ${f.tokens_per_s.toFixed(0)} tok/s, ${f.tflops.toFixed(1)} TFLOP/s (${(f.s * 1e3).toFixed(1)} ms)`);
  }
  const decoders = {
    ar: { decoder: 'ar', temperature: 1, seed: 3 },
    low_confidence: { decoder: 'low_confidence', blockLength: a.block, steps: a.gen, temperature: 0 },
    threshold: { decoder: 'threshold', blockLength: a.block, threshold: 0.9, temperature: 0 },
  };
  for (const [name, opts] of Object.entries(decoders)) {
    const d = await timeDecode(model, p, a, opts);
    res.decode[name] = d;
    console.log(`${name}: ${d.tokens_per_s?.toFixed(1)} tok/s (${d.tokens_per_step?.toFixed(2)} tokens per step, ${(d.s_per_step * 1e3).toFixed(1)} ms per step, ${d.steps_timed} steps timed)`);
  }
} finally {
  await model.dispose();
}
if (a.json) writeFileSync(a.json, JSON.stringify(res, null, 1));
