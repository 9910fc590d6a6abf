// A LLaDA-architecture masked diffusion model: a Hugging Face directory in, a native engine
// inside, logits out. The public entry point is `loadModel`.
import path from 'node:path';

import { atomicDirectory, exists, isNonEmptyDirectory, parseJsonText, readRegularFile, replaceFiles, writeFileSynced } from './fsutil.js';
import { parseModelConfig, toRawConfig, type ModelConfig } from './config.js';
import { AbortError, CheckpointError, DisposedError, EngineError, InputError, InsufficientMemoryError, JustGRPOError, expected } from './errors.js';
import { resolveGenerateOptions, sequenceSeed, splitDecodeResult, type GenerateOptions, type GenerateResult } from './generate.js';
import { createNativeEngine, native, type NativeDeviceInfo, type NativeEngine, type NativeMemoryBytes } from './native/binding.js';
import { buildSafetensorsHeader, readSafetensorsHeader, type DType } from './safetensors.js';
import { Tokenizer } from './tokenizer.js';
import type { HubOptions } from './hub/index.js';
import { defaultCudaDevice } from './train/distributed.js';

export type Backend = 'cpu' | 'cuda';

/** Weights and activations on the GPU: bf16 (fp32 accumulation) for speed, fp32 to compare with the CPU backend. */
export type CudaDType = 'BF16' | 'F32';

/**
 * The compute dtype. On the CPU, `'fp32'` is the exact reference path and `'bf16'` runs the matrix
 * products with bf16 inputs and fp32 sums (oneDNN), everything else in fp32, and the weights in bf16
 * (with fp32 master weights beside them for training: `masterWeights`);
 * on CUDA, the weights and activations. The upper-case names are the same dtypes.
 */
export type ComputeDType = 'fp32' | 'bf16' | CudaDType;

export type LoadModelOptions = {
  /** Where the model runs. Defaults to `'cpu'`. */
  backend?: Backend;
  /**
   * CUDA device index (backend `'cuda'` only). Defaults to the rank's local rank under an MPI
   * launcher (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID) modulo the GPUs this process sees, so
   * `mpirun -np <GPUs>` puts one rank on each GPU; `0` otherwise.
   */
  device?: number;
  /**
   * Compute dtype (see ComputeDType): `'bf16'` on the CPU runs the matrix products in bf16 through
   * oneDNN. Defaults to `'fp32'` on the CPU and `'bf16'` on CUDA.
   */
  dtype?: ComputeDType;
  /**
   * With `dtype: 'bf16'` (CPU or CUDA): also keep fp32 master weights beside the bf16 ones (what
   * training updates). Without them the weight matrices live in bf16 only, 2 bytes a parameter
   * (LLaDA-8B in ~16 GB; on the CPU the norm weights stay fp32): a BF16 checkpoint loads as it is, an F32 one is rounded once, and
   * `getParameter`/`save` give the bf16 values (saving as BF16 is lossless). A trainer made on
   * such a model widens the bf16 weights into new masters, so it trains from the bf16 values; to
   * train from an F32 checkpoint's own values, load with masters. Defaults to `false` (the
   * training commands load with masters).
   */
  masterWeights?: boolean;
  /** For a Hub id: the branch, tag or commit (overrides `owner/name@revision`). Defaults to `'main'`. */
  revision?: string;
  /** For a Hub id: endpoint, token, cache, offline mode, download progress. Defaults to the environment (HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE, HF_HUB_OFFLINE). */
  hub?: HubOptions;
  /**
   * Load weights that hold NaN or infinite values (for debugging a broken checkpoint); without it
   * such weights are refused by tensor name, since every logit they touch is NaN. Defaults to `false`.
   */
  allowNonFinite?: boolean;
};

export type CallOptions = {
  /** Rejects the call with AbortError when aborted (before it starts, or drops its result). Defaults to none. */
  signal?: AbortSignal;
};

export type SaveOptions = {
  /** Weight dtype on disk. Defaults to the dtype the model was loaded in (`'F32'` for new models). */
  dtype?: DType;
  /** Largest shard in bytes; larger models are split with a model.safetensors.index.json. Defaults to 5 GiB. */
  maxShardBytes?: number;
};

