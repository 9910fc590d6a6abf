// File-system helpers: durable writes and directories that appear whole or not at all.
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';

export async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

export async function writeFileSynced(file: string, text: string): Promise<void> {
  const fh = await open(file, 'w');
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Fills a fresh temporary sibling of `dir` and renames it into place, so `dir` is never seen half
 * written: a crash leaves either the old directory or the new one (and a stray temporary).
 */
export async function atomicDirectory(dir: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const abs = path.resolve(dir);
  await mkdir(path.dirname(abs), { recursive: true });
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = `${abs}.tmp-${suffix}`;
  await mkdir(tmp);
  try {
    await fill(tmp);
    if (await exists(abs)) {
      const old = `${abs}.old-${suffix}`;
      await rename(abs, old);
      await rename(tmp, abs);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, abs);
    }
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
