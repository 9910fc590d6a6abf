// Config files in TRL's spelling: snake_case aliases of every field, TRL names that mean more
// (per_device_train_batch_size), both spellings at once refused, every unknown key in one error.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { ConfigError, parseGrpoConfig, parseSftConfig, parseTrainerConfig, readConfigFile } from '../../lib/index.js';
import { tmpDir } from '../helpers/tmp.js';

const tmp = tmpDir();
const minimal = { model: 'm', data: { train: 't.jsonl' } };

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe("TRL's names in a GRPO config", () => {
  it('a YAML file in TRL spelling parses to the camelCase config', async () => {
    const file = path.join(tmp, 'trl.yaml');
    writeFileSync(file, [
      'model_name_or_path: models/arith-demo',
      'data: { train: train.jsonl, on_bad_line: skip }',
      'learning_rate: 1.0e-6', 'num_generations: 8', 'per_device_train_batch_size: 32', 'max_completion_length: 64',
      'beta: 0.04', 'epsilon: 0.2', 'epsilon_high: 0.28', 'loss_type: dr_grpo', 'scale_rewards: batch',
      'mask_truncated_completions: true', 'log_completions: true', 'gradient_accumulation_steps: 2', 'max_grad_norm: 0.5',
      'save_steps: 10', 'logging_steps: 5', 'seed: 42', 'num_iterations: 2', 'lr_scheduler_type: cosine', 'warmup_steps: 3',
      'output_dir: runs/x', 'max_steps: 7', 'reward_weights: [1.0]', 'eval: { data: h.jsonl, eval_steps: 3 }',
    ].join('\n'));
    const { raw } = await readConfigFile(file);
    const c = parseGrpoConfig(raw, file);
    expect(c).toMatchObject({
      model: 'models/arith-demo', data: { train: 'train.jsonl', onBadLine: 'skip' },
      learningRate: 1e-6, numGenerations: 8, promptsPerStep: 4, maxCompletionLength: 64, beta: 0.04, epsilon: 0.2, epsilonHigh: 0.28,
      lossType: 'dr_grpo', scaleRewards: 'batch', maskTruncatedCompletions: true, logCompletions: true, gradientAccumulationSteps: 2,
      maxGradNorm: 0.5, saveSteps: 10, loggingSteps: 5, seed: 42, numIterations: 2, lrSchedulerType: 'cosine', warmupSteps: 3,
      outputDir: 'runs/x', maxSteps: 7, rewardWeights: [1], eval: { data: 'h.jsonl', evalSteps: 3 },
    });
  });

  it('per_device_train_batch_size counts completions: a multiple of num_generations, else an error', () => {
    expect(parseGrpoConfig({ ...minimal, per_device_train_batch_size: 64 }, 'c.json').promptsPerStep).toBe(4); // default G = 16
    expect(configError(() => parseGrpoConfig({ ...minimal, num_generations: 6, per_device_train_batch_size: 16 }, 'c.json')))
      .toMatch(/^c\.json: `per_device_train_batch_size` counts completions and must be a positive multiple of numGenerations \(6\)/);
  });

  it('both spellings of one field are an error', () => {
    expect(configError(() => parseGrpoConfig({ ...minimal, learningRate: 1e-6, learning_rate: 1e-5 }, 'c.json')))
      .toBe('c.json: `learningRate` and `learning_rate` are the same field; give one');
    expect(configError(() => parseGrpoConfig({ ...minimal, promptsPerStep: 2, per_device_train_batch_size: 32 }, 'c.json')))
      .toMatch(/`promptsPerStep` and `per_device_train_batch_size` both set `promptsPerStep`/);
  });

  it('every unknown key is reported at once, with the file and a did-you-mean in both spellings', () => {
    const msg = configError(() => parseGrpoConfig({ ...minimal, learnig_rate: 1, numGeneration: 4, data: { train: 't', onbadline: 'skip' }, zzz: 1 }, 'run.yaml'));
    expect(msg).toMatch(/^run\.yaml: /);
    expect(msg).toContain('unknown key `learnig_rate` (did you mean `learningRate` / `learning_rate`?)');
    expect(msg).toContain('unknown key `numGeneration` (did you mean `numGenerations` / `num_generations`?)');
    expect(msg).toContain('unknown key `data.onbadline` (did you mean `onBadLine` / `on_bad_line`?)');
    expect(msg).toContain('unknown key `zzz`');
    expect(msg).not.toContain('`zzz` (did you mean');
  });

  it("TRL names without a meaning here say why; gradient_checkpointing is checkpointActivations; bf16 is the dtype", () => {
    expect(configError(() => parseGrpoConfig({ ...minimal, fp16: true }, 'c'))).toMatch(/^c: unknown key `fp16` \(TRL's; not used here: the compute dtype is fp32 or bf16/);
    expect(parseGrpoConfig({ ...minimal, bf16: true }, 'c').dtype).toBe('bf16');
    expect(parseGrpoConfig({ ...minimal, bf16: false }, 'c').dtype).toBe('fp32');
    expect(parseSftConfig({ ...minimal, bf16: true }, 'c').dtype).toBe('bf16');
    expect(parseGrpoConfig(minimal, 'c').dtype).toBe('fp32');
    expect(configError(() => parseGrpoConfig({ ...minimal, bf16: 'yes' }, 'c'))).toMatch(/`bf16` must be true or false/);
    expect(configError(() => parseGrpoConfig({ ...minimal, bf16: true, dtype: 'bf16' }, 'c'))).toMatch(/`bf16`.*`dtype`|`dtype`.*`bf16`/);
    expect(parseGrpoConfig({ ...minimal, gradient_checkpointing: true }, 'c').checkpointActivations).toBe(true);
    expect(parseSftConfig({ ...minimal, gradient_checkpointing: true }, 'c').checkpointActivations).toBe(true);
  });

  it("lossType takes TRL's values and JustGRPO's, 'justgrpo' by default", () => {
    expect(parseGrpoConfig(minimal, 'c').lossType).toBe('justgrpo');
    for (const t of ['justgrpo', 'grpo', 'bnpo', 'dr_grpo', 'dapo']) expect(parseGrpoConfig({ ...minimal, loss_type: t }, 'c').lossType).toBe(t);
    expect(configError(() => parseGrpoConfig({ ...minimal, lossType: 'ppo' }, 'c'))).toMatch(/`lossType`/);
  });

  it('a trainer config from code needs no model or data and gets the CLI defaults', () => {
    const c = parseTrainerConfig({ numGenerations: 4 }, 'code');
    expect(c).toMatchObject({ numGenerations: 4, seed: 0, maxCompletionLength: 256, learningRate: 5e-6, lossType: 'justgrpo' });
    expect(c.model).toBeUndefined();
  });
});

describe("TRL's names in an SFT config", () => {
  it('per_device_train_batch_size and num_train_epochs', () => {
    const c = parseSftConfig({ ...minimal, per_device_train_batch_size: 4, num_train_epochs: 2, learning_rate: 1e-5, weight_decay: 0.1 }, 's.json');
    expect(c).toMatchObject({ batchSize: 4, numEpochs: 2, learningRate: 1e-5, weightDecay: 0.1 });
  });

  it('a field in TRL spelling is named that way in errors', () => {
    const msg = configError(() => parseGrpoConfig({ ...minimal, learning_rate: 'fast', reward_weights: [1, 'x'] }, 'c.yaml'));
    expect(msg).toMatch(/^c\.yaml: /);
    expect(msg).toMatch(/`learning_rate`: Invalid input/);
    expect(msg).toMatch(/`reward_weights\.1`: Invalid input/);
  });

  it('type errors name every field at fault', () => {
    const msg = configError(() => parseSftConfig({ ...minimal, batchSize: 'eight', seed: -1 }, 's.json'));
    expect(msg).toMatch(/^s\.json: `batchSize`: .*; `seed`: /);
  });
});

describe('zeroStage (optimizer-state sharding)', () => {
  it('defaults to 0; takes 0 or 1, as zeroStage or zero_stage, in both configs', () => {
    expect(parseSftConfig(minimal, 'sft.yaml').zeroStage).toBe(0);
    expect(parseGrpoConfig(minimal, 'grpo.yaml').zeroStage).toBe(0);
    expect(parseSftConfig({ ...minimal, zero_stage: 1 }, 'sft.yaml').zeroStage).toBe(1);
    expect(parseGrpoConfig({ ...minimal, zeroStage: 1 }, 'grpo.yaml').zeroStage).toBe(1);
    expect(parseTrainerConfig({ zero_stage: 1 }, 'GRPOTrainer.create config').zeroStage).toBe(1);
  });

  it('another stage is one error naming the file and the field', () => {
    expect(configError(() => parseSftConfig({ ...minimal, zeroStage: 2 }, 'sft.yaml'))).toMatch(/sft\.yaml: `zeroStage`: Invalid option: expected one of 0\|1/);
    expect(configError(() => parseGrpoConfig({ ...minimal, zero_stage: 3 }, 'grpo.yaml'))).toMatch(/grpo\.yaml.*zero_?[sS]tage/s);
  });
});
