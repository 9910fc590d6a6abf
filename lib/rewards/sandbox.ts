/**
 * A sandbox for running untrusted Python (model-written code) on Linux.
 *
 * Each program runs as `python3 -I main.py` in a fresh temporary directory (its cwd, removed
 * afterwards), with an empty environment, in its own process group, under rlimits set by `prlimit`
 * (CPU seconds, address space, file size, processes, open files, no core dumps), and is killed as a
 * whole group when its wall-clock limit passes. Where Linux namespaces are permitted it also runs in
 * new network, mount and PID namespaces (`unshare`): no network at all (a private loopback that is
 * down), every mount read-only except its temp directory, and every process it starts dies with it.
 * When the parent runs as root the program runs as an unprivileged uid of its own, so the
 * process limit applies and it cannot touch the parent's files. See lib/rewards/README.md for what
 * each mode can and cannot stop.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { accessSync, constants as fsConstants, existsSync, readlinkSync } from 'node:fs';
import { chmod, chown, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expected, JustGRPOError } from '../errors.js';
import { enterCgroup, MemoryCgroups } from './cgroup.js';
import { seccompFilter } from './seccomp.js';

/** How much isolation to use. `auto` picks the strongest mode that works on this machine. */
export type SandboxIsolation = 'auto' | 'bwrap' | 'namespaces' | 'network' | 'none';

/** Options for {@link Sandbox.create}. */
export type SandboxOptions = {
  /**
   * The Python interpreter. Defaults to `$JUSTGRPO_PYTHON`, else `/usr/bin/python3` where it
   * exists, else `python3` on PATH. When the parent runs as root the program runs as another uid,
   * so the interpreter must be readable by everyone (a pyenv under /root is not).
   */
  python?: string;
  /**
   * `bwrap`: bubblewrap with new user, IPC, PID, network and UTS namespaces, a read-only root
   * holding only /usr, a size-capped tmpfs as /tmp, a seccomp filter and no new namespaces inside;
   * `namespaces`: new network + mount + PID namespaces (read-only filesystem except the temp dir);
   * `network`: a new network namespace only; `none`: rlimits, process group and temp dir only.
   * `auto` tries them in that order and says on stderr why it did not get `bwrap`. Defaults to `'auto'`.
   */
  isolation?: SandboxIsolation;
  /** Programs run at once; further runs wait. Defaults to `os.availableParallelism()`. */
  maxConcurrency?: number;
  /** Wall-clock limit per program in milliseconds; the process group is then killed. Defaults to `5000`. */
  timeoutMs?: number;
  /** Address-space limit (RLIMIT_AS) in MiB. Defaults to `1024`. */
  memoryMb?: number;
  /** Largest file the program may write (RLIMIT_FSIZE) in MiB. Defaults to `16`. */
  fileSizeMb?: number;
  /** All the files the program may hold at once (`bwrap`: the size of its /tmp tmpfs) in MiB. Defaults to `64`. */
  diskMb?: number;
  /**
   * All the memory the program's processes may hold together, its /tmp files included, in MiB:
   * a memory cgroup per run where one can be made (`bwrap` with the parent as root); the OOM killer
   * ends the run past it. Defaults to the run's `memoryMb` plus `diskMb`.
   */
  totalMemoryMb?: number;
  /**
   * Processes and threads the program may have (RLIMIT_NPROC). With no cgroup, this times
   * `memoryMb` bounds a hostile program's total memory, so keep the product well under the
   * machine's memory. Defaults to `16`.
   */
  maxProcesses?: number;
  /** Open file descriptors (RLIMIT_NOFILE). Defaults to `64`. */
  maxOpenFiles?: number;
  /** Bytes of stdout and of stderr kept; the rest is read and dropped. Defaults to `1048576`. */
  maxOutputBytes?: number;
  /**
   * Where per-run temp directories are made; when the parent is root it must be traversable by
   * other users (the program runs as another uid). Defaults to `os.tmpdir()`.
   */
  tmpDir?: string;
  /**
   * First uid used when the parent is root; each concurrent run gets its own uid above it (offset
   * by this process's pid so that two trainers on one machine do not share uids). Defaults to `1000000000`.
   */
  uidBase?: number;
};

