import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { humanevalProgram, runEval, writeEvalOutputs, type GenerateFn } from '../../lib/eval/harness.js';
import { defaultKs, meanPassAtK, passAtK } from '../../lib/eval/passk.js';
import { defaultDataDir, humanevalPrompt, loadTask, MATH_INSTRUCTION, mbppPrompt, TaskDataError, type EvalTask } from '../../lib/eval/tasks.js';
import { extractGsm8kGold } from '../../lib/rewards/gsm8k.js';
import { lastBoxed } from '../../lib/rewards/math.js';
import { Sandbox } from '../../lib/rewards/sandbox.js';

const dataDir = defaultDataDir();
const haveData = ['gsm8k', 'math500', 'humaneval', 'mbpp'].every((d) => existsSync(path.join(dataDir, d)));
if (!haveData) console.warn(`eval data tests skipped: no data at ${dataDir} (set JUSTGRPO_DATA)`);

let sandbox: Sandbox | undefined;
try {
  sandbox = await Sandbox.create();
} catch (e) {
  console.warn(`eval code-task tests skipped: ${(e as Error).message}`);
}

/** Exact C(a, b) as a BigInt, for checking the estimator against the definition. */
function choose(a: number, b: number): bigint {
  if (b < 0 || b > a) return 0n;
  let r = 1n;
  for (let i = 1; i <= b; i++) r = (r * BigInt(a - b + i)) / BigInt(i);
  return r;
}

describe('passAtK', () => {
  it('matches 1 - C(n-c, k) / C(n, k) computed exactly', () => {
    for (const [n, c, k] of [[10, 3, 1], [10, 3, 5], [16, 0, 4], [16, 16, 1], [20, 1, 10], [50, 7, 13], [100, 50, 50]] as const) {
      const exact = 1 - Number((choose(n - c, k) * 10n ** 15n) / choose(n, k)) / 1e15;
      expect(passAtK(n, c, k)).toBeCloseTo(exact, 12);
    }
  });

  it('is c/n at k = 1, 1 when fewer than k samples are wrong, and stable for large n', () => {
    expect(passAtK(16, 5, 1)).toBeCloseTo(5 / 16, 15);
    expect(passAtK(16, 14, 3)).toBe(1);
    expect(passAtK(16, 0, 16)).toBe(0);
    const big = passAtK(2000, 3, 1000);
    expect(big).toBeGreaterThan(0.87);
    expect(big).toBeLessThan(0.88); // 1 - (1000*999*998)/(2000*1999*1998) = 0.8751...
    expect(Number.isFinite(passAtK(10_000, 1, 5000))).toBe(true);
  });

  it('averages over problems and validates its inputs', () => {
    expect(meanPassAtK([{ n: 4, c: 4 }, { n: 4, c: 0 }], 2)).toBe(0.5);
    expect(() => passAtK(4, 5, 1)).toThrow(/`c`/);
    expect(() => passAtK(4, 1, 5)).toThrow(/`k`/);
    expect(() => passAtK(0, 0, 1)).toThrow(/`n`/);
    expect(defaultKs(16)).toEqual([1, 2, 4, 8, 16]);
    expect(defaultKs(1)).toEqual([1]);
    expect(defaultKs(10)).toEqual([1, 2, 4, 8, 10]);
  });
});

