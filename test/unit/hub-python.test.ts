// The Hugging Face cache shared with Python's huggingface_hub, both ways, against the local Hub.
// Needs a Python with huggingface_hub: $JUSTGRPO_HF_PYTHON, else python3; skipped (with the reason
// printed) where there is none. The storage server listens on 127.0.0.2 because huggingface_hub
// follows redirects within one host name and stops at another, as the real Hub's storage is.
import { execFile, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { resolveModelDir } from '../../lib/hub/index.js';
import { HubServer } from '../helpers/hub-server.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const demo = path.join(root, 'models', 'arith-demo');
const python = process.env.JUSTGRPO_HF_PYTHON ?? 'python3';
const probe = spawnSync(python, ['-c', 'import huggingface_hub; print(huggingface_hub.__version__)'], { encoding: 'utf8' });
const reason =
  probe.status !== 0
    ? `no huggingface_hub in ${python} (set JUSTGRPO_HF_PYTHON to a Python that has it)`
    : process.platform !== 'linux'
      ? 'the storage server needs 127.0.0.2, which only Linux routes to loopback by default'
      : undefined;
if (reason) console.warn(`Python cache interop tests skipped: ${reason}`);

const FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];
const tmp = tmpDir('justgrpo-hub-py-');
let hub: HubServer;

const py = async (code: string, env: Record<string, string> = {}) =>
  (await promisify(execFile)(python, ['-c', code], { env: { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: '0', HF_HUB_DISABLE_TELEMETRY: '1', HF_TOKEN: '', ...env }, encoding: 'utf8' })).stdout;

describe.skipIf(reason !== undefined)(`the cache shared with Python's huggingface_hub ${probe.stdout?.trim() ?? ''}`, () => {
  beforeAll(async () => {
    hub = await HubServer.start({ storageHost: '127.0.0.2' });
    hub.addCommit('models/acme/arith', { ...Object.fromEntries(FILES.map((f) => [f, readFileSync(path.join(demo, f))])), 'README.md': '# arith\n' });
  });
  afterAll(async () => {
    await hub?.close();
  });

  it('uses what Python downloaded without a request', async () => {
    const cache = path.join(tmp, 'python-wrote');
    const out = await py(`
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
for f in ${JSON.stringify(FILES)}:
    print(hf_hub_download('acme/arith', f, cache_dir=${JSON.stringify(cache)}))
for f in ['special_tokens_map.json', 'generation_config.json']:
    try:
        hf_hub_download('acme/arith', f, cache_dir=${JSON.stringify(cache)})
    except EntryNotFoundError:
        pass
`);
    const snapshot = path.dirname(out.trim().split('\n')[0]!);
    hub.requests.length = 0;
    expect(await resolveModelDir('acme/arith', { cacheDir: cache, endpoint: hub.url, offline: false })).toBe(snapshot);
    expect(hub.requests).toEqual([]);
  });

  it('gives Python what justgrpo downloaded, offline, with the absent files recorded as Python records them', async () => {
    const cache = path.join(tmp, 'justgrpo-wrote');
    const dir = await resolveModelDir('acme/arith', { cacheDir: cache, endpoint: hub.url, offline: false });
    const out = await py(`
import json
from huggingface_hub import hf_hub_download, try_to_load_from_cache, scan_cache_dir
from huggingface_hub.file_download import _CACHED_NO_EXIST
paths = [hf_hub_download('acme/arith', f, cache_dir=${JSON.stringify(cache)}) for f in ${JSON.stringify(FILES)}]
absent = try_to_load_from_cache('acme/arith', 'generation_config.json', cache_dir=${JSON.stringify(cache)}) is _CACHED_NO_EXIST
info = scan_cache_dir(${JSON.stringify(cache)})
revs = [(rev.commit_hash, sorted(rev.refs), sorted(f.file_name for f in rev.files)) for r in info.repos for rev in r.revisions]
print(json.dumps({'paths': paths, 'absent': absent, 'revisions': revs, 'warnings': [str(w) for w in info.warnings]}))
`, { HF_HUB_OFFLINE: '1' });
    const r = JSON.parse(out) as { paths: string[]; absent: boolean; revisions: [string, string[], string[]][]; warnings: string[] };
    expect(r.paths).toEqual(FILES.map((f) => path.join(dir, f)));
    expect(r.absent).toBe(true);
    expect(r.revisions).toEqual([[path.basename(dir), ['main'], [...FILES].sort()]]);
    expect(r.warnings).toEqual([]);
  });
});
