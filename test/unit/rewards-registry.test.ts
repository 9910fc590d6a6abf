// The reward registry: one table of verifiers and reward functions that the trainer, the
// evaluation harness and the demo share.
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../lib/errors.js';
import { scoreItem } from '../../lib/demo/sampling.js';
import { BUILTIN_REWARDS, rewardFunction, verify, verifyAnswer, type RewardArgs } from '../../lib/rewards/registry.js';
import { BUILTIN_REWARDS as TRAINER_REWARDS } from '../../lib/train/grpo.js';
import { Sandbox } from '../../lib/rewards/sandbox.js';

const args = (completions: string[], columns: Record<string, unknown[]>): RewardArgs => ({
  prompts: completions.map(() => 'p'),
  completions,
  completionIds: completions.map(() => [1]),
  ...columns,
});

describe('reward registry', () => {
  it('names gsm8k, math and code, and the trainer uses the same table', () => {
    expect(Object.keys(BUILTIN_REWARDS).sort()).toEqual(['code', 'gsm8k', 'math']);
    expect(TRAINER_REWARDS).toBe(BUILTIN_REWARDS);
  });

  it('prefers the caller\'s own function and names the built-in ones when a name is unknown', () => {
    const own = () => [1];
    expect(rewardFunction('gsm8k', { gsm8k: own })).toBe(own);
    expect(rewardFunction('math')).toBe(BUILTIN_REWARDS.math);
    expect(() => rewardFunction('nope')).toThrow(ConfigError);
    expect(() => rewardFunction('nope')).toThrow(/Unknown reward function `nope`.*gsm8k, math, code/);
    expect(() => rewardFunction('toString')).toThrow(ConfigError); // not an inherited property
  });

  it('scores answer tasks from the answer column', async () => {
    const r = await BUILTIN_REWARDS.gsm8k!(args(['The answer is 42.', 'It is 41.'], { answer: ['#### 42', '#### 42'] }));
    expect(r).toEqual([1, 0]);
    const m = await BUILTIN_REWARDS.math!(args(['\\boxed{\\frac{1}{2}}'], { solution: ['\\boxed{0.5}'] }));
    expect(m).toEqual([1]);
    await expect(async () => BUILTIN_REWARDS.gsm8k!(args(['1'], {}))).rejects.toThrow(/needs an `answer`/);
  });

  it('verify() and verifyAnswer() give the verdict the eval harness and the demo report', async () => {
    const item = { kind: 'gsm8k' as const, gold: '#### 7', id: 'g/1' };
    expect(verifyAnswer(item, 'so \\boxed{7}')).toEqual({ reward: 1, correct: true, extracted: '7' });
    expect(await verify(item, 'it is 8')).toMatchObject({ reward: 0, correct: false, extracted: '8' });
    expect(scoreItem({ ...item, prompt: 'q' }, 'so \\boxed{7}')).toBe(1);
    expect(() => verifyAnswer({ kind: 'code', tests: ['assert True'], id: 'c/1' }, 'x')).toThrow(/code runs through verify/);
  });

  it('scores code from the tests and entry_point columns in the sandbox', async () => {
    let sandbox: Sandbox;
    try {
      sandbox = await Sandbox.create();
    } catch (e) {
      console.warn(`code reward through the registry skipped: ${(e as Error).message}`);
      return;
    }
    const good = '```python\ndef sq(x):\n    return x * x\n```';
    const bad = '```python\ndef sq(x):\n    return x + x\n```';
    const r = await BUILTIN_REWARDS.code!(args([good, bad], { test: [['assert sq(3) == 9', 'assert sq(2) == 4'], ['assert sq(3) == 9', 'assert sq(2) == 4']] }));
    expect(r).toEqual([2, 1.5]); // format 1 + pass rate 1; format 1 + pass rate 1/2 (2 + 2 == 2 * 2)
    const v = await verify({ kind: 'code', tests: 'def check(c):\n    assert c(4) == 16\ncheck(sq)', entryPoint: 'sq' }, good, { sandbox });
    expect(v).toMatchObject({ reward: 2, correct: true, passRate: 1, format: 1, failures: [] });
  });
});
