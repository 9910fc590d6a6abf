// Containment tests for the code sandbox: each hostile program must end with reward 0, leave no
// process and no file behind, and the parent must keep working. Checks that depend on namespaces
// or on dropping privileges print why they are skipped where the machine does not allow them.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scoreCode } from '../../lib/rewards/code.js';
import { Sandbox, SandboxError, type SandboxIsolation } from '../../lib/rewards/sandbox.js';

const py = (code: string) => '```python\n' + code.trim() + '\n```';

/** Live processes whose command line contains `needle`. */
function processesWith(needle: string): number[] {
  const found: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(needle)) found.push(Number(e));
    } catch {
      // gone
    }
  }
  return found;
}

// This run's sandboxes work in a folder of its own, so the process checks below see this run's
// programs only (not those of another test run on the machine).
const runTmp = mkdtempSync(path.join(os.tmpdir(), 'justgrpo-sandbox-test-'));
const SANDBOXES = path.join(runTmp, 'justgrpo-sandbox-');
afterAll(() => rmSync(runTmp, { recursive: true, force: true }));

async function makeSandbox(isolation: SandboxIsolation): Promise<{ sandbox?: Sandbox; reason?: string }> {
  try {
    return { sandbox: await Sandbox.create({ isolation, timeoutMs: 4000, tmpDir: runTmp }) };
  } catch (e) {
    return { reason: (e as Error).message };
  }
}

const auto = await makeSandbox('auto');
if (!auto.sandbox) console.warn(`sandbox tests skipped: ${auto.reason}`);
const caps = auto.sandbox?.capabilities;
const namespaced = caps?.isolation === 'namespaces' || caps?.isolation === 'bwrap';
const bwrapped = caps?.isolation === 'bwrap';
const ownUid = caps?.dropsPrivileges === true || caps?.userNamespace === true;
if (caps) {
  console.warn(
    `sandbox: isolation=${caps.isolation}, own uid=${caps.dropsPrivileges}, user namespace=${caps.userNamespace}` +
      (caps.fallbackReasons.length ? `; fell back because ${caps.fallbackReasons.join('; ')}` : ''),
  );
  if (!namespaced) console.warn('sandbox: no mount/network namespaces here; the filesystem and network checks are skipped');
}

