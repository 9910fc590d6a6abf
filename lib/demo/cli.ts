// The `demo` and `passk` subcommands of the CLI.
import path from 'node:path';

import cliProgress from 'cli-progress';
import type { Command } from 'commander';

import { choiceArg, intArg, intListArg, numberArg, withFlagNames } from '../cli/args.js';
import { ConfigError } from '../errors.js';
import { loadModelArg, MODEL_FLAG_HELP } from '../cli/hub.js';
import { DEMO_FULL, DEMO_QUICK, demoTable, runDemo, type DemoEvent, type DemoSettings } from './demo.js';
import { forkingTable, passKSpecs, passKTable, runPassK, writePassK } from './passk.js';
import { DEMO_GEN_LENGTH, DEMO_MODEL_DIR, taskItems } from './shipped.js';

// passk's flags for the library's option names, in its errors.
const PASSK_FLAGS = { blockLength: '--block-lengths', blockLengths: '--block-lengths', numSamples: '--samples', samples: '--samples' };

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

/** Adds `demo` and `passk` to the program. */
export function registerDemoCommands(program: Command): void {
  program
    .command('demo')
    .description('The whole method on your CPU: evaluate the shipped tiny model, train it with JustGRPO, evaluate again')
    .option('--quick', 'a ten-second version (4 steps, 32 held-out problems)')
    .option('--seed <n>', 'seed of the rollouts, the prompt order and the sampled evaluation', intArg('--seed'), 0)
    .option('--out <dir>', 'where to write metrics, checkpoints and plots (default: runs/demo-<time>)')
    .option('--steps <n>', `JustGRPO steps (default: ${DEMO_FULL.grpoSteps}, --quick ${DEMO_QUICK.grpoSteps})`, intArg('--steps', 1))
    .option('--model <dir>', 'start from another model with the character tokenizer, a directory or a Hub id owner/name[@revision] (default: the shipped one)')
    .option('--dtype <name>', 'fp32 | bf16: the compute dtype of training and evaluation (bf16: the CPU\'s matrix products in bf16 through oneDNN)', choiceArg('--dtype', ['fp32', 'bf16'] as const), 'fp32' as 'fp32' | 'bf16')
    .option('--json', 'print the results as one JSON object')
    .action(async (opts) => {
      const base: DemoSettings = opts.quick ? DEMO_QUICK : DEMO_FULL;
      const settings: DemoSettings = { ...base, ...(opts.steps !== undefined ? { grpoSteps: opts.steps } : {}) };
      const out = path.resolve(opts.out ?? path.join('runs', `demo-${stamp()}`));
      const ac = new AbortController();
      const onSignal = () => ac.abort();
      process.once('SIGINT', onSignal);
      const tty = !opts.json && process.stderr.isTTY;
      const bars = tty
        ? new cliProgress.MultiBar({ format: '{name} |{bar}| {percentage}% | {info}', hideCursor: true, clearOnComplete: false, etaBuffer: 20 }, cliProgress.Presets.shades_classic)
        : null;
      const log = (line: string) => {
        if (opts.json) return;
        if (bars) bars.log(line + '\n');
        else console.error(line);
      };
      const evalBars = new Map<string, cliProgress.SingleBar>();
      let trainBar: cliProgress.SingleBar | undefined;
      let lastLogged = 0;
      const onEvent = (e: DemoEvent) => {
        switch (e.kind) {
          case 'start':
            log(`demo: ${e.model} (${e.numParams} parameters), seed ${e.seed}, ${e.settings.grpoSteps} JustGRPO steps of ` +
              `${e.settings.promptsPerStep} prompts x ${e.settings.numGenerations} completions; writing to ${e.out}`);
            break;
          case 'eval': {
            const key = `${e.label} ${e.what}`;
            let bar = evalBars.get(key);
            if (!bar && bars) {
              bar = bars.create(100, 0, { name: `eval ${key}`.padEnd(20), info: '' });
              evalBars.set(key, bar);
            }
            bar?.update(Math.round(100 * e.fraction), { info: `correct ${e.correct}/${e.done}` });
            break;
          }
          case 'evalDone':
            log(`${e.label === 'before' ? 'base model' : 'after JustGRPO'}: greedy accuracy ${pct(e.result.accuracy)} ` +
              `(${pct(e.result.parallelAccuracy)} with the parallel decoder), ` +
              `pass@1 ${pct(e.result.passAtK[0]!)}, pass@${e.result.passAtK.length} ${pct(e.result.passAtK.at(-1)!)}`);
            break;
          case 'trainStart':
            trainBar = bars?.create(e.totalSteps, 0, { name: 'JustGRPO'.padEnd(20), info: 'rollouts' });
            break;
          case 'trainPhase':
            trainBar?.update({ info: `step ${e.step}: ${e.phase}` });
            break;
          case 'trainStep': {
            const m = e.metrics;
            const line = `reward ${m.reward.toFixed(3)} | zero-std groups ${pct(m.frac_reward_zero_std)} | ${m.step_time.toFixed(1)} s/step`;
            if (trainBar) trainBar.update(m.step, { info: line });
            else if (!opts.json && (m.step - lastLogged >= 5 || m.step === settings.grpoSteps)) {
              lastLogged = m.step;
              console.error(`step ${m.step}/${settings.grpoSteps}: ${line}`);
            }
            break;
          }
        }
      };
      try {
        const r = await runDemo({ out, seed: opts.seed, settings, model: opts.model, dtype: opts.dtype, signal: ac.signal, onEvent });
        bars?.stop();
        if (opts.json) {
          console.log(JSON.stringify(r));
          return;
        }
        console.log('');
        for (const line of demoTable(r)) console.log(line);
        console.log('');
        console.log(`JustGRPO: ${r.train.steps} steps in ${r.train.seconds.toFixed(0)} s; rollout reward ${r.train.rewardFirst.toFixed(3)} -> ${r.train.rewardLast.toFixed(3)} (first / last steps)`);
        console.log(`total ${r.seconds.total.toFixed(0)} s (eval ${r.seconds.evalBefore.toFixed(0)} s + train ${r.seconds.train.toFixed(0)} s + eval ${r.seconds.evalAfter.toFixed(0)} s)`);
        console.log(`results     ${r.files.results}`);
        console.log(`metrics     ${r.files.metrics}`);
        console.log(`checkpoint  ${r.files.checkpoint}`);
        console.log(`plots       ${r.files.plots.filter((f) => f.endsWith('.png')).join(', ')}`);
        console.log(`samples     ${r.files.samples.join(', ')}`);
        if (opts.quick)
          console.log(`\nThis was a smoke test: ${settings.grpoSteps} step${settings.grpoSteps === 1 ? '' : 's'} and ${settings.evalItems} problems check that every stage runs; ` +
            'the before/after difference at this size is noise. Run `justgrpo demo` (no --quick) for the full run that measures the gain.');
      } finally {
        bars?.stop();
        process.off('SIGINT', onSignal);
      }
    });

  program
    .command('passk')
    .description('pass@k for k = 1..K under AR-order, confidence-ordered and random-order decoding, with the entropy at each committed token')
    .option('--model <dir>', `${MODEL_FLAG_HELP} (default: the shipped demo model)`)
    .option('--task <name>', 'arith (the shipped held-out split), arith-train, gsm8k, math500 (from the Hub), hf://datasets/owner/name[/config[/split]] or a .jsonl file', 'arith')
    .option('--data-dir <dir>', 'a local copy of gsm8k / math500 instead of the Hub (default: $JUSTGRPO_DATA)')
    .option('--samples <k>', 'samples per problem: pass@k for k = 1..this', intArg('--samples', 1), 16)
    .option('--temperature <t>', 'sampling temperature', numberArg('--temperature'), 1.0)
    .option('--gen-length <n>', 'tokens to generate', intArg('--gen-length', 1), DEMO_GEN_LENGTH)
    .option('--block-lengths <list>', 'block lengths of the confidence-ordered decoder (default: gen length, gen length / 3)', intListArg('--block-lengths'))
    .option('--no-random', 'leave out random-order decoding')
    .option('--raw', 'feed prompts without the chat template (always so for the arith task)')
    .option('--limit <n>', 'the first N problems', intArg('--limit', 1), 64)
    .option('--seed <n>', 'seed (every decoder sees the same seeds)', intArg('--seed'), 0)
    .option('--out <dir>', 'write passk.json and the plots (SVG and PNG) here')
    .option('--json', 'print the report as JSON')
    .action(async (opts) => {
      if (opts.samples > 1 && opts.temperature === 0)
        throw new ConfigError(`--samples ${opts.samples} at --temperature 0 draws ${opts.samples} identical greedy completions per problem, so pass@k is pass@1; give a --temperature > 0`);
      const L: number = opts.genLength;
      const blockLengths: number[] = opts.blockLengths ?? [...new Set([L, L % 3 === 0 ? L / 3 : L])];
      const specs = await withFlagNames(Promise.resolve().then(() => passKSpecs({ genLength: L, blockLengths, random: opts.random })), PASSK_FLAGS);
      const { name, items, chatTemplate } = await taskItems(opts.task, { dataDir: opts.dataDir });
      if (items.length === 0) throw new ConfigError(`Task ${opts.task} has no problems`);
      const model = await loadModelArg(opts.model ?? DEMO_MODEL_DIR, { json: opts.json });
      const ac = new AbortController();
      const onSignal = () => ac.abort();
      process.once('SIGINT', onSignal);
      const bars = !opts.json && process.stderr.isTTY
        ? new cliProgress.MultiBar({ format: '{name} |{bar}| {percentage}%', hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic)
        : null;
      const perSpec = specs.map((s) => bars?.create(100, 0, { name: s.name.padEnd(20) }));
      try {
        const report = await withFlagNames(runPassK(model, name, items.slice(0, opts.limit), {
          genLength: L, samples: opts.samples, temperature: opts.temperature, seed: opts.seed, blockLengths, random: opts.random,
          chatTemplate: opts.raw ? false : chatTemplate, signal: ac.signal,
          onProgress: (_s, i, _n, f) => perSpec[i]?.update(Math.round(100 * f)),
        }), PASSK_FLAGS);
        bars?.stop();
        const files = opts.out ? await writePassK(report, path.resolve(opts.out)) : [];
        if (opts.json) {
          console.log(JSON.stringify({ ...report, files }, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)));
          return;
        }
        console.log(`${report.task}: ${report.items} problems x ${report.samples} samples, T=${report.temperature}, gen length ${L}`);
        for (const line of passKTable(report)) console.log(line);
        const forks = forkingTable(report);
        if (forks.length) console.log('');
        for (const line of forks) console.log(line);
        for (const f of files) console.log(`wrote ${f}`);
      } finally {
        bars?.stop();
        process.off('SIGINT', onSignal);
        await model.dispose();
      }
    });
}
