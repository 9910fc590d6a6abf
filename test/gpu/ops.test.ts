// Each CUDA op against the CPU backend (NMSE per op, shape and dtype; exact tokens and commits for
// the decoders' sampling and selection). Cases live in parity.mjs, shared with bench/gpu/parity.mjs.
import { describe, expect, it } from 'vitest';

import './tier.js';

import { native } from '../../lib/native/binding.js';
// @ts-expect-error plain JavaScript module shared with the GPU machine's runner
import { cpuAsCuda, gpuStatus, opCases } from './parity.mjs';

const status = gpuStatus(native()) as { ok: boolean; reason: string };
if (!status.ok) console.log(`skipping the CUDA op parity tests: ${status.reason}`);

describe.skipIf(!status.ok)('CUDA ops match the CPU backend', () => {
  for (const c of opCases() as { name: string; run: (n: unknown) => { nmse?: number } }[]) {
    it(c.name, () => {
      const r = c.run(native());
      if (r.nmse !== undefined) expect(r.nmse).toBeGreaterThanOrEqual(0);
    });
  }
});

describe('CUDA parity harness', () => {
  it('the CPU side of testOp computes what the ops mean (rmsnorm and swiglu against direct formulas)', () => {
    const inp = Float32Array.of(1, -2, 3, 0.5, 4, -1), weight = Float32Array.of(2, 0.5, -1);
    const out = native().testOp('cpu', 'rmsnorm', 'F32', { inp, weight }, { N: 2, C: 3, eps: 1e-5 }).out as Float32Array;
    for (let n = 0; n < 2; n++) {
      const x = inp.subarray(n * 3, n * 3 + 3);
      const r = 1 / Math.sqrt((x[0]! ** 2 + x[1]! ** 2 + x[2]! ** 2) / 3 + 1e-5);
      for (let c = 0; c < 3; c++) expect(out[n * 3 + c]).toBeCloseTo(weight[c]! * x[c]! * r, 5);
    }
    const gate = Float32Array.of(-1, 0.5, 2), up = Float32Array.of(3, -2, 1);
    const s = native().testOp('cpu', 'swiglu', 'F32', { gate, up }, { N: 1, M: 3 }).out as Float32Array;
    for (let i = 0; i < 3; i++) expect(s[i]).toBeCloseTo((gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!, 6);
  });

  it('the CPU reference of commit selection ranks by confidence, ties to the lower position, and keeps the threshold rule', () => {
    const rowBegin = Int32Array.of(0, 4);
    const prob = Float64Array.of(0.3, 0.9, 0.3, 0.95);
    const run = (useThreshold: number, threshold: number, k: number) =>
      native().testOp('cpu', 'select', 'F32', { rowBegin, kSched: Int32Array.of(k), prob, margin: prob, certainty: prob },
        { kind: 0, useThreshold, threshold, seed: 0, randomIndex: 0 });
    expect(Array.from(run(0, 0, 3).commit as Int32Array)).toEqual([1, 1, 0, 1]);
    expect(Array.from(run(1, 0.92, 0).commit as Int32Array)).toEqual([0, 0, 0, 1]);
    expect(Array.from(run(1, 0.99, 0).commit as Int32Array)).toEqual([0, 0, 0, 1]); // at least one
    expect(Array.from(run(1, 0.2, 0).k as Int32Array)).toEqual([4]);
  });

  it('every op case passes when its "CUDA" side is the CPU backend (the cases themselves are sound)', () => {
    const cases = opCases() as { name: string; run: (n: unknown) => { nmse?: number } }[];
    expect(cases.length).toBeGreaterThan(40);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
    const fake = cpuAsCuda(native(), null).native;
    for (const c of cases) {
      const r = c.run(fake);
      if (r.nmse !== undefined) expect(r.nmse, c.name).toBe(0);
    }
  });
});
