// justgrpo's engine on LLaDA-8B's shapes with random bf16 weights made on the device: forward
// tokens/s at two sequence lengths, and decoding tokens/s for the AR rollout (JustGRPO's sampler),
// low-confidence and threshold decoding; then training steps (SFT: every masked row; JustGRPO: one
// row per sequence) on a model with the preset's layer shapes and --train-layers layers (the
// whole 8B's gradients, moments and master weights need 144 GB), per layer and extrapolated to the
// preset's layer count, stated as such. Writes JSON for report.mjs.
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
const { nativeInfo, createNativeTrainer } = await import(path.join(root, 'dist', 'native', 'binding.js'));
const { internals } = await import(path.join(root, 'dist', 'model.js'));

function args() {
  const a = { preset: 'llada8b', backend: 'cuda', batch: 16, seqs: [512, 1024], prompt: 100, gen: 256, block: 32,
    reps: 3, warmSteps: 2, steps: 6, json: '', trainLayers: 2, trainBatch: 8, trainT: 512 };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase()), v = argv[++i];
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
// One optimizer step: the loss's forward and backward over B sequences of T tokens, then AdamW
// (clipping, non-finite check) on every parameter. SFT selects half the rows (a masked-diffusion
// batch); JustGRPO one row per sequence (the AR-order position), through the fused GRPO head.
async function timeTrain(p, a, layers) {
  const tp = { ...p, layers };
  const cfg = parseModelConfig(rawConfig(tp, a.trainT), `(${a.preset} preset, ${layers} layers)`);
  const model = await LladaModel.random(cfg, { backend: a.backend, dtype: 'BF16', seed: 2, initStd: 0.02 });
  const trainer = createNativeTrainer(internals.get(model).engine, { checkpointActivations: false });
  try {
    const B = a.trainBatch, T = a.trainT, N = B * T;
    const tokens = Int32Array.from(Array.from({ length: B }, (_, b) => randomIds(T, p.vocab, 50 + b)).flat());
    const starts = Int32Array.from({ length: B + 1 }, (_, b) => b * T);
    const out = {};
    for (const [kind, R] of [['sft', N / 2], ['grpo', B]]) {
      const rows = Int32Array.from({ length: R }, (_, r) => (kind === 'sft' ? 2 * r : r * T + T / 2));
      const targets = Int32Array.from(rows, (r) => tokens[r]);
      const weights = new Float32Array(R).fill(1 / R);
      const grpo = { oldLogprobs: new Float32Array(R).fill(-5), advantages: Float32Array.from({ length: R }, (_, r) => (r % 2 ? 1 : -1)),
        epsilonLow: 0.2, epsilonHigh: 0.28, beta: 0, excludeIds: Int32Array.from([p.vocab - 128]) };
      const once = async () => {
        trainer.zeroGrad();
        if (kind === 'sft') await trainer.crossEntropyBackward(tokens, starts, rows, targets, weights);
        else await trainer.policyLossBackward(tokens, starts, rows, targets, weights, grpo);
        await trainer.step({ lr: 1e-6, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 });
      };
      await once(); // warm-up: buffers grow, cuBLAS picks its kernels
      const ts = [];
      for (let r = 0; r < a.reps; r++) {
        const t0 = performance.now();
        await once();
        ts.push((performance.now() - t0) / 1000);
      }
      const s = median(ts);
      // Backward costs twice the forward's GEMM FLOPs.
      const flops = 3 * forwardFlops(tp, N, T, R);
      out[kind] = { B, T, rows: R, layers, s_per_step: s, tokens_per_s: N / s, tflops: flops / s / 1e12 };
    }
    return out;
  } finally {
    trainer.dispose();
    await model.dispose();
  }
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
// Written now and again after training, so a time limit hit while training keeps the rest.
if (a.json) writeFileSync(a.json, JSON.stringify(res, null, 1));
if (a.trainLayers > 0) {
  try {
    // Two layer counts, so the per-layer time excludes the embedding, the head and their optimizer work.
    const one = await timeTrain(p, a, 1), more = await timeTrain(p, a, a.trainLayers + 1);
    res.train = {};
    for (const kind of Object.keys(more)) {
      const perLayer = (more[kind].s_per_step - one[kind].s_per_step) / a.trainLayers;
      const fixed = one[kind].s_per_step - perLayer;
      res.train[kind] = { ...more[kind], s_per_layer: perLayer, s_fixed: fixed, s_per_step_extrapolated: fixed + p.layers * perLayer, layers_extrapolated: p.layers };
      console.log(`train ${kind} B ${a.trainBatch} T ${a.trainT} rows ${more[kind].rows}: ${(more[kind].s_per_step * 1e3).toFixed(1)} ms per step with ` +
        `${a.trainLayers + 1} layers (${more[kind].tflops.toFixed(1)} TFLOP/s); ${(perLayer * 1e3).toFixed(1)} ms per layer, ` +
        `${res.train[kind].s_per_step_extrapolated.toFixed(2)} s per step extrapolated to ${p.layers} layers`);
    }
  } catch (err) {
    res.train = { error: err.message };
    console.log(`training benchmark failed: ${err.message}`);
  }
}
if (a.json) writeFileSync(a.json, JSON.stringify(res, null, 1));
