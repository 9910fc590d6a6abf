// Data parallelism: the ranks of a job and the collectives the training loops need. One rank per
// process, launched by mpirun (Open MPI or MPICH); MPI itself is the system's libmpi, opened at
// run time by the engine (native/common/comm.cpp), so nothing here depends on MPI being installed
// until a run asks for more than one rank.
//
// The contract that makes a run the same whatever the rank count: every rank holds the whole
// step's inputs (prompt list, example list) and the same weights; it works on its contiguous shard
// (`shard`); per-item results are put back into global arrays (`gather`), so every rank computes
// advantages, loss normalisers and metrics from the same global numbers a single process would;
// gradients are summed (TrainingSession.step with the communicator) before clipping and AdamW, which then run
// identically everywhere.
import { DistributedError, EngineError, InputError } from '../errors.js';
import { createNativeCommunicator, type NativeCommunicator } from '../native/binding.js';

/** How a run finds its ranks. */
export type DistributedMode = 'auto' | 'mpi' | 'none';

/** A group of ranks and their collectives; `LocalCommunicator` is the one-process case. */
export interface Communicator {
  readonly rank: number;
  readonly size: number;
  /** Seconds a collective waits for the other ranks before the job is declared broken. */
  readonly timeoutSeconds: number;
  /** What runs the collectives ("Open MPI v4.1.4 (libmpi.so.40)", "local"). */
  readonly library: string;
  /** Element-wise sum (or max) over ranks; every rank gets the result. `what` names it in errors. */
  allReduce(values: ArrayLike<number>, op: 'sum' | 'max', what: string): Promise<Float64Array>;
  /** Root's JSON-serialisable value on every rank. */
  broadcast<T>(value: T, root: number, what: string): Promise<T>;
  barrier(what: string): Promise<void>;
  /** The native communicator, for calls that run collectives inside the engine (null: one process). */
  readonly native: NativeCommunicator | null;
  /** Ends every rank of the job now (MPI_Abort); one process: exits. */
  abort(code: number): never;
  /** Shuts MPI down once every rank is done (no-op for one process). */
  finalize(): void;
}

/**
 * Rank and size from the launcher's environment (Open MPI, MPICH/Hydra, PMIx), or null outside one.
 * Slurm's own variables are not read: a batch script's SLURM_NTASKS describes the allocation, not
 * this process (under srun, `--distributed mpi` asks MPI itself).
 */
