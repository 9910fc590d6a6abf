// Tokenizers and chat templates from strangers' files run in a child process with a heap limit,
// and every call has a deadline. tokenizer.json holds regular expressions (pre-tokenizers,
// normalizers, decoders) that can backtrack for ever on an ordinary prompt; a chat template is a
// program (`{% for i in range(1000000000) %}` exhausts V8's heap, which kills the process that runs
// it, uncatchably; nested loops never end). A worker thread's heap limit is not enough: one
// allocation larger than its last 16 MiB of leeway still takes the whole process down. A child
// process dies alone, and one past its deadline is killed.
//
// Calls stay synchronous (encode() returns ids, as before). The caller posts the request to a
// small worker thread that runs no file's code (the proxy) and blocks in Atomics.wait on a shared
// counter; the proxy passes the request to the child over IPC, arms the deadline, and puts the
// reply (or "stopped") on a MessagePort before bumping the counter; the caller takes it with
// receiveMessageOnPort. One child serves every tokenizer of the process; a child that is stopped
// is replaced on the next call and the tokenizers it held are loaded again from their parsed
// files, except the one whose call was stopped: it stays broken, the same input would do the same.
import { createRequire } from 'node:module';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';

/** Limits of the tokenizer process. */
export type SandboxLimits = {
  /** Longest one call (an encode, a decode, a template rendering) may run, in milliseconds. Defaults to `10000`. */
  timeMs: number;
  /** Heap of the tokenizer process, shared by all tokenizers, in MiB (a 128k-token BPE needs a few hundred). Defaults to `2048`. */
  memoryMb: number;
};

export const SANDBOX_DEFAULTS = { timeMs: 10_000, memoryMb: 2048 } as const satisfies SandboxLimits;

/** Extra time the first call to a fresh child may take: it starts Node and loads the two libraries. */
const STARTUP_MS = 15_000;
/** How much longer than a call's deadline the caller waits for the proxy to say so. */
const PROXY_MARGIN_MS = 5_000;

// The child runs this (from a string, as does the proxy: the same source serves the compiled
// package and the TypeScript sources under test).
const CHILD_SOURCE = `
const [tokenizersPath, jinjaPath] = JSON.parse(process.env.JUSTGRPO_TOKENIZER_LIBS);
const { Tokenizer } = require(tokenizersPath);
const { Template } = require(jinjaPath);
const held = new Map();
function run(m) {
  if (m.op === 'load') {
    let tok, template;
    try { tok = new Tokenizer(m.json, m.config); } catch (e) { return { error: String(e && e.message || e), file: 'tokenizer.json' }; }
    try { template = m.template === undefined ? undefined : new Template(m.template); }
    catch (e) { return { error: String(e && e.message || e), file: 'tokenizer_config.json' }; }
    held.set(m.id, { tok, template });
    return { value: true };
  }
  if (m.op === 'free') { held.delete(m.id); return { value: true }; }
  const h = held.get(m.id);
  if (!h) return { error: 'not loaded', file: 'tokenizer.json' };
  try {
    switch (m.op) {
      case 'encode': return { value: h.tok.encode(m.text, { add_special_tokens: m.addSpecialTokens }).ids };
      case 'encodeBatch': return { value: m.texts.map((t) => h.tok.encode(t, { add_special_tokens: m.addSpecialTokens }).ids) };
      case 'encodeChatBatch': return { value: m.contexts.map((c) => h.tok.encode(h.template.render(c), { add_special_tokens: false }).ids) };
      case 'decode': return { value: h.tok.decode(m.ids, { skip_special_tokens: m.skipSpecialTokens }) };
      case 'decodeBatch': return { value: m.idsList.map((ids) => (ids.length ? h.tok.decode(ids, { skip_special_tokens: m.skipSpecialTokens }) : '')) };
      case 'tokenToId': return { value: h.tok.token_to_id(m.token) ?? null };
      case 'idToToken': return { value: h.tok.id_to_token(m.id2) ?? null };
      case 'render': return { value: h.template.render(m.context) };
    }
  } catch (e) {
    return { error: String(e && e.message || e), file: m.op === 'render' || m.op === 'encodeChatBatch' ? 'tokenizer_config.json' : 'tokenizer.json' };
  }
  return { error: 'unknown op ' + m.op, file: 'tokenizer.json' };
}
process.on('message', (m) => {
  let reply;
  try { reply = run(m); } catch (e) { reply = { error: String(e && e.message || e), file: 'tokenizer.json' }; }
  process.send(reply);
});
process.on('disconnect', () => process.exit(0));
`;

