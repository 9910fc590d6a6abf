// Requests to the Hub and the download of one file into the cache.
//
// The file transfer is ours, on fetch, because @huggingface/hub's `downloadFileToCacheDir` (2.x) does
// not do what a multi-gigabyte model needs: it restarts an interrupted download from zero (no Range
// request on the `.incomplete` file), checks no checksum, names the snapshot folder after the file's
// last commit rather than the revision's commit (Python uses the revision's, so the two caches would
// not share snapshots), writes no refs/<revision>, and asks the Hub again even when the file is
// cached under a branch name. The library still does the API calls (revision -> commit, file tree).
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';

import { AbortError, HubError } from '../errors.js';
import type { RepoCache } from './cache.js';
import { repoLabel, type HubSettings, type RepoRef } from './settings.js';

/** A file of the repo tree at a commit, as the Hub's tree API lists it. */
export type TreeFile = {
  path: string;
  /** Git blob sha1 (the ETag of a regular file). */
  oid: string;
  size: number;
  /** Set for LFS (and Xet) files: `oid` is the sha256 of the content, the ETag Python names the blob by. */
  lfs?: { oid: string; size: number };
};

/** The blob name Python uses: the sha256 for LFS files, the git blob sha1 otherwise. */
export const etagOf = (f: TreeFile) => f.lfs?.oid ?? f.oid;
export const sizeOf = (f: TreeFile) => f.lfs?.size ?? f.size;

/** How many times one file's transfer is retried (with a Range request) after the connection drops. */
const MAX_RETRIES = 4;

