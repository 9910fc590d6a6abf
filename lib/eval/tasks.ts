/**
 * Benchmark tasks for evaluation, read from the Hugging Face Hub (through the cache Python shares)
 * or from a local copy laid out like ../shared/data (gsm8k/, math500/, humaneval/, mbpp/), with
 * prompts built exactly as JustGRPO builds them.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { expected, JustGRPOError } from '../errors.js';
import { loadHubRows, parseHfUrl, type HubDatasetRef, type HubOptions } from '../hub/index.js';

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
  /** A local copy of the benchmarks (laid out like ../shared/data). Defaults to `$JUSTGRPO_DATA`, else the Hub. */
  dataDir?: string;
  /** GSM8K's split, or a Hub data set's when its reference names none. Defaults to `'test'`. */
  split?: 'test' | 'train';
  /** How to reach the Hub (endpoint, token, cache, offline, progress). Defaults to the environment. */
  hub?: HubOptions;
  /** For a JSONL file: how to score it. Defaults to `code` when rows have tests, `gsm8k` when answers hold `####`, else `math`. */
  kind?: TaskKind;
};

/** A data file that is missing or malformed. */
export class TaskDataError extends JustGRPOError {}

/** JustGRPO appends this to every MATH problem, with no separator. */
export const MATH_INSTRUCTION = String.raw`(Please put the final answer in \boxed{} tag, i.e. $\boxed{answer here}$)`;

/** `$JUSTGRPO_DATA` (a local copy laid out like the table's `local` paths), else undefined: the Hub. */
export function defaultDataDir(): string | undefined {
  return process.env.JUSTGRPO_DATA || undefined;
}

async function readText(file: string): Promise<string> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new TaskDataError(`Could not find ${file}; set JUSTGRPO_DATA or pass \`dataDir\` (--data-dir) to the folder that holds the benchmark data, or leave both unset to read it from the Hub`);
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

/** An item's fields and the dataset column each comes from. */
export type ColumnMap = { id?: string; prompt: string; gold?: string; tests?: string; entryPoint?: string };

/** Where a benchmark lives and how its columns become {@link EvalItem}s. */
export type TaskSource = {
  /** The Hub data set, its subset and the split evaluation reads. */
  hub: { id: string; config: string; split: string };
  /** The columns of the Hub's rows. */
  hubColumns: ColumnMap;
  /** The file under a local data directory (`{split}` is GSM8K's split). */
  local: string;
  /** The columns of the local file's rows. */
  localColumns: ColumnMap;
};

/**
 * The built-in benchmarks: the public data sets they are read from (as JustGRPO and lm-eval read
 * them) and the column each item field comes from, for the Hub's Parquet rows and for the local
 * JSONL copies (`dataDir` / `$JUSTGRPO_DATA`, laid out like ../shared/data). This table is the
 * one place the mapping is written down.
 *
 * - GSM8K: `openai/gsm8k`, subset `main`, 1319 test rows; `answer` ends with `#### <number>`.
 * - MATH-500: `HuggingFaceH4/MATH-500`, 500 test rows (a JSONL repo: read from its Parquet branch);
 *   the Hub's `answer` is the bare final answer, the local copy's `answer` the worked solution
 *   (the MATH reward takes either).
 * - HumanEval: `openai/openai_humaneval`, 164 test rows; the tests are `test` + `check(entry_point)`.
 * - MBPP: `google-research-datasets/mbpp`, subset `full`, the 500 test rows (task ids 11-510), as
 *   lm-eval's `mbpp` task and JustGRPO read them: `text` and the asserts of `test_list`.
 */
export const TASK_SOURCES = {
  gsm8k: {
    hub: { id: 'openai/gsm8k', config: 'main', split: 'test' },
    hubColumns: { prompt: 'question', gold: 'answer' },
    local: 'gsm8k/{split}.jsonl',
    localColumns: { prompt: 'question', gold: 'answer' },
  },
  math500: {
    hub: { id: 'HuggingFaceH4/MATH-500', config: 'default', split: 'test' },
    hubColumns: { prompt: 'problem', gold: 'answer' },
    local: 'math500/test.jsonl',
    localColumns: { prompt: 'question', gold: 'answer' },
  },
  humaneval: {
    hub: { id: 'openai/openai_humaneval', config: 'openai_humaneval', split: 'test' },
    hubColumns: { id: 'task_id', prompt: 'prompt', tests: 'test', entryPoint: 'entry_point' },
    local: 'humaneval/HumanEval.jsonl.gz',
    localColumns: { id: 'task_id', prompt: 'prompt', tests: 'test', entryPoint: 'entry_point' },
  },
  mbpp: {
    hub: { id: 'google-research-datasets/mbpp', config: 'full', split: 'test' },
    hubColumns: { id: 'task_id', prompt: 'text', tests: 'test_list' },
    local: 'mbpp/mbpp_test.jsonl',
    localColumns: { id: 'task_id', prompt: 'prompt', tests: 'test' },
  },
} as const satisfies Record<BuiltinTaskName, TaskSource>;

