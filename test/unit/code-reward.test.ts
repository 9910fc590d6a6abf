// The code reward: JustGRPO's format reward, the pass rate, and the reference solutions of
// HumanEval and MBPP run in the sandbox (they must pass; broken variants must fail).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultDataDir, loadTask, type EvalTask } from '../../lib/eval/tasks.js';
import { humanevalProgram } from '../../lib/eval/harness.js';
import { code, extractCode, scoreCode, singlePythonBlock } from '../../lib/rewards/code.js';
import { rewards } from '../../lib/rewards/index.js';
import { Sandbox, type SandboxError } from '../../lib/rewards/sandbox.js';
import { readJsonl } from '../../lib/eval/tasks.js';

let sandbox: Sandbox | undefined;
let sandboxReason = '';
try {
  sandbox = await Sandbox.create();
} catch (e) {
  sandboxReason = (e as SandboxError).message;
  console.warn(`code reward tests that run code are skipped: ${sandboxReason}`);
}

const dataDir = defaultDataDir();
const haveData = existsSync(path.join(dataDir, 'humaneval')) && existsSync(path.join(dataDir, 'mbpp'));
if (!haveData) console.warn(`HumanEval/MBPP reference tests skipped: no data at ${dataDir} (set JUSTGRPO_DATA)`);

/**
 * MBPP reference solutions that fail their own tests in this layout of the data, with the reason.
 * Task 367's asserts use trees `root`, `root1`, `root2` that upstream MBPP builds in a separate
 * `test_setup_code` field, which JustGRPO's layout (prompt/test/code) does not carry.
 */
const MBPP_KNOWN_FAILURES: Record<string, string> = {
  'mbpp/367': 'the asserts need test_setup_code (root, root1, root2) that the data set omits',
};

const py = (s: string) => '```python\n' + s + '\n```';

describe('format reward and code extraction', () => {
  it('accepts exactly one fenced python block', () => {
    expect(singlePythonBlock(py('def f():\n    return 1'))).toBe('def f():\n    return 1');
    expect(singlePythonBlock('\n  ```python\nx = 1\n```\n\n')).toBe('x = 1');
    expect(singlePythonBlock('```py\nx = 1\n```')).toBe('x = 1');
  });

  it('rejects text around the block, two blocks, other languages and no block', () => {
    expect(singlePythonBlock('Here you go:\n' + py('x = 1'))).toBeUndefined();
    expect(singlePythonBlock(py('x = 1') + '\nThis sets x.')).toBeUndefined();
    expect(singlePythonBlock(py('x = 1') + '\n' + py('y = 2'))).toBeUndefined();
    expect(singlePythonBlock('```javascript\nlet x = 1\n```')).toBeUndefined();
    expect(singlePythonBlock('x = 1')).toBeUndefined();
  });

  it('extracts the last python block, an unterminated block, or the whole text', () => {
    expect(extractCode('Sure.\n```python\na = 1\n```\nand\n```python\nb = 2\n```\nDone.')).toBe('b = 2\n');
    expect(extractCode('```python\ndef f():\n    return 1')).toBe('def f():\n    return 1\n');
    expect(extractCode('```\nz = 3\n```')).toBe('z = 3\n');
    expect(extractCode('def g():\n    pass\n\n')).toBe('def g():\n    pass\n');
  });
});

describe.skipIf(!sandbox)('code reward', () => {
  const opts = () => ({ sandbox: sandbox! });

  it('scores format 1 for a parsing block, 0.5 for a block that does not parse, 0 otherwise', async () => {
    const [good, bad, prose] = await Promise.all([
      scoreCode(py('def add(a, b):\n    return a + b'), ['assert add(1, 2) == 3', 'assert add(2, 2) == 5'], opts()),
      scoreCode(py('def add(a, b)\n    return a + b'), ['assert add(1, 2) == 3'], opts()),
      scoreCode('Use this:\n' + py('def add(a, b):\n    return a + b'), ['assert add(1, 2) == 3'], opts()),
    ]);
    expect(good).toMatchObject({ format: 1, passed: 1, total: 2, passRate: 0.5, reward: 1.5, parses: true });
    expect(good.failures).toEqual(['test 1: AssertionError']);
    expect(bad).toMatchObject({ format: 0.5, passRate: 0, reward: 0.5, parses: false });
    expect(bad.failures).toEqual(['syntax: SyntaxError']);
    // Text around the block: no format reward, but the code still runs and passes.
    expect(prose).toMatchObject({ format: 0, passRate: 1, reward: 1 });
  });

  it('rewards.code returns format + pass rate', async () => {
    expect(await rewards.code(py('def sq(x):\n    return x * x'), ['assert sq(3) == 9', 'assert sq(-2) == 4'], opts())).toBe(2);
    expect(await code('no code here', ['assert sq(3) == 9'], opts())).toBe(0);
  });

  it('counts a failing solution, a SystemExit in a test and exit() in the solution as failures', async () => {
    const [raises, exits, quits] = await Promise.all([
      scoreCode(py('raise ValueError("no")'), ['assert True'], opts()),
      scoreCode(py('def f():\n    raise SystemExit(0)'), ['f()', 'assert True'], opts()),
      scoreCode(py('import os\nos._exit(0)'), ['assert True'], opts()),
    ]);
    expect(raises.failures).toEqual(['solution: ValueError']);
    expect(raises.passRate).toBe(0);
    expect(exits).toMatchObject({ passed: 1, total: 2 });
    expect(exits.failures).toEqual(['test 0: SystemExit']);
    expect(quits.passRate).toBe(0);
    expect(quits.failures).toEqual(['no result']);
  });

  it('cannot forge results by printing', async () => {
    const s = await scoreCode(py('print("syntax ok")\nprint("test 0 pass")\nimport sys\nsys.stdout.write("x test 0 pass\\n")'), ['assert False'], opts());
    expect(s.passRate).toBe(0);
  });
});

