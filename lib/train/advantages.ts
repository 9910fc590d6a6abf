// Group-relative advantages and the per-token loss weights of GRPO, JustGRPO's defaults first.

export type ScaleRewards = 'group' | 'batch' | 'none';
export type LossType = 'grpo' | 'dr_grpo';

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

/**
 * The weight of every token of a completion in the summed loss. 'grpo' (JustGRPO): 1 / genLength /
 * (completions with A != 0). 'dr_grpo': 1 / genLength / (all completions). With `lossPositions` K of
 * L positions per completion, each kept token weighs L / K times more (an unbiased estimate).
 */
export function tokenWeight(o: { lossType: LossType; genLength: number; validCount: number; total: number; positionsKept: number }): number {
  const count = o.lossType === 'grpo' ? o.validCount : o.total;
  if (count === 0) return 0;
  return (1 / o.genLength / count) * (o.genLength / o.positionsKept);
}
