/**
 * Benchmark tasks for evaluation, loaded from a data directory laid out like ../shared/data
 * (gsm8k/, math500/, humaneval/, mbpp/), with prompts built exactly as JustGRPO builds them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { expected, JustGRPOError } from '../errors.js';

/** How an item is scored: GSM8K numbers, MATH expressions, or code run against tests. */
export type TaskKind = 'gsm8k' | 'math' | 'code';

/** The benchmarks that ship a loader. */
export type BuiltinTaskName = 'gsm8k' | 'math500' | 'humaneval' | 'mbpp';

/** One evaluation item. */
export type EvalItem = {
  /** Stable id, e.g. `gsm8k/17`, `HumanEval/0`, `mbpp/11`. */
  id: string;
  /** The user message (the chat template is applied by the caller's `generate`). */
  prompt: string;
  kind: TaskKind;
  /** GSM8K/MATH: the gold solution or answer. */
  gold?: string;
  /** Code: the tests (a string counts as one test, e.g. HumanEval's `check(...)`). */
  tests?: string | string[];
  /** HumanEval: the function the tests call. */
  entryPoint?: string;
  /** HumanEval: the original prompt (imports, signature, docstring) completions may build on. */
  codeContext?: string;
};

/** A loaded task. */
export type EvalTask = {
  /** `gsm8k`, `math500`, `humaneval`, `mbpp`, or the file name of a JSONL task. */
  name: string;
  /** The items' kind, or `mixed` for a JSONL file that mixes them. */
  kind: TaskKind | 'mixed';
  items: EvalItem[];
  /** The file the items came from. */
  source: string;
};

/** Options for {@link loadTask}. */
export type LoadTaskOptions = {
  /** Where the data lives. Defaults to {@link defaultDataDir}. */
  dataDir?: string;
  /** GSM8K split. Defaults to `'test'`. */
  split?: 'test' | 'train';
  /** For a JSONL file: how to score it. Defaults to `code` when rows have tests, `gsm8k` when answers hold `####`, else `math`. */
  kind?: TaskKind;
};

/** A data file that is missing or malformed. */
export class TaskDataError extends JustGRPOError {}

/** JustGRPO appends this to every MATH problem, with no separator. */
export const MATH_INSTRUCTION = String.raw`(Please put the final answer in \boxed{} tag, i.e. $\boxed{answer here}$)`;

function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'justgrpo') return dir;
      } catch {
        // not ours; keep climbing
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
    dir = up;
  }
}

/** `$JUSTGRPO_DATA`, else `<package root>/../shared/data`. */
export function defaultDataDir(): string {
  return process.env.JUSTGRPO_DATA || path.resolve(packageRoot(), '..', 'shared', 'data');
}

async function readText(file: string): Promise<string> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new TaskDataError(`Could not find ${file}; set JUSTGRPO_DATA or pass \`dataDir\` to the folder that holds the benchmark data`);
    }
    throw e;
  }
  return (file.endsWith('.gz') ? gunzipSync(buf) : buf).toString('utf8');
}

/** Parses JSON Lines (optionally gzipped), naming the file and line of a bad row. */
export async function readJsonl(file: string): Promise<Record<string, unknown>[]> {
  const text = await readText(file);
  const rows: Record<string, unknown>[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      rows.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      throw new TaskDataError(`Line ${i + 1} of ${file} is not valid JSON`);
    }
  });
  return rows;
}

function str(row: Record<string, unknown>, key: string, file: string): string {
  const v = row[key];
  if (typeof v !== 'string') throw new TaskDataError(`Expected a string \`${key}\` in every row of ${file}`);
  return v;
}

/** JustGRPO's HumanEval prompt. */
export function humanevalPrompt(prompt: string, entryPoint: string): string {
  return (
    'You are an expert Python programmer. Your task is to complete the ' +
    `implementation of a function named \`${entryPoint}\`.\n\n` +
    `Here is the function to complete:\n\`\`\`python\n${prompt.trimEnd()}\n\`\`\`\n`
  );
}