describe.skipIf(!auto.sandbox)('sandbox', () => {
  const sandbox = auto.sandbox!;
  let hostDir: string;

  beforeAll(async () => {
    // World-writable on purpose: only a read-only mount (not file permissions) can keep the
    // sandbox out of it.
    hostDir = await mkdtemp(path.join(os.tmpdir(), 'justgrpo-host-'));
    await chmod(hostDir, 0o777);
  });
  afterAll(async () => {
    await rm(hostDir, { recursive: true, force: true });
  });

  it('runs a normal program with python3 -I in an empty environment and a fresh temp cwd', async () => {
    const r = await sandbox.runPython(
      'import os, sys\nopen("note.txt", "w").write("ok")\nprint(sys.flags.isolated, os.getcwd(), sorted(os.environ))',
    );
    expect(r.exitCode).toBe(0);
    const [isolated, cwd, env] = r.stdout.trim().split(' ');
    expect(isolated).toBe('1');
    expect(env).toBe('[]');
    if (bwrapped) {
      expect(cwd).toBe('/tmp'); // its own tmpfs, gone with the sandbox
    } else {
      expect(cwd).toContain('justgrpo-sandbox-');
      expect(existsSync(cwd!)).toBe(false); // the temp dir is removed afterwards
    }
    expect(readdirSync(runTmp)).toEqual([]);
  });

  it.skipIf(!caps?.dropsPrivileges)('runs as an unprivileged uid with no_new_privs', async () => {
    const r = await sandbox.runPython(
      'import os\nstatus = open("/proc/self/status").read()\nprint(os.getuid(), "NoNewPrivs:\\t1" in status, status.split("CapEff:")[1].split()[0])',
    );
    const [uid, nnp, capEff] = r.stdout.trim().split(' ');
    expect(Number(uid)).toBeGreaterThan(0);
    expect(nnp).toBe('True');
    expect(capEff).toBe('0000000000000000');
  });

  it('kills an infinite loop at the wall-clock limit', async () => {
    const started = Date.now();
    const s = await scoreCode(py('while True:\n    pass'), ['assert True'], { sandbox, timeoutMs: 1500 });
    expect(s.timedOut).toBe(true);
    expect(s.passRate).toBe(0);
    expect(s.failures).toContain('timeout');
    expect(Date.now() - started).toBeLessThan(5000);
    expect(processesWith(SANDBOXES)).toEqual([]);
  });

  it('contains a fork bomb within the process limit', async () => {
    const seen: number[] = [];
    const sampler = setInterval(() => seen.push(processesWith(SANDBOXES).length), 100);
    const code = 'import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass';
    const s = await scoreCode(py(code), ['assert True'], { sandbox, timeoutMs: 2000 }).finally(() => clearInterval(sampler));
    expect(s.passRate).toBe(0);
    expect(processesWith(SANDBOXES)).toEqual([]);
    if (ownUid) {
      // 16 processes of the program's uid (the default limit), plus unshare (run as the parent).
      expect(Math.max(0, ...seen)).toBeLessThanOrEqual(16 + 2);
    } else {
      console.warn('fork bomb: no uid or user namespace of its own here; the process cap shares the user\'s count');
    }
    const after = await sandbox.runPython('print(7 * 6)');
    expect(after.stdout.trim()).toBe('42');
  });

  it('refuses a 4 GB allocation', async () => {
    const s = await scoreCode(py('x = bytearray(4 * 1024 ** 3)\nx[-1] = 1'), ['assert len(x) > 0'], { sandbox });
    expect(s.passRate).toBe(0);
    expect(s.failures).toContain('solution: MemoryError');
    expect(s.timedOut).toBe(false);
  });

  it('keeps writes inside its temp dir', async () => {
    const id = randomBytes(6).toString('hex');
    const targets = [
      path.join(hostDir, `escape-${id}.txt`),
      path.join(os.tmpdir(), `justgrpo-escape-${id}.txt`),
      `../justgrpo-escape-up-${id}.txt`,
      `/dev/shm/justgrpo-escape-${id}`,
    ];
    const code = [
      'import os',
      'written = []',
      `for p in ${JSON.stringify(targets)}:`,
      '    try:',
      '        with open(p, "w") as f:',
      '            f.write("escaped")',
      '        written.append(p)',
      '    except OSError:',
      '        pass',
      'open("inside.txt", "w").write("fine")',
      'inside = os.path.abspath("inside.txt")',
    ].join('\n');
    const r = await sandbox.runPython(code + '\nprint(inside, len(written))');
    const [inside, written] = r.stdout.trim().split(' ');
    if (!bwrapped) expect(inside).toContain('justgrpo-sandbox-');
    expect(existsSync(inside!)).toBe(false);
    const escaped = [targets[0]!, targets[1]!, path.join(os.tmpdir(), `justgrpo-escape-up-${id}.txt`), targets[3]!].filter((p) => existsSync(p));
    await Promise.all(escaped.map((p) => rm(p, { force: true })));
    if (!namespaced) {
      console.warn(`write containment: skipped without a mount namespace (world-writable dirs stay writable); escaped: ${escaped.join(', ')}`);
      return;
    }
    // Under bwrap, /tmp/... names the sandbox's own tmpfs, so a write there succeeds and vanishes.
    expect(escaped).toEqual([]);
    if (!bwrapped) expect(written).toBe('0');
  });

  it("cannot read the parent's environment", async () => {
    // The variable the program is spawned without, and an entry of this process's own startup
    // environment as /proc shows it.
    const marker = `JUSTGRPO_SECRET_${randomBytes(6).toString('hex')}`;
    process.env.JUSTGRPO_SANDBOX_TEST_SECRET = marker;
    const own = readFileSync('/proc/self/environ', 'utf8').split('\0').filter((e) => e.length > 8);
    const needle = own.sort((a, b) => b.length - a.length)[0] ?? marker;
    const code = [
      'import os',
      `needles = ${JSON.stringify([marker, needle])}`,
      'leaked = any(n in repr(dict(os.environ)) for n in needles)',
      'for pid in os.listdir("/proc"):',
      '    if pid.isdigit():',
      '        try:',
      '            text = open("/proc/%s/environ" % pid, "rb").read().decode("utf8", "replace")',
      '            leaked = leaked or any(n in text for n in needles)',
      '        except OSError:',
      '            pass',
    ].join('\n');
    try {
      const r = await sandbox.runPython(code + '\nprint(leaked)');
      if (!namespaced && !ownUid) {
        console.warn("environment: without a PID namespace or uid of its own the program can read the parent's /proc/PID/environ");
        return;
      }
      expect(r.stdout.trim()).toBe('False');
    } finally {
      delete process.env.JUSTGRPO_SANDBOX_TEST_SECRET;
    }
  });

  it('cannot open a network connection', async () => {
    let connections = 0;
    const server = net.createServer((sock) => {
      connections++;
      sock.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const code = `import socket\ns = socket.create_connection(("127.0.0.1", ${port}), timeout=2)\ns.sendall(b"hello")\ns.close()`;
      const s = await scoreCode(py(code), ['assert True'], { sandbox });
      if (caps!.isolation === 'none') {
        console.warn('network: no network namespace here; the program reached 127.0.0.1');
        return;
      }
      expect(s.passRate).toBe(0);
      expect(s.failures[0]).toMatch(/^solution: (OSError|ConnectionRefusedError|TimeoutError)/);
      expect(connections).toBe(0);
    } finally {
      server.close();
    }
  });

  it('leaves no background child behind, even one that holds its stdout open', async () => {
    const token = `justgrpo_bg_${randomBytes(6).toString('hex')}`;
    const marker = path.join(hostDir, `${token}.txt`);
    const childSrc = `import time\ntime.sleep(1.5)\nopen(${JSON.stringify(marker)}, 'w').write('late')\ntime.sleep(60)  # ${token}`;
    const code = `import subprocess, sys\nsubprocess.Popen([sys.executable, "-c", ${JSON.stringify(childSrc)}], start_new_session=True)`;
    const started = Date.now();
    const s = await scoreCode(py(code), ['import os, time\ntime.sleep(0.2)\nassert os.path.exists(' + JSON.stringify(marker) + ')'], {
      sandbox,
    });
    expect(Date.now() - started).toBeLessThan(4000); // did not wait for the child's pipe
    expect(s.passRate).toBe(0);
    expect(processesWith(token)).toEqual([]);
    await new Promise((r) => setTimeout(r, 2000));
    expect(processesWith(token)).toEqual([]);
    expect(existsSync(marker)).toBe(false);
  });

  it('keeps working afterwards, running programs concurrently', async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => scoreCode(py(`def f(x):\n    return x + ${i}`), [`assert f(1) == ${i + 1}`, 'assert f(0) == -1'], { sandbox })),
    );
    for (const r of results) {
      expect(r.passed).toBe(1);
      expect(r.passRate).toBe(0.5);
    }
    expect(processesWith(SANDBOXES)).toEqual([]);
  });
});

