// `owner/name[@revision]` -> a local Hugging Face model directory (a snapshot in the cache), with
// only what loading reads: config.json, the tokenizer files, generation_config.json, and the
// safetensors weights (model.safetensors, or the shards model.safetensors.index.json names).
import { readFile } from 'node:fs/promises';

import { HubError } from '../errors.js';
import { exists } from '../fsutil.js';
import { cachedCommit, hasFile, knownAbsent, repoCache, type RepoCache } from './cache.js';
import { TransientHubError } from './download.js';
import { fetchFiles, offlineError, remoteTree, resolveOnline } from './snapshot.js';
import { hubSettings, isHubId, parseHubId, repoLabel, type HubOptions, type HubSettings, type RepoRef } from './settings.js';

/** Files read when present (a model may lack any of them). */
export const OPTIONAL_MODEL_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];
const CONFIG = 'config.json';
const WEIGHTS = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';

export type ResolveModelOptions = HubOptions & {
  /** Branch, tag or commit on the Hub; overrides an `@revision` in the id. Defaults to `'main'`. */
  revision?: string;
};

/**
 * Where to load a model from: `dirOrHubId` itself when it exists on disk (a local path always wins)
 * or does not read as `owner/name[@revision]`; else the snapshot of that Hub model in the cache,
 * downloaded first when the cache lacks it. A revision the cache holds whole is used without any
 * request (a branch is not checked for newer commits; give a commit or clear refs/ to move on).
 *
 * @throws {HubError} The repo or revision is unknown, needs a token, lacks files loading needs, a
 *   download failed its checksum, or offline mode meets a cold cache; the message names the fix.
 */
export async function resolveModelDir(dirOrHubId: string, options: ResolveModelOptions = {}): Promise<string> {
  if ((await exists(dirOrHubId)) || !isHubId(dirOrHubId)) return dirOrHubId;
  const repo = parseHubId(dirOrHubId, 'model', options.revision);
  const s = hubSettings(options);
  const cache = repoCache(s.cacheDir, repo);
  const known = await cachedCommit(cache, repo.revision);
  const loadable = known !== undefined && (await missingModelFiles(cache, known, false)).length === 0;
  if (known) {
    const missing = await missingModelFiles(cache, known, !s.offline);
    if (missing.length === 0) return cache.snapshot(known);
    if (s.offline) throw offlineError(s, repo, await missingModelFiles(cache, known, false));
  } else if (s.offline) throw offlineError(s, repo);
  try {
    return await downloadModel(s, cache, repo);
  } catch (err) {
    // As Python does: with the Hub out of reach, a cached snapshot that has what loading needs
    // (it only lacks an answer about an optional file) serves.
    if (loadable && err instanceof TransientHubError) return cache.snapshot(known);
    throw err;
  }
}

/**
 * What the snapshot lacks for loading: config.json and the weights always; with `strict`, also each
 * optional file neither present nor recorded as absent (so the Hub is asked about it once).
 */
async function missingModelFiles(cache: RepoCache, commit: string, strict: boolean): Promise<string[]> {
  const missing: string[] = [];
  if (!(await hasFile(cache, commit, CONFIG))) missing.push(CONFIG);
  if (!(await hasFile(cache, commit, WEIGHTS))) {
    if (!(await hasFile(cache, commit, INDEX))) missing.push(WEIGHTS);
    else for (const shard of await shardNames(cache.file(commit, INDEX), 'the cached index')) if (!(await hasFile(cache, commit, shard))) missing.push(shard);
  }
  if (strict)
    for (const f of OPTIONAL_MODEL_FILES) if (!(await hasFile(cache, commit, f)) && !(await knownAbsent(cache, commit, f))) missing.push(f);
  return missing;
}

/** The shard files a model.safetensors.index.json names, in order. */
async function shardNames(indexFile: string, what: string): Promise<string[]> {
  let map: unknown;
  try {
    map = (JSON.parse(await readFile(indexFile, 'utf8')) as { weight_map?: unknown }).weight_map;
  } catch (err) {
    throw new HubError(`${what} ${indexFile} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof map !== 'object' || map === null || Array.isArray(map))
    throw new HubError(`${what} ${indexFile} has no \`weight_map\` object of tensor name -> file name`);
  const files = new Set<string>();
  for (const [tensor, file] of Object.entries(map)) {
    if (typeof file !== 'string' || file.startsWith('/') || file.split('/').includes('..'))
      throw new HubError(`${what} ${indexFile}: tensor ${tensor} maps to ${JSON.stringify(file)}, not a file of the repo`);
    files.add(file);
  }
  return [...files];
}

async function downloadModel(s: HubSettings, cache: RepoCache, repo: RepoRef): Promise<string> {
  const commit = await resolveOnline(s, cache, repo);
  // The branch may have moved to a commit the cache already holds whole.
  if ((await missingModelFiles(cache, commit, true)).length === 0) return cache.snapshot(commit);
  const tree = await remoteTree(s, repo, commit);
  const label = `${repoLabel(repo)} (commit ${commit.slice(0, 10)})`;
  if (!tree.has(CONFIG)) throw new HubError(`${label} has no ${CONFIG}: not a Transformers model repo`);
  const optional = OPTIONAL_MODEL_FILES.filter((f) => tree.has(f));
  const absent = OPTIONAL_MODEL_FILES.filter((f) => !tree.has(f));
  let weights: string[];
  if (tree.has(WEIGHTS)) weights = [WEIGHTS];
  else if (tree.has(INDEX)) {
    await fetchFiles(s, cache, repo, commit, tree, [INDEX]);
    weights = await shardNames(cache.file(commit, INDEX), `${label}:`);
    const gone = weights.filter((w) => !tree.has(w));
    if (gone.length)
      throw new HubError(`${label}: ${INDEX} names ${gone[0]}${gone.length > 1 ? ` (and ${gone.length - 1} more)` : ''}, which is not in the repo; the repo is incomplete`);
  } else {
    const other = [...tree.keys()].find((f) => /\.(bin|pt|pth|gguf)$/.test(f));
    throw new HubError(`${label} has neither ${WEIGHTS} nor ${INDEX}${other ? ` (it has ${other}; justgrpo reads safetensors weights only)` : ''}`);
  }
  await fetchFiles(s, cache, repo, commit, tree, [CONFIG, ...optional], absent);
  await fetchFiles(s, cache, repo, commit, tree, weights);
  return cache.snapshot(commit);
}
