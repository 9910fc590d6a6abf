#!/usr/bin/env node
// The `justgrpo` command line. Each subcommand documents its flags in --help; --json prints
// machine-readable results.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import cliProgress from 'cli-progress';
import { Command, InvalidArgumentError, Option } from 'commander';

import { readConfigFile } from '../configfile.js';
import { ConfigError, InputError, JustGRPOError } from '../errors.js';
import { TINY_SIZE, createTinyModel } from '../init.js';
import { GENERATE_DEFAULTS, type ConfidenceMeasure, type Decoder } from '../generate.js';
import { registerDemoCommands } from '../demo/cli.js';
import { loadModelArg, loadTaskArg, MODEL_FLAG_HELP } from './hub.js';
import { runEval, writeEvalOutputs } from '../eval/index.js';
import { isHubId } from '../hub/index.js';
import { BENCH_SECTIONS, benchModelConfig, benchTable, runBench, type BenchSize } from '../bench.js';
import { LladaModel, type Backend, type ComputeDType } from '../model.js';
import { native, nativeInfo } from '../native/binding.js';
import { plotRun } from '../plot.js';
import { parseGrpoConfig, type GrpoConfig } from '../train/grpo-config.js';
import { runGrpo } from '../train/grpo.js';
import { parseSftConfig, runSft, type SftConfig } from '../train/sft.js';
import { choiceArg, intArg, listArg, numberArg, withFlagNames } from './args.js';
import { cliCommunicator, DISTRIBUTED_MODES, relaunchUnderMpirun } from './distributed.js';
import { launchEnvironment, type Communicator, type DistributedMode } from '../train/distributed.js';

const pkg = JSON.parse(
  readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8'),
) as { version: string };

const MASK_GLYPH = '\u2591';

/** The completion as text with undecided positions drawn as a placeholder glyph. */
function canvasText(model: LladaModel, canvas: ArrayLike<number>): string {
  const mask = model.config.maskTokenId;
  let out = '';
  for (let i = 0; i < canvas.length; i++) out += canvas[i] === mask ? MASK_GLYPH : model.tokenizer.decode([canvas[i]!]);
  return out;
}

function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** A prompt's ids: a user message in the model's chat template when its tokenizer has one and `raw` is off, else as is. */
function encodePrompt(model: LladaModel, text: string, raw = false): number[] {
  const tok = model.tokenizer;
  return !raw && tok.hasChatTemplate ? tok.encodeChat([{ role: 'user', content: text }]) : tok.encode(text);
}

/**
 * `generate`'s gen length when --gen-length is not given: the library's default, or, for a model
 * whose maximum length leaves less room after the prompt, what fits (in whole blocks), said on stderr.
 */
function defaultGenLength(model: LladaModel, promptLength: number, blockLength?: number): number {
  const room = model.config.maxSequenceLength - promptLength;
  if (room < 1) throw new InputError(`The prompt has ${promptLength} tokens; the model's maximum length is ${model.config.maxSequenceLength}, which leaves no room to generate`);
  if (room >= GENERATE_DEFAULTS.genLength) return GENERATE_DEFAULTS.genLength;
  const block = blockLength ?? GENERATE_DEFAULTS.blockLength;
  const fit = room >= block ? room - (room % block) : room;
  console.error(`justgrpo: --gen-length ${fit} (the default ${GENERATE_DEFAULTS.genLength} does not fit: the model's maximum length is ${model.config.maxSequenceLength} and the prompt has ${promptLength} tokens)`);
  return fit;
}

/** `eval`'s gen length when --gen-length is not given: 256, or what fits after the longest prompt (in whole blocks), said on stderr. */
function evalGenLength(model: LladaModel, promptLengths: number[], block: number): number {
  const preferred = 256, max = model.config.maxSequenceLength;
  const longest = Math.max(...promptLengths);
  const room = max - longest;
  if (room >= preferred) return preferred;
  const fit = room - (room % block);
  if (fit < 1) throw new InputError(`The longest prompt has ${longest} tokens; the model's maximum length ${max} leaves no room for a block of ${block} (--block-length)`);
  console.error(`justgrpo: --gen-length ${fit} (the default ${preferred} does not fit: the model's maximum length is ${max} and the longest prompt has ${longest} tokens)`);
  return fit;
}