export type RandomModelOptions = {
  /** Seed of the weights. Defaults to `0`. */
  seed?: number;
  /** Standard deviation of the normal initialisation of matrices. Defaults to `0.02`. */
  initStd?: number;
  /** Files written beside the weights by `save` (e.g. tokenizer.json), by name. Defaults to none. */
  files?: Record<string, string>;
  /** A tokenizer for `model.tokenizer`. Defaults to none. */
  tokenizer?: Tokenizer;
  /**
   * Where the model runs. Defaults to `'cpu'`. On `'cuda'` the weights are drawn on the device from
   * another generator than the CPU's, so the same seed gives different (equally distributed) weights.
   */
  backend?: Backend;
  /**
   * CUDA device index (backend `'cuda'` only). Defaults to the rank's local rank under an MPI
   * launcher (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID) modulo the GPUs this process sees, so
   * `mpirun -np <GPUs>` puts one rank on each GPU; `0` otherwise.
   */
  device?: number;
  /** Compute dtype, as for loadModel. Defaults to `'fp32'` on the CPU and `'bf16'` on CUDA. */
  dtype?: ComputeDType;
  /** As for loadModel: with `dtype: 'bf16'`, keep fp32 masters (on the CPU the matrices are drawn in fp32 either way, then rounded; on CUDA the masters start from the drawn bf16 values). Defaults to `false`. */
  masterWeights?: boolean;
};

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];
const WEIGHTS_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';
/** The weight files `save` writes: model.safetensors, or shards and their index. */
const WEIGHT_FILE_RE = /^model(-\d{5}-of-\d{5})?\.safetensors$|^model\.safetensors\.index\.json$/;
/** config.json and the shard index are small (an 8B model's index is ~30 KB); a larger one is refused unread. */
const MAX_JSON_BYTES = 64 * 1024 * 1024;

/** What the training code needs of a model beyond the public surface; not exported from the package. */
export type ModelInternals = {
  engine: NativeEngine;
  /** Runs a native call in the model's queue (one call at a time, in order). */
  run: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Writes the model's Hugging Face files into an existing directory. */
  writeInto: (dir: string, dtype?: DType) => Promise<void>;
  stopTokenIds: () => number[];
  /** generate() with another native decode call in place of the engine's (the trainer's rollout). */
  generate: (prompts: number[][], options: GenerateOptions, decode: NativeEngine['decode']) => Promise<GenerateResult>;
};

export const internals = new WeakMap<LladaModel, ModelInternals>();

export class LladaModel {
  readonly #engine: NativeEngine;
  readonly #config: ModelConfig;
  readonly #rawConfig: Record<string, unknown>;
  readonly #tokenizer: Tokenizer | undefined;
  readonly #files: Record<string, string>;
  readonly #dtype: DType;
  readonly #source: string;
  readonly #backend: Backend;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;

  private constructor(args: {
    engine: NativeEngine;
    config: ModelConfig;
    rawConfig: Record<string, unknown>;
    tokenizer: Tokenizer | undefined;
    files: Record<string, string>;
    dtype: DType;
    source: string;
    backend?: Backend;
  }) {
    this.#engine = args.engine;
    this.#config = args.config;
    this.#rawConfig = args.rawConfig;
    this.#tokenizer = args.tokenizer;
    this.#files = args.files;
    this.#dtype = args.dtype;
    this.#source = args.source;
    this.#backend = args.backend ?? 'cpu';
    internals.set(this, {
      engine: this.#engine,
      run: (fn) => this.#run(fn),
      writeInto: (dir, dtype) => this.#writeInto(dir, dtype ?? this.#dtype, 5 * 1024 ** 3),
      stopTokenIds: () => this.#stopTokenIds(),
      generate: (prompts, options, decode) => this.#generate(prompts, options, decode),
    });
  }

