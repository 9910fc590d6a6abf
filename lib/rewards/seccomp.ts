/**
 * The seccomp filter the bubblewrap sandbox loads (`bwrap --seccomp FD`): a classic BPF program,
 * written here rather than through libseccomp so that nothing needs compiling. It refuses (EPERM)
 * the system calls that let a program hold memory outside its address-space limit or step out of
 * its namespaces:
 * - memory that RLIMIT_AS does not count: memfd_create, memfd_secret, SysV shared memory and message
 *   queues (shmget, msgget), POSIX message queues (mq_open), io_uring, userfaultfd;
 * - new namespaces and mounts: unshare, setns, clone with any CLONE_NEW* flag (clone3 answers
 *   ENOSYS so that libc falls back to clone, whose flags a filter can read), mount and the new
 *   mount API, pivot_root, chroot;
 * - kernel interfaces a test never needs: ptrace, process_vm_*, perf_event_open, bpf, keyrings,
 *   kexec, module loading.
 * Any other architecture's system calls (i386 through int 0x80) kill the process; x32 calls fail.
 * Only x86-64 has a table here; elsewhere {@link seccompFilter} returns undefined and the sandbox
 * says so in its capabilities.
 */

const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x40000000;
const CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080;
const EPERM = 1;
const ENOSYS = 38;

/** x86-64 numbers of the refused calls. */
const DENIED_X86_64: Record<string, number> = {
  memfd_create: 319, memfd_secret: 447, shmget: 29, msgget: 68, mq_open: 240,
  io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427, userfaultfd: 323,
  unshare: 272, setns: 308, mount: 165, umount2: 166, pivot_root: 155, chroot: 161,
  open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, mount_setattr: 442,
  ptrace: 101, process_vm_readv: 310, process_vm_writev: 311, perf_event_open: 298, bpf: 321,
  keyctl: 250, add_key: 248, request_key: 249, kexec_load: 246, kexec_file_load: 320,
  init_module: 175, finit_module: 313, delete_module: 176,
};
const CLONE = 56;
const CLONE3 = 435;

// BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
const LD_W_ABS = 0x20, JEQ_K = 0x15, JGE_K = 0x35, JSET_K = 0x45, RET_K = 0x06;
const RET_ALLOW = 0x7fff0000, RET_KILL_PROCESS = 0x80000000, RET_ERRNO = 0x00050000;
// struct seccomp_data: nr at 0, arch at 4, instruction pointer at 8, args[6] from 16 (u64 each;
// the low half first on a little-endian machine).
const OFF_NR = 0, OFF_ARCH = 4, OFF_ARG0 = 16;

type Insn = { code: number; jt: number | string; jf: number | string; k: number; label?: string };

/** Lays out instructions whose jumps name labels, as sock_filter bytes. */
function assemble(program: Insn[]): Buffer {
  const at = new Map<string, number>();
  program.forEach((p, i) => p.label && at.set(p.label, i));
  const out = Buffer.alloc(program.length * 8);
  program.forEach((p, i) => {
    const rel = (j: number | string) => {
      if (typeof j === 'number') return j;
      const d = at.get(j)! - i - 1;
      if (!(d >= 0 && d <= 255)) throw new Error(`seccomp: jump to ${j} out of range`);
      return d;
    };
    out.writeUInt16LE(p.code, i * 8);
    out.writeUInt8(rel(p.jt), i * 8 + 2);
    out.writeUInt8(rel(p.jf), i * 8 + 3);
    out.writeUInt32LE(p.k >>> 0, i * 8 + 4);
  });
  return out;
}

/** The filter for this machine's architecture as `bwrap --seccomp` reads it, or undefined where there is no table. */
export function seccompFilter(arch: string = process.arch): Buffer | undefined {
  if (arch !== 'x64') return undefined;
  const i = (code: number, k: number, jt: number | string = 0, jf: number | string = 0, label?: string): Insn => ({ code, jt, jf, k, label });
  return assemble([
    i(LD_W_ABS, OFF_ARCH),
    i(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
    i(RET_K, RET_KILL_PROCESS),
    i(LD_W_ABS, OFF_NR),
    i(JGE_K, X32_SYSCALL_BIT, 'eperm', 0),
    ...Object.values(DENIED_X86_64).map((nr) => i(JEQ_K, nr, 'eperm', 0)),
    i(JEQ_K, CLONE3, 'enosys', 0),
    i(JEQ_K, CLONE, 0, 'allow'),
    i(LD_W_ABS, OFF_ARG0),
    i(JSET_K, CLONE_NEW_FLAGS, 'eperm', 'allow'),
    i(RET_K, RET_ALLOW, 0, 0, 'allow'),
    i(RET_K, RET_ERRNO | EPERM, 0, 0, 'eperm'),
    i(RET_K, RET_ERRNO | ENOSYS, 0, 0, 'enosys'),
  ]);
}
