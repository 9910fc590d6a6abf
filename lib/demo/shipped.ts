// The model and data the package ships for `justgrpo demo`: a tiny LLaDA-format model trained with
// `justgrpo sft` on the synthetic arithmetic task (models/arith-demo), its train / held-out splits,
// and the recipe that reproduces it (models/arith-demo/recipe).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { CheckpointError } from '../errors.js';
import { loadTask, type EvalItem } from '../eval/tasks.js';

// dist/demo/shipped.js and lib/demo/shipped.ts both sit two levels below the package root.
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The shipped base model's directory (a Hugging Face LLaDA directory). */
export const DEMO_MODEL_DIR = path.join(ROOT, 'models', 'arith-demo');
/** Its data: `train.jsonl` (SFT and JustGRPO prompts) and `heldout.jsonl` (evaluation), GSM8K columns. */
export const DEMO_DATA_DIR = path.join(DEMO_MODEL_DIR, 'data');
/** The config and command that reproduce the model bit-exactly. */
export const DEMO_RECIPE_DIR = path.join(DEMO_MODEL_DIR, 'recipe');

/** The sizes and seed the shipped splits were generated with (see lib/tasks/arith.ts). */
export const DEMO_SPLITS = { train: 20000, heldout: 500, seed: 0 } as const;

/** Completion length the demo decodes and trains with: the longest worked solution plus end-of-turn. */
export const DEMO_GEN_LENGTH = 24;

/** Throws a clear error when the package was installed without its demo model. */
export function checkDemoModel(): void {
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'data/train.jsonl', 'data/heldout.jsonl'])
    if (!existsSync(path.join(DEMO_MODEL_DIR, f)))
      throw new CheckpointError(`The shipped demo model is incomplete: ${path.join(DEMO_MODEL_DIR, f)} is missing (reinstall justgrpo, or rebuild it with the command in ${DEMO_RECIPE_DIR}/README.md)`);
}

/**
 * The items of `task`: `arith` (the shipped held-out split), `arith-train`, or anything
 * `loadTask` takes (gsm8k, math500, a .jsonl file). `chatTemplate` is false for the arithmetic task
 * (its model reads raw questions, which keeps sequences short) and undefined (the tokenizer's
 * default) otherwise.
 */
export async function taskItems(task: string, options: { dataDir?: string } = {}): Promise<{ name: string; items: EvalItem[]; chatTemplate?: boolean }> {
  if (task === 'arith' || task === 'arith-train') {
    const file = path.join(DEMO_DATA_DIR, task === 'arith' ? 'heldout.jsonl' : 'train.jsonl');
    if (!existsSync(file)) throw new CheckpointError(`The shipped task data is missing: ${file} (reinstall justgrpo)`);
    const t = await loadTask(file, { kind: 'gsm8k' });
    return { name: task, items: t.items, chatTemplate: false };
  }
  const t = await loadTask(task, { dataDir: options.dataDir });
  return { name: t.name, items: t.items };
}
