import { parse, symbolicEqual, type MathNode } from 'mathjs';
import { lastBoxed, matchBrace } from './boxed.js';
import { parseDecimal, rationalsMatch } from './numbers.js';

export { lastBoxed } from './boxed.js';

/** Options for {@link isEquivMath} and {@link math}. */
export type MathEquivOptions = {
  /**
   * Time budget in milliseconds for one comparison. Numeric checks are bounded by construction;
   * mathjs simplification cannot be interrupted, so it is only started while budget remains and
   * only on small expressions (see `maxSymbolicNodes`). Defaults to `1000`.
   */
  timeoutMs?: number;
  /** Largest expression (in mathjs nodes) handed to symbolic simplification. Defaults to `60`. */
  maxSymbolicNodes?: number;
  /** Relative tolerance for non-integer numeric values. Defaults to `1e-4`. */
  relativeTolerance?: number;
};

const defaultMathOptions = {
  timeoutMs: 1000,
  maxSymbolicNodes: 60,
  relativeTolerance: 1e-4,
} satisfies Required<MathEquivOptions>;

// ---------------------------------------------------------------------------------------------
// Extraction

/**
 * Extracts the final answer from a MATH-style completion: the last `\boxed{}`/`\fbox{}` (braces
 * matched), else the text after the last "answer is" up to the end of its line. Returns undefined
 * when neither is present.
 */
export function extractMathAnswer(completion: string): string | undefined {
  const boxed = lastBoxed(completion);
  if (boxed !== undefined) return boxed;
  const re = /answer is:?/gi;
  let at = -1;
  for (let m = re.exec(completion); m; m = re.exec(completion)) at = re.lastIndex;
  if (at < 0) return undefined;
  const line = completion.slice(at).split('\n')[0]!.trim();
  const ans = line.replace(/^[\s$]+/, '').replace(/[\s.$]+$/, '');
  return ans === '' ? undefined : ans;
}

/**
 * Extracts the gold answer: a MATH solution's last `\boxed{}`, else the text after "The answer
 * is:", else the gold string itself (a bare answer).
 */
export function extractMathGold(gold: string): string {
  return lastBoxed(gold) ?? extractMathAnswer(gold) ?? gold.trim();
}

// ---------------------------------------------------------------------------------------------
// Normalisation (the string-level clean-up MATH graders do)

const TEXT_CMD = /\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf)\s*\{/g;

/** Replaces each `\cmd{...}` group found by `re` using `fn(content)`; braces matched. */
function replaceGroups(s: string, re: RegExp, fn: (content: string) => string): string {
  let out = '';
  let i = 0;
  re.lastIndex = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const open = re.lastIndex - 1;
    const close = matchBrace(s, open);
    if (close < 0) break;
    out += s.slice(i, m.index) + fn(s.slice(open + 1, close));
    i = close + 1;
    re.lastIndex = i;
  }
  return out + s.slice(i);
}

/** Reads one macro argument at `i`: a braced group or a single non-space character. */
function readArg(s: string, i: number): { arg: string; end: number } | undefined {
  while (s[i] === ' ') i++;
  if (i >= s.length) return undefined;
  if (s[i] === '{') {
    const close = matchBrace(s, i);
    return close < 0 ? undefined : { arg: s.slice(i + 1, close), end: close + 1 };
  }
  if (s[i] === '\\') {
    const m = /^\\[a-zA-Z]+/.exec(s.slice(i));
    if (m) return { arg: m[0], end: i + m[0].length };
  }
  return { arg: s[i]!, end: i + 1 };
}

/** Rewrites `\frac12`, `\frac 59`, `\frac9{19}`, `\sqrt2` into fully braced forms. */
function braceMacroArgs(s: string): string {
  let out = '';
  let i = 0;
  const re = /\\(frac|sqrt|binom)(?![a-zA-Z])/g;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    out += s.slice(i, m.index) + '\\' + m[1];
    let j = re.lastIndex;
    if (m[1] === 'sqrt') {
      while (s[j] === ' ') j++;
      if (s[j] === '[') {
        const close = s.indexOf(']', j);
        if (close < 0) break;
        out += s.slice(j, close + 1);
        j = close + 1;
      }
    }
    const nArgs = m[1] === 'sqrt' ? 1 : 2;
    for (let k = 0; k < nArgs; k++) {
      const a = readArg(s, j);
      if (!a) break;
      out += '{' + braceMacroArgs(a.arg) + '}';
      j = a.end;
    }
    i = j;
    re.lastIndex = j;
  }
  return out + s.slice(i);
}

