// `justgrpo init`: a random tiny LLaDA-format model with the character tokenizer.
import { charModelConfig, charTokenizerFiles, type TinyModelSize } from './chartokenizer.js';
import { LladaModel } from './model.js';
import { Tokenizer } from './tokenizer.js';

/** The default size of `justgrpo init`: d 256, 4 layers, 4 heads, mlp 768 (about 3.2M parameters). */
export const TINY_SIZE = { dModel: 256, nLayers: 4, nHeads: 4, mlpHiddenSize: 768, maxSequenceLength: 512 } as const satisfies TinyModelSize;

export type InitOptions = Partial<TinyModelSize> & {
  /** Seed of the random weights. Defaults to `0`. */
  seed?: number;
};

/** Creates a random tiny model with the character tokenizer (not saved; call `save`). */
export async function createTinyModel(options: InitOptions = {}): Promise<LladaModel> {
  const { seed = 0, ...size } = options;
  const config = charModelConfig({ ...TINY_SIZE, ...size });
  const files = charTokenizerFiles();
  const tokenizer = Tokenizer.fromJSON(JSON.parse(files['tokenizer.json']!), JSON.parse(files['tokenizer_config.json']!));
  return LladaModel.random(config, { seed, files, tokenizer });
}
