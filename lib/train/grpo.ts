// JustGRPO: the diffusion model trained as an autoregressive policy with plain GRPO. Per step:
// AR-order rollouts (one token per full forward pass, in order), rewards, group advantages, the
// exact AR-order likelihood of every completion token under the same inputs the sampler saw,
// the clipped-ratio loss fused with the log-softmax in native code, and an AdamW step.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { ConfigError, InputError } from '../errors.js';
import { internals, LladaModel, loadModel } from '../model.js';
import { ClipRegion } from '../native/binding.js';
import { rewards as builtinRewards } from '../rewards/index.js';
import type { Tokenizer } from '../tokenizer.js';
import { groupAdvantages, tokenWeight } from './advantages.js';
import { saveCheckpoint, type TrainerState } from './checkpoint.js';
import { checkLoss, withLastCheckpoint } from './faults.js';
import { readJsonl } from './data.js';
import { parseGrpoConfig, type GrpoConfig } from './grpo-config.js';
import { Rng, STREAM } from './rng.js';
import { epochSampler, openMetrics, openModel, openRun } from './run.js';
import { learningRateAt } from './schedule.js';
import { TrainingSession, type OptimizerOptions } from './session.js';

export type RewardArgs = {
  prompts: string[];
  completions: string[];
  completionIds: number[][];
  [column: string]: unknown[];
};

/** A reward function: one score per completion, or null where it cannot score (advantage 0). */
export type RewardFunction = (args: RewardArgs) => (number | null)[] | Promise<(number | null)[]>;

/** The built-in reward functions, by the names configs use. */
export const BUILTIN_REWARDS: Record<string, RewardFunction> = {
  gsm8k: (a) => a.completions.map((c, i) => builtinRewards.gsm8k(c, goldOf(a, i, 'gsm8k'))),
  math: (a) => a.completions.map((c, i) => builtinRewards.math(c, goldOf(a, i, 'math'))),
};

// The gold answer column of a dataset row: `answer`, else `response` / `solution` (SFT-style data).
function goldOf(a: RewardArgs, i: number, name: string): string {
  for (const key of ['answer', 'response', 'solution']) {
    const v = a[key]?.[i];
    if (typeof v === 'string' || typeof v === 'number') return String(v);
  }
  throw new Error(`the \`${name}\` reward needs an \`answer\` (or \`response\`/\`solution\`) column in the data`);
}

/** A prompt of the training set: its token ids and text, and its other columns for the rewards. */
export type PromptRecord = { ids: number[]; text: string; columns: Record<string, unknown>; source: string };

/** The rollouts of one step, as `trainOnRollouts` takes them. */
export type Rollouts = {
  /** Prompt token ids, one per group. */
  promptIds: number[][];
  /** numGenerations completions per prompt, prompt-major, each maxCompletionLength tokens. */
  completionIds: number[][];
  /** One reward per completion (null: unscorable). */
  rewards: (number | null)[];
  /** The sampler's log-probs of each token; omitted: computed now (replay, custom samplers). */
  oldLogprobs?: number[][];
};

/** Options of `trainOnRollouts`. */
export type TrainOptions = {
  onPhase?: (phase: 'loss' | 'optimizer') => void;
  /** Called between backward and each optimizer step (gradient surgery, fault injection in tests). */
  onGradients?: (session: TrainingSession) => void | Promise<void>;
};

export type GrpoStepMetrics = Record<string, number> & { step: number; loss: number };

type LossStats = { loss: number; clipped: number; clippedLow: number; clippedHigh: number; kl: number };

/**
 * The trainer: holds the policy's gradients and AdamW state, a reference model when beta > 0, and
 * the reward functions. `step()` is one full JustGRPO step; `trainOnRollouts()` trains on given ones.
 */
export class GRPOTrainer {
  readonly model: LladaModel;
  readonly config: GrpoConfig;
  readonly #session: TrainingSession;
  readonly #ref: LladaModel | null;
  readonly #rewardFns: { name: string; fn: RewardFunction; weight: number }[];
  readonly #stopIds: Set<number>;
  /** Ids outside the policy's distribution, as the sampler sees it: the mask token and embedding padding. */
  readonly excludedIds: Int32Array;

