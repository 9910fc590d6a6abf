// The CUDA backend against the CPU backend, in the style of ggml's test-backend-ops: each op on
// random inputs (fixed seed per case, never zero), several shapes, compared by normalised mean squared
// error, NMSE = sum (cuda - cpu)^2 / sum cpu^2, with a threshold per op and dtype; then whole models:
// logits of the tiny fixture models, decoding agreement, log-probs, save/load.
//
// Plain JavaScript so that two runners share it: vitest (test/gpu/*.test.ts, in a checkout with
// node_modules) and bench/gpu/parity.mjs (on a GPU machine with Node and no npm registry).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Whether this process can run the CUDA backend, and if not, why (printed by skipped tests). */
export function gpuStatus(native) {
  if (!native.backends.includes('cuda') || !native.cuda)
    return { ok: false, reason: 'this build has no CUDA backend (build it with `npm run build:cuda`)' };
  const n = native.cuda.deviceCount();
  if (n === 0) return { ok: false, reason: `no CUDA device: ${native.cuda.unavailableReason()}` };
  return { ok: true, reason: `${n} CUDA device(s)` };
}

// mulberry32: a small seeded generator; normal draws by Box-Muller, nudged away from exact zero.
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => {
    const u = Math.max(next(), 1e-12), v = next();
    const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    return z === 0 ? 1e-3 : z;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    normal: (n, std = 1) => Float32Array.from({ length: n }, () => normal() * std),
  };
}

/** sum (a - b)^2 / sum b^2; NaN or inf anywhere gives Infinity (a failure). */
export function nmse(a, b) {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i];
    if (!Number.isFinite(x) || !Number.isFinite(y)) return Infinity;
    num += (x - y) ** 2;
    den += y * y;
  }
  return den === 0 ? (num === 0 ? 0 : Infinity) : num / den;
}

// Thresholds. fp32: both backends round the same fp32 products, summed in different orders: NMSE
// lands near 1e-14; 1e-10 leaves room and still catches any indexing mistake (those give ~1).
// bf16: each rounding to bf16 has relative error <= 2^-9, so NMSE per rounding <= 4e-6 (mean
// ~1.3e-6); an op with two or three roundings stays below 2e-5. Attention adds the rounding of q
// and k inside the softmax's exponent: 1e-4.
const TOL = {
  F32: { embedding: 1e-12, rmsnorm: 1e-10, matmul: 1e-10, rope: 1e-12, attention: 1e-10, swiglu: 1e-10, residual: 1e-14 },
  BF16: { embedding: 1e-5, rmsnorm: 2e-5, matmul: 2e-5, rope: 2e-5, attention: 1e-4, swiglu: 2e-5, residual: 1e-5 },
};

function starts(lengths) {
  const s = [0];
  for (const l of lengths) s.push(s[s.length - 1] + l);
  return Int32Array.from(s);
}