/** Per-run options for {@link Sandbox.runPython}. */
export type SandboxRunOptions = {
  /** Text written to the program's stdin. Defaults to `''`. */
  stdin?: string;
  /** Wall-clock limit in milliseconds. Defaults to the sandbox's `timeoutMs`. */
  timeoutMs?: number;
  /** Address-space limit in MiB. Defaults to the sandbox's `memoryMb`. */
  memoryMb?: number;
  /** Kills the program when aborted. */
  signal?: AbortSignal;
  /**
   * Talks to the program instead of writing `stdin` and collecting stdout: called once it has
   * started, with its stdin (left open) and its stdout (then not collected: the result's `stdout`
   * is empty). Defaults to none.
   */
  io?: (stdin: Writable, stdout: Readable) => void;
};

/** What a finished program did. */
export type SandboxResult = {
  /** Exit code, or null when killed by a signal. */
  exitCode: number | null;
  /** The signal that ended it (e.g. `SIGKILL`), or null. */
  signal: NodeJS.Signals | null;
  /** True when the wall-clock limit killed it. */
  timedOut: boolean;
  /** True when the run was aborted through `signal`. */
  aborted: boolean;
  stdout: string;
  stderr: string;
  /** True when output beyond `maxOutputBytes` was dropped. */
  truncated: boolean;
  /** Wall-clock time of the run, including sandbox setup. */
  durationMs: number;
};

/** What the sandbox could set up on this machine. */
export type SandboxCapabilities = {
  /** The mode in use (never `auto`). */
  isolation: Exclude<SandboxIsolation, 'auto'>;
  /** True when programs run as a separate unprivileged uid (the parent is root). */
  dropsPrivileges: boolean;
  /** True when an unprivileged user namespace provides the namespaces (the parent is not root, or `bwrap`). */
  userNamespace: boolean;
  /** True when the seccomp filter of lib/rewards/seccomp.ts is loaded (`bwrap` on x86-64). */
  seccomp: boolean;
  /** The memory cgroup version capping all of a run's processes together, or null (then why, in `fallbackReasons`). */
  memoryCgroup: 'v1' | 'v2' | null;
  /** The interpreter in use. */
  python: string;
  /** Why stronger modes were not used, one line per mode tried; empty when the first worked. */
  fallbackReasons: string[];
};

/** The sandbox could not be set up (missing tools, or a requested mode is not permitted). */
export class SandboxError extends JustGRPOError {}

const defaultSandboxOptions = {
  isolation: 'auto',
  timeoutMs: 5000,
  memoryMb: 1024,
  fileSizeMb: 16,
  diskMb: 64,
  maxProcesses: 16,
  maxOpenFiles: 64,
  maxOutputBytes: 1 << 20,
  uidBase: 1_000_000_000,
} satisfies Partial<SandboxOptions>;