/** Numerical faults of a step, reported on stderr whatever the output mode (they are in metrics.jsonl too). */
function warnFaults(m: Record<string, unknown>): void {
  const notes: string[] = [];
  if (Number(m.non_finite) > 0) notes.push(`${m.non_finite} non-finite gradient values ${m.skipped ? 'found' : 'zeroed'}`);
  for (const [k, v] of Object.entries(m)) if (/^rewards\/.+\/errors$/.test(k) && Number(v) > 0) notes.push(`${v} failed scores from ${k.split('/')[1]}`);
  if (Number(m.skipped) > 0) notes.push('the update was skipped');
  if (notes.length) console.error(`justgrpo: warning: step ${m.step}: ${notes.join('; ')}`);
}

/** A run stopped by SIGINT: where it stopped and how to continue; exit status 130 (128 + SIGINT), as shells expect. */
function reportInterrupted(r: { interrupted: boolean; steps: number; checkpoint: string | null; outputDir: string }): void {
  if (!r.interrupted) return;
  console.error(r.checkpoint
    ? `justgrpo: interrupted after step ${r.steps}; the checkpoint ${r.checkpoint} holds it: resume with --resume ${r.outputDir}`
    : `justgrpo: interrupted before the first step; nothing to resume in ${r.outputDir}`);
  process.exitCode = 130;
}

/** Adds the flags `sft` and `train` share: a config or a run to resume, and overrides on top. */
function addRunOptions(cmd: Command, command: string): Command {
  for (const option of [
    new Option('--config <file>', `JSON or YAML config (fields: see README, "justgrpo ${command}")`),
    new Option('--out <dir>', 'output directory (overrides outputDir)'),
    new Option('--max-steps <n>', 'optimizer steps (overrides maxSteps)').argParser(intArg('--max-steps', 1)),
    new Option('--resume <dir>', 'continue a run from a checkpoint-N directory or a run directory (its newest checkpoint)'),
    new Option('--seed <n>', 'seed (overrides seed)').argParser(intArg('--seed')),
    new Option('--dtype <name>', 'fp32 | bf16: the compute dtype (overrides dtype)').argParser(choiceArg('--dtype', DTYPES)),
    new Option('--zero-stage <n>', '0 | 1: 1 shards the AdamW state across the data-parallel ranks (ZeRO-1; overrides zeroStage)').argParser(zeroStageArg),
    new Option('--json', 'print one JSON line per logged step and a final summary'),
    new Option('--nproc <n>', 'data-parallel ranks on this machine, started through mpirun (the run is the same run whatever N; see README, "Past one machine")').argParser(intArg('--nproc', 1)),
    new Option('--distributed <mode>', 'auto: MPI when started by mpirun with several ranks | mpi: always | none: one process').argParser(choiceArg('--distributed', DISTRIBUTED_MODES)).default('auto'),
  ])
    cmd.addOption(option);
  return cmd;
}

/**
 * The signals that stop a run after its current step, with a checkpoint. Under MPI a terminal's
 * Ctrl-C reaches mpirun, not the ranks (each has its own process group), and mpirun ends the job
 * within seconds; SIGUSR2, which mpirun forwards to every rank, stops it cleanly (--nproc turns a
 * Ctrl-C into one; Node keeps SIGUSR1 for its debugger). SIGTERM gets the same treatment, in case
 * the step finishes before mpirun's SIGKILL.
 */
function stopSignals(comm: Communicator): NodeJS.Signals[] {
  return comm.size > 1 ? ['SIGINT', 'SIGUSR2', 'SIGTERM'] : ['SIGINT'];
}

