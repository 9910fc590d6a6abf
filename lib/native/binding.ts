// The one place that loads the native module; every other file talks to the engine through the
// types below.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import {
  AbortError, CheckpointError, DisposedError, EngineError, InputError, InsufficientMemoryError, JustGRPOError, StorageError,
} from '../errors.js';

/** The normalised model configuration the engine takes (see lib/config.ts). */
export type NativeModelConfig = {
  dModel: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  mlpHiddenSize: number;
  vocabSize: number;
  embeddingSize: number;
  maxSequenceLength: number;
  maskTokenId: number;
  ropeTheta: number;
  rmsNormEps: number;
};

export type NativeDecodeOptions = {
  decoder: 'low_confidence' | 'random' | 'threshold';
  confidence?: 'probability' | 'margin' | 'entropy';
  genLength: number;
  blockLength: number;
  steps?: number;
  temperature?: number;
  threshold?: number;
  cfgScale?: number;
  minNewTokens?: number;
  stopIds?: Int32Array;
};

/** Per sequence s and completion position j at s * genLength + j; transfers at s * maxSteps + step. */
export type NativeDecodeResult = {
  tokens: Int32Array;
  logprobs: Float32Array;
  entropies: Float32Array;
  commitStep: Int32Array;
  nfe: Int32Array;
  transfers: Int32Array;
  maxSteps: number;
  /** Tokens run through the layers over all steps; identical sequences in a step count once. */
  forwardTokens: number;
};

export type NativeDType = 'F32' | 'BF16' | 'F16';

/** Where an engine runs (`deviceInfo()`). */
export type NativeDeviceInfo = {
  backend: 'cpu' | 'cuda';
  device: number;
  name: string;
  /** Bytes of device memory (on the CPU: what this process can still allocate); 0 where not known. */
  totalMemory: number;
  /** CUDA only; empty on the CPU. */
  computeCapability: string;
  /** The compute dtype (on the CPU with BF16, `name` says which oneDNN kernels run the products). */
  dtype: 'F32' | 'BF16';
};

/** Which backend an engine runs on, in which dtype: the CPU (fp32, the reference; or bf16 products) or one GPU (CUDA builds). */
export type NativeEngineOptions = {
  /** Defaults to `'cpu'`. */
  backend?: 'cpu' | 'cuda';
  /** The GPU's index. Defaults to `0`. */
  device?: number;
  /**
   * The compute dtype: on CUDA the weights and activations; on the CPU `'BF16'` runs the matrix
   * products in bf16 through oneDNN (fp32 master weights, the rest in fp32). Defaults to `'BF16'`
   * on CUDA and `'F32'` (the exact reference) on the CPU.
   */
  dtype?: 'BF16' | 'F32';
  /**
   * With `'BF16'` (CPU or CUDA): keep fp32 master weights beside the bf16 copy; `false` holds the
   * weight matrices in bf16 only (inference; a Trainer widens them into masters when made).
   * Ignored in `'F32'`. Defaults to `true`.
   */
  masterWeights?: boolean;
};

/** Bytes an engine holds (`memoryBytes()`); -1 where its backend does not count them. */
export type NativeMemoryBytes = {
  /** fp32 weights: the masters, or on a bf16-only model the norm weights. */
  weightsFp32: number;
  /** bf16 copies of the weight matrices (on a bf16-only model, the weights themselves). */
  weightsBf16: number;
  /** Inference activations and scratch held now (they grow to the largest call). */
  workspace: number;
};

