// Sampling a verifiable task with one decoder and summarising what came out: correctness per
// (item, sample), pass@k, completion lengths, throughput, and the entropy of the sampling
// distribution at each committed token by position and by decoding order. `justgrpo demo` and
// `justgrpo passk` are built on it.
import { expected } from '../errors.js';
import type { EvalItem } from '../eval/tasks.js';
import { meanPassAtK } from '../eval/passk.js';
import type { Decoder } from '../generate.js';
import { internals, type LladaModel } from '../model.js';
import { verifyAnswer } from '../rewards/registry.js';

/** One decoding setting, with a short name for tables and legends. */
export type DecodeSpec = {
  /** Label, e.g. `ar`, `low_confidence b8`, `random b24`. */
  name: string;
  decoder: Decoder;
  /** Block length of the parallel decoders. Defaults to genLength. */
  blockLength?: number;
  /** Total steps of 'low_confidence' / 'random'. Defaults to genLength. */
  steps?: number;
  /** Threshold of 'threshold'. Defaults to `0.9`. */
  threshold?: number;
};

export type SampleOptions = {
  genLength: number;
  /** Sampling temperature; 0 is greedy (then samples > 1 only repeat one completion). */
  temperature: number;
  /** Completions per item (the n of pass@k). */
  samples: number;
  /** Seed of the draws; item i's sample g draws from the stream of (seed + i, g). */
  seed: number;
  /** Wrap prompts in the tokenizer's chat template (as a user message). Defaults to whether it has one. */
  chatTemplate?: boolean;
  /** Items per generate call. Defaults to `32`. */
  batchItems?: number;
  /** Called after every generate call with the fraction of completions done and the running accuracy. */
  onProgress?: (fraction: number, correct: number, done: number) => void;
  signal?: AbortSignal;
};

/** What one decoder produced on a task. */
export type SampleRun = {
  spec: DecodeSpec;
  temperature: number;
  items: number;
  samples: number;
  /** Correct completions over all completions. */
  accuracy: number;
  /** Unbiased pass@k for k = 1..samples (index k - 1). */
  passAtK: number[];
  /** Mean completion length in tokens (before the end-of-turn token; genLength when it never ends). */
  meanLength: number;
  /** Generated tokens (genLength per completion) per second of decoding. */
  tokensPerSecond: number;
  decodeSeconds: number;
  /** Mean entropy (nats) of the sampling distribution over the completion tokens when they were committed. */
  meanEntropy: number;
  /** Mean entropy at commit by completion position (content tokens only; NaN where none). */
  entropyByPosition: number[];
  /** Mean entropy at commit by decoding order: index r is the r-th content token committed. */
  entropyByOrder: number[];
  /** Mean decoding step at which each completion position was committed (content tokens only). */
  commitStepByPosition: number[];
  /** Per item: how many of its samples were correct. */
  correctPerItem: number[];
  /** The first sample's completion of each item, for inspection. */
  examples: { prompt: string; completion: string; correct: boolean }[];
};

/** 1 when the completion's answer matches the item's gold answer (GSM8K or MATH rules). */
export function scoreItem(item: EvalItem, completion: string): number {
  return verifyAnswer(item, completion).reward;
}

/** Samples every item `samples` times with one decoder and summarises the result. */
export async function sampleTask(model: LladaModel, items: readonly EvalItem[], spec: DecodeSpec, o: SampleOptions): Promise<SampleRun> {
  if (items.length === 0) throw expected('at least one item', 'items', items);
  const L = o.genLength;
  const tok = model.tokenizer;
  const stops = new Set(internals.get(model)!.stopTokenIds());
  const batchItems = o.batchItems ?? 32;
  const chat = o.chatTemplate ?? tok.hasChatTemplate;
  const ids = items.map((it) => (chat ? tok.encodeChat([{ role: 'user', content: it.prompt }]) : tok.encode(it.prompt)));
  const correctPerItem = new Array<number>(items.length).fill(0);
  const entPos = new Float64Array(L), cntPos = new Float64Array(L), stepPos = new Float64Array(L);
  const entOrd = new Float64Array(L), cntOrd = new Float64Array(L);
  const examples: SampleRun['examples'] = [];
  let lengthSum = 0, entSum = 0, entCount = 0, correct = 0, done = 0, seconds = 0;
  for (let start = 0; start < items.length; start += batchItems) {
    o.signal?.throwIfAborted();
    const batch = ids.slice(start, start + batchItems);
    const blockLength = spec.decoder === 'ar' ? undefined : (spec.blockLength ?? L);
    const r = await model.generate(batch, {
      decoder: spec.decoder, genLength: L, blockLength, steps: spec.decoder === 'ar' ? undefined : (spec.steps ?? L),
      threshold: spec.threshold, temperature: o.temperature, numSamples: o.samples, seed: o.seed + start, signal: o.signal,
    });
    seconds += r.wallTimeMs / 1000;
    r.tokens.forEach((tokens, row) => {
      const i = start + Math.floor(row / o.samples);
      const text = model.completionText(tokens);
      const ok = scoreItem(items[i]!, text) === 1;
      if (ok) {
        correctPerItem[i]!++;
        correct++;
      }
      if (row % o.samples === 0) examples.push({ prompt: items[i]!.prompt, completion: text, correct: ok });
      const end = tokens.findIndex((t) => stops.has(t));
      const len = end < 0 ? L : end;
      lengthSum += len;
      // Content tokens: the completion up to and including its end-of-turn token; the padding
      // after it says nothing about reasoning and would swamp the averages.
      const content = end < 0 ? L : end + 1;
      const ent = r.entropies[row]!, steps = r.commitSteps[row]!;
      for (let j = 0; j < content; j++) {
        entPos[j] += ent[j]!;
        cntPos[j]++;
        stepPos[j] += steps[j]!;
        entSum += ent[j]!;
        entCount++;
      }
      const order = Array.from({ length: content }, (_, j) => j).sort((a, b) => steps[a]! - steps[b]! || a - b);
      order.forEach((j, rank) => {
        entOrd[rank] += ent[j]!;
        cntOrd[rank]++;
      });
    });
    done += r.tokens.length;
    o.onProgress?.(done / (items.length * o.samples), correct, done);
  }
  const n = items.length * o.samples;
  const problems = correctPerItem.map((c) => ({ n: o.samples, c }));
  const mean = (s: Float64Array, c: Float64Array) => Array.from(s, (v, j) => (c[j]! > 0 ? v / c[j]! : Number.NaN));
  return {
    spec, temperature: o.temperature, items: items.length, samples: o.samples,
    accuracy: correct / n,
    passAtK: Array.from({ length: o.samples }, (_, k) => meanPassAtK(problems, k + 1)),
    meanLength: lengthSum / n,
    tokensPerSecond: (n * L) / seconds,
    decodeSeconds: seconds,
    meanEntropy: entCount > 0 ? entSum / entCount : Number.NaN,
    entropyByPosition: mean(entPos, cntPos),
    entropyByOrder: mean(entOrd, cntOrd),
    commitStepByPosition: mean(stepPos, cntPos),
    correctPerItem,
    examples,
  };
}
