// loadModel and the CLI with `--model owner/name[@revision]`, against a Hub on 127.0.0.1.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { parquetWriteBuffer } from 'hyparquet-writer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel } from '../../lib/model.js';
import { HubServer } from '../helpers/hub-server.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const demo = path.join(root, 'models', 'arith-demo');
const tmp = tmpDir('justgrpo-hub-native-');
const files = Object.fromEntries(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'].map((f) => [f, readFileSync(path.join(demo, f))]));

let hub: HubServer;
beforeAll(async () => {
  hub = await HubServer.start();
  hub.addCommit('models/acme/arith', files, { tags: ['v1'] });
  // Two GSM8K-style rows the shipped model can read (raw prompts; its tokenizer is character-level).
  hub.addCommit('datasets/acme/sums', {
    'data/test-00000-of-00001.parquet': Buffer.from(parquetWriteBuffer({
      columnData: [
        { name: 'question', data: ['3+4=', '10+2='], type: 'STRING' },
        { name: 'answer', data: ['#### 7', '#### 12'], type: 'STRING' },
      ],
    })),
  });
});
afterAll(async () => {
  await hub.close();
});

describe('Hub ids in loadModel and the CLI', () => {
  it('loadModel(owner/name@revision) gives the same model as the directory it came from', async () => {
    const local = await loadModel(demo);
    const fromHub = await loadModel('acme/arith', { revision: 'v1', hub: { endpoint: hub.url, cacheDir: path.join(tmp, 'lib-cache'), offline: false } });
    try {
      expect(fromHub.config).toEqual(local.config);
      expect(fromHub.tokenizer.encode('12+3=')).toEqual(local.tokenizer.encode('12+3='));
      const name = 'model.transformer.ff_out.weight';
      expect(await fromHub.getParameter(name)).toEqual(await local.getParameter(name));
    } finally {
      await local.dispose();
      await fromHub.dispose();
    }
  });

  it('`info` and `eval` take --model owner/name and an hf:// task, then run offline from the cache', async () => {
    const env = { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_CACHE: path.join(tmp, 'cli-cache'), HF_HUB_OFFLINE: '0', HF_TOKEN: '' };
    const run = async (...args: string[]) => (await promisify(execFile)(process.execPath, [cli, ...args], { env, encoding: 'utf8' })).stdout;
    const info = JSON.parse(await run('info', '--model', 'acme/arith', '--json'));
    expect(info.model).toBe('acme/arith');
    expect(info.numParams).toBeGreaterThan(0);
    const r = JSON.parse(await run('eval', '--model', 'acme/arith@v1', '--task', 'hf://datasets/acme/sums/default/test', '--raw', '--gen-length', '8', '--block-length', '8', '--json'));
    expect(r.total).toBe(2);
    const served = hub.count();
    env.HF_HUB_OFFLINE = '1';
    const again = JSON.parse(await run('eval', '--model', 'acme/arith@v1', '--task', 'hf://datasets/acme/sums/default/test', '--raw', '--gen-length', '8', '--block-length', '8', '--json'));
    expect(again.accuracy).toBe(r.accuracy);
    expect(hub.count()).toBe(served);
    // A cold cache offline: one line naming the repo and the way out, exit code 1.
    env.HF_HUB_CACHE = path.join(tmp, 'cold');
    const failed = await promisify(execFile)(process.execPath, [cli, 'info', '--model', 'acme/arith'], { env, encoding: 'utf8' }).catch((e: { code: number; stderr: string }) => e);
    expect((failed as { code: number }).code).toBe(1);
    expect((failed as { stderr: string }).stderr.trim()).toMatch(/^justgrpo: acme\/arith is not in the Hugging Face cache .* \(HF_HUB_OFFLINE=1\)/);
  });
});
