// Tokenizer and chat template of a Hugging Face model directory: tokenizer.json through
// @huggingface/tokenizers, the chat template of tokenizer_config.json through @huggingface/jinja,
// both run in a worker with a time and memory bound per call (tokenizer-sandbox.ts): these files
// come from strangers, and a regular expression or a template can loop or allocate without end.
import path from 'node:path';

import { CheckpointError, InputError } from './errors.js';
import { parseJsonText, readRegularFile } from './fsutil.js';
import { sandboxLimits, SandboxedTokenizer, type SandboxReply, type SandboxRequest } from './tokenizer-sandbox.js';

export { sandboxLimits, setSandboxLimits, SANDBOX_DEFAULTS, type SandboxLimits } from './tokenizer-sandbox.js';

export type ChatMessage = { role: string; content: string };

export type ChatTemplateOptions = {
  /** Append the assistant header so the model continues as the assistant. Defaults to `true`. */
  addGenerationPrompt?: boolean;
};

type TokenizerConfig = Record<string, unknown> & { chat_template?: unknown };

function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string')
    return (value as { content: string }).content;
  return undefined;
}

const WHAT: Record<SandboxRequest['op'], string> = {
  decodeBatch: 'decoding token ids', encode: 'tokenizing a text', encodeBatch: 'tokenizing texts', encodeChatBatch: 'rendering `chat_template` and tokenizing', decode: 'decoding token ids', tokenToId: 'looking up a token', idToToken: 'looking up a token id', render: 'rendering `chat_template`',
};

/** Texts per call to the tokenizer process in the batch methods: each call has its own deadline. */
const BATCH = 256;

export class Tokenizer {
  readonly #sandboxed: SandboxedTokenizer;
  readonly #config: TokenizerConfig;
  readonly #hasTemplate: boolean;
  readonly #source: string;
  readonly #ids = new Map<string, number | undefined>();
  /** Set once a call was stopped at a limit: the same input would do the same again, so every later call fails with it. */
  #broken: CheckpointError | null = null;

  private constructor(sandboxed: SandboxedTokenizer, config: TokenizerConfig, hasTemplate: boolean, source: string) {
    this.#sandboxed = sandboxed;
    this.#config = config;
    this.#hasTemplate = hasTemplate;
    this.#source = source;
  }

