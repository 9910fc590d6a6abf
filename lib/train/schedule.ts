// Learning-rate schedules with transformers' formulas (get_{constant,linear,cosine}_schedule_with_warmup):
// linear warm-up from 0 over `warmupSteps`, then constant, linear decay to 0, or cosine decay to 0.

export type LrSchedulerType = 'constant' | 'linear' | 'cosine';

/** The learning rate of update `step` (0-based) of `totalSteps`. */
export function learningRateAt(
  step: number,
  opts: { learningRate: number; lrSchedulerType: LrSchedulerType; warmupSteps: number; totalSteps: number },
): number {
  const { learningRate: lr, warmupSteps: warm, totalSteps: total } = opts;
  if (step < warm) return (lr * step) / Math.max(1, warm);
  if (opts.lrSchedulerType === 'constant') return lr;
  if (opts.lrSchedulerType === 'linear') return lr * Math.max(0, (total - step) / Math.max(1, total - warm));
  const progress = (step - warm) / Math.max(1, total - warm);
  return lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
