import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultDataDir } from '../../lib/eval/tasks.js';
import { rewards } from '../../lib/rewards/index.js';
import { extractMathAnswer, isEquivMath, lastBoxed, latexToMathjs, math, normalizeMathAnswer } from '../../lib/rewards/math.js';

const dataDir = defaultDataDir();
const haveData = existsSync(path.join(dataDir, 'math500', 'test.jsonl'));
if (!haveData) console.warn(`MATH-500 data tests skipped: no data at ${dataDir} (set JUSTGRPO_DATA)`);

// Pairs a MATH grader must judge equivalent: every normalisation rule and equivalence path once,
// mostly in forms that MATH-500 answers actually take.
const EQUIVALENT: [string, string][] = [
  ['\\frac{1}{2}', '0.5'], ['\\frac12', '1/2'], ['\\dfrac{3}{4}', '\\tfrac34'], ['0.5', '.5'], ['\\frac{3}{2}', '1.5'],
  ['1\\frac{4}{5}', '\\frac{9}{5}'], ['137 \\frac{1}{2}', '137.5'], ['10,\\!080', '10080'], ['11,\\! 111,\\! 111,\\! 100', '11111111100'],
  ['\\$32,\\!348', '32348'], ['90^\\circ', '90'], ['120^{\\circ}', '120'], ['50\\%', '50'], ['5.4 \\text{ cents}', '5.4'],
  ['864 \\mbox{ inches}^2', '864'], ['\\frac{270}7\\text{ degrees}', '\\frac{270}{7}'], ['\\text{Evelyn}', 'Evelyn'], ['\\text{east}', 'East'],
  ['\\text{(C)}', 'C'], ['(B)', '\\text{B}'], ['x=5', '5'], ['y = 2x + 3', '2x+3'], ['x \\in [-2,7]', '[-2,7]'],
  ['\\sqrt2', '\\sqrt{2}'], ['11\\sqrt2', '11 \\sqrt{2}'], ['2\\sqrt{2}', '\\sqrt{8}'], ['\\frac{\\sqrt{3}}{3}', '\\frac{1}{\\sqrt{3}}'],
  ['\\left( 3, \\frac{\\pi}{2} \\right)', '(3,\\pi/2)'], ['(3,4]', '\\left(3, 4\\right]'], ['(2,\\infty)', '(2, \\infty)'],
  ['(-\\infty, 0]', '(-\\infty,0]'], ['(0,9) \\cup (9,36)', '(9,36)\\cup(0,9)'], ['1,-2', '-2, 1'], ['3, 5, 7', '7,5,3'],
  ['1 \\pm \\sqrt{19}', '1+\\sqrt{19}, 1-\\sqrt{19}'], ['\\{1\\pm\\sqrt{5},-2\\}', '-2, 1-\\sqrt5, 1+\\sqrt5'],
  ['6 - 5i', '6-5i'], ['1+2i', '2i+1'],
  ['\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}', '\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\\\ \\frac{5}{3} \\end{pmatrix}'],
  ['x^5 - x^4 + x^3 - x^2 + x - 1', '(x-1)(x^4+x^2+1)'], ['(a+5)(b+2)', 'ab+2a+5b+10'], ['6r^2-4r-24', '2(3r^2-2r-12)'],
  ['p - q', '-q+p'], ['2k+2', '2(k+1)'], ['\\frac{11+9a}{20}', '\\frac{11}{20}+\\frac{9a}{20}'],
  ['5x - 7y + 11z + 4 = 0', '-5x + 7y - 11z - 4 = 0'], ['y = -2x', '2x + y = 0'], ['-\\frac{\\pi}{6}', '-\\pi/6'],
  ['288 \\pi', '288\\pi'], ['\\frac{20000}{\\pi}', '20000/\\pi'], ['18+2\\pi', '2\\pi + 18'], ['\\cot x', '\\frac{\\cos x}{\\sin x}'],
  ['3R^2', '3 R^2'], ['52_8', '52_{8}'], ['4210_{5}', '4210_5'], ['.0000672', '6.72 \\times 10^{-5}'], ['\\frac{448}{15625}', '0.028672'],
  ['1.25', '\\frac{5}{4}'], ['3.21', '3.210'], ['\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]', '[\\pi^2/8, 5\\pi^2/4]'],
  ['\\$18.90', '18.9'], ['\\binom{5}{2}', '10'], ['2^{10}', '1024'], ['\\sqrt[3]{8}', '2'], ['e^{0}', '1'], ['x^2+2x+1', '(x+1)^2'],
  ['5', '5.0'], ['\\frac{14}{3}', '4\\frac{2}{3}'],
];