// The proxy: one request at a time from the caller to the child, with the deadline; no file's
// code runs here.
const PROXY_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const { spawn } = require('node:child_process');
const { port, counter, childSource, libs, memoryMb } = workerData;
let child = null;
let pending = null;
function reply(r) {
  const p = pending;
  if (!p) return;
  pending = null;
  clearTimeout(p.timer);
  port.postMessage(r);
  Atomics.add(counter, 0, 1);
  Atomics.notify(counter, 0);
}
function stopChild() {
  if (!child) return;
  const c = child;
  child = null;
  c.removeAllListeners('message');
  c.kill('SIGKILL');
}
function start() {
  child = spawn(process.execPath, ['--max-old-space-size=' + memoryMb, '--max-semi-space-size=16', '-e', childSource], {
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    // Its own process group: Ctrl-C in a terminal interrupts the run (which then finishes its step,
    // tokenizing as it goes), not the tokenizer. It still exits when the IPC channel closes.
    detached: true,
    env: { ...process.env, JUSTGRPO_TOKENIZER_LIBS: JSON.stringify(libs), NODE_OPTIONS: '' },
    serialization: 'advanced',
  });
  const c = child;
  c.on('message', (r) => { if (c === child) reply(r); });
  c.on('exit', () => { if (c === child) { child = null; reply({ stopped: true }); } });
  c.on('error', () => { if (c === child) { child = null; reply({ stopped: true }); } });
}
parentPort.on('message', ({ msg, ms }) => {
  if (!child) start();
  pending = { timer: setTimeout(() => { stopChild(); reply({ stopped: true }); }, ms) };
  child.send(msg);
});
`;

/** What a tokenizer holds in the child, kept here so that a fresh child can load it again. */
export type SandboxSpec = { json: Record<string, unknown>; config: Record<string, unknown>; template: string | undefined };

/** A request, and the reply or why there is none. */
export type SandboxRequest =
  | { op: 'encode'; text: string; addSpecialTokens: boolean }
  | { op: 'encodeBatch'; texts: string[]; addSpecialTokens: boolean }
  | { op: 'encodeChatBatch'; contexts: Record<string, unknown>[] }
  | { op: 'decode'; ids: number[]; skipSpecialTokens: boolean }
  | { op: 'decodeBatch'; idsList: number[][]; skipSpecialTokens: boolean }
  | { op: 'tokenToId'; token: string }
  | { op: 'idToToken'; id2: number }
  | { op: 'render'; context: Record<string, unknown> };

export type SandboxReply = { value: unknown } | { error: string; file: 'tokenizer.json' | 'tokenizer_config.json' } | { stopped: true };

class Host {
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #counter: Int32Array;
  readonly #loaded = new Set<number>();
  #fresh = true;
  #dead = false;

  constructor(limits: SandboxLimits) {
    const require = createRequire(import.meta.url);
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    this.#counter = new Int32Array(new SharedArrayBuffer(4));
    const libs = [require.resolve('@huggingface/tokenizers'), require.resolve('@huggingface/jinja')];
    this.#worker = new Worker(PROXY_SOURCE, {
      eval: true,
      workerData: { port: port2, counter: this.#counter, childSource: CHILD_SOURCE, libs, memoryMb: limits.memoryMb },
      transferList: [port2],
    });
    // An idle proxy (and its child) does not keep the process alive.
    this.#worker.unref();
    this.#worker.on('error', () => (this.#dead = true));
    this.#worker.on('exit', () => (this.#dead = true));
  }

  get dead(): boolean {
    return this.#dead;
  }

  loaded(id: number): boolean {
    return this.#loaded.has(id);
  }

  /** Sends `msg` to the child; the proxy replies by `ms` (the child killed if need be). */
  call(msg: Record<string, unknown>, ms: number): SandboxReply {
    if (this.#dead) return { stopped: true };
    const before = Atomics.load(this.#counter, 0);
    const limit = ms + (this.#fresh ? STARTUP_MS : 0);
    this.#worker.postMessage({ msg, ms: limit });
    const deadline = performance.now() + limit + PROXY_MARGIN_MS;
    while (Atomics.load(this.#counter, 0) === before) {
      const left = deadline - performance.now();
      if (left <= 0) {
        this.stop();
        return { stopped: true };
      }
      Atomics.wait(this.#counter, 0, before, left);
    }
    const reply = receiveMessageOnPort(this.#port)?.message as SandboxReply | undefined;
    if (!reply) {
      this.stop();
      return { stopped: true };
    }
    if ('stopped' in reply) {
      // The child is gone and with it every tokenizer it held; the next call starts another.
      this.#loaded.clear();
      this.#fresh = true;
      return reply;
    }
    this.#fresh = false;
    if (msg.op === 'load' && 'value' in reply) this.#loaded.add(msg.id as number);
    if (msg.op === 'free') this.#loaded.delete(msg.id as number);
    return reply;
  }

  stop(): void {
    this.#dead = true;
    void this.#worker.terminate();
    this.#port.close();
  }
}

let host: Host | null = null;
let limits: SandboxLimits = { ...SANDBOX_DEFAULTS };
const specs = new Map<number, SandboxSpec>();
let nextId = 1;
// A tokenizer that is garbage-collected is dropped from the child too.
const registry = new FinalizationRegistry<number>((id) => {
  specs.delete(id);
  if (host && !host.dead && host.loaded(id)) host.call({ op: 'free', id }, limits.timeMs);
});

/** Sets the limits of the tokenizer process (a new heap limit applies from the next process started). */
export function setSandboxLimits(l: Partial<SandboxLimits>): void {
  limits = { ...limits, ...l };
  if (l.memoryMb !== undefined && host) {
    host.stop();
    host = null;
  }
}

export function sandboxLimits(): SandboxLimits {
  return { ...limits };
}

function currentHost(): Host {
  if (!host || host.dead) host = new Host(limits);
  return host;
}

/** A tokenizer in the child process. */
export class SandboxedTokenizer {
  readonly id: number;

  private constructor(id: number) {
    this.id = id;
  }

  /** Loads `spec` into the child; the reply is the library's error, if the files do not load. */
  static create(spec: SandboxSpec): { tokenizer: SandboxedTokenizer } | Exclude<SandboxReply, { value: unknown }> {
    const id = nextId++;
    specs.set(id, spec);
    const t = new SandboxedTokenizer(id);
    const r = t.#load(currentHost());
    if (!('value' in r)) {
      specs.delete(id);
      return r;
    }
    return { tokenizer: t };
  }

  /** Frees the child's copy once `owner` is garbage-collected. */
  bindTo(owner: object): void {
    registry.register(owner, this.id);
  }

  #load(h: Host): SandboxReply {
    const spec = specs.get(this.id)!;
    return h.call({ op: 'load', id: this.id, json: spec.json, config: spec.config, template: spec.template }, limits.timeMs);
  }

  /** One call, within the limits; the child is started (and this tokenizer loaded) when needed. */
  call(req: SandboxRequest): SandboxReply {
    const h = currentHost();
    if (!h.loaded(this.id)) {
      const r = this.#load(h);
      if (!('value' in r)) return r;
    }
    return h.call({ ...req, id: this.id }, limits.timeMs);
  }
}
