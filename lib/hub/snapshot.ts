// A revision of a Hub repo in the cache: which commit it is, what the repo holds there, and the
// files fetched into snapshots/<commit>/.
import { datasetInfo, listFiles, modelInfo } from '@huggingface/hub';

import { HubError } from '../errors.js';
import { hasFile, linkSnapshot, markAbsent, writeRef, type RepoCache } from './cache.js';
import { downloadBlob, etagOf, hubFetch, sizeOf, type TreeFile } from './download.js';
import { repoLabel, type HubSettings, type RepoRef } from './settings.js';
import { exists } from '../fsutil.js';

/** fetch for @huggingface/hub's API calls: our token handling and our errors. */
function libraryFetch(s: HubSettings, repo: RepoRef): typeof fetch {
  return ((url: string | URL | Request, init?: RequestInit) => hubFetch(s, repo, String(url), init)) as typeof fetch;
}

/** The commit `repo.revision` points at now (the Hub's revision API). */
export async function remoteCommit(s: HubSettings, repo: RepoRef): Promise<string> {
  const params = { name: repo.id, revision: repo.revision, hubUrl: s.endpoint, fetch: libraryFetch(s, repo), additionalFields: ['sha'] as ['sha'] };
  const info = repo.type === 'model' ? await modelInfo(params) : await datasetInfo(params);
  const sha = (info as { sha?: unknown }).sha;
  if (typeof sha !== 'string' || !/^[0-9a-f]{40}$/.test(sha))
    throw new HubError(`The Hub did not say which commit ${repoLabel(repo)} is at (no \`sha\` in its answer from ${s.endpoint})`);
  return sha;
}

/** Every file of the repo at `commit` (the Hub's tree API, all pages). */
export async function remoteTree(s: HubSettings, repo: RepoRef, commit: string): Promise<Map<string, TreeFile>> {
  const tree = new Map<string, TreeFile>();
  for await (const e of listFiles({ repo: { type: repo.type, name: repo.id }, revision: commit, recursive: true, hubUrl: s.endpoint, fetch: libraryFetch(s, repo) })) {
    if (e.type !== 'file' || !e.oid) continue;
    tree.set(e.path, { path: e.path, oid: e.oid, size: e.size, ...(e.lfs ? { lfs: { oid: e.lfs.oid, size: e.lfs.size } } : {}) });
  }
  return tree;
}

/** Resolves the revision online and records it in refs/ (as Python does, before downloading). */
export async function resolveOnline(s: HubSettings, cache: RepoCache, repo: RepoRef): Promise<string> {
  const commit = await remoteCommit(s, repo);
  await writeRef(cache, repo.revision, commit);
  return commit;
}

/**
 * Puts `files` (present in `tree`) into snapshots/<commit>/, downloading the blobs the cache lacks,
 * with one progress total over them; `absent` files are recorded in .no_exist as Python does.
 */
export async function fetchFiles(
  s: HubSettings,
  cache: RepoCache,
  repo: RepoRef,
  commit: string,
  tree: Map<string, TreeFile>,
  files: string[],
  absent: string[] = [],
): Promise<void> {
  const todo: TreeFile[] = [];
  for (const name of [...files, ...absent]) {
    // Names come from the Hub (its tree, a shard index): none may climb out of the snapshot.
    if (name.startsWith('/') || name.includes('\\') || name.split('/').some((part) => part === '..' || part === ''))
      throw new HubError(`${repoLabel(repo)} names a file ${JSON.stringify(name)} that is not a plain path inside the repo; refusing to write it`);
  }
  for (const name of files) {
    if (await hasFile(cache, commit, name)) continue;
    const f = tree.get(name);
    if (!f) throw new HubError(`${name} is not in ${repoLabel(repo)} at commit ${commit}`);
    todo.push(f);
  }
  const missingBlobs: TreeFile[] = [];
  for (const f of todo) if (!(await exists(cache.blob(etagOf(f))))) missingBlobs.push(f);
  const totalBytes = missingBlobs.reduce((a, f) => a + sizeOf(f), 0);
  let bytes = 0;
  for (const f of todo) {
    if (missingBlobs.includes(f))
      await downloadBlob(s, cache, repo, commit, f, (n) => {
        bytes += n;
        s.onProgress?.({ repo: repo.id, file: f.path, bytes, totalBytes });
      });
    await linkSnapshot(cache, commit, f.path, etagOf(f));
  }
  for (const name of absent) await markAbsent(cache, commit, name);
}

/** The error for a revision the cache lacks while HF_HUB_OFFLINE (or `offline`) forbids the network. */
export function offlineError(s: HubSettings, repo: RepoRef, missing?: string[]): HubError {
  const what = missing?.length ? `the cache holds only part of ${repoLabel(repo)} (missing ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''})` : `${repoLabel(repo)} is not in the Hugging Face cache`;
  return new HubError(
    `${what} at ${cacheLabel(s)} and offline mode (HF_HUB_OFFLINE=1) forbids downloading it: run once with network access (HF_HUB_OFFLINE unset), or point HF_HUB_CACHE at a cache that holds it`,
  );
}

function cacheLabel(s: HubSettings): string {
  return s.cacheDir;
}
