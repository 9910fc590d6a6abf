// Options and results of `model.generate`: the AR-order rollout and the parallel unmasking decoders.
import { expected } from './errors.js';
import type { NativeDecodeOptions, NativeDecodeResult } from './native/binding.js';

export type Decoder = 'ar' | 'low_confidence' | 'random' | 'threshold';
export type ConfidenceMeasure = 'probability' | 'margin' | 'entropy';

export type GenerateOptions = {
  /**
   * 'ar': one token per step in order (JustGRPO's rollout; blockLength 1, steps = genLength).
   * 'low_confidence' / 'random': LLaDA's block decoding, committing the most confident (or random)
   * masked positions of the current block on LLaDA's schedule. 'threshold': commit every masked
   * position of the current block whose confidence >= threshold, at least one per step (Fast-dLLM).
   * Defaults to `'low_confidence'`.
   */
  decoder?: Decoder;
  /** Tokens to generate. Defaults to `128`. */
  genLength?: number;
  /** Block size of semi-autoregressive decoding; must divide genLength. Defaults to `32` (`1` for 'ar'). */
  blockLength?: number;
  /** Total steps; must be a multiple of genLength / blockLength. Ignored by 'threshold'. Defaults to `genLength`. */
  steps?: number;
  /** Sampling temperature (Gumbel-max in float64); 0 is greedy. Defaults to `0`. */
  temperature?: number;
  /** Confidence threshold of the 'threshold' decoder. Defaults to `0.9`. */
  threshold?: number;
  /** Which confidence ranks positions: p(token), p(top1) - p(top2), or exp(-entropy). Defaults to `'probability'`. */
  confidence?: ConfidenceMeasure;
  /** Classifier-free guidance scale (0 = off); the unconditional pass masks the prompt. Defaults to `0`. */
  cfgScale?: number;
  /** Completions per prompt (the GRPO group size G). Defaults to `1`. */
  numSamples?: number;
  /**
   * Seed. Prompt p's sample g draws from the stream of (seed + p, g), whatever else is in the batch:
   * a prompt decoded alone with seed s + p repeats sample g of index p in a batch with seed s (its
   * log-probs then agree to fp32 round-off, since BLAS may sum in another order for another batch
   * size). Defaults to `0`.
   */
  seed?: number;
  /** End-of-text / end-of-turn tokens cannot be committed at completion positions below this. Defaults to `0`. */
  minNewTokens?: number;
  /** The tokens `minNewTokens` holds back. Defaults to the model's eos token and the tokenizer's `<|eot_id|>`. */
  stopTokenIds?: number[];
  /** Stops the call at its next step; the Promise rejects with an AbortError. */
  signal?: AbortSignal;
  /** Called after each step with the fraction of tokens committed and sequence 0's completion so far. */
  onProgress?: (fraction: number, canvas: Int32Array) => void;
};

/** Rows are prompt-major: prompt p's sample g is row p * numSamples + g. */
export type GenerateResult = {
  /** Completion token ids (genLength each). */
  tokens: number[][];
  /**
   * log p of each token under the model's distribution (temperature 1, mask token excluded) at the
   * step that committed it. For 'ar' at temperature 1 these are exactly the learner's log-probs.
   */
  logprobs: number[][];
  /** Entropy (nats) of the sampling distribution when each token was committed. */
  entropies: number[][];
  /** The step (0-based) at which each position was committed: the decoding order. */
  commitSteps: number[][];
  /** Tokens committed at each step, per row. */
  transfers: number[][];
  /** Forward passes per row (a guided step counts 2). */
  nfe: number[];
  /**
   * Tokens that actually went through the model, over all steps. Identical canvases in one step
   * (the samples of one prompt before they diverge) are computed once, so this is at most the sum
   * over steps of every active row's length, and less when rows share a canvas.
   */
  forwardTokens: number;
  /** Wall time of the call in milliseconds. */
  wallTimeMs: number;
  /** Generated tokens per second over all rows. */
  tokensPerSecond: number;
};

export const GENERATE_DEFAULTS = {
  decoder: 'low_confidence',
  genLength: 128,
  blockLength: 32,
  temperature: 0,
  threshold: 0.9,
  confidence: 'probability',
  cfgScale: 0,
  numSamples: 1,
  seed: 0,
  minNewTokens: 0,
} as const satisfies GenerateOptions;

