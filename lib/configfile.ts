// Command configs from JSON or YAML files, and the key names they accept: the camelCase names of the
// schemas and TRL's snake_case spellings of them (learning_rate, num_generations, ...).
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

import { ConfigError } from './errors.js';

/** Reads a .json, .yaml or .yml file; returns the parsed value and the directory its paths are relative to. */
export async function readConfigFile(file: string): Promise<{ raw: unknown; baseDir: string }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = /\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file} does not parse: ${(err as Error).message}`, { cause: err });
  }
  return { raw, baseDir: path.dirname(path.resolve(file)) };
}

/**
 * A TRL name whose meaning here is not just its camelCase spelling: the field it sets, and how its
 * value converts (given the config with every other key already in camelCase).
 */
export type ExtraAlias = { to: string; convert?: (value: unknown, config: Record<string, unknown>, source: string) => unknown };

/** TRL's `bf16: true | false`: the compute dtype, `dtype: 'bf16' | 'fp32'`. */
export const BF16_ALIAS: ExtraAlias = {
  to: 'dtype',
  convert: (value, _config, source) => {
    if (typeof value !== 'boolean') throw new ConfigError(`${source}: \`bf16\` must be true or false but is ${JSON.stringify(value)}`);
    return value ? 'bf16' : 'fp32';
  },
};

/** TRL names with no meaning here, and why (said instead of a did-you-mean). */
const TRL_ONLY: Record<string, string> = {
  fp16: "the compute dtype is fp32 or bf16 (`dtype`, or TRL's `bf16: true`); fp16 is not offered",
  use_vllm: 'rollouts run in the engine itself',
  max_prompt_length: "prompts over the model's length are an error or skipped (data.overlong)",
  report_to: 'metrics go to metrics.jsonl in the output directory',
  optim: 'the optimizer is AdamW',
  num_train_epochs: 'a JustGRPO run lasts maxSteps (max_steps) steps',
};

/** `learningRate` -> `learning_rate`. */
export function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

// The object schema inside optional / default / nullable wrappers, if there is one.
function objectShape(schema: z.ZodType): Record<string, z.ZodType> | null {
  let s = schema as z.ZodType & { _zod: { def: { type: string; innerType?: z.ZodType } } };
  while (s._zod.def.innerType && ['optional', 'default', 'nullable', 'prefault'].includes(s._zod.def.type)) s = s._zod.def.innerType as typeof s;
  return s instanceof z.ZodObject ? (s.shape as Record<string, z.ZodType>) : null;
}

// Edit distance of two names, compared without case and separators (learningrate == learning_rate).
function distance(a: string, b: string): number {
  const x = a.toLowerCase().replace(/[_-]/g, ''), y = b.toLowerCase().replace(/[_-]/g, '');
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const cur = [i];
    for (let j = 1; j <= y.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[y.length]!;
}

/**
 * Rewrites the keys of a config object into the schema's camelCase names: each field also answers
 * to its snake_case spelling (TRL's), and `extras` adds TRL names that differ. Nested objects
 * (`data`, `eval`) are rewritten the same way. Both spellings of one field, and keys that are
 * neither, are errors; all unknown keys are reported at once, each with the nearest known names.
 */
export function normalizeConfigKeys(
  schema: z.ZodType, raw: unknown, source: string, extras: Record<string, ExtraAlias> = {},
): { value: unknown; spelling: Map<string, string> } {
  const problems: string[] = [];
  // Each field's dotted path as the file spelled it (errors then name the key the user wrote).
  const spelling = new Map<string, string>();
  const walk = (s: z.ZodType, value: unknown, at: string, written: string, extra: Record<string, ExtraAlias>): unknown => {
    const shape = objectShape(s);
    if (!shape || typeof value !== 'object' || value === null || Array.isArray(value)) return value;
    const fields = Object.keys(shape);
    const bySnake = new Map(fields.map((f) => [snakeCase(f), f]));
    const out: Record<string, unknown> = {};
    const spelledAs = new Map<string, string>();
    const later: [string, unknown][] = [];
    for (const [key, v] of Object.entries(value)) {
      const field = shape[key] ? key : bySnake.get(key);
      if (field === undefined) {
        if (extra[key]) {
          later.push([key, v]);
          continue;
        }
        const candidates = [...fields.flatMap((f) => [f, snakeCase(f)]), ...Object.keys(extra)];
        const best = candidates.map((c) => [c, distance(key, c)] as const).sort((a, b) => a[1] - b[1])[0];
        const near = best && best[1] <= Math.max(2, Math.floor(key.length / 3)) ? best[0] : null;
        const named = near ? (bySnake.get(near) ?? near) : null;
        const hint = TRL_ONLY[key] && at === '' ? ` (TRL's; not used here: ${TRL_ONLY[key]})`
          : named ? ` (did you mean \`${named}\`${snakeCase(named) !== named ? ` / \`${snakeCase(named)}\`` : ''}?)` : '';
        problems.push(`unknown key \`${at}${key}\`${hint}`);
        continue;
      }
      if (spelledAs.has(field)) {
        problems.push(`\`${at}${spelledAs.get(field)}\` and \`${at}${key}\` are the same field; give one`);
        continue;
      }
      spelledAs.set(field, key);
      spelling.set(`${at}${field}`, `${written}${key}`);
      out[field] = walk(shape[field]!, v, `${at}${field}.`, `${written}${key}.`, {});
    }
    for (const [key, v] of later) {
      const { to, convert } = extra[key]!;
      if (spelledAs.has(to)) {
        problems.push(`\`${at}${spelledAs.get(to)}\` and \`${at}${key}\` both set \`${to}\`; give one`);
        continue;
      }
      spelledAs.set(to, key);
      spelling.set(`${at}${to}`, `${written}${key}`);
      out[to] = convert ? convert(v, out, source) : v;
    }
    return out;
  };
  const value = walk(schema, raw, '', '', extras);
  if (problems.length) throw new ConfigError(`${source}: ${problems.join('; ')}`);
  return { value, spelling };
}