/** One model's parameters and kernels on one backend. Calls that return a Promise run off the event loop. */
export interface NativeEngine {
  paramInfo(): { name: string; shape: number[] }[];
  deviceInfo(): NativeDeviceInfo;
  memoryBytes(): NativeMemoryBytes;
  numParams(): number;
  /** Tokens run through the layers so far, by every call (identical sequences in one batch count once). */
  tokensComputed(): number;
  /** Reads tensors at offsets of a safetensors file whose header was validated; resolves with those holding NaN or infinite values and how many. */
  loadTensors(path: string, tensors: { name: string; offset: number; dtype: NativeDType }[]): Promise<{ name: string; nonFinite: number; numel: number }[]>;
  saveSafetensors(path: string, header: Buffer, tensors: { name: string; dtype: NativeDType }[]): Promise<void>;
  /** Logits (rows.length, embeddingSize) for the listed rows of a packed batch. */
  forward(tokens: Int32Array, seqStarts: Int32Array, rows: Int32Array): Promise<Float32Array>;
  initRandom(seed: number, std: number): Promise<void>;
  /** Block decoding (AR order when blockLength is 1); one forward pass per step. */
  decode(
    prompts: Int32Array,
    promptStarts: Int32Array,
    seeds: Float64Array,
    options: NativeDecodeOptions,
    onProgress?: (committed: number, total: number, canvas: Int32Array) => void,
  ): Promise<NativeDecodeResult>;
  /**
   * log p(targets[r]) at each row of a packed batch, with excludeIds' probability renormalised away
   * (forward only; for a frozen reference policy).
   */
  logprobs(tokens: Int32Array, seqStarts: Int32Array, rows: Int32Array, targets: Int32Array, excludeIds: Int32Array): Promise<Float32Array>;
  /** Makes the running long call stop at its next step and reject with "Aborted". */
  cancel(): void;
  getParam(name: string): Float32Array;
  setParam(name: string, data: Float32Array): void;
  dispose(): void;
}

/** Options of a NativeTrainer. */
export type NativeTrainerOptions = {
  /** Keep only each layer's input and recompute the layer's forward in backward: activation memory of one layer instead of all, for about 30% more arithmetic; results are bit-identical. Defaults to `false`. */
  checkpointActivations?: boolean;
  /**
   * ZeRO-1 from the start: this rank's shard of the AdamW state (see shardOptimizer), so the whole
   * state is never allocated here. Defaults to none (the whole state).
   */
  optimizerShard?: { rank: number; ranks: number };
};

/** One AdamW update (torch.optim.AdamW semantics); every field is required, the caller resolves defaults. */
export type NativeStepOptions = {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled weight decay, applied to the 2-D weight matrices only (embedding, projections, LM head), never to RMSNorm weights. */
  weightDecay: number;
  /** Global L2 norm to clip gradients to; 0 or Infinity disables clipping. */
  maxGradNorm: number;
  /** Drop the whole update (weights, moments, stepCount unchanged) when any gradient is non-finite, instead of zeroing those values. */
  skipNonFinite?: boolean;
};

/** The per-row inputs and settings of the GRPO loss. */
export type NativePolicyLossOptions = {
  oldLogprobs: Float32Array;
  advantages: Float32Array;
  /** Required when beta > 0. */
  refLogprobs?: Float32Array;
  epsilonLow: number;
  epsilonHigh: number;
  beta: number;
  excludeIds: Int32Array;
};

/** Where a row of the GRPO objective landed (the `clipped` array of the policy losses; native/common/loss.h ClipRegion). */
export const ClipRegion = { unclipped: 0, low: 1, high: 2 } as const;

/** Which AdamW moment a tensor entry names: first (`m`, exp_avg) or second (`v`, exp_avg_sq). */
export type NativeMoment = 'm' | 'v';

/**
 * Gradients, AdamW state (fp32) and training workspace for one engine's model. Holds the engine
 * alive and claims it for every call, so training and engine calls never overlap (a second call
 * while one runs is refused). Calls that return a Promise run off the event loop.
 */