/**
 * Counts the positional arguments of the first call to `name` in a Python test line, as
 * JustGRPO's `ast.walk` search does: a dotted name never matches (0), unbalanced text counts as a
 * parse failure (2).
 */
function countCallArgs(test: string, name: string): number {
  if (name.includes('.') || name === '') return 0;
  const re = new RegExp(String.raw`(?<![\w.])${name.replace(/[$]/g, '\\$&')}\s*\(`, 'g');
  const m = re.exec(test);
  if (!m) return 0;
  let depth = 0;
  let quote: string | undefined;
  const args: string[] = [];
  let cur = '';
  for (let i = re.lastIndex; i < test.length; i++) {
    const c = test[i]!;
    if (quote) {
      cur += c;
      if (c === '\\') cur += test[++i] ?? '';
      else if (c === quote) quote = undefined;
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      cur += c;
    } else if ('([{'.includes(c)) {
      depth++;
      cur += c;
    } else if (')]}'.includes(c)) {
      if (depth === 0) {
        if (cur.trim() !== '') args.push(cur);
        return args.filter((a) => !/^\s*(?:\*\*|[A-Za-z_]\w*\s*=(?!=))/.test(a)).length;
      }
      depth--;
      cur += c;
    } else if (c === ',' && depth === 0) {
      args.push(cur);
      cur = '';
    } else cur += c;
  }
  return 2;
}

/** JustGRPO's MBPP prompt: the task text, the unit tests, and a stub with the right arity. */
export function mbppPrompt(text: string, tests: string[]): string {
  const first = tests[0] ?? '';
  const funcName = (first.split(' ')[1] ?? '').split('(')[0]!;
  const nArgs = countCallArgs(first.trim(), funcName);
  const params = Array.from({ length: nArgs }, (_, i) => `input_param_${i + 1}`).join(', ');
  const testsStr = tests.map((t) => `    ${t}`).join('\n');
  return (
    'You are an expert Python programmer. Your task is to complete the ' +
    `implementation of a function named \`${funcName}\`.\n\n` +
    `** TARGET FUNCTION **\n${text}\n\n` +
    '** UNIT TESTS **\n' +
    `Your code should pass unit tests like:\n${testsStr}\n\n` +
    'Here is the function to complete:\n' +
    `\`\`\`python\ndef ${funcName}(${params}):\n` +
    `    """${text}\n    """\n\`\`\`\n`
  );
}

async function loadGsm8k(dataDir: string, split: 'test' | 'train'): Promise<EvalTask> {
  const source = path.join(dataDir, 'gsm8k', `${split}.jsonl`);
  const rows = await readJsonl(source);
  const items = rows.map((r, i): EvalItem => ({
    id: `gsm8k/${i}`,
    prompt: str(r, 'question', source),
    kind: 'gsm8k',
    gold: str(r, 'answer', source),
  }));
  return { name: 'gsm8k', kind: 'gsm8k', items, source };
}

async function loadMath500(dataDir: string): Promise<EvalTask> {
  const source = path.join(dataDir, 'math500', 'test.jsonl');
  const rows = await readJsonl(source);
  const items = rows.map((r, i): EvalItem => ({
    id: `math500/${i}`,
    prompt: str(r, 'question', source) + MATH_INSTRUCTION,
    kind: 'math',
    gold: str(r, 'answer', source),
  }));
  return { name: 'math500', kind: 'math', items, source };
}

async function loadHumaneval(dataDir: string): Promise<EvalTask> {
  const source = path.join(dataDir, 'humaneval', 'HumanEval.jsonl.gz');
  const rows = await readJsonl(source);
  const items = rows.map((r): EvalItem => {
    const entryPoint = str(r, 'entry_point', source);
    const prompt = str(r, 'prompt', source);
    return {
      id: str(r, 'task_id', source),
      prompt: humanevalPrompt(prompt, entryPoint),
      kind: 'code',
      tests: `${str(r, 'test', source)}\ncheck(${entryPoint})\n`,
      entryPoint,
      codeContext: prompt,
    };
  });
  return { name: 'humaneval', kind: 'code', items, source };
}

