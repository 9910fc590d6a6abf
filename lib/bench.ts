// `justgrpo bench`: this machine's speed with one model, to size a run before it starts: a forward
// pass, decoding (AR order, as JustGRPO's rollouts, and low-confidence, as inference), and JustGRPO
// steps with where their time goes. The weights change in memory only (the JustGRPO steps train
// them); nothing is written. The side-by-side comparison with PyTorch is the repository's
// `npm run bench`, which builds its models from BENCH_SIZES too.
import type { ModelConfig } from './config.js';
import { ConfigError } from './errors.js';
import type { LladaModel } from './model.js';
import { native, nativeInfo } from './native/binding.js';
import { parseGrpoConfig } from './train/grpo-config.js';
import { GRPOTrainer } from './train/grpo.js';

/** The random models `npm run bench` compares with PyTorch (fp32; LLaDA's block, GQA off). */
export const BENCH_SIZES = {
  tiny: { dModel: 256, nLayers: 4, nHeads: 4, nKvHeads: 4, mlpHiddenSize: 768, vocabSize: 104 },
  small: { dModel: 1024, nLayers: 8, nHeads: 16, nKvHeads: 16, mlpHiddenSize: 2816, vocabSize: 512 },
} as const;
export type BenchSize = keyof typeof BENCH_SIZES;

/** The full model config of a bench size (the special tokens at the top of the vocabulary). */
export function benchModelConfig(size: BenchSize): ModelConfig {
  const c = BENCH_SIZES[size];
  return {
    ...c, headDim: c.dModel / c.nHeads, embeddingSize: c.vocabSize, maxSequenceLength: 4096, ropeTheta: 10000,
    rmsNormEps: 1e-5, maskTokenId: c.vocabSize - 1, eosTokenId: c.vocabSize - 2, padTokenId: c.vocabSize - 2, bosTokenId: c.vocabSize - 3,
  };
}

export const BENCH_SECTIONS = ['forward', 'decode', 'grpo'] as const;
export type BenchSection = (typeof BENCH_SECTIONS)[number];

export type BenchOptions = {
  /** Completions per prompt (the decoders' samples, JustGRPO's G). Defaults to `8`. */
  numGenerations?: number;
  /** Prompt tokens. Defaults to `32`. */
  promptLength?: number;
  /** Completion tokens. Defaults to `32`. */
  genLength?: number;
  /** Timed runs of each measurement, after one untimed warm-up. Defaults to `3`. */
  runs?: number;
  /** Which measurements. Defaults to all. */
  sections?: readonly BenchSection[];
  /** JustGRPO's rollout-activation memory budget (`reuseRolloutMemoryMB`; 0 recomputes). Defaults to the trainer's default. */
  reuseRolloutMemoryMB?: number;
  /** Called as each measurement starts. */
  onSection?: (section: BenchSection) => void;
};

/** Where one JustGRPO step's time went (seconds). GEMM / attention / other are CPU-backend clocks, null elsewhere. */
export type BenchStep = {
  seconds: number;
  rollout: number;
  reward: number;
  loss: number;
  optimizer: number;
  gemm: number | null;
  attention: number | null;
  other: number | null;
  /** The GEMMs' rate: FLOPs run / time inside them. */
  gemmGflops: number | null;
  /** Minor page faults during the step: memory touched for the first time (0 once buffers are reused). */
  pageFaults: number;
  /** Share of the rollouts' canvas tokens computed once for identical canvases. */
  rolloutShared: number;
};

export type BenchResult = {
  /** dtype: the compute dtype; kernels: what runs the products (OpenBLAS's core, or oneDNN's ISA for bf16 on the CPU). */
  model: { parameters: number; dModel: number; nLayers: number; vocabSize: number; backend: string; dtype: string; kernels: string };
  numGenerations: number;
  promptLength: number;
  genLength: number;
  runs: number;
  /** model.logits on G sequences of prompt + gen tokens (logits at every position); median of the runs. */
  forward?: { tokens: number; seconds: number; tokensPerSecond: number };
  /** G samples of genLength tokens at temperature 1; median of the runs. */
  decode?: { decoder: 'ar' | 'low_confidence'; blockLength: number; nfe: number; seconds: number; tokensPerSecond: number }[];
  /** One prompt, G completions; the first step (which allocates) apart from the timed ones. */
  grpo?: { firstStepSeconds: number; medianSeconds: number; keptMiB: number; steps: BenchStep[] };
};

