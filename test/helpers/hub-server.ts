// A Hugging Face Hub on 127.0.0.1 for tests: the routes justgrpo's Hub client uses, with the headers
// the real Hub sends, and faults on demand (a cut connection, corrupt bytes, a gated repo).
//
//   GET /api/{models,datasets}/<owner>/<name>/revision/<rev>   -> { id, sha, private, gated, siblings }
//   GET /api/{models,datasets}/<owner>/<name>/tree/<rev>?recursive=true -> [{ type, path, oid, size, lfs? }]
//   GET|HEAD /[datasets/]<owner>/<name>/resolve/<rev>/<path>   -> the bytes (regular files), or a 302 to
//       <storage origin>/cdn/<sha256> (LFS files) with x-linked-etag / x-linked-size / x-repo-commit, as the Hub does
//   GET /cdn/<sha256>                                          -> the bytes, with Range support
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type RepoFiles = Record<string, Buffer | string>;

type Repo = {
  /** 'gated' answers 401/403 with X-Error-Code GatedRepo without the token; 'private' answers 401 RepoNotFound. */
  access: 'public' | 'gated' | 'private';
  refs: Map<string, string>;
  commits: Map<string, Map<string, Buffer>>;
};

export type Request = { method: string; url: string; range?: string; authorization?: string };

const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** The Hub stores weights and Parquet files in LFS; everything else here is a regular git file. */
export const isLfs = (file: string) => /\.(safetensors|parquet|bin)$/.test(file);

export class HubServer {
  readonly requests: Request[] = [];
  readonly #repos = new Map<string, Repo>();
  readonly #blobs = new Map<string, Buffer>();
  /** Files whose next transfer is cut half way (once each). */
  readonly cutOnce = new Set<string>();
  /** Files sent half at once and the rest a second later (a slow link). */
  readonly slow = new Set<string>();
  /** Files whose next request is answered 503 (once each). */
  readonly busyOnce = new Set<string>();
  /** Files served with wrong bytes (same length) for as long as they are listed. */
  readonly corrupt = new Set<string>();
  /** The token gated and private repos accept. */
  token = 'hf_testtoken';
  // The Hub and, on another port (another origin, as the real Hub's storage is), the LFS storage.
  #servers: Server[];
  url = '';
  cdnUrl = '';

