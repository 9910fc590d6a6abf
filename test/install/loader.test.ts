// The loader reports which binary it took and why; the prebuilt binary (when built) loads on its own.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { nativeInfo } from '../../lib/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('native loader', () => {
  it('names the binary it loaded, why, its backends and its BLAS', () => {
    const info = nativeInfo();
    expect(existsSync(info.path)).toBe(true);
    const top = path.relative(root, info.path).split(path.sep)[0];
    if (!process.env.JUSTGRPO_PREBUILD) expect(info.source).toBe(top === 'build' ? 'local build' : 'prebuilt');
    expect(info.backends).toContain('cpu');
    // DYNAMIC_ARCH: OpenBLAS chooses its kernels for the CPU at load, so one binary runs on every x86-64.
    expect(info.blas).toMatch(/^OpenBLAS .*DYNAMIC_ARCH.*\(core \S+\)$/);
    info.backends.push('mutated');
    expect(nativeInfo().backends).not.toContain('mutated');
  });

  it('builds for baseline x86-64: no -march in binding.gyp or CMakeLists.txt', () => {
    for (const file of ['binding.gyp', 'CMakeLists.txt']) {
      expect(readFileSync(path.join(root, file), 'utf8'), file).not.toMatch(/-march|-mavx|-mfma|-mtune=native/);
    }
  });

  const dir = path.join(root, 'prebuilds', 'linux-x64');
  const prebuilt = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
  const dist = path.join(root, 'dist', 'native', 'binding.js');
  const skip = prebuilt.length === 0 ? 'no prebuilds/linux-x64 (npm run build:prebuilt)' : !existsSync(dist) ? 'no dist/ (npm run build:ts)' : '';
  if (skip) console.log(`skipping the prebuilt-binary test: ${skip}`);
  it.skipIf(Boolean(skip))('takes the prebuilt binary when there is no local build, and reports it', () => {
    const out = execFileSync(process.execPath, ['--input-type=module', '-e',
      `import { nativeInfo } from ${JSON.stringify(dist)}; console.log(JSON.stringify(nativeInfo()));`],
      { env: { ...process.env, PREBUILDS_ONLY: '1', JUSTGRPO_PREBUILD: '' }, encoding: 'utf8' });
    const info = JSON.parse(out) as { path: string; source: string; backends: string[] };
    expect(info.source).toBe('prebuilt');
    expect(info.path).toBe(path.join(dir, prebuilt[0]!));
    expect(info.backends).toContain('cpu');
  });
});
