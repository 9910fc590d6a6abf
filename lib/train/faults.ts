// Numerical faults during training: the loss check that stops a diverging run before its step is
// applied, and the message that points at the checkpoint to go back to.
import { TrainingDivergedError } from '../errors.js';
import { checkpointDir, listCheckpoints } from './checkpoint.js';

/** Throws TrainingDivergedError when `loss` is non-finite or its magnitude exceeds `maxLoss`. */
export function checkLoss(loss: number, step: number, maxLoss: number | undefined): void {
  if (Number.isFinite(loss) && (maxLoss === undefined || Math.abs(loss) <= maxLoss)) return;
  const why = Number.isFinite(loss) ? `${loss} exceeds maxLoss ${maxLoss}` : `${loss}`;
  throw new TrainingDivergedError(`The loss exploded at step ${step} (${why}); the step was not applied and training stopped`);
}

/** The error with the run's last good checkpoint named (checkpoints are only written after good steps). */
export async function withLastCheckpoint(err: unknown, outputDir: string): Promise<unknown> {
  if (!(err instanceof TrainingDivergedError)) return err;
  const steps = await listCheckpoints(outputDir);
  const last = steps.length ? checkpointDir(outputDir, steps[steps.length - 1]!) : null;
  return new TrainingDivergedError(
    `${err.message}. ${last ? `The last good checkpoint is ${last}: resume from it (--resume ${outputDir}) with a lower learningRate, or fix the data` : 'No checkpoint was written before it'}`,
    { cause: err },
  );
}