  private constructor() {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.#handle(req, res).catch((err: unknown) => {
        res.statusCode = 500;
        res.end(String(err));
      });
    };
    this.#servers = [createServer(handler), createServer(handler)];
  }

  /** `storageHost`: the address of the storage server (another host, e.g. 127.0.0.2 on Linux, for clients that compare host names). */
  static async start(options: { storageHost?: string } = {}): Promise<HubServer> {
    const hub = new HubServer();
    const hosts = ['127.0.0.1', options.storageHost ?? '127.0.0.1'];
    const urls = await Promise.all(hub.#servers.map((srv, i) => new Promise<string>((resolve) =>
      srv.listen(0, hosts[i], () => resolve(`http://${hosts[i]}:${(srv.address() as AddressInfo).port}`)))));
    [hub.url, hub.cdnUrl] = urls as [string, string];
    return hub;
  }

  async close(): Promise<void> {
    await Promise.all(this.#servers.map((srv) => {
      srv.closeAllConnections();
      return new Promise<void>((resolve) => srv.close(() => resolve()));
    }));
  }

  /**
   * Adds a commit to a repo (`models/owner/name` or `datasets/owner/name`) and points `branch` (and
   * any `tags`) at it. Returns the commit hash.
   */
  addCommit(key: string, files: RepoFiles, options: { branch?: string; tags?: string[]; access?: Repo['access'] } = {}): string {
    let repo = this.#repos.get(key);
    if (!repo) {
      repo = { access: options.access ?? 'public', refs: new Map(), commits: new Map() };
      this.#repos.set(key, repo);
    }
    if (options.access) repo.access = options.access;
    const content = new Map(Object.entries(files).map(([k, v]) => [k, Buffer.isBuffer(v) ? v : Buffer.from(v)]));
    const commit = createHash('sha1').update(key).update(String(repo.commits.size)).update(JSON.stringify([...content.keys()])).digest('hex');
    repo.commits.set(commit, content);
    for (const b of content.values()) this.#blobs.set(sha256(b), b);
    repo.refs.set(options.branch ?? 'main', commit);
    for (const t of options.tags ?? []) repo.refs.set(t, commit);
    return commit;
  }

  /** Requests whose path starts with one of `prefixes`, or all. */
  count(...prefixes: string[]): number {
    return this.requests.filter((r) => prefixes.length === 0 || prefixes.some((p) => r.url.startsWith(p))).length;
  }

  #send(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-length': String(Buffer.byteLength(body)), ...headers });
    res.end(body);
  }

  #error(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
    this.#send(res, status, JSON.stringify({ error: message }), { 'content-type': 'application/json', 'x-error-code': code, ...headers });
  }

  /** The repo and commit a request names, or an error already sent. */
  #lookup(req: IncomingMessage, res: ServerResponse, key: string, rev: string): { repo: Repo; commit: string; files: Map<string, Buffer> } | undefined {
    const repo = this.#repos.get(key);
    const authorized = req.headers.authorization === `Bearer ${this.token}`;
    if (!repo || (repo.access === 'private' && !authorized)) {
      // The Hub says 401 for a repo it will not show an anonymous caller, 404 to an authenticated one.
      this.#error(res, req.headers.authorization ? 404 : 401, 'RepoNotFound', 'Repository not found');
      return undefined;
    }
    if (repo.access === 'gated' && !authorized) {
      this.#error(res, req.headers.authorization ? 403 : 401, 'GatedRepo', 'Access to this repo is restricted: you must be authenticated and accept its conditions');
      return undefined;
    }
    const commit = repo.commits.has(rev) ? rev : repo.refs.get(rev);
    if (!commit) {
      this.#error(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
      return undefined;
    }
    return { repo, commit, files: repo.commits.get(commit)! };
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url!, this.url);
    this.requests.push({ method: req.method!, url: url.pathname, range: req.headers.range, authorization: req.headers.authorization });
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);

    // /api/{models,datasets}/<owner>/<name>/{revision,tree}/<rev>
    if (parts[0] === 'api' && (parts[1] === 'models' || parts[1] === 'datasets')) {
      const key = `${parts[1]}/${parts[2]}/${parts[3]}`;
      const rev = parts.slice(5).join('/');
      const found = this.#lookup(req, res, key, rev);
      if (!found) return;
      const { repo, commit, files } = found;
      if (parts[4] === 'revision') {
        this.#send(res, 200, JSON.stringify({
          _id: key, id: `${parts[2]}/${parts[3]}`, sha: commit, private: repo.access === 'private', gated: repo.access === 'gated' ? 'auto' : false,
          lastModified: '2026-01-01T00:00:00.000Z', siblings: [...files.keys()].map((rfilename) => ({ rfilename })),
        }), { 'content-type': 'application/json' });
        return;
      }
      if (parts[4] === 'tree') {
        const list = [...files.entries()].map(([p, b]) => ({
          type: 'file', path: p, oid: isLfs(p) ? gitOid(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(b)}\nsize ${b.length}\n`)) : gitOid(b),
          size: b.length, ...(isLfs(p) ? { lfs: { oid: sha256(b), size: b.length, pointerSize: 134 } } : {}),
        }));
        this.#send(res, 200, JSON.stringify(list), { 'content-type': 'application/json' });
        return;
      }
    }

    // /cdn/<sha256>: where the Hub redirects LFS downloads
    if (parts[0] === 'cdn') {
      const blob = this.#blobs.get(parts[1]!);
      if (!blob) return this.#error(res, 404, 'EntryNotFound', 'no such object');
      return this.#serveBytes(req, res, blob, parts[2] ?? parts[1]!, {});
    }

    // /[datasets/]<owner>/<name>/resolve/<rev>/<path>
    const ds = parts[0] === 'datasets';
    const p = ds ? parts.slice(1) : parts;
    if (p[2] === 'resolve') {
      const key = `${ds ? 'datasets' : 'models'}/${p[0]}/${p[1]}`;
      const found = this.#lookup(req, res, key, p[3]!);
      if (!found) return;
      const file = p.slice(4).join('/');
      const blob = found.files.get(file);
      // The Hub names the commit on a missing file too (Python records the absence under it).
      if (!blob) return this.#error(res, 404, 'EntryNotFound', `${file} does not exist on "${p[3]}"`, { 'x-repo-commit': found.commit });
      if (isLfs(file)) {
        const h = sha256(blob);
        res.writeHead(302, {
          location: `${this.cdnUrl}/cdn/${h}/${encodeURIComponent(file)}`, 'x-repo-commit': found.commit, 'x-linked-etag': `"${h}"`,
          'x-linked-size': String(blob.length), etag: `"${gitOid(blob)}"`, 'content-length': '0',
        });
        res.end();
        return;
      }
      return this.#serveBytes(req, res, blob, file, { etag: `"${gitOid(blob)}"`, 'x-repo-commit': found.commit });
    }
    this.#error(res, 404, 'NotFound', `no route ${url.pathname}`);
  }

  #serveBytes(req: IncomingMessage, res: ServerResponse, blob: Buffer, file: string, headers: Record<string, string>): void {
    const busy = [...this.busyOnce].find((c) => file.endsWith(c));
    if (busy) {
      this.busyOnce.delete(busy);
      return this.#error(res, 503, '', 'Service unavailable');
    }
    let body = blob;
    if ([...this.corrupt].some((c) => file.endsWith(c))) {
      body = Buffer.from(blob);
      body[body.length >> 1] ^= 0xff;
    }
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      start = Number(m[1]);
      if (start >= body.length) return this.#send(res, 416, '', { 'content-range': `bytes */${body.length}` });
    }
    const slice = body.subarray(start);
    res.writeHead(m ? 206 : 200, {
      ...headers, 'accept-ranges': 'bytes', 'content-length': String(slice.length),
      ...(m ? { 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
    });
    if (req.method === 'HEAD') return void res.end();
    const cut = [...this.cutOnce].find((c) => file.endsWith(c));
    if (cut && slice.length > 1) {
      this.cutOnce.delete(cut);
      // Half the body, then the connection drops, as a flaky network or a killed process leaves it.
      res.write(slice.subarray(0, slice.length >> 1), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    if ([...this.slow].some((c) => file.endsWith(c)) && slice.length > 1) {
      res.write(slice.subarray(0, slice.length >> 1));
      setTimeout(() => res.end(slice.subarray(slice.length >> 1)), 1000);
      return;
    }
    res.end(slice);
  }
}
