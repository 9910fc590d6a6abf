/** Base class of every error justgrpo throws on purpose. */
export class JustGRPOError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A checkpoint directory, config.json or weights file that cannot be used. */
export class CheckpointError extends JustGRPOError {}

/** A config (model or command) with a missing, mistyped or out-of-range field. */
export class ConfigError extends JustGRPOError {}

/** Input to a call (token ids, shapes, options) that is out of range or of the wrong type. */
export class InputError extends JustGRPOError {}

/** A method called on a model after `dispose()`. */
export class DisposedError extends JustGRPOError {
  constructor(what = 'Model') {
    super(`${what} is disposed`);
  }
}

/** A file that could not be written (disk full, a size limit, permissions); nothing already written is lost. */
export class StorageError extends JustGRPOError {}

/** A request that does not fit in memory; the message says how much it needed. */
export class InsufficientMemoryError extends JustGRPOError {}

/** A training run stopped because its loss exploded (non-finite, or above `maxLoss`); the message names the step and the last good checkpoint. */
export class TrainingDivergedError extends JustGRPOError {}

/**
 * A model or data set on the Hugging Face Hub that cannot be fetched or used: not found, needs a
 * token, offline with a cold cache, a download that failed its checksum. The message names the repo
 * (and file) and the fix.
 */
export class HubError extends JustGRPOError {}

/**
 * Data parallelism failed: MPI asked for and not found, a collective that timed out (the message
 * names the rank that did not answer), ranks that disagree.
 */
export class DistributedError extends JustGRPOError {}

/** The native engine failed; the message names the native call. */
export class EngineError extends JustGRPOError {}

/** One message shape for every validation failure. */
export function expected(what: string, name: string, received: unknown): InputError {
  return new InputError(`Expected ${what} for \`${name}\` but received ${describe(received)}`);
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '...' : value);
  if (typeof value === 'object') return `an object (${(value as object).constructor?.name ?? 'Object'})`;
  return `${typeof value} ${String(value)}`;
}

/** A long call stopped by its AbortSignal. */
export class AbortError extends JustGRPOError {
  constructor(message = 'The operation was aborted') {
    super(message);
  }
}