export function launchEnvironment(env: NodeJS.ProcessEnv = process.env): { rank: number; size: number; launcher: string } | null {
  const pairs: [string, string, string][] = [
    ['OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'Open MPI'],
    ['PMI_RANK', 'PMI_SIZE', 'MPICH'],
    ['PMIX_RANK', 'PMIX_SIZE', 'PMIx'],
  ];
  for (const [r, s, launcher] of pairs) {
    if (env[r] === undefined || env[s] === undefined) continue;
    const rank = Number(env[r]), size = Number(env[s]);
    if (Number.isInteger(rank) && Number.isInteger(size) && size >= 1 && rank >= 0 && rank < size) return { rank, size, launcher };
  }
  return null;
}

/**
 * This process's rank among the ranks on its machine, from the launcher's environment (Open MPI:
 * OMPI_COMM_WORLD_LOCAL_RANK; MPICH/Hydra, Intel MPI: MPI_LOCALRANKID; PMIx: PMIX_LOCAL_RANK), or
 * null outside one.
 */
export function localRank(env: NodeJS.ProcessEnv = process.env): number | null {
  for (const key of ['OMPI_COMM_WORLD_LOCAL_RANK', 'MPI_LOCALRANKID', 'PMIX_LOCAL_RANK']) {
    const v = env[key];
    if (v === undefined || v === '') continue;
    const r = Number(v);
    if (Number.isInteger(r) && r >= 0) return r;
  }
  return null;
}

/**
 * The CUDA device a rank uses when none is named: its local rank modulo the `deviceCount` GPUs it
 * sees (one rank per GPU under `mpirun -np <GPUs>`; with CUDA_VISIBLE_DEVICES narrowed to one GPU
 * per rank, that one), else 0.
 */
export function defaultCudaDevice(deviceCount: number, env: NodeJS.ProcessEnv = process.env): number {
  const local = localRank(env);
  return local === null || deviceCount < 1 ? 0 : local % deviceCount;
}

/** The default collective time-out: JUSTGRPO_COLLECTIVE_TIMEOUT seconds, else 600. */
export function defaultTimeoutSeconds(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.JUSTGRPO_COLLECTIVE_TIMEOUT;
  if (raw === undefined || raw === '') return 600;
  const t = Number(raw);
  if (!(t > 0)) throw new InputError(`Expected a number of seconds > 0 for \`JUSTGRPO_COLLECTIVE_TIMEOUT\` but received ${JSON.stringify(raw)}`);
  return t;
}

/** One process: every collective returns its input. */
export class LocalCommunicator implements Communicator {
  readonly rank = 0;
  readonly size = 1;
  readonly timeoutSeconds = Infinity;
  readonly library = 'local';
  readonly native = null;
  async allReduce(values: ArrayLike<number>): Promise<Float64Array> {
    return Float64Array.from(values);
  }
  async broadcast<T>(value: T): Promise<T> {
    return value;
  }
  async barrier(): Promise<void> {}
  abort(code: number): never {
    process.exit(code);
  }
  finalize(): void {}
}

/** MPI_COMM_WORLD through the engine. */
export class MpiCommunicator implements Communicator {
  readonly native: NativeCommunicator;
  readonly timeoutSeconds: number;
  static #world: MpiCommunicator | null = null;

  private constructor(native: NativeCommunicator, timeoutSeconds: number) {
    this.native = native;
    this.timeoutSeconds = timeoutSeconds;
  }

  /** The world communicator (MPI starts on the first call, once per process). */
  static world(options: { timeoutSeconds?: number } = {}): MpiCommunicator {
    if (!MpiCommunicator.#world) {
      let native: NativeCommunicator;
      try {
        native = createNativeCommunicator();
      } catch (err) {
        throw new DistributedError(`Data parallelism needs MPI, which could not be started: ${(err as Error).message.replace(/^Communicator: /, '')}`, { cause: err });
      }
      MpiCommunicator.#world = new MpiCommunicator(native, options.timeoutSeconds ?? defaultTimeoutSeconds());
    }
    return MpiCommunicator.#world;
  }

  get rank(): number {
    return this.native.rank;
  }
  get size(): number {
    return this.native.size;
  }
  get library(): string {
    return this.native.library;
  }

  async allReduce(values: ArrayLike<number>, op: 'sum' | 'max', what: string): Promise<Float64Array> {
    return this.#run(() => this.native.allReduce(Float64Array.from(values), op, this.timeoutSeconds, what));
  }

  async broadcast<T>(value: T, root: number, what: string): Promise<T> {
    const bytes = this.rank === root ? new TextEncoder().encode(JSON.stringify(value) ?? 'null') : new Uint8Array(0);
    const [n] = await this.#run(() => this.native.allReduce(Float64Array.of(this.rank === root ? bytes.length : 0), 'sum', this.timeoutSeconds, `${what} (its length)`));
    const buf = this.rank === root ? bytes : new Uint8Array(n!);
    const out = await this.#run(() => this.native.broadcast(buf, root, this.timeoutSeconds, what));
    return JSON.parse(new TextDecoder().decode(out)) as T;
  }

  async barrier(what: string): Promise<void> {
    await this.#run(() => this.native.barrier(this.timeoutSeconds, what));
  }

  abort(code: number): never {
    return this.native.abort(code);
  }

  finalize(): void {
    this.native.finalize();
  }

  async #run<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      if (err instanceof EngineError) throw new DistributedError(err.message.replace(/^(allReduce|broadcast|barrier): /, ''), { cause: err });
      throw err;
    }
  }
}

/**
 * The communicator a run uses. 'auto' (the default): MPI when the process was started by a
 * launcher with more than one rank, else one process. 'mpi': MPI always (a one-rank MPI job too).
 * 'none': one process, even under a launcher (then every rank would run the whole job: refused).
 */
