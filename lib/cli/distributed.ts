// `justgrpo sft|train` across processes: --nproc N re-launches the command through mpirun on this
// machine; under a launcher (mpirun -np N justgrpo ...) each process finds its rank and opens MPI.
import { spawn, spawnSync } from 'node:child_process';
import os from 'node:os';

import { DistributedError } from '../errors.js';
import { launchEnvironment, openCommunicator, type Communicator, type DistributedMode } from '../train/distributed.js';

export const DISTRIBUTED_MODES = ['auto', 'mpi', 'none'] as const satisfies readonly DistributedMode[];

/** The flavour of the `mpirun` on PATH, or null when there is none. */
export function findMpirun(): { flavour: 'openmpi' | 'other'; version: string } | null {
  const r = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return null;
  const text = `${r.stdout}${r.stderr}`;
  return { flavour: /Open MPI|OpenRTE/i.test(text) ? 'openmpi' : 'other', version: text.split('\n')[0]!.trim() };
}

/** argv without `--nproc N` / `--nproc=N`. */
export function withoutNproc(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--nproc') i++;
    else if (!argv[i]!.startsWith('--nproc=')) out.push(argv[i]!);
  }
  return out;
}

/**
 * Runs this command again as `nproc` ranks under mpirun (this process only waits and passes on the
 * exit status). Each rank gets an equal share of the cores for its threads unless
 * JUSTGRPO_NUM_THREADS says otherwise; Open MPI's binding of each rank to one core is turned off
 * for the same reason.
 */
export async function relaunchUnderMpirun(nproc: number): Promise<number> {
  const mpirun = findMpirun();
  if (!mpirun)
    throw new DistributedError(`--nproc ${nproc} starts the ranks through mpirun, which is not on PATH; install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) or MPICH, or start the ranks yourself (mpirun -np ${nproc} npx justgrpo ...)`);
  const threads = String(Math.max(1, Math.floor(os.availableParallelism() / nproc)));
  const env = { ...process.env };
  env.JUSTGRPO_NUM_THREADS ??= threads;
  env.OPENBLAS_NUM_THREADS ??= env.JUSTGRPO_NUM_THREADS;
  const flags = mpirun.flavour === 'openmpi'
    ? [...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : []), '--oversubscribe', '--bind-to', 'none']
    : [];
  const args = [...flags, '-np', String(nproc), process.execPath, ...process.execArgv, ...withoutNproc(process.argv.slice(1))];
  // mpirun in its own process group, so a terminal's Ctrl-C reaches this process only: the first
  // becomes SIGUSR2, which mpirun forwards to every rank (stop after the step, with a checkpoint);
  // a second one ends the job at once.
  const child = spawn('mpirun', args, { stdio: 'inherit', env, detached: true });
  let interrupts = 0;
  const onInterrupt = () => child.kill(interrupts++ === 0 ? 'SIGUSR2' : 'SIGINT');
  const onTerm = () => child.kill('SIGTERM');
  const onExit = () => child.kill('SIGKILL');
  process.on('SIGINT', onInterrupt);
  process.on('SIGTERM', onTerm);
  process.on('exit', onExit);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1)));
    });
  } finally {
    process.off('SIGINT', onInterrupt);
    process.off('SIGTERM', onTerm);
    process.off('exit', onExit);
  }
}

/**
 * The communicator of a run started from the command line. Under a launcher with several ranks on
 * this machine, threads default to an equal share of the cores (set before the engine starts).
 */
export function cliCommunicator(mode: DistributedMode): Communicator {
  const launch = launchEnvironment();
  const local = Number(process.env.OMPI_COMM_WORLD_LOCAL_SIZE ?? process.env.MPI_LOCALNRANKS ?? launch?.size ?? 1);
  if (launch && launch.size > 1 && mode !== 'none' && local > 1) {
    process.env.JUSTGRPO_NUM_THREADS ??= String(Math.max(1, Math.floor(os.availableParallelism() / local)));
    process.env.OPENBLAS_NUM_THREADS ??= process.env.JUSTGRPO_NUM_THREADS;
  }
  return openCommunicator(mode);
}
