// The fuzzers' findings as regression tests, and a fixed-seed slice of their properties in the
// normal suite (`npm run fuzz` runs them for minutes with fresh seeds): a parser of a stranger's
// file either accepts it consistently or throws one of our errors naming the file.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { buildSafetensorsHeader, CheckpointError, ConfigError, parseModelConfig, readSafetensorsHeader } from '../../lib/index.js';
import { tmpDir } from '../helpers/tmp.js';

const tmp = tmpDir();
const CONFIG = {
  d_model: 32, n_layers: 1, n_heads: 2, n_kv_heads: 2, mlp_hidden_size: 48, vocab_size: 100, embedding_size: 104,
  max_sequence_length: 64, rope_theta: 10000, rms_norm_eps: 1e-5, mask_token_id: 99,
};

describe('fuzzer findings', () => {
  it('config.json: an mlp_ratio that rounds to 0 units is refused by name (fast-check: it reached the engine as mlp 0)', () => {
    const { mlp_hidden_size: _, ...raw } = CONFIG;
    expect(() => parseModelConfig({ ...raw, mlp_ratio: 0.001 }, '/m/config.json')).toThrow(
      /^\/m\/config.json: `mlp_ratio` \(0.001\) times `d_model` \(32\) rounds to 0, not a usable MLP size/);
    // The second fuzz run: a huge ratio gave an mlp size of 2^53, past exact integers.
    expect(() => parseModelConfig({ ...raw, mlp_ratio: 2 ** 48 }, '/m/config.json')).toThrow(/rounds to 9007199254740992, not a usable MLP size/);
    expect(parseModelConfig({ ...raw, mlp_ratio: 1.5 }, 'c').mlpHiddenSize).toBe(48);
  });
});

const weird = fc.oneof(
  fc.constantFrom(-1, 0, 1, 2 ** 31, 2 ** 53, 2 ** 53 + 2, 1e308, 0.5, '', 'F32', 'F64', null, true, [], {}, [0], [1, 2, 3], [-1, 4], [0, 2 ** 53]),
  fc.integer(), fc.double(), fc.jsonValue({ maxDepth: 2 }),
);

describe('properties (fixed seed)', () => {
  it('safetensors headers: accepted consistently or refused with a CheckpointError naming the file', async () => {
    const { header } = buildSafetensorsHeader([
      { name: 'a', dtype: 'F32', shape: [2, 3] }, { name: 'b', dtype: 'BF16', shape: [4] }, { name: 'c', dtype: 'F16', shape: [1, 1] },
    ]);
    const n = Number(header.readBigUInt64LE(0));
    const json = JSON.parse(header.subarray(8).toString('utf8'));
    const file = path.join(tmp, 'p.safetensors');
    await fc.assert(fc.asyncProperty(fc.constantFrom('a', 'b', 'c', '__metadata__'), fc.constantFrom('dtype', 'shape', 'data_offsets', '*'), weird, fc.nat(40),
      async (key, field, value, cut) => {
        const h = structuredClone(json);
        if (field === '*' || key === '__metadata__') h[key] = value;
        else h[key][field] = value;
        const body = Buffer.from(JSON.stringify(h));
        const prefix = Buffer.alloc(8);
        prefix.writeBigUInt64LE(BigInt(body.length));
        const bytes = Buffer.concat([prefix, body, Buffer.alloc(24 + 8 + 2)]);
        writeFileSync(file, cut === 0 ? bytes.subarray(0, Math.max(0, bytes.length - 7)) : bytes);
        try {
          const r = await readSafetensorsHeader(file);
          for (const t of r.tensors.values()) expect(t.offset + t.byteLength).toBeLessThanOrEqual(r.fileSize);
        } catch (err) {
          expect(err).toBeInstanceOf(CheckpointError);
          expect((err as Error).message).toContain(file);
        }
      }), { numRuns: 300, seed: 20261128 });
    expect(n).toBeGreaterThan(0);
  });

  it('config.json: accepted configs are consistent; the rest are ConfigErrors naming the file', () => {
    const keys = Object.keys(CONFIG).concat(['mlp_ratio', 'weight_tying', 'block_type']);
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(keys.length - 1), weird, fc.boolean()), { minLength: 1, maxLength: 3 }), (edits) => {
      const raw: Record<string, unknown> = { ...CONFIG };
      for (const [k, v, del] of edits) {
        if (del) delete raw[keys[k]!];
        else raw[keys[k]!] = v;
      }
      try {
        const c = parseModelConfig(raw, '/fuzz/config.json');
        for (const x of [c.dModel, c.nHeads, c.nKvHeads, c.mlpHiddenSize, c.vocabSize, c.embeddingSize, c.maxSequenceLength])
          expect(Number.isSafeInteger(x) && x > 0).toBe(true);
        expect(c.dModel % c.nHeads).toBe(0);
        expect(c.maskTokenId).toBeLessThan(c.vocabSize);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as Error).message).toContain('/fuzz/config.json');
      }
    }), { numRuns: 2000, seed: 20261128 });
  });
});