// Each case: inputs and sizes for testOp, made from the case's own seed.
const SHAPES = [
  ['embedding', 'N=7,C=64,V=50', (r) => ({ inputs: { wte: r.normal(50 * 64), tokens: Int32Array.from({ length: 7 }, () => r.int(50)) }, sizes: { N: 7, C: 64 } })],
  ['embedding', 'N=300,C=4096,V=1000', (r) => ({ inputs: { wte: r.normal(1000 * 4096), tokens: Int32Array.from({ length: 300 }, () => r.int(1000)) }, sizes: { N: 300, C: 4096 } })],
  ['rmsnorm', 'N=7,C=64', (r) => ({ inputs: { inp: r.normal(7 * 64, 3), weight: r.normal(64) }, sizes: { N: 7, C: 64, eps: 1e-5 } })],
  ['rmsnorm', 'N=33,C=4096', (r) => ({ inputs: { inp: r.normal(33 * 4096), weight: r.normal(4096) }, sizes: { N: 33, C: 4096, eps: 1e-5 } })],
  ['matmul', 'N=7,C=32,OC=48', (r) => ({ inputs: { inp: r.normal(7 * 32), weight: r.normal(48 * 32) }, sizes: { N: 7, C: 32, OC: 48 } })],
  ['matmul', 'N=1,C=4096,OC=512', (r) => ({ inputs: { inp: r.normal(4096), weight: r.normal(512 * 4096, 0.02) }, sizes: { N: 1, C: 4096, OC: 512 } })],
  ['matmul', 'N=100,C=1024,OC=3000', (r) => ({ inputs: { inp: r.normal(100 * 1024), weight: r.normal(3000 * 1024, 0.03) }, sizes: { N: 100, C: 1024, OC: 3000 } })],
  ['rope', 'N=9,H=4,hd=8', (r) => ({ inputs: { x: r.normal(9 * 4 * 8), pos: Int32Array.from({ length: 9 }, (_, i) => i) }, sizes: { N: 9, H: 4, hd: 8, maxLen: 16, theta: 10000 } })],
  ['rope', 'N=40,H=32,hd=128', (r) => ({ inputs: { x: r.normal(40 * 32 * 128), pos: Int32Array.from({ length: 40 }, () => r.int(4096)) }, sizes: { N: 40, H: 32, hd: 128, maxLen: 4096, theta: 500000 } })],
  ...[
    ['S=[7],H=4,KV=4,hd=8', [7], 4, 4, 8],
    ['S=[5,33,1],H=8,KV=2,hd=4', [5, 33, 1], 8, 2, 4],
    ['S=[100,37],H=4,KV=1,hd=64', [100, 37], 4, 1, 64],
    ['S=[300],H=2,KV=2,hd=128', [300], 2, 2, 128],
    ['S=[17,64,65],H=4,KV=2,hd=128', [17, 64, 65], 4, 2, 128],
    ['S=[40],H=2,KV=1,hd=256', [40], 2, 1, 256],
  ].map(([name, lens, H, KV, hd]) => ['attention', name, (r) => {
    const s = starts(lens), N = s[s.length - 1];
    return { inputs: { q: r.normal(N * H * hd), k: r.normal(N * KV * hd), v: r.normal(N * KV * hd), seqStarts: s }, sizes: { H, KV, hd } };
  }]),
  ['swiglu', 'N=7,M=48', (r) => ({ inputs: { gate: r.normal(7 * 48, 2), up: r.normal(7 * 48) }, sizes: { N: 7, M: 48 } })],
  ['swiglu', 'N=64,M=3000', (r) => ({ inputs: { gate: r.normal(64 * 3000, 2), up: r.normal(64 * 3000) }, sizes: { N: 64, M: 3000 } })],
  ['residual', 'n=1000', (r) => ({ inputs: { x: r.normal(1000), y: r.normal(1000) }, sizes: {} })],
];

/** One case per (op, shape, dtype): {name, run(native) -> {nmse, threshold}}; run throws on a mismatch. */
export function opCases() {
  const cases = [];
  let seed = 1;
  for (const dtype of ['F32', 'BF16']) {
    for (const [op, shape, make] of SHAPES) {
      const caseSeed = seed++;
      const threshold = TOL[dtype][op];
      // Attention in bf16 with hd 64 or 128 has two kernels (CUDA cores, tensor cores): test both.
      const tensorCore = op === 'attention' && dtype === 'BF16' && /hd=(64|128)\b/.test(shape);
      for (const impl of tensorCore ? [1, 2] : [0]) {
        const label = `${op}(${shape}) ${dtype}${impl === 1 ? ' cuda-cores' : impl === 2 ? ' tensor-cores' : ''}`;
        cases.push({
          name: label,
          run(native) {
            const { inputs, sizes } = make(rng(caseSeed));
            const want = native.testOp('cpu', op, 'F32', inputs, sizes).out;
            const got = native.testOp('cuda', op, dtype, inputs, { ...sizes, impl }).out;
            const e = nmse(got, want);
            if (!(e <= threshold)) throw new Error(`${label}: NMSE ${e.toExponential(2)} > ${threshold}`);
            return { nmse: e, threshold };
          },
        });
      }
    }
  }
  cases.push(...samplingCases());
  return cases;
}

