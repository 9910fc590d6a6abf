// JustGRPO: the diffusion model trained as an autoregressive policy with plain GRPO. Per step:
// AR-order rollouts (one token per full forward pass, in order), rewards, group advantages, the
// exact AR-order likelihood of every completion token under the same inputs the sampler saw,
// the clipped-ratio loss fused with the log-softmax in native code, and an AdamW step.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { ConfigError, InputError } from '../errors.js';
import { internals, LladaModel, loadModel } from '../model.js';
import { ClipRegion } from '../native/binding.js';
import { rewardFunction, type RewardFunction } from '../rewards/registry.js';
import type { Tokenizer } from '../tokenizer.js';
import { groupAdvantages, tokenWeights } from './advantages.js';
import { MetricsLog } from './checkpoint.js';
import { allGatherJson, gather, gatherNumbers, LocalCommunicator, placement, shard, type Communicator } from './distributed.js';
import { checkLoss } from './faults.js';
import { readJsonl } from './data.js';
import { parseGrpoConfig, parseTrainerConfig, type GrpoConfig, type GrpoConfigInput, type GrpoTrainerConfig, type GrpoTrainerConfigInput } from './grpo-config.js';
import { Rng, STREAM } from './rng.js';
import { epochSampler, openModel, resolveSource, runTraining, type RunArgs, type RunHooks, type RunResult } from './run.js';
import { learningRateAt } from './schedule.js';
import { TrainingSession, type OptimizerOptions } from './session.js';

// The reward functions and their registry live in lib/rewards/registry.ts.
export { BUILTIN_REWARDS, type RewardArgs, type RewardFunction } from '../rewards/registry.js';

/**
 * The value of a reward call, or a rejection with `message` after `seconds`: a function that never
 * settles would otherwise stall the run, and once nothing else is pending, end it with status 0.
 * (A function that blocks the event loop cannot be stopped from here: the timer never fires.)
 */
