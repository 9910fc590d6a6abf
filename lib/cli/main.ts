#!/usr/bin/env node
// The `justgrpo` command line. Each subcommand documents its flags in --help; --json prints
// machine-readable results.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Command, InvalidArgumentError } from 'commander';

import { JustGRPOError } from '../errors.js';
import { TINY_SIZE, createTinyModel } from '../init.js';
import { loadModel } from '../model.js';

const pkg = JSON.parse(
  readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8'),
) as { version: string };

function intArg(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer.`);
    return n;
  };
}

function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

const program = new Command();
program
  .name('justgrpo')
  .description('Run and train masked diffusion language models (LLaDA); fine-tune them with JustGRPO.')
  .version(pkg.version, '-v, --version');

program
  .command('init')
  .description('Write a random tiny LLaDA-format model with a character-level tokenizer')
  .requiredOption('--out <dir>', 'directory to write (replaced atomically if it exists)')
  .option('--d-model <n>', 'model width', intArg('--d-model'), TINY_SIZE.dModel)
  .option('--layers <n>', 'number of transformer blocks', intArg('--layers'), TINY_SIZE.nLayers)
  .option('--heads <n>', 'attention heads', intArg('--heads'), TINY_SIZE.nHeads)
  .option('--kv-heads <n>', 'key/value heads (grouped-query attention when fewer than --heads); defaults to --heads', intArg('--kv-heads'))
  .option('--mlp <n>', 'MLP hidden size', intArg('--mlp'), TINY_SIZE.mlpHiddenSize)
  .option('--max-length <n>', 'maximum sequence length', intArg('--max-length'), TINY_SIZE.maxSequenceLength)
  .option('--seed <n>', 'seed of the random weights', intArg('--seed'), 0)
  .option('--json', 'print the result as JSON')
  .action(async (opts) => {
    const model = await createTinyModel({
      dModel: opts.dModel, nLayers: opts.layers, nHeads: opts.heads, nKvHeads: opts.kvHeads ?? opts.heads,
      mlpHiddenSize: opts.mlp, maxSequenceLength: opts.maxLength, seed: opts.seed,
    });
    try {
      await model.save(opts.out);
      const result = { out: path.resolve(opts.out), numParams: model.numParams, config: model.config };
      if (opts.json) console.log(JSON.stringify(result));
      else console.log(`Wrote a random LLaDA-format model (${formatCount(result.numParams)} parameters) to ${result.out}`);
    } finally {
      await model.dispose();
    }
  });

program
  .command('info')
  .description("Print a model's configuration and parameter count")
  .requiredOption('--model <dir>', 'a Hugging Face LLaDA directory')
  .option('--json', 'print the result as JSON')
  .action(async (opts) => {
    const model = await loadModel(opts.model);
    try {
      const c = model.config;
      let tokenizer: string;
      try {
        tokenizer = model.tokenizer.hasChatTemplate ? 'tokenizer.json (with chat template)' : 'tokenizer.json';
      } catch {
        tokenizer = 'none';
      }
      const info = { model: path.resolve(opts.model), numParams: model.numParams, config: c, tokenizer };
      if (opts.json) {
        console.log(JSON.stringify(info));
        return;
      }
      const rows: [string, string | number][] = [
        ['model', info.model],
        ['parameters', `${formatCount(info.numParams)} (${info.numParams})`],
        ['d_model', c.dModel],
        ['layers', c.nLayers],
        ['heads (kv)', `${c.nHeads} (${c.nKvHeads})`],
        ['head dim', c.headDim],
        ['mlp hidden', c.mlpHiddenSize],
        ['vocab (embedding)', `${c.vocabSize} (${c.embeddingSize})`],
        ['max length', c.maxSequenceLength],
        ['rope theta', c.ropeTheta],
        ['rms norm eps', c.rmsNormEps],
        ['mask / eos / bos', `${c.maskTokenId} / ${c.eosTokenId ?? '-'} / ${c.bosTokenId ?? '-'}`],
        ['tokenizer', tokenizer],
      ];
      const w = Math.max(...rows.map(([k]) => k.length));
      for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
    } finally {
      await model.dispose();
    }
  });

program.parseAsync().catch((err: unknown) => {
  // Expected failures (bad input, missing files) print one line; anything else keeps its stack.
  if (err instanceof JustGRPOError) console.error(`justgrpo: ${err.message}`);
  else console.error(err);
  process.exitCode = 1;
});
