// Model directories from strangers: files that are not regular files, links to secrets, weights
// with NaN/Inf, configs nested to overflow the stack. Each is refused at load with one error that
// names the file (or tensor, or field) and quotes nothing from the file.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { CheckpointError, ConfigError, loadModel } from '../../lib/index.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { tmpDir } from '../helpers/tmp.js';

const tmp = tmpDir();
const DEMO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'arith-demo');
let n = 0;

/** A copy of a model directory to break: the demo model (it has a tokenizer) or a fixture. */
function copy(from = DEMO): string {
  const dir = path.join(tmp, `case-${n++}`);
  cpSync(from, dir, { recursive: true, filter: (src) => !/\/(data|recipe)$/.test(src) });
  return dir;
}

/** A file standing in for /etc/shadow: secret bytes, not JSON. */
function secretFile(): string {
  const file = path.join(tmp, `secret-${n++}`);
  writeFileSync(file, 'root:$6$SECRETHASH$abcdef:19000:0:99999:7:::\n');
  return file;
}

function mkfifo(file: string): void {
  rmSync(file, { force: true });
  execFileSync('mkfifo', [file]);
}

/** Rejects within `ms` (a load that hangs fails the test instead of freezing it). */
async function loadError(dir: string, ms = 5000): Promise<Error> {
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`loadModel(${dir}) did not settle in ${ms} ms`)), ms).unref());
  try {
    const m = await Promise.race([loadModel(dir), timeout]);
    await m.dispose();
  } catch (err) {
    return err as Error;
  }
  throw new Error(`loadModel(${dir}) succeeded`);
}

describe('files that are not regular files', () => {
  for (const name of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) {
    it(`a FIFO named ${name} is refused at once, not waited on`, async () => {
      const dir = copy();
      mkfifo(path.join(dir, name));
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(CheckpointError);
      expect(err.message).toContain(path.join(dir, name));
      expect(err.message).toMatch(/is not a regular file \(a FIFO\)/);
    });
  }

  it('a directory named config.json is refused by name', async () => {
    const dir = copy();
    rmSync(path.join(dir, 'config.json'));
    mkdirSync(path.join(dir, 'config.json'));
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/config\.json (is not a regular file \(a directory\)|.*EISDIR)/);
  });
});

describe('links to files that are not the model', () => {
  for (const name of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) {
    it(`${name} linked to a secret file: the error names the file and echoes none of its bytes`, async () => {
      const dir = copy();
      rmSync(path.join(dir, name));
      symlinkSync(secretFile(), path.join(dir, name));
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(CheckpointError);
      expect(err.message).toContain(path.join(dir, name));
      expect(err.message).toMatch(/is not valid JSON: line 1, column 1$/);
      expect(err.message).not.toMatch(/root|SECRET|\$6\$/);
    });
  }

  it('a broken JSON file is reported by line and column only', async () => {
    const dir = copy();
    writeFileSync(path.join(dir, 'tokenizer_config.json'), '{\n  "chat_template": "secret-template-text"\n  "x": 1\n}');
    const err = await loadError(dir);
    expect(err.message).toBe(`${path.join(dir, 'tokenizer_config.json')} is not valid JSON: line 3, column 3`);
  });

  it("a Hugging Face cache layout (snapshots/<rev>/f -> ../../blobs/<sha>) still loads", async () => {
    const repo = path.join(tmp, `models--demo-${n++}`);
    const snap = path.join(repo, 'snapshots', 'abc123');
    mkdirSync(path.join(repo, 'blobs'), { recursive: true });
    mkdirSync(snap, { recursive: true });
    for (const name of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) {
      const blob = path.join(repo, 'blobs', `sha-${name}`);
      cpSync(path.join(DEMO, name), blob);
      symlinkSync(path.join('..', '..', 'blobs', `sha-${name}`), path.join(snap, name));
    }
    const m = await loadModel(snap);
    expect(m.tokenizer.encode('12+3')).toHaveLength(4);
    await m.dispose();
  });
});

/** Overwrites element `index` of an F32 tensor in a safetensors file. */
function poison(file: string, tensor: string, index: number, value: number): void {
  const buf = readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8'));
  expect(header[tensor].dtype).toBe('F32');
  buf.writeFloatLE(value, 8 + len + header[tensor].data_offsets[0] + 4 * index);
  writeFileSync(file, buf);
}

describe('weights with NaN or infinite values', () => {
  const FF = 'model.transformer.blocks.0.ff_out.weight';
  for (const [label, value] of [['NaN', NaN], ['+Infinity', Infinity], ['-Infinity', -Infinity]] as const) {
    it(`one ${label} in a tensor: refused at load, naming the tensor`, async () => {
      const dir = copy(path.join(FIXTURES, 'mha_f32'));
      poison(path.join(dir, 'model.safetensors'), FF, 17, value);
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(CheckpointError);
      expect(err.message).toMatch(new RegExp(`tensor ${FF.replace(/\./g, '\\.')} has 1 non-finite value \\(of \\d+\\).*allowNonFinite`));
    });
  }

  it('allowNonFinite: true loads them (for debugging) and the NaN is there', async () => {
    const dir = copy(path.join(FIXTURES, 'mha_f32'));
    poison(path.join(dir, 'model.safetensors'), FF, 3, NaN);
    const m = await loadModel(dir, { allowNonFinite: true });
    expect(Number.isNaN((await m.getParameter(FF))[3])).toBe(true);
    await m.dispose();
  });

  it('a clean model loads (the check does not refuse finite weights)', async () => {
    const m = await loadModel(path.join(FIXTURES, 'mha_f32'));
    expect(m.numParams).toBeGreaterThan(0);
    await m.dispose();
  });
});

describe('config.json nested deeper than a config is', () => {
  it('refused at load with the file and field, before any training could fail at its checkpoint write', async () => {
    const dir = copy(path.join(FIXTURES, 'mha_f32'));
    const file = path.join(dir, 'config.json');
    const deep = '{"a":'.repeat(20000) + '1' + '}'.repeat(20000);
    writeFileSync(file, readFileSync(file, 'utf8').replace(/^\{/, `{"notes": ${deep},`));
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toMatch(new RegExp(`^${file.replace(/[.]/g, '\\.')}: field \`notes\\.a\\.a\\.\\.\\.a\\.a\` is nested more than 64 levels deep \\(under \`notes\`\\)`));
  });

  it('a config with ordinary nesting still loads and saves', async () => {
    const dir = copy(path.join(FIXTURES, 'mha_f32'));
    const file = path.join(dir, 'config.json');
    writeFileSync(file, readFileSync(file, 'utf8').replace(/^\{/, '{"rope_scaling": {"type": "x", "factors": [[1, 2], [3]]},'));
    const m = await loadModel(dir);
    const out = path.join(tmp, `saved-${n++}`);
    await m.save(out);
    expect(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')).rope_scaling.factors).toEqual([[1, 2], [3]]);
    await m.dispose();
    renameSync(out, `${out}-done`);
  });
});
