// What the commands share for models and data sets by Hub id: a download bar on a terminal.
import { downloadProgressBar } from '../hub/index.js';
import { loadModel, type LladaModel, type LoadModelOptions } from '../model.js';
import { loadTask, type EvalTask, type LoadTaskOptions } from '../eval/tasks.js';

/** The flag text of `--model` wherever a command takes one. */
export const MODEL_FLAG_HELP = 'a Hugging Face LLaDA directory, or a Hub id owner/name[@revision] (downloaded into the Hugging Face cache)';

/** `loadModel` with a download bar on stderr when it is a terminal and the output is not JSON. */
export async function loadModelArg(spec: string, options: LoadModelOptions & { json?: boolean } = {}): Promise<LladaModel> {
  const { json, ...rest } = options;
  const bar = downloadProgressBar(!json);
  try {
    return await loadModel(spec, { ...rest, hub: { ...rest.hub, onProgress: bar.onProgress } });
  } finally {
    bar.stop();
  }
}

/** `loadTask` with the same download bar. */
export async function loadTaskArg(task: string, options: LoadTaskOptions & { json?: boolean } = {}): Promise<EvalTask> {
  const { json, ...rest } = options;
  const bar = downloadProgressBar(!json);
  try {
    return await loadTask(task, { ...rest, hub: { ...rest.hub, onProgress: bar.onProgress } });
  } finally {
    bar.stop();
  }
}
