// One run per output directory: a lock file holding the owner's pid and host, created whole with
// link(2) (which fails if the file exists) so two runs started at once cannot both take it. A lock whose pid is dead on this host is stale
// (the run was killed) and is taken over; it also marks the directory as an interrupted run.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, open, readFile, rm } from 'node:fs/promises';
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

/** What an existing lock says, or null when there is none ('unreadable': damaged). */
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

/**
 * Creates `file` with `text` unless it exists; false if it does. The text is written to a temporary
 * file and linked into place, so the lock is never seen empty or half written: an unreadable lock
 * is then a damaged one, not one being written.
 */
async function createWhole(file: string, text: string): Promise<boolean> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'wx');
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await rm(tmp, { force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A process that has exited but is not reaped yet (a zombie, or one being torn down: an MPI rank
  // its launcher just killed) holds nothing any more.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';  // no /proc: what kill(0) said
  }
}

// Whether `pid` is still alive after a short grace period: a run that has just ended (a job whose
// launcher stopped it a moment ago) may take a moment to exit, and a resume started right after
// should not be refused for that.
async function stillAlive(pid: number, graceMs = 3000): Promise<boolean> {
  for (const end = Date.now() + graceMs; alive(pid); await new Promise((r) => setTimeout(r, 100)))
    if (Date.now() >= end) return true;
  return false;
}

/**
 * Takes the lock of `dir` (which must exist) or throws ConfigError naming the run that holds it.
 * A lock left by a dead process on this host, or a damaged one, is taken over.
 */
export async function acquireLock(dir: string): Promise<RunLock> {
  const file = path.join(dir, LOCK_FILE);
  const me: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  let stale: LockInfo | null = null;
  for (let attempt = 0; attempt < 2; attempt++) {
    if (await createWhole(file, JSON.stringify(me) + '\n')) {
      const release = async () => {
        // Only our own lock is removed (a lock that is no longer ours was taken over after we died).
        const now = await readLock(dir).catch(() => null);
        if (now && now !== 'unreadable' && now.pid === me.pid && now.host === me.host && now.started === me.started) await rm(file, { force: true });
      };
      return { file, stale, release };
    }
    const held = await readLock(dir);
    if (held === null) continue;
    if (held !== 'unreadable') {
      if (held.host !== me.host)
        throw new ConfigError(`${dir} is in use by a run on host ${held.host} (pid ${held.pid}, since ${held.started}); if that run is gone, delete ${file}`);
      if (await stillAlive(held.pid))
        throw new ConfigError(`${dir} is in use by another run (pid ${held.pid}, since ${held.started}); wait for it or choose another --out`);
    }
    stale = held === 'unreadable' ? { pid: 0, host: me.host, started: '' } : held;
    await rm(file, { force: true });
  }
  throw new ConfigError(`${dir} is in use by another run (its lock ${file} keeps being taken); choose another --out`);
}
