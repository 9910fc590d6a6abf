/**
 * Memory cgroups for sandboxed programs, where the parent is root and a memory controller can be
 * written to (cgroup v2 with `memory` enabled, or v1's memory hierarchy). RLIMIT_AS caps each
 * process; a cgroup caps what all of a run's processes hold together, page cache and tmpfs pages
 * included, and the kernel's OOM killer ends the run when it is reached.
 *
 * Layout: `<root>/justgrpo-<pid>/uid-<uid>`, one cgroup per sandbox uid (reused by that uid's
 * later runs), removed when this process exits normally; those of a process that was killed (a
 * test runner's worker, SIGKILL) are removed by the next process that makes its cgroups. A run enters its cgroup through a shell that writes its
 * own pid to `cgroup.procs` (owned by the run's uid) before it execs the sandbox, so no process of
 * the run ever runs outside it.
 */
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** A parent cgroup this process owns, under which each sandbox uid gets its own. */
export class MemoryCgroups {
  private readonly made = new Set<string>();
  private constructor(
    private readonly dir: string,
    /** `v1` or `v2`. */
    readonly version: 'v1' | 'v2',
  ) {
    process.once('exit', () => this.removeAll());
  }

  private static made?: MemoryCgroups | string;

  /** This process's cgroups (made on first use), or a one-line reason why there are none here. */
  static shared(): MemoryCgroups | string {
    MemoryCgroups.made ??= MemoryCgroups.create();
    return MemoryCgroups.made;
  }

  private static create(): MemoryCgroups | string {
    if (process.getuid?.() !== 0) return 'memory cgroups need root';
    const candidates: { root: string; version: 'v1' | 'v2' }[] = [];
    const v2 = '/sys/fs/cgroup';
    try {
      if (readFileSync(path.join(v2, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('memory')) candidates.push({ root: v2, version: 'v2' });
    } catch {
      // not a v2 root
    }
    if (existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes')) candidates.push({ root: '/sys/fs/cgroup/memory', version: 'v1' });
    const reasons: string[] = [];
    for (const { root, version } of candidates) {
      removeStale(root);
      const dir = path.join(root, `justgrpo-${process.pid}`);
      try {
        mkdirSync(dir, { recursive: true });
        if (version === 'v2') writeFileSync(path.join(dir, 'cgroup.subtree_control'), '+memory');
        return new MemoryCgroups(dir, version);
      } catch (e) {
        reasons.push(`${root}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        try {
          rmdirSync(dir);
        } catch {
          // not made
        }
      }
    }
    return candidates.length ? `cannot make a memory cgroup (${reasons.join('; ')})` : 'no writable memory cgroup controller';
  }

  /**
   * Prepares the cgroup of `uid` with a limit of `bytes` (swap included where the kernel accounts
   * it) and returns the `cgroup.procs` path its shell writes to.
   */
  prepare(uid: number, bytes: number): string {
    const dir = path.join(this.dir, `uid-${uid}`);
    // Made every time (cheap when it exists): another process's stale-cgroup sweep may have
    // removed an idle one.
    mkdirSync(dir, { recursive: true });
    this.made.add(dir);
    const limit = String(bytes);
    if (this.version === 'v2') {
      writeFileSync(path.join(dir, 'memory.max'), limit);
      tryWrite(path.join(dir, 'memory.swap.max'), '0');
    } else {
      // memsw (memory + swap) must stay at or above the memory limit, so order the writes by
      // whether the limit goes up or down.
      const memsw = path.join(dir, 'memory.memsw.limit_in_bytes');
      const lowering = Number(tryRead(path.join(dir, 'memory.limit_in_bytes')) ?? Infinity) > bytes;
      if (lowering) {
        writeFileSync(path.join(dir, 'memory.limit_in_bytes'), limit);
        tryWrite(memsw, limit);
      } else {
        tryWrite(memsw, limit);
        writeFileSync(path.join(dir, 'memory.limit_in_bytes'), limit);
      }
    }
    const procs = path.join(dir, 'cgroup.procs');
    chownSync(procs, uid, uid);
    return procs;
  }

  /** How many processes the OOM killer has ended in the cgroup of `uid` so far. */
  oomKills(uid: number): number {
    const dir = path.join(this.dir, `uid-${uid}`);
    const text = this.version === 'v2' ? tryRead(path.join(dir, 'memory.events')) : tryRead(path.join(dir, 'memory.oom_control'));
    return Number(/oom_kill (\d+)/.exec(text ?? '')?.[1] ?? 0);
  }

  private removeAll(): void {
    for (const dir of this.made) tryRmdir(dir);
    tryRmdir(this.dir);
  }
}

/** The shell prefix that moves itself into the cgroup whose `cgroup.procs` is `procs`, then execs the rest. */
export function enterCgroup(procs: string): string[] {
  return ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', procs];
}

function removeStale(root: string): void {
  let entries: string[];
  try {
    entries = readdirSync(root);
  } catch {
    return;
  }
  for (const e of entries) {
    const m = /^justgrpo-(\d+)$/.exec(e);
    if (!m || existsSync(`/proc/${m[1]}`)) continue;
    const dir = path.join(root, e);
    try {
      for (const sub of readdirSync(dir, { withFileTypes: true })) if (sub.isDirectory()) tryRmdir(path.join(dir, sub.name));
    } catch {
      // gone
    }
    tryRmdir(dir);
  }
}

function tryWrite(file: string, text: string): void {
  try {
    writeFileSync(file, text);
  } catch {
    // not accounted on this kernel (e.g. swap accounting off)
  }
}

function tryRead(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function tryRmdir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // still busy or already gone
  }
}