// The launcher: `python3 -I -c LAUNCH workdir uid mounts dropCaps` under prlimit, the program on
// fd 3. It runs with whatever privilege the namespaces gave it, so it first reads the program and
// closes every descriptor but 0-2 (whatever the parent let the child inherit: bwrap passes them
// on), confines itself, and only then runs the program in the same interpreter (one Python start
// per program instead of two):
// - with a mount namespace: bind the temp dir onto itself (so it stays writable) and remount every
//   other mount read-only, keeping the flags a user namespace may have locked; a mount that cannot
//   be made read-only aborts the run (fail closed);
// - as root: become the run's own uid (no groups, no capabilities left);
// - as root of a user namespace: empty the capability bounding set and the capability sets, or
//   the program could undo the read-only remounts;
// - always: no_new_privs (setuid binaries gain nothing) and an empty environment.
const LAUNCH = String.raw`
import os, sys
w, uid, mounts, drop_caps = sys.argv[1:5]
def fail(msg):
    os.write(2, ('sandbox setup failed: %s\n' % msg).encode())
    os._exit(97)
program = []
while True:
    chunk = os.read(3, 1 << 20)
    if not chunk:
        break
    program.append(chunk)
os.closerange(3, 2 ** 31 - 1)
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def check(rc, what):
        if rc != 0:
            fail('%s: %s' % (what, os.strerror(ctypes.get_errno())))
    if mounts == '1':
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
        RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, STRICTATIME = 1, 2, 4, 8, 32, 4096, 1 << 24
        ATIME = {'noatime': 1024, 'nodiratime': 2048, 'relatime': 1 << 21}
        FLAGS = dict(nosuid=NOSUID, nodev=NODEV, noexec=NOEXEC, **ATIME)
        check(libc.mount(w.encode(), w.encode(), None, BIND, None), 'bind ' + w)
        for line in open('/proc/self/mountinfo'):
            f = line.split()
            target = f[4]
            if '\\' in target:  # mountinfo writes space, tab, newline and backslash as \ooo
                target = target.encode().decode('unicode_escape').encode('latin-1').decode()
            if target == w:
                continue
            opts = f[5].split(',')
            flags = REMOUNT | BIND | RDONLY
            for o in opts:
                flags |= FLAGS.get(o, 0)
            if not any(o in ATIME for o in opts):
                flags |= STRICTATIME
            if libc.mount(b'none', target.encode(), None, flags, None) != 0:
                if ctypes.get_errno() == 2:
                    continue  # a mount point that no longer exists cannot be reached either
                fail('cannot make %s read-only: %s' % (target, os.strerror(ctypes.get_errno())))
    os.chdir(w)
    if uid != '-':
        uid = int(uid)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif drop_caps == '1':
        for cap in range(64):
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP; EINVAL past the last cap
                break
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        check(libc.capset(header, (ctypes.c_uint32 * 6)()), 'capset')
    check(libc.prctl(38, 1, 0, 0, 0), 'no_new_privs')
except OSError as e:
    fail(e)
os.environ.clear()
sys.argv = ['main.py']
main = compile(b''.join(program), 'main.py', 'exec')
exec(main, {'__name__': '__main__', '__file__': 'main.py', '__builtins__': __builtins__})
`;

/** Limits concurrent work to `max` at a time. */
class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

