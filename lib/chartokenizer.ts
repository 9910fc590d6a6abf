// A character-level tokenizer in the Hugging Face format, for tiny models made from scratch:
// printable ASCII and newline, plus the special tokens LLaDA's chat format uses.
import type { ModelConfig } from './config.js';

const CHARS = ['\n', ...Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i))];

export const SPECIAL_TOKENS = {
  unk: '<|unk|>',
  bos: '<|startoftext|>',
  eos: '<|endoftext|>',
  startHeader: '<|start_header_id|>',
  endHeader: '<|end_header_id|>',
  eot: '<|eot_id|>',
  mask: '<|mdm_mask|>',
} as const;

// LLaDA's chat format: bos, then per message a role header, the trimmed content and <|eot_id|>;
// then the assistant header when a reply is wanted.
export const CHAT_TEMPLATE =
  "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}" +
  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/** Token ids of the character tokenizer's special tokens (characters come first, then these). */
export const CHAR_TOKENIZER_IDS = Object.fromEntries(
  Object.entries(SPECIAL_TOKENS).map(([k], i) => [k, CHARS.length + i]),
) as Record<keyof typeof SPECIAL_TOKENS, number>;

export const CHAR_VOCAB_SIZE = CHARS.length + Object.keys(SPECIAL_TOKENS).length;

/** tokenizer.json and tokenizer_config.json of the character tokenizer, as file texts. */
export function charTokenizerFiles(): Record<string, string> {
  const vocab: Record<string, number> = {};
  CHARS.forEach((c, i) => (vocab[c] = i));
  const added = Object.values(SPECIAL_TOKENS).map((content, i) => {
    vocab[content] = CHARS.length + i;
    return { id: CHARS.length + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  });
  // A BPE model without merges splits text into single characters.
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: 'Fuse' },
    model: {
      type: 'BPE', dropout: null, unk_token: SPECIAL_TOKENS.unk, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [],
    },
  };
  const config = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: SPECIAL_TOKENS.bos,
    eos_token: SPECIAL_TOKENS.eos,
    pad_token: SPECIAL_TOKENS.eos,
    unk_token: SPECIAL_TOKENS.unk,
    mask_token: SPECIAL_TOKENS.mask,
    model_max_length: 4096,
    chat_template: CHAT_TEMPLATE,
  };
  return {
    'tokenizer.json': JSON.stringify(tokenizer, null, 1) + '\n',
    'tokenizer_config.json': JSON.stringify(config, null, 2) + '\n',
  };
}

export type TinyModelSize = { dModel: number; nLayers: number; nHeads: number; nKvHeads?: number; mlpHiddenSize: number; maxSequenceLength?: number };

/** A model config that uses the character tokenizer. */
export function charModelConfig(size: TinyModelSize): ModelConfig {
  return {
    dModel: size.dModel,
    nLayers: size.nLayers,
    nHeads: size.nHeads,
    nKvHeads: size.nKvHeads ?? size.nHeads,
    headDim: size.dModel / size.nHeads,
    mlpHiddenSize: size.mlpHiddenSize,
    vocabSize: CHAR_VOCAB_SIZE,
    embeddingSize: Math.ceil(CHAR_VOCAB_SIZE / 8) * 8,
    maxSequenceLength: size.maxSequenceLength ?? 512,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    maskTokenId: CHAR_TOKENIZER_IDS.mask,
    eosTokenId: CHAR_TOKENIZER_IDS.eos,
    padTokenId: CHAR_TOKENIZER_IDS.eos,
    bosTokenId: CHAR_TOKENIZER_IDS.bos,
  };
}
