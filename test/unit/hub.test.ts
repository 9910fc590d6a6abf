// Models and data sets by Hub id, against a Hub served on 127.0.0.1 (test/helpers/hub-server.ts).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { SchemaElement } from 'hyparquet';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { AbortError, HubError } from '../../lib/errors.js';
import { loadTask, readJsonl as readTaskRows, TASK_SOURCES } from '../../lib/eval/tasks.js';
import { hfUrl, matchSplit, parseHfUrl, resolveModelDir, type DownloadProgress, type HubOptions } from '../../lib/hub/index.js';
import { readJsonl } from '../../lib/train/data.js';
import { parseGrpoConfig } from '../../lib/train/grpo-config.js';
import { HubServer, isLfs, type RepoFiles } from '../helpers/hub-server.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const demo = path.join(root, 'models', 'arith-demo');
const tmp = tmpDir('justgrpo-hub-');

/** The shipped model's files, plus files loading never reads (they must not be downloaded). */
const modelFiles: RepoFiles = {
  'config.json': readFileSync(path.join(demo, 'config.json')),
  'model.safetensors': readFileSync(path.join(demo, 'model.safetensors')),
  'tokenizer.json': readFileSync(path.join(demo, 'tokenizer.json')),
  'tokenizer_config.json': readFileSync(path.join(demo, 'tokenizer_config.json')),
  'README.md': '# tiny\n',
  'pytorch_model.bin': Buffer.alloc(4096, 7),
  'data/train.jsonl': '{"question":"1+1","answer":"#### 2"}\n',
};

