// A split of a data set on the Hub, as rows: its Parquet files found by the layout the Hub's
// data-files conventions use, fetched through the same cache as models, read with hyparquet.
import { readFile } from 'node:fs/promises';

import { parquetReadObjects } from 'hyparquet';

import { HubError, InputError } from '../errors.js';
import { cachedCommit, repoCache, snapshotFiles, type RepoCache } from './cache.js';
import { fetchFiles, offlineError, remoteTree, resolveOnline } from './snapshot.js';
import { hubSettings, isHubId, parseHubId, repoLabel, type HubOptions, type HubSettings, type RepoRef } from './settings.js';

/** A data set split on the Hub. */
export type HubDatasetRef = {
  /** `owner/name`, optionally `owner/name@revision`. */
  hub: string;
  /** The subset (the Hub's "config", e.g. GSM8K's `main`). Defaults to the only one, or the unnamed default. */
  config?: string;
  /** The split. Defaults to the caller's (`test` for evaluation, `train` for training). */
  split?: string;
  /** Branch, tag or commit. Defaults to `'main'`. */
  revision?: string;
};

/** The Parquet copy the Hub keeps of every public data set, `<config>/<split>/NNNN.parquet`. */
export const PARQUET_BRANCH = 'refs/convert/parquet';

/**
 * `hf://datasets/owner/name[@revision][/config[/split]]` into its parts; undefined for anything else.
 * (A path in the URL names the subset and split, not a file, so one string can say GSM8K's `main/test`.)
 */
export function parseHfUrl(s: string): HubDatasetRef | undefined {
  const m = /^hf:\/\/datasets\/([^/@]+\/[^/@]+)(?:@([^/]+))?(?:\/([^/]+))?(?:\/([^/]+))?\/?$/.exec(s);
  if (!m) return undefined;
  if (!isHubId(m[1]!)) throw new InputError(`Expected hf://datasets/owner/name[@revision][/config[/split]] but received ${JSON.stringify(s)}`);
  return { hub: m[1]!, ...(m[2] ? { revision: decodeURIComponent(m[2]) } : {}), ...(m[3] ? { config: m[3] } : {}), ...(m[4] ? { split: m[4] } : {}) };
}

/** The `hf://datasets/...` URL of a reference (`default` stands for an unnamed subset before a split). */
export function hfUrl(ref: HubDatasetRef): string {
  const rev = ref.revision ? `@${encodeURIComponent(ref.revision)}` : '';
  const config = ref.config ?? (ref.split ? 'default' : undefined);
  return `hf://datasets/${ref.hub}${rev}${config ? `/${config}` : ''}${ref.split ? `/${ref.split}` : ''}`;
}

/**
 * The Parquet files of `config`/`split` among a repo's paths, in name order. Layouts, as the Hub
 * lays them out: `<config>/<split>-NNNNN-of-NNNNN.parquet`, `<config>/<split>/*.parquet` (the
 * Parquet branch), and for an unnamed subset `data/<split>-*.parquet` or `<split>-*.parquet`.
 */
export function matchSplit(paths: string[], config: string | undefined, split: string): string[] {
  const parquet = paths.filter((p) => p.endsWith('.parquet'));
  const inSplit = (rest: string[]) =>
    (rest.length === 2 && rest[0] === split) || (rest.length === 1 && (rest[0] === `${split}.parquet` || rest[0]!.startsWith(`${split}-`)));
  const pick = (cfg: string | undefined) =>
    parquet.filter((p) => {
      const parts = p.split('/');
      if (cfg !== undefined) return parts[0] === cfg && inSplit(parts.slice(1));
      return inSplit(parts[0] === 'data' ? parts.slice(1) : parts);
    });
  // `default` is the name the Hub gives the unnamed subset (and its Parquet branch's folder).
  if (config !== undefined && config !== 'default') return pick(config).sort();
  let found = pick(undefined);
  if (found.length === 0) found = pick('default');
  if (found.length === 0 && config === undefined) {
    // One named subset and no default: that one.
    const dirs = new Set(parquet.filter((p) => p.includes('/')).map((p) => p.split('/')[0]!));
    if (dirs.size === 1) found = pick([...dirs][0]);
  }
  return found.sort();
}

