// The Hugging Face cache exactly as Python's huggingface_hub lays it out, so either side reuses the
// other's downloads:
//
//   <cacheDir>/models--owner--name/        (datasets--owner--name/ for data sets)
//     blobs/<etag>                         the bytes; etag = sha256 for LFS files, git blob sha1 otherwise
//     snapshots/<commit>/<path>            relative symlinks to ../../blobs/<etag>
//     refs/<revision>                      the commit a branch or tag pointed at (no newline)
//     .no_exist/<commit>/<path>            empty: the file is known to be absent at that commit
import { randomBytes } from 'node:crypto';
import { copyFile, lstat, mkdir, readFile, readdir, rename, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { getRepoFolderName } from '@huggingface/hub';

import { COMMIT_HASH, type RepoRef } from './settings.js';

const tmpName = (file: string) => `${file}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;

export type RepoCache = {
  /** `<cacheDir>/models--owner--name`. */
  root: string;
  blob: (etag: string) => string;
  snapshot: (commit: string) => string;
  file: (commit: string, file: string) => string;
  noExist: (commit: string, file: string) => string;
  ref: (revision: string) => string;
};

export function repoCache(cacheDir: string, repo: RepoRef): RepoCache {
  const root = path.join(cacheDir, getRepoFolderName({ type: repo.type, name: repo.id }));
  return {
    root,
    blob: (etag) => path.join(root, 'blobs', etag),
    snapshot: (commit) => path.join(root, 'snapshots', commit),
    file: (commit, file) => path.join(root, 'snapshots', commit, ...file.split('/')),
    noExist: (commit, file) => path.join(root, '.no_exist', commit, ...file.split('/')),
    ref: (revision) => path.join(root, 'refs', ...revision.split('/')),
  };
}

/** The commit of `revision` the cache knows: the revision itself when it is a commit hash, else its ref file. */
export async function cachedCommit(cache: RepoCache, revision: string): Promise<string | undefined> {
  if (COMMIT_HASH.test(revision)) return revision;
  try {
    const commit = (await readFile(cache.ref(revision), 'utf8')).trim();
    return COMMIT_HASH.test(commit) ? commit : undefined;
  } catch {
    return undefined;
  }
}

/** Records where a branch or tag points (Python writes the hash without a newline). */
export async function writeRef(cache: RepoCache, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  const file = cache.ref(revision);
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = tmpName(file);
  await writeFile(tmp, commit);
  await rename(tmp, file);
}

/** Whether the snapshot holds `file` (a symlink whose blob is there, or a plain file). */
export async function hasFile(cache: RepoCache, commit: string, file: string): Promise<boolean> {
  try {
    return (await stat(cache.file(commit, file))).isFile();
  } catch {
    return false;
  }
}

export async function knownAbsent(cache: RepoCache, commit: string, file: string): Promise<boolean> {
  try {
    await lstat(cache.noExist(commit, file));
    return true;
  } catch {
    return false;
  }
}

export async function markAbsent(cache: RepoCache, commit: string, file: string): Promise<void> {
  const marker = cache.noExist(commit, file);
  await mkdir(path.dirname(marker), { recursive: true });
  await writeFile(marker, '');
}

/**
 * Points snapshots/<commit>/<file> at blobs/<etag> with a relative symlink, as Python does; where the
 * file system refuses symlinks (Windows without developer mode), a copy, as Python falls back to.
 */
export async function linkSnapshot(cache: RepoCache, commit: string, file: string, etag: string): Promise<string> {
  const pointer = cache.file(commit, file);
  const blob = cache.blob(etag);
  await mkdir(path.dirname(pointer), { recursive: true });
  // Made under a temporary name and renamed over, so concurrent loads never see a missing link.
  const tmp = tmpName(pointer);
  try {
    await symlink(path.relative(path.dirname(pointer), blob), tmp);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
    await copyFile(blob, tmp);
  }
  await rename(tmp, pointer);
  return pointer;
}

/** Every file under a snapshot, as repo paths with '/' (what an offline lookup can choose from). */
export async function snapshotFiles(cache: RepoCache, commit: string): Promise<string[]> {
  const root = cache.snapshot(commit);
  const out: string[] = [];
  const walk = async (dir: string, prefix: string) => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const rel = prefix ? `${prefix}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(path.join(dir, e.name), rel);
      else if (await hasFile(cache, commit, rel)) out.push(rel);
    }
  };
  await walk(root, '');
  return out.sort();
}