/** The ranks of a run of this process, once every rank is done: finalized on success, aborted on failure. */
let activeComm: Communicator | null = null;

/**
 * `--nproc N` (outside a launcher): runs the command as N ranks under mpirun and returns null (this
 * process then only passes on their exit status). Otherwise this process's communicator.
 */
async function startRanks(opts: { nproc?: number; distributed?: DistributedMode }): Promise<Communicator | null> {
  if (opts.nproc !== undefined && opts.nproc > 1 && !launchEnvironment()) {
    process.exitCode = await relaunchUnderMpirun(opts.nproc);
    return null;
  }
  activeComm = cliCommunicator(opts.distributed ?? 'auto');
  return activeComm;
}

/** The run those flags describe: a parsed config (with the directory its paths are relative to) or a resume. */
async function runArgs<C extends { outputDir: string; maxSteps?: number; seed: number; dtype?: ComputeDType; zeroStage: 0 | 1 }>(
  opts: { config?: string; resume?: string; out?: string; maxSteps?: number; seed?: number; dtype?: ComputeDType; zeroStage?: 0 | 1 },
  parse: (raw: unknown, source: string) => C,
): Promise<{ config?: C; baseDir?: string; resume?: string; overrides: Partial<C> }> {
  if (!opts.config && !opts.resume) throw new ConfigError('Give --config FILE (a new run) or --resume DIR');
  const overrides: Partial<C> = {};
  if (opts.out !== undefined) overrides.outputDir = path.resolve(opts.out);
  if (opts.maxSteps !== undefined) overrides.maxSteps = opts.maxSteps;
  if (opts.seed !== undefined) overrides.seed = opts.seed;
  if (opts.dtype !== undefined) overrides.dtype = opts.dtype;
  if (opts.zeroStage !== undefined) overrides.zeroStage = opts.zeroStage;
  if (!opts.config) return { resume: opts.resume, overrides };
  // With both, --resume wins; the config serves only a run that died before its first checkpoint.
  const file = await readConfigFile(opts.config);
  return { config: parse(file.raw, opts.config), baseDir: file.baseDir, resume: opts.resume, overrides };
}

const DTYPES = ['fp32', 'bf16'] as const;

function zeroStageArg(value: string): 0 | 1 {
  if (value !== '0' && value !== '1') throw new InvalidArgumentError('--zero-stage must be 0 or 1.');
  return Number(value) as 0 | 1;
}
const DTYPE_HELP = "fp32 | bf16: the compute dtype (bf16 on the CPU: matrix products in bf16 through oneDNN, fp32 sums)";

const program = new Command();
program
  .name('justgrpo')
  .description('Run and train masked diffusion language models (LLaDA); fine-tune them with JustGRPO.')
  .version(pkg.version, '-v, --version');

program
  .command('init')
  .description('Write a random tiny LLaDA-format model with a character-level tokenizer')
  .requiredOption('--out <dir>', "directory to write (the model's files are replaced, each atomically; other files there stay)")
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
  .requiredOption('--model <dir>', MODEL_FLAG_HELP)
  .option('--json', 'print the result as JSON')
  .action(async (opts) => {
    const model = await loadModelArg(opts.model, { json: opts.json });
    try {
      const c = model.config;
      let tokenizer: string;
      try {
        tokenizer = model.tokenizer.hasChatTemplate ? 'tokenizer.json (with chat template)' : 'tokenizer.json';
      } catch {
        tokenizer = 'none';
      }
      const info = {
        model: isHubId(opts.model) && !existsSync(opts.model) ? opts.model : path.resolve(opts.model), numParams: model.numParams, config: c, tokenizer,
        engine: nativeInfo(), bf16: native().bf16Kernels?.() ?? 'not in this build',
      };
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
        ['engine', `${info.engine.source} ${info.engine.path} (${info.engine.backends.join(', ')}; ${info.engine.blas})`],
        ['cpu bf16', info.bf16],
      ];
      const w = Math.max(...rows.map(([k]) => k.length));
      for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
    } finally {
      await model.dispose();
    }
  });

