import { randomBytes } from 'node:crypto';
import { expected } from '../errors.js';
import { defaultSandbox, type Sandbox } from './sandbox.js';

/** Options for {@link scoreCode} and {@link code}. */
export type CodeRewardOptions = {
  /** The sandbox to run in. Defaults to the process-wide {@link defaultSandbox}. */
  sandbox?: Sandbox;
  /** Wall-clock limit for the whole program (solution and all tests). Defaults to the sandbox's (`5000`). */
  timeoutMs?: number;
  /** Address-space limit in MiB. Defaults to the sandbox's (`1024`). */
  memoryMb?: number;
  /**
   * Rewrites the extracted code before it runs, e.g. to prepend a HumanEval prompt when the
   * completion holds only a function body. The format reward always looks at the raw completion.
   * Defaults to leaving the code as it is.
   */
  transformCode?: (code: string) => string;
  /** Kills the program when aborted. */
  signal?: AbortSignal;
};

/** Everything {@link scoreCode} found out about one completion. */
export type CodeScore = {
  /** `format + passRate`, in [0, 2]; what {@link code} returns. */
  reward: number;
  /**
   * JustGRPO's format reward: 1 when the whole response is exactly one fenced python block whose
   * code parses, 0.5 when it is one such block that does not parse, else 0.
   */
  format: number;
  /** Fraction of the tests that passed, in [0, 1] (0 when the code does not parse or run). */
  passRate: number;
  /** Tests that passed. */
  passed: number;
  /** Tests run (a HumanEval `check(...)` program counts as one). */
  total: number;
  /** True when the extracted code compiles. */
  parses: boolean;
  /** True when the program hit its wall-clock limit. */
  timedOut: boolean;
  /** The code that ran (after `transformCode`). */
  code: string;
  /**
   * Why tests failed, one entry per cause: `syntax: SyntaxError`, `solution: NameError`,
   * `test 2: AssertionError`, `timeout`, `no result` (the program died without reporting).
   */
  failures: string[];
  /** The program's stderr (its own prints go there too), for debugging. */
  stderr: string;
};

const SINGLE_BLOCK = /^\s*```(?:python3?|py)[ \t]*\r?\n([\s\S]*?)\r?\n?[ \t]*```\s*$/i;

/**
 * The code inside a response that is exactly one fenced python block (nothing else but white
 * space around it), else undefined.
 */
export function singlePythonBlock(completion: string): string | undefined {
  const m = SINGLE_BLOCK.exec(completion);
  if (!m || m[1]!.includes('```')) return undefined;
  return m[1]!;
}

/**
 * The code to run from a completion: the last fenced block labelled python/py or unlabelled (an
 * unterminated final fence, as when generation stops at the length limit, runs to the end), else
 * the whole completion.
 */
export function extractCode(completion: string): string {
  const single = singlePythonBlock(completion);
  if (single !== undefined) return single;
  const fence = /```([A-Za-z0-9_+-]*)[ \t]*\r?\n([\s\S]*?)(?:```|$)/g;
  let last: string | undefined;
  let any: string | undefined;
  for (let m = fence.exec(completion); m; m = fence.exec(completion)) {
    const lang = m[1]!.toLowerCase();
    any = m[2]!;
    if (lang === '' || lang === 'python' || lang === 'python3' || lang === 'py') last = m[2]!;
  }
  return (last ?? any ?? completion).replace(/\s+$/, '') + '\n';
}

