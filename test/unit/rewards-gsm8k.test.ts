import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultDataDir } from '../../lib/eval/tasks.js';
import { extractGsm8kAnswer, extractGsm8kGold, gsm8k } from '../../lib/rewards/gsm8k.js';
import { rewards } from '../../lib/rewards/index.js';

const dataDir = defaultDataDir();
const haveData = existsSync(path.join(dataDir, 'gsm8k', 'test.jsonl'));
if (!haveData) console.warn(`GSM8K data tests skipped: no data at ${dataDir} (set JUSTGRPO_DATA)`);

const rows = (split: string) =>
  readFileSync(path.join(dataDir, 'gsm8k', `${split}.jsonl`), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { question: string; answer: string });

describe('GSM8K answer extraction', () => {
  it('prefers \\boxed, then "the answer is", then "final answer is", then the last number', () => {
    expect(extractGsm8kAnswer('So 5 apples. The answer is 7. Final answer is 9. \\boxed{11} then 13')?.text).toBe('11');
    expect(extractGsm8kAnswer('So 5 apples. The answer is 7. Final answer is 9 and then 13')?.source).toBe('the answer is');
    expect(extractGsm8kAnswer('So 5 apples. Final answer is 9 and then 13')?.text).toBe('9');
    expect(extractGsm8kAnswer('She has 3 cats and 4 dogs, 7 pets.')?.text).toBe('7');
    expect(extractGsm8kAnswer('no digits here')).toBeUndefined();
  });

  it('uses the last "the answer is" and falls through when it has no number', () => {
    expect(extractGsm8kAnswer('the answer is 3? No, the answer is 4.')?.text).toBe('4');
    expect(extractGsm8kAnswer('We get 12. The answer is below.')?.text).toBe('12');
    // An equation after the phrase: its right-hand side is the answer (GSM8K train row 7158).
    expect(extractGsm8kAnswer('so the final answer is 15 gallons * 8 pints / gallon = <<15*8=120>>120 pints')?.text).toBe('120');
  });

  it('handles commas, $, %, units, signs and trailing periods', () => {
    const v = (s: string) => {
      const a = extractGsm8kAnswer(s);
      return a ? Number(a.value.num) / Number(a.value.den) : undefined;
    };
    expect(v('The answer is $1,000.')).toBe(1000);
    expect(v('It costs \\$18.50 in total.')).toBe(18.5);
    expect(v('The discount is 25%.')).toBe(25);
    expect(v('He walks 12 miles.')).toBe(12);
    expect(v('The temperature is -3 degrees.')).toBe(-3);
    expect(v('The change is −7.')).toBe(-7);
    expect(v('ages 3-5')).toBe(5); // a hyphen after a digit is not a sign
    expect(v('\\boxed{\\frac{3}{4}}')).toBe(0.75);
    expect(v('That is 3/4 of the pie')).toBe(0.75);
    expect(v('It weighs .5 kg')).toBe(0.5);
    expect(v('The total is 1,234,567 dollars')).toBe(1234567);
  });

  it('reads the gold after ####, or a bare number', () => {
    expect(extractGsm8kGold('He has 2+3=<<2+3=5>>5.\n#### 5')?.text).toBe('5');
    expect(extractGsm8kGold('#### 1,000')?.value).toEqual({ num: 1000n, den: 1n });
    expect(extractGsm8kGold('42')?.text).toBe('42');
  });
});

describe('rewards.gsm8k', () => {
  it('compares integers exactly: 120,006 is not 120,000', () => {
    expect(rewards.gsm8k('The answer is 120,006', '#### 120,000')).toBe(0);
    expect(rewards.gsm8k('The answer is 120,000', '#### 120000')).toBe(1);
    expect(gsm8k('The answer is 72.0', '#### 72')).toBe(1);
    expect(gsm8k('The answer is 72.001', '#### 72')).toBe(0);
    expect(gsm8k('The answer is 10000000000000000000001', '10000000000000000000000')).toBe(0);
  });

  it('compares other values by value with relative tolerance 1e-4', () => {
    expect(gsm8k('The answer is 0.5', '1/2')).toBe(1);
    expect(gsm8k('The answer is \\frac{1}{3}', '0.33333')).toBe(1);
    expect(gsm8k('The answer is 0.333', '\\frac{1}{3}')).toBe(0);
    expect(gsm8k('The answer is 2.5', '2.50')).toBe(1);
  });

  it('scores a wrong or missing answer 0 and throws on a gold with no number', () => {
    expect(gsm8k('I do not know', '#### 5')).toBe(0);
    expect(gsm8k('The answer is 6', '#### 5')).toBe(0);
    expect(() => gsm8k('5', '#### none')).toThrow(/gold/);
  });

  it.skipIf(!haveData)('scores all 1319 test gold solutions 1 against their own answers, and perturbed answers 0', () => {
    const test = rows('test');
    expect(test).toHaveLength(1319);
    const wrong: string[] = [];
    const accepted: string[] = [];
    for (const r of test) {
      if (gsm8k(r.answer, r.answer) !== 1) wrong.push(r.answer.slice(-60));
      const gold = extractGsm8kGold(r.answer)!;
      // Replace the final number with gold + 1 (and with gold * 10) in the completion.
      const head = r.answer.slice(0, r.answer.lastIndexOf('####'));
      for (const delta of [1n, gold.value.num * 9n]) {
        const perturbed = gold.value.den === 1n ? gold.value.num + delta : gold.value.num + 1n;
        if (gsm8k(`${head}#### ${perturbed}`, r.answer) !== 0) accepted.push(`${perturbed} for ${gold.text}`);
      }
      // The bare gold number works as the gold too.
      if (gsm8k(r.answer, gold.text) !== 1) wrong.push(`bare ${gold.text}`);
    }
    expect(wrong).toEqual([]);
    expect(accepted).toEqual([]);
  });

  it.skipIf(!haveData)('scores all 7473 train gold solutions 1 too', () => {
    const train = rows('train');
    expect(train).toHaveLength(7473);
    expect(train.filter((r) => gsm8k(r.answer, r.answer) !== 1).map((r) => r.answer.slice(-60))).toEqual([]);
  });

  it('scores 1000 completions in well under a second', () => {
    const completions = Array.from(
      { length: 1000 },
      (_, i) => `Step 1: ${i} + 12 = ${i + 12}.\nStep 2: multiply by 3 to get ${3 * (i + 12)} apples, costing $1,${String(i % 1000).padStart(3, '0')}.\nThe answer is ${3 * (i + 12)}.`,
    );
    for (const c of completions.slice(0, 50)) gsm8k(c, '#### 36');
    const t0 = performance.now();
    let correct = 0;
    completions.forEach((c, i) => (correct += gsm8k(c, `#### ${3 * (i + 12)}`)));
    const ms = performance.now() - t0;
    expect(correct).toBe(1000);
    expect(ms).toBeLessThan(250);
  });
});