program
  .command('generate')
  .description('Generate a completion; in a terminal, watch the canvas fill in')
  .requiredOption('--model <dir>', MODEL_FLAG_HELP)
  .requiredOption('--prompt <text>', "the prompt (a user message in the model's chat template, if its tokenizer has one, unless --raw)")
  .option('--raw', 'use the prompt text as is, without the chat template')
  .option('--decoder <name>', 'ar | low_confidence | random | threshold', choiceArg('--decoder', ['ar', 'low_confidence', 'random', 'threshold'] as const), GENERATE_DEFAULTS.decoder as Decoder)
  .option('--gen-length <n>', `tokens to generate (default: ${GENERATE_DEFAULTS.genLength}, or what fits in the model's maximum length after the prompt, in whole blocks)`, intArg('--gen-length', 1))
  .option('--block-length <n>', 'block size of semi-autoregressive decoding (default: min(32, gen length))', intArg('--block-length', 1))
  .option('--steps <n>', 'total decoding steps (default: gen length; ignored by threshold)', intArg('--steps'))
  .option('--temperature <t>', 'sampling temperature; 0 is greedy', numberArg('--temperature'), GENERATE_DEFAULTS.temperature)
  .option('--threshold <p>', 'confidence threshold of the threshold decoder', numberArg('--threshold'), GENERATE_DEFAULTS.threshold)
  .option('--confidence <name>', 'probability | margin | entropy', choiceArg('--confidence', ['probability', 'margin', 'entropy'] as const), GENERATE_DEFAULTS.confidence as ConfidenceMeasure)
  .option('--cfg-scale <s>', 'classifier-free guidance scale (0 = off)', numberArg('--cfg-scale'), 0)
  .option('--samples <n>', 'completions to draw', intArg('--samples'), 1)
  .option('--seed <n>', 'seed', intArg('--seed'), 0)
  .option('--dtype <name>', DTYPE_HELP, choiceArg('--dtype', DTYPES), 'fp32' as ComputeDType)
  .option('--json', 'print tokens, text, NFE and tokens/s as JSON')
  .action(async (opts) => {
    const model = await loadModelArg(opts.model, { json: opts.json, dtype: opts.dtype });
    try {
      const prompt = encodePrompt(model, opts.prompt, opts.raw);
      const genLength = opts.genLength ?? defaultGenLength(model, prompt.length, opts.decoder === 'ar' ? 1 : opts.blockLength);
      const live = !opts.json && process.stdout.isTTY;
      let shownLines = 0;
      const show = (text: string) => {
        if (shownLines > 0) process.stdout.write(`\x1b[${shownLines}F\x1b[J`);
        process.stdout.write(text + '\n');
        shownLines = text.split('\n').length;
      };
      const result = await withFlagNames(model.generate(prompt, {
        decoder: opts.decoder, genLength, blockLength: opts.blockLength, steps: opts.steps,
        temperature: opts.temperature, threshold: opts.threshold, confidence: opts.confidence, cfgScale: opts.cfgScale,
        numSamples: opts.samples, seed: opts.seed,
        onProgress: live ? (_f, canvas) => show(canvasText(model, canvas)) : undefined,
      }));
      const texts = result.tokens.map((t) => model.completionText(t));
      if (opts.json) {
        console.log(JSON.stringify({
          prompt: opts.prompt, promptTokens: prompt.length,
          completions: result.tokens.map((tokens, i) => ({ text: texts[i], tokens, nfe: result.nfe[i] })),
          nfe: result.nfe[0], wallTimeMs: result.wallTimeMs, tokensPerSecond: result.tokensPerSecond,
        }));
        return;
      }
      if (live) show(texts[0]!);
      else console.log(texts[0]);
      for (let i = 1; i < texts.length; i++) console.log(`--- sample ${i}\n${texts[i]}`);
      console.error(`(${opts.decoder}, ${result.nfe[0]} forward passes, ${result.tokensPerSecond.toFixed(1)} tokens/s)`);
    } finally {
      await model.dispose();
    }
  });