  private constructor(model: LladaModel, config: GrpoConfig, session: TrainingSession, ref: LladaModel | null,
    rewardFns: { name: string; fn: RewardFunction; weight: number }[]) {
    this.model = model;
    this.config = config;
    this.#session = session;
    this.#ref = ref;
    this.#rewardFns = rewardFns;
    this.#stopIds = new Set(internals.get(model)!.stopTokenIds());
    const mc = model.config;
    this.excludedIds = Int32Array.from([mc.maskTokenId, ...Array.from({ length: mc.embeddingSize - mc.vocabSize }, (_, i) => mc.vocabSize + i)]);
  }

  /** A trainer for `model`; `rewardFunctions` by name (in metrics) and function. */
  static async create(
    model: LladaModel,
    config: GrpoConfig,
    options: { rewardFunctions?: Record<string, RewardFunction>; refModel?: LladaModel } = {},
  ): Promise<GRPOTrainer> {
    const fns = options.rewardFunctions ?? {};
    const names = Object.keys(fns).length ? Object.keys(fns) : config.rewardFunctions;
    const rewardFns = names.map((name, i) => {
      const fn = fns[name] ?? BUILTIN_REWARDS[name];
      if (!fn) throw new ConfigError(`Unknown reward function \`${name}\` (built-in: ${Object.keys(BUILTIN_REWARDS).join(', ')}; or export it from rewardModule)`);
      return { name, fn, weight: config.rewardWeights?.[i] ?? 1 };
    });
    if (config.beta > 0 && !options.refModel) throw new ConfigError('beta > 0 needs a reference model (refModel)');
    const session = TrainingSession.create(model, { checkpointActivations: config.checkpointActivations });
    return new GRPOTrainer(model, config, session, options.refModel ?? null, rewardFns);
  }

  get session(): TrainingSession {
    return this.#session;
  }

  /** Scores completions with every reward function; returns the weighted sums and per-function scores. */
  async score(batch: PromptRecord[], completions: string[], completionIds: number[][]): Promise<{ total: (number | null)[]; perFunction: Record<string, (number | null)[]>; errors: Record<string, number> }> {
    const G = completions.length / batch.length;
    const columns: Record<string, unknown[]> = {};
    for (const key of new Set(batch.flatMap((p) => Object.keys(p.columns))))
      columns[key] = completions.map((_, i) => batch[Math.floor(i / G)]!.columns[key]);
    const prompts = completions.map((_, i) => batch[Math.floor(i / G)]!.text);
    const perFunction: Record<string, (number | null)[]> = {};
    const errors: Record<string, number> = {};
    for (const { name, fn } of this.#rewardFns) {
      let scores: (number | null)[];
      errors[name] = 0;
      const hint = "(set onRewardError: 'zero' to score such samples 0, or 'skip' to skip the step)";
      try {
        scores = await fn({ ...columns, prompts, completions, completionIds });
        if (!Array.isArray(scores) || scores.length !== completions.length)
          throw new Error(`returned ${Array.isArray(scores) ? `${scores.length} scores` : typeof scores} for ${completions.length} completions`);
      } catch (err) {
        if (this.config.onRewardError === 'error')
          throw new InputError(`Reward function \`${name}\` failed: ${(err as Error).message} ${hint}`, { cause: err });
        scores = completions.map(() => 0);
        errors[name] = completions.length;
      }
      // Non-finite or non-numeric scores: an error, or zeroed one by one and counted.
      const bad = scores.findIndex((s) => s !== null && (typeof s !== 'number' || !Number.isFinite(s)));
      if (bad >= 0) {
        if (this.config.onRewardError === 'error')
          throw new InputError(`Reward function \`${name}\` failed: returned ${String(scores[bad])} for completion ${bad} ${hint}`);
        scores = scores.map((s) => {
          if (s === null || (typeof s === 'number' && Number.isFinite(s))) return s;
          errors[name]!++;
          return 0;
        });
      }
      perFunction[name] = scores.map((s) => (s === null ? null : this.config.signedRewards ? 2 * s - 1 : s));
    }
    const total = completions.map((_, i) => {
      let sum = 0, any = false;
      for (const { name, weight } of this.#rewardFns) {
        const s = perFunction[name]![i];
        if (s === null || s === undefined) continue;
        sum += weight * s;
        any = true;
      }
      return any ? sum : null;
    });
    return { total, perFunction, errors };
  }

