import { readFileSync } from 'node:fs';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { DEMO_DATA_DIR, DEMO_SPLITS } from '../../lib/demo/shipped.js';
import { extractGsm8kGold, gsm8k } from '../../lib/rewards/gsm8k.js';
import { ARITH_DEFAULTS, arithProblem, arithSplits, toJsonl } from '../../lib/tasks/arith.js';
import { Rng } from '../../lib/train/rng.js';

// Re-derives a problem's answer from its question alone, by reading the clauses: an independent
// check of the generator's worked solution.
function solve(question: string): number {
  const m = /(\w+) has (\d+) (\w+), (.*)\. How many (\w+)\?$/.exec(question.replace(/^\w+ has \d+ \w+\. /, ''));
  if (!m) throw new Error(`unparsable question: ${question}`);
  expect(m[3]).toBe(m[5]);
  let v = Number(m[2]);
  for (const clause of m[4]!.split(', ')) {
    const n = Number(/\d+$/.exec(clause)?.[0]);
    if (clause === 'doubles them') v *= 2;
    else if (clause === 'triples them') v *= 3;
    else if (/^(buys|gets|finds|wins) /.test(clause)) v += n;
    else if (/^(loses|sells|gives away|breaks) /.test(clause)) v -= n;
    else throw new Error(`unknown clause ${clause}`);
  }
  return v;
}

describe('arithmetic word problems', () => {
  it('are deterministic per seed and differ across seeds', () => {
    const a = arithSplits({ train: 200, heldout: 50 }, 7);
    const b = arithSplits({ train: 200, heldout: 50 }, 7);
    const c = arithSplits({ train: 200, heldout: 50 }, 8);
    expect(toJsonl(a.train)).toBe(toJsonl(b.train));
    expect(toJsonl(a.heldout)).toBe(toJsonl(b.heldout));
    expect(toJsonl(a.train)).not.toBe(toJsonl(c.train));
  });

  it('keep train and held-out questions disjoint and distinct', () => {
    const { train, heldout } = arithSplits({ train: 3000, heldout: 300 }, 0);
    const held = new Set(heldout.map((p) => p.question));
    expect(held.size).toBe(300);
    expect(new Set(train.map((p) => p.question)).size).toBe(3000);
    expect(train.filter((p) => held.has(p.question))).toEqual([]);
  });

  it('have worked solutions whose steps and final answer are right', () => {
    const rng = new Rng(3, 9);
    for (let i = 0; i < 500; i++) {
      const p = arithProblem(rng, { minSteps: 1, maxSteps: 3, distractorRate: 0.5 });
      const lines = p.answer.split('\n');
      expect(lines.at(-1)).toBe(`#### ${p.value}`);
      expect(solve(p.question)).toBe(p.value);
      let prev: number | null = null;
      for (const line of lines.slice(0, -1)) {
        const m = /^(\d+)([-+*])(\d+)=(\d+)$/.exec(line)!;
        expect(m, line).not.toBeNull();
        const [x, y, z] = [Number(m[1]), Number(m[3]), Number(m[4])];
        expect(z).toBe(m[2] === '+' ? x + y : m[2] === '-' ? x - y : x * y);
        if (prev !== null) expect(x).toBe(prev);
        expect(z).toBeGreaterThanOrEqual(0);
        prev = z;
      }
      expect(prev).toBe(p.value);
      expect(lines.length - 1).toBeGreaterThanOrEqual(1);
      expect(lines.length - 1).toBeLessThanOrEqual(3);
      // The package's own verifier agrees with the gold answer.
      expect(gsm8k(p.answer, p.answer)).toBe(1);
      expect(extractGsm8kGold(p.answer)?.text).toBe(String(p.value));
    }
  });

  it('honour the difficulty knobs', () => {
    const rng = new Rng(1);
    const ps = Array.from({ length: 300 }, () => arithProblem(rng, { minSteps: 3, maxSteps: 3, maxStart: 5, maxChange: 2, multiply: false, distractorRate: 0 }));
    for (const p of ps) {
      expect(p.answer.split('\n').length).toBe(4);
      expect(p.answer).not.toContain('*');
      expect(p.question.split('.').length).toBe(2);
      expect(Number(/has (\d+)/.exec(p.question)![1])).toBeLessThanOrEqual(5);
      for (const m of p.answer.matchAll(/[-+](\d+)=/g)) expect(Number(m[1])).toBeLessThanOrEqual(2);
    }
    const withDistractors = Array.from({ length: 300 }, () => arithProblem(rng, { distractorRate: 1 }));
    expect(withDistractors.every((p) => p.question.split('. ').length === 3)).toBe(true);
  });

  it('reject bad knobs with one clear error', () => {
    expect(() => arithProblem(new Rng(0), { minSteps: 3, maxSteps: 2 })).toThrow(/`maxSteps`/);
    expect(() => arithProblem(new Rng(0), { distractorRate: 2 })).toThrow(/`distractorRate`/);
    expect(() => arithSplits({ train: -1, heldout: 0 })).toThrow(/`sizes.train`/);
    // A knob setting with only a handful of distinct problems cannot fill a large split.
    expect(() => arithSplits({ train: 0, heldout: 1000 }, 0, { minSteps: 1, maxSteps: 1, maxStart: 2, maxChange: 1, multiply: false, distractorRate: 0 }))
      .toThrow(/distinct problems/);
  });

  it('match the shipped data files byte for byte', () => {
    const { train, heldout } = arithSplits({ train: DEMO_SPLITS.train, heldout: DEMO_SPLITS.heldout }, DEMO_SPLITS.seed, ARITH_DEFAULTS);
    expect(toJsonl(heldout)).toBe(readFileSync(path.join(DEMO_DATA_DIR, 'heldout.jsonl'), 'utf8'));
    expect(toJsonl(train)).toBe(readFileSync(path.join(DEMO_DATA_DIR, 'train.jsonl'), 'utf8'));
  });
});