function expectClose(name, got, want, tol, relative) {
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]), scale = relative ? Math.max(Math.abs(want[i]), 1e-300) : 1;
    if (!(d / scale <= tol)) throw new Error(`${name}[${i}]: ${got[i]} vs ${want[i]} (tolerance ${tol}${relative ? ' relative' : ''})`);
  }
}

function expectEqual(name, got, want) {
  for (let i = 0; i < want.length; i++)
    if (got[i] !== want[i]) throw new Error(`${name}[${i}]: ${got[i]} vs ${want[i]} (must be equal)`);
}

// The decoders' per-row sampling and commit selection: exact tokens and commits, fp64 measures to
// 1e-9 relative (sums over the vocabulary in another order), fp32 log-probs to 1e-5.
function samplingCases() {
  const cases = [];
  for (const [V, R, T] of [[1000, 6, 0], [1000, 6, 1], [1000, 6, 0.7], [126464, 3, 1], [126464, 2, 0]]) {
    cases.push({
      name: `sample(R=${R},V=${V},T=${T})`,
      run(native) {
        const r = rng(V + R + Math.round(T * 10));
        const ld = V + 16;
        const logits = r.normal(R * ld, 3);
        const mask = V - 3, stop = 5;
        for (let i = 0; i < R; i++) {
          logits[i * ld + mask] = 50; // excluded: must never win
          logits[i * ld + stop] = 40; // excluded only on rows flagged early
          for (let j = V; j < ld; j++) logits[i * ld + j] = 100; // padding columns: never tokens
          if (i === 1) logits[i * ld + 7] = logits[i * ld + 9] = 30; // a tie: the lower id wins
        }
        const inputs = { logits, excluded: Int32Array.of(mask, stop), early: Int32Array.from({ length: R }, (_, i) => i % 2) };
        const sizes = { R, V, ld, nAll: 1, seed: 12345, temperature: T };
        const want = native.testOp('cpu', 'sample', 'F32', inputs, sizes);
        const got = native.testOp('cuda', 'sample', 'F32', inputs, sizes);
        expectEqual('token', got.token, want.token);
        expectClose('logprob', got.logprob, want.logprob, 1e-5, false);
        expectClose('entropy', got.entropy, want.entropy, 1e-5, false);
        for (const k of ['prob', 'margin', 'certainty']) expectClose(k, got[k], want[k], 1e-9, true);
        return {};
      },
    });
  }
  cases.push({
    name: 'logprob(R=5,V=1000, 2 excluded)',
    run(native) {
      const r = rng(77);
      const inputs = { logits: r.normal(5 * 1000, 3), targets: Int32Array.of(0, 999, 17, 500, 3), excluded: Int32Array.of(998, 4) };
      const sizes = { R: 5, V: 1000 };
      const want = native.testOp('cpu', 'logprob', 'F32', inputs, sizes).out;
      const got = native.testOp('cuda', 'logprob', 'F32', inputs, sizes).out;
      expectClose('logprob', got, want, 1e-5, false);
      return {};
    },
  });
  // Rows of 4 sequences (1, 7, 32 and 3 rows), ties planted, every confidence kind, both rules.
  const rowBegin = Int32Array.of(0, 1, 8, 40, 43);
  for (const kind of [0, 1, 2, 3])
    for (const useThreshold of [0, 1]) {
      cases.push({
        name: `select(kind=${['probability', 'margin', 'certainty', 'random'][kind]},${useThreshold ? 'threshold' : 'schedule'})`,
        run(native) {
          const r = rng(100 + kind * 2 + useThreshold);
          const R = rowBegin[rowBegin.length - 1];
          const conf = () => Float64Array.from({ length: R }, (_, i) => (i % 5 === 0 ? 0.5 : r.next()));
          const inputs = { rowBegin, kSched: Int32Array.of(1, 3, 4, 5), prob: conf(), margin: conf(), certainty: conf() };
          const sizes = { kind, useThreshold, threshold: 0.6, seed: 99, randomIndex: 1001 };
          const want = native.testOp('cpu', 'select', 'F32', inputs, sizes);
          const got = native.testOp('cuda', 'select', 'F32', inputs, sizes);
          expectEqual('k', got.k, want.k);
          expectEqual('commit', got.commit, want.commit);
          return {};
        },
      });
    }
  return cases;
}

