// Reward throughput: GSM8K and MATH verifiers on 1000 completions, and the code sandbox on a
// batch of small programs. Run after `npm run build:ts`; `bench/run.js` calls bench(), and
// `node bench/rewards.mjs` runs it alone.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function time(fn, runs) {
  fn(); // warm up the JIT and the regexes
  const ms = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

/** GSM8K completions: the test set's gold solutions where the data is present, else synthetic ones. */
function gsm8kCompletions(n) {
  const data = process.env.JUSTGRPO_DATA || path.resolve(here, '..', '..', 'shared', 'data');
  const file = path.join(data, 'gsm8k', 'test.jsonl');
  if (existsSync(file)) {
    const rows = readFileSync(file, 'utf8').trim().split('\n').slice(0, n).map((l) => JSON.parse(l));
    if (rows.length === n) return { source: 'GSM8K test solutions', pairs: rows.map((r) => [r.answer, r.answer]) };
  }
  const pairs = Array.from({ length: n }, (_, i) => [
    `Step 1: ${i} + 12 = <<${i}+12=${i + 12}>>${i + 12}.\nStep 2: times 3 is ${3 * (i + 12)}, costing $1,${String(i % 1000).padStart(3, '0')}.\nThe answer is ${3 * (i + 12)}.`,
    `#### ${3 * (i + 12)}`,
  ]);
  return { source: 'synthetic completions', pairs };
}

export async function bench({ runs = 9 } = {}) {
  const { rewards, Sandbox } = await import(pathToFileURL(path.resolve(here, '..', 'dist', 'rewards', 'index.js')).href);
  const results = {};

  const { source, pairs } = gsm8kCompletions(1000);
  let correct = 0;
  const gsmMs = time(() => {
    correct = 0;
    for (const [c, g] of pairs) correct += rewards.gsm8k(c, g);
  }, runs);
  console.log(`rewards.gsm8k: 1000 completions in ${gsmMs.toFixed(1)} ms (median of ${runs} runs; ${source}, ${correct} correct)`);
  results.gsm8kMs = gsmMs;

  const mathPairs = Array.from({ length: 1000 }, (_, i) => [
    `We simplify and get $\\boxed{\\frac{${i + 1}}{${2 * i + 4}}}$.`,
    `${(i + 1) / (2 * i + 4)}`,
  ]);
  const mathMs = time(() => {
    for (const [c, g] of mathPairs) rewards.math(c, g);
  }, Math.min(runs, 5));
  console.log(`rewards.math: 1000 completions in ${mathMs.toFixed(1)} ms (median of ${Math.min(runs, 5)} runs; fraction vs decimal)`);
  results.mathMs = mathMs;

  let sandbox;
  try {
    sandbox = await Sandbox.create();
  } catch (e) {
    console.log(`rewards.code: skipped (${e.message})`);
    return results;
  }
  const n = 32;
  const completion = '```python\ndef add(a, b):\n    return a + b\n```';
  const t0 = performance.now();
  const scores = await Promise.all(Array.from({ length: n }, () => rewards.code(completion, ['assert add(1, 2) == 3'], { sandbox })));
  const codeMs = performance.now() - t0;
  const caps = sandbox.capabilities;
  console.log(
    `rewards.code: ${n} programs in ${codeMs.toFixed(0)} ms (${(codeMs / n).toFixed(1)} ms each at ${caps.isolation} isolation, ` +
      `${scores.filter((s) => s === 2).length}/${n} scored 2)`,
  );
  results.codeMsPerProgram = codeMs / n;
  return results;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  await bench();
}
