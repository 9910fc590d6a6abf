import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { expected } from '../errors.js';
import { JUDGE, RUNNER } from './judge.js';
import { defaultSandbox, SandboxError, type Sandbox, type SandboxCapabilities } from './sandbox.js';

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
  /**
   * Python the judge runs before the tests, in the tests' globals: trusted code from the data set,
   * e.g. a HumanEval prompt whose helper functions (`poly`, `encode_cyclic`) the tests call. The
   * model's versions of those helpers are never used by the tests. Defaults to `''`.
   */
  testContext?: string;
  /**
   * The function under test, which the tests call through the sandbox even when `testContext`
   * defines it. Defaults to the first name the first test calls without defining it (a builtin
   * name only when the test calls nothing else).
   */
  entryPoint?: string;
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
  /** The sandbox mode that ran the program (`bwrap` unless the machine forced a fallback). */
  isolation: SandboxCapabilities['isolation'];
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

/** Frames parts for the runner and the judge: each as `<byte length>\n<bytes>`. */
function frame(parts: string[]): string {
  return parts.map((p) => `${Buffer.byteLength(p)}\n${p}`).join('');
}

/** The judge's verdicts (fd 3) and stderr, once it has exited. */
type JudgeOutcome = { verdicts: string; stderr: string; exitCode: number | null; error?: string };

/**
 * Starts the judge (outside the sandbox: it runs only the tests and the test context, never the
 * model's code) under its own time and memory limits, with an empty environment.
 */
function startJudge(prlimit: string, python: string, timeoutMs: number): { child: ChildProcess; done: Promise<JudgeOutcome> } {
  const cpu = Math.ceil(timeoutMs / 1000) + 1;
  const as = JUDGE_MEMORY_MB * 1024 * 1024;
  const child = spawn(prlimit, [`--cpu=${cpu}:${cpu}`, `--as=${as}:${as}`, '--core=0:0', '--', python, '-I', '-S', '-c', JUDGE], {
    env: {},
    cwd: '/',
    stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
    // The tests are trusted, but need no privilege: as root, the judge runs as nobody.
    ...(process.getuid?.() === 0 ? { uid: NOBODY, gid: NOBODY } : {}),
  });
  const verdicts: Buffer[] = [];
  const stderr: Buffer[] = [];
  let stderrBytes = 0;
  (child.stdio[3] as Readable).on('data', (b: Buffer) => verdicts.push(b));
  child.stderr!.on('data', (b: Buffer) => {
    if (stderrBytes < 1 << 16) stderr.push(b);
    stderrBytes += b.length;
  });
  for (const s of [child.stdin!, child.stdout!, child.stdio[3] as Readable]) s.on('error', () => {});
  // The runner's wall clock bounds the calls; the slack covers the tests' own work after it ends.
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 5000);
  const done = new Promise<JudgeOutcome>((resolve) => {
    let error: string | undefined;
    child.on('error', (e) => (error = `could not start the judge: ${e.message}`));
    child.on('close', (exitCode) => {
      clearTimeout(timer);
      resolve({ verdicts: Buffer.concat(verdicts).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8'), exitCode, error });
    });
  });
  return { child, done };
}

/** The uid and gid the judge runs as when the parent is root. */
const NOBODY = 65534;

/** Memory of the judge process (it holds the tests' values and the decoded replies). */
const JUDGE_MEMORY_MB = 2048;

/**
 * Runs a completion's code against tests and returns the format reward, the pass rate and their
 * sum separately, so a trainer can log them or use them as two reward functions.
 *
 * The solution runs in the sandbox; the tests run in a separate judge process that never runs the
 * model's code. The judge calls the solution's functions through the sandbox with plain-data
 * arguments and gets plain data back, so nothing the solution defines (a lying `__eq__`, a patched
 * builtin, a forged output line, its exit code) takes part in deciding whether a test passed. See
 * lib/rewards/README.md for the kinds of test this cannot express.
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
  const timeoutMs = options.timeoutMs ?? sandbox.timeoutMs;
  let judge: ReturnType<typeof startJudge> | undefined;
  const run = await sandbox.runPython(RUNNER, {
    timeoutMs,
    memoryMb: options.memoryMb,
    signal: options.signal,
    io: (stdin, stdout) => {
      judge = startJudge(sandbox.prlimit, sandbox.capabilities.python, timeoutMs);
      const j = judge.child;
      j.stdin!.write(`${list.length + 2}\n` + frame([options.testContext ?? '', options.entryPoint ?? '', ...list]));
      stdin.write(frame([code]));
      j.stdout!.pipe(stdin);
      stdout.pipe(j.stdin!);
    },
  });
  const outcome: JudgeOutcome = judge ? await judge.done : { verdicts: '', stderr: '', exitCode: 0, error: 'the program did not start' };
  // A judge that could not run at all is the machine's fault, not the completion's: say so rather
  // than score every completion 0. (Whatever the program does, the judge exits 0 or is killed.)
  if (judge && outcome.verdicts === '' && (outcome.error || (outcome.exitCode !== null && outcome.exitCode !== 0))) {
    const why = outcome.error ?? (outcome.stderr.trim().split('\n').pop() || `exit code ${outcome.exitCode}`);
    throw new SandboxError(`The code reward's judge (${sandbox.capabilities.python}) failed: ${why}`);
  }
  let parses = false;
  const failures: string[] = [];
  const verdicts = new Map<number, boolean>();
  let done = false;
  for (const line of outcome.verdicts.split('\n')) {
    const [what, a, b, c] = line.split(' ');
    if (what === 'syntax') {
      parses = a === 'ok';
      if (!parses) failures.push(`syntax: ${b}`);
    } else if (what === 'exec') {
      failures.push(`solution: ${b}`);
    } else if (what === 'context') {
      failures.push(`test context: ${b}`);
    } else if (what === 'test' && !verdicts.has(Number(a))) {
      const ok = b === 'pass';
      if (!ok) failures.push(`test ${a}: ${c}`);
      verdicts.set(Number(a), ok);
    } else if (what === 'done') {
      done = true;
    }
  }
  let passed = 0;
  for (let i = 0; i < list.length; i++) if (verdicts.get(i) === true) passed++;
  if (run.timedOut) failures.push('timeout');
  else if (failures.length === 0 && (passed < list.length || !done)) failures.push('no result');
  if (outcome.error) failures.push(outcome.error);
  const passRate = passed / list.length;
  const format = single === undefined ? 0 : parses ? 1 : 0.5;
  const judgeErr = outcome.stderr.trim();
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
    stderr: run.stderr + (judgeErr ? `\n[judge] ${judgeErr}\n` : ''),
    isolation: sandbox.capabilities.isolation,
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
