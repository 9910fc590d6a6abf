// The training configs' `backend`: where runSft / runGrpo load the model ('cuda' trains on the GPU).
import { describe, expect, it } from 'vitest';

import { parseGrpoConfig, parseSftConfig } from '../../lib/index.js';

const minimal = { model: 'm', data: { train: 't.jsonl' } };

describe('training configs: backend', () => {
  it("is 'cpu' by default, 'cuda' on request, and anything else is named in the error", () => {
    for (const parse of [parseGrpoConfig, parseSftConfig]) {
      expect(parse(minimal, 'c.json').backend).toBe('cpu');
      expect(parse({ ...minimal, backend: 'cuda' }, 'c.json').backend).toBe('cuda');
      expect(() => parse({ ...minimal, backend: 'tpu' }, 'cfg.yaml')).toThrow(/cfg\.yaml: `backend`/);
    }
  });
});