  /** One JustGRPO step on these prompts: rollouts, rewards, advantages, loss, AdamW. */
  async step(batch: PromptRecord[], step: number, options: {
    onPhase?: (phase: 'rollout' | 'reward' | 'loss' | 'optimizer') => void;
    onGradients?: (session: TrainingSession) => void | Promise<void>;
  } = {}): Promise<GrpoStepMetrics> {
    const c = this.config, G = c.numGenerations, L = c.maxCompletionLength;
    const t0 = performance.now();
    options.onPhase?.('rollout');
    const seed = (c.seed * 1048576 + step * batch.length) % 2 ** 36;
    const prompts = batch.map((p) => p.ids);
    const rollOpts = { decoder: 'ar', genLength: L, temperature: c.temperature, numSamples: G, seed } as const;
    const keepBytes = Math.floor(c.reuseRolloutMemoryMB * 2 ** 20);
    const roll = keepBytes > 0 ? await this.#session.rollout(prompts, rollOpts, keepBytes) : await this.model.generate(prompts, rollOpts);
    const tRollout = performance.now();
    options.onPhase?.('reward');
    // Without a tokenizer, reward functions still get the ids (completionIds) and empty texts.
    const texts = roll.tokens.map((t) => (this.model.hasTokenizer ? this.model.completionText(t) : ''));
    const scored = await this.score(batch, texts, roll.tokens);
    const tReward = performance.now();
    const rollouts = { promptIds: prompts, completionIds: roll.tokens, rewards: scored.total, oldLogprobs: roll.logprobs };
    const skip = c.onRewardError === 'skip' && Object.values(scored.errors).some((n) => n > 0);
    const m = skip ? this.#skippedStep(rollouts, step) : await this.#train(rollouts, step, options, keepBytes > 0);
    const entropy = roll.entropies.flat().reduce((a, b) => a + b, 0) / (roll.entropies.length * L);
    for (const [name, scores] of Object.entries(scored.perFunction)) {
      const xs = scores.filter((s): s is number => s !== null);
      const mean = xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
      m[`rewards/${name}/mean`] = mean;
      m[`rewards/${name}/std`] = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1));
      if (scored.errors[name]) m[`rewards/${name}/errors`] = scored.errors[name]!;
    }
    m.entropy = entropy;
    m.rollout_time = (tRollout - t0) / 1000;
    m.reward_time = (tReward - tRollout) / 1000;
    m.step_time = (performance.now() - t0) / 1000;
    m.tokens_per_second = (roll.tokens.length * L) / m.step_time;
    m.rollout_tokens_per_second = roll.tokensPerSecond;
    // The share of the rollout's forward work saved by computing identical canvases once (the G
    // samples of a prompt until they diverge): 0 when every canvas differs, near 1 for a policy
    // that always agrees with itself.
    const canvasTokens = roll.nfe.reduce((a, n, row) => a + n * (prompts[Math.floor(row / G)]!.length + L), 0);
    m.rollout_shared = canvasTokens > 0 ? 1 - roll.forwardTokens / canvasTokens : 0;
    return m;
  }

  // The metrics of a step whose update was skipped (bad rewards with onRewardError: 'skip').
  #skippedStep(r: Rollouts, step: number): GrpoStepMetrics {
    const rs = r.rewards.filter((x): x is number => x !== null);
    return {
      step: step + 1, loss: 0, skipped: 1, non_finite: 0, grad_norm: 0,
      reward: rs.reduce((a, b) => a + b, 0) / Math.max(1, rs.length),
      learning_rate: learningRateAt(step, { ...this.config, totalSteps: this.config.maxSteps }),
      num_tokens: r.completionIds.length * this.config.maxCompletionLength,
    };
  }

  /** One optimizer step (or numIterations of them) on rollouts the caller supplies. */
  trainOnRollouts(r: Rollouts, step: number, options: TrainOptions = {}): Promise<GrpoStepMetrics> {
    return this.#train(r, step, options, false);
  }

  // `kept`: r is the session's last rollout, whose activations it kept.
  async #train(r: Rollouts, step: number, options: TrainOptions, kept: boolean): Promise<GrpoStepMetrics> {
    const c = this.config, G = c.numGenerations, L = c.maxCompletionLength;
    const N = r.completionIds.length;
    if (N !== r.promptIds.length * G) throw new InputError(`Expected ${r.promptIds.length * G} completions (numGenerations ${G} per prompt) but received ${N}`);
    if (r.rewards.length !== N) throw new InputError(`Expected ${N} rewards but received ${r.rewards.length}`);
    r.completionIds.forEach((t, i) => {
      if (t.length !== L) throw new InputError(`Completion ${i} has ${t.length} tokens; maxCompletionLength is ${L}`);
    });
    const ended = r.completionIds.map((t) => t.some((x) => this.#stopIds.has(x)));
    const adv = groupAdvantages(r.rewards.map((x, i) => (c.maskTruncatedCompletions && !ended[i] ? null : x)), G, c.scaleRewards);
    const old = r.oldLogprobs ?? (await this.#logprobs(this.model, r));
    const keep = c.lossPositions ?? L;
    const weight = tokenWeight({ lossType: c.lossType, genLength: L, validCount: adv.valid.filter(Boolean).length, total: N, positionsKept: keep });
    const lr = learningRateAt(step, { ...c, totalSteps: c.maxSteps });
    let stats: LossStats = { loss: 0, clipped: 0, clippedLow: 0, clippedHigh: 0, kl: 0 };
    let gradNorm = 0, nonFinite = 0, skipped = 0;
    const positions = this.#positions(N, L, step);
    let reused = 0;
    for (let iter = 0; iter < c.numIterations; iter++) {
      options.onPhase?.('loss');
      this.#session.zeroGrad();
      // Kept activations are valid for the first pass only (the session also refuses stale ones).
      const keptSteps = kept && iter === 0 ? this.#session.keptSteps().steps : 0;
      if (iter === 0) reused = new Set(positions.flat().filter((t) => t < keptSteps)).size;
      stats = await this.#lossBackward(r, adv.advantages, old, weight, positions, keptSteps);
      checkLoss(stats.loss, step + 1, c.maxLoss);
      await options.onGradients?.(this.#session);
      options.onPhase?.('optimizer');
      const res = await this.#session.step(lr, c as OptimizerOptions);
      gradNorm = res.gradNorm;
      nonFinite += res.nonFinite;
      if (res.skipped) skipped = 1;
    }
    const rs = r.rewards.filter((x): x is number => x !== null);
    const lengths = r.completionIds.map((t) => {
      const end = t.findIndex((x) => this.#stopIds.has(x));
      return end < 0 ? L : end + 1;
    });
    // TRL's clip ratios and KL are means over every completion token, whichever rows the loss
    // visited (zero-advantage completions are skipped unless beta > 0).
    const trained = positions.reduce((a, p) => a + p.length, 0);
    const metrics: GrpoStepMetrics = {
      step: step + 1,
      loss: stats.loss,
      reward: rs.reduce((a, b) => a + b, 0) / Math.max(1, rs.length),
      reward_std: adv.groupStd.reduce((a, b) => a + b, 0) / adv.groupStd.length,
      frac_reward_zero_std: adv.zeroStdGroups / adv.groupStd.length,
      'completions/mean_length': lengths.reduce((a, b) => a + b, 0) / N,
      'completions/clipped_ratio': ended.filter((e) => !e).length / N,
      'clip_ratio/region_mean': stats.clipped / trained,
      'clip_ratio/low_mean': stats.clippedLow / trained,
      'clip_ratio/high_mean': stats.clippedHigh / trained,
      grad_norm: gradNorm,
      non_finite: nonFinite,
      skipped,
      learning_rate: lr,
      num_tokens: N * L,
      valid_samples: adv.valid.filter(Boolean).length,
    };
    if (c.beta > 0) metrics.kl = stats.kl / trained;
    // Rollout steps (positions) whose loss ran backward through their kept activations, no forward.
    metrics.reused_positions = reused;
    return metrics;
  }

  // Positions trained per completion: all, or the same lossPositions random ones for every
  // completion of the step (seeded by step). Each position is kept with probability K / L and
  // weighted L / K, so the loss stays unbiased; sharing the subset lets the loss skip the kept
  // rollout steps no completion trains on.
  #positions(N: number, L: number, step: number): number[][] {
    const K = this.config.lossPositions;
    if (K === undefined || K >= L) return Array.from({ length: N }, () => Array.from({ length: L }, (_, t) => t));
    const ts = new Rng(this.config.seed, STREAM.sample, step).permutation(L).slice(0, K).sort((a, b) => a - b);
    return Array.from({ length: N }, () => ts);
  }

  // The packed (sample, t) inputs: [prompt, x_<t, MASK x (L - t)], read at row P + t, in chunks of
  // at most maxTokensPerBatch tokens.
  *#chunks(r: Rollouts, include: (i: number) => boolean, positions: number[][]) {
    const G = this.config.numGenerations, L = this.config.maxCompletionLength, mask = this.model.config.maskTokenId;
    let tokens: number[] = [], starts = [0], rows: number[] = [], targets: number[] = [], pairs: [number, number][] = [];
    for (let i = 0; i < r.completionIds.length; i++) {
      if (!include(i)) continue;
      const prompt = r.promptIds[Math.floor(i / G)]!, x = r.completionIds[i]!;
      for (const t of positions[i]!) {
        const len = prompt.length + L;
        if (rows.length > 0 && tokens.length + len > this.config.maxTokensPerBatch) {
          yield { tokens, starts, rows, targets, pairs };
          tokens = []; starts = [0]; rows = []; targets = []; pairs = [];
        }
        const base = tokens.length;
        for (const p of prompt) tokens.push(p);
        for (let j = 0; j < L; j++) tokens.push(j < t ? x[j]! : mask);
        starts.push(tokens.length);
        rows.push(base + prompt.length + t);
        targets.push(x[t]!);
        pairs.push([i, t]);
      }
    }
    if (rows.length > 0) yield { tokens, starts, rows, targets, pairs };
  }

  /**
   * The exact AR-order log-likelihood of every completion token: log p(x_t | [prompt, x_<t, MASK...])
   * under `model` (the policy by default), batched over (completion, position) pairs.
   */
  async likelihood(r: Rollouts, model: LladaModel = this.model): Promise<number[][]> {
    return this.#logprobs(model, r);
  }

  async #logprobs(model: LladaModel, r: Rollouts): Promise<number[][]> {
    const L = this.config.maxCompletionLength;
    const out = r.completionIds.map(() => new Array<number>(L).fill(0));
    const all = Array.from({ length: r.completionIds.length }, () => Array.from({ length: L }, (_, t) => t));
    const m = internals.get(model)!;
    const exclude = this.excludedIds;
    for (const ch of this.#chunks(r, () => true, all)) {
      const lp = await m.run(() => m.engine.logprobs(Int32Array.from(ch.tokens), Int32Array.from(ch.starts), Int32Array.from(ch.rows), Int32Array.from(ch.targets), exclude));
      ch.pairs.forEach(([i, t], k) => (out[i]![t] = lp[k]!));
    }
    return out;
  }

  async #lossBackward(r: Rollouts, advantages: number[], old: number[][], weight: number, positions: number[][], keptSteps: number): Promise<LossStats> {
    const c = this.config, N = r.completionIds.length;
    const stats: LossStats = { loss: 0, clipped: 0, clippedLow: 0, clippedHigh: 0, kl: 0 };
    // Zero-advantage completions add nothing to the gradient unless the KL term is on.
    const include = (i: number) => advantages[i] !== 0 || c.beta > 0;
    const ref = this.#ref ? await this.#logprobs(this.#ref, r) : null;
    const settings = { epsilonLow: c.epsilon, epsilonHigh: c.epsilonHigh ?? c.epsilon, beta: c.beta, excludeIds: this.excludedIds };
    const tally = (res: { loss: number; logprobs: Float32Array; clipped: Uint8Array }, pairs: [number, number][], counted: (k: number) => boolean) => {
      stats.loss += res.loss;
      pairs.forEach(([i, t], k) => {
        if (!counted(k)) return;
        const region = res.clipped[k]!;
        if (region !== 0) stats.clipped++;
        if (region === ClipRegion.low) stats.clippedLow++;
        if (region === ClipRegion.high) stats.clippedHigh++;
        if (ref) {
          const d = ref[i]![t]! - res.logprobs[k]!;
          stats.kl += Math.exp(d) - d - 1;
        }
      });
    };
    // Steps the rollout kept: one row per completion, in order; rows not trained weigh 0.
    const trained = positions.map((ts) => new Set(ts));
    for (let t = 0; t < keptSteps; t++) {
      const use = Array.from({ length: N }, (_, i) => include(i) && trained[i]!.has(t));
      if (!use.some(Boolean)) continue;
      const pairs = Array.from({ length: N }, (_, i): [number, number] => [i, t]);
      const res = await this.#session.policyLossBackwardKept(t, {
        targets: Int32Array.from(r.completionIds, (x) => x[t]!),
        weights: Float32Array.from(use, (u) => (u ? weight : 0)),
        oldLogprobs: Float32Array.from(old, (lp) => lp[t]!),
        advantages: Float32Array.from(advantages),
        refLogprobs: ref ? Float32Array.from(ref, (lp) => lp[t]!) : null,
      }, settings);
      tally(res, pairs, (k) => use[k]!);
    }
    // The rest recompute: packed (completion, t) inputs, forward and backward.
    const rest = keptSteps > 0 ? positions.map((ts) => ts.filter((t) => t >= keptSteps)) : positions;
    for (const ch of this.#chunks(r, include, rest)) {
      const n = ch.rows.length;
      const res = await this.#session.policyLossBackward(
        {
          tokens: Int32Array.from(ch.tokens), seqStarts: Int32Array.from(ch.starts), rows: Int32Array.from(ch.rows), targets: Int32Array.from(ch.targets),
          weights: new Float32Array(n).fill(weight), numTokens: ch.tokens.length,
          oldLogprobs: Float32Array.from(ch.pairs, ([i, t]) => old[i]![t]!),
          advantages: Float32Array.from(ch.pairs, ([i]) => advantages[i]!),
          refLogprobs: ref ? Float32Array.from(ch.pairs, ([i, t]) => ref[i]![t]!) : null,
        },
        settings,
      );
      tally(res, ch.pairs, () => true);
    }
    return stats;
  }

  dispose(): void {
    this.#session.dispose();
  }
}

