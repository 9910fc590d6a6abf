// The files under examples/ that the README shows: each runs as a user runs it (node, importing
// 'justgrpo' through the package's own exports, so dist/ must be built: npm test builds it first),
// and the README's copy is the file, character for character.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = tmpDir();
const readme = readFileSync(path.join(root, 'README.md'), 'utf8');

// What they write goes to os.tmpdir(), here the test's own directory.
function runExample(name: string) {
  return spawnSync(process.execPath, [path.join(root, 'examples', name)], { cwd: tmp, encoding: 'utf8', env: { ...process.env, TMPDIR: tmp }, timeout: 120_000 });
}

function readmeCopy(name: string): string | undefined {
  const m = readme.match(new RegExp(`<!-- examples/${name.replace('.', '\\.')} [^>]*-->\\n\`\`\`js\\n([\\s\\S]*?)\`\`\`\\n`));
  return m?.[1];
}

describe('examples', () => {
  it('library.mjs loads the shipped model, reads logits, decodes and saves', () => {
    const r = runExample('library.mjs');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^logits: \d+ values; last row: 104$/m);
    expect(r.stdout).toMatch(/^low_confidence: ".*####/m);
    expect(r.stdout).toMatch(/^saved to /m);
  });

  it('train-from-code.mjs trains with GRPOTrainer and runGrpo from the package root', () => {
    const r = runExample('train-from-code.mjs');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^step 1: reward \d/m);
    expect(r.stdout).toMatch(/^step 2: reward \d/m);
    expect(r.stdout).toMatch(/^runGrpo: 2 steps; checkpoint .*checkpoint-2/m);
  });

  it.each(['library.mjs', 'train-from-code.mjs'])("the README's copy of %s is the file", (name) => {
    expect(readmeCopy(name), `README.md has no marked copy of examples/${name}`).toBeDefined();
    expect(readmeCopy(name)).toBe(readFileSync(path.join(root, 'examples', name), 'utf8'));
  });

  it('deep imports stay closed: only the package root is exported', () => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', "await import('justgrpo/dist/train/grpo.js')"], { cwd: root, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/ERR_PACKAGE_PATH_NOT_EXPORTED/);
  });
});
