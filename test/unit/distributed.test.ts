// The pure parts of data parallelism: how work is split, how slices are put back together, how
// ranks agree, how a launcher is recognised; on an in-process group of ranks (no MPI needed).
import { describe, expect, it } from 'vitest';

import { withoutNproc } from '../../lib/cli/distributed.js';
import { DistributedError } from '../../lib/errors.js';
import {
  agree, allGatherJson, anyRank, gather, launchEnvironment, LocalCommunicator, placement, shard, type Communicator,
} from '../../lib/train/distributed.js';

/** `size` communicators whose collectives meet in memory: each call resolves once every rank made it. */
function group(size: number): Communicator[] {
  let pending: { values: Float64Array; op: 'sum' | 'max'; resolve: (x: Float64Array) => void }[] = [];
  let json: unknown[] = [];
  const reduce = (values: ArrayLike<number>, op: 'sum' | 'max') => new Promise<Float64Array>((resolve) => {
    pending.push({ values: Float64Array.from(values), op, resolve });
    if (pending.length < size) return;
    const out = Float64Array.from(pending[0]!.values);
    for (const p of pending.slice(1)) p.values.forEach((x, i) => (out[i] = op === 'sum' ? out[i]! + x : Math.max(out[i]!, x)));
    const done = pending;
    pending = [];
    for (const p of done) p.resolve(Float64Array.from(out));
  });
  return Array.from({ length: size }, (_, rank): Communicator => ({
    rank, size, timeoutSeconds: 1, library: 'test', native: null,
    allReduce: (v, op) => reduce(v, op),
    broadcast: async <T>(value: T, root: number) => {
      if (rank === root) json = [value];
      await reduce([0], 'sum');
      return json[0] as T;
    },
    barrier: async () => void (await reduce([0], 'sum')),
    abort: () => {
      throw new Error('abort');
    },
    finalize: () => {},
  }));
}

describe('shard', () => {
  it('splits n items into contiguous blocks covering each item once, the first n % size one longer', () => {
    for (const [n, size] of [[3, 2], [7, 3], [2, 4], [64, 8]] as const) {
      const parts = Array.from({ length: size }, (_, r) => shard(n, r, size));
      expect(parts[0]!.start).toBe(0);
      parts.forEach((p, r) => r > 0 && expect(p.start).toBe(parts[r - 1]!.end));
      expect(parts.at(-1)!.end).toBe(n);
      const lengths = parts.map((p) => p.end - p.start);
      expect(Math.max(...lengths) - Math.min(...lengths)).toBeLessThanOrEqual(1);
    }
    expect(shard(3, 0, 2)).toEqual({ start: 0, end: 2 });
    expect(shard(3, 1, 2)).toEqual({ start: 2, end: 3 });
  });
});

describe('collectives on a group of ranks', () => {
  it('gather puts every rank\'s slices back in global order, null, NaN and infinities included', async () => {
    const ranks = group(2);
    const out = await Promise.all([
      gather(ranks[0]!, [[1, null], [10, NaN]], 0, 3, 'test'),
      gather(ranks[1]!, [[-0.5], [Infinity]], 2, 3, 'test'),
    ]);
    for (const [a, b] of out) {
      expect(a).toEqual([1, null, -0.5]);
      expect(b).toEqual([10, NaN, Infinity]);
    }
  });

  it('placement gives each rank its offset in rank order and the total', async () => {
    const ranks = group(3);
    const out = await Promise.all([8, 4, 4].map((n, r) => placement(ranks[r]!, n, 'test')));
    expect(out).toEqual([{ offset: 0, total: 16 }, { offset: 8, total: 16 }, { offset: 12, total: 16 }]);
  });

  it('anyRank: one rank asking to stop stops them all at the same point', async () => {
    const ranks = group(2);
    expect(await Promise.all([anyRank(ranks[0]!, false, 't'), anyRank(ranks[1]!, true, 't')])).toEqual([true, true]);
    expect(await Promise.all([anyRank(ranks[0]!, false, 't'), anyRank(ranks[1]!, false, 't')])).toEqual([false, false]);
  });

  it('agree: the failing rank rethrows its error, the others name it', async () => {
    const ranks = group(3);
    const own = new Error('bad config');
    const out = await Promise.allSettled([agree(ranks[0]!, undefined, 'to start the run'), agree(ranks[1]!, own, 'to start the run'), agree(ranks[2]!, undefined, 'to start the run')]);
    expect(out[1]).toEqual({ status: 'rejected', reason: own });
    for (const r of [out[0]!, out[2]!]) {
      expect(r.status).toBe('rejected');
      const reason = (r as PromiseRejectedResult).reason as Error;
      expect(reason).toBeInstanceOf(DistributedError);
      expect(reason.message).toMatch(/^Rank 1 failed to start the run \(see its error\); rank [02] stops too$/);
    }
    await expect(Promise.all(ranks.map((c) => agree(c, undefined, 'x')))).resolves.toBeDefined();
  });

  it('allGatherJson returns every rank\'s value in rank order', async () => {
    const ranks = group(2);
    const out = await Promise.all(ranks.map((c) => allGatherJson(c, { rank: c.rank, texts: [`t${c.rank}`] }, 'test')));
    for (const o of out) expect(o).toEqual([{ rank: 0, texts: ['t0'] }, { rank: 1, texts: ['t1'] }]);
  });

  it('one process: every collective returns its input, with no MPI', async () => {
    const c = new LocalCommunicator();
    expect(await gather(c, [[1, 2]], 0, 2, 't')).toEqual([[1, 2]]);
    expect(await placement(c, 5, 't')).toEqual({ offset: 0, total: 5 });
    expect(Array.from(await c.allReduce([1.5], 'sum', 't'))).toEqual([1.5]);
  });
});

describe('launchers', () => {
  it("recognises Open MPI's, MPICH's and PMIx's rank variables, and nothing else (not a Slurm allocation's)", () => {
    expect(launchEnvironment({ OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '4' })).toEqual({ rank: 1, size: 4, launcher: 'Open MPI' });
    expect(launchEnvironment({ PMI_RANK: '0', PMI_SIZE: '2' })).toEqual({ rank: 0, size: 2, launcher: 'MPICH' });
    expect(launchEnvironment({ PMIX_RANK: '3', PMIX_SIZE: '8' })).toEqual({ rank: 3, size: 8, launcher: 'PMIx' });
    expect(launchEnvironment({ SLURM_PROCID: '0', SLURM_NTASKS: '16' })).toBeNull();
    expect(launchEnvironment({})).toBeNull();
    expect(launchEnvironment({ PMI_RANK: '2', PMI_SIZE: '2' })).toBeNull();
  });

  it('--nproc is taken out of the command the ranks run', () => {
    expect(withoutNproc(['x.js', 'train', '--nproc', '2', '--config', 'c.json'])).toEqual(['x.js', 'train', '--config', 'c.json']);
    expect(withoutNproc(['x.js', 'sft', '--nproc=4', '--json'])).toEqual(['x.js', 'sft', '--json']);
  });
});
