import { code } from './code.js';
import { gsm8k } from './gsm8k.js';
import { math } from './math.js';

/**
 * The verifiers, by task:
 * - `rewards.gsm8k(completion, gold)`: 1 or 0;
 * - `rewards.math(completion, gold)`: 1 or 0;
 * - `rewards.code(completion, tests, opts)`: a Promise of `format + passRate`, in [0, 2].
 */
export const rewards = { gsm8k, math, code };

export {
  extractGsm8kAnswer,
  extractGsm8kGold,
  gsm8kAnswersMatch,
  GSM8K_RELATIVE_TOLERANCE,
  type Gsm8kAnswer,
  type Gsm8kAnswerSource,
} from './gsm8k.js';
export {
  extractMathAnswer,
  extractMathGold,
  isEquivMath,
  lastBoxed,
  latexToMathjs,
  normalizeMathAnswer,
  type MathEquivOptions,
} from './math.js';
export { extractCode, scoreCode, singlePythonBlock, type CodeRewardOptions, type CodeScore } from './code.js';
export {
  defaultPython,
  defaultSandbox,
  Sandbox,
  SandboxError,
  type SandboxCapabilities,
  type SandboxIsolation,
  type SandboxOptions,
  type SandboxResult,
  type SandboxRunOptions,
} from './sandbox.js';
export type { Rational } from './numbers.js';
export {
  rewardFunction,
  verify,
  verifyAnswer,
  type RewardArgs,
  type RewardFunction,
  type Verdict,
  type VerifyItem,
  type VerifyOptions,
} from './registry.js';
export { seccompFilter } from './seccomp.js';
