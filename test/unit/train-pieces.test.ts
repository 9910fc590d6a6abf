// The TypeScript pieces of training: schedules, seeded streams, the masked-diffusion batch, data files.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { InputError, Tokenizer, charTokenizerFiles, CHAR_TOKENIZER_IDS } from '../../lib/index.js';
import { readJsonl, tokenizeExamples } from '../../lib/train/data.js';
import { maskedDiffusionBatch } from '../../lib/train/objective.js';
import { Rng, STREAM } from '../../lib/train/rng.js';
import { learningRateAt } from '../../lib/train/schedule.js';
import { tmpDir } from '../helpers/tmp.js';

const tmp = tmpDir();

describe('learning-rate schedules (transformers formulas)', () => {
  const base = { learningRate: 1, warmupSteps: 10, totalSteps: 110 };
  it('warm up linearly from 0', () => {
    expect([0, 5, 9].map((s) => learningRateAt(s, { ...base, lrSchedulerType: 'constant' }))).toEqual([0, 0.5, 0.9]);
  });
  it('constant, linear and cosine after warm-up', () => {
    expect(learningRateAt(60, { ...base, lrSchedulerType: 'constant' })).toBe(1);
    expect(learningRateAt(60, { ...base, lrSchedulerType: 'linear' })).toBeCloseTo(0.5, 12);
    expect(learningRateAt(10, { ...base, lrSchedulerType: 'cosine' })).toBeCloseTo(1, 12);
    expect(learningRateAt(60, { ...base, lrSchedulerType: 'cosine' })).toBeCloseTo(0.5, 12);
    expect(learningRateAt(110, { ...base, lrSchedulerType: 'cosine' })).toBeCloseTo(0, 12);
  });
});