/** max |a - b| / max |b|, as test/helpers/fixtures.ts computes it. */
export function relError(a, b) {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= maxDiff)) maxDiff = d;
    maxRef = Math.max(maxRef, Math.abs(b[i]));
  }
  return maxDiff / maxRef;
}

/**
 * Whole-model cases. ctx: {loadModel, fixtures (directory), models (fixture names), logitsCases(name),
 * engineOf(model) -> the NativeEngine}.
 */
export function modelCases(ctx) {
  const cases = [];
  const load = (name, options) => ctx.loadModel(path.join(ctx.fixtures, name), options);
  // fp32 on the GPU against PyTorch's float64: cuBLAS without TF32 and the same fp32 arithmetic as
  // the CPU backend (1e-5 there); 2e-5 allows rsqrtf's last bits. bf16 weights and activations
  // move logits by ~1% of their scale; 5e-2 still fails any layout mistake (0.15 or more).
  for (const [dtype, tol] of [['F32', 2e-5], ['BF16', 5e-2]])
    for (const name of ctx.models)
      cases.push({
        name: `logits ${name} cuda ${dtype} vs PyTorch (relError < ${tol})`,
        async run() {
          const model = await load(name, { backend: 'cuda', dtype });
          try {
            let worst = 0;
            for (const c of ctx.logitsCases(name)) {
              const logits = await model.logits(c.ids);
              const e = relError(logits, c.logits);
              worst = Math.max(worst, e);
              if (!(e < tol)) throw new Error(`${c.name}: relError ${e.toExponential(2)} >= ${tol}`);
            }
            return { relError: worst };
          } finally {
            await model.dispose();
          }
        },
      });

  const prompts = [[1, 2, 3, 4, 5], [7, 8], [30, 31, 32, 33, 34, 35, 36, 37, 38]];
  const decoders = [
    ['ar', { decoder: 'ar', genLength: 16 }],
    ['low_confidence', { decoder: 'low_confidence', genLength: 16, blockLength: 8, steps: 8 }],
    ['low_confidence margin', { decoder: 'low_confidence', genLength: 16, blockLength: 4, steps: 16, confidence: 'margin' }],
    ['threshold', { decoder: 'threshold', genLength: 16, blockLength: 8, threshold: 0.2 }],
    ['random', { decoder: 'random', genLength: 16, blockLength: 8, steps: 16 }],
    ['ar sampled T=1', { decoder: 'ar', genLength: 16, temperature: 1, numSamples: 3, seed: 5 }],
    ['low_confidence sampled T=0.8 cfg 0.5', { decoder: 'low_confidence', genLength: 16, blockLength: 8, steps: 16, temperature: 0.8, cfgScale: 0.5, numSamples: 2, seed: 9 }],
  ];
  for (const name of ['gqa_f32', 'mha_f32'])
    for (const [label, opts] of decoders)
      cases.push({
        name: `decode ${label} ${name}: cuda F32 tokens equal the CPU's`,
        async run() {
          const cpu = await load(name, { backend: 'cpu' });
          const gpu = await load(name, { backend: 'cuda', dtype: 'F32' });
          try {
            const a = await cpu.generate(prompts, opts);
            const b = await gpu.generate(prompts, opts);
            for (let s = 0; s < a.tokens.length; s++) {
              expectEqual(`tokens[${s}]`, b.tokens[s], a.tokens[s]);
              expectEqual(`commitSteps[${s}]`, b.commitSteps[s], a.commitSteps[s]);
              expectClose(`logprobs[${s}]`, b.logprobs[s], a.logprobs[s], 1e-4, false);
            }
            return { rows: a.tokens.length };
          } finally {
            await cpu.dispose();
            await gpu.dispose();
          }
        },
      });

  cases.push({
    name: 'greedy next-token agreement, cuda BF16 vs CPU, gqa_f32 (>= 85% of positions)',
    async run() {
      const cpu = await load('gqa_f32', { backend: 'cpu' });
      const gpu = await load('gqa_f32', { backend: 'cuda', dtype: 'BF16' });
      try {
        const r = rng(4242);
        const ids = Array.from({ length: 8 }, () => Array.from({ length: 40 }, () => r.int(cpu.config.vocabSize)));
        const a = await cpu.logits(ids), b = await gpu.logits(ids);
        const V = cpu.config.embeddingSize, Vt = cpu.config.vocabSize;
        let agree = 0, total = 0;
        for (let row = 0; row < a.length / V; row++) {
          const am = argmax(a, row * V, Vt), bm = argmax(b, row * V, Vt);
          agree += am === bm ? 1 : 0;
          total++;
        }
        // ~10% of this random model's rows have a top-2 gap under 2% of the logit scale, about bf16's
        // error, so some flips are expected; a wrong kernel agrees on ~1/61 of them.
        if (!(agree / total >= 0.85)) throw new Error(`argmax agreement ${agree}/${total}`);
        return { agreement: agree / total };
      } finally {
        await cpu.dispose();
        await gpu.dispose();
      }
    },
  });

  cases.push({
    name: 'logprobs (reference policy path) cuda F32 vs CPU',
    async run() {
      const cpu = await load('gqa_f32', { backend: 'cpu' });
      const gpu = await load('gqa_f32', { backend: 'cuda', dtype: 'F32' });
      try {
        const tokens = Int32Array.from({ length: 30 }, (_, i) => (i * 7) % 60);
        const seqStarts = Int32Array.of(0, 12, 30), rows = Int32Array.of(0, 11, 12, 29, 29);
        const targets = Int32Array.of(3, 59, 0, 17, 42), ex = Int32Array.of(60);
        const a = await ctx.engineOf(cpu).logprobs(tokens, seqStarts, rows, targets, ex);
        const b = await ctx.engineOf(gpu).logprobs(tokens, seqStarts, rows, targets, ex);
        expectClose('logprobs', b, a, 1e-5, false);
        return {};
      } finally {
        await cpu.dispose();
        await gpu.dispose();
      }
    },
  });

  cases.push({
    name: 'save from cuda (BF16 model stored as BF16) and reload on the CPU: same weights',
    async run() {
      const tmp = mkdtempSync(path.join(os.tmpdir(), 'justgrpo-gpu-'));
      const gpu = await load('gqa_bf16', { backend: 'cuda', dtype: 'BF16' });
      const ref = await load('gqa_bf16', { backend: 'cpu' });
      try {
        await gpu.save(path.join(tmp, 'm'), { dtype: 'BF16' });
        const back = await ctx.loadModel(path.join(tmp, 'm'), { backend: 'cpu' });
        try {
          for (const { name } of ref.parameterInfo()) expectEqual(name, await back.getParameter(name), await ref.getParameter(name));
        } finally {
          await back.dispose();
        }
        return {};
      } finally {
        await gpu.dispose();
        await ref.dispose();
        rmSync(tmp, { recursive: true, force: true });
      }
    },
  });
  return cases;
}