program
  .command('eval')
  .description('Evaluate a model on GSM8K, MATH-500, HumanEval, MBPP or a JSONL task with any decoder')
  .requiredOption('--model <dir>', MODEL_FLAG_HELP)
  .requiredOption('--task <name>', 'gsm8k | math500 | humaneval | mbpp (from the Hub) | hf://datasets/owner/name[/config[/split]] | FILE.jsonl')
  .option('--data-dir <dir>', 'a local copy of the benchmarks (gsm8k/, math500/, humaneval/, mbpp/) instead of the Hub (default: $JUSTGRPO_DATA)')
  .option('--decoder <name>', 'ar | low_confidence | random | threshold', choiceArg('--decoder', ['ar', 'low_confidence', 'random', 'threshold'] as const), 'low_confidence' as Decoder)
  .option('--gen-length <n>', "tokens to generate (default: 256, or what fits in the model's maximum length after the longest prompt, in whole blocks)", intArg('--gen-length', 1))
  .option('--block-length <n>', 'block size of semi-autoregressive decoding', intArg('--block-length', 1), 32)
  .option('--steps <n>', 'total decoding steps (default: gen length)', intArg('--steps'))
  .option('--threshold <p>', 'confidence threshold of the threshold decoder', numberArg('--threshold'), 0.9)
  .option('--temperature <t>', 'sampling temperature; 0 is greedy', numberArg('--temperature'), 0)
  .option('--limit <n>', 'evaluate the first N items', intArg('--limit', 1))
  .option('--samples <k>', 'completions per item (pass@k for k up to this); needs a --temperature > 0', intArg('--samples', 1), 1)
  .option('--batch-size <n>', 'prompts per generate call', intArg('--batch-size', 1), 8)
  .option('--raw', 'feed the task prompt as is, without the chat template')
  .option('--seed <n>', 'seed', intArg('--seed'), 0)
  .option('--out <dir>', 'write results.json and samples.jsonl here')
  .option('--dtype <name>', DTYPE_HELP, choiceArg('--dtype', DTYPES), 'fp32' as ComputeDType)
  .option('--json', 'print the results as JSON')
  .action(async (opts) => {
    if (opts.samples > 1 && opts.temperature === 0)
      throw new ConfigError(`--samples ${opts.samples} at --temperature 0 draws ${opts.samples} identical greedy completions per item; give a --temperature > 0 (e.g. 1) for pass@k, or drop --samples`);
    const task = await loadTaskArg(opts.task, { dataDir: opts.dataDir, json: opts.json });
    if (task.items.length === 0) throw new InputError(`${opts.task}: the task has no items to evaluate`);
    const model = await loadModelArg(opts.model, { json: opts.json, dtype: opts.dtype });
    const ac = new AbortController();
    const onSignal = () => ac.abort();
    process.once('SIGINT', onSignal);
    const bar = !opts.json && process.stderr.isTTY
      ? new cliProgress.SingleBar({ format: `eval ${task.name} |{bar}| {percentage}% | correct {correct}/{scored} | ETA {eta_formatted}`, hideCursor: true }, cliProgress.Presets.shades_classic)
      : null;
    bar?.start(100, 0, { correct: 0, scored: 0 });
    // Each generate call continues the seed sequence, so repeated prompts (pass@k) never share a stream.
    let seedOffset = opts.seed;
    try {
      const block = opts.decoder === 'ar' ? 1 : opts.blockLength;
      const genLength: number = opts.genLength ?? evalGenLength(model, task.items.slice(0, opts.limit).map((item) => encodePrompt(model, item.prompt, opts.raw).length), block);
      const report = await runEval({
        task, limit: opts.limit, samples: opts.samples, batchSize: opts.batchSize, signal: ac.signal,
        onProgress: (f, p) => bar?.update(Math.round(f * 100), { correct: p.correct, scored: p.scored }),
        generate: async (prompts) => {
          const ids = prompts.map((p) => encodePrompt(model, p, opts.raw));
          const r = await withFlagNames(model.generate(ids, {
            decoder: opts.decoder, genLength, blockLength: opts.decoder === 'ar' ? undefined : opts.blockLength,
            steps: opts.steps, threshold: opts.threshold, temperature: opts.temperature, seed: seedOffset, signal: ac.signal,
          }));
          seedOffset += prompts.length;
          return r.tokens.map((t, i) => ({ text: model.completionText(t), nfe: r.nfe[i], tokens: genLength }));
        },
      });
      bar?.stop();
      const paths = opts.out ? await writeEvalOutputs(opts.out, report) : null;
      const r = report.results;
      if (opts.json) console.log(JSON.stringify({ ...r, ...(paths ? { files: paths } : {}) }));
      else {
        console.log(`${r.task}: accuracy ${(100 * r.accuracy).toFixed(1)}% (${r.correct}/${r.total}), ` +
          Object.entries(r.passAtK).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(', ') +
          `, ${r.tokensPerSecond?.toFixed(1) ?? '-'} tokens/s, NFE ${r.meanNfe?.toFixed(1) ?? '-'}`);
        if (paths) console.log(`wrote ${paths.results} and ${paths.samples}`);
      }
    } finally {
      bar?.stop();
      process.off('SIGINT', onSignal);
      await model.dispose();
    }
  });