  /** Loads a Hugging Face LLaDA directory: config.json, model.safetensors (or shards), tokenizer files. */
  static async load(dir: string, options: LoadModelOptions = {}): Promise<LladaModel> {
    if (typeof dir !== 'string') throw expected('a directory path', 'dir', dir);
    const backend = options.backend ?? 'cpu';
    checkBackend(backend);
    const configFile = path.join(dir, 'config.json');
    const rawConfig = await readJsonFile(configFile);
    const config = parseModelConfig(rawConfig, configFile);
    const engine = createEngine(config, options, configFile);
    try {
      const { dtype, nonFinite } = await loadWeights(engine, dir);
      if (!options.allowNonFinite) refuseNonFinite(nonFinite, dir);
      const files: Record<string, string> = {};
      for (const name of TOKENIZER_FILES) {
        try {
          files[name] = await readRegularFile(path.join(dir, name));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new CheckpointError(`Cannot read ${path.join(dir, name)}: ${(err as Error).message}`);
        }
      }
      const tokenizer = files['tokenizer.json'] === undefined ? undefined : await Tokenizer.load(dir);
      return new LladaModel({ engine, config, rawConfig, tokenizer, files, dtype, source: dir, backend });
    } catch (err) {
      engine.dispose();
      throw err;
    }
  }

  /** A model with random weights (normal(0, initStd) matrices, unit norm weights), deterministic per seed. */
  static async random(config: ModelConfig, options: RandomModelOptions = {}): Promise<LladaModel> {
    const backend = options.backend ?? 'cpu';
    checkBackend(backend);
    const engine = createEngine(config, options);
    try {
      await engine.initRandom(options.seed ?? 0, options.initStd ?? 0.02);
    } catch (err) {
      engine.dispose();
      throw err;
    }
    return new LladaModel({
      engine,
      config,
      rawConfig: toRawConfig(config),
      tokenizer: options.tokenizer,
      files: { ...options.files },
      dtype: 'F32',
      source: '(random)',
      backend,
    });
  }

  /** The normalised configuration. */
  get config(): ModelConfig {
    return this.#config;
  }