// Trusted reference solutions get a generous wall clock: a few (mbpp/123 sums divisors up to
// 9999) need seconds of CPU, and on a busy two-core machine a 5 s limit would flake.
const REFERENCE_TIMEOUT_MS = 30_000;

describe.skipIf(!sandbox || !haveData)('reference solutions in the sandbox', () => {
  let humaneval: EvalTask;
  let mbpp: EvalTask;
  let mbppRows: Record<string, unknown>[];

  it('all 164 HumanEval canonical solutions pass and broken variants fail', async () => {
    humaneval = await loadTask('humaneval', { dataDir });
    const rows = await readJsonl(path.join(dataDir, 'humaneval', 'HumanEval.jsonl.gz'));
    expect(rows).toHaveLength(164);
    const byId = new Map(rows.map((r) => [r.task_id as string, r]));
    const results = await Promise.all(
      humaneval.items.map(async (item, i) => {
        const canonical = byId.get(item.id)!.canonical_solution as string;
        // The completion restates the whole function, as a chat model answers JustGRPO's prompt.
        const completion = py((item.codeContext! + canonical).trimEnd());
        // A wrong solution: the same function, then redefined to return a value no test expects.
        const wrong = py(`${(item.codeContext! + canonical).trimEnd()}\n\ndef ${item.entryPoint}(*args, **kwargs):\n    return object()`);
        const transform = (c: string) => humanevalProgram(c, item);
        const judged = { testContext: item.codeContext, entryPoint: item.entryPoint };
        // Wrong variants for every fourth task keep the suite's time down.
        const [good, bad] = await Promise.all([
          scoreCode(completion, item.tests!, { sandbox, transformCode: transform, ...judged, timeoutMs: REFERENCE_TIMEOUT_MS }),
          i % 4 === 0 ? scoreCode(wrong, item.tests!, { sandbox, transformCode: transform, ...judged, timeoutMs: REFERENCE_TIMEOUT_MS }) : undefined,
        ]);
        return { id: item.id, good, bad };
      }),
    );
    const failed = results.filter((r) => r.good.passRate !== 1).map((r) => `${r.id}: ${r.good.failures.join(', ')}`);
    expect(failed).toEqual([]);
    expect(results.every((r) => r.good.format === 1)).toBe(true);
    const wrong = results.filter((r) => r.bad);
    expect(wrong).toHaveLength(41);
    expect(wrong.filter((r) => r.bad!.passRate !== 0).map((r) => r.id)).toEqual([]);
  }, 300_000);

  it('HumanEval completions that give only the body run after the prompt', async () => {
    const rows = await readJsonl(path.join(dataDir, 'humaneval', 'HumanEval.jsonl.gz'));
    const item = humaneval.items[0]!;
    const body = rows[0]!.canonical_solution as string;
    const s = await scoreCode(py(body.trimEnd()), item.tests!, {
      sandbox,
      transformCode: (c) => humanevalProgram(c, item),
      testContext: item.codeContext,
      entryPoint: item.entryPoint,
    });
    expect(s.passRate).toBe(1);
  });

  it('all MBPP reference solutions pass (except known upstream failures) and broken ones fail', async () => {
    mbpp = await loadTask('mbpp', { dataDir });
    mbppRows = await readJsonl(path.join(dataDir, 'mbpp', 'mbpp_test.jsonl'));
    expect(mbpp.items).toHaveLength(500);
    const results = await Promise.all(
      mbpp.items.map(async (item, i) => {
        const reference = (mbppRows[i]!.code as string).replace(/\r\n/g, '\n');
        const good = await scoreCode(reference, item.tests!, { sandbox, timeoutMs: REFERENCE_TIMEOUT_MS });
        // Every tenth task also runs a wrong solution (a sample, for the suite's time):
        // the reference with its tested function replaced by one that raises.
        const name = /assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*([A-Za-z_]\w*)\s*\(/.exec(item.tests![0]!)?.[1];
        const bad = i % 10 === 0 && name ? await scoreCode(`${reference}\n\ndef ${name}(*args, **kwargs):\n    raise RuntimeError("wrong")\n`, item.tests!, { sandbox, timeoutMs: REFERENCE_TIMEOUT_MS }) : undefined;
        return { id: item.id, good, bad };
      }),
    );
    const failed = Object.fromEntries(results.filter((r) => r.good.passRate !== 1).map((r) => [r.id, r.good.failures.join(', ')]));
    console.warn(`MBPP reference failures: ${JSON.stringify(failed)} (known: ${JSON.stringify(MBPP_KNOWN_FAILURES)})`);
    expect(Object.keys(failed).sort()).toEqual(Object.keys(MBPP_KNOWN_FAILURES).sort());
    // `root` is defined by neither the tests nor the solution.
    expect(failed['mbpp/367']).toMatch(/NameError/);
    const broken = results.filter((r) => r.bad);
    expect(broken.length).toBeGreaterThan(40);
    expect(broken.filter((r) => r.bad!.passRate !== 0).map((r) => r.id)).toEqual([]);
  }, 300_000);
});
