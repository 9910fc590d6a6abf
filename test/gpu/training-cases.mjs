// GPU training against the CPU trainer, as plain cases (name, run(native)) shared by vitest
// (test/gpu/training.test.ts, on the CUDA-on-CPU tier) and the GPU machine's runner
// (bench/gpu/parity.mjs). ctx: {loadModel, fixtures, engineOf(model) -> the NativeEngine,
// createTrainer(engine, options) -> a NativeTrainer (lib/native/binding's createNativeTrainer)}.
//
// Tolerances (relError: max |a - b| over max |b|): fp32 sums in other orders than the CPU's
// (cuBLAS without TF32, the GPU's full layers against the CPU's per-token first and rows-only
// last layer) land near 1e-6 on a 2-layer model: 1e-5. Weights after AdamW: the scale-free update
// lr * m / sqrt(v) turns a small gradient element's rounding into a full-size difference of lr
// times it: 1e-4, while a wrong term moves weights by lr (3e-2 of their size). bf16 on the GPU
// against fp32 on the CPU with the same (bf16-rounded) weights: bf16 activations and bf16 inputs
// to about ten products from the head to the embedding put gradients up to ~2e-2 off (measured
// 2.2e-2 worst on the tier, the softmax's p - onehot amplifying the logits' ~1e-3); 5e-2 still
// fails a wrong index or a missing term (~1).
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { relError } from './parity.mjs';

const FP32 = 1e-5, STEP = 1e-4, BF16 = 5e-2;
const ADAMW = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 };

// The fixture's training batch (test/reference/fixtures/<name>/train.json), packed.
function trainBatch(ctx, name) {
  const b = JSON.parse(readFileSync(path.join(ctx.fixtures, name, 'train.json'), 'utf8')).batch;
  const seqStarts = new Int32Array(b.seqs.length + 1);
  b.seqs.forEach((s, i) => (seqStarts[i + 1] = seqStarts[i] + s.length));
  return [Int32Array.from(b.seqs.flat()), seqStarts, Int32Array.from(b.rows), Int32Array.from(b.targets), Float32Array.from(b.weights)];
}

// GRPO inputs with rows in all three regions (ratio 0.5 with A < 0, 1.6 with A > 0, near 1) and a
// reference a little off the policy, so the k3 KL term is not zero.
function grpoOptions(logprobs, excludeIds) {
  const R = logprobs.length;
  const old = new Float32Array(R), adv = new Float32Array(R), ref = new Float32Array(R);
  for (let r = 0; r < R; r++) {
    const kind = r % 3;
    old[r] = logprobs[r] - (kind === 0 ? Math.log(0.5) : kind === 1 ? Math.log(1.6) : 0.05);
    adv[r] = kind === 0 ? -1.25 : kind === 1 ? 0.75 : r % 2 ? 0.5 : -0.5;
    ref[r] = logprobs[r] + 0.3 * Math.sin(r + 1);
  }
  return { oldLogprobs: old, advantages: adv, refLogprobs: ref, epsilonLow: 0.2, epsilonHigh: 0.28, beta: 0.04, excludeIds: Int32Array.from(excludeIds) };
}

function grads(trainer, engine) {
  return new Map(engine.paramInfo().map((p) => [p.name, trainer.getGrad(p.name)]));
}
function params(engine) {
  return new Map(engine.paramInfo().map((p) => [p.name, engine.getParam(p.name)]));
}
function worstOf(a, b, tol, what) {
  let worst = 0;
  for (const [name, x] of a) {
    const e = relError(x, b.get(name));
    if (!(e < tol)) throw new Error(`${what} ${name}: relError ${e.toExponential(2)} >= ${tol}`);
    worst = Math.max(worst, e);
  }
  return worst;
}
function close(a, b, tol, what) {
  const e = Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
  if (!(e < tol)) throw new Error(`${what}: ${a} vs ${b} (relative ${e.toExponential(2)} >= ${tol})`);
  return e;
}