function which(name: string): string | undefined {
  if (name.includes('/')) return existsSync(name) ? name : undefined;
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    const p = path.join(dir || '.', name);
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  for (const dir of ['/usr/sbin', '/sbin', '/usr/bin', '/bin']) {
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** The default interpreter: `$JUSTGRPO_PYTHON`, `/usr/bin/python3`, else `python3` on PATH. */
export function defaultPython(): string {
  const fromEnv = process.env.JUSTGRPO_PYTHON;
  if (fromEnv) return fromEnv;
  if (existsSync('/usr/bin/python3')) return '/usr/bin/python3';
  return which('python3') ?? 'python3';
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

// uids handed to running programs, shared by every Sandbox in this process.
const uidsInUse = new Set<number>();

async function tasksMatching(pred: (status: string, pid: number) => boolean | Promise<boolean>): Promise<number[]> {
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return [];
  }
  const found: number[] = [];
  await Promise.all(
    entries.map(async (e) => {
      if (!/^\d+$/.test(e)) return;
      const pid = Number(e);
      if (pid === process.pid) return;
      try {
        const status = await readFile(`/proc/${e}/status`, 'utf8');
        if (await pred(status, pid)) found.push(pid);
      } catch {
        // the process ended while we looked
      }
    }),
  );
  return found;
}

const uidOf = (status: string) => Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);

function killQuietly(pid: number, sig: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/**
 * Runs untrusted Python programs with the strongest isolation this machine permits. Create one with
 * {@link Sandbox.create} (which probes the machine once) and share it: it also limits how many
 * programs run at once.
 */
export class Sandbox {
  private readonly limiter: Limiter;
  private constructor(
    private readonly opts: Required<Omit<SandboxOptions, 'isolation' | 'totalMemoryMb'>> & Pick<SandboxOptions, 'totalMemoryMb'>,
    private readonly tools: { unshare?: string; bwrap?: string; prlimit: string },
    private caps: SandboxCapabilities,
  ) {
    this.limiter = new Limiter(opts.maxConcurrency);
  }

  /**
   * Probes the machine and returns a ready sandbox.
   * @throws {SandboxError} When `prlimit` or the interpreter is missing, or when a specific
   *   `isolation` was requested and does not work here (the message says why).
   */
  static async create(options: SandboxOptions = {}): Promise<Sandbox> {
    const o = { ...defaultSandboxOptions, ...options };
    const maxConcurrency = o.maxConcurrency ?? os.availableParallelism();
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1 || maxConcurrency > 100) {
      throw expected('an integer from 1 to 100', 'maxConcurrency', maxConcurrency);
    }
    if (process.platform !== 'linux') throw new SandboxError('The code sandbox needs Linux');
    const prlimit = which('prlimit');
    if (!prlimit) throw new SandboxError('The code sandbox needs `prlimit` (util-linux); install util-linux');
    if (!Number.isInteger(o.diskMb) || o.diskMb < 1) throw expected('a positive integer number of MiB', 'diskMb', o.diskMb);
    if (o.totalMemoryMb !== undefined && (!Number.isInteger(o.totalMemoryMb) || o.totalMemoryMb < 64)) {
      throw expected('an integer number of MiB, at least 64', 'totalMemoryMb', o.totalMemoryMb);
    }
    const tools = { unshare: which('unshare'), bwrap: which('bwrap'), prlimit };
    const python = o.python ?? defaultPython();
    const { isolation, ...rest } = o;
    const sandbox = new Sandbox({ ...rest, python, maxConcurrency, tmpDir: o.tmpDir ?? os.tmpdir() }, tools, capsFor('none', python, []));
    const modes = isolation === 'auto' ? (['bwrap', 'namespaces', 'network', 'none'] as const) : ([isolation] as const);
    const reasons: string[] = [];
    for (const mode of modes) {
      const why = await sandbox.probe(mode);
      if (why === undefined) {
        sandbox.caps = capsFor(mode, python, reasons);
        if (isolation === 'auto' && reasons.length > 0) {
          console.warn(`justgrpo: the code sandbox runs in mode '${mode}' (weaker than bwrap) because ${reasons.join('; ')}`);
        }
        return sandbox;
      }
      reasons.push(`${mode}: ${why}`);
    }
    throw new SandboxError(`The code sandbox could not start: ${reasons.join('; ')}`);
  }

  /** The default wall-clock limit per program, in milliseconds. */
  get timeoutMs(): number {
    return this.opts.timeoutMs;
  }

  /** The `prlimit` binary the sandbox uses (also for the code reward's judge). */
  get prlimit(): string {
    return this.tools.prlimit;
  }

  /** What isolation is in force. */
  get capabilities(): SandboxCapabilities {
    return { ...this.caps, fallbackReasons: [...this.caps.fallbackReasons] };
  }

  /** Returns undefined when `mode` works, else a one-line reason. */
  private async probe(mode: Exclude<SandboxIsolation, 'auto'>): Promise<string | undefined> {
    if (mode === 'bwrap' && !this.tools.bwrap) return '`bwrap` not found (install bubblewrap)';
    if (mode !== 'none' && mode !== 'bwrap' && !this.tools.unshare) return '`unshare` not found';
    if (mode === 'bwrap' && !this.opts.python.startsWith('/usr/')) return `the interpreter ${this.opts.python} is outside /usr, the only tree the sandbox shows`;
    const saved = this.caps;
    this.caps = capsFor(mode, this.opts.python, []);
    try {
      const r = await this.execute('import sys; print(6 * 7, sys.flags.isolated)', { timeoutMs: 10_000 });
      if (r.exitCode === 0 && r.stdout.trim() === '42 1') return undefined;
      const detail = (r.stderr.trim().split('\n').pop() ?? '').slice(0, 200);
      return detail || (r.timedOut ? 'probe timed out' : `probe exited with ${r.exitCode ?? r.signal}`);
    } catch (e) {
      return (e as Error).message;
    } finally {
      this.caps = saved;
    }
  }

  /**
   * Runs `code` as `python3 -I main.py` in the sandbox, waiting for a free slot first. Resolves
   * once the program and everything it started are gone and its temp directory is removed.
   */
  async runPython(code: string, options: SandboxRunOptions = {}): Promise<SandboxResult> {
    return this.limiter.run(() => this.execute(code, options));
  }

  private allocateUid(): number {
    const base = this.opts.uidBase + (process.pid % 100_000) * 100;
    for (let k = 0; k < 100; k++) {
      if (!uidsInUse.has(base + k)) {
        uidsInUse.add(base + k);
        return base + k;
      }
    }
    throw new SandboxError('More than 100 concurrent sandboxed programs in one process');
  }

  private async command(workdir: string, uid: number | undefined, timeoutMs: number, memoryMb: number): Promise<string[]> {
    const o = this.opts;
    const mode = this.caps.isolation;
    const userNs = mode !== 'none' && (mode === 'bwrap' || !isRoot());
    // One second over the wall clock, so that a busy loop normally meets the wall-clock kill (and
    // is reported as timed out) rather than racing it.
    const cpu = Math.ceil(timeoutMs / 1000) + 1;
    const mib = 1024 * 1024;
    let nproc = o.maxProcesses;
    // Without a uid or user namespace of its own, RLIMIT_NPROC counts every task of our user.
    if (uid === undefined && (!userNs || mode === 'bwrap')) nproc += await countUserTasks(process.getuid?.() ?? -1);
    // bwrap's own process counts too (with --as-pid-1 the program is the PID namespace's init).
    if (mode === 'bwrap') nproc += 1;
    const limits = [
      this.tools.prlimit,
      `--cpu=${cpu}:${cpu}`,
      `--as=${memoryMb * mib}:${memoryMb * mib}`,
      `--fsize=${o.fileSizeMb * mib}:${o.fileSizeMb * mib}`,
      `--nproc=${nproc}:${nproc}`,
      `--nofile=${o.maxOpenFiles}:${o.maxOpenFiles}`,
      '--core=0:0',
      '--',
    ];
    if (mode === 'bwrap') {
      // bwrap runs as the run's uid (spawned so), so it makes an unprivileged user namespace in
      // which the program holds no capability; the launcher only reads the program and closes
      // descriptors.
      return [...limits, this.tools.bwrap!, ...this.bwrapArgs(), '--', o.python, '-I', '-c', LAUNCH, '/tmp', '-', '0', '0'];
    }
    const flags = [workdir, uid === undefined ? '-' : String(uid), mode === 'namespaces' ? '1' : '0', userNs ? '1' : '0'];
    const inner = [...limits, o.python, '-I', '-c', LAUNCH, ...flags];
    const userFlags = userNs ? ['--user', '--map-root-user'] : [];
    if (mode === 'none') return inner;
    if (mode === 'network') return [this.tools.unshare!, '--net', ...userFlags, '--', ...inner];
    const pidAndMount = ['--mount', '--pid', '--fork', '--kill-child', '--mount-proc'];
    return [this.tools.unshare!, '--net', ...pidAndMount, ...userFlags, '--', ...inner];
  }

  /**
   * bubblewrap's arguments: every namespace but the mount namespace's view of the host; a root that
   * holds /usr (read-only, with the usual /bin, /lib* links), a fresh /proc and a minimal /dev, both
   * read-only, and a size-capped tmpfs as /tmp (the cwd), all gone with the sandbox; no /etc beyond
   * the loader cache, no /run, no /home, no project directory; no new user namespaces inside
   * (`--disable-userns`) and the seccomp filter on fd 4 where there is one. `--as-pid-1`: with its
   * own init, bwrap exits without reaping it, and the zombie (left to a host init that may never
   * reap it) keeps counting against the uid's process limit, so the next run on that uid cannot fork.
   */
  private bwrapArgs(): string[] {
    const args = [
      '--unshare-user', '--unshare-ipc', '--unshare-pid', '--unshare-net', '--unshare-uts', '--unshare-cgroup-try',
      '--disable-userns', '--die-with-parent', '--new-session', '--clearenv', '--as-pid-1',
      '--ro-bind', '/usr', '/usr',
    ];
    for (const dir of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
      const host = `/${dir}`;
      let target: string | undefined;
      try {
        target = readlinkSync(host);
      } catch {
        if (existsSync(host)) args.push('--ro-bind', host, host); // a real directory (not merged /usr)
        continue;
      }
      args.push('--symlink', target, host);
    }
    args.push('--ro-bind-try', '/etc/ld.so.cache', '/etc/ld.so.cache');
    args.push('--proc', '/proc', '--dev', '/dev', '--size', String(this.opts.diskMb * 1024 * 1024), '--tmpfs', '/tmp');
    args.push('--remount-ro', '/dev', '--remount-ro', '/', '--chdir', '/tmp');
    if (this.caps.seccomp) args.push('--seccomp', '4');
    return args;
  }

  /** The run's time and memory limits (its options over the sandbox's), checked. */
  private limits(options: SandboxRunOptions): { timeoutMs: number; memoryMb: number } {
    const timeoutMs = options.timeoutMs ?? this.opts.timeoutMs;
    const memoryMb = options.memoryMb ?? this.opts.memoryMb;
    if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) throw expected('a positive number of milliseconds', 'timeoutMs', timeoutMs);
    if (!Number.isInteger(memoryMb) || memoryMb < 64) throw expected('an integer number of MiB, at least 64', 'memoryMb', memoryMb);
    return { timeoutMs, memoryMb };
  }

  private async execute(code: string, options: SandboxRunOptions): Promise<SandboxResult> {
    if (this.caps.isolation === 'bwrap') return this.executeBwrap(code, options);
    const started = Date.now();
    const { timeoutMs, memoryMb } = this.limits(options);
    const uid = this.caps.dropsPrivileges ? this.allocateUid() : undefined;
    let workdir: string | undefined;
    try {
      workdir = await mkdtemp(path.join(this.opts.tmpDir, 'justgrpo-sandbox-'));
      await chmod(workdir, 0o700);
      if (uid !== undefined) await chown(workdir, uid, uid);
      const argv = await this.command(workdir, uid, timeoutMs, memoryMb);
      const child = spawn(argv[0]!, argv.slice(1), {
        cwd: workdir,
        env: {},
        detached: true, // setsid(): a process group of its own, killed as a whole
        stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      });
      sendProgram(child, code);
      const result = await this.supervise(child, options, timeoutMs, started);
      await this.reap(child, uid, workdir, result.signal !== null);
      return result;
    } finally {
      if (workdir) await removeTree(workdir);
      if (uid !== undefined) uidsInUse.delete(uid);
    }
  }

  private async executeBwrap(code: string, options: SandboxRunOptions): Promise<SandboxResult> {
    const started = Date.now();
    const { timeoutMs, memoryMb } = this.limits(options);
    const uid = this.caps.dropsPrivileges ? this.allocateUid() : undefined;
    try {
      // Nothing on the host's disk: the program's files live in the sandbox's tmpfs.
      let argv = await this.command('/tmp', uid, timeoutMs, memoryMb);
      const cgroups = this.caps.memoryCgroup && uid !== undefined ? MemoryCgroups.shared() : undefined;
      if (cgroups instanceof MemoryCgroups) {
        const total = this.opts.totalMemoryMb ?? memoryMb + this.opts.diskMb;
        argv = [...enterCgroup(cgroups.prepare(uid!, total * 1024 * 1024)), ...argv];
      }
      const child = spawn(argv[0]!, argv.slice(1), {
        cwd: '/',
        env: {},
        detached: true,
        stdio: ['pipe', 'pipe', 'pipe', 'pipe', 'pipe'],
        ...(uid !== undefined ? { uid, gid: uid } : {}),
      });
      sendProgram(child, code);
      const filter = child.stdio[4] as Writable;
      filter.on('error', () => {});
      filter.end(this.caps.seccomp ? seccompFilter() : Buffer.alloc(0));
      const result = await this.supervise(child, options, timeoutMs, started);
      await this.reap(child, uid, '/nonexistent', result.signal !== null);
      return result;
    } finally {
      if (uid !== undefined) uidsInUse.delete(uid);
    }
  }

  private supervise(child: ChildProcess, options: SandboxRunOptions, timeoutMs: number, started: number): Promise<SandboxResult> {
    const max = this.opts.maxOutputBytes;
    return new Promise((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outBytes = 0;
      let errBytes = 0;
      let truncated = false;
      let timedOut = false;
      let aborted = false;
      const collect = (chunks: Buffer[], size: () => number, add: (n: number) => void) => (b: Buffer) => {
        const room = max - size();
        if (room <= 0) {
          truncated = true;
          return;
        }
        if (b.length > room) truncated = true;
        const part = b.length > room ? b.subarray(0, room) : b;
        chunks.push(part);
        add(part.length);
      };
      if (!options.io) child.stdout!.on('data', collect(out, () => outBytes, (n) => (outBytes += n)));
      child.stderr!.on('data', collect(err, () => errBytes, (n) => (errBytes += n)));
      const killGroup = () => {
        if (child.pid !== undefined) killQuietly(-child.pid);
      };
      const timer = setTimeout(() => {
        timedOut = true;
        killGroup();
      }, timeoutMs);
      const onAbort = () => {
        aborted = true;
        killGroup();
      };
      if (options.signal?.aborted) onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      child.stdin!.on('error', () => {}); // the program may exit without reading its stdin
      if (options.io) options.io(child.stdin!, child.stdout!);
      else child.stdin!.end(options.stdin ?? '');
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new SandboxError(`Could not start the sandbox: ${e.message}`));
      });
      child.on('exit', (exitCode, signal) => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        // Anything left in the group (a background child) goes now; it may hold our pipes open.
        killGroup();
        const finish = () =>
          resolve({
            exitCode,
            signal,
            timedOut,
            aborted,
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(err).toString('utf8'),
            truncated,
            durationMs: Date.now() - started,
          });
        // Give the pipes a moment to drain, but never wait on a process that escaped the group.
        let pending = 2;
        const done = () => {
          if (--pending === 0) {
            clearTimeout(grace);
            finish();
          }
        };
        const grace = setTimeout(() => {
          child.stdout!.destroy();
          child.stderr!.destroy();
          pending = -1;
          finish();
        }, 250);
        if (child.stdout!.readableEnded || child.stdout!.destroyed) done();
        else child.stdout!.once('close', done);
        if (child.stderr!.readableEnded || child.stderr!.destroyed) done();
        else child.stderr!.once('close', done);
      });
    });
  }

  /** Kills whatever the program left behind and waits until it is gone. */
  private async reap(child: ChildProcess, uid: number | undefined, workdir: string, killed: boolean): Promise<void> {
    if (child.pid !== undefined) killQuietly(-child.pid);
    // unshare exits only after the PID namespace's first process, whose exit waits until the
    // kernel has killed everything else in the namespace; only a killed unshare can leave stragglers.
    if ((this.caps.isolation === 'namespaces' || this.caps.isolation === 'bwrap') && !killed) return;
    const deadline = Date.now() + 3000;
    for (;;) {
      let left: number[];
      if (uid !== undefined) {
        // Every process of this uid belongs to the program, whatever session or namespace it is in.
        // Zombies are skipped: they run nothing, and one whose parent (unshare) was killed waits
        // for the machine's init to reap it.
        left = await tasksMatching((status) => uidOf(status) === uid && !/^State:\s+[ZX]/m.test(status));
      } else if (this.caps.isolation === 'namespaces' || this.caps.isolation === 'bwrap') {
        // The PID namespace died with its first process, taking every descendant with it.
        return;
      } else {
        // Best effort without a uid of our own: processes still working in the temp directory.
        left = await tasksMatching(async (_s, pid) => {
          try {
            const cwd = await readlink(`/proc/${pid}/cwd`);
            return cwd === workdir || cwd.startsWith(workdir + '/');
          } catch {
            return false;
          }
        });
      }
      if (left.length === 0) return;
      for (const pid of left) killQuietly(pid);
      if (Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** Writes the program to the launcher's fd 3. */
function sendProgram(child: ChildProcess, code: string): void {
  const fd3 = child.stdio[3] as Writable;
  fd3.on('error', () => {}); // a launcher that failed to start reads nothing
  fd3.end(code);
}

function capsFor(mode: Exclude<SandboxIsolation, 'auto'>, python: string, fallbackReasons: string[]): SandboxCapabilities {
  const cgroups = mode === 'bwrap' ? MemoryCgroups.shared() : undefined;
  return {
    isolation: mode,
    dropsPrivileges: isRoot(),
    userNamespace: mode === 'bwrap' || (mode !== 'none' && !isRoot()),
    seccomp: mode === 'bwrap' && seccompFilter() !== undefined,
    memoryCgroup: cgroups instanceof MemoryCgroups ? cgroups.version : null,
    python,
    fallbackReasons: typeof cgroups === 'string' ? [...fallbackReasons, `memory cgroup: ${cgroups}`] : fallbackReasons,
  };
}

async function countUserTasks(uid: number): Promise<number> {
  let n = 0;
  await tasksMatching((status) => {
    if (uidOf(status) === uid) n += Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 1);
    return false;
  });
  return n;
}

/**
 * Removes a directory tree even where the program made parts of it unreadable or nested it deeper
 * than PATH_MAX (Node's recursive rm then fails with ENAMETOOLONG; GNU rm walks with openat).
 * Never throws: a run's score must not depend on what it left behind.
 */
async function removeTree(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true, maxRetries: 2 });
    return;
  } catch {
    // below
  }
  await chmodTree(dir, 0).catch(() => {});
  await new Promise<void>((resolve) => {
    const rmBin = existsSync('/usr/bin/rm') ? '/usr/bin/rm' : 'rm';
    const p = spawn(rmBin, ['-rf', '--one-file-system', '--', dir], { stdio: 'ignore' });
    p.on('error', () => resolve());
    p.on('close', () => resolve());
  });
  if (existsSync(dir)) console.warn(`justgrpo: could not remove the sandbox directory ${dir}`);
}

async function chmodTree(dir: string, depth: number): Promise<void> {
  if (depth > 64) return; // deeper trees are left to rm -rf
  await chmod(dir, 0o700).catch(() => {});
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) if (e.isDirectory()) await chmodTree(path.join(dir, e.name), depth + 1);
}

let shared: Promise<Sandbox> | undefined;

/** A process-wide sandbox with default options, created on first use. */
export function defaultSandbox(): Promise<Sandbox> {
  shared ??= Sandbox.create().catch((e: unknown) => {
    shared = undefined;
    throw e;
  });
  return shared;
}