async function withTimeout<T>(value: T | Promise<T>, seconds: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), Math.min(seconds * 1000, 2 ** 31 - 1));
  });
  try {
    return await Promise.race([value, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** A prompt of the training set: its token ids and text, and its other columns for the rewards. */
export type PromptRecord = { ids: number[]; text: string; columns: Record<string, unknown>; source: string };

/**
 * What `trainer.step()` and `promptRecords()` take as a prompt: a record, the prompt text, or a
 * dataset row whose `prompt` (or `question`) is the text and whose other columns reach the rewards
 * (e.g. `{ question, answer }` for the `gsm8k` reward).
 */
export type PromptInput = PromptRecord | string | Record<string, unknown>;

export type PromptRecordOptions = {
  /** Wrap each prompt in the chat template as a user message. Defaults to whether the tokenizer has one. */
  chatTemplate?: boolean;
};

function isPromptRecord(p: unknown): p is PromptRecord {
  const r = p as PromptRecord;
  return typeof r === 'object' && r !== null && Array.isArray(r.ids) && typeof r.text === 'string' && typeof r.columns === 'object';
}

/** Prompt strings or dataset rows as PromptRecords (records pass through unchanged). */
export function promptRecords(tokenizer: Tokenizer, prompts: readonly PromptInput[], options: PromptRecordOptions = {}): PromptRecord[] {
  if (!Array.isArray(prompts)) throw new InputError(`Expected an array of prompts for \`prompts\` but received ${typeof prompts}`);
  const useTemplate = options.chatTemplate ?? tokenizer.hasChatTemplate;
  const pending: { i: number; text: string; columns: Record<string, unknown> }[] = [];
  const out = prompts.map((p, i): PromptRecord | null => {
    if (isPromptRecord(p)) return p;
    let text: unknown, columns: Record<string, unknown> = {};
    if (typeof p === 'string') text = p;
    else if (typeof p === 'object' && p !== null && !Array.isArray(p)) {
      const { prompt, question, ...rest } = p as Record<string, unknown>;
      text = prompt ?? question;
      columns = rest;
    }
    if (typeof text !== 'string')
      throw new InputError(`Expected a string, a PromptRecord or a row with a string \`prompt\` (or \`question\`) for \`prompts[${i}]\` but received ${JSON.stringify(p)?.slice(0, 80)}`);
    pending.push({ i, text, columns });
    return null;
  });
  // One call into the tokenizer's process for all the texts (each call crosses into it).
  const ids = useTemplate
    ? tokenizer.encodeChatBatch(pending.map((q) => [{ role: 'user', content: q.text }]))
    : tokenizer.encodeBatch(pending.map((q) => q.text));
  pending.forEach((q, j) => (out[q.i] = { ids: ids[j]!, text: q.text, columns: q.columns, source: `prompts[${q.i}]` }));
  return out as PromptRecord[];
}

/** A step's prompts, completions, rewards and advantages (one entry per completion), for logCompletions. */
export type CompletionLog = {
  step: number;
  prompts: string[];
  completions: string[];
  rewards: (number | null)[];
  advantages: number[];
  perFunction: Record<string, (number | null)[]>;
};

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
  /**
   * Called between backward and each optimizer step (gradient surgery, fault injection in tests),
   * with this rank's gradients: under data parallelism the step sums them over the ranks.
   */
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
  readonly config: GrpoTrainerConfig;
  readonly #session: TrainingSession;
  readonly #ref: LladaModel | null;
  readonly #rewardFns: { name: string; fn: RewardFunction; weight: number }[];
  readonly #stopIds: Set<number>;
  readonly #comm: Communicator;
  /** Ids outside the policy's distribution, as the sampler sees it: the mask token and embedding padding. */
  readonly excludedIds: Int32Array;
  /** Optimizer steps done: the default `step` argument of the next `step()` / `trainOnRollouts()`. */
  stepsDone = 0;
  #lastAdvantages: number[] = [];

  private constructor(model: LladaModel, config: GrpoTrainerConfig, session: TrainingSession, ref: LladaModel | null,
    rewardFns: { name: string; fn: RewardFunction; weight: number }[], comm: Communicator) {
    this.model = model;
    this.#comm = comm;
    this.config = config;
    this.#session = session;
    this.#ref = ref;
    this.#rewardFns = rewardFns;
    this.#stopIds = new Set(internals.get(model)!.stopTokenIds());
    const mc = model.config;
    this.excludedIds = Int32Array.from([mc.maskTokenId, ...Array.from({ length: mc.embeddingSize - mc.vocabSize }, (_, i) => mc.vocabSize + i)]);
  }

  /**
   * A trainer for `model`. `config` holds any GrpoConfig fields (not `model` or `data`); the rest
   * take the defaults `justgrpo train` uses. `rewardFunctions` by name (the name is the metric's).
   * `communicator`: data parallelism (see lib/train/distributed.ts): `step()` takes the whole step's
   * prompts on every rank and works on this rank's shard; `trainOnRollouts()` takes this rank's
   * rollouts (ranks in order make the global batch). Either way the update is the one a single
   * process would make on the global batch.
   */
  static async create(
    model: LladaModel,
    config: GrpoTrainerConfigInput = {},
    options: { rewardFunctions?: Record<string, RewardFunction>; refModel?: LladaModel; communicator?: Communicator } = {},
  ): Promise<GRPOTrainer> {
    if (!(model instanceof LladaModel)) throw new InputError('Expected a LladaModel for `model` (from loadModel)');
    const fns = options.rewardFunctions ?? {};
    // Functions given here name the rewards (their order is rewardWeights').
    const given = typeof config === 'object' && config !== null ? config : {};
    const c = parseTrainerConfig(Object.keys(fns).length ? { ...given, rewardFunctions: Object.keys(fns) } : given, 'GRPOTrainer.create config');
    const rewardFns = c.rewardFunctions.map((name, i) => ({ name, fn: rewardFunction(name, fns), weight: c.rewardWeights?.[i] ?? 1 }));
    if (c.beta > 0 && !options.refModel) throw new ConfigError('beta > 0 needs a reference model (refModel)');
    const promptLength = 256;  // a typical prompt: the plan is a forecast, the run allocates what it meets
    const session = TrainingSession.create(model, {
      checkpointActivations: c.checkpointActivations,
      // Printed once, by rank 0.
      memoryPlan: (options.communicator?.rank ?? 0) !== 0 ? undefined : {
        dtype: model.deviceInfo().dtype === 'BF16' ? 'bf16' : 'fp32', rolloutSequences: c.promptsPerStep * c.numGenerations,
        rolloutLength: promptLength + c.maxCompletionLength, lossTokens: c.maxTokensPerBatch,
        keptBytes: Math.floor(c.reuseRolloutMemoryMB * 2 ** 20), ranks: options.communicator?.size ?? 1, zeroStage: c.zeroStage,
      },
      // ZeRO-1: this rank allocates its shard of the AdamW state only.
      shardOver: c.zeroStage === 1 ? options.communicator : undefined,
    });
    const comm = options.communicator ?? new LocalCommunicator();
    return new GRPOTrainer(model, c, session, options.refModel ?? null, rewardFns, comm);
  }

  /** The ranks this trainer's steps run on (one process: a LocalCommunicator). */
  get communicator(): Communicator {
    return this.#comm;
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
        scores = await withTimeout(fn({ ...columns, prompts, completions, completionIds }), this.config.rewardTimeout,
          `did not return within rewardTimeout (${this.config.rewardTimeout} s)`);
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

  /**
   * One JustGRPO step on these prompts: rollouts, rewards, advantages, loss, AdamW. Prompts are
   * records, strings or dataset rows (see `promptRecords`). Step numbering, here and in
   * `trainOnRollouts`: `step` is the number of optimizer steps done before this one (0 for the
   * first; defaults to `stepsDone`); it seeds the rollout and sets the learning rate. The metrics'
   * `step` is `step + 1`, the step just done, as in metrics.jsonl and checkpoint-N.
   */
  async step(inputs: readonly PromptInput[], step: number = this.stepsDone, options: {
    onPhase?: (phase: 'rollout' | 'reward' | 'loss' | 'optimizer') => void;
    onGradients?: (session: TrainingSession) => void | Promise<void>;
    /** Receives the step's prompts, completions, rewards and advantages (logCompletions). */
    onCompletions?: (log: CompletionLog) => void | Promise<void>;
  } = {}): Promise<GrpoStepMetrics> {
    if (!Number.isInteger(step) || step < 0) throw new InputError(`Expected an integer >= 0 for \`step\` but received ${step}`);
    const batch = inputs.every(isPromptRecord) ? [...inputs] : promptRecords(this.model.tokenizer, inputs);
    if (batch.length === 0) throw new InputError('Expected at least one prompt for `prompts` but received none');
    const c = this.config, G = c.numGenerations, L = c.maxCompletionLength;
    const comm = this.#comm, P = batch.length;
    if (P < comm.size) throw new InputError(`Expected at least one prompt per rank (${comm.size} ranks) for \`prompts\` but received ${P}`);
    // This rank's prompts; prompt p's completions draw from the stream of its global index p, so
    // the rollouts do not depend on the rank count.
    const part = shard(P, comm.rank, comm.size);
    const local = batch.slice(part.start, part.end);
    const t0 = performance.now();
    options.onPhase?.('rollout');
    const seed = (c.seed * 1048576 + step * P + part.start) % 2 ** 36;
    const prompts = local.map((p) => p.ids);
    const rollOpts = { decoder: 'ar', genLength: L, temperature: c.temperature, numSamples: G, seed } as const;
    const keepBytes = Math.floor(c.reuseRolloutMemoryMB * 2 ** 20);
    const roll = keepBytes > 0 ? await this.#session.rollout(prompts, rollOpts, keepBytes) : await this.model.generate(prompts, rollOpts);
    const tRollout = performance.now();
    options.onPhase?.('reward');
    // Without a tokenizer, reward functions still get the ids (completionIds) and empty texts.
    const texts = this.#completionTexts(roll.tokens);
    const scored = await this.score(local, texts, roll.tokens);
    const tReward = performance.now();
    const rollouts = { promptIds: prompts, completionIds: roll.tokens, rewards: scored.total, oldLogprobs: roll.logprobs };
    // Every rank's scores, so the skip decision and the reward metrics are the global ones.
    const names = Object.keys(scored.perFunction);
    const [totals, ...perFn] = await gather(comm, [scored.total, ...names.map((n) => scored.perFunction[n]!)], part.start * G, P * G, 'the gather of the rewards');
    const errors = await comm.allReduce(names.map((n) => scored.errors[n] ?? 0), 'sum', 'the sum of the reward errors');
    const skip = c.onRewardError === 'skip' && errors.some((n) => n > 0);
    this.#lastAdvantages = rollouts.completionIds.map(() => 0);
    const m = skip ? this.#skippedStep(totals!, step) : await this.#train(rollouts, step, options, keepBytes > 0);
    if (options.onCompletions) {
      const mine = {
        prompts: texts.map((_, i) => local[Math.floor(i / G)]!.text), completions: texts, rewards: scored.total, advantages: this.#lastAdvantages,
        perFunction: scored.perFunction,
      };
      const all = await allGatherJson(comm, mine, 'the gather of the completions log');
      await options.onCompletions({
        step: step + 1, prompts: all.flatMap((l) => l.prompts), completions: all.flatMap((l) => l.completions),
        rewards: all.flatMap((l) => l.rewards), advantages: all.flatMap((l) => l.advantages),
        perFunction: Object.fromEntries(names.map((n) => [n, all.flatMap((l) => l.perFunction[n]!)])),
      });
    }
    names.forEach((name, j) => {
      const xs = perFn[j]!.filter((s): s is number => s !== null);
      const mean = xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
      m[`rewards/${name}/mean`] = mean;
      m[`rewards/${name}/std`] = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1));
      if (errors[j]) m[`rewards/${name}/errors`] = errors[j]!;
    });
    // The share of the rollout's forward work saved by computing identical canvases once (the G
    // samples of a prompt until they diverge): 0 when every canvas differs, near 1 for a policy
    // that always agrees with itself.
    const canvasTokens = roll.nfe.reduce((a, n, row) => a + n * (prompts[Math.floor(row / G)]!.length + L), 0);
    const entropySum = roll.entropies.flat().reduce((a, b) => a + b, 0);
    const [entropyAll, canvasAll, forwardAll, rolloutRate] = await comm.allReduce(
      [entropySum, canvasTokens, roll.forwardTokens, roll.tokensPerSecond], 'sum', 'the sum of the rollout metrics');
    // Times are the slowest rank's: the step waits for it.
    const [rolloutTime, rewardTime, stepTime] = await comm.allReduce(
      [(tRollout - t0) / 1000, (tReward - tRollout) / 1000, (performance.now() - t0) / 1000], 'max', 'the step times');
    m.entropy = entropyAll! / (P * G * L);
    m.rollout_time = rolloutTime!;
    m.reward_time = rewardTime!;
    m.step_time = stepTime!;
    m.tokens_per_second = (P * G * L) / m.step_time;
    m.rollout_tokens_per_second = rolloutRate!;
    m.rollout_shared = canvasAll! > 0 ? 1 - forwardAll! / canvasAll! : 0;
    return m;
  }

  // model.completionText of each completion (up to its first stop token, special tokens removed),
  // in one call to the tokenizer process per 256 completions rather than one per completion.
  #completionTexts(tokens: number[][]): string[] {
    if (!this.model.hasTokenizer) return tokens.map(() => '');
    const cut = tokens.map((t) => {
      const end = t.findIndex((x) => this.#stopIds.has(x));
      return end < 0 ? t : t.slice(0, end);
    });
    return this.model.tokenizer.decodeBatch(cut, { skipSpecialTokens: true });
  }

  // The metrics of a step whose update was skipped (bad rewards with onRewardError: 'skip'); the
  // rewards of the whole step (every rank's).
  #skippedStep(rewards: (number | null)[], step: number): GrpoStepMetrics {
    this.stepsDone = step + 1;
    const rs = rewards.filter((x): x is number => x !== null);
    return {
      step: step + 1, loss: 0, skipped: 1, non_finite: 0, grad_norm: 0,
      reward: rs.reduce((a, b) => a + b, 0) / Math.max(1, rs.length),
      learning_rate: learningRateAt(step, { ...this.config, totalSteps: this.config.maxSteps }),
      num_tokens: rewards.length * this.config.maxCompletionLength,
    };
  }

  /**
   * One optimizer step (or numIterations of them) on rollouts the caller supplies; `step` as in
   * `step()`. With a communicator, `r` is this rank's part of the step's rollouts.
   */
  trainOnRollouts(r: Rollouts, step: number = this.stepsDone, options: TrainOptions = {}): Promise<GrpoStepMetrics> {
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
    const endedLocal = r.completionIds.map((t) => t.some((x) => this.#stopIds.has(x)));
    const lengthsLocal = r.completionIds.map((t) => {
      const end = t.findIndex((x) => this.#stopIds.has(x));
      return end < 0 ? L : end + 1;
    });
    // The whole step's rewards and lengths on every rank: advantages, normalisers and metrics are
    // computed from the global batch exactly as one process would, then this rank takes its slice.
    const comm = this.#comm;
    const { offset, total } = await placement(comm, N, 'the placement of the completions');
    // (One collective at a time: every rank must issue them in the same order.)
    const [rewards] = await gather(comm, [r.rewards], offset, total, 'the gather of the rewards');
    const [endedAll, lengths] = await gatherNumbers(comm, [endedLocal.map(Number), lengthsLocal], offset, total, 'the gather of the completion lengths');
    const ended = endedAll!.map((e) => e > 0);
    const mine = <T>(xs: T[]) => xs.slice(offset, offset + N);
    let adv = groupAdvantages(rewards!.map((x, i) => (c.maskTruncatedCompletions && !ended[i] ? null : x)), G, c.scaleRewards);
    // Finite rewards can still overflow the group statistics (rewards of +-1e308: the sum is
    // infinite, the std NaN), and NaN advantages make the loss silently 0: a reward error too.
    const badGroups = adv.groupStd.flatMap((s, g) => (Number.isFinite(s) && adv.advantages.slice(g * G, (g + 1) * G).every(Number.isFinite) ? [] : [g]));
    let statErrors = 0;
    if (badGroups.length > 0) {
      const g = badGroups[0]!, rs = rewards!.slice(g * G, (g + 1) * G).filter((x): x is number => x !== null);
      const what = `the rewards of prompt ${g} at step ${step + 1} (from ${Math.min(...rs)} to ${Math.max(...rs)}) give a non-finite mean or standard deviation`;
      if (c.onRewardError === 'error')
        throw new InputError(`${what}; scale the rewards (set onRewardError: 'zero' to score such groups 0, or 'skip' to skip the step)`);
      if (c.onRewardError === 'skip') return { ...this.#skippedStep(rewards!, step), reward_errors: badGroups.length * G };
      const bad = new Set(badGroups);
      adv = groupAdvantages(rewards!.map((x, i) => (bad.has(Math.floor(i / G)) ? 0 : c.maskTruncatedCompletions && !ended[i] ? null : x)), G, c.scaleRewards);
      statErrors = badGroups.length * G;
    }
    const advantages = mine(adv.advantages);
    this.#lastAdvantages = advantages;
    const old = r.oldLogprobs ?? (await this.#logprobs(this.model, r));
    const allWeights = tokenWeights({
      lossType: c.lossType, maxCompletionLength: L, valid: adv.valid, localBatch: c.promptsPerStep * G, positionsKept: c.lossPositions ?? L,
      maskLengths: lengths!.map((n, i) => (c.maskTruncatedCompletions && !ended[i] ? 0 : n)),
    });
    const weights = mine(allWeights);
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
      stats = await this.#lossBackward(r, advantages, old, weights, positions, keptSteps);
      if (comm.size > 1) {
        const [loss, clipped, clippedLow, clippedHigh, kl] = await comm.allReduce(
          [stats.loss, stats.clipped, stats.clippedLow, stats.clippedHigh, stats.kl], 'sum', 'the sum of the loss');
        stats = { loss: loss!, clipped: clipped!, clippedLow: clippedLow!, clippedHigh: clippedHigh!, kl: kl! };
      }
      checkLoss(stats.loss, step + 1, c.maxLoss);
      await options.onGradients?.(this.#session);
      options.onPhase?.('optimizer');
      // The step sums the gradients over the ranks first: clipping, the non-finite count and AdamW
      // then see the global gradient, identically on every rank.
      const res = await this.#session.step(lr, c as OptimizerOptions, comm);
      gradNorm = res.gradNorm;
      nonFinite += res.nonFinite;
      if (res.skipped) skipped = 1;
    }
    const rs = rewards!.filter((x): x is number => x !== null);
    // TRL's clip ratios and KL are means over every completion token, whichever rows the loss
    // visited (zero-advantage completions are skipped unless beta > 0).
    const trained = total * Math.min(c.lossPositions ?? L, L);
    const metrics: GrpoStepMetrics = {
      step: step + 1,
      loss: stats.loss,
      reward: rs.reduce((a, b) => a + b, 0) / Math.max(1, rs.length),
      reward_std: adv.groupStd.reduce((a, b) => a + b, 0) / adv.groupStd.length,
      frac_reward_zero_std: adv.zeroStdGroups / adv.groupStd.length,
      'completions/mean_length': lengths!.reduce((a, b) => a + b, 0) / total,
      'completions/clipped_ratio': ended.filter((e) => !e).length / total,
      'clip_ratio/region_mean': stats.clipped / trained,
      'clip_ratio/low_mean': stats.clippedLow / trained,
      'clip_ratio/high_mean': stats.clippedHigh / trained,
      grad_norm: gradNorm,
      non_finite: nonFinite,
      skipped,
      learning_rate: lr,
      num_tokens: total * L,
      valid_samples: adv.valid.filter(Boolean).length,
    };
    if (c.beta > 0) metrics.kl = stats.kl / trained;
    this.stepsDone = step + 1;
    if (statErrors > 0) metrics.reward_errors = statErrors;
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

  async #lossBackward(r: Rollouts, advantages: number[], old: number[][], weights: number[][], positions: number[][], keptSteps: number): Promise<LossStats> {
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
        weights: Float32Array.from(use, (u, i) => (u ? weights[i]![t]! : 0)),
        oldLogprobs: Float32Array.from(old, (lp) => lp[t]!),
        advantages: Float32Array.from(advantages),
        refLogprobs: ref ? Float32Array.from(ref, (lp) => lp[t]!) : null,
      }, settings);
      tally(res, pairs, (k) => use[k]!);
    }
    // The rest recompute: packed (completion, t) inputs, forward and backward.
    const rest = keptSteps > 0 ? positions.map((ts) => ts.filter((t) => t >= keptSteps)) : positions;
    for (const ch of this.#chunks(r, include, rest)) {
      const res = await this.#session.policyLossBackward(
        {
          tokens: Int32Array.from(ch.tokens), seqStarts: Int32Array.from(ch.starts), rows: Int32Array.from(ch.rows), targets: Int32Array.from(ch.targets),
          weights: Float32Array.from(ch.pairs, ([i, t]) => weights[i]![t]!), numTokens: ch.tokens.length,
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
  for (const { line, value } of records)
    if (typeof (value.prompt ?? value.question) !== 'string') throw new InputError(`${file}:${line}: \`prompt\` (or \`question\`) must be a string`);
  const encoded = promptRecords(tokenizer, records.map(({ value }) => value), { chatTemplate: o.chatTemplate });
  const out: PromptRecord[] = [];
  for (const [j, { line }] of records.entries()) {
    const record = encoded[j]!;
    if (record.ids.length > o.maxPromptLength) {
      if (o.overlong === 'skip') continue;
      throw new InputError(`${file}:${line}: the prompt has ${record.ids.length} tokens; with maxCompletionLength the model allows at most ${o.maxPromptLength}`);
    }
    out.push({ ...record, source: `${file}:${line}` });
  }
  if (out.length === 0) throw new InputError(`${file}: no prompts`);
  return out;
}

export type GrpoHooks = RunHooks<GrpoStepMetrics> & {
  onStart?: (info: { totalSteps: number; startStep: number; prompts: number; numParams: number; outputDir: string }) => void;
  onPhase?: (step: number, phase: 'rollout' | 'reward' | 'loss' | 'optimizer') => void;
  /** Called between backward and each optimizer step with this rank's gradients (see TrainOptions). */
  onGradients?: (step: number, session: TrainingSession) => void | Promise<void>;
  onEval?: (m: { step: number; reward: number; count: number }) => void;
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

/** The completions log of a run (logCompletions): kept up to `step` (a resume), anything later dropped. */
async function openCompletionsLog(outputDir: string, step: number): Promise<MetricsLog> {
  const log = new MetricsLog(outputDir, COMPLETIONS_FILE);
  await log.truncateAfter(step);
  return log;
}

// One line per completion, TRL's log_completions table as JSONL.
async function appendCompletions(log: MetricsLog, l: CompletionLog): Promise<void> {
  for (let i = 0; i < l.completions.length; i++) {
    const rewards = Object.fromEntries(Object.entries(l.perFunction).map(([name, xs]) => [name, xs[i] ?? null]));
    await log.append({ step: l.step, prompt: l.prompts[i], completion: l.completions[i], reward: l.rewards[i], advantage: l.advantages[i], rewards });
  }
}

/** The file in a GRPO run directory that logCompletions appends to. */
export const COMPLETIONS_FILE = 'completions.jsonl';

/** Runs JustGRPO from a config, or resumes a run (config from its checkpoint, `overrides` on top). */
export async function runGrpo(
  args: Omit<RunArgs<GrpoConfig>, 'config'> & { config?: GrpoConfig | GrpoConfigInput },
  hooks: GrpoHooks = {},
): Promise<RunResult> {
  // A config from code gets the defaults a config file gets (parsing a parsed one changes nothing).
  const parsed = args.config && parseGrpoConfig(args.config, 'runGrpo config');
  const comm = args.communicator ?? new LocalCommunicator();
  const { last: _last, ...result } = await runTraining('grpo', parseGrpoConfig, { ...args, config: parsed }, hooks, async ({ config, baseDir, outputDir, state }, model) => {
    // Paths are stored absolute (Hub ids and data sets as they are).
    const resolved: GrpoConfig = {
      ...config,
      data: { ...config.data, train: resolveSource(baseDir, config.data.train) },
      outputDir,
      ...(config.rewardModule ? { rewardModule: path.resolve(baseDir, config.rewardModule) } : {}),
      ...(config.refModel ? { refModel: resolveSource(baseDir, config.refModel, 'model') } : {}),
      ...(config.eval ? { eval: { ...config.eval, data: resolveSource(baseDir, config.eval.data) } } : {}),
    };
    const perStep = config.promptsPerStep * config.gradientAccumulationSteps;
    if (perStep < comm.size)
      throw new ConfigError(`promptsPerStep x gradientAccumulationSteps is ${perStep}, fewer prompts per step than the ${comm.size} ranks; each rank needs at least one (a prompt's completions stay on one rank)`);
    const maxPrompt = model.config.maxSequenceLength - config.maxCompletionLength;
    if (maxPrompt < 1) throw new ConfigError(`maxCompletionLength ${config.maxCompletionLength} leaves no room for a prompt in max_sequence_length ${model.config.maxSequenceLength}`);
    const prompts = await readPrompts(resolved.data.train, model.tokenizer, { ...config.data, maxPromptLength: maxPrompt });
    const evalPrompts = resolved.eval ? (await readPrompts(resolved.eval.data, model.tokenizer, { ...config.data, maxPromptLength: maxPrompt })).slice(0, resolved.eval.limit) : [];
    const fns = resolved.rewardModule ? await loadRewardModule(resolved.rewardModule) : {};
    const named: Record<string, RewardFunction> = {};
    for (const name of config.rewardFunctions) named[name] = rewardFunction(name, fns);
    const ref = config.beta > 0
      ? (resolved.refModel ? await loadModel(resolved.refModel, { dtype: config.dtype, backend: config.backend, masterWeights: true }) : await openModel(config.model, baseDir, config.dtype, config.backend))
      : null;
    let trainer: GRPOTrainer;
    try {
      trainer = await GRPOTrainer.create(model, config, { rewardFunctions: named, refModel: ref ?? undefined, communicator: comm });
    } catch (err) {
      await ref?.dispose();
      throw err;
    }
    const completionsLog = config.logCompletions && comm.rank === 0 ? await openCompletionsLog(outputDir, state?.step ?? 0) : null;
    const promptAt = epochSampler(prompts, config.seed);
    const e = resolved.eval;
    return {
      session: trainer.session, totalSteps: config.maxSteps, examplesPerStep: perStep, resolved: resolved as unknown as Record<string, unknown>,
      started: (startStep) => hooks.onStart?.({ totalSteps: config.maxSteps, startStep, prompts: prompts.length, numParams: model.numParams, outputDir }),
      dispose: async () => {
        trainer.dispose();
        await ref?.dispose();
      },
      step: async (step) => {
        const batch = Array.from({ length: perStep }, (_, i) => promptAt(step * perStep + i));
        let logged: CompletionLog | null = null;
        const m = await trainer.step(batch, step, {
          onPhase: (p) => hooks.onPhase?.(step + 1, p), onGradients: (session) => hooks.onGradients?.(step + 1, session),
          // Every rank takes part in gathering the log (a collective); rank 0 writes it.
          ...(config.logCompletions ? { onCompletions: (l: CompletionLog) => void (logged = l) } : {}),
        });
        // The completions of the steps whose metrics are logged (the driver logs those steps).
        const done = step + 1;
        if (completionsLog && logged && (done % config.loggingSteps === 0 || done === config.maxSteps)) await appendCompletions(completionsLog, logged);
        return m;
      },
      evalDue: (step) => e !== undefined && evalPrompts.length > 0 && (step === 0 || step % e.evalSteps === 0 || step === config.maxSteps),
      // The mean reward of the eval prompts' completions from a parallel decoder; each rank decodes
      // its shard (prompt p seeded by its global index, as in one process) and the sums are added.
      evaluate: async (step) => {
        const genLength = e!.genLength ?? config.maxCompletionLength;
        const part = shard(evalPrompts.length, comm.rank, comm.size);
        const mine = evalPrompts.slice(part.start, part.end);
        let sum = 0;
        if (mine.length > 0) {
          const out = await model.generate(mine.map((p) => p.ids), {
            decoder: e!.decoder, genLength, blockLength: e!.blockLength, steps: e!.steps, threshold: e!.threshold, seed: part.start,
          });
          const s = await trainer.score(mine, out.tokens.map((t) => model.completionText(t)), out.tokens);
          sum = s.total.reduce((a: number, x) => a + (x ?? 0), 0);
        }
        const [total] = await comm.allReduce([sum], 'sum', 'the sum of the evaluation rewards');
        const reward = total! / evalPrompts.length;
        hooks.onEval?.({ step, reward, count: evalPrompts.length });
        return { 'eval/reward': reward, 'eval/count': evalPrompts.length };
      },
    };
  });
  return result;
}