/** Whether the shards named `-NNNNN-of-NNNNN` are all there (a cache may hold part of a split). */
function wholeSplit(files: string[]): boolean {
  const of = files.map((f) => /-\d+-of-(\d+)\.parquet$/.exec(f)?.[1]);
  if (of.some((n) => n === undefined)) return files.length > 0;
  return files.length > 0 && of.every((n) => Number(n) === files.length);
}

async function cachedSplit(cache: RepoCache, revision: string, config: string | undefined, split: string): Promise<{ commit: string; files: string[] } | undefined> {
  const commit = await cachedCommit(cache, revision);
  if (!commit) return undefined;
  const files = matchSplit(await snapshotFiles(cache, commit), config, split);
  return wholeSplit(files) ? { commit, files } : undefined;
}

/**
 * The local Parquet files of a split: from the cache when it holds them whole (no request), else
 * found in the repo at the revision or, when the repo has no Parquet files for it and the revision
 * is `main`, in its Parquet branch (`refs/convert/parquet`, which converts main), and downloaded.
 */
export async function resolveDatasetSplit(ref: HubDatasetRef, split: string, options: HubOptions = {}): Promise<{ files: string[]; source: string }> {
  const base = parseHubId(ref.hub, 'dataset', ref.revision);
  const s = hubSettings(options);
  const cache = repoCache(s.cacheDir, base);
  const what = `${repoLabel(base)} (${ref.config ? `subset ${ref.config}, ` : ''}split ${split})`;
  const done = (repo: RepoRef, commit: string, files: string[]) => ({
    files: files.map((f) => cache.file(commit, f)),
    source: `hf://datasets/${repo.id}@${commit.slice(0, 10)}${repo.revision === PARQUET_BRANCH ? ` (${PARQUET_BRANCH})` : ''}/${files.length === 1 ? files[0] : `${files[0]} and ${files.length - 1} more`}`,
  });
  // The Parquet branch converts the default branch only: a pinned revision must have its own files.
  const converted: RepoRef = { ...base, revision: PARQUET_BRANCH };
  const revisions = base.revision === 'main' ? [base, converted] : [base];
  for (const repo of revisions) {
    const hit = await cachedSplit(cache, repo.revision, ref.config, split);
    if (hit) return done(repo, hit.commit, hit.files);
  }
  if (s.offline) throw offlineError(s, base);
  for (const repo of revisions) {
    const found = await findOnline(s, cache, repo, ref.config, split, repo === converted);
    if (found) return done(repo, found.commit, found.files);
  }
  throw new HubError(
    `${what} has no Parquet files on ${s.endpoint}${ref.config ? '' : '; name the subset (`config`)'}: check the subset and split names on the data set's page` +
      (base.revision === 'main' ? '' : ` (at a revision other than main only the repo's own Parquet files count: the Hub's ${PARQUET_BRANCH} converts main)`),
  );
}

async function findOnline(s: HubSettings, cache: RepoCache, repo: RepoRef, config: string | undefined, split: string, optional: boolean): Promise<{ commit: string; files: string[] } | undefined> {
  let commit: string;
  try {
    commit = await resolveOnline(s, cache, repo);
  } catch (err) {
    // A data set without a Parquet branch (private ones, new ones) just has none to offer.
    if (optional && err instanceof HubError && / not found /.test(err.message)) return undefined;
    throw err;
  }
  const tree = await remoteTree(s, repo, commit);
  const files = matchSplit([...tree.keys()], config, split);
  if (files.length === 0) return undefined;
  await fetchFiles(s, cache, repo, commit, tree, files);
  return { commit, files };
}

/** Reads Parquet files into plain rows (64-bit integers as numbers where they fit). */
export async function readParquetRows(files: string[]): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const file of files) {
    const buf = await readFile(file);
    const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
    let part: Record<string, unknown>[];
    try {
      part = (await parquetReadObjects({ file: ab })) as Record<string, unknown>[];
    } catch (err) {
      throw new HubError(`Cannot read the Parquet file ${file}: ${(err as Error).message}`, { cause: err });
    }
    for (const r of part) rows.push(plain(r) as Record<string, unknown>);
  }
  return rows;
}

function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object' && !(v instanceof Uint8Array) && !(v instanceof Date))
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

/** The rows of a split of a Hub data set, and where they came from. */
export async function loadHubRows(ref: HubDatasetRef, split: string, options: HubOptions = {}): Promise<{ rows: Record<string, unknown>[]; source: string }> {
  const { files, source } = await resolveDatasetSplit(ref, split, options);
  return { rows: await readParquetRows(files), source };
}