function argmax(a, offset, n) {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[offset + i] > a[offset + best]) best = i;
  return best;
}

/**
 * The harness's self-test: a native module whose "CUDA" side is the CPU backend, and a loadModel that
 * puts every model on the CPU. Every case must pass against it (zero error), which checks the cases
 * themselves (shapes, inputs, comparisons) on machines without a GPU, so a GPU visit is not spent on
 * a broken test.
 */
export function cpuAsCuda(native, loadModel) {
  return {
    native: {
      ...native,
      testOp: (backend, op, dtype, inputs, sizes) => native.testOp('cpu', op, 'F32', inputs, sizes),
    },
    loadModel: (dir, options = {}) => loadModel(dir, { ...options, backend: 'cpu', dtype: undefined }),
  };
}

// ---- Training ops: the backward mode of the op table (a call that passes `dout` gets the
// gradients too) and the optimizer, CUDA against the CPU backend.
//
// fp32: max |cuda - cpu| / max |cpu| per output (relError) against a threshold per op. Both sides
// round the same fp32 formulas; what differs is the order of sums (dot products over hd or C, the
// rows of a weight gradient) and the CPU's vectorised exp against expf: a few ulps of the largest
// terms, ~1e-7 to 1e-6 of the scale. Thresholds: 1e-6 for the elementwise ops and RoPE (one or two
// roundings per element), 1e-5 for those that sum over a row or over rows (rmsnorm, attention,
// embedding's repeated tokens), as the brief's "~1e-5 relative". An indexing or masking mistake
// gives 1e-2 or more.
// bf16: the CUDA side reads its activations and weights rounded to bf16 (relative error <= 2^-9
// each) and stores the forward's output in bf16; gradients stay fp32. NMSE against the fp32 CPU:
// one rounding of one factor gives ~1.3e-6 (<= 4e-6); products of two or three rounded factors stay
// below 2e-5. Attention's gradients go through the softmax twice (p from rounded q and k, and
// dp - D, a difference of similar terms where D uses the bf16-rounded out): 1e-4 (measured <= 1.5e-5).
// Every run of a case is also repeated on the CUDA side and must give the same bits (no
// order-dependent atomics).
const BWD_TOL = {
  F32: { embedding: 1e-5, rmsnorm: 1e-5, rope: 1e-6, attention: 1e-5, swiglu: 1e-6, residual: 0, adamw: 1e-6 },
  // null: no rounded input reaches these outputs (scatters, rotations and sums of fp32 gradients,
  // the fp32 optimizer), so the fp32 relError threshold holds.
  BF16: { embedding: null, rmsnorm: 2e-5, rope: null, attention: 1e-4, swiglu: 2e-5, residual: null, adamw: null },
};

