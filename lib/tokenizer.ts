// Tokenizer and chat template of a Hugging Face model directory: tokenizer.json through
// @huggingface/tokenizers, the chat template of tokenizer_config.json through @huggingface/jinja.
import path from 'node:path';

import { Template } from '@huggingface/jinja';
import { Tokenizer as HFTokenizer } from '@huggingface/tokenizers';

import { CheckpointError, InputError } from './errors.js';
import { parseJsonText, readRegularFile } from './fsutil.js';

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

export class Tokenizer {
  readonly #tok: HFTokenizer;
  readonly #config: TokenizerConfig;
  readonly #template: Template | undefined;
  readonly #source: string;

  private constructor(tok: HFTokenizer, config: TokenizerConfig, source: string) {
    this.#tok = tok;
    this.#config = config;
    this.#source = source;
    let template = config.chat_template;
    if (Array.isArray(template)) template = template.find((t) => t?.name === 'default')?.template ?? template[0]?.template;
    if (template !== undefined && typeof template !== 'string')
      throw new CheckpointError(`${source}/tokenizer_config.json: \`chat_template\` must be a string`);
    try {
      this.#template = template === undefined ? undefined : new Template(template);
    } catch (err) {
      throw new CheckpointError(`${source}/tokenizer_config.json: \`chat_template\` does not parse: ${(err as Error).message}`);
    }
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
    let tok: HFTokenizer;
    try {
      tok = new HFTokenizer(json, config);
    } catch (err) {
      throw new CheckpointError(`${path.join(source, 'tokenizer.json')}: ${(err as Error).message}`, { cause: err });
    }
    return new Tokenizer(tok, config, source);
  }

  /** Token ids of a text. Special tokens written in the text (e.g. `<|mdm_mask|>`) map to their ids. */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw new InputError(`Expected a string for \`text\` but received ${typeof text}`);
    return this.#tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids;
  }

  /** The text of token ids. Defaults to keeping special tokens. */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    // The library refuses an empty list; an empty completion is an ordinary result here.
    if (ids.length === 0) return '';
    return this.#tok.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.#tok.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.#tok.id_to_token(id);
  }

  get hasChatTemplate(): boolean {
    return this.#template !== undefined;
  }

  /** Renders the chat template to text (the template adds the BOS token where it wants one). */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.#template) throw new CheckpointError(`${this.#source}/tokenizer_config.json has no \`chat_template\``);
    return this.#template.render({
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      bos_token: tokenText(this.#config.bos_token) ?? '',
      eos_token: tokenText(this.#config.eos_token) ?? '',
    });
  }

  /** Token ids of a chat: the rendered template encoded without adding special tokens again. */
  encodeChat(messages: ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false });
  }
}