describe('prompts as JustGRPO builds them', () => {
  it('MBPP: task text, the unit tests, and a stub with the first call\'s arity', () => {
    const tests = ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"'];
    expect(mbppPrompt('Write a python function to remove first and last occurrence of a given character from the string.', tests)).toBe(
      'You are an expert Python programmer. Your task is to complete the implementation of a function named `remove_Occ`.\n\n' +
        '** TARGET FUNCTION **\nWrite a python function to remove first and last occurrence of a given character from the string.\n\n' +
        '** UNIT TESTS **\nYour code should pass unit tests like:\n' +
        '    assert remove_Occ("hello","l") == "heo"\n    assert remove_Occ("abcda","a") == "bcd"\n\n' +
        'Here is the function to complete:\n```python\ndef remove_Occ(input_param_1, input_param_2):\n' +
        '    """Write a python function to remove first and last occurrence of a given character from the string.\n    """\n```\n',
    );
    // Keyword arguments do not count; a dotted callee never matches JustGRPO's ast search.
    expect(mbppPrompt('t', ['assert f([1, (2, 3)], "a,b", key=len) == 1'])).toContain('def f(input_param_1, input_param_2):');
    expect(mbppPrompt('t', ['assert math.isclose(area(2), 12.56)'])).toContain('def math.isclose():');
    expect(mbppPrompt('t', ['assert set(similar((3, 4), (5, 4))) == set((4,))'])).toContain('def set(input_param_1):');
  });

  it('HumanEval: the function in a python fence', () => {
    expect(humanevalPrompt('def f(x):\n    """Double x."""\n\n\n', 'f')).toBe(
      'You are an expert Python programmer. Your task is to complete the implementation of a function named `f`.\n\n' +
        'Here is the function to complete:\n```python\ndef f(x):\n    """Double x."""\n```\n',
    );
  });

  it('HumanEval programs: a body runs after the prompt, a full function after its imports', () => {
    const item = { entryPoint: 'f', codeContext: 'from typing import List\n\n\ndef f(xs: List[int]) -> int:\n    """Sum."""\n' };
    expect(humanevalProgram('    return sum(xs)\n', item)).toBe(item.codeContext + '    return sum(xs)\n');
    expect(humanevalProgram('def f(xs):\n    return sum(xs)\n', item)).toBe('from typing import List\ndef f(xs):\n    return sum(xs)\n');
  });

  it.skipIf(!haveData)('loads the four benchmarks with their sizes and prompt shapes', async () => {
    const [gsm, math, he, mbpp] = await Promise.all(['gsm8k', 'math500', 'humaneval', 'mbpp'].map((t) => loadTask(t, { dataDir })));
    expect(gsm!.items).toHaveLength(1319);
    expect(gsm!.items[0]!.prompt).toMatch(/^Janet’s ducks lay 16 eggs per day\./);
    expect(gsm!.items[0]!.prompt).not.toContain('boxed'); // GSM8K: the raw question
    expect(extractGsm8kGold(gsm!.items[0]!.gold!)?.text).toBe('18');
    expect(math!.items).toHaveLength(500);
    expect(math!.items.every((x) => x.prompt.endsWith(MATH_INSTRUCTION))).toBe(true);
    expect(math!.items[0]!.prompt).toBe(
      'Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer in the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$' +
        '(Please put the final answer in \\boxed{} tag, i.e. $\\boxed{answer here}$)',
    );
    expect(lastBoxed(math!.items[0]!.gold!)).toBe('\\left( 3, \\frac{\\pi}{2} \\right)');
    expect(he!.items).toHaveLength(164);
    expect(he!.items[0]!.id).toBe('HumanEval/0');
    expect(he!.items[0]!.tests).toMatch(/check\(has_close_elements\)\n$/);
    expect(mbpp!.items).toHaveLength(500);
    expect(mbpp!.items[0]!.id).toBe('mbpp/11');
    expect(mbpp!.items[499]!.id).toBe('mbpp/510');
    // Arity of the stub over all 500 tasks, as JustGRPO's ast search gives it.
    const arity: Record<number, number> = {};
    for (const it of mbpp!.items) {
      const params = /```python\ndef [^(]*\((.*)\):\n/.exec(it.prompt)![1]!;
      const n = params === '' ? 0 : params.split(', ').length;
      arity[n] = (arity[n] ?? 0) + 1;
    }
    expect(arity).toEqual({ 1: 289, 2: 150, 3: 53, 4: 6, 5: 1, 6: 1 });
  });

  it('says where the data should be when it is missing', async () => {
    await expect(loadTask('gsm8k', { dataDir: '/nonexistent/data' })).rejects.toThrow(TaskDataError);
    await expect(loadTask('gsm8k', { dataDir: '/nonexistent/data' })).rejects.toThrow(/JUSTGRPO_DATA/);
    await expect(loadTask('squad')).rejects.toThrow(/`task`/);
  });
});

describe('runEval', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'justgrpo-eval-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function jsonlTask(rows: object[]): Promise<EvalTask> {
    const file = path.join(dir, `task-${Math.random().toString(36).slice(2)}.jsonl`);
    await writeFile(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    return loadTask(file);
  }

  it('scores a generic GSM8K-style task, with pass@k, tokens/s and NFE', async () => {
    const task = await jsonlTask([
      { question: 'What is 2 + 3?', answer: '2 + 3 = 5\n#### 5' },
      { question: 'What is 10 * 10?', answer: '#### 100' },
      { question: 'What is 7 - 9?', answer: '#### -2' },
    ]);
    expect(task.kind).toBe('gsm8k');
    // Item 0 always right, item 1 right on even samples, item 2 never.
    let call = 0;
    const generate: GenerateFn = async (prompts) => {
      await new Promise((r) => setTimeout(r, 5));
      return prompts.map((p) => {
        const k = call++;
        const text = p.includes('2 + 3') ? 'The answer is 5.' : p.includes('10 * 10') ? `The answer is ${k % 2 === 0 ? 100 : 99}.` : 'I think 3.';
        return { text, tokens: 10, nfe: 20 };
      });
    };
    const fractions: number[] = [];
    const report = await runEval({ task, generate, samples: 4, batchSize: 4, onProgress: (f) => fractions.push(f) });
    const r = report.results;
    expect(r).toMatchObject({ task: task.name, items: 3, samples: 4, total: 12, correct: 6, accuracy: 0.5, meanNfe: 20, meanTokens: 10 });
    expect(r.passAtK['pass@1']).toBeCloseTo(0.5, 12);
    expect(r.passAtK['pass@2']).toBeCloseTo((1 + passAtK(4, 2, 2) + 0) / 3, 12);
    expect(r.passAtK['pass@4']).toBeCloseTo(2 / 3, 12);
    expect(r.tokensPerSecond).toBeGreaterThan(0);
    expect(fractions[fractions.length - 1]).toBe(1);
    expect(fractions).toEqual([...fractions].sort((a, b) => a - b));
    expect(report.records[0]).toMatchObject({ id: '0', sample: 0, prompt: 'What is 2 + 3?', completion: 'The answer is 5.', extracted: '5', correct: true, reward: 1 });
    expect(report.records[8]).toMatchObject({ id: '2', extracted: '3', correct: false, reward: 0 });

    const paths = await writeEvalOutputs(path.join(dir, 'out'), report);
    const written = JSON.parse(await readFile(paths.results, 'utf8'));
    expect(written.accuracy).toBe(0.5);
    const lines = (await readFile(paths.samples, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(12);
    expect(Object.keys(lines[0])).toEqual(expect.arrayContaining(['prompt', 'completion', 'extracted', 'correct']));
  });

  it('scores a MATH-style task and honours limit', async () => {
    const task = await jsonlTask([
      { problem: 'Half of one?', solution: 'It is $\\boxed{\\frac{1}{2}}$.' },
      { problem: 'Root of four?', solution: '\\boxed{2}' },
      { problem: 'Skipped', solution: '\\boxed{0}' },
    ]);
    expect(task.kind).toBe('math');
    const generate: GenerateFn = async (prompts) => prompts.map((p) => ({ text: p.startsWith('Half') ? 'So \\boxed{0.5}.' : '\\boxed{-2}' }));
    const { results, records } = await runEval({ task, generate, limit: 2 });
    expect(results).toMatchObject({ items: 2, total: 2, correct: 1, tokensPerSecond: null, meanNfe: null });
    expect(records.map((r) => r.extracted)).toEqual(['0.5', '-2']);
  });

  it('stops when aborted', async () => {
    const task = await jsonlTask([{ question: 'q1', answer: '#### 1' }, { question: 'q2', answer: '#### 2' }]);
    const controller = new AbortController();
    const generate: GenerateFn = async (ps) => {
      controller.abort();
      return ps.map(() => ({ text: '1' }));
    };
    await expect(runEval({ task, generate, batchSize: 1, signal: controller.signal })).rejects.toThrow(/abort/i);
  });

  it('loads a generic code task from JSONL', async () => {
    const task = await jsonlTask([{ task_id: 'add', prompt: 'Write add(a, b).', tests: ['assert add(1, 2) == 3'] }]);
    expect(task.kind).toBe('code');
    expect(task.items[0]).toMatchObject({ id: 'add', kind: 'code', tests: ['assert add(1, 2) == 3'] });
  });

  it('rejects a generate that returns the wrong number of outputs', async () => {
    const task = await jsonlTask([{ question: 'q', answer: '#### 1' }]);
    await expect(runEval({ task, generate: async () => [] })).rejects.toThrow(/generate\(\)/);
    await expect(runEval({ task, generate: async () => [], samples: 0 })).rejects.toThrow(/`samples`/);
  });

  it('refuses to evaluate nothing (limit 0, or a task without items) instead of reporting an empty table', async () => {
    const task = await jsonlTask([{ question: 'q', answer: '#### 1' }]);
    await expect(runEval({ task, generate: async (ps) => ps.map(() => ({ text: '1' })), limit: 0 })).rejects.toThrow(/a positive integer for `limit`/);
    await expect(runEval({ task: { ...task, items: [] }, generate: async () => [] })).rejects.toThrow(/has no items to evaluate/);
  });

  it.skipIf(!sandbox || !haveData)('scores HumanEval and MBPP items in the sandbox, with per-sample failures', async () => {
    const he = await loadTask('humaneval', { dataDir });
    const mbpp = await loadTask('mbpp', { dataDir });
    const canonical = '```python\nfrom typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n' +
      '    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n```';
    const heReport = await runEval({ task: he, limit: 1, samples: 2, sandbox, generate: async (ps) => ps.map((_, i) => ({ text: i === 0 ? canonical : 'def has_close_elements(n, t):\n    return False' })) });
    expect(heReport.results).toMatchObject({ correct: 1, total: 2 });
    expect(heReport.records[0]).toMatchObject({ correct: true, format: 1, passRate: 1, reward: 2 });
    expect(heReport.records[1]).toMatchObject({ correct: false, format: 0, passRate: 0 });
    expect(heReport.records[1]!.failures).toEqual(['test 0: AssertionError']);

    const wrongOcc = '```python\ndef remove_Occ(s, ch):\n    return s[1:-1]\n```';
    const mbppReport = await runEval({ task: mbpp, limit: 1, sandbox, generate: async (ps) => ps.map(() => ({ text: wrongOcc })) });
    // Dropping the first and last characters passes "abcda" and "PHP" but not "hello".
    expect(mbppReport.records[0]).toMatchObject({ correct: false, passRate: 2 / 3, format: 1 });
    expect(mbppReport.records[0]!.failures).toEqual(['test 0: AssertionError']);
    expect(mbppReport.results.passAtK['pass@1']).toBe(0);
  });
});
