// The one place that loads the native module; every other file talks to the engine through the
// types below.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

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
  remasking: 'low_confidence' | 'random' | 'threshold';
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
};

export type NativeDType = 'F32' | 'BF16' | 'F16';

/** One model's parameters and kernels on one backend. Calls that return a Promise run off the event loop. */
export interface NativeEngine {
  paramInfo(): { name: string; shape: number[] }[];
  numParams(): number;
  loadTensors(path: string, tensors: { name: string; offset: number; dtype: NativeDType }[]): Promise<void>;
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
  /** Makes the running long call stop at its next step and reject with "Aborted". */
  cancel(): void;
  getParam(name: string): Float32Array;
  setParam(name: string, data: Float32Array): void;
  dispose(): void;
}

export interface NativeModule {
  Engine: new (config: NativeModelConfig) => NativeEngine;
  backends: string[];
  ops: string[];
}

let cached: NativeModule | undefined;

/** Loads the native module: a local build first, then a prebuilt binary (node-gyp-build's order). */
export function native(): NativeModule {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const load = require('node-gyp-build') as (dir: string) => unknown;
  try {
    cached = load(root) as NativeModule;
  } catch (err) {
    throw new Error(
      `Cannot load the justgrpo native engine from ${root}: ${(err as Error).message}. ` +
        'Build it with `npm run build:native` (needs g++, make, python3 and libopenblas-dev).',
      { cause: err },
    );
  }
  return cached;
}
