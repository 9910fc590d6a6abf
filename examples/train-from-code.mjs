// JustGRPO from code: a trainer on a loaded model, prompts as dataset rows, a reward function, a
// few steps; then the same as a whole run (checkpoints, metrics.jsonl) with runGrpo. Runs as is
// with the shipped tiny model (node examples/train-from-code.mjs).
import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { GRPOTrainer, loadModel, rewards, runGrpo } from 'justgrpo';

const modelDir = fileURLToPath(new URL('../models/arith-demo', import.meta.url));
const dataFile = fileURLToPath(new URL('../models/arith-demo/data/train.jsonl', import.meta.url));
const rows = readFileSync(dataFile, 'utf8').trim().split('\n').slice(0, 8).map((line) => JSON.parse(line)); // { question, answer }

// A reward function gets the prompts, completions, completion ids and every dataset column, one
// entry per completion, and returns one score per completion (null: cannot score).
const correct = ({ completions, answer }) => completions.map((c, i) => rewards.gsm8k(c, answer[i]));

const model = await loadModel(modelDir);
// Any GrpoConfig fields; the rest take the CLI's defaults (JustGRPO's: lossType 'justgrpo', epsilon 0.2, ...).
const trainer = await GRPOTrainer.create(model, {
  numGenerations: 4, maxCompletionLength: 24, learningRate: 5e-5, lossPositions: 6,
}, { rewardFunctions: { correct } });
for (let i = 0; i < 2; i++) {
  // step(prompts) takes strings, dataset rows or PromptRecords; metrics.step is the step just done.
  const m = await trainer.step(rows.slice(4 * i, 4 * i + 4));
  console.log(`step ${m.step}: reward ${m.reward.toFixed(3)}, loss ${m.loss.toExponential(2)}, grad norm ${m.grad_norm.toFixed(3)}`);
}
trainer.dispose();
await model.dispose();

// A whole run: the config `justgrpo train --config` reads (relative paths against baseDir).
const outputDir = await mkdtemp(path.join(os.tmpdir(), 'justgrpo-run-'));
const run = await runGrpo({
  config: {
    model: modelDir, data: { train: dataFile }, rewardFunctions: ['gsm8k'],
    numGenerations: 4, promptsPerStep: 2, maxCompletionLength: 24, lossPositions: 6, maxSteps: 2, saveSteps: 2, outputDir,
  },
});
console.log(`runGrpo: ${run.steps} steps; checkpoint ${run.checkpoint}; metrics ${path.join(run.outputDir, 'metrics.jsonl')}`);