async function loadMbpp(dataDir: string): Promise<EvalTask> {
  const source = path.join(dataDir, 'mbpp', 'mbpp_test.jsonl');
  const rows = await readJsonl(source);
  const items = rows.map((r): EvalItem => {
    const tests = r.test;
    if (!Array.isArray(tests) || !tests.every((t) => typeof t === 'string')) {
      throw new TaskDataError(`Expected \`test\` to be a list of asserts in every row of ${source}`);
    }
    return {
      id: `mbpp/${String(r.task_id)}`,
      prompt: mbppPrompt(str(r, 'prompt', source), tests),
      kind: 'code',
      tests,
    };
  });
  return { name: 'mbpp', kind: 'code', items, source };
}

/**
 * Loads a generic JSONL task. Each row needs a prompt (`prompt`, `question` or `problem`, used as
 * written) and either a gold answer (`answer`, `solution` or `gold`) or tests (`tests`, `test` or
 * `test_list`: a list of asserts or one program); `id`/`task_id` name rows.
 */
async function loadJsonlTask(file: string, kind?: TaskKind): Promise<EvalTask> {
  const rows = await readJsonl(file);
  const pick = (r: Record<string, unknown>, keys: string[]) => {
    for (const k of keys) if (r[k] !== undefined && r[k] !== null) return r[k];
    return undefined;
  };
  const items = rows.map((r, i): EvalItem => {
    const prompt = pick(r, ['prompt', 'question', 'problem']);
    if (typeof prompt !== 'string') throw new TaskDataError(`Row ${i + 1} of ${file} has no \`prompt\`, \`question\` or \`problem\``);
    const id = String(pick(r, ['id', 'task_id']) ?? i);
    const tests = pick(r, ['tests', 'test', 'test_list']);
    const gold = pick(r, ['answer', 'solution', 'gold']);
    const k: TaskKind = kind ?? (tests !== undefined ? 'code' : typeof gold === 'string' && gold.includes('####') ? 'gsm8k' : 'math');
    if (k === 'code') {
      const ok = typeof tests === 'string' || (Array.isArray(tests) && tests.length > 0 && tests.every((t) => typeof t === 'string'));
      if (!ok) throw new TaskDataError(`Row ${i + 1} of ${file} needs \`tests\`: a list of asserts or one program`);
      const entryPoint = typeof r.entry_point === 'string' ? r.entry_point : undefined;
      return { id, prompt, kind: k, tests: tests as string | string[], ...(entryPoint ? { entryPoint } : {}) };
    }
    if (typeof gold !== 'string' && typeof gold !== 'number') {
      throw new TaskDataError(`Row ${i + 1} of ${file} has no \`answer\`, \`solution\` or \`gold\``);
    }
    return { id, prompt, kind: k, gold: String(gold) };
  });
  const kinds = new Set(items.map((x) => x.kind));
  const taskKind = kinds.size > 1 ? 'mixed' : (items[0]?.kind ?? kind ?? 'math');
  return { name: path.basename(file).replace(/\.jsonl(\.gz)?$/, ''), kind: taskKind, items, source: file };
}

/**
 * Loads `gsm8k`, `math500`, `humaneval`, `mbpp` from the data directory, or a path to a
 * `.jsonl`/`.jsonl.gz` file as a generic task.
 *
 * @throws {TaskDataError} When the data file is missing (the message says how to point at it) or
 *   a row is malformed.
 */
export async function loadTask(nameOrFile: string, options: LoadTaskOptions = {}): Promise<EvalTask> {
  const dataDir = options.dataDir ?? defaultDataDir();
  switch (nameOrFile) {
    case 'gsm8k':
      return loadGsm8k(dataDir, options.split ?? 'test');
    case 'math500':
    case 'math':
      return loadMath500(dataDir);
    case 'humaneval':
      return loadHumaneval(dataDir);
    case 'mbpp':
      return loadMbpp(dataDir);
  }
  if (/\.jsonl(\.gz)?$/.test(nameOrFile)) return loadJsonlTask(nameOrFile, options.kind);
  throw expected('gsm8k, math500, humaneval, mbpp or a .jsonl file', 'task', nameOrFile);
}