/**
 * Normalises a MATH answer string the way MATH graders do: drops `$`, `\left`/`\right`, spacing
 * macros, `^\circ`, `\%`, trailing `.` and `\text{...}` units (keeping the text when it is the whole
 * answer), turns `\dfrac`/`\tfrac` into `\frac`, braces `\frac12` and `\sqrt2`, strips a leading
 * `x =` or `x \in`, removes thousands separators, writes `.5` as `0.5` and `a/b` as `\frac{a}{b}`,
 * lower-cases plain words and reduces `(C)` to `C`. The result has no spaces except one after a
 * command that takes a bare argument (`\cot x`).
 */
export function normalizeMathAnswer(answer: string): string {
  return normalize(answer, true);
}

function normalize(answer: string, stripVariable: boolean): string {
  let s = answer.replace(/\r?\n/g, ' ').trim();
  s = s.replace(/(?<!\\)\\[!,;:> ]/g, ' ').replace(/\\q?quad(?![a-zA-Z])/g, ' ').replace(/~/g, ' ');
  s = s.replace(/\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|displaystyle)(?![a-zA-Z])\.?/g, '');
  s = s.replace(/\\[dt]frac(?![a-zA-Z])/g, '\\frac');
  s = s.replace(/\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°/g, '');
  s = s.replace(/\\\$|\$/g, '').replace(/\\?%/g, '');
  // Units and words: drop \text{...} groups when a number remains, else keep their words.
  const withoutText = replaceGroups(s, TEXT_CMD, () => ' ').replace(/\^\s*\{?[23]\}?/g, (m, off, str) =>
    // A ^2 left dangling by a removed unit such as "\mbox{ cm}^2".
    /\s$/.test(str.slice(0, off)) ? '' : m,
  );
  s = /\d/.test(withoutText) && withoutText.trim() !== '' ? withoutText : replaceGroups(s, TEXT_CMD, (c) => c);
  s = s.replace(/\\(?:mathit|mathbb|mathcal|boldsymbol|bm)\s*\{([^{}]*)\}/g, '$1');
  s = s.replace(/\s+/g, ' ').trim();
  s = s.replace(/\s*(?:\.|\\\.)+$/, '');
  s = braceMacroArgs(s);
  // "x = 5", "y = 2x + 3", "x \in [-2,7]": the answer is the right-hand side.
  if (stripVariable) s = s.replace(/^[a-zA-Z]\s*(?:=|\\in(?![a-zA-Z]))\s*(?=\S)/, '');
  // Collapse spaces, keeping one only where a command is followed by a letter or digit.
  s = s.replace(/(\\[a-zA-Z]+)\s+(?=[a-zA-Z0-9])/g, '$1\u0000').replace(/\s+/g, '').replace(/\u0000/g, ' ');
  if (/^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$/.test(s)) s = s.replace(/,/g, '');
  s = s.replace(/(^|[^\d])\.(\d)/g, (_m, before: string, digit: string) => `${before}0.${digit}`);
  const slash = /^(-?\d+)\/(\d+)$/.exec(s);
  if (slash) s = `\\frac{${slash[1]}}{${slash[2]}}`;
  const choice = /^\(?([A-Ea-e])\)$/.exec(s) ?? /^\(([A-Ea-e])\)?$/.exec(s);
  if (choice) s = choice[1]!.toUpperCase();
  if (/^[a-zA-Z][a-zA-Z ]+$/.test(s) && s.length > 1 && !/^[a-zA-Z]{1,2}$/.test(s)) s = s.toLowerCase();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Structure: tuples, intervals, sets, lists, matrices, equations

