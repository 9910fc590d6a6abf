// The TypeScript half of `npm run fuzz`: mutation-based property fuzzing (fast-check) of every
// loader that reads a stranger's file, seeded with real files (a model `createTinyModel` saves, the
// committed reference fixtures). The property everywhere: the loader either accepts the input, and
// then what it returns is consistent, or throws one of justgrpo's errors (CheckpointError,
// ConfigError, InsufficientMemoryError) whose message names the file. Any other exception (a
// TypeError from deep inside, a RangeError, an error that names nothing) or a crash of the process
// is a finding; the input is written to OUT/ and printed.
//
// usage: node scripts/fuzz-ts.mjs SECONDS OUT
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import fc from 'fast-check';

// Configs that pass validation but are large must meet the memory check, not be allocated.
process.env.JUSTGRPO_MEMORY_LIMIT ??= String(256 * 1024 * 1024);
process.env.JUSTGRPO_NUM_THREADS ??= '1';
const lib = await import('../dist/index.js');
const { readSafetensorsHeader, parseModelConfig, loadModel, Tokenizer, createTinyModel, JustGRPOError, ConfigError, CheckpointError } = lib;

const seconds = Number(process.argv[2] ?? 60);
const out = path.resolve(process.argv[3] ?? 'build-fuzz/ts');
mkdirSync(out, { recursive: true });
const work = mkdtempSync(path.join(os.tmpdir(), 'jg-fuzz-ts-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

// Seeds: a tiny model with the character tokenizer, saved in F32 and BF16, and the fixtures.
const seedModel = path.join(work, 'seed-model');
{
  const m = await createTinyModel({ dModel: 32, nLayers: 1, nHeads: 2, mlpHiddenSize: 48, maxSequenceLength: 64, seed: 3 });
  await m.save(seedModel);
  await m.save(path.join(work, 'seed-model-bf16'), { dtype: 'BF16' });
  await m.dispose();
}
const fixtures = 'test/reference/fixtures';
const safetensorsSeeds = [
  path.join(seedModel, 'model.safetensors'),
  path.join(work, 'seed-model-bf16', 'model.safetensors'),
  path.join(fixtures, 'mha_f16', 'model.safetensors'),
  path.join(fixtures, 'gqa_bf16', 'model-00002-of-00002.safetensors'),
].map((f) => readFileSync(f));
const configSeeds = [path.join(seedModel, 'config.json'), ...['mha_f32', 'gqa_bf16', 'mha_f16'].map((n) => path.join(fixtures, n, 'config.json'))]
  .map((f) => JSON.parse(readFileSync(f, 'utf8')));
const tokenizerSeed = JSON.parse(readFileSync(path.join(seedModel, 'tokenizer.json'), 'utf8'));
const tokenizerConfigSeed = JSON.parse(readFileSync(path.join(seedModel, 'tokenizer_config.json'), 'utf8'));

// Values that break parsers: boundaries of int32/int53/uint64, non-integers, wrong types.
const weird = fc.oneof(
  fc.constantFrom(-1, 0, 1, 2, 3, 7, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 1e308, -1e308, 0.5, -0,
    '', 'F32', 'BF16', 'F16', 'F64', 'I64', 'U8', 'BOOL', null, true, false, [], {}, [0], [0, 0], [1, 2, 3], [-1, 4], [0, 2 ** 53],
    '__proto__', 'constructor', 'NaN', '1e309'),
  fc.integer(),
  fc.double(),
  fc.jsonValue({ maxDepth: 2 }),
);

/** Mutates a safetensors file: the JSON header (a field of an entry, an entry, the metadata), the length prefix, raw bytes, or the length of the file. */
const safetensorsMutation = fc.record({
  seed: fc.nat(safetensorsSeeds.length - 1),
  kind: fc.constantFrom('field', 'shapeItem', 'offsetItem', 'entry', 'newEntry', 'deleteEntry', 'metadata', 'prefix', 'bytes', 'truncate', 'rawHeader'),
  pick: fc.nat(),
  field: fc.constantFrom('dtype', 'shape', 'data_offsets'),
  value: weird,
  bytes: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
  prefix: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  keepPrefix: fc.boolean(),
});

function mutateSafetensors(m) {
  const file = safetensorsSeeds[m.seed];
  const n = Number(file.readBigUInt64LE(0));
  const data = file.subarray(8 + n);
  let header = JSON.parse(file.subarray(8, 8 + n).toString('utf8'));
  const keys = Object.keys(header).filter((k) => k !== '__metadata__');
  const key = keys[m.pick % keys.length];
  let raw;
  switch (m.kind) {
    case 'field': header[key][m.field] = m.value; break;
    case 'shapeItem': { const s = header[key].shape; if (s.length) s[m.pick % s.length] = m.value; else s.push(m.value); break; }
    case 'offsetItem': header[key].data_offsets[m.pick % 2] = m.value; break;
    case 'entry': header[key] = m.value; break;
    case 'newEntry': header[`fuzz.${m.pick}`] = { dtype: 'F32', shape: [m.pick % 7], data_offsets: [m.value, m.pick] }; break;
    case 'deleteEntry': delete header[key]; break;
    case 'metadata': header.__metadata__ = m.value; break;
    case 'rawHeader': raw = Buffer.from(JSON.stringify(m.value) ?? 'undefined'); break;
    default: break;
  }
  raw ??= Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(m.kind === 'prefix' ? m.prefix : BigInt(raw.length));
  let bytes = Buffer.concat([prefix, raw, data]);
  if (m.kind === 'bytes') {
    bytes = Buffer.from(bytes);
    for (const [pos, v] of m.bytes) bytes[pos % Math.min(bytes.length, 8 + raw.length + 64)] = v;
  }
  if (m.kind === 'truncate') bytes = bytes.subarray(0, m.pick % (bytes.length + 1));
  return bytes;
}

/** A config.json with one field replaced, removed or added. */
const configMutation = fc.record({
  seed: fc.nat(configSeeds.length - 1),
  edits: fc.array(fc.record({ kind: fc.constantFrom('set', 'delete', 'add'), pick: fc.nat(), value: weird }), { minLength: 1, maxLength: 3 }),
});
const CONFIG_KEYS = ['d_model', 'n_layers', 'n_heads', 'n_kv_heads', 'mlp_hidden_size', 'mlp_ratio', 'vocab_size', 'embedding_size',
  'max_sequence_length', 'rope_theta', 'rms_norm_eps', 'mask_token_id', 'eos_token_id', 'pad_token_id', 'bos_token_id', 'weight_tying',
  'block_type', 'activation_type', 'rope', 'alibi'];
function mutateConfig(m) {
  const c = structuredClone(configSeeds[m.seed]);
  for (const e of m.edits) {
    const key = CONFIG_KEYS[e.pick % CONFIG_KEYS.length];
    if (e.kind === 'delete') delete c[key];
    else if (e.kind === 'set') c[key] = e.value;
    else c[`fuzz_${e.pick % 5}`] = e.value;
  }
  return c;
}

/** tokenizer.json / tokenizer_config.json with a field (at any depth) replaced or removed. */
const tokenizerMutation = fc.record({
  which: fc.constantFrom('tokenizer', 'config'),
  path: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
  del: fc.boolean(),
  value: weird,
  text: fc.string({ maxLength: 40 }),
});
function mutateJsonAt(obj, pathPicks, del, value) {
  const root = structuredClone(obj);
  let node = root;
  for (let i = 0; i < pathPicks.length; i++) {
    const keys = node && typeof node === 'object' ? Object.keys(node) : [];
    if (keys.length === 0) break;
    const k = keys[pathPicks[i] % keys.length];
    const last = i === pathPicks.length - 1 || !(node[k] && typeof node[k] === 'object');
    if (last) {
      if (del) Array.isArray(node) ? node.splice(Number(k), 1) : delete node[k];
      else node[k] = value;
      break;
    }
    node = node[k];
  }
  return root;
}

// --- the properties -------------------------------------------------------------------------

const findings = [];
let artifactCount = 0;
function finding(target, err, input) {
  const file = path.join(out, `finding-${target}-${artifactCount++}`);
  writeFileSync(file, Buffer.isBuffer(input) ? input : JSON.stringify(input, null, 2));
  findings.push(`${target}: ${err?.constructor?.name}: ${String(err?.message ?? err).slice(0, 300)} (input: ${file})`);
  return new Error(`${target}: ${err?.constructor?.name}: ${err?.message}`);
}

/** An error is acceptable when it is one of ours and names the file it is about. */
function clearError(err, names) {
  return err instanceof JustGRPOError && names.some((n) => err.message.includes(n));
}

const targets = {
  async safetensors_header(m) {
    const bytes = mutateSafetensors(m);
    const file = path.join(work, 'fuzz.safetensors');
    writeFileSync(file, bytes);
    try {
      const h = await readSafetensorsHeader(file);
      // Accepted: every tensor lies inside the file and its bytes match its dtype and shape.
      for (const t of h.tensors.values()) {
        if (!(Number.isSafeInteger(t.offset) && t.offset >= 8 && t.offset + t.byteLength <= h.fileSize))
          throw new Error(`accepted tensor ${t.name} outside the file`);
        if (!t.shape.every((s) => Number.isSafeInteger(s) && s >= 0)) throw new Error(`accepted tensor ${t.name} with shape ${t.shape}`);
      }
    } catch (err) {
      if (!(err instanceof CheckpointError && err.message.includes(file))) throw finding('safetensors_header', err, bytes);
    }
  },
  async config_json(m) {
    const raw = mutateConfig(m);
    try {
      const c = parseModelConfig(raw, '/fuzz/config.json');
      const ints = [c.dModel, c.nHeads, c.nKvHeads, c.mlpHiddenSize, c.vocabSize, c.embeddingSize, c.maxSequenceLength];
      if (!ints.every((x) => Number.isSafeInteger(x) && x > 0) || !(c.nLayers >= 0) || c.dModel % c.nHeads !== 0 ||
        c.nHeads % c.nKvHeads !== 0 || c.embeddingSize < c.vocabSize || !(c.maskTokenId < c.vocabSize))
        throw new Error(`accepted an inconsistent config ${JSON.stringify(c)}`);
    } catch (err) {
      if (!(err instanceof ConfigError && err.message.includes('/fuzz/config.json'))) throw finding('config_json', err, raw);
    }
  },
  async tokenizer_files(m) {
    const dir = path.join(work, 'tok');
    mkdirSync(dir, { recursive: true });
    const tok = m.which === 'tokenizer' ? mutateJsonAt(tokenizerSeed, m.path, m.del, m.value) : tokenizerSeed;
    const cfg = m.which === 'config' ? mutateJsonAt(tokenizerConfigSeed, m.path, m.del, m.value) : tokenizerConfigSeed;
    writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tok));
    writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
    let t;
    try {
      t = await Tokenizer.load(dir);
    } catch (err) {
      if (!clearError(err, [dir])) throw finding('tokenizer_files', err, { tokenizer: tok, tokenizer_config: cfg });
      return;
    }
    // Accepted: it encodes and decodes text, and renders its chat template, or says why not.
    try {
      const ids = t.encode(m.text);
      t.decode(ids);
      if (t.hasChatTemplate) t.encodeChat([{ role: 'user', content: m.text }]);
    } catch (err) {
      if (!clearError(err, [dir, 'tokenizer'])) throw finding('tokenizer_use', err, { tokenizer: tok, tokenizer_config: cfg, text: m.text });
    }
  },
  async model_directory(m) {
    // A whole directory: the seed model's tokenizer with a mutated config.json or model.safetensors.
    const dir = path.join(work, 'model');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(seedModel, f), path.join(dir, f));
    const useConfig = m.config.edits.length > 0 && m.which;
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(useConfig ? mutateConfig({ ...m.config, seed: 0 }) : configSeeds[0]));
    writeFileSync(path.join(dir, 'model.safetensors'), useConfig ? safetensorsSeeds[0] : mutateSafetensors({ ...m.weights, seed: 0 }));
    let model;
    try {
      model = await loadModel(dir);
      await model.logits([[1, 2, 3]]);
    } catch (err) {
      if (!clearError(err, [dir])) throw finding('model_directory', err, { config: readFileSync(path.join(dir, 'config.json'), 'utf8') });
    } finally {
      await model?.dispose();
    }
  },
};