export function trainingCases(ctx) {
  const cases = [];
  // The same fixture weights on the CPU (fp32, the reference) and the GPU, a trainer on each.
  async function withPair(name, dtype, fn, checkpoint = false) {
    const a = await ctx.loadModel(path.join(ctx.fixtures, name));
    const b = await ctx.loadModel(path.join(ctx.fixtures, name), { backend: 'cuda', dtype });
    // bf16: the CPU reference takes the GPU's rounded weights (exact in fp32), so the comparison
    // measures the bf16 arithmetic, not the weights' rounding.
    if (dtype !== 'F32') for (const p of ctx.engineOf(a).paramInfo()) ctx.engineOf(a).setParam(p.name, ctx.engineOf(b).getParam(p.name));
    const tc = ctx.createTrainer(ctx.engineOf(a), {});
    const tg = ctx.createTrainer(ctx.engineOf(b), { checkpointActivations: checkpoint });
    try {
      return await fn({ ec: ctx.engineOf(a), eg: ctx.engineOf(b), tc, tg, batch: trainBatch(ctx, name) });
    } finally {
      tc.dispose();
      tg.dispose();
      await a.dispose();
      await b.dispose();
    }
  }
  // An id no row targets, to exclude.
  const unused = (batch, ec) => {
    const V = ec.paramInfo().find((p) => p.name.endsWith('wte.weight')).shape[0];
    for (let id = V - 1; id >= 0; id--) if (!batch[3].includes(id)) return id;
    throw new Error('every id is a target');
  };

  for (const name of ['gqa_f32', 'mha_f32']) {
    cases.push({
      name: `training SFT ${name} cuda F32 vs CPU: loss, log-probs, every gradient (relError < ${FP32})`,
      run: () => withPair(name, 'F32', async ({ ec, eg, tc, tg, batch }) => {
        const x = await tc.crossEntropyBackward(...batch);
        const y = await tg.crossEntropyBackward(...batch);
        const loss = close(y.loss, x.loss, FP32, 'loss');
        const logprobs = relError(y.logprobs, x.logprobs);
        if (!(logprobs < FP32)) throw new Error(`logprobs: relError ${logprobs}`);
        return { loss, logprobs, grads: worstOf(grads(tg, eg), grads(tc, ec), FP32, 'grad') };
      }),
    });
    cases.push({
      name: `training GRPO ${name} cuda F32 vs CPU: KL, both clip regions, an excluded id (relError < ${FP32})`,
      run: () => withPair(name, 'F32', async ({ ec, eg, tc, tg, batch }) => {
        const lp = (await tc.crossEntropyLoss(...batch)).logprobs;
        const o = grpoOptions(lp, [unused(batch, ec)]);
        const x = await tc.policyLossBackward(...batch, o);
        const y = await tg.policyLossBackward(...batch, o);
        for (const region of [0, 1, 2])
          if (!x.clipped.includes(region)) throw new Error(`no row in region ${region}: the case does not test it`);
        if (x.clipped.some((v, i) => v !== y.clipped[i])) throw new Error('clip regions differ');
        return { loss: close(y.loss, x.loss, FP32, 'loss'), grads: worstOf(grads(tg, eg), grads(tc, ec), FP32, 'grad') };
      }),
    });
  }

  cases.push({
    name: `training steps gqa_f32 cuda F32 vs CPU: 2 SFT + 2 JustGRPO clipped AdamW steps (weights < ${STEP}, moments < ${FP32})`,
    run: () => withPair('gqa_f32', 'F32', async ({ ec, eg, tc, tg, batch }) => {
      let worst = 0;
      for (const kind of ['sft', 'grpo'])
        for (let s = 0; s < 2; s++) {
          tc.zeroGrad();
          tg.zeroGrad();
          if (kind === 'sft') {
            await tc.crossEntropyBackward(...batch);
            await tg.crossEntropyBackward(...batch);
          } else {
            const o = grpoOptions((await tc.crossEntropyLoss(...batch)).logprobs, []);
            await tc.policyLossBackward(...batch, o);
            await tg.policyLossBackward(...batch, o);
          }
          // GRPO's gradients are far smaller than SFT's: a smaller clip keeps clipping active.
          const opts = kind === 'sft' ? ADAMW : { ...ADAMW, maxGradNorm: 1e-3 };
          const x = await tc.step(opts);
          const y = await tg.step(opts);
          if (!x.clipped || !y.clipped) throw new Error(`${kind} step ${s}: not clipped`);
          close(y.gradNorm, x.gradNorm, FP32, `${kind} step ${s} grad norm`);
          worst = Math.max(worst, worstOf(params(eg), params(ec), STEP, `${kind} step ${s} weight`));
          for (const which of ['m', 'v']) {
            const mc = new Map(ec.paramInfo().map((p) => [p.name, tc.getMoments(p.name)[which]]));
            const mg = new Map(eg.paramInfo().map((p) => [p.name, tg.getMoments(p.name)[which]]));
            worstOf(mg, mc, FP32, `${kind} step ${s} moment ${which}`);
          }
        }
      return { weights: worst };
    }),
  });

  cases.push({
    name: 'training checkpointing gqa_f32 cuda F32: the same loss and gradient bits as keeping every layer',
    async run() {
      const keep = await withPair('gqa_f32', 'F32', async ({ eg, tg, batch }) => ({ r: await tg.crossEntropyBackward(...batch), g: grads(tg, eg) }));
      return withPair('gqa_f32', 'F32', async ({ eg, tg, batch }) => {
        const r = await tg.crossEntropyBackward(...batch);
        if (r.loss !== keep.r.loss) throw new Error(`loss ${r.loss} != ${keep.r.loss}`);
        for (const [name, g] of grads(tg, eg)) {
          const k = keep.g.get(name);
          if (g.some((v, i) => !Object.is(v, k[i]))) throw new Error(`${name}: bits differ`);
        }
        return {};
      }, true);
    },
  });

  cases.push({
    name: `training bf16 gqa_f32 cuda BF16 vs CPU F32: SFT and GRPO gradients (relError < ${BF16})`,
    run: () => withPair('gqa_f32', 'BF16', async ({ ec, eg, tc, tg, batch }) => {
      const x = await tc.crossEntropyBackward(...batch);
      await tg.crossEntropyBackward(...batch);
      const sft = worstOf(grads(tg, eg), grads(tc, ec), BF16, 'SFT grad');
      tc.zeroGrad();
      tg.zeroGrad();
      const o = grpoOptions(x.logprobs, []);
      await tc.policyLossBackward(...batch, o);
      await tg.policyLossBackward(...batch, o);
      return { sft, grpo: worstOf(grads(tg, eg), grads(tc, ec), BF16, 'GRPO grad') };
    }),
  });
  return cases;
}