type Answer =
  | { kind: 'scalar'; text: string }
  | { kind: 'equation'; lhs: string; rhs: string }
  | { kind: 'list'; items: string[] } // unordered, e.g. roots "1,-2" or "1 \pm \sqrt2"
  | { kind: 'set'; items: string[] } // unordered, \{...\}
  | { kind: 'tuple'; open: string; close: string; items: string[] } // ordered, also intervals
  | { kind: 'union'; parts: string[] }
  | { kind: 'matrix'; rows: string[][] };

/** Splits on `sep` at bracket depth 0 (`()[]{}` all count, so half-open intervals nest fine). */
function splitTop(s: string, sep: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\') {
      if (depth === 0 && s.startsWith(sep, i) && sep.startsWith('\\')) {
        parts.push(s.slice(start, i));
        start = i + sep.length;
        i = start - 1;
        continue;
      }
      // Escaped braces \{ \} are set delimiters and nest like brackets.
      if (s[i + 1] === '{') depth++;
      else if (s[i + 1] === '}') depth--;
      i++;
      continue;
    }
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth--;
    else if (depth === 0 && s.startsWith(sep, i)) {
      parts.push(s.slice(start, i));
      start = i + sep.length;
      i = start - 1;
    }
  }
  parts.push(s.slice(start));
  return parts;
}

/** True when the bracket at 0 closes exactly at the last character. */
function wrapsWhole(s: string): boolean {
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\') {
      i++;
      continue;
    }
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') {
      depth--;
      if (depth === 0 && i < s.length - 1) return false;
    }
  }
  return depth === 0;
}

function expandPlusMinus(s: string): string[] | undefined {
  const parts = s.split(/\\(?:pm|mp)(?![a-zA-Z])/);
  if (parts.length !== 2) return undefined;
  return [`${parts[0]}+${parts[1]}`, `${parts[0]}-${parts[1]}`];
}