const DECODERS: Decoder[] = ['ar', 'low_confidence', 'random', 'threshold'];
const CONFIDENCES: ConfidenceMeasure[] = ['probability', 'margin', 'entropy'];

function positiveInt(value: unknown, name: string): number {
  if (!Number.isInteger(value) || (value as number) <= 0) throw expected('a positive integer', name, value);
  return value as number;
}

function nonNegative(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw expected('a finite number >= 0', name, value);
  return value;
}

/** Validates generate options and maps them to the native decoder's. */
export function resolveGenerateOptions(
  options: GenerateOptions,
  defaultStopIds: number[],
): { native: NativeDecodeOptions; numSamples: number; seed: number } {
  // Options given as undefined take their defaults.
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as GenerateOptions;
  const o = { ...GENERATE_DEFAULTS, ...given };
  if (!DECODERS.includes(o.decoder)) throw expected(`one of ${DECODERS.map((d) => `'${d}'`).join(', ')}`, 'decoder', o.decoder);
  if (!CONFIDENCES.includes(o.confidence)) throw expected(`one of ${CONFIDENCES.map((d) => `'${d}'`).join(', ')}`, 'confidence', o.confidence);
  const genLength = positiveInt(o.genLength, 'genLength');
  const ar = o.decoder === 'ar';
  const blockLength = ar ? 1 : positiveInt(given.blockLength ?? Math.min(GENERATE_DEFAULTS.blockLength, genLength), 'blockLength');
  const steps = ar ? genLength : positiveInt(given.steps ?? genLength, 'steps');
  if (genLength % blockLength !== 0)
    throw expected(`a blockLength that divides genLength (${genLength})`, 'blockLength', blockLength);
  if (o.decoder !== 'threshold' && steps % (genLength / blockLength) !== 0)
    throw expected(`a multiple of the number of blocks (${genLength / blockLength} = genLength / blockLength)`, 'steps', steps);
  const threshold = nonNegative(o.threshold, 'threshold');
  if (threshold > 1) throw expected('a number in [0, 1]', 'threshold', threshold);
  const numSamples = positiveInt(o.numSamples, 'numSamples');
  if (numSamples > 65536) throw expected('at most 65536', 'numSamples', numSamples);
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed >= 2 ** 36) throw expected('an integer in [0, 2^36)', 'seed', o.seed);
  const minNewTokens = nonNegative(o.minNewTokens, 'minNewTokens');
  const stop = given.stopTokenIds ?? defaultStopIds;
  return {
    native: {
      decoder: ar ? 'low_confidence' : o.decoder as NativeDecodeOptions['decoder'],
      confidence: o.confidence,
      genLength,
      blockLength,
      steps,
      temperature: nonNegative(o.temperature, 'temperature'),
      threshold,
      cfgScale: nonNegative(o.cfgScale, 'cfgScale'),
      minNewTokens: Math.floor(minNewTokens),
      stopIds: Int32Array.from(stop),
    },
    numSamples,
    seed: o.seed,
  };
}

/** The native seed of prompt p's sample g. */
export function sequenceSeed(seed: number, prompt: number, sample: number): number {
  return (seed + prompt) * 65536 + sample;
}

/** Splits the native result into rows. */
export function splitDecodeResult(r: NativeDecodeResult, rows: number, genLength: number, wallTimeMs: number): GenerateResult {
  const split = <T extends Int32Array | Float32Array>(a: T, width: number) =>
    Array.from({ length: rows }, (_, s) => Array.from(a.subarray(s * width, (s + 1) * width)));
  return {
    tokens: split(r.tokens, genLength),
    logprobs: split(r.logprobs, genLength),
    entropies: split(r.entropies, genLength),
    commitSteps: split(r.commitStep, genLength),
    transfers: split(r.transfers, r.maxSteps).map((row) => row.filter((n) => n >= 0)),
    nfe: Array.from(r.nfe),
    forwardTokens: r.forwardTokens,
    wallTimeMs,
    tokensPerSecond: (rows * genLength) / (wallTimeMs / 1000),
  };
}