addRunOptions(
  program.command('sft').description("Masked-diffusion supervised fine-tuning (LLaDA's objective); {text} data pre-trains"),
  'sft',
).action(async (opts) => {
    const comm = await startRanks(opts);
    if (!comm) return;
    // Rank 0 speaks for the run; the others print only their own errors.
    const lead = comm.rank === 0;
    const args = { ...(await runArgs<SftConfig>(opts, parseSftConfig)), communicator: comm };
    const ac = new AbortController();
    const onSignal = () => ac.abort();
    const signals = stopSignals(comm);
    for (const sig of signals) process.once(sig, onSignal);
    const bar = lead && !opts.json && process.stderr.isTTY
      ? new cliProgress.SingleBar({
          format: 'sft |{bar}| {value}/{total} steps | loss {loss} | {tps} tok/s | ETA {eta_formatted}',
          hideCursor: true,
        }, cliProgress.Presets.shades_classic)
      : null;
    try {
      const result = await runSft(args, !lead ? { signal: ac.signal } : {
        signal: ac.signal,
        onStart: (info) => {
          const msg = `sft: ${info.examples} examples, ${info.numParams} parameters, steps ${info.startStep + 1}..${info.totalSteps} -> ${info.outputDir}`;
          if (opts.json) console.log(JSON.stringify({ event: 'start', ...info }));
          else console.error(msg);
          bar?.start(info.totalSteps, info.startStep, { loss: '-', tps: '-' });
        },
        onStep: (m) => {
          warnFaults(m);
          if (opts.json) console.log(JSON.stringify(m));
          else if (bar) bar.update(m.step, { loss: m.loss.toFixed(4), tps: m.tokens_per_second.toFixed(0) });
          else console.error(`step ${m.step}: loss ${m.loss.toFixed(4)}, lr ${m.learning_rate.toExponential(2)}, grad_norm ${m.grad_norm.toFixed(3)}, ${m.tokens_per_second.toFixed(0)} tok/s`);
        },
      });
      bar?.stop();
      // Rank 0 speaks for the run (exit status included: a rank's non-zero status makes mpirun end the job).
      if (!lead) return;
      if (opts.json) console.log(JSON.stringify({ event: 'done', ...result }));
      else console.error(`sft: ${result.steps} steps; checkpoint ${result.checkpoint}; metrics ${path.join(result.outputDir, 'metrics.jsonl')}`);
      reportInterrupted(result);
    } finally {
      bar?.stop();
      for (const sig of signals) process.off(sig, onSignal);
    }
  });