function structure(s: string): Answer {
  const mat = /^\\begin\{([pbvB]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$/.exec(s);
  if (mat) {
    const rows = mat[2]!.split('\\\\').filter((r) => r !== '').map((r) => r.split('&'));
    return { kind: 'matrix', rows };
  }
  if (s.startsWith('\\{') && s.endsWith('\\}')) {
    const inner = s.slice(2, -2);
    return { kind: 'set', items: splitTop(inner, ',').flatMap((x) => expandPlusMinus(x) ?? [x]) };
  }
  const union = splitTop(s, '\\cup');
  if (union.length > 1) return { kind: 'union', parts: union };
  if (/^[([]/.test(s) && /[)\]]$/.test(s) && wrapsWhole(s)) {
    const items = splitTop(s.slice(1, -1), ',');
    if (items.length > 1) return { kind: 'tuple', open: s[0]!, close: s[s.length - 1]!, items };
  }
  const list = splitTop(s, ',');
  if (list.length > 1) return { kind: 'list', items: list.flatMap((x) => expandPlusMinus(x) ?? [x]) };
  const eq = splitTop(s, '=');
  if (eq.length === 2 && eq[0] !== '' && eq[1] !== '') return { kind: 'equation', lhs: eq[0]!, rhs: eq[1]! };
  const pm = expandPlusMinus(s);
  if (pm) return { kind: 'list', items: pm };
  return { kind: 'scalar', text: s };
}

// ---------------------------------------------------------------------------------------------
// LaTeX -> mathjs

const FUNCTIONS: Record<string, string> = {
  sin: 'sin', cos: 'cos', tan: 'tan', cot: 'cot', sec: 'sec', csc: 'csc',
  arcsin: 'asin', arccos: 'acos', arctan: 'atan', sinh: 'sinh', cosh: 'cosh', tanh: 'tanh',
  ln: 'log', log: 'log10', exp: 'exp',
};
const CONSTANTS: Record<string, string> = { pi: 'pi', infty: 'Infinity', infinity: 'Infinity' };
const OPERATORS: Record<string, string> = { cdot: '*', times: '*', div: '/', ast: '*' };

class Unsupported extends Error {}

/**
 * Converts a normalised LaTeX scalar into mathjs syntax. Single letters become separate symbols
 * (so `xy` is a product), Greek letters become `g_<name>` (mathjs reserves `phi`), and functions
 * written without parentheses (`\cot x`) take the following term as their argument.
 */
export function latexToMathjs(s: string): string {
  let i = 0;
  const out: string[] = [];
  // Whether the previous emitted token ends an operand, so that `(` or a letter after it
  // multiplies instead of calling (mathjs would read `x(y)` as a call).
  let prevOperand = false;
  const emitOperand = (t: string) => {
    if (prevOperand) out.push('*');
    out.push(t);
    prevOperand = true;
  };
  const group = (content: string) => '(' + latexToMathjs(content) + ')';
  const readGroup = (): string => {
    const a = readArg(s, i);
    if (!a) throw new Unsupported('missing argument');
    i = a.end;
    return a.arg;
  };
  while (i < s.length) {
    const c = s[i]!;
    if (c === ' ') {
      i++;
      continue;
    }
    if (c === '\\') {
      const m = /^\\([a-zA-Z]+)/.exec(s.slice(i));
      if (!m) throw new Unsupported(`unexpected ${s.slice(i, i + 2)}`);
      const name = m[1]!;
      i += m[0].length;
      if (name === 'frac') {
        const a = readGroup();
        const b = readGroup();
        emitOperand(`(${group(a)}/${group(b)})`);
      } else if (name === 'sqrt') {
        let root: string | undefined;
        if (s[i] === '[') {
          const close = s.indexOf(']', i);
          root = s.slice(i + 1, close);
          i = close + 1;
        }
        const a = readGroup();
        emitOperand(root ? `nthRoot(${group(a)},${group(root)})` : `sqrt${group(a)}`);
      } else if (name === 'binom') {
        const a = readGroup();
        const b = readGroup();
        emitOperand(`combinations(${group(a)},${group(b)})`);
      } else if (name in FUNCTIONS) {
        let power = '';
        if (s[i] === '^') {
          i++;
          power = '^' + group(readGroup());
        }
        while (s[i] === ' ') i++;
        let arg: string;
        if (s[i] === '(' || s[i] === '{') {
          const open = s[i]!;
          const close = open === '(' ? matchParen(s, i) : matchBrace(s, i);
          if (close < 0) throw new Unsupported('unbalanced');
          arg = s.slice(i + 1, close);
          i = close + 1;
        } else {
          const m2 = /^(?:\d+(?:\.\d+)?)?(?:[a-zA-Z]|\\[a-zA-Z]+)?/.exec(s.slice(i))!;
          if (m2[0] === '') throw new Unsupported('missing argument');
          arg = m2[0];
          i += m2[0].length;
        }
        emitOperand(`${FUNCTIONS[name]}${group(arg)}${power}`);
      } else if (name in CONSTANTS) {
        emitOperand(CONSTANTS[name]!);
      } else if (name in OPERATORS) {
        out.push(OPERATORS[name]!);
        prevOperand = false;
      } else if (name === 'lfloor' || name === 'lceil') {
        const closer = name === 'lfloor' ? '\\rfloor' : '\\rceil';
        const end = s.indexOf(closer, i);
        if (end < 0) throw new Unsupported('unbalanced');
        emitOperand(`${name === 'lfloor' ? 'floor' : 'ceil'}${group(s.slice(i, end))}`);
        i = end + closer.length;
      } else if (/^[a-zA-Z]+$/.test(name) && name.length > 1 && !/^(?:begin|end|text|in|cup|cap|le|ge|leq|geq|ne|neq|pm|mp)$/.test(name)) {
        emitOperand(`g_${name}`);
      } else {
        throw new Unsupported(`\\${name}`);
      }
      continue;
    }
    if (/\d/.test(c) || (c === '.' && /\d/.test(s[i + 1] ?? ''))) {
      const m = /^\d*\.?\d+/.exec(s.slice(i))!;
      emitOperand(m[0]);
      i += m[0].length;
      continue;
    }
    if (/[a-zA-Z]/.test(c)) {
      let name = c;
      i++;
      // Subscripted symbols (x_1, a_{12}) stay one symbol.
      if (s[i] === '_') {
        const a = readArg(s, i + 1);
        if (!a || !/^[a-zA-Z0-9]+$/.test(a.arg)) throw new Unsupported('subscript');
        name += '_' + a.arg;
        i = a.end;
      }
      emitOperand(name);
      continue;
    }
    if (c === '(' || c === '{' || c === '[') {
      const close = c === '{' ? matchBrace(s, i) : matchParen(s, i);
      if (close < 0) throw new Unsupported('unbalanced');
      emitOperand(group(s.slice(i + 1, close)));
      i = close + 1;
      continue;
    }
    if (c === '^') {
      i++;
      const a = readGroup();
      out.push('^', group(a));
      prevOperand = true;
      continue;
    }
    if (c === '!') {
      out.push('!');
      i++;
      prevOperand = true;
      continue;
    }
    if ('+-*/'.includes(c)) {
      out.push(c);
      prevOperand = false;
      i++;
      continue;
    }
    throw new Unsupported(`unexpected ${c}`);
  }
  return out.join(' ');
}

function matchParen(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\') {
      i++;
      continue;
    }
    if (c === '(' || c === '[' || c === '{') depth++;
    else if ((c === ')' || c === ']' || c === '}') && --depth === 0) return i;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Equivalence

type Complex = { re: number; im: number };

function toComplex(v: unknown): Complex | undefined {
  if (typeof v === 'number') return { re: v, im: 0 };
  if (v && typeof v === 'object' && 're' in v && 'im' in v) {
    const c = v as { re: unknown; im: unknown };
    if (typeof c.re === 'number' && typeof c.im === 'number') return { re: c.re, im: c.im };
  }
  if (typeof v === 'boolean') return { re: v ? 1 : 0, im: 0 };
  return undefined;
}

function nearlyInteger(x: Complex): boolean {
  return Math.abs(x.im) <= 1e-9 * Math.max(1, Math.abs(x.re)) && Math.abs(x.re - Math.round(x.re)) <= 1e-9 * Math.max(1, Math.abs(x.re));
}

function close(a: Complex, b: Complex, relTol: number): boolean {
  if (a.re === b.re && a.im === b.im) return true; // also Infinity === Infinity
  const scale = Math.max(Math.hypot(a.re, a.im), Math.hypot(b.re, b.im));
  if (!Number.isFinite(scale)) return false;
  const diff = Math.hypot(a.re - b.re, a.im - b.im);
  if (scale < 1e-12) return diff < 1e-12;
  return diff <= relTol * scale;
}

type Parsed = { node: MathNode; vars: string[] };
const RESERVED = new Set(['pi', 'e', 'i', 'Infinity']);

function parseScalar(s: string, cache: Map<string, Parsed | null>): Parsed | undefined {
  if (cache.has(s)) return cache.get(s) ?? undefined;
  let parsed: Parsed | null = null;
  try {
    const node = parse(latexToMathjs(mixedNumber(s)));
    const vars = new Set<string>();
    node.traverse((n, _path, parent) => {
      if (n.type === 'SymbolNode') {
        const name = (n as unknown as { name: string }).name;
        const isCallee = parent?.type === 'FunctionNode' && (parent as unknown as { fn: MathNode }).fn === n;
        if (!isCallee && !RESERVED.has(name)) vars.add(name);
      }
    });
    parsed = { node, vars: [...vars].sort() };
  } catch {
    parsed = null;
  }
  cache.set(s, parsed);
  return parsed ?? undefined;
}

/** `1\frac{4}{5}` in MATH answers is a mixed number, 1 + 4/5, not a product. */
function mixedNumber(s: string): string {
  const m = /^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$/.exec(s);
  return m ? `${m[1]}(${m[2]}+\\frac{${m[3]}}{${m[4]}})` : s;
}

// Deterministic probe points, away from 0 and 1 where many different expressions coincide.
const PROBES = [0.37, 1.61, 2.23, 0.83, 1.29, 2.71, 0.59];

type Ctx = Required<MathEquivOptions> & { deadline: number; cache: Map<string, Parsed | null> };

function scalarEquiv(a: string, b: string, ctx: Ctx): boolean {
  if (a === b) return true;
  // Base-n numbers such as 52_8 only compare as written.
  if (/_\{?\d+\}?$/.test(a) || /_\{?\d+\}?$/.test(b)) return a.replace(/[{}]/g, '') === b.replace(/[{}]/g, '');
  const ra = parseDecimal(a);
  const rb = parseDecimal(b);
  if (ra && rb) return rationalsMatch(ra, rb, ctx.relativeTolerance);
  const pa = parseScalar(a, ctx.cache);
  const pb = parseScalar(b, ctx.cache);
  if (!pa || !pb) return false;
  const vars = [...new Set([...pa.vars, ...pb.vars])].sort();
  let fa, fb;
  try {
    fa = pa.node.compile();
    fb = pb.node.compile();
  } catch {
    return false;
  }
  if (vars.length === 0) {
    let va: Complex | undefined, vb: Complex | undefined;
    try {
      va = toComplex(fa.evaluate({}));
      vb = toComplex(fb.evaluate({}));
    } catch {
      return false;
    }
    if (!va || !vb) return false;
    // An integer answer must be matched exactly (no tolerance), as in the GSM8K reward.
    if (nearlyInteger(va) || nearlyInteger(vb)) return close(va, vb, 1e-12);
    return close(va, vb, ctx.relativeTolerance);
  }
  let agreed = 0;
  for (let p = 0; p < PROBES.length; p++) {
    const scope: Record<string, number> = {};
    vars.forEach((v, k) => (scope[v] = PROBES[(p + 3 * k) % PROBES.length]! + 0.11 * k));
    let va: Complex | undefined, vb: Complex | undefined;
    try {
      va = toComplex(fa.evaluate(scope));
      vb = toComplex(fb.evaluate(scope));
    } catch {
      continue;
    }
    if (!va || !vb || !Number.isFinite(va.re) || !Number.isFinite(vb.re)) continue;
    if (!close(va, vb, 1e-8)) return false;
    agreed++;
  }
  if (agreed >= 3) return true;
  return symbolicFallback(pa.node, pb.node, ctx);
}

function countNodes(n: MathNode): number {
  let k = 0;
  n.traverse(() => k++);
  return k;
}

function symbolicFallback(a: MathNode, b: MathNode, ctx: Ctx): boolean {
  if (Date.now() > ctx.deadline) return false;
  if (countNodes(a) + countNodes(b) > ctx.maxSymbolicNodes) return false;
  try {
    return symbolicEqual(a, b);
  } catch {
    return false;
  }
}

function equationEquiv(a: { lhs: string; rhs: string }, b: { lhs: string; rhs: string }, ctx: Ctx): boolean {
  if (a.lhs === b.lhs && a.rhs === b.rhs) return true;
  // Two equations agree when lhs - rhs of one is a non-zero constant multiple of the other's.
  const fa = parseScalar(`${a.lhs}-(${a.rhs})`, ctx.cache);
  const fb = parseScalar(`${b.lhs}-(${b.rhs})`, ctx.cache);
  if (!fa || !fb) return false;
  const vars = [...new Set([...fa.vars, ...fb.vars])].sort();
  let ca, cb;
  try {
    ca = fa.node.compile();
    cb = fb.node.compile();
  } catch {
    return false;
  }
  let ratio: number | undefined;
  let agreed = 0;
  for (let p = 0; p < PROBES.length; p++) {
    const scope: Record<string, number> = {};
    vars.forEach((v, k) => (scope[v] = PROBES[(p + 3 * k) % PROBES.length]! + 0.11 * k));
    try {
      const x = toComplex(ca.evaluate(scope));
      const y = toComplex(cb.evaluate(scope));
      if (!x || !y || Math.abs(y.re) < 1e-12 || x.im !== 0 || y.im !== 0) continue;
      const r = x.re / y.re;
      if (ratio === undefined) ratio = r;
      else if (Math.abs(r - ratio) > 1e-8 * Math.max(1, Math.abs(ratio))) return false;
      agreed++;
    } catch {
      continue;
    }
  }
  return agreed >= 3 && ratio !== undefined && ratio !== 0;
}

/** Matches unordered lists by backtracking (answers have few elements). */
function unorderedEquiv(xs: string[], ys: string[], ctx: Ctx): boolean {
  if (xs.length !== ys.length || xs.length > 12) return false;
  const used = new Array<boolean>(ys.length).fill(false);
  const go = (i: number): boolean => {
    if (i === xs.length) return true;
    for (let j = 0; j < ys.length; j++) {
      if (!used[j] && scalarEquiv(xs[i]!, ys[j]!, ctx)) {
        used[j] = true;
        if (go(i + 1)) return true;
        used[j] = false;
      }
    }
    return false;
  };
  return go(0);
}

function orderedEquiv(xs: string[], ys: string[], ctx: Ctx): boolean {
  return xs.length === ys.length && xs.every((x, k) => scalarEquiv(x, ys[k]!, ctx));
}

function answersEquiv(a: Answer, b: Answer, ctx: Ctx): boolean {
  if (a.kind === 'list' && b.kind === 'scalar') return a.items.length === 1 && scalarEquiv(a.items[0]!, b.text, ctx);
  if (b.kind === 'list' && a.kind === 'scalar') return answersEquiv(b, a, ctx);
  if ((a.kind === 'list' || a.kind === 'set') && (b.kind === 'list' || b.kind === 'set')) return unorderedEquiv(a.items, b.items, ctx);
  if (a.kind !== b.kind) return false;
  switch (a.kind) {
    case 'scalar':
      return scalarEquiv(a.text, (b as typeof a).text, ctx);
    case 'equation':
      return equationEquiv(a, b as typeof a, ctx);
    case 'tuple': {
      const t = b as typeof a;
      return a.open === t.open && a.close === t.close && orderedEquiv(a.items, t.items, ctx);
    }
    case 'union': {
      const u = b as typeof a;
      if (a.parts.length !== u.parts.length) return false;
      const used = new Array<boolean>(u.parts.length).fill(false);
      return a.parts.every((p) => {
        const j = u.parts.findIndex((q, k) => !used[k] && answersEquiv(structure(p), structure(q), ctx));
        if (j < 0) return false;
        used[j] = true;
        return true;
      });
    }
    case 'matrix': {
      const m = b as typeof a;
      return a.rows.length === m.rows.length && a.rows.every((r, k) => orderedEquiv(r, m.rows[k]!, ctx));
    }
    default:
      return false;
  }
}

/**
 * True when two MATH answers are equivalent: equal after {@link normalizeMathAnswer}, equal in
 * value (integers exactly, other numbers within `relativeTolerance`), or symbolically equal
 * (expressions agree at several probe points, with mathjs simplification as a fallback). Tuples,
 * intervals and matrices are compared element-wise in order (brackets must match); bare lists,
 * `\{...\}` sets and `a \pm b` are compared as unordered collections; equations agree when one is
 * a constant multiple of the other.
 */
export function isEquivMath(a: string, b: string, options: MathEquivOptions = {}): boolean {
  const opts = { ...defaultMathOptions, ...options };
  const na = normalizeMathAnswer(a);
  const nb = normalizeMathAnswer(b);
  if (na === nb) return na !== '';
  if (na === '' || nb === '') return false;
  const ctx: Ctx = { ...opts, deadline: Date.now() + opts.timeoutMs, cache: new Map() };
  if (answersEquiv(structure(na), structure(nb), ctx)) return true;
  // "y = -2x" against "2x + y = 0": compare as equations when a stripped `y =` mattered.
  const ea = normalize(a, false);
  const eb = normalize(b, false);
  if (ea === na && eb === nb) return false;
  const sa = structure(ea);
  const sb = structure(eb);
  return sa.kind === 'equation' && sb.kind === 'equation' && answersEquiv(sa, sb, ctx);
}

/**
 * The MATH reward: 1 when the completion's final answer (last `\boxed{}`) is equivalent to the gold
 * answer under {@link isEquivMath}, else 0.
 *
 * @param completion The model's response.
 * @param gold A MATH solution (its last `\boxed{}` or `The answer is:` line is used) or a bare answer.
 */
export function math(completion: string, gold: string, options?: MathEquivOptions): number {
  const predicted = extractMathAnswer(completion);
  if (predicted === undefined) return 0;
  return isEquivMath(predicted, extractMathGold(gold), options) ? 1 : 0;
}