/** The median of a non-empty list (the mean of the middle two for an even count). */
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Prompt ids spread over the vocabulary, none of them special (mask, EOS, BOS, pad). */
function benchPrompt(config: ModelConfig, length: number): number[] {
  const special = new Set([config.maskTokenId, config.eosTokenId, config.bosTokenId, config.padTokenId].filter((x): x is number => x != null));
  const ids: number[] = [];
  for (let t = 0, x = 7; ids.length < length; t++, x = (x * 48271) % 2147483647) {
    const id = x % config.vocabSize;
    if (!special.has(id)) ids.push(id);
    if (t > 100 * length) throw new ConfigError('The model has no ordinary tokens to build a bench prompt from');
  }
  return ids;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

export async function runBench(model: LladaModel, options: BenchOptions = {}): Promise<BenchResult> {
  const G = options.numGenerations ?? 8, P = options.promptLength ?? 32, L = options.genLength ?? 32;
  const runs = options.runs ?? 3;
  const sections = new Set(options.sections ?? BENCH_SECTIONS);
  for (const [name, v, min] of [['numGenerations', G, 1], ['promptLength', P, 1], ['genLength', L, 1], ['runs', runs, 1]] as const)
    if (!Number.isInteger(v) || v < min) throw new ConfigError(`bench: ${name} must be an integer >= ${min}, got ${v}`);
  const c = model.config;
  if (P + L > c.maxSequenceLength)
    throw new ConfigError(`bench: promptLength + genLength (${P + L}) exceeds the model's maxSequenceLength (${c.maxSequenceLength})`);
  const prompt = benchPrompt(c, P);
  const result: BenchResult = {
    model: {
      parameters: model.numParams, dModel: c.dModel, nLayers: c.nLayers, vocabSize: c.vocabSize, backend: model.backend,
      dtype: model.deviceInfo().dtype, kernels: benchKernels(model),
    },
    numGenerations: G, promptLength: P, genLength: L, runs,
  };
  const repeat = async (fn: () => Promise<unknown>) => {
    await fn();
    const times: number[] = [];
    for (let i = 0; i < runs; i++) times.push(await timed(fn));
    return median(times);
  };

  if (sections.has('forward')) {
    options.onSection?.('forward');
    const ids = Array.from({ length: G }, (_, g) => [...prompt, ...benchPrompt(c, L + g).slice(g)]);
    const seconds = await repeat(() => model.logits(ids));
    result.forward = { tokens: G * (P + L), seconds, tokensPerSecond: (G * (P + L)) / seconds };
  }

  if (sections.has('decode')) {
    options.onSection?.('decode');
    result.decode = [];
    for (const decoder of ['ar', 'low_confidence'] as const) {
      const blockLength = decoder === 'ar' ? 1 : Math.min(32, L);
      let nfe = 0;
      const seconds = await repeat(async () => {
        const r = await model.generate(prompt, { decoder, genLength: L, blockLength, steps: L, temperature: 1, numSamples: G, seed: 1 });
        nfe = Math.max(...r.nfe);
      });
      result.decode.push({ decoder, blockLength, nfe, seconds, tokensPerSecond: (G * L) / seconds });
    }
  }

  if (sections.has('grpo')) {
    options.onSection?.('grpo');
    result.grpo = await benchGrpo(model, prompt, G, L, runs, options.reuseRolloutMemoryMB);
  }
  return result;
}

async function benchGrpo(model: LladaModel, prompt: number[], G: number, L: number, runs: number, reuseMB: number | undefined) {
  const cfg = parseGrpoConfig({
    model: 'bench', data: { train: 'bench' }, numGenerations: G, promptsPerStep: 1, maxCompletionLength: L,
    learningRate: 1e-5, maxSteps: runs + 1, ...(reuseMB === undefined ? {} : { reuseRolloutMemoryMB: reuseMB }),
  }, 'bench');
  // A reward with spread in every group: the share of even ids (real rewards often tie, and a group
  // whose rewards all tie skips its loss, which would flatter the timing).
  const trainer = await GRPOTrainer.create(model, cfg, {
    rewardFunctions: { even: ({ completionIds }) => completionIds.map((ids) => ids.filter((x) => x % 2 === 0).length / ids.length) },
  });
  const cpu = model.backend === 'cpu';
  try {
    const record = { ids: prompt, text: '', columns: {}, source: 'bench' };
    const firstStepSeconds = await timed(() => trainer.step([record], 0));
    const steps: BenchStep[] = [];
    for (let s = 1; s <= runs; s++) {
      const phases: Record<string, number> = {};
      let cur: string | null = null, last = 0;
      const mark = (p: string | null) => {
        const now = performance.now();
        if (cur) phases[cur] = (phases[cur] ?? 0) + (now - last) / 1000;
        cur = p;
        last = now;
      };
      if (cpu) native().opTimes(true);
      const faults0 = process.resourceUsage().minorPageFault;
      const t0 = performance.now();
      const m = await trainer.step([record], s, { onPhase: mark });
      mark(null);
      const seconds = (performance.now() - t0) / 1000;
      const pageFaults = process.resourceUsage().minorPageFault - faults0;
      const ops = cpu ? native().opTimes(false) : null;
      steps.push({
        seconds, rollout: phases.rollout ?? 0, reward: phases.reward ?? 0, loss: phases.loss ?? 0, optimizer: phases.optimizer ?? 0,
        gemm: ops ? ops.gemm : null, attention: ops ? ops.attention : null, other: ops ? seconds - ops.gemm - ops.attention : null,
        gemmGflops: ops && ops.gemm > 0 ? ops.gemmFlops / ops.gemm / 1e9 : null, pageFaults, rolloutShared: m.rollout_shared ?? 0,
      });
    }
    return { firstStepSeconds, medianSeconds: median(steps.map((s) => s.seconds)), keptMiB: trainer.session.keptSteps().bytes / 2 ** 20, steps };
  } finally {
    trainer.dispose();
  }
}

/** Which kernels run the model's products: oneDNN's ISA for bf16 on the CPU, OpenBLAS's core for fp32, the device elsewhere. */
function benchKernels(model: LladaModel): string {
  const d = model.deviceInfo();
  if (d.backend !== 'cpu') return d.name;
  // The CPU's name ends with the bf16 products' library in parentheses: "<processor> (oneDNN 2.6.3, ...)".
  return d.dtype === 'BF16' ? d.name.replace(/^.*\((oneDNN[^()]*)\)$/, '$1') : `OpenBLAS ${nativeInfo().blas}`;
}

/** The result as the CLI prints it. */
export function benchTable(r: BenchResult): string {
  const lines: string[] = [];
  const m = r.model;
  lines.push(`model: ${(m.parameters / 1e6).toFixed(1)}M parameters (d ${m.dModel}, ${m.nLayers} layers, vocab ${m.vocabSize}) on ${m.backend}; ` +
    `G ${r.numGenerations}, prompt ${r.promptLength}, gen ${r.genLength}; medians of ${r.runs} runs after a warm-up`);
  lines.push(`compute: ${m.dtype} (${m.kernels})`);
  if (r.forward) lines.push(`forward (${r.forward.tokens} tokens, logits at every position): ${r.forward.seconds.toFixed(3)} s, ${r.forward.tokensPerSecond.toFixed(0)} tokens/s`);
  for (const d of r.decode ?? [])
    lines.push(`decode ${d.decoder}${d.decoder === 'ar' ? '' : ` (block ${d.blockLength})`}, T 1: ${d.seconds.toFixed(3)} s, ${d.tokensPerSecond.toFixed(1)} tokens/s, NFE ${d.nfe}`);
  if (r.grpo) {
    const g = r.grpo;
    lines.push(`JustGRPO step: ${g.medianSeconds.toFixed(3)} s (first step ${g.firstStepSeconds.toFixed(3)} s, which allocates; ${g.keptMiB.toFixed(0)} MiB of rollout activations kept)`);
    const pct = (x: number | null, total: number) => (x === null ? '-' : `${((100 * x) / total).toFixed(0)}%`);
    for (const [i, s] of g.steps.entries())
      lines.push(`  step ${i + 1}: ${s.seconds.toFixed(3)} s = rollout ${s.rollout.toFixed(3)} + reward ${s.reward.toFixed(3)} + loss ${s.loss.toFixed(3)} + optimizer ${s.optimizer.toFixed(3)}; ` +
        `GEMM ${pct(s.gemm, s.seconds)}${s.gemmGflops === null ? '' : ` (${s.gemmGflops.toFixed(0)} GFLOP/s)`}, attention ${pct(s.attention, s.seconds)}, other ${pct(s.other, s.seconds)}; ` +
        `${s.pageFaults} page faults; ${(100 * s.rolloutShared).toFixed(0)}% of rollout tokens shared`);
  }
  return lines.join('\n');
}
