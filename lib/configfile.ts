// Command configs from JSON or YAML files.
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { parse as parseYaml } from 'yaml';

import { ConfigError } from './errors.js';

/** Reads a .json, .yaml or .yml file; returns the parsed value and the directory its paths are relative to. */
export async function readConfigFile(file: string): Promise<{ raw: unknown; baseDir: string }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = /\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file} does not parse: ${(err as Error).message}`, { cause: err });
  }
  return { raw, baseDir: path.dirname(path.resolve(file)) };
}
