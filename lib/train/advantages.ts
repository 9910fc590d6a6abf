// Group-relative advantages and the per-token loss weights of GRPO, JustGRPO's defaults first.

export type ScaleRewards = 'group' | 'batch' | 'none';
/**
 * How the per-token terms of a step are summed into its loss (TRL's `loss_type`, plus JustGRPO's).
 * See `tokenWeights` for each formula.
 */
export type LossType = 'justgrpo' | 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo';

export const LOSS_TYPES = ['justgrpo', 'grpo', 'bnpo', 'dr_grpo', 'dapo'] as const satisfies readonly LossType[];

export type AdvantageResult = {
  /** One advantage per completion (row-major: prompt p's completion g at p * G + g). */
  advantages: number[];
  /** Completions that count in the loss normaliser: a nonzero advantage. */
  valid: boolean[];
  /** Groups whose rewards are all equal (their advantages are 0). */
  zeroStdGroups: number;
  groupStd: number[];
};

/**
 * A = (r - mean_group) / (std_unbiased + 1e-4) per group of G completions ('group'); the batch's
 * std instead ('batch'); or r - mean_group ('none'). A null reward (unscorable) gets advantage 0 and
 * is left out of its group's statistics.
 */
export function groupAdvantages(rewards: (number | null)[], G: number, scale: ScaleRewards): AdvantageResult {
  if (rewards.length % G !== 0) throw new Error(`${rewards.length} rewards do not split into groups of ${G}`);
  const advantages = new Array<number>(rewards.length).fill(0);
  const groupStd: number[] = [];
  let zeroStdGroups = 0;
  const std = (xs: number[]) => {
    if (xs.length < 2) return 0;
    const m = xs.reduce((a, b) => a + b, 0) / xs.length;
    return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
  };
  const scored = rewards.filter((r): r is number => r !== null);
  const batchStd = std(scored);
  for (let g0 = 0; g0 < rewards.length; g0 += G) {
    const group = rewards.slice(g0, g0 + G);
    const xs = group.filter((r): r is number => r !== null);
    const mean = xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
    const s = std(xs);
    groupStd.push(s);
    if (s === 0) {
      zeroStdGroups++;
      continue;
    }
    const denom = scale === 'group' ? s + 1e-4 : scale === 'batch' ? batchStd + 1e-4 : 1;
    group.forEach((r, i) => {
      if (r !== null) advantages[g0 + i] = (r - mean) / denom;
    });
  }
  return { advantages, valid: advantages.map((a) => a !== 0), zeroStdGroups, groupStd };
}

export type TokenWeightOptions = {
  lossType: LossType;
  /** L: tokens per completion (maxCompletionLength). */
  maxCompletionLength: number;
  /**
   * |m_i|: the length of completion i's mask, the tokens up to and including its first end token (L
   * when it has none; 0 for a truncated completion under maskTruncatedCompletions), as TRL's
   * completion_mask.
   */
  maskLengths: number[];
  /** Completions with a nonzero advantage (JustGRPO's normaliser counts these). */
  valid: boolean[];
  /** Completions per local batch (promptsPerStep x numGenerations); the last batch may be smaller. */
  localBatch: number;
  /** K: positions trained per completion (lossPositions); L when every position is. */
  positionsKept: number;
};

/**
 * The weight w[i][t] of completion i's token t in the step's loss, sum_i sum_t w[i][t] * l[i][t],
 * where l is the per-token clipped objective. m[i][t] = 1 for t < |m_i|, else 0. The N completions
 * form B local batches b of n_b completions (B - 1 of them promptsPerStep x G; gradient
 * accumulation sums the B losses, each divided by B as TRL's trainer does):
 *
 * - 'justgrpo' (the paper's, the default): w = 1 / (L * V) at every position t < L, V = the
 *   completions of the whole step with A != 0 (their count; 0 when V = 0). No mask: JustGRPO's
 *   reference scales every generated position alike.
 * - 'grpo' (TRL): each sequence's token mean over its mask, then the mean over sequences:
 *   w = m / |m_i| / n_b / B.
 * - 'bnpo' (TRL): the sum over the local batch's active tokens over their count:
 *   w = m / (sum_{j in b} |m_j|) / B.
 * - 'dr_grpo' (TRL, Dr. GRPO): a constant normaliser, w = m / (L * n_b) / B.
 * - 'dapo' (TRL): the sum over the whole accumulated batch's active tokens over their count:
 *   w = m / (sum_j |m_j|).
 *
 * A normaliser of 0 gives weight 0. With K < L trained positions per completion (lossPositions),
 * each kept position is kept with probability K / L, so every weight is multiplied by L / K (an
 * unbiased estimate of the full sum).
 */
export function tokenWeights(o: TokenWeightOptions): number[][] {
  const L = o.maxCompletionLength, N = o.maskLengths.length;
  const scale = L / o.positionsKept;
  const B = Math.max(1, Math.ceil(N / o.localBatch));
  const batchOf = (i: number) => Math.floor(i / o.localBatch);
  const batchSize = (b: number) => Math.min(o.localBatch, N - b * o.localBatch);
  const active = new Array<number>(B).fill(0);
  o.maskLengths.forEach((m, i) => (active[batchOf(i)]! += m));
  const allActive = active.reduce((a, b) => a + b, 0);
  const validCount = o.valid.filter(Boolean).length;
  const inv = (x: number) => (x > 0 ? 1 / x : 0);
  return o.maskLengths.map((m, i) => {
    const b = batchOf(i);
    if (o.lossType === 'justgrpo') return new Array<number>(L).fill(inv(L * validCount) * scale);
    const w = o.lossType === 'grpo' ? inv(m) / batchSize(b) / B
      : o.lossType === 'bnpo' ? inv(active[b]!) / B
      : o.lossType === 'dr_grpo' ? 1 / (L * batchSize(b)) / B
      : inv(allActive);
    return Array.from({ length: L }, (_, t) => (t < m ? w * scale : 0));
  });
}
