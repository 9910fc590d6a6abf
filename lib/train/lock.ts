// One run per output directory: a lock file holding the owner's pid and host, created with O_EXCL
// so two runs started at once cannot both take it. A lock whose pid is dead on this host is stale
// (the run was killed) and is taken over; it also marks the directory as an interrupted run.
import { hostname } from 'node:os';
import { open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';

import { ConfigError } from '../errors.js';

export const LOCK_FILE = 'run.lock';

type LockInfo = { pid: number; host: string; started: string };

export type RunLock = {
  file: string;
  /** The lock an interrupted run left (its pid is dead), taken over; null if there was none. */
  stale: LockInfo | null;
  release: () => Promise<void>;
};

/** What an existing lock says, or null when there is none (or it is unreadable: a kill mid-write). */
export async function readLock(dir: string): Promise<LockInfo | 'unreadable' | null> {
  let text: string;
  try {
    text = await readFile(path.join(dir, LOCK_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const v = JSON.parse(text) as LockInfo;
    if (Number.isInteger(v.pid) && typeof v.host === 'string') return v;
  } catch {
    // fall through
  }
  return 'unreadable';
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the lock of `dir` (which must exist) or throws ConfigError naming the run that holds it.
 * A lock left by a dead process on this host, or one cut short by a kill, is taken over.
 */
export async function acquireLock(dir: string): Promise<RunLock> {
  const file = path.join(dir, LOCK_FILE);
  const me: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  let stale: LockInfo | null = null;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx');
      try {
        await fh.writeFile(JSON.stringify(me) + '\n');
        await fh.sync();
      } finally {
        await fh.close();
      }
      const release = async () => {
        // Only our own lock is removed (a lock that is no longer ours was taken over after we died).
        const now = await readLock(dir).catch(() => null);
        if (now && now !== 'unreadable' && now.pid === me.pid && now.host === me.host && now.started === me.started) await rm(file, { force: true });
      };
      return { file, stale, release };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const held = await readLock(dir);
    if (held === null) continue;
    if (held !== 'unreadable') {
      if (held.host !== me.host)
        throw new ConfigError(`${dir} is in use by a run on host ${held.host} (pid ${held.pid}, since ${held.started}); if that run is gone, delete ${file}`);
      if (alive(held.pid))
        throw new ConfigError(`${dir} is in use by another run (pid ${held.pid}, since ${held.started}); wait for it or choose another --out`);
    }
    stale = held === 'unreadable' ? { pid: 0, host: me.host, started: '' } : held;
    await rm(file, { force: true });
  }
  throw new ConfigError(`${dir} is in use by another run (its lock ${file} keeps being taken); choose another --out`);
}