const BWD_SHAPES = [
  // Tokens drawn from a few ids, so most repeat: their rows add up in row order.
  ['embedding', 'N=7,C=64,V=50', (r) => ({ inputs: { wte: r.normal(50 * 64), tokens: Int32Array.from({ length: 7 }, () => r.int(4)), dout: r.normal(7 * 64), dwte: r.normal(50 * 64, 0.1) }, sizes: { N: 7, C: 64 } })],
  ['embedding', 'N=700,C=300,V=1000', (r) => ({ inputs: { wte: r.normal(1000 * 300), tokens: Int32Array.from({ length: 700 }, (_, i) => (i % 3 ? r.int(30) : r.int(1000))), dout: r.normal(700 * 300), dwte: r.normal(1000 * 300, 0.1) }, sizes: { N: 700, C: 300 } })],
  ['rmsnorm', 'N=7,C=64', (r) => ({ inputs: { inp: r.normal(7 * 64, 3), weight: r.normal(64), dout: r.normal(7 * 64), dinp: r.normal(7 * 64, 0.1), dweight: r.normal(64, 0.1) }, sizes: { N: 7, C: 64, eps: 1e-5 } })],
  ['rmsnorm', 'N=70,C=100', (r) => ({ inputs: { inp: r.normal(70 * 100), weight: r.normal(100), dout: r.normal(70 * 100) }, sizes: { N: 70, C: 100, eps: 1e-5 } })],
  ['rmsnorm', 'N=33,C=4096', (r) => ({ inputs: { inp: r.normal(33 * 4096), weight: r.normal(4096), dout: r.normal(33 * 4096) }, sizes: { N: 33, C: 4096, eps: 1e-5 } })],
  ['rope', 'N=9,H=4,hd=8', (r) => ({ inputs: { x: r.normal(9 * 4 * 8), pos: Int32Array.from({ length: 9 }, (_, i) => i), dout: r.normal(9 * 4 * 8) }, sizes: { N: 9, H: 4, hd: 8, maxLen: 16, theta: 10000 } })],
  ['rope', 'N=40,H=8,hd=128', (r) => ({ inputs: { x: r.normal(40 * 8 * 128), pos: Int32Array.from({ length: 40 }, () => r.int(4096)), dout: r.normal(40 * 8 * 128) }, sizes: { N: 40, H: 8, hd: 128, maxLen: 4096, theta: 500000 } })],
  ...[
    ['S=[7],H=4,KV=4,hd=8', [7], 4, 4, 8],
    ['S=[5,33,1],H=8,KV=2,hd=4', [5, 33, 1], 8, 2, 4],
    ['S=[19,45],H=6,KV=3,hd=24', [19, 45], 6, 3, 24],
    ['S=[40,17,33],H=4,KV=1,hd=64', [40, 17, 33], 4, 1, 64],
    ['S=[70,3],H=4,KV=2,hd=128', [70, 3], 4, 2, 128],
    ['S=[20],H=2,KV=1,hd=256', [20], 2, 1, 256],
  ].map(([name, lens, H, KV, hd]) => ['attention', name, (r) => {
    const s = starts(lens), N = s[s.length - 1];
    return {
      inputs: { q: r.normal(N * H * hd), k: r.normal(N * KV * hd), v: r.normal(N * KV * hd), seqStarts: s, dout: r.normal(N * H * hd), dq: r.normal(N * H * hd, 0.1), dk: r.normal(N * KV * hd, 0.1), dv: r.normal(N * KV * hd, 0.1) },
      sizes: { H, KV, hd },
    };
  }]),
  ['swiglu', 'N=7,M=48', (r) => ({ inputs: { gate: r.normal(7 * 48, 2), up: r.normal(7 * 48), dout: r.normal(7 * 48), dgate: r.normal(7 * 48, 0.1), dup: r.normal(7 * 48, 0.1) }, sizes: { N: 7, M: 48 } })],
  ['swiglu', 'N=64,M=3000', (r) => ({ inputs: { gate: r.normal(64 * 3000, 2), up: r.normal(64 * 3000), dout: r.normal(64 * 3000) }, sizes: { N: 64, M: 3000 } })],
  ['residual', 'n=1000', (r) => ({ inputs: { x: r.normal(1000), y: r.normal(1000), dout: r.normal(1000), dy: r.normal(1000, 0.1) }, sizes: {} })],
  ...[
    ['n=5000,step=1', 5000, 1, {}],
    ['n=70000,step=7,wd=0.1', 70000, 7, {}],
    ['n=5000,step=3,clipped', 5000, 3, { maxGradNorm: 1 }],
    // Past 1024 x 256 elements, so every one of grad_sumsq's fixed partial blocks holds some.
    ['n=300000,step=2,not clipped,non-finite', 300000, 2, { maxGradNorm: 1e6, nonFinite: true }],
  ].map(([name, n, step, extra]) => ['adamw', name, (r) => {
    const grad = r.normal(n, 0.3);
    if (extra.nonFinite) [grad[3], grad[n - 1], grad[n >> 1]] = [NaN, Infinity, -Infinity];
    const v = Float32Array.from(r.normal(n, 0.01), (x) => x * x);
    const sizes = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: name.includes('wd') ? 0.1 : 0, step };
    if (extra.maxGradNorm !== undefined) sizes.maxGradNorm = extra.maxGradNorm;
    return { inputs: { param: r.normal(n), m: r.normal(n, 0.01), v, grad }, sizes };
  }]),
];