addRunOptions(
  program.command('train').description('JustGRPO: GRPO with the diffusion model as an autoregressive policy (AR-order rollouts, exact likelihoods)'),
  'train',
).action(async (opts) => {
    const comm = await startRanks(opts);
    if (!comm) return;
    const lead = comm.rank === 0;
    const args = { ...(await runArgs<GrpoConfig>(opts, parseGrpoConfig)), communicator: comm };
    const ac = new AbortController();
    const onSignal = () => ac.abort();
    const signals = stopSignals(comm);
    for (const sig of signals) process.once(sig, onSignal);
    const bars = lead && !opts.json && process.stderr.isTTY
      ? new cliProgress.MultiBar({ format: '{name} |{bar}| {value}/{total} | {info}', hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic)
      : null;
    let run: cliProgress.SingleBar | undefined;
    try {
      const result = await runGrpo(args, !lead ? { signal: ac.signal } : {
        signal: ac.signal,
        onStart: (info) => {
          const msg = `train: ${info.prompts} prompts, ${info.numParams} parameters, steps ${info.startStep + 1}..${info.totalSteps} -> ${info.outputDir}`;
          if (opts.json) console.log(JSON.stringify({ event: 'start', ...info }));
          else console.error(msg);
          run = bars?.create(info.totalSteps, info.startStep, { name: 'steps', info: '' });
        },
        onPhase: (step, phase) => run?.update({ info: `step ${step}: ${phase}` }),
        onStep: (m) => {
          warnFaults(m);
          if (opts.json) console.log(JSON.stringify(m));
          else {
            const line = `reward ${m.reward.toFixed(3)} | loss ${m.loss.toExponential(2)} | ${m.tokens_per_second?.toFixed(0)} tok/s`;
            if (run) run.update(m.step, { info: line });
            else console.error(`step ${m.step}: ${line}, grad_norm ${m.grad_norm.toFixed(3)}, zero-std groups ${(100 * m.frac_reward_zero_std).toFixed(0)}%`);
          }
        },
        onEval: (e) => {
          if (opts.json) console.log(JSON.stringify({ event: 'eval', ...e }));
          else if (bars) bars.log(`eval at step ${e.step}: reward ${e.reward.toFixed(3)} over ${e.count} prompts\n`);
          else console.error(`eval at step ${e.step}: reward ${e.reward.toFixed(3)} over ${e.count} prompts`);
        },
      });
      bars?.stop();
      // Rank 0 speaks for the run (exit status included: a rank's non-zero status makes mpirun end the job).
      if (!lead) return;
      if (opts.json) console.log(JSON.stringify({ event: 'done', ...result }));
      else console.error(`train: ${result.steps} steps; checkpoint ${result.checkpoint}; metrics ${path.join(result.outputDir, 'metrics.jsonl')}`);
      reportInterrupted(result);
    } finally {
      bars?.stop();
      for (const sig of signals) process.off(sig, onSignal);
    }
  });

program
  .command('plot')
  .description("Render a run's metrics.jsonl as SVG and PNG curves (reward, eval reward, loss, grad norm, ...)")
  .argument('<run-dir>', 'the output directory of justgrpo sft or train')
  .option('--out <dir>', 'where to write (default: RUN_DIR/plots)')
  .option('--format <list>', 'svg, png or svg,png', 'svg,png')
  .option('--json', 'print the files written as JSON')
  .action(async (runDir: string, opts) => {
    const formats = String(opts.format).split(',').map((f) => f.trim());
    if (!formats.every((f) => f === 'svg' || f === 'png')) throw new ConfigError('--format takes svg, png or svg,png');
    const files = await plotRun(runDir, { out: opts.out, formats: formats as ('svg' | 'png')[] });
    if (opts.json) console.log(JSON.stringify({ files }));
    else for (const f of files) console.log(f);
  });

program
  .command('bench')
  .description("This machine's speed with a model: a forward pass, decoding, and JustGRPO steps with where their time goes")
  .option('--model <dir>', `${MODEL_FLAG_HELP} (its weights change in memory only; nothing is written)`)
  .option('--size <name>', 'without --model, a random model of this size (those of npm run bench): tiny | small', choiceArg('--size', ['tiny', 'small'] as const), 'tiny' as BenchSize)
  .option('--backend <name>', 'cpu | cuda', choiceArg('--backend', ['cpu', 'cuda'] as const), 'cpu' as Backend)
  .option('--dtype <name>', `${DTYPE_HELP} (default: fp32 on the CPU, bf16 on CUDA)`, choiceArg('--dtype', DTYPES))
  .option('--num-generations <n>', 'completions per prompt (G)', intArg('--num-generations', 1), 8)
  .option('--prompt-length <n>', 'prompt tokens', intArg('--prompt-length', 1), 32)
  .option('--gen-length <n>', 'completion tokens', intArg('--gen-length', 1), 32)
  .option('--runs <n>', 'timed runs of each measurement, after a warm-up', intArg('--runs', 1), 3)
  .option('--only <list>', `some of ${BENCH_SECTIONS.join(', ')}`, listArg('--only', BENCH_SECTIONS))
  .option('--reuse-rollout-memory-mb <n>', "JustGRPO's rollout-activation budget (0: recompute in the loss)", numberArg('--reuse-rollout-memory-mb'))
  .option('--json', 'print the measurements as JSON')
  .action(async (opts) => {
    const model = opts.model
      ? await loadModelArg(opts.model, { backend: opts.backend, json: opts.json, dtype: opts.dtype })
      : await LladaModel.random(benchModelConfig(opts.size), { seed: 0, backend: opts.backend, dtype: opts.dtype });
    try {
      const result = await runBench(model, {
        numGenerations: opts.numGenerations, promptLength: opts.promptLength, genLength: opts.genLength, runs: opts.runs,
        sections: opts.only, reuseRolloutMemoryMB: opts.reuseRolloutMemoryMb,
        onSection: opts.json ? undefined : (s) => console.error(`bench: ${s}...`),
      });
      console.log(opts.json ? JSON.stringify(result) : benchTable(result));
    } finally {
      await model.dispose();
    }
  });

registerDemoCommands(program);

let settled = false;
// A command whose work waits on a promise that never settles (a reward function that never returns)
// would otherwise let Node exit with status 0 and nothing written.
process.on('beforeExit', () => {
  if (settled) return;
  settled = true;
  console.error('justgrpo: the command stopped without finishing: it was waiting on something that will never happen (a promise that never settles, e.g. in a reward function)');
  process.exitCode = 1;
});
program.parseAsync().then(() => {
  settled = true;
  if (activeComm && activeComm.size > 1) activeComm.finalize();
}, (err: unknown) => {
  settled = true;
  // Expected failures (bad input, missing files) print one line; anything else keeps its stack.
  const who = activeComm && activeComm.size > 1 && !(err instanceof Error && /^Rank \d+:/.test(err.message)) ? `rank ${activeComm.rank}: ` : '';
  if (err instanceof JustGRPOError) console.error(`justgrpo: ${who}${err.message}`);
  else console.error(who ? `justgrpo: ${who}` : '', err);
  process.exitCode = 1;
  // One failed rank ends the job: the others may be waiting in a collective for it. Rank 0 has
  // released its lock and kept its last checkpoint by now (writes are atomic).
  if (activeComm && activeComm.size > 1) activeComm.abort(1);
});
