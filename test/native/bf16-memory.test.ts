// bf16-only weights on the CPU: `loadModel(dir, { dtype: 'bf16' })` holds the weight matrices in
// bf16 alone (2 bytes a parameter; the norm weights stay fp32), a BF16 checkpoint loads without
// widening, and training gains fp32 masters only when it starts. Also the memory plan of LLaDA-8B
// in bf16, from a model of its shapes with fewer layers.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { loadModel, type ModelConfig } from '../../lib/index.js';
import { internals } from '../../lib/model.js';
import { createNativeTrainer, native, type NativeEngine } from '../../lib/native/binding.js';
import { readSafetensorsHeader } from '../../lib/safetensors.js';
import { openModel } from '../../lib/train/run.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { tmpDir } from '../helpers/tmp.js';
import { args, sameBits, trainCase } from '../helpers/train.js';

const disposables: { dispose(): unknown }[] = [];
afterAll(async () => {
  for (const d of disposables.reverse()) await d.dispose();
});
const keep = <T extends { dispose(): unknown }>(x: T): T => (disposables.push(x), x);

/** bf16 round to nearest even of each value, widened back (what a bf16-only model holds). */
function roundBf16(x: Float32Array): Float32Array {
  const u = new Uint32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  for (let i = 0; i < u.length; i++) u[i] = ((u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16) << 16;
  return new Float32Array(u.buffer);
}

/** The raw bytes of each tensor of a model directory's safetensors files (one or shards), by name. */
async function tensorBytes(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) {
    const file = path.join(dir, name);
    const header = await readSafetensorsHeader(file);
    const data = readFileSync(file);
    for (const t of header.tensors.values()) {
      const bytes = t.shape.reduce((a, b) => a * b, 1) * (t.dtype === 'F32' ? 4 : 2);
      out.set(t.name, data.subarray(t.offset, t.offset + bytes));
    }
  }
  return out;
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

describe('bf16-only weights: loading and reading back', () => {
  it('a BF16 checkpoint loads without widening: 2 bytes a matrix parameter, the same values and logits as with masters', async () => {
    const dir = path.join(FIXTURES, 'gqa_bf16');
    const only = keep(await loadModel(dir, { dtype: 'bf16' }));
    const masters = keep(await loadModel(dir, { dtype: 'bf16', masterWeights: true }));
    const info = only.parameterInfo();
    const matrices = info.filter((p) => p.shape.length === 2).reduce((n, p) => n + numel(p.shape), 0);
    const norms = info.filter((p) => p.shape.length === 1).reduce((n, p) => n + numel(p.shape), 0);
    const mem = only.memoryBytes();
    // fp32: the norm weights only (each padded to 16 floats); bf16: every parameter's slot.
    expect(mem.weightsFp32).toBeLessThan(4 * norms + 64 * info.length);
    expect(mem.weightsFp32).toBeGreaterThanOrEqual(4 * norms);
    expect(mem.weightsBf16).toBeGreaterThanOrEqual(2 * (matrices + norms));
    expect(mem.weightsBf16).toBeLessThan(2 * (matrices + norms) + 64 * info.length);
    expect(masters.memoryBytes().weightsFp32).toBeGreaterThanOrEqual(4 * (matrices + norms));
    for (const { name } of info) expect(sameBits(await only.getParameter(name), await masters.getParameter(name)), name).toBe(true);
    const ids = [[1, 5, 9, 2, 7, 3], [4, 4, 8, 1, 0, 6]];
    expect(sameBits(await only.logits(ids), await masters.logits(ids))).toBe(true);
  });

  it('an F32 checkpoint is rounded once on load; getParameter and save give the bf16 values; saving as BF16 is lossless', async () => {
    const f32 = keep(await loadModel(path.join(FIXTURES, 'gqa_f32')));
    const only = keep(await loadModel(path.join(FIXTURES, 'gqa_f32'), { dtype: 'bf16' }));
    for (const { name, shape } of only.parameterInfo()) {
      const want = shape.length === 2 ? roundBf16(await f32.getParameter(name)) : await f32.getParameter(name);
      expect(sameBits(await only.getParameter(name), want), name).toBe(true);
    }
    const out = tmpDir();
    await only.save(path.join(out, 'as-f32'), { dtype: 'F32' });
    await only.save(path.join(out, 'as-bf16'), { dtype: 'BF16' });
    // Loaded again bf16-only, the F32 copy rounds to the same bits; the BF16 copy's bytes are the model's.
    const again = keep(await loadModel(path.join(out, 'as-f32'), { dtype: 'bf16' }));
    const bf16File = await tensorBytes(path.join(out, 'as-bf16'));
    for (const { name, shape } of only.parameterInfo()) {
      const w = await only.getParameter(name);
      expect(sameBits(await again.getParameter(name), w), name).toBe(true);
      if (shape.length !== 2) continue;
      const hi = new Uint16Array(w.length);
      const u = new Uint32Array(w.buffer, w.byteOffset, w.length);
      for (let i = 0; i < w.length; i++) hi[i] = u[i]! >>> 16;
      expect(Buffer.compare(Buffer.from(hi.buffer), bf16File.get(name)!), name).toBe(0);
    }
    // And a BF16 checkpoint written back as BF16 has its own bytes, tensor for tensor.
    const orig = await tensorBytes(path.join(FIXTURES, 'gqa_bf16'));
    const fromBf16 = keep(await loadModel(path.join(FIXTURES, 'gqa_bf16'), { dtype: 'bf16' }));
    await fromBf16.save(path.join(out, 'round-trip'), { dtype: 'BF16' });
    const back = await tensorBytes(path.join(out, 'round-trip'));
    for (const [name, bytes] of orig) expect(Buffer.compare(back.get(name)!, bytes), name).toBe(0);
  });

  it('setParameter rounds into the bf16 weights; fp32 mode keeps only its fp32 weights, as before', async () => {
    const only = keep(await loadModel(path.join(FIXTURES, 'mha_f32'), { dtype: 'bf16' }));
    const name = only.parameterInfo().find((p) => p.shape.length === 2)!.name;
    const w = Float32Array.from(await only.getParameter(name), (_, i) => Math.sin(i) / 3);
    await only.setParameter(name, w);
    expect(sameBits(await only.getParameter(name), roundBf16(w))).toBe(true);
    const f32 = keep(await loadModel(path.join(FIXTURES, 'mha_f32')));
    const mem = f32.memoryBytes();
    expect(mem.weightsBf16).toBe(0);
    expect(mem.weightsFp32).toBeGreaterThanOrEqual(4 * f32.numParams);
  });

  it('refuses non-finite bf16 weights by tensor name', async () => {
    const src = keep(await loadModel(path.join(FIXTURES, 'gqa_bf16'), { dtype: 'bf16' }));
    const name = src.parameterInfo().find((p) => p.shape.length === 2)!.name;
    const w = await src.getParameter(name);
    w[3] = Number.NaN;
    await src.setParameter(name, w);
    const out = path.join(tmpDir(), 'nan');
    await src.save(out, { dtype: 'BF16' });
    await expect(loadModel(out, { dtype: 'bf16' })).rejects.toThrow(new RegExp(`tensor ${name.replace(/\./g, '\\.')} has 1 non-finite value`));
  });
});

describe('bf16-only weights: training', () => {
  it('a Trainer on a bf16-only model widens its weights into fp32 masters: the same gradients as a model with masters from the same BF16 checkpoint', async () => {
    // gqa_bf16 is sharded: loaded through loadModel, then its engine.
    const engineOf = async (masterWeights: boolean) =>
      internals.get(keep(await loadModel(path.join(FIXTURES, 'gqa_bf16'), { dtype: 'bf16', masterWeights })))!.engine;
    const only = await engineOf(false);
    const masters = await engineOf(true);
    const before = only.memoryBytes();
    const a = keep(createNativeTrainer(only));
    const b = keep(createNativeTrainer(masters));
    const after = only.memoryBytes();
    expect(after.weightsFp32).toBeGreaterThanOrEqual(4 * only.numParams());
    expect(before.weightsFp32).toBeLessThan(after.weightsFp32 / 10);
    const ref = await trainCase('gqa_f32');
    const la = await a.crossEntropyBackward(...args(ref.batch));
    const lb = await b.crossEntropyBackward(...args(ref.batch));
    expect(la.loss).toBe(lb.loss);
    for (const { name } of only.paramInfo()) expect(sameBits(a.getGrad(name), b.getGrad(name)), name).toBe(true);
    await a.step({ ...ref.adamw, lr: 1e-2 });
    await b.step({ ...ref.adamw, lr: 1e-2 });
    for (const { name } of only.paramInfo()) expect(sameBits(only.getParam(name), masters.getParam(name)), name).toBe(true);
  });

  it('the training commands load bf16 models with fp32 masters (they train the checkpoint\'s own values)', async () => {
    const m = keep(await openModel(path.join(FIXTURES, 'gqa_f32'), FIXTURES, 'bf16'));
    expect(m.deviceInfo().dtype).toBe('BF16');
    expect(m.memoryBytes().weightsFp32).toBeGreaterThanOrEqual(4 * m.numParams);
  });
});

// LLaDA-8B's shapes (DESIGN.md; its config.json as test/unit/config.test.ts reads it).
const LLADA_8B: ModelConfig = {
  dModel: 4096, nLayers: 32, nHeads: 32, nKvHeads: 32, headDim: 128, mlpHiddenSize: 12288, vocabSize: 126464,
  embeddingSize: 126464, maxSequenceLength: 4096, ropeTheta: 500000, rmsNormEps: 1e-5, maskTokenId: 126336,
  eosTokenId: 126081, padTokenId: 126081, bosTokenId: 126080,
};

describe('the memory plan of LLaDA-8B in bf16', () => {
  it('per layer and for the embedding and head, the engine holds 2 bytes a parameter; 32 layers come to ~16 GB', () => {
    // Made, not initialised: the weights are mapped and never touched, so two 8B-shaped layers
    // (~2.9 GB of bf16) cost neither time nor resident memory here.
    const engines = [1, 2].map((nLayers) => keep(new (native().Engine)({ ...LLADA_8B, nLayers }, { dtype: 'BF16', masterWeights: false }) as NativeEngine));
    const [one, two] = engines.map((e) => e.memoryBytes());
    const d = LLADA_8B.dModel, mlp = LLADA_8B.mlpHiddenSize, kv = LLADA_8B.nKvHeads * LLADA_8B.headDim;
    const layerParams = d * d + 2 * kv * d + d * d + 3 * mlp * d; // q, k, v, attn_out, ff_proj, up_proj, ff_out
    const edgeParams = 2 * LLADA_8B.embeddingSize * d; // wte and the untied LM head
    expect(layerParams).toBe(218_103_808);
    expect(two!.weightsBf16 - one!.weightsBf16).toBe(2 * (layerParams + 2 * d)); // the norms' slots too (2 x 16 KB, unused)
    expect(one!.weightsBf16).toBe(2 * (edgeParams + layerParams + 2 * d + d));
    expect(two!.weightsFp32 - one!.weightsFp32).toBe(4 * 2 * d); // attn_norm and ff_norm in fp32
    expect(engines[1]!.numParams()).toBe(edgeParams + 2 * (layerParams + 2 * d) + d);

    const perLayer = two!.weightsBf16 - one!.weightsBf16 + two!.weightsFp32 - one!.weightsFp32;
    const edges = one!.weightsBf16 + one!.weightsFp32 - perLayer;
    const total = edges + 32 * perLayer;
    const fp32Total = 4 * (edgeParams + 32 * (layerParams + 2 * d) + d);
    expect(total).toBeGreaterThan(15.9e9);
    expect(total).toBeLessThan(16.2e9);
    const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
    console.log(
      `LLaDA-8B in bf16 (bf16-only weights): per layer ${gb(perLayer)} (${layerParams} matrix parameters x 2 bytes + norms), ` +
        `embedding + head + ln_f ${gb(edges)}; 32 layers: ${gb(total)} of weights plus activations (with fp32 masters, as training holds them: ${gb(fp32Total + total)})`,
    );
  });
});