  /** Loads tokenizer.json and tokenizer_config.json (optional) from a model directory. */
  static async load(dir: string): Promise<Tokenizer> {
    const readJson = async (name: string, optional: boolean): Promise<Record<string, unknown> | undefined> => {
      const file = path.join(dir, name);
      let text: string;
      try {
        text = await readRegularFile(file);
      } catch (err) {
        if (optional && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new CheckpointError(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
      }
      try {
        const v = parseJsonText(text) as Record<string, unknown>;
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
        return v;
      } catch (err) {
        throw new CheckpointError(`${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
    };
    const json = (await readJson('tokenizer.json', false))!;
    const config = (await readJson('tokenizer_config.json', true)) ?? {};
    return Tokenizer.fromJSON(json, config, dir);
  }

  /** A tokenizer from parsed tokenizer.json and tokenizer_config.json; `source` names them in errors. */
  static fromJSON(json: Record<string, unknown>, config: Record<string, unknown>, source = '(memory)'): Tokenizer {
    let template = (config as TokenizerConfig).chat_template;
    if (Array.isArray(template)) template = template.find((t) => t?.name === 'default')?.template ?? template[0]?.template;
    if (template !== undefined && typeof template !== 'string')
      throw new CheckpointError(`${path.join(source, 'tokenizer_config.json')}: \`chat_template\` must be a string`);
    const r = SandboxedTokenizer.create({ json, config, template });
    if ('tokenizer' in r) {
      const t = new Tokenizer(r.tokenizer, config, template !== undefined, source);
      r.tokenizer.bindTo(t);
      return t;
    }
    if ('stopped' in r) throw Tokenizer.#limitError(source, 'tokenizer.json', 'loading the tokenizer');
    if (r.file === 'tokenizer_config.json')
      throw new CheckpointError(`${path.join(source, 'tokenizer_config.json')}: \`chat_template\` does not parse: ${r.error}`);
    throw new CheckpointError(`${path.join(source, 'tokenizer.json')}: ${r.error}`);
  }

  static #limitError(source: string, file: string, what: string): CheckpointError {
    const l = sandboxLimits();
    return new CheckpointError(
      `${path.join(source, file)}: ${what} went past the limits of ${l.timeMs / 1000} s and ${l.memoryMb} MiB and was stopped ` +
        `(a ${file === 'tokenizer.json' ? 'regular expression that backtracks without end' : 'template that loops or allocates without end'}?); this tokenizer is unusable`,
    );
  }

  #call(req: SandboxRequest): unknown {
    if (this.#broken) throw this.#broken;
    const r: SandboxReply = this.#sandboxed.call(req);
    if ('value' in r) return r.value;
    const file = req.op === 'render' || req.op === 'encodeChatBatch' ? 'tokenizer_config.json' : 'tokenizer.json';
    if ('stopped' in r) throw (this.#broken = Tokenizer.#limitError(this.#source, file, WHAT[req.op]));
    throw new CheckpointError(`${path.join(this.#source, r.file)}: ${WHAT[req.op]} failed: ${r.error}`);
  }

  /** Token ids of a text. Special tokens written in the text (e.g. `<|mdm_mask|>`) map to their ids. */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw new InputError(`Expected a string for \`text\` but received ${typeof text}`);
    return this.#call({ op: 'encode', text, addSpecialTokens: options.addSpecialTokens ?? false }) as number[];
  }

  /** encode() of many texts, in few calls to the tokenizer process (each call costs ~0.2 ms). */
  encodeBatch(texts: readonly string[], options: { addSpecialTokens?: boolean } = {}): number[][] {
    texts.forEach((t, i) => {
      if (typeof t !== 'string') throw new InputError(`Expected a string for \`texts[${i}]\` but received ${typeof t}`);
    });
    const out: number[][] = [];
    for (let i = 0; i < texts.length; i += BATCH)
      out.push(...(this.#call({ op: 'encodeBatch', texts: texts.slice(i, i + BATCH), addSpecialTokens: options.addSpecialTokens ?? false }) as number[][]));
    return out;
  }

  /** encodeChat() of many chats, in few calls to the tokenizer process. */
  encodeChatBatch(chats: readonly ChatMessage[][], options: ChatTemplateOptions = {}): number[][] {
    if (!this.#hasTemplate) throw new CheckpointError(`${this.#source}/tokenizer_config.json has no \`chat_template\``);
    const out: number[][] = [];
    for (let i = 0; i < chats.length; i += BATCH)
      out.push(...(this.#call({ op: 'encodeChatBatch', contexts: chats.slice(i, i + BATCH).map((m) => this.#context(m, options)) }) as number[][]));
    return out;
  }

  /** The text of token ids. Defaults to keeping special tokens. */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    // The library refuses an empty list; an empty completion is an ordinary result here.
    if (ids.length === 0) return '';
    return this.#call({ op: 'decode', ids: [...ids], skipSpecialTokens: options.skipSpecialTokens ?? false }) as string;
  }

  /** decode() of many id lists, in few calls to the tokenizer process. */
  decodeBatch(idsList: readonly (readonly number[])[], options: { skipSpecialTokens?: boolean } = {}): string[] {
    const out: string[] = [];
    for (let i = 0; i < idsList.length; i += BATCH)
      out.push(...(this.#call({ op: 'decodeBatch', idsList: idsList.slice(i, i + BATCH).map((ids) => [...ids]), skipSpecialTokens: options.skipSpecialTokens ?? false }) as string[]));
    return out;
  }

  tokenToId(token: string): number | undefined {
    if (!this.#ids.has(token)) this.#ids.set(token, (this.#call({ op: 'tokenToId', token }) as number | null | undefined) ?? undefined);
    return this.#ids.get(token);
  }

  idToToken(id: number): string | undefined {
    return (this.#call({ op: 'idToToken', id2: id }) as string | null | undefined) ?? undefined;
  }

  get hasChatTemplate(): boolean {
    return this.#hasTemplate;
  }

  /** Renders the chat template to text (the template adds the BOS token where it wants one). */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.#hasTemplate) throw new CheckpointError(`${this.#source}/tokenizer_config.json has no \`chat_template\``);
    return this.#call({ op: 'render', context: this.#context(messages, options) }) as string;
  }

  #context(messages: ChatMessage[], options: ChatTemplateOptions): Record<string, unknown> {
    return {
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      bos_token: tokenText(this.#config.bos_token) ?? '',
      eos_token: tokenText(this.#config.eos_token) ?? '',
    };
  }

  /** Token ids of a chat: the rendered template encoded without adding special tokens again (one call). */
  encodeChat(messages: ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    return this.encodeChatBatch([messages], options)[0]!;
  }
}