export interface NativeTrainer {
  /** Marks the gradients zero; O(1), the next call that uses them zeroes them off the event loop. */
  zeroGrad(): void;
  /**
   * Forward and backward of loss = sum_r weights[r] * -log p(targets[r] | rows[r]) over all
   * embeddingSize logits, for a packed batch (seqStarts: nSeqs + 1 offsets; rows index tokens).
   * Gradients accumulate (+=) until zeroGrad(). logprobs[r] = log p(targets[r]).
   */
  crossEntropyBackward(
    tokens: Int32Array, seqStarts: Int32Array, rows: Int32Array, targets: Int32Array, weights: Float32Array,
  ): Promise<{ loss: number; logprobs: Float32Array }>;
  /** The same loss and logprobs (bit-identical), forward only; gradients are untouched. */
  crossEntropyLoss(
    tokens: Int32Array, seqStarts: Int32Array, rows: Int32Array, targets: Int32Array, weights: Float32Array,
  ): Promise<{ loss: number; logprobs: Float32Array }>;
  /**
   * JustGRPO's clipped-ratio loss per row, fused with the head's log-softmax (excludeIds' logits set
   * to -inf first): loss = sum_r weights[r] * (-min(ratio A, clip(ratio, 1 - epsilonLow, 1 + epsilonHigh) A)
   * + beta * k3(ref, logp)), ratio = exp(logp - oldLogprobs[r]). Forward and backward; gradients
   * accumulate. clipped[r]: the row's ClipRegion.
   */
  policyLossBackward(
    tokens: Int32Array, seqStarts: Int32Array, rows: Int32Array, targets: Int32Array, weights: Float32Array,
    options: NativePolicyLossOptions,
  ): Promise<{ loss: number; logprobs: Float32Array; clipped: Uint8Array }>;
  /** The same, forward only. */
  policyLoss(
    tokens: Int32Array, seqStarts: Int32Array, rows: Int32Array, targets: Int32Array, weights: Float32Array,
    options: NativePolicyLossOptions,
  ): Promise<{ loss: number; logprobs: Float32Array; clipped: Uint8Array }>;
  /**
   * Zeroes and counts non-finite gradient elements, clips to maxGradNorm (gradients are left
   * clipped), increments stepCount and applies AdamW. gradNorm is the global norm before clipping.
   */
  step(options: NativeStepOptions): Promise<{ gradNorm: number; nonFinite: number; clipped: boolean; skipped: boolean }>;
  /**
   * Data parallelism: the gradients summed over every rank of `communicator` in the engine (never
   * through JavaScript; each collective rejects after timeoutSeconds naming the silent rank), then
   * the step with global statistics.
   */
  step(
    options: NativeStepOptions, communicator: NativeCommunicator, timeoutSeconds: number,
  ): Promise<{ gradNorm: number; nonFinite: number; clipped: boolean; skipped: boolean }>;
  /** A copy of one parameter's gradient. */
  getGrad(name: string): Float32Array;
  /** Overwrites one parameter's gradient (same number of elements). */
  setGrad(name: string, data: Float32Array): void;
  /** Copies of one parameter's AdamW moments. */
  getMoments(name: string): { m: Float32Array; v: Float32Array };
  setMoments(name: string, m: Float32Array, v: Float32Array): void;
  /**
   * ZeRO-1: from now on keep the AdamW moments of this rank's equal block of the flat parameter
   * layout only (64-element aligned blocks); before the first step or loadMoments. getMoments then
   * gives zeros outside the shard, setMoments and loadMoments write inside it only, and step() needs
   * the communicator (a reduce-scatter, AdamW on the shard, an all-gather of the weights).
   */
  shardOptimizer(rank: number, ranks: number): void;
  /** The shard set by shardOptimizer, flat layout elements [begin, end); null: the whole state. */
  readonly optimizerShard: { begin: number; end: number; block: number; rank: number; ranks: number } | null;
  /** AdamW updates done so far (bias correction uses stepCount + 1 next); settable to restore a checkpoint. */
  stepCount: number;
  /**
   * Writes a safetensors file: `header` (length prefix included, from buildSafetensorsHeader) then each moment as F32, in order.
   * With a communicator (a sharded optimizer) every rank calls it with the same tensors: each moment is
   * summed over the ranks one parameter at a time and rank 0 alone writes (the others' path is ignored).
   */
  saveMoments(
    path: string | null, header: Buffer, tensors: { name: string; moment: NativeMoment }[],
    communicator?: NativeCommunicator, timeoutSeconds?: number,
  ): Promise<void>;
  /** Reads moments at absolute byte offsets of a safetensors file whose header was validated by readSafetensorsHeader. */
  loadMoments(
    path: string, tensors: { name: string; moment: NativeMoment; offset: number; dtype: NativeDType }[],
  ): Promise<void>;
  /**
   * engine.decode() whose steps also keep their activations, from step 0 on while their total stays
   * within keepBytes, for policyLossBackwardKept. The logits, and so the tokens, are decode()'s.
   */
  rollout(
    prompts: Int32Array,
    promptStarts: Int32Array,
    seeds: Float64Array,
    options: NativeDecodeOptions,
    onProgress: ((committed: number, total: number, canvas: Int32Array) => void) | undefined,
    keepBytes: number,
  ): Promise<NativeDecodeResult>;
  /**
   * policyLossBackward on the batch and rows of the last rollout's step `step`, through its kept
   * activations: no forward pass. One target, weight, old log-prob and advantage per row of the
   * step (the AR rollout: one per sequence, in order). Refused once the weights have changed.
   */
  policyLossBackwardKept(
    step: number, targets: Int32Array, weights: Float32Array, options: NativePolicyLossOptions,
  ): Promise<{ loss: number; logprobs: Float32Array; clipped: Uint8Array }>;
  /** Steps of the last rollout kept (0 once the weights have changed since) and their bytes. */
  keptSteps(): { steps: number; bytes: number };
  /** Frees the kept activations. */
  releaseKept(): void;
  /** Bytes of training workspace crossEntropyBackward needs for this shape (beyond 12 bytes per parameter for gradients and moments). */
  workspaceBytes(nTokens: number, nRows: number): number;
  /** Frees gradients, moments and workspace and releases the engine; later calls throw "Trainer is disposed". */
  dispose(): void;
}

