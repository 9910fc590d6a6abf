// LLaDA's masked-diffusion SFT / pre-training objective, as the batch the engine's fused
// cross-entropy takes: for each sequence draw t ~ U(0, 1), p_mask = (1 - eps) t + eps; mask each
// response token with probability p_mask (prompt tokens never); the loss is the cross-entropy at the
// masked positions weighted by 1 / p_mask / response_length, averaged over the sequences of a step.
import type { SftExample } from './data.js';
import type { Rng } from './rng.js';

export type PackedBatch = {
  tokens: Int32Array;
  seqStarts: Int32Array;
  rows: Int32Array;
  targets: Int32Array;
  weights: Float32Array;
  /** Response tokens (the denominator of tokens/s). */
  numTokens: number;
};

export type MaskingOptions = {
  maskTokenId: number;
  /** Pads responses so every sequence of the micro-batch has the longest one's length (LLaDA's SFT). */
  padTokenId: number | null;
  /** The floor of p_mask. Defaults to `1e-3`. */
  maskEps?: number;
  /** Sequences per optimizer step (all micro-batches): the loss is their mean. */
  sequencesPerStep: number;
  /** The length padding fills to. Defaults to the longest of `examples` (a rank's shard passes its whole micro-batch's). */
  padTo?: number;
};

/** Builds the masked batch for `examples`; `rngFor(i)` gives example i its own stream. */
export function maskedDiffusionBatch(examples: SftExample[], rngFor: (i: number) => Rng, o: MaskingOptions): PackedBatch {
  const eps = o.maskEps ?? 1e-3;
  const longest = o.padTo ?? Math.max(...examples.map((e) => e.prompt.length + e.response.length));
  const seqs: number[][] = [];
  const rows: number[] = [], targets: number[] = [], weights: number[] = [];
  const starts = [0];
  let numTokens = 0;
  examples.forEach((ex, i) => {
    const response = [...ex.response];
    if (o.padTokenId !== null) while (ex.prompt.length + response.length < longest) response.push(o.padTokenId);
    const rng = rngFor(i);
    const pMask = (1 - eps) * rng.next() + eps;
    const seq = [...ex.prompt, ...response];
    const weight = 1 / pMask / response.length / o.sequencesPerStep;
    for (let j = 0; j < response.length; j++) {
      if (rng.next() >= pMask) continue;
      const pos = ex.prompt.length + j;
      rows.push(starts[i]! + pos);
      targets.push(seq[pos]!);
      weights.push(weight);
      seq[pos] = o.maskTokenId;
    }
    numTokens += response.length;
    seqs.push(seq);
    starts.push(starts[i]! + seq.length);
  });
  return {
    tokens: Int32Array.from(seqs.flat()),
    seqStarts: Int32Array.from(starts),
    rows: Int32Array.from(rows),
    targets: Int32Array.from(targets),
    weights: Float32Array.from(weights),
    numTokens,
  };
}
