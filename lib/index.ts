export { loadModel, LladaModel } from './model.js';
export { atomicDirectory } from './fsutil.js';
export { loadHubRows, resolveDatasetSplit, resolveModelDir, type DownloadProgress, type HubDatasetRef, type HubOptions, type ResolveModelOptions } from './hub/index.js';
export type { Backend, CallOptions, ComputeDType, CudaDType, LoadModelOptions, SaveOptions, RandomModelOptions } from './model.js';
export type { NativeMemoryBytes as MemoryBytes } from './native/binding.js';
export { parseModelConfig, toRawConfig } from './config.js';
export type { ModelConfig } from './config.js';
export { Tokenizer } from './tokenizer.js';
export type { ChatMessage, ChatTemplateOptions } from './tokenizer.js';
export { readSafetensorsHeader, buildSafetensorsHeader } from './safetensors.js';
export type { DType, SafetensorsHeader, TensorEntry } from './safetensors.js';
export { GENERATE_DEFAULTS } from './generate.js';
export type { Decoder, ConfidenceMeasure, GenerateOptions, GenerateResult } from './generate.js';
export { createTinyModel, TINY_SIZE } from './init.js';
export { charModelConfig, charTokenizerFiles, CHAR_TOKENIZER_IDS, CHAR_VOCAB_SIZE } from './chartokenizer.js';
export * from './errors.js';
export { nativeInfo } from './native/binding.js';
export type { NativeInfo } from './native/binding.js';
export * from './rewards/index.js';
export * from './eval/index.js';
// Training from code: the trainers, their configs (the schemas `justgrpo sft` / `train` validate
// files with, defaults included), reward functions and prompts.
export { GRPOTrainer, runGrpo, promptRecords, BUILTIN_REWARDS, COMPLETIONS_FILE } from './train/grpo.js';
export type {
  CompletionLog, GrpoHooks, GrpoStepMetrics, PromptInput, PromptRecord, PromptRecordOptions, RewardArgs, RewardFunction, Rollouts, TrainOptions,
} from './train/grpo.js';
export { grpoConfigSchema, parseGrpoConfig, parseTrainerConfig } from './train/grpo-config.js';
export type { GrpoConfig, GrpoConfigInput, GrpoTrainerConfig, GrpoTrainerConfigInput } from './train/grpo-config.js';
export { runSft, parseSftConfig, sftConfigSchema } from './train/sft.js';
export type { SftConfig, SftConfigInput, SftHooks, SftResult, SftStepMetrics } from './train/sft.js';
export { TrainingSession } from './train/session.js';
// Data parallelism: pass `communicator: openCommunicator()` to runGrpo / runSft / GRPOTrainer.create.
export { openCommunicator, launchEnvironment, shard, LocalCommunicator, MpiCommunicator } from './train/distributed.js';
export type { Communicator, DistributedMode } from './train/distributed.js';
export type { OptimizerOptions, StepResult } from './train/session.js';
export { LOSS_TYPES, groupAdvantages, tokenWeights } from './train/advantages.js';
export type { LossType, ScaleRewards } from './train/advantages.js';
export { readConfigFile } from './configfile.js';
export type { RunResult } from './train/run.js';
// Tokenizers and chat templates from model directories run in a bounded child process.
export { setSandboxLimits as setTokenizerLimits } from './tokenizer-sandbox.js';
export type { SandboxLimits as TokenizerLimits } from './tokenizer-sandbox.js';
