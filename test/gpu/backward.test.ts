// The training ops on the CUDA backend against the CPU backend: every op's gradients through the
// op table's backward mode (a testOp call that passes `dout`), AdamW with the gradient clipping
// pieces, fp32 and bf16, each case run twice for bit-identical results. Cases live in parity.mjs,
// shared with bench/gpu/parity.mjs. The CPU side of the backward mode, the reference, is checked here
// against central differences of its own forward.
import { describe, expect, it } from 'vitest';

import './tier.js';

import { native } from '../../lib/native/binding.js';
// @ts-expect-error plain JavaScript module shared with the GPU machine's runner
import { backwardCases, cpuAsCuda, gpuStatus } from './parity.mjs';

type Arrays = Record<string, Float32Array | Int32Array | Float64Array>;
type Case = { name: string; run: (n: unknown) => { errors: Record<string, number> } };

const status = gpuStatus(native()) as { ok: boolean; reason: string };
if (!status.ok) console.log(`skipping the CUDA backward parity tests: ${status.reason}`);

describe.skipIf(!status.ok)('CUDA training ops match the CPU backend', () => {
  for (const c of backwardCases() as Case[]) {
    it(c.name, () => {
      const r = c.run(native());
      expect(Object.keys(r.errors).length).toBeGreaterThan(0);
    });
  }
});

describe('the CPU backward mode of the op table (the reference)', () => {
  it('every backward case passes when its "CUDA" side is the CPU backend (the cases themselves are sound)', () => {
    const fake = cpuAsCuda(native(), null).native;
    const cases = backwardCases() as Case[];
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
    // AdamW in bf16 mode checks the bf16 weight copy, which only the CUDA side writes.
    for (const c of cases.filter((c) => !/^adamw.*BF16$/.test(c.name))) {
      const r = c.run(fake);
      for (const [k, e] of Object.entries(r.errors)) expect(e, `${c.name} ${k}`).toBe(0);
    }
  });

  // loss = sum(out * dout), so d loss / d x = the op's x gradient with `dout`; checked by central
  // differences of the CPU forward (fp32, so h = 1e-2 and a 2e-3 tolerance relative to the largest
  // gradient) on a few elements of each input. No kinks: every op here is smooth.
  const seeded = (seed: number) => {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), a | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
    };
  };
  const rand = (next: () => number, n: number, scale = 2) => Float32Array.from({ length: n }, () => next() * scale);
  const fdCases: [string, (next: () => number) => { inputs: Arrays; sizes: Record<string, number>; grads: Record<string, string> }][] = [
    ['rmsnorm', (r) => ({ inputs: { inp: rand(r, 3 * 8), weight: rand(r, 8), dout: rand(r, 3 * 8) }, sizes: { N: 3, C: 8, eps: 1e-5 }, grads: { inp: 'dinp', weight: 'dweight' } })],
    ['rope', (r) => ({ inputs: { x: rand(r, 3 * 2 * 8), pos: Int32Array.of(0, 5, 2), dout: rand(r, 3 * 2 * 8) }, sizes: { N: 3, H: 2, hd: 8, maxLen: 8, theta: 10000 }, grads: { x: 'dx' } })],
    ['attention', (r) => ({ inputs: { q: rand(r, 7 * 4 * 4), k: rand(r, 7 * 2 * 4), v: rand(r, 7 * 2 * 4), seqStarts: Int32Array.of(0, 3, 7), dout: rand(r, 7 * 4 * 4) }, sizes: { H: 4, KV: 2, hd: 4 }, grads: { q: 'dq', k: 'dk', v: 'dv' } })],
    ['swiglu', (r) => ({ inputs: { gate: rand(r, 2 * 6, 6), up: rand(r, 2 * 6), dout: rand(r, 2 * 6) }, sizes: { N: 2, M: 6 }, grads: { gate: 'dgate', up: 'dup' } })],
    ['residual', (r) => ({ inputs: { x: rand(r, 5), y: rand(r, 5), dout: rand(r, 5) }, sizes: {}, grads: { y: 'dy' } })],
    ['embedding', (r) => ({ inputs: { wte: rand(r, 5 * 4), tokens: Int32Array.of(1, 3, 1, 1), dout: rand(r, 4 * 4) }, sizes: { N: 4, C: 4 }, grads: { wte: 'dwte' } })],
  ];
  for (const [op, make] of fdCases) {
    it(`${op}: the gradients equal central differences of the forward`, () => {
      const next = seeded(op.length * 977);
      const { inputs, sizes, grads } = make(next);
      const n = native();
      const res = n.testOp('cpu', op, 'F32', inputs, sizes) as Record<string, Float32Array>;
      const { dout, ...fwdInputs } = inputs;
      const loss = (ins: Arrays) => {
        const out = (n.testOp('cpu', op, 'F32', ins, sizes) as Record<string, Float32Array>).out!;
        let s = 0;
        for (let i = 0; i < out.length; i++) s += out[i]! * (dout as Float32Array)[i]!;
        return s;
      };
      for (const [input, gname] of Object.entries(grads)) {
        const g = res[gname]!;
        const x = fwdInputs[input] as Float32Array;
        expect(g.length, gname).toBe(x.length);
        const scale = Math.max(...Array.from(g, Math.abs));
        expect(scale, gname).toBeGreaterThan(0);
        const h = 1e-2;
        for (let c = 0; c < Math.min(8, x.length); c++) {
          const i = Math.floor((next() + 0.5) * x.length);
          const plus = Float32Array.from(x), minus = Float32Array.from(x);
          plus[i]! += h;
          minus[i]! -= h;
          const fd = (loss({ ...fwdInputs, [input]: plus }) - loss({ ...fwdInputs, [input]: minus })) / (2 * h);
          expect(Math.abs(fd - g[i]!) / scale, `${op} ${gname}[${i}]: ${g[i]} vs ${fd}`).toBeLessThan(2e-3);
        }
      }
    });
  }

  it('gradients accumulate: a given starting gradient is added to, not overwritten', () => {
    const n = native();
    const inputs = { gate: Float32Array.of(0.5, -1), up: Float32Array.of(2, 3), dout: Float32Array.of(1, 1) };
    const zero = n.testOp('cpu', 'swiglu', 'F32', inputs, { N: 1, M: 2 }) as Record<string, Float32Array>;
    const more = n.testOp('cpu', 'swiglu', 'F32', { ...inputs, dgate: Float32Array.of(10, 20), dup: Float32Array.of(1, 2) },
      { N: 1, M: 2 }) as Record<string, Float32Array>;
    expect(Array.from(more.dgate!)).toEqual(Array.from(zero.dgate!, (x, i) => Math.fround(x + [10, 20][i]!)));
    expect(Array.from(more.dup!)).toEqual(Array.from(zero.dup!, (x, i) => Math.fround(x + [1, 2][i]!)));
  });
});