/** Rows of a built-in benchmark into items, prompts built exactly as JustGRPO builds them. */
function builtinItems(name: BuiltinTaskName, rows: Record<string, unknown>[], c: ColumnMap, source: string): EvalItem[] {
  return rows.map((r, i): EvalItem => {
    switch (name) {
      case 'gsm8k':
        return { id: `gsm8k/${i}`, prompt: str(r, c.prompt, source), kind: 'gsm8k', gold: str(r, c.gold!, source) };
      case 'math500':
        return { id: `math500/${i}`, prompt: str(r, c.prompt, source) + MATH_INSTRUCTION, kind: 'math', gold: str(r, c.gold!, source) };
      case 'humaneval': {
        const entryPoint = str(r, c.entryPoint!, source);
        const prompt = str(r, c.prompt, source);
        return {
          id: str(r, c.id!, source),
          prompt: humanevalPrompt(prompt, entryPoint),
          kind: 'code',
          tests: `${str(r, c.tests!, source)}\ncheck(${entryPoint})\n`,
          entryPoint,
          codeContext: prompt,
        };
      }
      case 'mbpp': {
        const tests = r[c.tests!];
        if (!Array.isArray(tests) || !tests.every((t) => typeof t === 'string'))
          throw new TaskDataError(`Expected \`${c.tests}\` to be a list of asserts in every row of ${source}`);
        return { id: `mbpp/${String(r[c.id!])}`, prompt: mbppPrompt(str(r, c.prompt, source), tests), kind: 'code', tests };
      }
    }
  });
}

const TASK_KINDS: Record<BuiltinTaskName, TaskKind> = { gsm8k: 'gsm8k', math500: 'math', humaneval: 'code', mbpp: 'code' };

async function loadBuiltinLocal(name: BuiltinTaskName, dataDir: string, split: 'test' | 'train'): Promise<EvalTask> {
  const src: TaskSource = TASK_SOURCES[name];
  const source = path.join(dataDir, src.local.replace('{split}', split));
  const rows = await readJsonl(source);
  return { name, kind: TASK_KINDS[name], items: builtinItems(name, rows, src.localColumns, source), source };
}

async function loadBuiltinHub(name: BuiltinTaskName, ref: HubDatasetRef, split: string, hub: HubOptions | undefined): Promise<EvalTask> {
  const src: TaskSource = TASK_SOURCES[name];
  const { rows, source } = await loadHubRows({ ...ref, config: ref.config ?? src.hub.config }, split, hub);
  return { name, kind: TASK_KINDS[name], items: builtinItems(name, rows, src.hubColumns, source), source };
}

/**
 * Loads a generic JSONL task. Each row needs a prompt (`prompt`, `question` or `problem`, used as
 * written) and either a gold answer (`answer`, `solution` or `gold`) or tests (`tests`, `test` or
 * `test_list`: a list of asserts or one program); `id`/`task_id` name rows.
 */
async function loadJsonlTask(file: string, kind?: TaskKind): Promise<EvalTask> {
  return genericTask(await readJsonl(file), file, path.basename(file).replace(/\.jsonl(\.gz)?$/, ''), kind);
}

/** Rows with the generic columns (see {@link loadJsonlTask}) into a task. */
function genericTask(rows: Record<string, unknown>[], file: string, name: string, kind?: TaskKind): EvalTask {
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
  return { name, kind: taskKind, items, source: file };
}

/**
 * Loads a task: `gsm8k`, `math500`, `humaneval`, `mbpp` (from `dataDir` / `$JUSTGRPO_DATA` when
 * set, else from the Hub through the Hugging Face cache; see {@link TASK_SOURCES}), a Hub data set
 * (`hf://datasets/owner/name[@revision][/config[/split]]` or `{ hub, config, split }`; one of the
 * built-in benchmarks' data sets keeps its mapping, others use the generic columns of a JSONL task),
 * or a `.jsonl`/`.jsonl.gz` file as a generic task.
 *
 * @throws {TaskDataError} When the data file is missing (the message says how to point at it) or
 *   a row is malformed.
 * @throws {HubError} When the Hub cannot give the data set (the message names it and the fix).
 */
export async function loadTask(nameOrFile: string | HubDatasetRef, options: LoadTaskOptions = {}): Promise<EvalTask> {
  const hubRef = typeof nameOrFile === 'string' ? parseHfUrl(nameOrFile) : nameOrFile;
  if (hubRef) {
    if (typeof hubRef !== 'object' || typeof hubRef.hub !== 'string') throw expected('`{ hub: "owner/name", config?, split? }`', 'task', hubRef);
    const split = hubRef.split ?? options.split ?? 'test';
    const builtin = (Object.keys(TASK_SOURCES) as BuiltinTaskName[]).find((k) => TASK_SOURCES[k].hub.id === hubRef.hub.replace(/@.*$/, ''));
    if (builtin) return loadBuiltinHub(builtin, hubRef, split, options.hub);
    const { rows, source } = await loadHubRows(hubRef, split, options.hub);
    return genericTask(rows, source, hubRef.hub.replace(/@.*$/, '').split('/')[1]!, options.kind);
  }
  const name = nameOrFile as string;
  const builtin: BuiltinTaskName | undefined = name === 'math' ? 'math500' : Object.hasOwn(TASK_SOURCES, name) ? (name as BuiltinTaskName) : undefined;
  if (builtin) {
    const dataDir = options.dataDir ?? defaultDataDir();
    if (dataDir !== undefined) return loadBuiltinLocal(builtin, dataDir, options.split ?? 'test');
    const hub = TASK_SOURCES[builtin].hub;
    return loadBuiltinHub(builtin, { hub: hub.id }, builtin === 'gsm8k' ? (options.split ?? hub.split) : hub.split, options.hub);
  }
  if (/\.jsonl(\.gz)?$/.test(name)) return loadJsonlTask(name, options.kind);
  throw expected('gsm8k, math500, humaneval, mbpp, hf://datasets/owner/name or a .jsonl file', 'task', name);
}