  /** The tokenizer of the model directory; throws if the directory has no tokenizer.json. */
  get tokenizer(): Tokenizer {
    this.#check();
    if (!this.#tokenizer) throw new CheckpointError(`${this.#source} has no tokenizer.json`);
    return this.#tokenizer;
  }

  /** Whether the model directory has a tokenizer (`model.tokenizer` throws otherwise). */
  get hasTokenizer(): boolean {
    return this.#tokenizer !== undefined;
  }

  get backend(): Backend {
    return this.#backend;
  }

  /** Where the model runs and its compute dtype ('BF16' on the CPU: `name` says which oneDNN kernels run the products). */
  deviceInfo(): NativeDeviceInfo {
    this.#check();
    return this.#engine.deviceInfo();
  }

  /**
   * Bytes the model holds: its fp32 weights (masters, or only the norm weights of a bf16-only
   * model), its bf16 weights, and the inference workspace grown so far. The memory plan of a
   * model is `weightsFp32 + weightsBf16` plus the activations of the largest call.
   */
  memoryBytes(): NativeMemoryBytes {
    this.#check();
    return this.#engine.memoryBytes();
  }

  /** Number of parameters. */
  get numParams(): number {
    this.#check();
    return this.#engine.numParams();
  }

  /** Names and shapes of the parameters, in LLaDA's tensor names. */
  parameterInfo(): { name: string; shape: number[] }[] {
    this.#check();
    return this.#engine.paramInfo();
  }

  /** A copy of one parameter tensor (fp32). */
  async getParameter(name: string): Promise<Float32Array> {
    return this.#run(async () => this.#engine.getParam(name));
  }

  /** Overwrites one parameter tensor (fp32, same number of elements). */
  async setParameter(name: string, data: Float32Array): Promise<void> {
    return this.#run(async () => this.#engine.setParam(name, data));
  }

  /**
   * Logits for every position of a batch of equal-length sequences: fp32, shape [B, T, embeddingSize],
   * row-major. Sequences of different lengths go through `logitsAt`.
   */
  async logits(ids: number[][], options: CallOptions = {}): Promise<Float32Array> {
    this.#check();
    checkBatch(ids, this.#config);
    const T = ids[0]!.length;
    if (!ids.every((row) => row.length === T))
      throw new InputError('Expected sequences of equal length for `ids` (use logitsAt for sequences of different lengths)');
    return this.logitsAt(ids, ids.map(() => Array.from({ length: T }, (_, t) => t)), options);
  }

  /**
   * Logits at chosen positions of sequences that may differ in length; each sequence sees exactly the
   * input it would see alone. Returns fp32 [sum of positions.length, embeddingSize], sequence by sequence.
   * The LM head runs only for the chosen rows.
   */
  async logitsAt(ids: number[][], positions: number[][], options: CallOptions = {}): Promise<Float32Array> {
    this.#check();
    checkBatch(ids, this.#config);
    if (!Array.isArray(positions) || positions.length !== ids.length)
      throw expected(`an array of ${ids.length} position lists`, 'positions', positions);
    const starts = new Int32Array(ids.length + 1);
    for (let b = 0; b < ids.length; b++) starts[b + 1] = starts[b]! + ids[b]!.length;
    const tokens = new Int32Array(starts[ids.length]!);
    ids.forEach((row, b) => tokens.set(row, starts[b]!));
    const rows: number[] = [];
    positions.forEach((list, b) => {
      for (const p of list) {
        if (!Number.isInteger(p) || p < 0 || p >= ids[b]!.length)
          throw expected(`positions in [0, ${ids[b]!.length})`, `positions[${b}]`, p);
        rows.push(starts[b]! + p);
      }
    });
    const { signal } = options;
    if (signal?.aborted) throw new AbortError();
    // One forward pass is not interrupted; an abort while it is queued or running rejects the call
    // (it is not started, or its result is dropped) and leaves the model usable.
    return this.#run(async () => {
      if (signal?.aborted) throw new AbortError();
      const out = await this.#engine.forward(tokens, starts, Int32Array.from(rows));
      if (signal?.aborted) throw new AbortError();
      return out;
    });
  }

  /**
   * Generates completions: the AR-order rollout (`decoder: 'ar'`, JustGRPO's sampler) or a parallel
   * unmasking decoder. `prompts` is one prompt or several (of any lengths; each sequence sees exactly
   * the input it would see alone). One native loop, one forward pass per step, no KV cache.
   */
  async generate(prompts: number[] | number[][], options: GenerateOptions = {}): Promise<GenerateResult> {
    const list = Array.isArray(prompts[0]) ? (prompts as number[][]) : [prompts as number[]];
    return this.#generate(list, options, (...args) => this.#engine.decode(...args));
  }

  async #generate(list: number[][], options: GenerateOptions, decode: NativeEngine['decode']): Promise<GenerateResult> {
    this.#check();
    checkBatch(list, this.#config);
    const { native: opts, numSamples, seed } = resolveGenerateOptions(options, this.#stopTokenIds());
    const longest = Math.max(...list.map((p) => p.length));
    if (longest + opts.genLength > this.#config.maxSequenceLength)
      throw new InputError(
        `A prompt of ${longest} tokens plus genLength ${opts.genLength} exceeds the model's maximum length ${this.#config.maxSequenceLength}`,
      );
    const rows = list.length * numSamples;
    const starts = new Int32Array(rows + 1);
    const seeds = new Float64Array(rows);
    list.forEach((p, i) => {
      for (let g = 0; g < numSamples; g++) {
        const r = i * numSamples + g;
        starts[r + 1] = starts[r]! + p.length;
        seeds[r] = sequenceSeed(seed, i, g);
      }
    });
    const packed = new Int32Array(starts[rows]!);
    list.forEach((p, i) => {
      for (let g = 0; g < numSamples; g++) packed.set(p, starts[i * numSamples + g]!);
    });
    const { signal, onProgress } = options;
    // The engine reports progress through a thread-safe function whose last call can reach the
    // event loop after the decode settled; from then on (the caller may have disposed the model)
    // progress is dropped.
    let settled = false;
    const progress = onProgress && ((done: number, total: number, canvas: Int32Array) => {
      if (!settled) onProgress(done / total, canvas);
    });
    return this.#run(async () => {
      if (signal?.aborted) throw new AbortError();
      const cancel = () => this.#engine.cancel();
      signal?.addEventListener('abort', cancel);
      const t0 = performance.now();
      try {
        const r = await decode(packed, starts, seeds, opts, progress);
        return splitDecodeResult(r, rows, opts.genLength, performance.now() - t0);
      } finally {
        settled = true;
        signal?.removeEventListener('abort', cancel);
      }
    });
  }

  /** The text of a completion: up to the first end-of-text / end-of-turn token, special tokens removed. */
  completionText(tokens: readonly number[]): string {
    const stops = new Set(this.#stopTokenIds());
    const end = tokens.findIndex((t) => stops.has(t));
    return this.tokenizer.decode(end < 0 ? tokens : tokens.slice(0, end), { skipSpecialTokens: true });
  }

  // End-of-text and end-of-turn ids: the config's eos and the tokenizer's <|eot_id|> / <|endoftext|>.
  #stopTokenIds(): number[] {
    const ids = new Set<number>();
    if (this.#config.eosTokenId !== null) ids.add(this.#config.eosTokenId);
    for (const t of ['<|eot_id|>', '<|endoftext|>']) {
      const id = this.#tokenizer?.tokenToId(t);
      if (id !== undefined) ids.add(id);
    }
    return [...ids];
  }

  /**
   * Writes the model as a Hugging Face directory (config.json, weights, tokenizer files). A new (or
   * empty) `dir` appears whole: written as a temporary sibling, then renamed. In an existing
   * directory, as save_pretrained does, only the files this writes are replaced, each atomically;
   * other files stay, except an earlier save's weight files this one does not write (stale shards
   * or a model.safetensors that would be loaded instead of the new weights).
   */
  async save(dir: string, options: SaveOptions = {}): Promise<void> {
    this.#check();
    if (typeof dir !== 'string' || dir === '') throw expected('a directory path', 'dir', dir);
    const dtype = options.dtype ?? this.#dtype;
    if (!['F32', 'BF16', 'F16'].includes(dtype)) throw expected("'F32', 'BF16' or 'F16'", 'dtype', dtype);
    const write = (tmp: string) => this.#writeInto(tmp, dtype, options.maxShardBytes ?? 5 * 1024 ** 3);
    if (!(await isNonEmptyDirectory(dir))) return atomicDirectory(dir, write);
    try {
      await replaceFiles(path.resolve(dir), write, (name) => WEIGHT_FILE_RE.test(name));
    } catch (err) {
      if (err instanceof JustGRPOError) throw err;
      throw new CheckpointError(`Cannot save the model into ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }

  // The files of a Hugging Face directory, into an existing (temporary) directory.
  async #writeInto(dir: string, dtype: DType, maxShard: number): Promise<void> {
    await writeFileSynced(path.join(dir, 'config.json'), JSON.stringify(this.#rawConfig, null, 2) + '\n');
    for (const [name, text] of Object.entries(this.#files)) await writeFileSynced(path.join(dir, name), text);
    const shards = splitShards(this.#engine.paramInfo(), dtype, maxShard);
    const weightMap: Record<string, string> = {};
    let total = 0;
    for (let i = 0; i < shards.length; i++) {
      const file = shards.length === 1 ? WEIGHTS_FILE : `model-${pad5(i + 1)}-of-${pad5(shards.length)}.safetensors`;
      const entries = shards[i]!.map((p) => ({ name: p.name, dtype, shape: p.shape }));
      const { header, dataBytes } = buildSafetensorsHeader(entries);
      total += dataBytes;
      for (const e of entries) weightMap[e.name] = file;
      await this.#run(() => this.#engine.saveSafetensors(path.join(dir, file), header, entries));
    }
    if (shards.length > 1)
      await writeFileSynced(
        path.join(dir, INDEX_FILE),
        JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n',
      );
  }

  /** Frees the native memory; later calls throw DisposedError. Waits for a running call to finish. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await this.#queue.catch(() => {});
    this.#engine.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #check(): void {
    if (this.#disposed) throw new DisposedError('Model');
  }

  // Native calls on one model run one at a time, in call order.
  #run<T>(fn: () => Promise<T>): Promise<T> {
    this.#check();
    const result = this.#queue.then(fn);
    this.#queue = result.catch(() => {});
    return result;
  }
}

/**
 * Loads a Hugging Face LLaDA model: a local directory (see `LladaModel.load`), or a Hub id
 * `owner/name[@revision]` fetched into the Hugging Face cache first (see `resolveModelDir`). A path
 * that exists on disk always wins over a Hub id.
 */
export async function loadModel(dirOrHubId: string, options: LoadModelOptions = {}): Promise<LladaModel> {
  if (typeof dirOrHubId !== 'string') throw expected('a directory path or a Hub id `owner/name`', 'dir', dirOrHubId);
  // The Hub client is loaded only for what is not a local directory: loading from disk needs none of
  // its packages (bench/gpu carries only those local loading imports to the GPU machine).
  const dir = (await exists(dirOrHubId))
    ? dirOrHubId
    : await (await import('./hub/model.js')).resolveModelDir(dirOrHubId, { ...options.hub, revision: options.revision });
  return LladaModel.load(dir, options);
}

/** A ComputeDType as the engine names it. */
export function nativeDType(dtype: unknown): CudaDType {
  if (dtype === 'bf16' || dtype === 'BF16') return 'BF16';
  if (dtype === 'fp32' || dtype === 'F32') return 'F32';
  throw expected("'fp32' or 'bf16'", 'dtype', dtype);
}

function checkBackend(backend: string): void {
  if (backend !== 'cpu' && backend !== 'cuda') throw expected("'cpu' or 'cuda'", 'backend', backend);
  const n = native();
  if (!n.backends.includes(backend))
    throw new InputError(
      `Backend '${backend}' is not in this build (available: ${n.backends.join(', ')})` +
        (backend === 'cuda' ? '; build the CUDA engine with `npm run build:cuda`' : ''),
    );
  if (backend === 'cuda' && n.cuda && n.cuda.deviceCount() === 0)
    throw new EngineError(`Backend 'cuda' has no GPU to run on: ${n.cuda.unavailableReason()}`);
}

/** The engine for a config on its backend; `source` (the config.json it came from) prefixes errors. */
function createEngine(
  config: ModelConfig,
  options: { backend?: Backend; device?: number; dtype?: ComputeDType; masterWeights?: boolean } = {},
  source?: string,
): NativeEngine {
  const backend = options.backend ?? 'cpu';
  const device = options.device ?? (backend === 'cuda' ? defaultCudaDevice(native().cuda?.deviceCount() ?? 0) : 0);
  if (!Number.isInteger(device) || device < 0) throw expected('a device index >= 0', 'device', device);
  const dtype = nativeDType(options.dtype ?? (backend === 'cpu' ? 'fp32' : 'bf16'));
  const masterWeights = options.masterWeights ?? false;
  if (typeof masterWeights !== 'boolean') throw expected('a boolean', 'masterWeights', masterWeights);
  try {
    return createNativeEngine(config, backend === 'cpu' ? { backend, dtype, masterWeights } : { backend, device, dtype, masterWeights });
  } catch (err) {
    if (source && err instanceof InsufficientMemoryError)
      throw new InsufficientMemoryError(`${source}: the model does not fit: ${err.message.replace(/^Engine: /, '')}`, { cause: err });
    if (source && (err instanceof InputError || err instanceof EngineError))
      throw new CheckpointError(`${source}: ${err.message.replace(/^Engine: /, '')}`, { cause: err });
    throw err;
  }
}

function checkBatch(ids: unknown, config: ModelConfig): asserts ids is number[][] {
  if (!Array.isArray(ids) || ids.length === 0) throw expected('a non-empty array of token id arrays', 'ids', ids);
  ids.forEach((row: unknown, b) => {
    if (!Array.isArray(row) || row.length === 0) throw expected('a non-empty array of token ids', `ids[${b}]`, row);
    if (row.length > config.maxSequenceLength)
      throw new InputError(
        `Sequence ids[${b}] has ${row.length} tokens but the model allows at most ${config.maxSequenceLength} (max_sequence_length)`,
      );
    for (let t = 0; t < row.length; t++) {
      const id = row[t];
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize)
        throw expected(`a token id in [0, ${config.vocabSize})`, `ids[${b}][${t}]`, id);
    }
  });
}

async function readJsonFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readRegularFile(file, MAX_JSON_BYTES);
  } catch (err) {
    throw new CheckpointError(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = parseJsonText(text);
  } catch (err) {
    throw new CheckpointError(`${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new CheckpointError(`${file} must hold a JSON object`);
  return value as Record<string, unknown>;
}

/** The weight files of a directory: model.safetensors, or the shards its index names. */
async function weightFiles(dir: string): Promise<{ files: string[]; weightMap?: Map<string, string> }> {
  const indexFile = path.join(dir, INDEX_FILE);
  if (await exists(path.join(dir, WEIGHTS_FILE))) return { files: [path.join(dir, WEIGHTS_FILE)] };
  if (!(await exists(indexFile)))
    throw new CheckpointError(`${dir} has neither ${WEIGHTS_FILE} nor ${INDEX_FILE}`);
  const index = await readJsonFile(indexFile);
  const map = index.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map))
    throw new CheckpointError(`${indexFile}: \`weight_map\` must be an object of tensor name -> file name`);
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== 'string' || file !== path.basename(file) || file.startsWith('.'))
      throw new CheckpointError(`${indexFile}: tensor ${name} maps to ${JSON.stringify(file)}, not a file name in the directory`);
    weightMap.set(name, path.join(dir, file));
  }
  return { files: [...new Set(weightMap.values())], weightMap };
}

/** Reads every parameter from the directory's weights; returns the dtype they were stored in and the tensors that hold NaN or infinite values (the engine counts them as it loads). */
async function loadWeights(engine: NativeEngine, dir: string): Promise<{ dtype: DType; nonFinite: { name: string; nonFinite: number; numel: number }[] }> {
  const expectedParams = new Map(engine.paramInfo().map((p) => [p.name, p.shape]));
  const { files, weightMap } = await weightFiles(dir);
  const loaded = new Map<string, string>();
  const dtypes = new Set<DType>();
  const nonFinite: { name: string; nonFinite: number; numel: number }[] = [];
  for (const file of files) {
    const header = await readSafetensorsHeader(file);
    const items: { name: string; offset: number; dtype: DType }[] = [];
    for (const t of header.tensors.values()) {
      const shape = expectedParams.get(t.name);
      if (!shape) throw new CheckpointError(`${file}: unexpected tensor ${t.name} (not part of a LLaDA model with this config.json)`);
      if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i]))
        throw new CheckpointError(`${file}: tensor ${t.name} has shape [${t.shape}] but config.json implies [${shape}]`);
      if (t.dtype !== 'F32' && t.dtype !== 'BF16' && t.dtype !== 'F16')
        throw new CheckpointError(`${file}: tensor ${t.name} has dtype ${t.dtype}; supported are F32, BF16 and F16`);
      if (loaded.has(t.name)) throw new CheckpointError(`Tensor ${t.name} appears in both ${loaded.get(t.name)} and ${file}`);
      if (weightMap && weightMap.get(t.name) !== file)
        throw new CheckpointError(`${file}: tensor ${t.name} is not where ${INDEX_FILE} says (${weightMap.get(t.name) ?? 'not listed'})`);
      loaded.set(t.name, file);
      dtypes.add(t.dtype);
      items.push({ name: t.name, offset: t.offset, dtype: t.dtype });
    }
    try {
      nonFinite.push(...(await engine.loadTensors(file, items)));
    } catch (err) {
      throw new CheckpointError(`${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  const missing = [...expectedParams.keys()].filter((n) => !loaded.has(n));
  if (missing.length > 0)
    throw new CheckpointError(`${dir}: missing tensor ${missing[0]}${missing.length > 1 ? ` and ${missing.length - 1} more` : ''}`);
  return { dtype: dtypes.size === 1 ? [...dtypes][0]! : 'F32', nonFinite };
}

/**
 * Refuses weights with NaN or infinite values, naming the first such tensor: they load without
 * complaint and make every logit NaN (generate() then returns token 0 everywhere).
 */
function refuseNonFinite(bad: { name: string; nonFinite: number; numel: number }[], dir: string): void {
  if (bad.length === 0) return;
  const { name, nonFinite: n, numel } = bad[0]!;
  throw new CheckpointError(
    `${dir}: tensor ${name} has ${n} non-finite value${n > 1 ? 's' : ''} (of ${numel})${bad.length > 1 ? `; ${bad.length - 1} more tensors too` : ''}: ` +
      'the weights are broken (pass allowNonFinite: true to load them anyway for debugging)',
  );
}

function splitShards<T extends { shape: number[] }>(params: T[], dtype: DType, maxBytes: number): T[][] {
  const bytesPer = dtype === 'F32' ? 4 : 2;
  const shards: T[][] = [[]];
  let size = 0;
  for (const p of params) {
    const bytes = p.shape.reduce((a, b) => a * b, 1) * bytesPer;
    if (size > 0 && size + bytes > maxBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push(p);
    size += bytes;
  }
  return shards;
}

const pad5 = (n: number) => String(n).padStart(5, '0');