/** `<endpoint>/[datasets/]owner/name/resolve/<commit>/<path>`. */
export function resolveUrl(endpoint: string, repo: RepoRef, commit: string, file: string): string {
  const prefix = repo.type === 'dataset' ? 'datasets/' : '';
  return `${endpoint}/${prefix}${repo.id}/resolve/${encodeURIComponent(commit)}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

function tokenHelp(s: HubSettings): string {
  return s.token
    ? `the token from ${s.tokenSource} has no access to it`
    : 'give a token with HF_TOKEN=hf_... (or `huggingface-cli login`, which writes the token file)';
}

/** One sentence per failure the Hub reports, naming the repo (and file) and the fix. */
export async function responseError(res: Response, s: HubSettings, repo: RepoRef, file?: string): Promise<HubError> {
  const code = res.headers.get('x-error-code') ?? '';
  const label = repoLabel(repo);
  const page = `${s.endpoint}/${repo.type === 'dataset' ? 'datasets/' : ''}${repo.id}`;
  let detail = '';
  try {
    const text = (await res.text()).trim();
    const json = text.startsWith('{') ? (JSON.parse(text) as { error?: string }) : undefined;
    detail = (json?.error ?? text).slice(0, 200);
  } catch {
    // no body to quote
  }
  if (code === 'GatedRepo' || ((res.status === 401 || res.status === 403) && /gated|restricted/i.test(detail)))
    return new HubError(`${label} is gated: accept its conditions at ${page} and ${tokenHelp(s)}`);
  if (code === 'RevisionNotFound') return new HubError(`Revision ${repo.revision} of ${repo.id} not found on ${s.endpoint}: check the branch, tag or commit`);
  if (code === 'EntryNotFound' && file) return new HubError(`${file} not found in ${label} on ${s.endpoint}`);
  if (code === 'RepoNotFound' || res.status === 404)
    return new HubError(
      `${label} not found on ${s.endpoint}: check the name` + (s.token ? '' : ' (a private repo needs HF_TOKEN=hf_...)') + (repo.type === 'model' ? ', or give a local directory that exists' : ''),
    );
  if (res.status === 401 || res.status === 403) return new HubError(`${label} needs a token (it is private or gated): ${tokenHelp(s)}`);
  return new HubError(`The Hub answered ${res.status} ${res.statusText} for ${file ? `${file} of ` : ''}${label}${detail ? `: ${detail}` : ''}`);
}

/**
 * fetch with the token (sent to the Hub's own origin only, never to the storage a download redirects
 * to), redirects followed by hand for that reason, and failures turned into one HubError.
 */
export async function hubFetch(s: HubSettings, repo: RepoRef, url: string, init: RequestInit = {}, file?: string): Promise<Response> {
  const hubOrigin = new URL(s.endpoint).origin;
  let target = url;
  for (let hop = 0; hop < 10; hop++) {
    const headers = new Headers(init.headers);
    if (s.token && new URL(target).origin === hubOrigin) headers.set('authorization', `Bearer ${s.token}`);
    else headers.delete('authorization');
    headers.set('user-agent', 'justgrpo');
    let res: Response;
    try {
      res = await fetch(target, { ...init, headers, redirect: 'manual', signal: s.signal });
    } catch (err) {
      if (s.signal?.aborted) throw new AbortError();
      throw new TransientHubError(
        `Cannot reach ${new URL(target).origin} for ${repoLabel(repo)}${file ? ` (${file})` : ''}: ${causeText(err)}; check the connection or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only`,
        { cause: err },
      );
    }
    if (res.status >= 300 && res.status < 400 && res.headers.get('location')) {
      await res.body?.cancel();
      target = new URL(res.headers.get('location')!, target).href;
      continue;
    }
    if (!res.ok && res.status !== 416) {
      const err = await responseError(res, s, repo, file);
      throw res.status >= 500 || res.status === 429 ? new TransientHubError(err.message) : err;
    }
    return res;
  }
  throw new HubError(`Too many redirects fetching ${file ?? url} of ${repoLabel(repo)}`);
}

/** A failure worth retrying: no connection, or the server busy (5xx, 429). */
export class TransientHubError extends HubError {}

function causeText(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message;
}

/** The hash the Hub's metadata gives for a file: sha256 of the bytes (LFS), or git's blob sha1. */
function newHasher(f: TreeFile): Hash {
  if (f.lfs) return createHash('sha256');
  const h = createHash('sha1');
  h.update(`blob ${f.size}\0`);
  return h;
}

async function hashPrefix(h: Hash, file: string): Promise<void> {
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
}

async function sizeOnDisk(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

/**
 * Downloads one file into blobs/<etag>: bytes go to blobs/<etag>.incomplete (kept across runs, so a
 * later call resumes with a Range request), are checked against the Hub's size and hash, and only then
 * renamed into place. A file that fails its check is deleted and the call throws; nothing partial is
 * ever named like a whole blob. `onBytes` reports bytes as they arrive (a resumed prefix at once).
 */
export async function downloadBlob(
  s: HubSettings,
  cache: RepoCache,
  repo: RepoRef,
  commit: string,
  f: TreeFile,
  onBytes: (n: number) => void,
): Promise<string> {
  const lock = path.join(path.dirname(cache.root), '.locks', path.basename(cache.root), `${etagOf(f)}.justgrpo.lock`);
  return withLock(lock, async () => {
    // Another process may have finished it while we waited.
    if ((await sizeOnDisk(cache.blob(etagOf(f)))) === sizeOf(f)) return cache.blob(etagOf(f));
    return transfer(s, cache, repo, commit, f, onBytes);
  });
}

/**
 * Runs `fn` holding a lock file that names our pid, so two justgrpo processes never write one
 * .incomplete file at once; a lock whose process is gone is taken over. (Python's huggingface_hub
 * locks with flock on `<etag>.lock`, which Node cannot take; ours has another name so a lock file
 * Python leaves behind never reads as held.)
 */
async function withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  await mkdir(path.dirname(file), { recursive: true });
  for (;;) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const text = await readFile(file, 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      // An empty lock is one being written this instant, unless it has been empty for a while.
      const stale = text === '' ? Date.now() - (await stat(file).catch(() => ({ mtimeMs: 0 }))).mtimeMs > 10_000 : !alive(Number(text));
      if (stale) await rm(file, { force: true });
      else await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(file, { force: true });
  }
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function transfer(s: HubSettings, cache: RepoCache, repo: RepoRef, commit: string, f: TreeFile, onBytes: (n: number) => void): Promise<string> {
  const blob = cache.blob(etagOf(f));
  const part = `${blob}.incomplete`;
  const size = sizeOf(f);
  await mkdir(path.dirname(blob), { recursive: true });
  const url = resolveUrl(s.endpoint, repo, commit, f.path);
  let counted = 0;
  const count = (n: number) => {
    counted += n;
    onBytes(n);
  };
  for (let attempt = 0; ; attempt++) {
    let have = await sizeOnDisk(part);
    if (have > size) {
      await rm(part, { force: true });
      have = 0;
    }
    let hasher = newHasher(f);
    if (have > 0) await hashPrefix(hasher, part);
    if (have > counted) count(have - counted);
    let res: Response;
    try {
      res = await hubFetch(s, repo, url, have > 0 ? { headers: { range: `bytes=${have}-` } } : {}, f.path);
    } catch (err) {
      if (!(err instanceof TransientHubError) || attempt >= MAX_RETRIES) throw err;
      await new Promise((r) => setTimeout(r, 250 * (attempt + 1)));
      continue;
    }
    const range = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
    if (res.status === 416 || (res.status === 206 && Number(range?.[1]) !== have)) {
      // The server cannot continue where we stopped: start this file over.
      await res.body?.cancel();
      await rm(part, { force: true });
      if (attempt >= MAX_RETRIES) throw new HubError(`The Hub refused to resume ${f.path} of ${repoLabel(repo)} (status ${res.status}); run again`);
      continue;
    }
    // A server that ignores Range sends the whole file: write it from the start.
    const append = res.status === 206 && have > 0;
    if (!append && have > 0) hasher = newHasher(f);
    const fh = await open(part, append ? 'a' : 'w');
    let interrupted: unknown;
    try {
      if (res.body)
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          await fh.write(chunk);
          hasher.update(chunk);
          count(chunk.length);
        }
      await fh.sync();
    } catch (err) {
      if (s.signal?.aborted) throw new AbortError();
      interrupted = err;
    } finally {
      await fh.close();
    }
    const got = await sizeOnDisk(part);
    if (interrupted || got < size) {
      if (attempt < MAX_RETRIES) {
        await new Promise((r) => setTimeout(r, 100 * (attempt + 1)));
        continue;
      }
      throw new HubError(
        `The download of ${f.path} from ${repoLabel(repo)} stopped at ${got} of ${size} bytes (${interrupted ? causeText(interrupted) : 'the server closed the response'}); run again to resume it`,
        { cause: interrupted },
      );
    }
    const digest = hasher.digest('hex');
    const want = f.lfs ? f.lfs.oid : f.oid;
    if (got !== size || digest !== want) {
      await rm(part, { force: true });
      throw new HubError(
        `${f.path} from ${repoLabel(repo)} failed its check (${got !== size ? `${got} bytes, expected ${size}` : `${f.lfs ? 'sha256' : 'git sha1'} ${digest}, expected ${want}`}); the corrupt download was deleted, run again to fetch it anew`,
      );
    }
    await rename(part, blob);
    return blob;
  }
}
