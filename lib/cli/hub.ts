// What the commands share for models and data sets by Hub id: a download bar on a terminal.
import { downloadProgressBar } from '../hub/index.js';
import { loadModel, type LladaModel, type LoadModelOptions } from '../model.js';
import { loadTask, type EvalTask, type LoadTaskOptions } from '../eval/tasks.js';

/** The flag text of `--model` wherever a command takes one. */
export const MODEL_FLAG_HELP = 'a Hugging Face LLaDA directory, or a Hub id owner/name[@revision] (downloaded into the Hugging Face cache)';

type HubLoadOptions = { hub?: { onProgress?: unknown } & Record<string, unknown>; json?: boolean };

/** `load(spec, options)` with a download bar on stderr when it is a terminal and the output is not JSON. */
async function withDownloadBar<O extends HubLoadOptions, T>(load: (spec: string, o: Omit<O, 'json'>) => Promise<T>, spec: string, options: O): Promise<T> {
  const { json, ...rest } = options;
  const bar = downloadProgressBar(!json);
  try {
    return await load(spec, { ...rest, hub: { ...rest.hub, onProgress: bar.onProgress } } as Omit<O, 'json'>);
  } finally {
    bar.stop();
  }
}

/** `loadModel` with the download bar. */
export function loadModelArg(spec: string, options: LoadModelOptions & { json?: boolean } = {}): Promise<LladaModel> {
  return withDownloadBar(loadModel, spec, options);
}

/** `loadTask` with the same download bar. */
export function loadTaskArg(task: string, options: LoadTaskOptions & { json?: boolean } = {}): Promise<EvalTask> {
  return withDownloadBar(loadTask, task, options);
}
