// Engines, trainers and the PyTorch training fixtures (test/reference/fixtures/*/train.json,
// grads.safetensors) for the training tests.
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { parseModelConfig, readSafetensorsHeader, type ModelConfig } from '../../lib/index.js';
import {
  native, type NativeDType, type NativeEngine, type NativeEngineOptions, type NativeModelConfig, type NativeStepOptions, type NativeTrainer,
} from '../../lib/native/binding.js';
import { FIXTURES } from './fixtures.js';

export const TRAIN_MODELS = ['mha_f32', 'gqa_f32'] as const;

/** A packed batch with selected rows, as crossEntropyBackward takes it. */
export type RowBatch = {
  tokens: Int32Array;
  seqStarts: Int32Array;
  rows: Int32Array;
  targets: Int32Array;
  weights: Float32Array;
};

export type TrainCase = {
  batch: RowBatch;
  loss: number;
  logprobs: number[];
  grads: Map<string, Float32Array>;
  adamw: NativeStepOptions & { steps: number; losses: number[]; gradNorms: number[] };
};

export function packBatch(seqs: number[][], rows: number[], targets: number[], weights: number[]): RowBatch {
  const seqStarts = new Int32Array(seqs.length + 1);
  seqs.forEach((s, i) => (seqStarts[i + 1] = seqStarts[i]! + s.length));
  return {
    tokens: Int32Array.from(seqs.flat()),
    seqStarts,
    rows: Int32Array.from(rows),
    targets: Int32Array.from(targets),
    weights: Float32Array.from(weights),
  };
}

/** An engine holding a fixture model's weights (on the CPU in fp32 unless `options` says otherwise). */
export async function fixtureEngine(name: string, options: NativeEngineOptions = {}): Promise<{ engine: NativeEngine; config: ModelConfig }> {
  const dir = path.join(FIXTURES, name);
  const configFile = path.join(dir, 'config.json');
  const config = parseModelConfig(JSON.parse(readFileSync(configFile, 'utf8')), configFile);
  const engine = new (native().Engine)({ ...config }, options);
  const file = path.join(dir, 'model.safetensors');
  const header = await readSafetensorsHeader(file);
  await engine.loadTensors(
    file,
    [...header.tensors.values()].map((t) => ({ name: t.name, offset: t.offset, dtype: t.dtype as NativeDType })),
  );
  return { engine, config };
}

/** Reads every F32 tensor of a (small) safetensors file. */
export async function readF32Tensors(file: string): Promise<Map<string, Float32Array>> {
  const header = await readSafetensorsHeader(file);
  const bytes = readFileSync(file);
  const out = new Map<string, Float32Array>();
  for (const t of header.tensors.values()) {
    if (t.dtype !== 'F32') throw new Error(`${file}: ${t.name} is ${t.dtype}, expected F32`);
    out.set(t.name, new Float32Array(bytes.buffer.slice(bytes.byteOffset + t.offset, bytes.byteOffset + t.offset + t.byteLength)));
  }
  return out;
}

/** |a - b| relative to the larger of the two. */
export const relDiff = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-30);

/** The largest relative difference ||a - b|| / ||a|| over the tensors of two safetensors files (the same names in both, checked). */
export async function tensorsRelDiff(fileA: string, fileB: string): Promise<number> {
  const a = await readF32Tensors(fileA), b = await readF32Tensors(fileB);
  const names = (m: Map<string, Float32Array>) => [...m.keys()].sort().join(',');
  if (names(a) !== names(b)) throw new Error(`${fileA} and ${fileB} hold different tensors: ${names(a)} against ${names(b)}`);
  let worst = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    let d = 0, n = 0;
    for (let i = 0; i < x.length; i++) {
      d += (x[i]! - y[i]!) ** 2;
      n += x[i]! ** 2;
    }
    worst = Math.max(worst, Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-30));
  }
  return worst;
}

export async function trainCase(name: string): Promise<TrainCase> {
  const dir = path.join(FIXTURES, name);
  const spec = JSON.parse(readFileSync(path.join(dir, 'train.json'), 'utf8')) as {
    batch: { seqs: number[][]; rows: number[]; targets: number[]; weights: number[] };
    loss: number;
    logprobs: number[];
    grads: string;
    adamw: { steps: number; lr: number; betas: [number, number]; eps: number; weight_decay: number;
      max_grad_norm: number; losses: number[]; grad_norms: number[] };
  };
  const b = spec.batch;
  const a = spec.adamw;
  return {
    batch: packBatch(b.seqs, b.rows, b.targets, b.weights),
    loss: spec.loss,
    logprobs: spec.logprobs,
    grads: await readF32Tensors(path.join(dir, spec.grads)),
    adamw: {
      steps: a.steps, lr: a.lr, beta1: a.betas[0], beta2: a.betas[1], eps: a.eps, weightDecay: a.weight_decay,
      maxGradNorm: a.max_grad_norm, losses: a.losses, gradNorms: a.grad_norms,
    },
  };
}

/** Arguments of crossEntropyBackward / crossEntropyLoss in order. */
export function args(b: RowBatch): [Int32Array, Int32Array, Int32Array, Int32Array, Float32Array] {
  return [b.tokens, b.seqStarts, b.rows, b.targets, b.weights];
}

/** A random model's engine (normal(0, std) matrices, unit norm weights), deterministic per seed. */
export async function randomEngine(config: Partial<NativeModelConfig> = {}, seed = 1, std = 0.1): Promise<NativeEngine> {
  const engine = new (native().Engine)({
    dModel: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, mlpHiddenSize: 160, vocabSize: 100, embeddingSize: 104,
    maxSequenceLength: 64, maskTokenId: 99, ropeTheta: 10000, rmsNormEps: 1e-5, ...config,
  });
  await engine.initRandom(seed, std);
  return engine;
}

/** A masked batch of nSeqs sequences of `len` tokens with about half the positions selected, from a seeded generator. */
export function randomBatch(nSeqs: number, len: number, vocab: number, mask: number, seed = 7): RowBatch {
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const seqs: number[][] = [], rows: number[] = [], targets: number[] = [], weights: number[] = [];
  for (let b = 0; b < nSeqs; b++) {
    const seq: number[] = [];
    for (let t = 0; t < len; t++) {
      const tok = Math.floor(rand() * (vocab - 1));
      if (rand() < 0.5) {
        rows.push(b * len + t);
        targets.push(tok);
        weights.push(1 / (0.5 * len * nSeqs));
        seq.push(mask);
      } else seq.push(tok);
    }
    seqs.push(seq);
  }
  return packBatch(seqs, rows, targets, weights);
}

/** Every parameter's gradient, by name. */
export function allGrads(trainer: NativeTrainer, engine: NativeEngine): Map<string, Float32Array> {
  return new Map(engine.paramInfo().map((p) => [p.name, trainer.getGrad(p.name)]));
}

export function allParams(engine: NativeEngine): Map<string, Float32Array> {
  return new Map(engine.paramInfo().map((p) => [p.name, engine.getParam(p.name)]));
}

/** Whether two tensors hold the same bits. */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