/** Rows as a Parquet file the way the Hub's data sets store them: UTF-8 strings, INT64, lists of strings. */
function parquetOf(rows: Record<string, unknown>[]): Buffer {
  const names = Object.keys(rows[0]!);
  const schema: SchemaElement[] = [{ name: 'root', num_children: names.length }];
  for (const name of names) {
    const v = rows[0]![name];
    if (Array.isArray(v))
      schema.push({ name, repetition_type: 'OPTIONAL', num_children: 1, converted_type: 'LIST' }, { name: 'list', repetition_type: 'REPEATED', num_children: 1 }, { name: 'element', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' });
    else if (typeof v === 'bigint') schema.push({ name, type: 'INT64', repetition_type: 'OPTIONAL' });
    else schema.push({ name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' });
  }
  return Buffer.from(parquetWriteBuffer({ columnData: names.map((name) => ({ name, data: rows.map((r) => r[name]) as never })), schema }));
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

let hub: HubServer;
let n = 0;
/** A fresh cache per test, the server's address, network allowed (the test config sets HF_HUB_OFFLINE=1). */
let opts: HubOptions & { cacheDir: string };

beforeAll(async () => {
  hub = await HubServer.start();
});
afterAll(async () => {
  await hub.close();
});
beforeEach(() => {
  opts = { endpoint: hub.url, cacheDir: path.join(tmp, `cache-${n++}`), offline: false, token: undefined };
  hub.requests.length = 0;
  hub.cutOnce.clear();
  hub.busyOnce.clear();
  hub.slow.clear();
  hub.corrupt.clear();
});

const repoDir = (cacheDir: string, key: string) => path.join(cacheDir, key.replace(/\//g, '--'));

describe('models by Hub id', () => {
  it('downloads only what loading needs into the cache laid out as Python lays it out', async () => {
    const commit = hub.addCommit('models/acme/tiny', modelFiles);
    const dir = await resolveModelDir('acme/tiny', opts);
    const repo = repoDir(opts.cacheDir, 'models/acme/tiny');
    expect(dir).toBe(path.join(repo, 'snapshots', commit));
    expect(readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    for (const f of readdirSync(dir)) {
      const bytes = modelFiles[f] as Buffer;
      // Relative symlinks to blobs named by sha256 (LFS) or by the git blob sha1 (regular files).
      const etag = isLfs(f) ? sha256(bytes) : gitOid(bytes);
      expect(readlinkSync(path.join(dir, f))).toBe(`../../blobs/${etag}`);
      expect(readFileSync(path.join(dir, f)).equals(bytes)).toBe(true);
    }
    expect(readFileSync(path.join(repo, 'refs', 'main'), 'utf8')).toBe(commit);
    // The files the repo lacks are recorded as Python records them, so the next load asks nothing.
    expect(existsSync(path.join(repo, '.no_exist', commit, 'generation_config.json'))).toBe(true);
    expect(readdirSync(path.join(repo, 'blobs')).filter((b) => b.endsWith('.incomplete'))).toEqual([]);
    expect(hub.requests.some((r) => /pytorch_model|README|train\.jsonl/.test(r.url))).toBe(false);
    // The weights came through the redirect the Hub uses for LFS files.
    expect(hub.count('/cdn/')).toBe(1);
  });

  it('serves a second load from the cache without any request', async () => {
    const first = await resolveModelDir('acme/tiny', opts);
    const before = hub.count();
    expect(before).toBeGreaterThan(0);
    expect(await resolveModelDir('acme/tiny', opts)).toBe(first);
    expect(hub.count()).toBe(before);
  });

  it('resolves a branch, a tag and a commit, each to its own snapshot', async () => {
    const base = hub.addCommit('models/acme/revs', modelFiles, { tags: ['v1'] });
    const config = JSON.parse(String(modelFiles['config.json']));
    const dev = hub.addCommit('models/acme/revs', { ...modelFiles, 'config.json': JSON.stringify({ ...config, max_sequence_length: 64 }) }, { branch: 'dev' });
    const tagged = await resolveModelDir('acme/revs@v1', opts);
    expect(path.basename(tagged)).toBe(base);
    const onDev = await resolveModelDir('acme/revs', { ...opts, revision: 'dev' });
    expect(path.basename(onDev)).toBe(dev);
    expect(JSON.parse(readFileSync(path.join(onDev, 'config.json'), 'utf8')).max_sequence_length).toBe(64);
    // The weights blob is shared by both snapshots: downloaded once.
    expect(hub.count('/cdn/')).toBe(1);
    expect(readFileSync(path.join(repoDir(opts.cacheDir, 'models/acme/revs'), 'refs', 'v1'), 'utf8')).toBe(base);
    const before = hub.count();
    expect(await resolveModelDir(`acme/revs@${base}`, opts)).toBe(tagged);
    expect(hub.count()).toBe(before);
    await expect(resolveModelDir('acme/revs@nope', opts)).rejects.toThrow(/Revision nope of acme\/revs not found/);
  });

  it('reports progress in bytes up to the total, and shares one download between concurrent loads', async () => {
    hub.addCommit('models/acme/progress', modelFiles);
    const seen: DownloadProgress[][] = [[], []];
    const [a, b] = await Promise.all(seen.map((list) => resolveModelDir('acme/progress', { ...opts, onProgress: (p) => list.push(p) })));
    expect(a).toBe(b);
    // Whichever load took the lock downloaded the weights and reported them; the other waited.
    const byLoad = seen.map((list) => list.filter((p) => p.file === 'model.safetensors'));
    expect(byLoad.filter((w) => w.length > 0)).toHaveLength(1);
    const weights = byLoad.find((w) => w.length > 0)!;
    expect(weights.at(-1)!.bytes).toBe(weights.at(-1)!.totalBytes);
    expect(weights.at(-1)!.totalBytes).toBe((modelFiles['model.safetensors'] as Buffer).length);
    for (let i = 1; i < weights.length; i++) expect(weights[i]!.bytes).toBeGreaterThan(weights[i - 1]!.bytes);
    // The lock made the second load wait for the first one's blob instead of fetching it again.
    expect(hub.count('/cdn/')).toBe(1);
    expect(readFileSync(path.join(a, 'model.safetensors')).equals(modelFiles['model.safetensors'] as Buffer)).toBe(true);
  });

  it('resumes an interrupted transfer with a Range request', async () => {
    hub.addCommit('models/acme/flaky', modelFiles);
    hub.cutOnce.add('model.safetensors');
    const dir = await resolveModelDir('acme/flaky', opts);
    expect(readFileSync(path.join(dir, 'model.safetensors')).equals(modelFiles['model.safetensors'] as Buffer)).toBe(true);
    const cdn = hub.requests.filter((r) => r.url.startsWith('/cdn/'));
    expect(cdn).toHaveLength(2);
    expect(cdn[0]!.range).toBeUndefined();
    const from = Number(/^bytes=(\d+)-$/.exec(cdn[1]!.range ?? '')?.[1]);
    expect(from).toBeGreaterThan(0);
    expect(from).toBeLessThan((modelFiles['model.safetensors'] as Buffer).length);
  });

  it('retries a busy server (503) and names the endpoint it cannot reach', async () => {
    hub.addCommit('models/acme/busy', modelFiles);
    hub.busyOnce.add('model.safetensors');
    const dir = await resolveModelDir('acme/busy', opts);
    expect(readFileSync(path.join(dir, 'model.safetensors')).equals(modelFiles['model.safetensors'] as Buffer)).toBe(true);
    expect(hub.count('/cdn/')).toBe(2);
    await expect(resolveModelDir('acme/busy', { ...opts, endpoint: 'http://127.0.0.1:9', cacheDir: path.join(tmp, 'unreachable') })).rejects.toThrow(
      /^Cannot reach http:\/\/127\.0\.0\.1:9 for acme\/busy: .+; check the connection or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only$/,
    );
  });

  it('stops a download on abort, keeping what arrived for the next call to resume', async () => {
    hub.addCommit('models/acme/abort', modelFiles);
    hub.slow.add('model.safetensors');
    const ac = new AbortController();
    const err = await resolveModelDir('acme/abort', { ...opts, signal: ac.signal, onProgress: (p) => p.file === 'model.safetensors' && ac.abort() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbortError);
    const weights = modelFiles['model.safetensors'] as Buffer;
    const blobs = path.join(repoDir(opts.cacheDir, 'models/acme/abort'), 'blobs');
    expect(existsSync(path.join(blobs, sha256(weights)))).toBe(false);
    const kept = readFileSync(path.join(blobs, `${sha256(weights)}.incomplete`)).length;
    expect(kept).toBeGreaterThan(0);
    hub.slow.clear();
    const dir = await resolveModelDir('acme/abort', opts);
    expect(readFileSync(path.join(dir, 'model.safetensors')).equals(weights)).toBe(true);
    expect(hub.requests.filter((r) => r.url.startsWith('/cdn/')).at(-1)!.range).toBe(`bytes=${kept}-`);
  });

  it('resumes the .incomplete file an earlier process left', async () => {
    hub.addCommit('models/acme/left', modelFiles);
    const weights = modelFiles['model.safetensors'] as Buffer;
    const blobs = path.join(repoDir(opts.cacheDir, 'models/acme/left'), 'blobs');
    mkdirSync(blobs, { recursive: true });
    writeFileSync(path.join(blobs, `${sha256(weights)}.incomplete`), weights.subarray(0, 1000));
    const dir = await resolveModelDir('acme/left', opts);
    expect(readFileSync(path.join(dir, 'model.safetensors')).equals(weights)).toBe(true);
    expect(hub.requests.filter((r) => r.url.startsWith('/cdn/')).map((r) => r.range)).toEqual(['bytes=1000-']);
  });

  it('refuses a blob whose bytes fail the checksum and keeps nothing of it', async () => {
    const commit = hub.addCommit('models/acme/bad', modelFiles);
    hub.corrupt.add('model.safetensors');
    const err = await resolveModelDir('acme/bad', opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubError);
    expect((err as Error).message).toMatch(/model\.safetensors from acme\/bad failed its check \(sha256 [0-9a-f]{64}, expected [0-9a-f]{64}\)/);
    const repo = repoDir(opts.cacheDir, 'models/acme/bad');
    expect(readdirSync(path.join(repo, 'blobs')).filter((b) => b.startsWith(sha256(modelFiles['model.safetensors'] as Buffer)))).toEqual([]);
    expect(existsSync(path.join(repo, 'snapshots', commit, 'model.safetensors'))).toBe(false);
    // Fixed upstream (or on a retry), the next call fetches it whole.
    hub.corrupt.clear();
    const dir = await resolveModelDir('acme/bad', opts);
    expect(readFileSync(path.join(dir, 'model.safetensors')).equals(modelFiles['model.safetensors'] as Buffer)).toBe(true);
  });

  it('works offline from a warm cache with no request, and names the repo and HF_HUB_OFFLINE with a cold one', async () => {
    const dir = await resolveModelDir('acme/tiny', opts);
    hub.requests.length = 0;
    expect(await resolveModelDir('acme/tiny', { ...opts, offline: true })).toBe(dir);
    // HF_HUB_OFFLINE=1 comes from the test config's environment.
    expect(process.env.HF_HUB_OFFLINE).toBe('1');
    expect(await resolveModelDir('acme/tiny', { ...opts, offline: undefined })).toBe(dir);
    await expect(resolveModelDir('acme/tiny', { ...opts, offline: undefined, cacheDir: path.join(tmp, 'cold') })).rejects.toThrow(
      /acme\/tiny is not in the Hugging Face cache .*cold and offline mode \(HF_HUB_OFFLINE=1\)/,
    );
    expect(hub.count()).toBe(0);
  });

  it('says a gated repo needs a token and how to give it; the token opens it', async () => {
    hub.addCommit('models/acme/gated', modelFiles, { access: 'gated' });
    const err = await resolveModelDir('acme/gated', opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubError);
    expect((err as Error).message).toBe(`acme/gated is gated: accept its conditions at ${hub.url}/acme/gated and give a token with HF_TOKEN=hf_... (or \`huggingface-cli login\`, which writes the token file)`);
    await expect(resolveModelDir('acme/gated', { ...opts, token: 'hf_wrong' })).rejects.toThrow(/acme\/gated is gated: .*the token from the `token` option has no access/);
    const dir = await resolveModelDir('acme/gated', { ...opts, token: hub.token });
    expect(existsSync(path.join(dir, 'model.safetensors'))).toBe(true);
    // Only the Hub's own origin ever saw the token... and the storage redirect did not need it.
    expect(hub.requests.filter((r) => r.url.startsWith('/cdn/')).every((r) => r.authorization === undefined)).toBe(true);
  });

  it('reads the token from HF_TOKEN and from the token file', async () => {
    hub.addCommit('models/acme/private', modelFiles, { access: 'private' });
    await expect(resolveModelDir('acme/private', opts)).rejects.toThrow(/acme\/private not found on .* \(a private repo needs HF_TOKEN=hf_\.\.\.\)/);
    const saved = { HF_TOKEN: process.env.HF_TOKEN, HF_TOKEN_PATH: process.env.HF_TOKEN_PATH };
    try {
      process.env.HF_TOKEN = hub.token;
      expect(existsSync(await resolveModelDir('acme/private', opts))).toBe(true);
      delete process.env.HF_TOKEN;
      const file = path.join(tmp, 'token');
      writeFileSync(file, `${hub.token}\n`);
      process.env.HF_TOKEN_PATH = file;
      expect(existsSync(await resolveModelDir('acme/private', { ...opts, cacheDir: path.join(tmp, 'tokenfile-cache') }))).toBe(true);
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
    }
  });

  it('gives one clear error for a repo that does not exist (404)', async () => {
    const err = await resolveModelDir('acme/nothing-here', { ...opts, token: hub.token }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubError);
    expect((err as Error).message).toBe(`acme/nothing-here not found on ${hub.url}: check the name, or give a local directory that exists`);
  });

  it('downloads the shards an index names, and names a shard the repo lacks', async () => {
    const weights = modelFiles['model.safetensors'] as Buffer;
    const shards = { 'model-00001-of-00002.safetensors': weights.subarray(0, 1000), 'model-00002-of-00002.safetensors': weights.subarray(1000) };
    const index = JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } });
    const { 'model.safetensors': _, ...rest } = modelFiles;
    hub.addCommit('models/acme/sharded', { ...rest, 'model.safetensors.index.json': index, ...shards });
    const dir = await resolveModelDir('acme/sharded', opts);
    expect(readdirSync(dir).filter((f) => f.includes('safetensors')).sort()).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
    hub.addCommit('models/acme/broken', { ...rest, 'model.safetensors.index.json': index, 'model-00001-of-00002.safetensors': shards['model-00001-of-00002.safetensors'] });
    await expect(resolveModelDir('acme/broken', opts)).rejects.toThrow(
      /acme\/broken \(commit [0-9a-f]{10}\): model\.safetensors\.index\.json names model-00002-of-00002\.safetensors, which is not in the repo/,
    );
    // An index may not name a file outside the repo.
    hub.addCommit('models/acme/climb', { ...rest, 'model.safetensors.index.json': JSON.stringify({ weight_map: { a: '../../../evil.safetensors' } }) });
    await expect(resolveModelDir('acme/climb', opts)).rejects.toThrow(/tensor a maps to "\.\.\/\.\.\/\.\.\/evil\.safetensors", not a file of the repo/);
  });

  it("uses a cache that Python's huggingface_hub wrote, as it is, without a request", async () => {
    const commit = 'c0ffee'.padEnd(40, '0');
    const repo = repoDir(opts.cacheDir, 'models/pyorg/pymodel');
    mkdirSync(path.join(repo, 'blobs'), { recursive: true });
    mkdirSync(path.join(repo, 'snapshots', commit), { recursive: true });
    mkdirSync(path.join(repo, 'refs'), { recursive: true });
    mkdirSync(path.join(repo, '.no_exist', commit), { recursive: true });
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
      const bytes = modelFiles[f] as Buffer;
      const etag = isLfs(f) ? sha256(bytes) : gitOid(bytes);
      writeFileSync(path.join(repo, 'blobs', etag), bytes);
      symlinkSync(`../../blobs/${etag}`, path.join(repo, 'snapshots', commit, f));
    }
    for (const f of ['special_tokens_map.json', 'generation_config.json']) writeFileSync(path.join(repo, '.no_exist', commit, f), '');
    writeFileSync(path.join(repo, 'refs', 'main'), commit);
    expect(await resolveModelDir('pyorg/pymodel', opts)).toBe(path.join(repo, 'snapshots', commit));
    expect(hub.count()).toBe(0);
    // Without Python's record that generation_config.json is absent, the Hub is asked once; out of
    // reach, the snapshot (which has all loading needs) still serves, as Python falls back.
    rmSync(path.join(repo, '.no_exist'), { recursive: true });
    expect(await resolveModelDir('pyorg/pymodel', { ...opts, endpoint: 'http://127.0.0.1:9' })).toBe(path.join(repo, 'snapshots', commit));
    await expect(resolveModelDir('pyorg/pymodel', opts)).rejects.toThrow(/pyorg\/pymodel not found on/);
  });

  it('keeps a local directory that exists over a Hub id, and leaves non-ids alone', async () => {
    const local = path.join(tmp, 'acme', 'tiny');
    mkdirSync(local, { recursive: true });
    const cwd = process.cwd();
    process.chdir(tmp);
    try {
      expect(await resolveModelDir('acme/tiny', opts)).toBe('acme/tiny');
    } finally {
      process.chdir(cwd);
    }
    expect(await resolveModelDir('./nope/x', opts)).toBe('./nope/x');
    expect(await resolveModelDir('/abs/path', opts)).toBe('/abs/path');
    expect(hub.count()).toBe(0);
  });
});

describe('data sets by Hub id', () => {
  const gsm8kRows = [
    { question: 'Tom has 3 apples and buys 2. How many?', answer: '3 + 2 = 5\n#### 5' },
    { question: 'What is 10 - 4?', answer: '10 - 4 = 6\n#### 6' },
  ];
  const gsm8kParquet = Buffer.from(parquetWriteBuffer({
    columnData: [
      { name: 'question', data: gsm8kRows.map((r) => r.question), type: 'STRING' },
      { name: 'answer', data: gsm8kRows.map((r) => r.answer), type: 'STRING' },
    ],
  }));

  beforeAll(() => {
    hub.addCommit('datasets/openai/gsm8k', {
      'README.md': '---\nconfigs: [main, socratic]\n---\n',
      'main/test-00000-of-00001.parquet': gsm8kParquet,
      'main/train-00000-of-00001.parquet': gsm8kParquet.subarray(0, 10),
      'socratic/test-00000-of-00001.parquet': gsm8kParquet.subarray(0, 10),
    });
    // MATH-500 keeps JSONL on main; the Hub's Parquet branch has the converted copy.
    hub.addCommit('datasets/HuggingFaceH4/MATH-500', { 'test.jsonl': '{}\n' });
    hub.addCommit('datasets/HuggingFaceH4/MATH-500', {
      'default/test/0000.parquet': Buffer.from(parquetWriteBuffer({
        columnData: [
          { name: 'problem', data: ['What is $1+1$?'], type: 'STRING' },
          { name: 'solution', data: ['$1+1=\\boxed{2}$'], type: 'STRING' },
          { name: 'answer', data: ['2'], type: 'STRING' },
          { name: 'level', data: [1n], type: 'INT64' },
        ],
      })),
    }, { branch: 'refs/convert/parquet' });
  });

  it("loads GSM8K's main test split from Parquet with the task's column mapping, then from the cache alone", async () => {
    for (const ref of ['hf://datasets/openai/gsm8k', 'hf://datasets/openai/gsm8k/main/test', { hub: 'openai/gsm8k', config: 'main', split: 'test' }] as const) {
      const task = await loadTask(ref, { hub: opts });
      expect(task.name).toBe('gsm8k');
      expect(task.items).toEqual(gsm8kRows.map((r, i) => ({ id: `gsm8k/${i}`, prompt: r.question, kind: 'gsm8k', gold: r.answer })));
      expect(task.source).toMatch(/^hf:\/\/datasets\/openai\/gsm8k@[0-9a-f]{10}\/main\/test-00000-of-00001\.parquet$/);
    }
    // Only the test split of the main subset was fetched, once.
    const fetched = hub.requests.filter((r) => r.url.includes('/resolve/')).map((r) => r.url.replace(/resolve\/[0-9a-f]{40}/, 'resolve/C'));
    expect(fetched).toEqual(['/datasets/openai/gsm8k/resolve/C/main/test-00000-of-00001.parquet']);
  });

  it('reads `--task gsm8k` from the Hub when no local copy is configured', async () => {
    const saved = process.env.JUSTGRPO_DATA;
    delete process.env.JUSTGRPO_DATA;
    try {
      const task = await loadTask('gsm8k', { hub: opts });
      expect(task.items.map((i) => i.gold)).toEqual(gsm8kRows.map((r) => r.answer));
      hub.requests.length = 0;
      const again = await loadTask('gsm8k', { hub: { ...opts, offline: true } });
      expect(again.items).toEqual(task.items);
      expect(hub.count()).toBe(0);
    } finally {
      process.env.JUSTGRPO_DATA = saved;
    }
  });

  it("falls back to the Hub's Parquet branch (MATH-500) and maps its columns", async () => {
    const task = await loadTask({ hub: TASK_SOURCES.math500.hub.id }, { hub: opts });
    expect(task.name).toBe('math500');
    expect(task.items).toHaveLength(1);
    expect(task.items[0]!.prompt).toMatch(/^What is \$1\+1\$\?\(Please put the final answer in \\boxed\{\} tag/);
    expect(task.items[0]!.gold).toBe('2');
    expect(task.source).toContain('(refs/convert/parquet)');
    expect(existsSync(path.join(repoDir(opts.cacheDir, 'datasets/HuggingFaceH4/MATH-500'), 'refs', 'refs', 'convert', 'parquet'))).toBe(true);
    // A pinned revision does not read main's conversion.
    await expect(loadTask('hf://datasets/HuggingFaceH4/MATH-500@' + hub.requests.find((r) => r.url.includes('/tree/'))!.url.split('/').pop(), { hub: opts })).rejects.toThrow(
      /has no Parquet files .*\(at a revision other than main only the repo's own Parquet files count/,
    );
  });

  it('names the data set and split that has no Parquet files', async () => {
    await expect(loadTask('hf://datasets/openai/gsm8k/main/validation', { hub: opts })).rejects.toThrow(
      /datasets\/openai\/gsm8k \(subset main, split validation\) has no Parquet files/,
    );
  });

  it('gives training data from a Hub data set (hf:// or {hub, config, split} in a config) through the environment', async () => {
    const config = parseGrpoConfig({ model: 'acme/tiny', data: { train: { hub: 'openai/gsm8k', config: 'main', split: 'test' } } }, 'test config');
    expect(config.data.train).toBe('hf://datasets/openai/gsm8k/main/test');
    const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HUB_CACHE: process.env.HF_HUB_CACHE, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE };
    Object.assign(process.env, { HF_ENDPOINT: hub.url, HF_HUB_CACHE: opts.cacheDir, HF_HUB_OFFLINE: '0' });
    try {
      const { records } = await readJsonl(config.data.train, { require: [['prompt', 'question']] });
      expect(records.map((r) => [r.line, r.value.question, r.value.answer])).toEqual(gsm8kRows.map((r, i) => [i + 1, r.question, r.answer]));
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
    }
    expect(hfUrl({ hub: 'a/b', split: 'train' })).toBe('hf://datasets/a/b/default/train');
    expect(hfUrl({ hub: 'a/b', revision: 'refs/pr/1' })).toBe('hf://datasets/a/b@refs%2Fpr%2F1');
    expect(parseHfUrl(hfUrl({ hub: 'a/b', revision: 'refs/pr/1', config: 'c', split: 's' }))).toEqual({ hub: 'a/b', revision: 'refs/pr/1', config: 'c', split: 's' });
  });

  it("gives each benchmark's items from the Hub's columns exactly as from the local copy (the TASK_SOURCES mapping)", async (ctx) => {
    const dataDir = process.env.JUSTGRPO_DATA;
    if (!dataDir || !existsSync(path.join(dataDir, 'mbpp'))) {
      console.warn(`Hub/local parity test skipped: no local benchmark data at ${dataDir} (set JUSTGRPO_DATA)`);
      return ctx.skip();
    }
    // The first rows of each local copy, rewritten with the Hub data set's column names and types.
    const toHub: Record<string, (r: Record<string, unknown>) => Record<string, unknown>> = {
      gsm8k: (r) => ({ question: r.question, answer: r.answer }),
      math500: (r) => ({ problem: r.question, solution: r.answer, answer: 'x' }),
      humaneval: (r) => ({ task_id: r.task_id, prompt: r.prompt, canonical_solution: r.canonical_solution, test: r.test, entry_point: r.entry_point }),
      mbpp: (r) => ({ task_id: BigInt(r.task_id as number), text: r.prompt, code: r.code, test_list: r.test }),
    };
    const saved = process.env.JUSTGRPO_DATA;
    for (const name of ['gsm8k', 'math500', 'humaneval', 'mbpp'] as const) {
      const local = await loadTask(name, { dataDir });
      const src = TASK_SOURCES[name];
      const localRows = (await readTaskRows(path.join(dataDir, src.local.replace('{split}', 'test')))).slice(0, 3).map(toHub[name]!);
      const file = name === 'math500' ? `${src.hub.config}/test/0000.parquet` : `${src.hub.config}/test-00000-of-00001.parquet`;
      hub.addCommit(`datasets/${src.hub.id}`, { [file]: parquetOf(localRows) }, name === 'math500' ? { branch: 'refs/convert/parquet' } : {});
      delete process.env.JUSTGRPO_DATA;
      try {
        const fromHub = await loadTask(name, { hub: opts });
        const expected = local.items.slice(0, 3);
        if (name === 'math500') {
          // The Hub's `answer` is the bare answer, the local copy's the worked solution.
          expect(fromHub.items.map((i) => i.prompt)).toEqual(expected.map((i) => i.prompt));
          expect(fromHub.items.map((i) => i.gold)).toEqual(['x', 'x', 'x']);
        } else expect(fromHub.items).toEqual(expected);
      } finally {
        process.env.JUSTGRPO_DATA = saved;
      }
    }
  });

  it('finds splits in the layouts the Hub uses', () => {
    const paths = ['main/test-00000-of-00002.parquet', 'main/test-00001-of-00002.parquet', 'main/train-00000-of-00001.parquet', 'data/test-00000-of-00001.parquet', 'default/validation/0000.parquet', 'only/x/0000.parquet'];
    expect(matchSplit(paths, 'main', 'test')).toEqual(['main/test-00000-of-00002.parquet', 'main/test-00001-of-00002.parquet']);
    expect(matchSplit(paths, undefined, 'test')).toEqual(['data/test-00000-of-00001.parquet']);
    expect(matchSplit(paths, undefined, 'validation')).toEqual(['default/validation/0000.parquet']);
    expect(matchSplit(['only/x/0000.parquet'], undefined, 'x')).toEqual(['only/x/0000.parquet']);
    expect(parseHfUrl('hf://datasets/openai/gsm8k@v2/main/test')).toEqual({ hub: 'openai/gsm8k', revision: 'v2', config: 'main', split: 'test' });
    expect(parseHfUrl('gsm8k')).toBeUndefined();
  });
});
