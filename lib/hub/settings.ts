// Repo ids and the environment that Python's huggingface_hub reads (HF_ENDPOINT, HF_TOKEN and the
// token file, HF_HUB_OFFLINE, HF_HOME / HF_HUB_CACHE), read the same way so both share one cache.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { getHFHubCachePath } from '@huggingface/hub';

import { expected } from '../errors.js';

export type RepoType = 'model' | 'dataset';

/** A repository on the Hub at a revision. */
export type RepoRef = {
  type: RepoType;
  /** `owner/name` (or a bare `name`). */
  id: string;
  /** A branch, tag or commit hash. */
  revision: string;
};

/** How to reach the Hub and where its cache lives; every field defaults to the environment. */
export type HubOptions = {
  /** The Hub's address. Defaults to `$HF_ENDPOINT`, else `https://huggingface.co`. */
  endpoint?: string;
  /** Access token for gated and private repos. Defaults to `$HF_TOKEN`, else the token file (`$HF_TOKEN_PATH`, else `$HF_HOME/token`). */
  token?: string;
  /** The cache directory (Python's layout). Defaults to `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir?: string;
  /** Use the cache only, never the network. Defaults to whether `$HF_HUB_OFFLINE` is 1 / true / yes / on. */
  offline?: boolean;
  /** Download progress (bytes of the files this call downloads). Defaults to none. */
  onProgress?: (p: DownloadProgress) => void;
  /** Cancels downloads. Defaults to none. */
  signal?: AbortSignal;
};

/** Where a download stands: the file being fetched and the bytes of the whole call. */
export type DownloadProgress = {
  repo: string;
  file: string;
  /** Bytes received so far by this call (a resumed file counts what it had). */
  bytes: number;
  /** Bytes this call downloads in all. */
  totalBytes: number;
};

export type HubSettings = {
  endpoint: string;
  token: string | undefined;
  /** Where the token came from, for error messages. */
  tokenSource: string | undefined;
  cacheDir: string;
  offline: boolean;
  onProgress: ((p: DownloadProgress) => void) | undefined;
  signal: AbortSignal | undefined;
};

const TRUE_VALUES = new Set(['1', 'on', 'yes', 'true']);

/** `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (as Python expands it). */
export function hfHome(): string {
  const env = process.env;
  return expandHome(env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface'));
}

/** The token file Python's `huggingface-cli login` writes. */
export function tokenFile(): string {
  return expandHome(process.env.HF_TOKEN_PATH ?? path.join(hfHome(), 'token'));
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p;
}

/** The options with the environment filled in. */
export function hubSettings(options: HubOptions = {}): HubSettings {
  const env = process.env;
  let token = options.token;
  let tokenSource = token ? 'the `token` option' : undefined;
  if (!token && env.HF_TOKEN?.trim()) [token, tokenSource] = [env.HF_TOKEN.trim(), 'HF_TOKEN'];
  // The name huggingface_hub still honours from its older releases.
  if (!token && env.HUGGING_FACE_HUB_TOKEN?.trim()) [token, tokenSource] = [env.HUGGING_FACE_HUB_TOKEN.trim(), 'HUGGING_FACE_HUB_TOKEN'];
  if (!token) {
    try {
      const t = readFileSync(tokenFile(), 'utf8').trim();
      if (t) [token, tokenSource] = [t, tokenFile()];
    } catch {
      // no token file: anonymous access
    }
  }
  return {
    endpoint: (options.endpoint ?? env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    token,
    tokenSource,
    // getHFHubCachePath reads HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME and XDG_CACHE_HOME in Python's order.
    cacheDir: path.resolve(expandHome(options.cacheDir ?? getHFHubCachePath())),
    offline: options.offline ?? TRUE_VALUES.has((env.HF_HUB_OFFLINE ?? '').trim().toLowerCase()),
    onProgress: options.onProgress,
    signal: options.signal,
  };
}

// Python's rules for repo names: word characters, '.', '-'; no '--' or '..'; at most 96 characters.
const NAME = /^[A-Za-z0-9_][\w.-]*$/;

/** Whether `s` reads as `owner/name[@revision]` (a string that could be a relative path too: callers check the path first). */
export function isHubId(s: string): boolean {
  const at = s.indexOf('@');
  const id = at < 0 ? s : s.slice(0, at);
  if (at >= 0 && at === s.length - 1) return false;
  const parts = id.split('/');
  return parts.length === 2 && parts.every((p) => NAME.test(p) && !p.includes('--') && !p.includes('..') && p.length <= 96);
}

/** `owner/name[@revision]` into its repo; `revision` (when given) overrides the one in the string. */
export function parseHubId(s: string, type: RepoType, revision?: string): RepoRef {
  if (typeof s !== 'string' || !isHubId(s)) throw expected('a Hub id `owner/name` or `owner/name@revision`', type === 'model' ? 'model' : 'dataset', s);
  const at = s.indexOf('@');
  const id = at < 0 ? s : s.slice(0, at);
  const fromId = at < 0 ? undefined : s.slice(at + 1);
  return { type, id, revision: revision ?? fromId ?? 'main' };
}

/** `owner/name` or `datasets/owner/name`, as people write them and as the Hub's URLs read. */
export function repoLabel(repo: RepoRef): string {
  return `${repo.type === 'dataset' ? 'datasets/' : ''}${repo.id}${repo.revision === 'main' ? '' : `@${repo.revision}`}`;
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;
