// Option parsers for the CLI's commands (commander): each rejects a bad value with one message
// naming the option.
import { InvalidArgumentError } from 'commander';

import { InputError } from '../errors.js';

/** An integer >= min (0 unless given). */
export function intArg(name: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min)
      throw new InvalidArgumentError(min === 0 ? `${name} must be a non-negative integer.` : `${name} must be an integer >= ${min}.`);
    return n;
  };
}

export function numberArg(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a number >= 0.`);
    return n;
  };
}

export function choiceArg<T extends string>(name: string, choices: readonly T[]) {
  return (value: string): T => {
    if (!choices.includes(value as T)) throw new InvalidArgumentError(`${name} must be one of ${choices.join(', ')}.`);
    return value as T;
  };
}

export function intListArg(name: string) {
  return (value: string): number[] => {
    const xs = value.split(',').map((x) => Number(x.trim()));
    if (xs.length === 0 || !xs.every((n) => Number.isInteger(n) && n > 0)) throw new InvalidArgumentError(`${name} must be a comma-separated list of positive integers.`);
    return xs;
  };
}

/** A comma-separated list of some of `choices`. */
export function listArg<T extends string>(name: string, choices: readonly T[]) {
  return (value: string): T[] => {
    const xs = value.split(',').map((x) => x.trim());
    if (xs.length === 0 || !xs.every((x) => choices.includes(x as T))) throw new InvalidArgumentError(`${name} takes a comma-separated list of ${choices.join(', ')}.`);
    return xs as T[];
  };
}

// Library option names as the CLI flags that set them, for errors about decoding options.
const FLAG_OF: Record<string, string> = {
  genLength: '--gen-length', blockLength: '--block-length', steps: '--steps', temperature: '--temperature',
  threshold: '--threshold', cfgScale: '--cfg-scale', numSamples: '--samples', confidence: '--confidence', decoder: '--decoder', seed: '--seed',
};

/**
 * Rejects with the same error, its message naming CLI flags instead of the library's option names
 * (`flags` adds or changes some, e.g. passk's `--block-lengths`).
 */
export async function withFlagNames<T>(p: Promise<T>, flags: Record<string, string> = {}): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    const flagOf = { ...FLAG_OF, ...flags };
    // Quoted names are options wherever they appear; bare ones only where camelCase (never prose).
    const message = err.message
      .replace(/`(\w+)`/g, (m, n: string) => (flagOf[n] ? `\`${flagOf[n]}\`` : m))
      .replace(/\b(genLength|blockLength|cfgScale|numSamples)\b/g, (_m, n: string) => flagOf[n]!)
      .replace(/^decode: /, '');
    throw new InputError(message, { cause: err });
  }
}