const arbitraries = {
  safetensors_header: safetensorsMutation,
  config_json: configMutation,
  tokenizer_files: tokenizerMutation,
  model_directory: fc.record({ which: fc.boolean(), config: configMutation, weights: safetensorsMutation }),
};

const names = Object.keys(targets);
const summary = [];
let failed = 0;
for (const name of names) {
  let runs = 0;
  const t0 = Date.now();
  const r = await fc.check(
    fc.asyncProperty(arbitraries[name], async (m) => {
      runs++;
      await targets[name](m);
    }),
    { numRuns: 1e9, interruptAfterTimeLimit: (seconds * 1000) / names.length, markInterruptAsFailure: false, seed: Date.now() & 0x7fffffff },
  );
  const secs = ((Date.now() - t0) / 1000).toFixed(0);
  if (r.failed) {
    failed++;
    summary.push(`ts ${name}: ${runs} executions in ${secs}s, FOUND A PROBLEM: ${String(r.errorInstance?.message ?? r.error).slice(0, 200)}`);
    console.error(fc.defaultReportMessage(r).slice(0, 2000));
  } else {
    summary.push(`ts ${name}: ${runs} executions in ${secs}s, no findings`);
  }
  console.log(summary[summary.length - 1]);
}
for (const f of findings.slice(0, 10)) console.error(`finding: ${f}`);
writeFileSync(path.join(out, 'summary.txt'), summary.join('\n') + '\n');
process.exit(failed ? 1 : 0);
