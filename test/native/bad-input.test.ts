// Bad checkpoints and bad calls: each gives one clear error naming the file, field or tensor.
import { cpSync, readFileSync, writeFileSync, truncateSync, rmSync } from 'node:fs';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { CheckpointError, ConfigError, DisposedError, InputError, loadModel, type LladaModel } from '../../lib/index.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { tmpDir } from '../helpers/tmp.js';

const tmp = tmpDir();
let n = 0;

/** A copy of the mha_f32 fixture to break. */
function copyFixture(name = 'mha_f32'): string {
  const dir = path.join(tmp, `case-${n++}`);
  cpSync(path.join(FIXTURES, name), dir, { recursive: true });
  return dir;
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void) {
  const file = path.join(dir, 'config.json');
  const c = JSON.parse(readFileSync(file, 'utf8'));
  edit(c);
  writeFileSync(file, JSON.stringify(c));
}

/** Rewrites the JSON header of a safetensors file, keeping the data bytes. */
function editHeader(file: string, edit: (h: Record<string, any>) => void) {
  const buf = readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8'));
  edit(header);
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([prefix, Buffer.from(json), buf.subarray(8 + len)]));
}

const WTE = 'model.transformer.wte.weight';
const LN_F = 'model.transformer.ln_f.weight';

describe('bad checkpoints', () => {
  const cases: [string, (dir: string) => void, RegExp, typeof CheckpointError | typeof ConfigError][] = [
    ['a missing directory', (d) => rmSync(d, { recursive: true }), /config\.json/, CheckpointError],
    ['config.json that is not JSON', (d) => writeFileSync(path.join(d, 'config.json'), '{"d_model": 3'), /config\.json is not valid JSON/, CheckpointError],
    ['a config field of the wrong type', (d) => editConfig(d, (c) => (c.d_model = '32')), /config\.json: field `d_model`.*"32"/, ConfigError],
    ['a missing config field', (d) => editConfig(d, (c) => delete c.n_layers), /field `n_layers`/, ConfigError],
    ['an unsupported architecture switch', (d) => editConfig(d, (c) => (c.weight_tying = true)), /field `weight_tying`/, ConfigError],
    ['heads that do not divide d_model', (d) => editConfig(d, (c) => (c.n_heads = 5)), /`d_model` \(32\) must be divisible by `n_heads` \(5\)/, ConfigError],
    ['a config that does not match the weights', (d) => editConfig(d, (c) => (c.mlp_hidden_size = 64)), /ff_proj\.weight has shape \[48,32\] but config\.json implies \[64,32\]/, CheckpointError],
    ['no weights file', (d) => rmSync(path.join(d, 'model.safetensors')), /neither model\.safetensors nor model\.safetensors\.index\.json/, CheckpointError],
    ['a tensor of the wrong dtype', (d) => editHeader(path.join(d, 'model.safetensors'), (h) => {
      h[LN_F].dtype = 'I32';
    }), /ln_f\.weight has dtype I32/, CheckpointError],
    ['offsets past the end of the file', (d) => editHeader(path.join(d, 'model.safetensors'), (h) => {
      const [b, e] = h[WTE].data_offsets;
      h[WTE].data_offsets = [b + 1e9, e + 1e9];
    }), /wte\.weight: data_offsets end at .* past the .* bytes of data/, CheckpointError],
    ['overlapping tensors', (d) => editHeader(path.join(d, 'model.safetensors'), (h) => {
      h[LN_F].data_offsets = [h[WTE].data_offsets[0], h[WTE].data_offsets[0] + 128];
    }), /overlap/, CheckpointError],
    ['offsets that disagree with the shape', (d) => editHeader(path.join(d, 'model.safetensors'), (h) => {
      h[LN_F].data_offsets = [h[LN_F].data_offsets[0], h[LN_F].data_offsets[1] - 4];
    }), /ln_f\.weight: data_offsets span 124 bytes but dtype F32 and shape \[32\] need 128/, CheckpointError],
    ['a header length past the file', (d) => {
      const f = path.join(d, 'model.safetensors');
      const buf = readFileSync(f);
      buf.writeBigUInt64LE(BigInt(buf.length * 2), 0);
      writeFileSync(f, buf);
    }, /header length .* does not fit/, CheckpointError],
    ['a header that is not JSON', (d) => {
      const f = path.join(d, 'model.safetensors');
      const buf = readFileSync(f);
      buf.write('#', 8);
      writeFileSync(f, buf);
    }, /header is not valid JSON/, CheckpointError],
    ['a truncated file', (d) => truncateSync(path.join(d, 'model.safetensors'), 5000), /past the .* bytes of data/, CheckpointError],
    ['a missing tensor', (d) => editHeader(path.join(d, 'model.safetensors'), (h) => delete h[LN_F]), /missing tensor model\.transformer\.ln_f\.weight/, CheckpointError],
    ['an unexpected tensor', (d) => editHeader(path.join(d, 'model.safetensors'), (h) => {
      h['model.transformer.blocks.7.q_proj.weight'] = { dtype: 'F32', shape: [0], data_offsets: [0, 0] };
    }), /unexpected tensor model\.transformer\.blocks\.7\.q_proj\.weight/, CheckpointError],
  ];

  it.each(cases)('%s', async (_name, breakIt, message, type) => {
    const dir = copyFixture();
    breakIt(dir);
    const err = await loadModel(dir).then(
      (m) => (m.dispose(), null),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(type);
    expect((err as Error).message).toMatch(message);
  });

  it('an index that points outside the directory', async () => {
    const dir = copyFixture('gqa_bf16');
    const file = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(file, 'utf8'));
    index.weight_map[LN_F] = '../model-00002-of-00002.safetensors';
    writeFileSync(file, JSON.stringify(index));
    await expect(loadModel(dir)).rejects.toThrow(/ln_f\.weight maps to "\.\.\/model-00002-of-00002\.safetensors", not a file name/);
  });

  it('a tensor in a different shard than the index says', async () => {
    const dir = copyFixture('gqa_bf16');
    const file = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(file, 'utf8'));
    index.weight_map[LN_F] = 'model-00001-of-00002.safetensors';
    writeFileSync(file, JSON.stringify(index));
    await expect(loadModel(dir)).rejects.toThrow(/ln_f\.weight is not where model\.safetensors\.index\.json says/);
  });
});

