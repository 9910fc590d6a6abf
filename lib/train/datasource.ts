// The data a training config names: a JSONL file or a data set on the Hub.
import { z } from 'zod';

import { hfUrl } from '../hub/index.js';

/**
 * A JSONL file, a Hub data set `hf://datasets/owner/name[@revision][/config[/split]]`, or
 * `{ hub: 'owner/name', config?, split?, revision? }` (read as that URL, so the parsed config holds a string).
 */
export const dataSourceSchema = z.union([
  z.string(),
  z.strictObject({ hub: z.string(), config: z.string().optional(), split: z.string().optional(), revision: z.string().optional() }).transform(hfUrl),
]);
