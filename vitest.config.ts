import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

const root = path.dirname(fileURLToPath(import.meta.url));

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Native kernels use both cores; running test files in parallel only oversubscribes them.
    fileParallelism: false,
    env: {
      // The benchmarks default to the Hub; tests read the project's local copies (or skip without them).
      JUSTGRPO_DATA: process.env.JUSTGRPO_DATA ?? path.resolve(root, '..', 'shared', 'data'),
      // Nothing in the tests may reach the internet: the Hub tests turn this off against their own server.
      HF_HUB_OFFLINE: '1',
      HF_ENDPOINT: 'http://127.0.0.1:9',
    },
  },
});
