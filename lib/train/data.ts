// Training data: JSONL files (or Hub data sets, hf://datasets/...) of {prompt, response} (or
// GSM8K's {question, answer}) for SFT and {text} for pre-training, read with line numbers so every
// problem names file:line.
import { readFile } from 'node:fs/promises';

import { ConfigError, InputError } from '../errors.js';
import { loadHubRows, parseHfUrl } from '../hub/index.js';
import type { Tokenizer } from '../tokenizer.js';

export type JsonlRecord = { line: number; value: Record<string, unknown> };

export type ReadJsonlOptions = {
  /** What a malformed line does: stop with an error naming file:line, or skip it and count it. Defaults to `'stop'`. */
  onBadLine?: 'stop' | 'skip';
  /** Fields every record needs (one of each inner list). Defaults to none. */
  require?: string[][];
};

/**
 * Reads a JSONL file (blank lines ignored), or the rows of a Hub data set given as
 * `hf://datasets/owner/name[@revision][/config[/split]]` (split `train` unless named; row i is
 * "line" i + 1). Returns the records and the number of skipped lines.
 */
export async function readJsonl(file: string, options: ReadJsonlOptions = {}): Promise<{ records: JsonlRecord[]; skipped: number }> {
  const hubRef = parseHfUrl(file);
  let lines: string[];
  if (hubRef) {
    const { rows } = await loadHubRows(hubRef, hubRef.split ?? 'train');
    // Rows go through the same checks as the lines of a file.
    lines = rows.map((r) => JSON.stringify(r));
  } else {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
    lines = text.split('\n');
  }
  const records: JsonlRecord[] = [];
  let skipped = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === '') continue;
    let problem: string | undefined;
    let value: unknown;
    try {
      value = JSON.parse(raw);
      if (typeof value !== 'object' || value === null || Array.isArray(value)) problem = 'not a JSON object';
    } catch (err) {
      problem = `not valid JSON (${(err as Error).message})`;
    }
    if (!problem && options.require) {
      const v = value as Record<string, unknown>;
      for (const alternatives of options.require) {
        if (!alternatives.some((k) => typeof v[k] === 'string'))
          problem = `needs a string field ${alternatives.map((k) => `\`${k}\``).join(' or ')}`;
      }
    }
    if (problem) {
      if ((options.onBadLine ?? 'stop') === 'stop')
        throw new InputError(`${file}:${i + 1}: ${problem} (set onBadLine: 'skip' to skip such lines)`);
      skipped++;
      continue;
    }
    records.push({ line: i + 1, value: value as Record<string, unknown> });
  }
  return { records, skipped };
}

/** One tokenized SFT example: the prompt is never masked, the response is. */
export type SftExample = { prompt: number[]; response: number[]; source: string };

export type TokenizeOptions = {
  /** Longest prompt + response in tokens. */
  maxLength: number;
  /** Too-long examples: an error, dropped, or the response cut at maxLength. Defaults to `'error'`. */
  overlong?: 'error' | 'skip' | 'truncate';
  /** Wrap prompts in the tokenizer's chat template (as a user message). Defaults to `true` when it has one. */
  chatTemplate?: boolean;
};

/**
 * Tokenizes records: {prompt, response} or {question, answer} as chat SFT (prompt through the chat
 * template, response followed by end-of-turn), {text} as pre-training (no prompt; bos + text + eos).
 */
export function tokenizeExamples(
  records: JsonlRecord[],
  file: string,
  tokenizer: Tokenizer,
  ids: { bos: number | null; eos: number | null; eot: number | undefined },
  options: TokenizeOptions,
): { examples: SftExample[]; dropped: number } {
  const examples: SftExample[] = [];
  let dropped = 0;
  const useTemplate = options.chatTemplate ?? tokenizer.hasChatTemplate;
  // Every text is tokenized first, in batches: each call to the tokenizer process costs ~0.2 ms.
  const chat = records.map(({ line, value: v }): { prompt: string; response: string } | { text: string } => {
    const p = (v.prompt ?? v.question) as string | undefined;
    const r = (v.response ?? v.answer) as string | undefined;
    if (typeof p === 'string' && typeof r === 'string') return { prompt: p, response: r };
    if (typeof v.text === 'string') return { text: v.text };
    throw new InputError(`${file}:${line}: needs string fields \`prompt\` and \`response\` (or \`question\`/\`answer\`, or \`text\`)`);
  });
  const pairs = chat.filter((c): c is { prompt: string; response: string } => 'prompt' in c);
  const prompts = useTemplate
    ? tokenizer.encodeChatBatch(pairs.map((c) => [{ role: 'user', content: c.prompt }]))
    : tokenizer.encodeBatch(pairs.map((c) => c.prompt));
  const texts = tokenizer.encodeBatch(chat.map((c) => ('prompt' in c ? c.response : c.text)));
  let k = 0;
  for (let j = 0; j < records.length; j++) {
    const source = `${file}:${records[j]!.line}`;
    let prompt: number[], response: number[];
    if ('prompt' in chat[j]!) {
      prompt = prompts[k++]!;
      response = texts[j]!;
      const end = ids.eot ?? ids.eos;
      if (end !== undefined && end !== null) response.push(end);
    } else {
      prompt = [];
      response = [...(ids.bos !== null ? [ids.bos] : []), ...texts[j]!, ...(ids.eos !== null ? [ids.eos] : [])];
    }
    if (prompt.length + response.length > options.maxLength) {
      const mode = options.overlong ?? 'error';
      if (mode === 'skip') {
        dropped++;
        continue;
      }
      if (mode === 'error' || prompt.length >= options.maxLength)
        throw new InputError(
          `${source}: ${prompt.length + response.length} tokens (prompt ${prompt.length}) exceed the maximum length ${options.maxLength}` +
            (mode === 'error' ? "; set overlong: 'skip' or 'truncate'" : ''),
        );
      response = response.slice(0, options.maxLength - prompt.length);
    }
    examples.push({ prompt, response, source });
  }
  return { examples, dropped };
}
