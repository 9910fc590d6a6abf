export {
  defaultDataDir,
  humanevalPrompt,
  loadTask,
  MATH_INSTRUCTION,
  mbppPrompt,
  readJsonl,
  TaskDataError,
  type BuiltinTaskName,
  type EvalItem,
  type EvalTask,
  type LoadTaskOptions,
  type TaskKind,
} from './tasks.js';
export { defaultKs, meanPassAtK, passAtK } from './passk.js';
export {
  humanevalProgram,
  runEval,
  writeEvalOutputs,
  type EvalOutputPaths,
  type EvalProgress,
  type EvalRecord,
  type EvalReport,
  type EvalResults,
  type GenerateFn,
  type GenerateOutput,
  type RunEvalOptions,
} from './harness.js';