export function openCommunicator(mode: DistributedMode = 'auto', options: { timeoutSeconds?: number } = {}): Communicator {
  const launch = launchEnvironment();
  if (mode === 'none') {
    if (launch && launch.size > 1)
      throw new DistributedError(`This process is rank ${launch.rank} of ${launch.size} (${launch.launcher}), but data parallelism is off; every rank would train the whole run alone and write to the same directory`);
    return new LocalCommunicator();
  }
  if (mode === 'auto' && !(launch && launch.size > 1)) return new LocalCommunicator();
  const comm = MpiCommunicator.world(options);
  // An MPI that does not belong to the launcher starts alone (a "singleton"): every rank would then
  // train the whole run by itself.
  if (launch && comm.size !== launch.size)
    throw new DistributedError(`${launch.launcher} started ${launch.size} ranks, but ${comm.library} sees ${comm.size}: the MPI library does not match the launcher (use the mpirun of the same MPI, or set JUSTGRPO_MPI_LIBRARY to its libmpi.so)`);
  return comm;
}

/** Items [start, end) of n that rank `rank` of `size` takes: contiguous blocks, the first n % size one longer. */
export function shard(n: number, rank: number, size: number): { start: number; end: number } {
  const base = Math.floor(n / size), extra = n % size;
  const start = rank * base + Math.min(rank, extra);
  return { start, end: start + base + (rank < extra ? 1 : 0) };
}

/**
 * Every rank's slices of global arrays, put together on every rank: each of `locals` holds items
 * [start, start + length) of a global array of `n`. One all-reduce of zero-padded arrays: each
 * position has exactly one writer, so the sums are exact (NaN and infinities too: x + 0 = x); null
 * travels as a separate flag.
 */
export async function gather(comm: Communicator, locals: ArrayLike<number | null>[], start: number, n: number, what: string): Promise<(number | null)[][]> {
  if (comm.size === 1) return locals.map((l) => Array.from(l));
  const k = locals.length;
  const buf = new Float64Array(2 * k * n);
  locals.forEach((local, j) => {
    for (let i = 0; i < local.length; i++) {
      const x = local[i]!;
      if (x === null) buf[(k + j) * n + start + i] = 1;
      else buf[j * n + start + i] = x;
    }
  });
  const all = await comm.allReduce(buf, 'sum', what);
  return locals.map((_, j) => Array.from({ length: n }, (_, i) => (all[(k + j) * n + i]! > 0 ? null : all[j * n + i]!)));
}

/** gather of arrays that hold no null. */
export async function gatherNumbers(comm: Communicator, locals: ArrayLike<number>[], start: number, n: number, what: string): Promise<number[][]> {
  return (await gather(comm, locals, start, n, what)) as number[][];
}

/** Where this rank's `count` items sit in the global order (ranks in order), and the global count. */
export async function placement(comm: Communicator, count: number, what: string): Promise<{ offset: number; total: number }> {
  if (comm.size === 1) return { offset: 0, total: count };
  const [counts] = await gatherNumbers(comm, [[count]], comm.rank, comm.size, what);
  return { offset: counts!.slice(0, comm.rank).reduce((a, b) => a + b, 0), total: counts!.reduce((a, b) => a + b, 0) };
}

/** Every rank's JSON value, in rank order, on every rank (one broadcast per rank; for small logs). */
export async function allGatherJson<T>(comm: Communicator, value: T, what: string): Promise<T[]> {
  if (comm.size === 1) return [value];
  const out: T[] = [];
  for (let r = 0; r < comm.size; r++) out.push(await comm.broadcast(r === comm.rank ? value : null, r, what) as T);
  return out;
}

/**
 * Every rank reaches this point with or without an error; all of them then stop if any failed (a
 * rank that failed alone would leave the others waiting at their next collective until it times
 * out). The failing rank rethrows its own error; the others name it.
 */
export async function agree(comm: Communicator, err: unknown, what: string): Promise<void> {
  if (comm.size > 1) {
    const [flags] = await gatherNumbers(comm, [[err === undefined ? 0 : 1]], comm.rank, comm.size, `the check that every rank is ready ${what}`);
    const failed = flags!.flatMap((f, r) => (f > 0 ? [r] : []));
    if (err === undefined && failed.length > 0)
      throw new DistributedError(`${failed.length === 1 ? 'Rank' : 'Ranks'} ${failed.join(', ')} failed ${what} (see ${failed.length === 1 ? 'its' : 'their'} error); rank ${comm.rank} stops too`);
  }
  if (err !== undefined) throw err;
}

/** Whether any rank says yes (a stop request, a failure), so every rank takes the same branch. */
export async function anyRank(comm: Communicator, flag: boolean, what: string): Promise<boolean> {
  if (comm.size === 1) return flag;
  const [n] = await comm.allReduce([flag ? 1 : 0], 'max', what);
  return n! > 0;
}
