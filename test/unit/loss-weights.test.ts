// The per-token loss weights of each lossType against their formulas, worked by hand for a small
// step: L = 4, 5 completions in local batches of 2 (so B = 3: 2 + 2 + 1), mask lengths
// 4, 1, 2, 0, 3 (the fourth: a truncated completion under maskTruncatedCompletions), and
// completions 0, 1, 4 with a nonzero advantage.
import { describe, expect, it } from 'vitest';

import { tokenWeights, type LossType } from '../../lib/train/advantages.js';

const L = 4;
const maskLengths = [4, 1, 2, 0, 3];
const valid = [true, true, false, false, true];
const weights = (lossType: LossType, positionsKept = L) => tokenWeights({ lossType, maxCompletionLength: L, maskLengths, valid, localBatch: 2, positionsKept });
const masked = (row: number[], m: number) => row.map((w, t) => (t < m ? w : 0));

function expectRows(got: number[][], want: number[][]) {
  expect(got).toHaveLength(want.length);
  got.forEach((row, i) => row.forEach((w, t) => expect(w, `w[${i}][${t}]`).toBeCloseTo(want[i]![t]!, 15)));
}

describe('tokenWeights', () => {
  it("'justgrpo': 1 / (L x completions with A != 0) at every position, mask or not", () => {
    expectRows(weights('justgrpo'), maskLengths.map(() => [1, 1, 1, 1].map(() => 1 / (4 * 3))));
  });

  it("'grpo': per-sequence mean over the mask, mean over the local batch, / B", () => {
    // Batches {0, 1}, {2, 3}, {4}: 1 / |m_i| / n_b / 3.
    const want = [
      masked([1, 1, 1, 1].map(() => 1 / 4 / 2 / 3), 4),
      masked([1, 1, 1, 1].map(() => 1 / 1 / 2 / 3), 1),
      masked([1, 1, 1, 1].map(() => 1 / 2 / 2 / 3), 2),
      [0, 0, 0, 0],
      masked([1, 1, 1, 1].map(() => 1 / 3 / 1 / 3), 3),
    ];
    expectRows(weights('grpo'), want);
    // Each nonempty sequence's weights sum to 1 / (n_b B): the loss is a mean of per-sequence means.
    expect(weights('grpo')[0]!.reduce((a, b) => a + b, 0)).toBeCloseTo(1 / 6, 15);
  });

  it("'bnpo': the local batch's active tokens, / B", () => {
    // Active tokens per batch: 4 + 1 = 5, 2 + 0 = 2, 3.
    const per = [1 / 5 / 3, 1 / 5 / 3, 1 / 2 / 3, 1 / 2 / 3, 1 / 3 / 3];
    expectRows(weights('bnpo'), maskLengths.map((m, i) => masked([0, 0, 0, 0].map(() => per[i]!), m)));
  });

  it("'dr_grpo': L x the local batch's size, / B", () => {
    const per = [1 / 8 / 3, 1 / 8 / 3, 1 / 8 / 3, 1 / 8 / 3, 1 / 4 / 3];
    expectRows(weights('dr_grpo'), maskLengths.map((m, i) => masked([0, 0, 0, 0].map(() => per[i]!), m)));
  });

  it("'dapo': every active token of the accumulated batch (10)", () => {
    expectRows(weights('dapo'), maskLengths.map((m) => masked([0, 0, 0, 0].map(() => 1 / 10), m)));
  });

  it('lossPositions K < L scales every weight by L / K', () => {
    for (const type of ['justgrpo', 'grpo', 'bnpo', 'dr_grpo', 'dapo'] as const)
      expectRows(weights(type, 2), weights(type).map((row) => row.map((w) => w * 2)));
  });

  it('no completion with A != 0, or no active token: weights 0, not NaN', () => {
    expect(tokenWeights({ lossType: 'justgrpo', maxCompletionLength: 2, maskLengths: [2, 2], valid: [false, false], localBatch: 2, positionsKept: 2 }).flat()).toEqual([0, 0, 0, 0]);
    expect(tokenWeights({ lossType: 'bnpo', maxCompletionLength: 2, maskLengths: [0, 0], valid: [true, true], localBatch: 2, positionsKept: 2 }).flat()).toEqual([0, 0, 0, 0]);
  });
});
