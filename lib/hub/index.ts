// Models and data sets by Hub id, through the Hugging Face cache shared with Python.
export { resolveModelDir, OPTIONAL_MODEL_FILES, type ResolveModelOptions } from './model.js';
export { hfUrl, loadHubRows, matchSplit, parseHfUrl, readParquetRows, resolveDatasetSplit, PARQUET_BRANCH, type HubDatasetRef } from './dataset.js';
export { hubSettings, isHubId, parseHubId, tokenFile, type DownloadProgress, type HubOptions, type RepoRef, type RepoType } from './settings.js';
export { downloadProgressBar } from './progress.js';