function sameBits(name, a, b) {
  for (let i = 0; i < a.length; i++)
    if (!Object.is(a[i], b[i])) throw new Error(`${name}[${i}]: ${a[i]} then ${b[i]}: two runs differ`);
}

function bf16Round(x) {
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  f[0] = x;
  u[0] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) & 0xffff0000;
  return f[0];
}

/**
 * One case per (training op, shape, dtype): the CPU's gradients (fp32) against the CUDA backend's,
 * every gradient output compared; run(native) -> {errors: {output: error}, threshold}; throws on a
 * mismatch, on NaN/inf, or when two CUDA runs differ in any bit.
 */
export function backwardCases() {
  const cases = [];
  let seed = 1000;
  for (const dtype of ['F32', 'BF16']) {
    for (const [op, shape, make] of BWD_SHAPES) {
      const caseSeed = seed++;
      const threshold = BWD_TOL[dtype][op];
      const label = `${op}(${shape}) backward ${dtype}`;
      cases.push({
        name: label,
        run(native) {
          const { inputs, sizes } = make(rng(caseSeed));
          const want = native.testOp('cpu', op, 'F32', inputs, sizes);
          const got = native.testOp('cuda', op, dtype, inputs, sizes);
          const again = native.testOp('cuda', op, dtype, inputs, sizes);
          const errors = {};
          // The forward's out too in fp32 (in bf16 the forward cases in opCases bound it): in
          // backward mode it comes from the kernels that save rstd and lse.
          const names = Object.keys(want).filter((k) => (k !== 'out' || dtype === 'F32') && k !== 'paramBf16');
          if (names.length === 0) throw new Error(`${label}: the CPU returned no gradients`);
          for (const k of Object.keys(got)) sameBits(`${label} ${k}`, got[k], again[k]);
          for (const k of names) {
            if (!got[k]) throw new Error(`${label}: CUDA returned no ${k}`);
            if (got[k].length !== want[k].length) throw new Error(`${label} ${k}: ${got[k].length} values, not ${want[k].length}`);
            if (k === 'nonFinite') {
              expectEqual(`${label} ${k}`, got[k], want[k]);
              continue;
            }
            let e;
            if (threshold === null || dtype === 'F32') {
              const tol = BWD_TOL.F32[op];
              e = relError(got[k], want[k]);
              if (!(e <= tol)) throw new Error(`${label} ${k}: relError ${e.toExponential(2)} > ${tol}`);
            } else {
              // The forward's saved rstd and lse are fp32 values of bf16-rounded inputs.
              e = nmse(got[k], want[k]);
              if (!(e <= threshold)) throw new Error(`${label} ${k}: NMSE ${e.toExponential(2)} > ${threshold}`);
            }
            errors[k] = e;
          }
          if (op === 'adamw' && dtype === 'BF16') {
            if (!got.paramBf16) throw new Error(`${label}: no bf16 copy`);
            for (let i = 0; i < got.param.length; i++)
              if (got.paramBf16[i] !== bf16Round(got.param[i])) throw new Error(`${label} paramBf16[${i}]: ${got.paramBf16[i]} is not bf16(${got.param[i]})`);
          }
          return { errors, threshold };
        },
      });
    }
  }
  return cases;
}

/**
 * Ops of the native op table (native/common/ops.h, `native.ops`) that no parity case covers, apart from
 * `cpuOnly`: the ops the CUDA backend does not have yet. A new op declared in the table is tested
 * against the CPU here, or this list names it.
 */
export const CPU_ONLY_OPS = ['logsoftmax'];
export function uncoveredOps(native) {
  const covered = new Set([...opCases(), ...backwardCases()].map((c) => c.name.slice(0, c.name.indexOf('('))));
  return native.ops.filter((op) => !covered.has(op) && !CPU_ONLY_OPS.includes(op));
}
