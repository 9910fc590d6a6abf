// A seeded synthetic reasoning task: short multi-step arithmetic word problems with a worked solution
// in GSM8K's format (one line per step, then `#### N`). Small enough that a tiny diffusion LM learns it
// on a laptop CPU, hard enough that it stays wrong often (multi-digit carries, several steps,
// distractor sentences). Train and held-out splits never share a question.
import { expected } from '../errors.js';
import { Rng } from '../train/rng.js';

export type ArithOptions = {
  /** Fewest operations per problem. Defaults to `1`. */
  minSteps?: number;
  /** Most operations per problem. Defaults to `2`. */
  maxSteps?: number;
  /** Largest starting amount (the smallest is 2). Defaults to `9`. */
  maxStart?: number;
  /** Largest amount added or taken away in one step (the smallest is 1). Defaults to `9`. */
  maxChange?: number;
  /** Allow "doubles" / "triples" steps (only while the amount is at most maxStart). Defaults to `true`. */
  multiply?: boolean;
  /** Probability of one distractor sentence about someone else. Defaults to `0.2`. */
  distractorRate?: number;
};

export const ARITH_DEFAULTS = {
  minSteps: 1,
  maxSteps: 2,
  maxStart: 9,
  maxChange: 9,
  multiply: true,
  distractorRate: 0.2,
} as const satisfies Required<ArithOptions>;

/** One problem in GSM8K's JSONL columns: `question`, and `answer` = worked steps + `#### N`. */
export type ArithProblem = { question: string; answer: string; value: number };

const NAMES = ['Ann', 'Bob', 'Cal', 'Dan', 'Eve', 'Kim', 'Max', 'Sam', 'Tom', 'Zoe'];
const ITEMS = ['pens', 'cats', 'eggs', 'cups', 'hats', 'toys', 'apples', 'books'];
const GAIN = ['buys', 'gets', 'finds', 'wins'];
const LOSS = ['loses', 'sells', 'gives away', 'breaks'];
// Seeds of the two splits' streams: problems are drawn from disjoint streams, and held-out
// questions are also removed from the training split, so no question appears in both.
const SPLIT_STREAM = { train: 101, heldout: 202 } as const;

function resolve(options: ArithOptions): Required<ArithOptions> {
  const o = { ...ARITH_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) };
  for (const k of ['minSteps', 'maxSteps', 'maxStart', 'maxChange'] as const)
    if (!Number.isInteger(o[k]) || o[k] < 1) throw expected('a positive integer', k, o[k]);
  if (o.maxSteps < o.minSteps) throw expected(`an integer >= minSteps (${o.minSteps})`, 'maxSteps', o.maxSteps);
  if (o.maxStart < 2) throw expected('an integer >= 2', 'maxStart', o.maxStart);
  if (typeof o.distractorRate !== 'number' || !(o.distractorRate >= 0 && o.distractorRate <= 1))
    throw expected('a number in [0, 1]', 'distractorRate', o.distractorRate);
  if (typeof o.multiply !== 'boolean') throw expected('a boolean', 'multiply', o.multiply);
  return o;
}

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;

/** One problem from `rng`. Amounts never go below zero. */
export function arithProblem(rng: Rng, options: ArithOptions = {}): ArithProblem {
  const o = resolve(options);
  const name = pick(rng, NAMES), item = pick(rng, ITEMS);
  const steps = o.minSteps + rng.int(o.maxSteps - o.minSteps + 1);
  let value = 2 + rng.int(o.maxStart - 1);
  const clauses: string[] = [], lines: string[] = [];
  for (let s = 0; s < steps; s++) {
    const canMultiply = o.multiply && value <= o.maxStart && value > 1;
    const kind = canMultiply && rng.int(4) === 0 ? 'mul' : value > 1 && rng.int(2) === 0 ? 'sub' : 'add';
    if (kind === 'mul') {
      const f = 2 + rng.int(2);
      clauses.push(f === 2 ? 'doubles them' : 'triples them');
      lines.push(`${value}*${f}=${value * f}`);
      value *= f;
    } else if (kind === 'sub') {
      const c = 1 + rng.int(Math.min(o.maxChange, value - 1));
      clauses.push(`${pick(rng, LOSS)} ${c}`);
      lines.push(`${value}-${c}=${value - c}`);
      value -= c;
    } else {
      const c = 1 + rng.int(o.maxChange);
      clauses.push(`${pick(rng, GAIN)} ${c}`);
      lines.push(`${value}+${c}=${value + c}`);
      value += c;
    }
  }
  const start = lines[0]!.split(/[-+*]/)[0]!;
  let question = `${name} has ${start} ${item}, ${clauses.join(', ')}.`;
  if (rng.next() < o.distractorRate) {
    const other = pick(rng, NAMES.filter((n) => n !== name));
    const otherItem = pick(rng, ITEMS.filter((i) => i !== item));
    question = `${other} has ${1 + rng.int(o.maxStart)} ${otherItem}. ${question}`;
  }
  question += ` How many ${item}?`;
  return { question, answer: `${lines.join('\n')}\n#### ${value}`, value };
}

export type ArithSplits = { train: ArithProblem[]; heldout: ArithProblem[] };

/**
 * The train and held-out splits for `seed`: deterministic, with distinct questions within each
 * split and none shared between them.
 */
export function arithSplits(sizes: { train: number; heldout: number }, seed = 0, options: ArithOptions = {}): ArithSplits {
  resolve(options);
  for (const k of ['train', 'heldout'] as const)
    if (!Number.isInteger(sizes[k]) || sizes[k] < 0) throw expected('a non-negative integer', `sizes.${k}`, sizes[k]);
  const draw = (stream: number, n: number, exclude: Set<string>): ArithProblem[] => {
    const rng = new Rng(seed, stream);
    const out: ArithProblem[] = [];
    const seen = new Set<string>();
    // The space of problems is large; give up (rather than loop forever) when the knobs make it tiny.
    for (let tries = 0; out.length < n; tries++) {
      if (tries > 50 * n + 1000) throw expected(`options with more than ${out.length} distinct problems`, 'options', options);
      const p = arithProblem(rng, options);
      if (seen.has(p.question) || exclude.has(p.question)) continue;
      seen.add(p.question);
      out.push(p);
    }
    return out;
  };
  const heldout = draw(SPLIT_STREAM.heldout, sizes.heldout, new Set());
  const train = draw(SPLIT_STREAM.train, sizes.train, new Set(heldout.map((p) => p.question)));
  return { train, heldout };
}

/** JSONL text of problems (`question`, `answer` columns; what `justgrpo sft` and `train` read). */
export function toJsonl(problems: readonly ArithProblem[]): string {
  return problems.map((p) => JSON.stringify({ question: p.question, answer: p.answer })).join('\n') + (problems.length ? '\n' : '');
}
