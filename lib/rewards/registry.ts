/**
 * The one place that maps a task to its verifier and a config's reward name to its reward
 * function. The trainer (`rewardFunctions` in a GRPO config), the evaluation harness and the demo
 * all look rewards up here, so a new task is added once.
 *
 * - {@link verify}: scores one completion of an item (`gsm8k`, `math`, `code`), with what the
 *   verifier read; {@link verifyAnswer} is its synchronous form for the answer tasks.
 * - {@link BUILTIN_REWARDS} / {@link rewardFunction}: the trainer's reward functions by name,
 *   scoring a batch of completions from the data set's columns.
 */
import { ConfigError, expected } from '../errors.js';
import type { EvalItem, TaskKind } from '../eval/tasks.js';
import { scoreCode } from './code.js';
import { extractGsm8kAnswer, gsm8k } from './gsm8k.js';
import { extractMathAnswer, math } from './math.js';
import { defaultSandbox, type Sandbox } from './sandbox.js';

/** What a reward function receives: one entry per completion in every array. */
export type RewardArgs = {
  prompts: string[];
  completions: string[];
  completionIds: number[][];
  /** The data set's other columns (`answer`, `tests`, ...), repeated for each completion of a prompt. */
  [column: string]: unknown[];
};

/** A reward function: one score per completion, or null where it cannot score (advantage 0). */
export type RewardFunction = (args: RewardArgs) => (number | null)[] | Promise<(number | null)[]>;

/** The part of an item a verifier reads. */
export type VerifyItem = Pick<EvalItem, 'kind' | 'gold' | 'tests' | 'entryPoint' | 'codeContext'> & { id?: string };

/** Options for {@link verify}; only code items use them. */
export type VerifyOptions = {
  /** The sandbox for code. Defaults to the process-wide default sandbox. */
  sandbox?: Sandbox;
  /** Wall-clock limit per program. Defaults to the sandbox's (`5000`). */
  timeoutMs?: number;
  /** Kills running code when aborted. */
  signal?: AbortSignal;
};

/** A verifier's verdict on one completion. */
export type Verdict = {
  /** The task's reward (GSM8K/MATH: 1 or 0; code: format + pass rate, in [0, 2]). */
  reward: number;
  /** The answer is right, or every test passed. */
  correct: boolean;
  /** The answer the verifier read (for code, the program that ran), or null when none was found. */
  extracted: string | null;
  /** Code: fraction of tests passed. */
  passRate?: number;
  /** Code: JustGRPO's format reward. */
  format?: number;
  /** Code: why tests failed. */
  failures?: string[];
};

/**
 * HumanEval completions often restate the whole function, sometimes only its body: run the body
 * after the original prompt, and a full function after the prompt's imports (which it may rely on).
 */
export function humanevalProgram(code: string, item: Pick<EvalItem, 'entryPoint' | 'codeContext'>): string {
  if (!item.entryPoint || item.codeContext === undefined) return code;
  const defines = new RegExp(String.raw`^\s*def\s+${item.entryPoint}\s*\(`, 'm').test(code);
  if (!defines) return item.codeContext + code;
  const imports = item.codeContext
    .split('\n')
    .filter((l) => /^(?:import|from)\s/.test(l))
    .join('\n');
  return imports ? `${imports}\n${code}` : code;
}

/** GSM8K and MATH verdicts, which need no sandbox. */
export function verifyAnswer(item: VerifyItem, completion: string): Verdict {
  if (item.kind === 'gsm8k') {
    const reward = gsm8k(completion, item.gold ?? '');
    return { reward, correct: reward === 1, extracted: extractGsm8kAnswer(completion)?.text ?? null };
  }
  if (item.kind === 'math') {
    const reward = math(completion, item.gold ?? '');
    return { reward, correct: reward === 1, extracted: extractMathAnswer(completion) ?? null };
  }
  throw expected("a task of kind 'gsm8k' or 'math' (code runs through verify())", 'task', item.id ?? item.kind);
}

/** Scores one completion of an item with its task's verifier. */
export async function verify(item: VerifyItem, completion: string, options: VerifyOptions = {}): Promise<Verdict> {
  if (item.kind !== 'code') return verifyAnswer(item, completion);
  const s = await scoreCode(completion, item.tests ?? [], {
    sandbox: options.sandbox ?? (await defaultSandbox()),
    timeoutMs: options.timeoutMs,
    transformCode: (code) => humanevalProgram(code, item),
    testContext: item.codeContext,
    entryPoint: item.entryPoint,
    signal: options.signal,
  });
  return { extracted: s.code, correct: s.passRate === 1, reward: s.reward, passRate: s.passRate, format: s.format, failures: s.failures };
}

// The first of `keys` that a row has as a string (or number), for each completion.
function column(a: RewardArgs, i: number, keys: string[]): unknown {
  for (const key of keys) {
    const v = a[key]?.[i];
    if (v !== undefined && v !== null) return v;
  }
  return undefined;
}

// The gold answer column of a dataset row: `answer`, else `response` / `solution` (SFT-style data).
function goldOf(a: RewardArgs, i: number, name: string): string {
  const v = column(a, i, ['answer', 'response', 'solution']);
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  throw new Error(`the \`${name}\` reward needs an \`answer\` (or \`response\`/\`solution\`) column in the data`);
}

function itemOf(kind: TaskKind, a: RewardArgs, i: number): VerifyItem {
  if (kind !== 'code') return { kind, gold: goldOf(a, i, kind) };
  const tests = column(a, i, ['tests', 'test', 'test_list']);
  const ok = typeof tests === 'string' || (Array.isArray(tests) && tests.length > 0 && tests.every((t) => typeof t === 'string'));
  if (!ok) throw new Error('the `code` reward needs a `tests` (or `test`/`test_list`) column: a list of asserts or one program');
  const entryPoint = column(a, i, ['entry_point', 'entryPoint']);
  const codeContext = column(a, i, ['code_context', 'codeContext']);
  return {
    kind,
    tests: tests as string | string[],
    ...(typeof entryPoint === 'string' ? { entryPoint } : {}),
    ...(typeof codeContext === 'string' ? { codeContext } : {}),
  };
}

const byKind =
  (kind: TaskKind): RewardFunction =>
  (a) =>
    kind === 'code'
      ? Promise.all(a.completions.map(async (c, i) => (await verify(itemOf(kind, a, i), c)).reward))
      : a.completions.map((c, i) => verifyAnswer(itemOf(kind, a, i), c).reward);

/**
 * The built-in reward functions, by the names configs use: `gsm8k` and `math` (1 or 0 against the
 * `answer` column), `code` (format + pass rate in [0, 2], running the `tests` column in the sandbox;
 * `entry_point` and `code_context` columns are used where present).
 */
export const BUILTIN_REWARDS: Readonly<Record<string, RewardFunction>> = Object.freeze({
  gsm8k: byKind('gsm8k'),
  math: byKind('math'),
  code: byKind('code'),
});

/**
 * The reward function called `name`: the caller's own (e.g. exported by a config's rewardModule)
 * first, else a built-in one.
 * @throws {ConfigError} When neither has it; the message lists the built-in names.
 */
export function rewardFunction(name: string, own: Record<string, RewardFunction> = {}): RewardFunction {
  const fn = Object.hasOwn(own, name) ? own[name] : Object.hasOwn(BUILTIN_REWARDS, name) ? BUILTIN_REWARDS[name] : undefined;
  if (!fn) throw new ConfigError(`Unknown reward function \`${name}\`: not built in (${Object.keys(BUILTIN_REWARDS).join(', ')}) and not exported by rewardModule`);
  return fn;
}
