// File-system helpers: durable writes and directories that appear whole or not at all.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
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

/**
 * Writes files into an existing directory the way save_pretrained does: `fill` writes them into a
 * temporary directory inside `dir`, then each is renamed over its namesake (each file appears whole
 * or not at all). Files `fill` did not write are kept, except those `stale(name)` claims (an
 * earlier save's weight shards that would otherwise be loaded in place of the new ones).
 * Returns the names written.
 */
export async function replaceFiles(dir: string, fill: (tmp: string) => Promise<void>, stale: (name: string) => boolean = () => false): Promise<string[]> {
  const tmp = path.join(dir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp);
  try {
    await fill(tmp);
    const written = await readdir(tmp);
    for (const name of written) await rename(path.join(tmp, name), path.join(dir, name));
    const keep = new Set(written);
    for (const name of await readdir(dir)) if (!keep.has(name) && stale(name)) await rm(path.join(dir, name), { force: true });
    return written;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Whether `dir` is a directory with at least one entry. */
export async function isNonEmptyDirectory(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0;
  } catch {
    return false;
  }
}
