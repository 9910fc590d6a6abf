// Crash safety in npm test: `justgrpo sft` and `justgrpo train` killed with SIGKILL (at random
// moments and while a checkpoint is being written), resumed with --resume, and compared with an
// uninterrupted run: complete checkpoints after every kill, bit-identical final weights and
// optimizer state, every metrics step exactly once. `npm run test:crash` runs more kills.
import { describe, expect, it } from 'vitest';

// @ts-expect-error: a plain ESM script shared with `npm run test:crash`, without type declarations
import { crashTest } from '../../scripts/crash-test.mjs';

type CrashResult = { kind: string; kills: number; duringWrite: number; starts: number; steps: number };

describe('SIGKILL and --resume', () => {
  for (const kind of ['sft', 'grpo'] as const) {
    it(`${kind === 'sft' ? 'justgrpo sft' : 'justgrpo train'}: killed twice, resumed, equals the uninterrupted run`, async () => {
      const r = (await crashTest(kind, { kills: 2, seed: kind === 'sft' ? 11 : 12 })) as CrashResult;
      // crashTest throws on any broken invariant; a kill can miss when the run finishes first.
      expect(r.kills).toBeGreaterThanOrEqual(1);
      expect(r.starts).toBe(r.kills + 1);
    }, 240_000);
  }
});
