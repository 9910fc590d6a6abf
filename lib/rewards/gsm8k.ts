import { expected } from '../errors.js';
import { lastBoxed } from './boxed.js';
import { divide, parseDecimal, rationalsMatch, type Rational } from './numbers.js';

/** Relative tolerance for non-integer GSM8K answers (JustGRPO's grader uses the same 1e-4). */
export const GSM8K_RELATIVE_TOLERANCE = 1e-4;

/** Which rule found the predicted answer; useful in per-sample eval records. */
export type Gsm8kAnswerSource = 'boxed' | 'the answer is' | 'final answer is' | 'last number';

/** An answer pulled out of a completion or a gold solution. */
export type Gsm8kAnswer = {
  /** The matched text, e.g. `1,000` or `\frac{3}{4}`. */
  text: string;
  /** Its exact value. */
  value: Rational;
  /** The rule that found it. */
  source: Gsm8kAnswerSource;
};

// One numeric token: \frac{a}{b}, a decimal with optional thousands commas, optionally `/ b`.
// A minus counts as a sign only when it does not follow a word character or a closing bracket,
// so "ages 3-5" yields 3 and 5, not -5.
const NUM = String.raw`(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+`;
const NUMBER_RE = new RegExp(
  String.raw`\\[dt]?frac\s*\{\s*((?:(?<![\w)\]])[-\u2212])?(?:${NUM}))\s*\}\s*\{\s*((?:${NUM}))\s*\}` +
    String.raw`|((?:(?<![\w)\]])[-\u2212])?(?:${NUM}))(?:\s*\/\s*(${NUM}))?`,
  'g',
);

function tokenValue(m: RegExpExecArray): Rational | undefined {
  if (m[1] !== undefined) {
    const a = parseDecimal(m[1]);
    const b = parseDecimal(m[2]!);
    return a && b ? divide(a, b) : undefined;
  }
  const a = parseDecimal(m[3]!);
  if (!a) return undefined;
  if (m[4] === undefined) return a;
  const b = parseDecimal(m[4]);
  return b ? divide(a, b) : undefined;
}

function numbersIn(text: string): { text: string; value: Rational }[] {
  const out: { text: string; value: Rational }[] = [];
  NUMBER_RE.lastIndex = 0;
  for (let m = NUMBER_RE.exec(text); m; m = NUMBER_RE.exec(text)) {
    const value = tokenValue(m);
    if (value) out.push({ text: m[0], value });
  }
  return out;
}

function lastIndexOfPhrase(text: string, re: RegExp): number {
  let at = -1;
  for (let m = re.exec(text); m; m = re.exec(text)) at = re.lastIndex;
  re.lastIndex = 0;
  return at;
}

const THE_ANSWER_IS = /the answer is/gi;
const FINAL_ANSWER_IS = /final answer is/gi;

/**
 * Extracts the predicted answer from a GSM8K completion, trying in order: the last `\boxed{...}`,
 * the first number after the last "the answer is", the first number after the last "final answer
 * is" (in both cases the number after the last `=` when that line is an equation), and finally the
 * last number in the text. Commas, `$`, `%`, units and trailing periods fall
 * away because only the numeric token is kept. Returns undefined when the text holds no number.
 */
export function extractGsm8kAnswer(completion: string): Gsm8kAnswer | undefined {
  const boxed = lastBoxed(completion);
  if (boxed !== undefined) {
    const n = numbersIn(boxed)[0];
    if (n) return { ...n, source: 'boxed' };
  }
  for (const [re, source] of [
    [THE_ANSWER_IS, 'the answer is'],
    [FINAL_ANSWER_IS, 'final answer is'],
  ] as const) {
    const at = lastIndexOfPhrase(completion, re);
    if (at >= 0) {
      // "the final answer is 15 gallons * 8 pints = 120 pints": an equation's result is its
      // right-hand side, so on that line the number after the last `=` wins.
      const rest = completion.slice(at);
      const line = rest.split('\n')[0]!;
      const eq = line.lastIndexOf('=');
      const n = (eq >= 0 ? numbersIn(line.slice(eq + 1))[0] : undefined) ?? numbersIn(rest)[0];
      if (n) return { ...n, source };
    }
  }
  const all = numbersIn(completion);
  const last = all[all.length - 1];
  return last ? { ...last, source: 'last number' } : undefined;
}

/**
 * Extracts the gold answer: the number after the last `####` of a GSM8K solution, or, for a gold
 * given as just the answer, the same rules as {@link extractGsm8kAnswer}.
 */
export function extractGsm8kGold(gold: string): Gsm8kAnswer | undefined {
  const hash = gold.lastIndexOf('####');
  if (hash >= 0) {
    const n = numbersIn(gold.slice(hash + 4))[0];
    return n ? { ...n, source: 'last number' } : undefined;
  }
  return extractGsm8kAnswer(gold);
}

/**
 * True when two extracted answers agree: integers exactly, other values within a relative tolerance
 * of 1e-4. Unlike JustGRPO's grader, which applies the tolerance to integers too (and so accepts
 * 120,006 for 120,000), an integer never matches a different number.
 */
export function gsm8kAnswersMatch(predicted: Rational, gold: Rational): boolean {
  return rationalsMatch(predicted, gold, GSM8K_RELATIVE_TOLERANCE);
}

/**
 * The GSM8K reward: 1 when the completion's answer equals the gold answer, else 0 (the trainer maps
 * it to JustGRPO's +1/-1 when asked; group-normalised advantages are the same either way).
 *
 * @param completion The model's response.
 * @param gold A full GSM8K solution ending in `#### N`, or just the answer `N`.
 * @throws {InputError} When `gold` holds no number, which means the data set is wrong.
 */
export function gsm8k(completion: string, gold: string): number {
  const g = extractGsm8kGold(gold);
  if (!g) throw expected('a gold answer with a number', 'gold', gold);
  const p = extractGsm8kAnswer(completion);
  return p && gsm8kAnswersMatch(p.value, g.value) ? 1 : 0;
}