/**
 * MPI's world communicator, from the system's libmpi loaded at run time (Open MPI or MPICH ABI).
 * Every collective waits at most timeoutSeconds; `what` names it in errors.
 */
export interface NativeCommunicator {
  readonly rank: number;
  readonly size: number;
  /** The MPI library and the file it was loaded from. */
  readonly library: string;
  allReduce(data: Float64Array, op: 'sum' | 'max', timeoutSeconds: number, what: string): Promise<Float64Array>;
  /** Sums in place. */
  allReduceF32(data: Float32Array, timeoutSeconds: number, what: string): Promise<void>;
  /**
   * ZeRO-1's collectives as a Training step calls them (MpiGradComm), in place on size equal blocks:
   * reduceScatterF32 leaves in block `rank` the sum over ranks of every rank's block `rank` (the
   * other blocks undefined); allGatherF32 gives every rank each rank's own block.
   */
  reduceScatterF32(data: Float32Array, timeoutSeconds: number): Promise<void>;
  allGatherF32(data: Float32Array, timeoutSeconds: number): Promise<void>;
  /** Root's bytes on every rank (each passes an array of the same length). */
  broadcast(data: Uint8Array, root: number, timeoutSeconds: number, what: string): Promise<Uint8Array>;
  barrier(timeoutSeconds: number, what: string): Promise<void>;
  /** MPI_Abort: every rank ends with `code`. */
  abort(code: number): never;
  finalize(): void;
}

/** Named typed arrays in and out of `testOp`. */
export type NativeTestArrays = Record<string, Float32Array | Int32Array | Float64Array>;