// Runs in the sandbox as main.py. The payload arrives on stdin, so it is in none of the program's
// files: a nonce line, then length-prefixed UTF-8 parts (the code, then each test), parsed without
// importing json or re to keep the start-up cheap. Results go to the original stdout tagged with
// the nonce; the solution's own prints are sent to stderr. Each test runs after the solution in the
// same globals; any exception, SystemExit included, fails that test only.
const HARNESS = String.raw`
import os, sys
def main():
    data = sys.stdin.buffer.read()
    i = data.index(b'\n')
    nonce = data[:i].decode()
    i += 1
    parts = []
    while i < len(data):
        j = data.index(b'\n', i)
        n = int(data[i:j])
        parts.append(data[j + 1:j + 1 + n].decode())
        i = j + 1 + n
    code, tests = parts[0], parts[1:]
    report = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)
    def say(*words):
        report.write(nonce + ' ' + ' '.join(words) + '\n')
        report.flush()
    try:
        compiled = compile(code, 'solution.py', 'exec')
    except BaseException as e:
        say('syntax', 'error', type(e).__name__)
        return
    say('syntax', 'ok')
    scope = {'__name__': 'solution', '__builtins__': __builtins__}
    try:
        exec(compiled, scope)
    except BaseException as e:
        say('exec', 'error', type(e).__name__)
        return
    for k, test in enumerate(tests):
        try:
            exec(compile(test, 'test_%d.py' % k, 'exec'), scope)
            say('test', str(k), 'pass')
        except BaseException as e:
            say('test', str(k), 'fail', type(e).__name__)
    say('done')
main()
sys.stdout.flush()
os._exit(0)
`;

/** Frames the harness payload: a nonce line, then each part as `<byte length>\n<bytes>`. */
function framePayload(nonce: string, parts: string[]): string {
  return nonce + '\n' + parts.map((p) => `${Buffer.byteLength(p)}\n${p}`).join('');
}

/**
 * Runs a completion's code against tests in the sandbox and returns the format reward, the pass
 * rate and their sum separately, so a trainer can log them or use them as two reward functions.
 *
 * @param completion The model's response.
 * @param tests Python test snippets, each counted separately (MBPP's asserts), or one string that
 *   counts as a single test (a HumanEval `test` with `check(entry_point)` appended).
 */
export async function scoreCode(completion: string, tests: string | readonly string[], options: CodeRewardOptions = {}): Promise<CodeScore> {
  const list = typeof tests === 'string' ? [tests] : [...tests];
  if (list.length === 0) throw expected('at least one test', 'tests', list);
  const single = singlePythonBlock(completion);
  const extracted = extractCode(completion);
  const code = options.transformCode ? options.transformCode(extracted) : extracted;
  const sandbox = options.sandbox ?? (await defaultSandbox());
  const nonce = randomBytes(12).toString('hex');
  const run = await sandbox.runPython(HARNESS, {
    stdin: framePayload(nonce, [code, ...list]),
    timeoutMs: options.timeoutMs,
    memoryMb: options.memoryMb,
    signal: options.signal,
  });
  let parses = false;
  const failures: string[] = [];
  const verdicts = new Map<number, boolean>();
  for (const line of run.stdout.split('\n')) {
    if (!line.startsWith(nonce + ' ')) continue;
    const [what, a, b, c] = line.slice(nonce.length + 1).split(' ');
    if (what === 'syntax') {
      parses = a === 'ok';
      if (!parses) failures.push(`syntax: ${b}`);
    } else if (what === 'exec') {
      failures.push(`solution: ${b}`);
    } else if (what === 'test') {
      const ok = b === 'pass';
      if (!ok) failures.push(`test ${a}: ${c}`);
      // A test reported twice (by a forked copy of the harness) counts only if both said pass.
      verdicts.set(Number(a), (verdicts.get(Number(a)) ?? true) && ok);
    }
  }
  let passed = 0;
  for (let i = 0; i < list.length; i++) if (verdicts.get(i) === true) passed++;
  if (run.timedOut) failures.push('timeout');
  else if (failures.length === 0 && passed < list.length) failures.push('no result');
  const passRate = passed / list.length;
  const format = single === undefined ? 0 : parses ? 1 : 0.5;
  return {
    reward: format + passRate,
    format,
    passRate,
    passed,
    total: list.length,
    parses,
    timedOut: run.timedOut,
    code,
    failures,
    stderr: run.stderr,
  };
}

/**
 * The code reward: JustGRPO's format reward plus the pass rate, `format + passRate`, in [0, 2].
 * The format reward is 1 when the whole response is exactly one fenced python block that parses,
 * 0.5 when it is one such block that does not parse, else 0; the pass rate is the fraction of
 * `tests` that pass when the extracted code runs in the sandbox (see {@link scoreCode}, which
 * returns both parts separately).
 */
export async function code(completion: string, tests: string | readonly string[], options?: CodeRewardOptions): Promise<number> {
  return (await scoreCode(completion, tests, options)).reward;
}
