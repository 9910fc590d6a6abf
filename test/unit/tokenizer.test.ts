// The character tokenizer of `justgrpo init` and LLaDA's chat template, through
// @huggingface/tokenizers and @huggingface/jinja.
import { describe, expect, it } from 'vitest';

import { CHAR_TOKENIZER_IDS, CHAR_VOCAB_SIZE, Tokenizer, charTokenizerFiles } from '../../lib/index.js';

const files = charTokenizerFiles();
const tok = Tokenizer.fromJSON(JSON.parse(files['tokenizer.json']!), JSON.parse(files['tokenizer_config.json']!));

describe('character tokenizer', () => {
  it('maps every printable ASCII character and newline to one token and back', () => {
    const text = 'Natalia sold 48/2 = 24 clips.\n#### 72 {x} ~`|\\';
    const ids = tok.encode(text);
    expect(ids.length).toBe(text.length);
    expect(ids.every((id) => id >= 0 && id < CHAR_VOCAB_SIZE)).toBe(true);
    expect(tok.decode(ids)).toBe(text);
  });

  it('reads special tokens written in the text as one id each', () => {
    const ids = tok.encode('a<|mdm_mask|><|mdm_mask|>b<|eot_id|>');
    expect(ids).toEqual([tok.tokenToId('a'), CHAR_TOKENIZER_IDS.mask, CHAR_TOKENIZER_IDS.mask, tok.tokenToId('b'), CHAR_TOKENIZER_IDS.eot]);
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('ab');
  });

  it('decodes an empty list to an empty string', () => {
    expect(tok.decode([])).toBe('');
  });

  it('maps characters outside the alphabet to <|unk|>', () => {
    expect(tok.encode('é')).toEqual([CHAR_TOKENIZER_IDS.unk]);
  });
});

describe('chat template', () => {
  it("renders LLaDA's format: bos, role headers, trimmed content, eot, assistant header", () => {
    const text = tok.applyChatTemplate([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: '  What is 2+3?  ' },
    ]);
    expect(text).toBe(
      '<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );
    expect(tok.applyChatTemplate([{ role: 'user', content: 'x' }], { addGenerationPrompt: false })).toBe(
      '<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>',
    );
  });

  it('encodes a chat with one bos and special tokens as single ids', () => {
    const ids = tok.encodeChat([{ role: 'user', content: 'hi' }]);
    expect(ids[0]).toBe(CHAR_TOKENIZER_IDS.bos);
    expect(ids.filter((i) => i === CHAR_TOKENIZER_IDS.bos).length).toBe(1);
    expect(ids.filter((i) => i === CHAR_TOKENIZER_IDS.startHeader).length).toBe(2);
    expect(tok.decode(ids)).toBe(tok.applyChatTemplate([{ role: 'user', content: 'hi' }]));
  });

  it('a template that does not parse is a clear error', () => {
    expect(() => Tokenizer.fromJSON(JSON.parse(files['tokenizer.json']!), { chat_template: '{% for %}' }, '/m')).toThrow(
      /\/m\/tokenizer_config\.json: `chat_template` does not parse/,
    );
  });
});
