// The run lock (lib/train/lock.ts): a lock whose process has just ended is taken over, not refused.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { acquireLock, LOCK_FILE } from '../../lib/train/lock.js';
import { tmpDir } from '../helpers/tmp.js';

describe('run lock', () => {
  const root = tmpDir('justgrpo-lock-');

  it('a holder that exits within the grace period (a rank its launcher just stopped) is waited for, then taken over as stale', async () => {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 700)']);
    const dir = path.join(root, 'ending');
    mkdirSync(dir);
    writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: child.pid, host: hostname(), started: 'then' }) + '\n');
    const t0 = Date.now();
    const lock = await acquireLock(dir);
    expect(Date.now() - t0).toBeGreaterThan(300);
    expect(lock.stale?.pid).toBe(child.pid);
    await lock.release();
  });

  it('a live holder is still refused, naming its pid', async () => {
    const dir = path.join(root, 'live');
    mkdirSync(dir);
    writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: process.pid, host: hostname(), started: 'now' }) + '\n');
    await expect(acquireLock(dir)).rejects.toThrow(new RegExp(`in use by another run \\(pid ${process.pid}`));
  });
});