describe('bad calls', () => {
  let model: LladaModel;
  afterAll(() => model?.dispose());
  const load = async () => (model ??= await loadModel(path.join(FIXTURES, 'mha_f32')));

  it.each([
    ['a token id past the vocabulary', [[1, 61]], /Expected a token id in \[0, 61\) for `ids\[0\]\[1\]` but received number 61/],
    ['a negative token id', [[-1]], /`ids\[0\]\[0\]` but received number -1/],
    ['a fractional token id', [[1.5]], /`ids\[0\]\[0\]` but received number 1.5/],
    ['an empty batch', [], /non-empty array of token id arrays for `ids`/],
    ['an empty sequence', [[]], /non-empty array of token ids for `ids\[0\]`/],
    ['sequences of different lengths', [[1, 2], [3]], /equal length/],
    ['a sequence past max_sequence_length', [Array(65).fill(1)], /has 65 tokens but the model allows at most 64/],
  ])('%s', async (_name, ids, message) => {
    const m = await load();
    await expect(m.logits(ids as number[][])).rejects.toThrow(InputError);
    await expect(m.logits(ids as number[][])).rejects.toThrow(message);
  });

  it('positions outside a sequence', async () => {
    const m = await load();
    await expect(m.logitsAt([[1, 2, 3]], [[3]])).rejects.toThrow(/positions in \[0, 3\) for `positions\[0\]`/);
  });

  it('a backend that is not built', async () => {
    await expect(loadModel(path.join(FIXTURES, 'mha_f32'), { backend: 'cuda' })).rejects.toThrow(/Backend 'cuda' is not in this build/);
  });

  it('calls after dispose', async () => {
    const m = await loadModel(path.join(FIXTURES, 'mha_f32'));
    await m.dispose();
    await m.dispose(); // twice is fine
    await expect(m.logits([[1]])).rejects.toThrow(DisposedError);
    expect(() => m.numParams).toThrow('Model is disposed');
    await expect(m.save(path.join(tmp, 'never'))).rejects.toThrow(DisposedError);
  });

  it('concurrent calls on one model run in turn with the right answers', async () => {
    const m = await load();
    const ids = [[[1, 2, 3]], [[4, 5, 6, 7]], [[8]]];
    const alone = [];
    for (const x of ids) alone.push(await m.logits(x));
    const together = await Promise.all(ids.map((x) => m.logits(x)));
    expect(together).toEqual(alone);
  });

  it('dispose while a call runs waits for it', async () => {
    const m = await loadModel(path.join(FIXTURES, 'mha_f32'));
    const pending = m.logits([Array(64).fill(3)]);
    await m.dispose();
    expect((await pending).length).toBe(64 * 64);
  });
});