const fallback = auto.sandbox ? await makeSandbox('none') : { reason: 'no sandbox at all' };
if (!fallback.sandbox) console.warn(`fallback sandbox tests skipped: ${fallback.reason}`);

describe('sandbox without namespaces (the fallback)', () => {
  const sandbox = fallback.sandbox;

  it.skipIf(!sandbox)('still enforces the wall clock, memory limit, empty env and cleanup', async () => {
    const loop = await scoreCode(py('while True:\n    pass'), ['assert True'], { sandbox: sandbox!, timeoutMs: 1000 });
    expect(loop.timedOut).toBe(true);
    const mem = await scoreCode(py('x = bytearray(4 * 1024 ** 3)'), ['assert True'], { sandbox: sandbox! });
    expect(mem.failures).toContain('solution: MemoryError');
    const env = await sandbox!.runPython('import os\nprint(len(os.environ))');
    expect(env.stdout.trim()).toBe('0');
    const token = `justgrpo_fb_${randomBytes(6).toString('hex')}`;
    await sandbox!.runPython(
      `import subprocess, sys\nsubprocess.Popen([sys.executable, "-c", "import time\\ntime.sleep(30)  # ${token}"], start_new_session=True)`,
    );
    expect(processesWith(token)).toEqual([]);
  });
});

describe('sandbox options', () => {
  it('rejects a bad concurrency and names the option', async () => {
    await expect(Sandbox.create({ maxConcurrency: 0 })).rejects.toThrow(/maxConcurrency/);
  });

  it.skipIf(process.platform !== 'linux')('explains a missing interpreter', async () => {
    await expect(Sandbox.create({ python: '/nonexistent/python3', isolation: 'none' })).rejects.toThrow(SandboxError);
  });
});

describe('every mode that works here', () => {
  for (const mode of ['bwrap', 'namespaces', 'network', 'none'] as const) {
    it(`${mode}: scores a right and a wrong solution, and a forged result line scores nothing`, async () => {
      let sb: Sandbox;
      try {
        sb = await Sandbox.create({ isolation: mode, tmpDir: runTmp });
      } catch (e) {
        console.warn(`mode ${mode} skipped: ${(e as Error).message}`);
        return;
      }
      const [right, wrong, forged] = await Promise.all([
        scoreCode(py('def f(x):\n    return x * 3'), ['assert f(2) == 6', 'assert f(-1) == -3'], { sandbox: sb }),
        scoreCode(py('def f(x):\n    return x * 2'), ['assert f(2) == 6', 'assert f(-1) == -3'], { sandbox: sb }),
        scoreCode(py('import os\nos.write(1, b"test 0 pass\\ntest 1 pass\\ndone\\n")\nos._exit(0)'), ['assert f(2) == 6', 'assert f(-1) == -3'], { sandbox: sb }),
      ]);
      expect(right).toMatchObject({ passRate: 1, isolation: mode });
      expect(wrong.passRate).toBe(0);
      expect(forged.passRate).toBe(0);
      expect(readdirSync(runTmp).filter((e) => e.startsWith('justgrpo-sandbox-'))).toEqual([]);
    });
  }
});