export interface NativeModule {
  /** A model on the backend `options.backend` names (`backends` lists this build's). */
  Engine: new (config: NativeModelConfig, options?: NativeEngineOptions) => NativeEngine;
  /** Present in CUDA builds: the GPUs this process sees and, when none, why (e.g. no driver); NCCL (native/cuda/nccl.h). */
  cuda?: {
    deviceCount(): number;
    unavailableReason(): string;
    runtimeVersion: number;
    /** The NCCL library this process loads (on the first call): "NCCL 2.21.5 (libnccl.so.2)", or why none loads. */
    ncclLibrary(): { loaded: boolean; name: string; error: string };
    /**
     * Test and bench only (bench/gpu, test/gpu/nccl.test.ts), synchronous: NCCL's in-place
     * all-reduce, reduce-scatter and all-gather checked on `device`, then the all-reduce timed at each
     * of `sizes` bytes (busbw = bytes / seconds * 2 (n - 1) / n, GB/s). Without a communicator: one
     * rank, no MPI.
     */
    ncclProbe(options?: { device?: number; communicator?: NativeCommunicator; sizes?: Float64Array; iters?: number; timeoutSeconds?: number }): {
      library: string; rank: number; ranks: number; failures: string[];
      timings: { bytes: number; seconds: number; algbw: number; busbw: number }[];
    };
  };
  /**
   * One op of one backend on small host arrays (test only: the backend parity tests in test/gpu).
   * dtype: the CUDA side's weights and activations (the CPU side computes in fp32).
   */
  testOp(backend: 'cpu' | 'cuda', op: string, dtype: 'F32' | 'BF16', inputs: NativeTestArrays, sizes: Record<string, number>): NativeTestArrays;
  /** The op table (native/common/ops.h), by name: what testOp runs and the parity harness compares. */
  ops: string[];
  Trainer: new (engine: NativeEngine, options?: NativeTrainerOptions) => NativeTrainer;
  /** MPI_COMM_WORLD, initialising MPI on first use (absent in binaries built before data parallelism). */
  Communicator?: new () => NativeCommunicator;
  backends: string[];
  /**
   * Seconds spent in GEMMs and in attention (wall time of those calls) since the clocks last
   * started, and the GEMMs' floating-point operations (2 M N K each) in that time; `true` zeroes and
   * starts them, `false` stops them. For the benchmarks' breakdown.
   */
  opTimes(start: boolean): { gemm: number; attention: number; gemmFlops: number };
  /** OpenBLAS's build configuration and the kernel set it chose for this CPU (absent in builds before it was added). */
  blas?: string;
  /** What runs the CPU's bf16 products ("oneDNN 2.6.3, avx512_core_bf16"), or why nothing can; opens oneDNN. */
  bf16Kernels?: () => string;
}

/** Which native binary was loaded, and why that one. */
export type NativeInfo = {
  /** The `.node` file. */
  path: string;
  /** `local build`: build/Release or build/Debug, which win over prebuilt binaries; `prebuilt`: prebuilds/<platform>-<arch>, shipped in the npm package; `JUSTGRPO_PREBUILD`: the directory that environment variable names. */
  source: 'local build' | 'prebuilt' | 'JUSTGRPO_PREBUILD';
  /** Backends this binary can run (`cpu`, and `cuda` in a CUDA build). */
  backends: string[];
  blas: string;
};

let cached: NativeModule | undefined;
let info: NativeInfo | undefined;

/** Loads the native module: a local build first, then a prebuilt binary (node-gyp-build's order). */
export function native(): NativeModule {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const load = require('node-gyp-build') as { resolve(dir: string): string };
  // OpenBLAS's idle threads spin before they sleep, taking cycles from our kernels that run between
  // GEMMs; the shortest spin (read once, when OpenBLAS starts) measured 10-15% faster training here.
  process.env.OPENBLAS_THREAD_TIMEOUT ??= '4';
  let file: string | undefined;
  try {
    file = load.resolve(root);
    cached = require(file) as NativeModule;
  } catch (err) {
    throw new EngineError(
      `Cannot load the justgrpo native engine ${file ?? `from ${root}`}: ${(err as Error).message.trim()}. ` +
        `Prebuilt binaries cover linux-x64 (glibc); elsewhere build it with \`npm rebuild justgrpo\` ` +
        '(in a checkout: `npm run build:native`), which needs g++, make, python3 and libopenblas-dev.',
      { cause: err },
    );
  }
  const source = process.env.JUSTGRPO_PREBUILD
    ? 'JUSTGRPO_PREBUILD'
    : path.relative(root, file).split(path.sep)[0] === 'build' ? 'local build' : 'prebuilt';
  info = { path: file, source, backends: [...cached.backends], blas: cached.blas ?? 'unknown' };
  return cached;
}

/** Loads the native module if needed and says which binary it is and why it was chosen. */
export function nativeInfo(): NativeInfo {
  native();
  return { ...info!, backends: [...info!.backends] };
}

/**
 * The `code` the engine sets on every error it throws (one per kind of failure, native/common/check.h);
 * `where` (the native file and line that threw) is on the error too, for debugging.
 */