describe('seeded streams', () => {
  it('are reproducible, distinct per key, and uniform', () => {
    const a = new Rng(1, STREAM.mask, 5), b = new Rng(1, STREAM.mask, 5), c = new Rng(1, STREAM.mask, 6);
    const xs = Array.from({ length: 20000 }, () => a.next());
    expect(Array.from({ length: 20000 }, () => b.next())).toEqual(xs);
    expect(c.next()).not.toBe(xs[0]);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(new Rng(3).permutation(50).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });
});

describe('masked-diffusion batch', () => {
  const examples = [
    { prompt: [1, 2, 3], response: [4, 5, 6, 7, 8, 9], source: 'a' },
    { prompt: [], response: [10, 11, 12], source: 'b' },
  ];
  it('never masks prompts, pads responses with eos, weights 1 / p_mask / len / sequences', () => {
    const b = maskedDiffusionBatch(examples, (i) => new Rng(9, i), { maskTokenId: 99, padTokenId: 98, sequencesPerStep: 4 });
    expect(Array.from(b.seqStarts)).toEqual([0, 9, 18]);
    const toks = Array.from(b.tokens);
    expect(toks.slice(0, 3)).toEqual([1, 2, 3]);
    // Sequence 2 is padded with eos to the longest length (9): response length 9.
    const seq2 = [10, 11, 12, 98, 98, 98, 98, 98, 98];
    for (let i = 0; i < b.rows.length; i++) {
      const row = b.rows[i]!;
      expect(toks[row]).toBe(99);
      const seq = row < 9 ? 0 : 1;
      expect(b.targets[i]).toBe(seq === 0 ? [1, 2, 3, 4, 5, 6, 7, 8, 9][row]! : seq2[row - 9]!);
      expect(seq === 0 ? row >= 3 : true).toBe(true);
    }
    // Each sequence's weights are one value: 1 / (p_mask * 6 or 9 * 4), p_mask in [1e-3, 1].
    const w0 = [...b.weights].filter((_, i) => b.rows[i]! < 9);
    expect(new Set(w0).size).toBeLessThanOrEqual(1);
    if (w0.length) expect(1 / (w0[0]! * 6 * 4)).toBeLessThanOrEqual(1 + 1e-6);
    expect(b.numTokens).toBe(6 + 9);
  });
  it('masks each response token with probability p_mask (on average)', () => {
    let masked = 0, expected = 0;
    for (let s = 0; s < 400; s++) {
      const b = maskedDiffusionBatch([examples[0]!], (i) => new Rng(s, i), { maskTokenId: 99, padTokenId: null, sequencesPerStep: 1 });
      const pMask = b.weights.length ? 1 / (b.weights[0]! * 6) : null;
      masked += b.rows.length;
      const r = new Rng(s, 0);
      expected += 6 * ((1 - 1e-3) * r.next() + 1e-3);
      if (pMask !== null) expect(pMask).toBeGreaterThan(0);
    }
    expect(Math.abs(masked - expected) / expected).toBeLessThan(0.1);
  });
});

describe('training data files', () => {
  const files = charTokenizerFiles();
  const tok = Tokenizer.fromJSON(JSON.parse(files['tokenizer.json']!), JSON.parse(files['tokenizer_config.json']!));
  const ids = { bos: CHAR_TOKENIZER_IDS.bos, eos: CHAR_TOKENIZER_IDS.eos, eot: CHAR_TOKENIZER_IDS.eot };

  it('reports malformed lines as file:line, or skips and counts them', async () => {
    const file = path.join(tmp, 'bad.jsonl');
    writeFileSync(file, '{"prompt": "a", "response": "b"}\n\n{"prompt": "a", \n[1,2]\n{"text": "x"}\n');
    await expect(readJsonl(file)).rejects.toThrow(`${file}:3: not valid JSON`);
    const r = await readJsonl(file, { onBadLine: 'skip' });
    expect(r.records.map((x) => x.line)).toEqual([1, 5]);
    expect(r.skipped).toBe(2);
  });

  it('tokenizes chat SFT, GSM8K-style and pre-training records', async () => {
    const recs = [
      { line: 1, value: { prompt: 'hi', response: 'yo' } },
      { line: 2, value: { question: 'q', answer: 'a' } },
      { line: 3, value: { text: 'abc' } },
    ];
    const { examples } = tokenizeExamples(recs, 'f', tok, ids, { maxLength: 100 });
    expect(examples[0]!.prompt).toEqual(tok.encodeChat([{ role: 'user', content: 'hi' }]));
    expect(examples[0]!.response).toEqual([...tok.encode('yo'), CHAR_TOKENIZER_IDS.eot]);
    expect(examples[1]!.response).toEqual([...tok.encode('a'), CHAR_TOKENIZER_IDS.eot]);
    expect(examples[2]).toMatchObject({ prompt: [], response: [CHAR_TOKENIZER_IDS.bos, ...tok.encode('abc'), CHAR_TOKENIZER_IDS.eos] });
  });

  it('handles over-long examples per the overlong option', () => {
    const recs = [{ line: 7, value: { prompt: 'p', response: 'x'.repeat(100) } }];
    expect(() => tokenizeExamples(recs, 'f', tok, ids, { maxLength: 50 })).toThrow(InputError);
    expect(() => tokenizeExamples(recs, 'f', tok, ids, { maxLength: 50 })).toThrow(/^f:7: .* exceed the maximum length 50/);
    expect(tokenizeExamples(recs, 'f', tok, ids, { maxLength: 50, overlong: 'skip' })).toMatchObject({ examples: [], dropped: 1 });
    const t = tokenizeExamples(recs, 'f', tok, ids, { maxLength: 50, overlong: 'truncate' }).examples[0]!;
    expect(t.prompt.length + t.response.length).toBe(50);
    expect(() => tokenizeExamples([{ line: 2, value: { foo: 1 } }], 'f', tok, ids, { maxLength: 50 })).toThrow(/^f:2: needs string fields/);
  });
});
