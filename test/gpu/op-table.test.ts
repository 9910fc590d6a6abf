// The op table drives the parity harness: every op the engine declares (native/common/ops.h) has
// CUDA-vs-CPU cases in parity.mjs, unless the CUDA backend does not have it yet, and every op runs
// on the CPU side of testOp (the reference each backend is compared with).
import { describe, expect, it } from 'vitest';

import { native } from '../../lib/native/binding.js';
// @ts-expect-error plain JavaScript module shared with the GPU machine's runner
import { CPU_ONLY_OPS, uncoveredOps } from './parity.mjs';

describe('the op table', () => {
  it('every declared op has parity cases (or is one the CUDA backend does not have yet)', () => {
    expect(native().ops.length).toBeGreaterThan(0);
    expect(uncoveredOps(native())).toEqual([]);
  });

  it('the CPU runs every op of the table; an unknown op or backend is one clear error', () => {
    const n = native();
    // Sizes and inputs for each op do not matter here: a missing input is an INPUT error naming it,
    // which proves the op was dispatched (an op the CPU lacked would say so instead).
    for (const op of n.ops) {
      let err: Error | undefined;
      try {
        n.testOp('cpu', op, 'F32', {}, {});
      } catch (e) {
        err = e as Error;
      }
      expect(err?.message ?? '', op).toMatch(/testOp: (input|size) `\w+` is missing/);
    }
    expect(() => n.testOp('cpu', 'no-such-op', 'F32', {}, {})).toThrow(/unknown op no-such-op/);
    if (!n.backends.includes('cuda')) expect(() => n.testOp('cuda', 'rmsnorm', 'F32', {}, {})).toThrow(/no backend cuda/);
    expect(CPU_ONLY_OPS.every((op: string) => n.ops.includes(op))).toBe(true);
  });
});