const DIFFERENT: [string, string][] = [
  ['120006', '120000'], ['10081', '10080'], ['10080', '10,081'], ['10080', '10080.5'], ['\\frac{1}{3}', '0.333'], ['\\frac{1}{2}', '\\frac{1}{3}'],
  ['3', '-3'], ['2', '\\sqrt{2}'], ['(3,4]', '(3,4)'], ['[2,5)', '(2,5)'], ['(1,2)', '(2,1)'], ['(1,2,3)', '(1,2)'], ['1,2', '1,2,3'],
  ['6-5i', '6+5i'], ['x^2+1', 'x^2-1'], ['2k+2', '2n+2'], ['(a+5)(b+2)', '(a+2)(b+5)'], ['\\pi', '3.14'], ['52_8', '52'],
  ['\\text{east}', 'west'], ['C', 'D'], ['\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}', '\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}'],
  ['y = 2x + 3', 'y = 3x + 2'], ['5x - 7y + 11z + 4 = 0', '5x - 7y + 11z - 4 = 0'], ['90^\\circ', '45^\\circ'], ['0', '\\emptyset'],
  ['1 \\pm \\sqrt{19}', '1 + \\sqrt{19}'], ['\\frac{\\sqrt{3}}{3}', '\\sqrt{3}'], ['\\cot x', '\\tan x'], ['2', ''], ['', ''],
];

describe('MATH answer extraction and normalisation', () => {
  it('takes the last \\boxed{} or \\fbox{} with nested braces', () => {
    expect(lastBoxed('first \\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}}.')).toBe('\\frac{1}{\\sqrt{2}}');
    expect(lastBoxed('\\fbox{\\{1, 2\\}}')).toBe('\\{1, 2\\}');
    expect(lastBoxed('so \\boxed 5$')).toBe('5');
    expect(lastBoxed('\\boxed{unclosed')).toBeUndefined();
    expect(lastBoxed('no box')).toBeUndefined();
    expect(extractMathAnswer('Thus the answer is: $\\frac{3}{4}$.')).toBe('\\frac{3}{4}');
  });

  it('normalises the way MATH graders do', () => {
    expect(normalizeMathAnswer('\\left( 3, \\dfrac{\\pi}{2} \\right)')).toBe('(3,\\frac{\\pi}{2})');
    expect(normalizeMathAnswer('\\$1,\\!000.')).toBe('1000');
    expect(normalizeMathAnswer('\\frac 59')).toBe('\\frac{5}{9}');
    expect(normalizeMathAnswer('3/4')).toBe('\\frac{3}{4}');
    expect(normalizeMathAnswer('\\text{(E)}')).toBe('E');
    expect(normalizeMathAnswer('15\\mbox{ cm}^2')).toBe('15');
    expect(normalizeMathAnswer('\\cot x')).toBe('\\cot x');
  });

  it('converts LaTeX to mathjs syntax', () => {
    expect(latexToMathjs('2\\sqrt{3}x')).toBe('2 * sqrt(3) * x');
    // A bracket after an operand multiplies (mathjs would otherwise read a call).
    expect(latexToMathjs('\\frac{a}{b}(x+1)')).toBe('((a)/(b)) * (x + 1)');
    expect(latexToMathjs('\\sin^2 x + \\phi')).toBe('sin(x)^(2) + g_phi');
  });
});

describe('isEquivMath', () => {
  it(`judges ${EQUIVALENT.length} known-equivalent pairs equivalent`, () => {
    const missed = EQUIVALENT.filter(([a, b]) => !isEquivMath(a, b) || !isEquivMath(b, a));
    expect(missed).toEqual([]);
  });

  it(`judges ${DIFFERENT.length} known-different pairs different`, () => {
    const wrong = DIFFERENT.filter(([a, b]) => isEquivMath(a, b) || isEquivMath(b, a));
    expect(wrong).toEqual([]);
  });

  it('has at least 60 pairs in its table', () => {
    expect(EQUIVALENT.length + DIFFERENT.length).toBeGreaterThanOrEqual(60);
  });
});

describe('rewards.math', () => {
  it('scores the boxed answer against a solution or a bare gold', () => {
    expect(rewards.math('So $x = \\boxed{\\dfrac{1}{2}}$.', 'Hence \\boxed{0.5}.')).toBe(1);
    expect(math('\\boxed{2}', '\\frac{4}{2}')).toBe(1);
    expect(math('\\boxed{3}', '2')).toBe(0);
    expect(math('no answer given', '2')).toBe(0);
  });

  it.skipIf(!haveData)('judges all 500 MATH-500 boxed answers equivalent to their "The answer is:" lines', () => {
    const rows = readFileSync(path.join(dataDir, 'math500', 'test.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { question: string; answer: string });
    expect(rows).toHaveLength(500);
    const failed: string[] = [];
    for (const r of rows) {
      const [solution, line] = [r.answer.slice(0, r.answer.lastIndexOf('The answer is:')), r.answer.split('The answer is:').pop()!.trim()];
      const boxed = lastBoxed(solution);
      if (boxed === undefined || !isEquivMath(boxed, line) || math(solution, line) !== 1 || math(r.answer, r.answer) !== 1) failed.push(line);
    }
    expect(failed).toEqual([]);
  });

  it.skipIf(!haveData)('does not judge neighbouring MATH-500 answers equivalent unless they are', () => {
    const answers = readFileSync(path.join(dataDir, 'math500', 'test.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { answer: string }).answer.split('The answer is:').pop()!.trim());
    const equal: string[] = [];
    for (let i = 0; i + 1 < answers.length; i++) {
      const [a, b] = [answers[i]!, answers[i + 1]!];
      if (normalizeMathAnswer(a) !== normalizeMathAnswer(b) && isEquivMath(a, b)) equal.push(`${a} | ${b}`);
    }
    expect(equal).toEqual([]);
  });
});