/** Reads the prompts of a training set: `prompt` or `question`, other columns kept for the rewards. */
export async function readPrompts(file: string, tokenizer: Tokenizer, o: { onBadLine: 'stop' | 'skip'; chatTemplate?: boolean; maxPromptLength: number; overlong: 'error' | 'skip' }): Promise<PromptRecord[]> {
  const { records } = await readJsonl(file, { onBadLine: o.onBadLine, require: [['prompt', 'question']] });
  const useTemplate = o.chatTemplate ?? tokenizer.hasChatTemplate;
  const out: PromptRecord[] = [];
  for (const { line, value } of records) {
    const text = (value.prompt ?? value.question) as string;
    const ids = useTemplate ? tokenizer.encodeChat([{ role: 'user', content: text }]) : tokenizer.encode(text);
    if (ids.length > o.maxPromptLength) {
      if (o.overlong === 'skip') continue;
      throw new InputError(`${file}:${line}: the prompt has ${ids.length} tokens; with maxCompletionLength the model allows at most ${o.maxPromptLength}`);
    }
    const { prompt: _p, question: _q, ...columns } = value;
    out.push({ ids, text, columns, source: `${file}:${line}` });
  }
  if (out.length === 0) throw new InputError(`${file}: no prompts`);
  return out;
}

