// Reads the PyTorch reference fixtures of test/reference/fixtures.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'reference', 'fixtures');
export const FIXTURE_MODELS = ['mha_f32', 'gqa_f32', 'gqa_bf16', 'mha_f16'] as const;

export type LogitsCase = { name: string; ids: number[][]; shape: [number, number, number]; logits: Float32Array };

export function logitsCases(model: string): LogitsCase[] {
  const dir = path.join(FIXTURES, model);
  const spec = JSON.parse(readFileSync(path.join(dir, 'expected.json'), 'utf8')) as {
    cases: { name: string; ids: number[][]; shape: [number, number, number]; logits: string }[];
  };
  return spec.cases.map((c) => {
    const buf = readFileSync(path.join(dir, c.logits));
    const logits = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    if (logits.length !== c.shape[0] * c.shape[1] * c.shape[2]) throw new Error(`${model}/${c.logits}: wrong size`);
    return { ...c, logits };
  });
}

/** max |a - b| / max |b|: the error relative to the scale of the reference tensor. */
export function relError(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= maxDiff)) maxDiff = d; // NaN propagates as a failure
    maxRef = Math.max(maxRef, Math.abs(b[i]!));
  }
  return maxDiff / maxRef;
}