export type NativeErrorCode =
  | 'ERR_JG_INPUT' | 'ERR_JG_OUT_OF_MEMORY' | 'ERR_JG_CHECKPOINT' | 'ERR_JG_STORAGE' | 'ERR_JG_ABORTED'
  | 'ERR_JG_DISPOSED' | 'ERR_JG_BUSY' | 'ERR_JG_UNSUPPORTED' | 'ERR_JG_INTERNAL';

/**
 * The package's error for an error the engine threw, by its code: the one place native errors meet the
 * error classes of lib/errors.ts. Anything else (already ours, or not from the engine) is returned as is;
 * the native error stays reachable as `cause`.
 */
export function fromNative(err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof JustGRPOError) return err;
  const code = (err as { code?: unknown }).code as NativeErrorCode | undefined;
  const msg = err.message;
  switch (code) {
    case 'ERR_JG_INPUT':
      return new InputError(msg, { cause: err });
    case 'ERR_JG_OUT_OF_MEMORY':
      return new InsufficientMemoryError(msg, { cause: err });
    case 'ERR_JG_CHECKPOINT':
      return new CheckpointError(msg, { cause: err });
    case 'ERR_JG_STORAGE':
      return new StorageError(msg, { cause: err });
    case 'ERR_JG_ABORTED':
      return new AbortError();
    case 'ERR_JG_DISPOSED':
      return new DisposedError(/Trainer is disposed/.test(msg) ? 'Trainer' : 'Model');
    case 'ERR_JG_BUSY':
    case 'ERR_JG_UNSUPPORTED':
    case 'ERR_JG_INTERNAL':
      return new EngineError(msg, { cause: err });
    default:
      return err;
  }
}

// The native objects behind the proxies that mapErrors hands out (the Trainer's constructor needs
// the Engine itself).
const unwrapped = new WeakMap<object, object>();

/** `target` with every method call, Promise and accessor throwing the errors fromNative maps to. */
function mapErrors<T extends object>(target: T): T {
  const rethrow = (err: unknown): never => {
    throw fromNative(err);
  };
  const proxy = new Proxy(target, {
    get(t, prop) {
      let value: unknown;
      try {
        value = Reflect.get(t, prop, t);
      } catch (err) {
        rethrow(err);
      }
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        try {
          const r = (value as (...a: unknown[]) => unknown).apply(t, args);
          return r instanceof Promise ? r.catch(rethrow) : r;
        } catch (err) {
          return rethrow(err);
        }
      };
    },
    set(t, prop, v) {
      try {
        return Reflect.set(t, prop, v, t);
      } catch (err) {
        return rethrow(err);
      }
    },
  });
  unwrapped.set(proxy, target);
  return proxy;
}

/** A native engine for `config` on a backend, whose errors are the package's (see fromNative). */
export function createNativeEngine(config: NativeModelConfig, options: NativeEngineOptions = {}): NativeEngine {
  try {
    return mapErrors(new (native().Engine)({ ...config }, options));
  } catch (err) {
    throw fromNative(err);
  }
}

/**
 * MPI's world communicator (MPI starts on the first call); its errors are the package's, with a
 * DistributedError where no MPI library can be loaded.
 */
export function createNativeCommunicator(): NativeCommunicator {
  const ctor = native().Communicator;
  if (!ctor) throw new EngineError('This build of the justgrpo engine has no communicator; rebuild it (npm run build:native)');
  try {
    return mapErrors(new ctor());
  } catch (err) {
    throw fromNative(err);
  }
}

/** The native object behind a proxy made here (native methods that take another native object need it). */
export function unwrapNative<T extends object>(proxy: T): T {
  return (unwrapped.get(proxy) as T | undefined) ?? proxy;
}

/** A native trainer over an engine made by createNativeEngine, whose errors are the package's. */
export function createNativeTrainer(engine: NativeEngine, options: NativeTrainerOptions = {}): NativeTrainer {
  try {
    return mapErrors(new (native().Trainer)((unwrapped.get(engine) ?? engine) as NativeEngine, options));
  } catch (err) {
    throw fromNative(err);
  }
}