export type GrpoHooks = {
  onStart?: (info: { totalSteps: number; startStep: number; prompts: number; numParams: number; outputDir: string }) => void;
  onPhase?: (step: number, phase: 'rollout' | 'reward' | 'loss' | 'optimizer') => void;
  onStep?: (m: GrpoStepMetrics) => void;
  /** Called between backward and each optimizer step (gradient surgery, fault injection in tests). */
  onGradients?: (step: number, session: TrainingSession) => void | Promise<void>;
  onEval?: (m: { step: number; reward: number; count: number }) => void;
  signal?: AbortSignal;
};

async function loadRewardModule(file: string): Promise<Record<string, RewardFunction>> {
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (err) {
    throw new ConfigError(`Cannot import rewardModule ${file}: ${(err as Error).message}`, { cause: err });
  }
  const fns: Record<string, RewardFunction> = {};
  for (const [k, v] of Object.entries(mod)) if (typeof v === 'function') fns[k] = v as RewardFunction;
  return fns;
}

/** Runs JustGRPO from a config, or resumes a run (config from its checkpoint, `overrides` on top). */
export async function runGrpo(
  args: { config?: GrpoConfig; baseDir?: string; resume?: string; overrides?: Partial<GrpoConfig> },
  hooks: GrpoHooks = {},
): Promise<{ outputDir: string; checkpoint: string | null; steps: number }> {
  const { config, baseDir, model, checkpoint: ckpt, state, restart } = await openRun('grpo', parseGrpoConfig, args);
  const resolved: GrpoConfig = {
    ...config,
    data: { ...config.data, train: path.resolve(baseDir, config.data.train) },
    outputDir: path.resolve(baseDir, config.outputDir),
    ...(config.rewardModule ? { rewardModule: path.resolve(baseDir, config.rewardModule) } : {}),
    ...(config.refModel ? { refModel: path.resolve(baseDir, config.refModel) } : {}),
    ...(config.eval ? { eval: { ...config.eval, data: path.resolve(baseDir, config.eval.data) } } : {}),
  };
  const outputDir = resolved.outputDir;
  let trainer: GRPOTrainer | null = null, ref: LladaModel | null = null;
  try {
    const maxPrompt = model.config.maxSequenceLength - config.maxCompletionLength;
    if (maxPrompt < 1) throw new ConfigError(`maxCompletionLength ${config.maxCompletionLength} leaves no room for a prompt in max_sequence_length ${model.config.maxSequenceLength}`);
    const prompts = await readPrompts(resolved.data.train, model.tokenizer, { ...config.data, maxPromptLength: maxPrompt });
    const evalPrompts = resolved.eval ? (await readPrompts(resolved.eval.data, model.tokenizer, { ...config.data, maxPromptLength: maxPrompt })).slice(0, resolved.eval.limit) : [];
    const fns = resolved.rewardModule ? await loadRewardModule(resolved.rewardModule) : {};
    const named: Record<string, RewardFunction> = {};
    for (const name of config.rewardFunctions) {
      const fn = fns[name] ?? BUILTIN_REWARDS[name];
      if (!fn) throw new ConfigError(`Unknown reward function \`${name}\`: not built in (${Object.keys(BUILTIN_REWARDS).join(', ')}) and not exported by rewardModule`);
      named[name] = fn;
    }
    if (config.beta > 0)
      ref = resolved.refModel ? await loadModel(resolved.refModel, { dtype: config.dtype }) : await openModel(config.model, baseDir, config.dtype);
    const metrics = await openMetrics(outputDir, state, restart);
    trainer = await GRPOTrainer.create(model, config, { rewardFunctions: named, refModel: ref ?? undefined });
    if (ckpt) await trainer.session.loadOptimizer(ckpt);
    const perStep = config.promptsPerStep * config.gradientAccumulationSteps;
    const startStep = state?.step ?? 0;
    hooks.onStart?.({ totalSteps: config.maxSteps, startStep, prompts: prompts.length, numParams: model.numParams, outputDir });
    const promptAt = epochSampler(prompts, config.seed);
    const evaluate = async (step: number) => {
      if (!resolved.eval || evalPrompts.length === 0) return;
      const e = resolved.eval;
      const genLength = e.genLength ?? config.maxCompletionLength;
      const out = await model.generate(evalPrompts.map((p) => p.ids), { decoder: e.decoder, genLength, blockLength: e.blockLength, steps: e.steps, threshold: e.threshold });
      const s = await trainer!.score(evalPrompts, out.tokens.map((t) => model.completionText(t)), out.tokens);
      const xs = s.total.map((x) => x ?? 0);
      const reward = xs.reduce((a, b) => a + b, 0) / xs.length;
      await metrics.append({ step, 'eval/reward': reward, 'eval/count': xs.length });
      hooks.onEval?.({ step, reward, count: xs.length });
    };
    const stateAt = (step: number): TrainerState => ({
      kind: 'grpo', step, examplesSeen: step * perStep, seed: config.seed, config: resolved as unknown as Record<string, unknown>, version: 1,
    });
    if (startStep === 0) await evaluate(0);
    let step = startStep, checkpoint: string | null = null;
    while (step < config.maxSteps) {
      const batch = Array.from({ length: perStep }, (_, i) => promptAt(step * perStep + i));
      const s = step;
      const m = await trainer.step(batch, step, { onPhase: (p) => hooks.onPhase?.(s + 1, p), onGradients: (session) => hooks.onGradients?.(s + 1, session) });
      step++;
      if (step % config.loggingSteps === 0 || step === config.maxSteps) await metrics.append(m);
      hooks.onStep?.(m);
      if (resolved.eval && (step % resolved.eval.evalSteps === 0 || step === config.maxSteps)) await evaluate(step);
      const stop = hooks.signal?.aborted ?? false;
      if (step % config.saveSteps === 0 || step === config.maxSteps || stop)
        checkpoint = await saveCheckpoint(outputDir, model, trainer.session, stateAt(step), config.saveTotalLimit);
      if (stop) break;
    }
    return { outputDir, checkpoint, steps: step };
  } catch (err) {
    throw await withLastCheckpoint(err, outputDir);
  } finally {
    trainer?.dispose();
    await ref?.dispose();
    await model.dispose();
  }
}
