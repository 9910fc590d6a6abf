// Saving and loading Hugging Face directories: bit-exact round trips in every dtype, shards.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { createTinyModel, loadModel, readSafetensorsHeader, type LladaModel } from '../../lib/index.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { tmpDir } from '../helpers/tmp.js';

const tmp = tmpDir();

async function allParams(model: LladaModel): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const p of model.parameterInfo()) out.set(p.name, await model.getParameter(p.name));
  return out;
}

function expectBitEqual(a: Map<string, Float32Array>, b: Map<string, Float32Array>) {
  expect([...a.keys()]).toEqual([...b.keys()]);
  for (const [name, x] of a) {
    const y = b.get(name)!;
    expect(Buffer.from(y.buffer, y.byteOffset, y.byteLength).equals(Buffer.from(x.buffer, x.byteOffset, x.byteLength)), name).toBe(true);
  }
}

describe('save -> load', () => {
  const models: LladaModel[] = [];
  afterAll(async () => {
    for (const m of models) await m.dispose();
  });

  it.each(['mha_f32', 'gqa_bf16', 'mha_f16'])('%s round-trips bit-exactly in its own dtype and logits agree', async (name) => {
    const a = await loadModel(path.join(FIXTURES, name));
    models.push(a);
    const out = path.join(tmp, name);
    await a.save(out);
    const b = await loadModel(out);
    models.push(b);
    expectBitEqual(await allParams(a), await allParams(b));
    const ids = [[1, 2, 60, 4, 5]];
    expect(await b.logits(ids)).toEqual(await a.logits(ids));
    // The dtype on disk is the dtype it was loaded in.
    const header = await readSafetensorsHeader(path.join(out, 'model.safetensors'));
    const dtype = name.endsWith('f32') ? 'F32' : name.endsWith('bf16') ? 'BF16' : 'F16';
    expect([...header.tensors.values()].every((t) => t.dtype === dtype)).toBe(true);
    expect(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'))).toEqual(
      JSON.parse(readFileSync(path.join(FIXTURES, name, 'config.json'), 'utf8')),
    );
  });

  it('a bf16 model saved as F32 and back to BF16 keeps every bit', async () => {
    const a = await loadModel(path.join(FIXTURES, 'gqa_bf16'));
    models.push(a);
    await a.save(path.join(tmp, 'as-f32'), { dtype: 'F32' });
    const b = await loadModel(path.join(tmp, 'as-f32'));
    models.push(b);
    await b.save(path.join(tmp, 'back-bf16'), { dtype: 'BF16' });
    const c = await loadModel(path.join(tmp, 'back-bf16'));
    models.push(c);
    const pa = await allParams(a);
    expectBitEqual(pa, await allParams(b));
    expectBitEqual(pa, await allParams(c));
  });

  it('fp32 weights saved as BF16 round to nearest even', async () => {
    const a = await loadModel(path.join(FIXTURES, 'mha_f32'));
    models.push(a);
    const name = 'model.transformer.ln_f.weight';
    // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0); 1 + 3*2^-8 -> 1 + 2^-6.
    const w = new Float32Array(32).fill(0.5);
    w[0] = 1 + 2 ** -8;
    w[1] = 1 + 3 * 2 ** -8;
    w[2] = -(1 + 2 ** -9);
    await a.setParameter(name, w);
    await a.save(path.join(tmp, 'rne'), { dtype: 'BF16' });
    const b = await loadModel(path.join(tmp, 'rne'));
    models.push(b);
    const got = await b.getParameter(name);
    expect([got[0], got[1], got[2], got[3]]).toEqual([1, 1 + 2 ** -6, -1, 0.5]);
  });

  it('large models are split into shards with an index, and load back', async () => {
    const a = await createTinyModel({ dModel: 32, nLayers: 2, nHeads: 2, mlpHiddenSize: 64, seed: 3 });
    models.push(a);
    const out = path.join(tmp, 'sharded');
    await a.save(out, { maxShardBytes: 20_000 });
    const files = readdirSync(out).sort();
    expect(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(1);
    expect(files).toContain('model.safetensors.index.json');
    expect(files).toContain('tokenizer.json');
    const b = await loadModel(out);
    models.push(b);
    expectBitEqual(await allParams(a), await allParams(b));
    expect(b.tokenizer.encode('hi')).toEqual(a.tokenizer.encode('hi'));
  });

  it('saving over an existing directory replaces it and leaves no temporary behind', async () => {
    const a = await createTinyModel({ dModel: 16, nLayers: 1, nHeads: 2, mlpHiddenSize: 32, seed: 1 });
    const b = await createTinyModel({ dModel: 16, nLayers: 1, nHeads: 2, mlpHiddenSize: 32, seed: 2 });
    models.push(a, b);
    const out = path.join(tmp, 'replace');
    await a.save(out);
    await b.save(out);
    const c = await loadModel(out);
    models.push(c);
    expectBitEqual(await allParams(b), await allParams(c));
    expect(readdirSync(tmp).filter((f) => f.startsWith('replace.'))).toEqual([]);
  });

  it('a failed save leaves the previous directory intact', async () => {
    const a = await createTinyModel({ dModel: 16, nLayers: 1, nHeads: 2, mlpHiddenSize: 32, seed: 1 });
    models.push(a);
    const out = path.join(tmp, 'intact');
    await a.save(out);
    const before = readFileSync(path.join(out, 'model.safetensors'));
    // An invalid dtype fails before anything is written; a disposed engine fails mid-save.
    await expect(a.save(out, { dtype: 'F64' as never })).rejects.toThrow(/dtype/);
    expect(readFileSync(path.join(out, 'model.safetensors')).equals(before)).toBe(true);
    expect(existsSync(path.join(out, 'config.json'))).toBe(true);
    expect(readdirSync(tmp).filter((f) => f.startsWith('intact.'))).toEqual([]);
  });
});
