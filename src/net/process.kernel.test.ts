import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type Bed, type BedNs, bed, needsRoot, RUN_ID } from '../../test/bed.js';
import { isWeftError } from '../lib/errors.js';
import {
  execArgs,
  type ProcessRef,
  type ProcessSpec,
  processAlive,
  readLog,
  type SandboxFiles,
  startProcess,
  stopProcess,
  waitExit,
  writeSandboxFiles,
} from './process.js';

const execFileP = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../..');

/** Env for sandbox processes: the run id lets the leftover check find any we fail to stop. */
const testEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  WEFT_TEST_RUN: process.env.WEFT_TEST_RUN ?? RUN_ID,
  ...extra,
});

/** A temp folder named after the run, removed at cleanup (after the processes are stopped). */
function tmpDir(b: Bed): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-proc-`));
  b.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Stop `ref` at cleanup, before the bed's namespaces go (onCleanup runs first, in reverse). */
function track(b: Bed, ref: ProcessRef): ProcessRef {
  b.onCleanup(() => stopProcess(ref.pid, ref.startTime, { timeoutMs: 1000 }));
  return ref;
}

const files = (name: string): SandboxFiles => ({
  hosts: `127.0.0.1\tlocalhost\n10.201.0.2\t${name}\n# weft-test ${RUN_ID}\n`,
  resolvConf: `nameserver 10.201.0.1\noptions ndots:0\n# weft-test ${RUN_ID}\n`,
  hostname: `${name}\n`,
});

/** A namespace with eth0 = 10.201.0.2/24, the container end of a veth from a "host" namespace. */
function sandboxNs(b: Bed): BedNs {
  const host = b.ns('host');
  const c = b.ns('c');
  host.h.links.add({ kind: 'veth', name: 'vh0', up: true, peer: { name: 'eth0', netns: c.ns } });
  host.h.addrs.add('vh0', '10.201.0.1/24');
  c.h.links.setUp('eth0');
  c.h.addrs.add('eth0', '10.201.0.2/24');
  return c;
}

function spec(dir: string, over: Partial<ProcessSpec> & Pick<ProcessSpec, 'netns'>): ProcessSpec {
  const hostname = over.hostname ?? 'box1';
  return {
    hostname,
    filesDir: path.join(dir, 'files'),
    files: files(hostname),
    cmd: ['sleep', '60'],
    env: testEnv(),
    logPath: path.join(dir, 'log', 'out.log'),
    ...over,
  };
}

/** Run a command inside the sandbox of `ref` through execArgs (nsenter). */
async function inside(ref: ProcessRef, ...cmd: string[]): Promise<string> {
  const [prog, ...rest] = [...execArgs(ref.pid), ...cmd];
  const { stdout } = await execFileP(prog as string, rest, { timeout: 10_000 });
  return stdout;
}

const nsInode = (pid: number | 'self', kind: string): number => fs.statSync(`/proc/${pid}/ns/${kind}`).ino;

/** Pids of processes whose environment holds `KEY=value`. */
function pidsWithEnv(entry: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      if (fs.readFileSync(`/proc/${p}/environ`, 'utf8').split('\0').includes(entry)) out.push(Number(p));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

/**
 * Start a sandbox from a short-lived node process (it exits right after), optionally wrapped in
 * `wrap` (argv that ends by exec'ing the rest, e.g. an outer mount namespace).
 */
async function startFromChild(
  dir: string,
  s: ProcessSpec,
  nsPath: string,
  wrap: string[] = [],
): Promise<{ ref: ProcessRef; starterPid: number }> {
  const script = path.join(dir, 'start.mts');
  fs.writeFileSync(
    script,
    [
      `import { Netns } from ${JSON.stringify(path.join(repoRoot, 'src/kernel/netns.ts'))};`,
      `import { startProcess } from ${JSON.stringify(path.join(here, 'process.ts'))};`,
      'const s = JSON.parse(process.argv[2]);',
      "const ref = await startProcess({ ...s, netns: process.argv[3] === 'host' ? 'host' : Netns.open(process.argv[3]) });",
      'process.stdout.write(JSON.stringify(ref));',
    ].join('\n'),
  );
  const argv = [...wrap, process.execPath, '--import', 'tsx', script, JSON.stringify(s), nsPath];
  const child = spawn(argv[0] as string, argv.slice(1), {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WEFT_TEST_RUN: process.env.WEFT_TEST_RUN ?? RUN_ID },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  child.stderr.on('data', (d) => {
    err += d;
  });
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  assert.equal(code, 0, err);
  return { ref: JSON.parse(out) as ProcessRef, starterPid: child.pid as number };
}

describe('sandbox process', needsRoot, () => {
  test('runs in its netns, its own UTS namespace and its own /etc files', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const hostsBefore = fs.readFileSync('/etc/hosts', 'utf8');
    const resolvBefore = fs.readFileSync('/etc/resolv.conf', 'utf8');
    const s = spec(dir, { netns: c.ns, hostname: 'web-1.example' });
    const ref = track(b, await startProcess(s));
    assert.ok(processAlive(ref.pid, ref.startTime));

    // Namespaces: the bed's netns, a UTS and a mount namespace of its own.
    assert.equal(nsInode(ref.pid, 'net'), c.ns.inode);
    assert.notEqual(nsInode(ref.pid, 'uts'), nsInode('self', 'uts'));
    assert.notEqual(nsInode(ref.pid, 'mnt'), nsInode('self', 'mnt'));
    // The pid is the command's own (unshare and the prelude exec'd).
    assert.match(fs.readFileSync(`/proc/${ref.pid}/cmdline`, 'utf8'), /^sleep\0/);

    assert.equal((await inside(ref, 'hostname')).trim(), 'web-1.example');
    assert.equal(await inside(ref, 'cat', '/etc/hosts'), s.files.hosts);
    assert.equal(await inside(ref, 'cat', '/etc/resolv.conf'), s.files.resolvConf);
    assert.equal(await inside(ref, 'cat', '/etc/hostname'), s.files.hostname);
    // The runner's own files and hostname are untouched.
    assert.equal(fs.readFileSync('/etc/hosts', 'utf8'), hostsBefore);
    assert.equal(fs.readFileSync('/etc/resolv.conf', 'utf8'), resolvBefore);
    assert.notEqual(os.hostname(), 'web-1.example');
    // No mount of ours is visible in the runner's mount namespace.
    assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(s.filesDir));

    // The links inside are the sandbox's, not the host's.
    const links = (await inside(ref, 'ip', '-br', 'addr'))
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+/));
    assert.deepEqual(links.map((l) => l[0]?.replace(/@.*/, '')).sort(), ['eth0', 'lo']);
    assert.ok(links.some((l) => l[0]?.startsWith('eth0') && l.includes('10.201.0.2/24')));
    // ...and packets really flow from inside to the host end.
    await inside(ref, 'ping', '-n', '-q', '-c', '1', '-w', '2', '10.201.0.1');

    // Files are 0644 and a rewrite (same inode) is seen inside the running sandbox.
    assert.equal(fs.statSync(path.join(s.filesDir, 'hosts')).mode & 0o777, 0o644);
    const updated = { ...s.files, hosts: `${s.files.hosts}10.201.0.9\tpeer\n` };
    writeSandboxFiles(s.filesDir, updated);
    assert.equal(await inside(ref, 'cat', '/etc/hosts'), updated.hosts);

    await stopProcess(ref.pid, ref.startTime, { timeoutMs: 2000 });
    assert.equal(processAlive(ref.pid, ref.startTime), false);
    await stopProcess(ref.pid, ref.startTime, { timeoutMs: 2000 }); // idempotent
  });

  test('the command sees its hostname and files; stdout and stderr land in the log', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const s = spec(dir, {
      netns: c.ns,
      hostname: 'logbox',
      // Quoting is argv all the way: $0 and "a b" reach the inner shell untouched.
      cmd: [
        'sh',
        '-c',
        'echo "host=$(hostname)"; echo "arg=$1"; cat /etc/hostname; echo to-stderr >&2; for i in 1 2 3 4 5; do echo "line $i"; done; echo "env=$HOSTNAME $FOO"',
        'sh',
        'a b; $(touch /nonexistent)',
      ],
      env: testEnv({ FOO: 'it\'s "quoted"' }),
    });
    const ref = track(b, await startProcess(s));
    assert.ok(await waitExit(ref.pid, ref.startTime, 5000));
    const log = readLog(s.logPath);
    assert.equal(
      log,
      [
        'host=logbox',
        'arg=a b; $(touch /nonexistent)',
        'logbox',
        'to-stderr',
        'line 1',
        'line 2',
        'line 3',
        'line 4',
        'line 5',
        `env=logbox it's "quoted"`,
        '',
      ].join('\n'),
    );
    assert.equal(readLog(s.logPath, { tail: 2 }), `line 5\nenv=logbox it's "quoted"\n`);
    assert.equal(readLog(s.logPath, { tail: 0 }), '');
    assert.equal(readLog(s.logPath, { tail: 100 }), log);
    assert.equal(fs.existsSync('/nonexistent'), false);

    // The log is appended to, not truncated, by a second start with the same log.
    const again = track(b, await startProcess({ ...s, cmd: ['echo', 'second'] }));
    assert.ok(await waitExit(again.pid, again.startTime, 5000));
    assert.equal(readLog(s.logPath, { tail: 1 }), 'second\n');
    assert.ok(readLog(s.logPath).startsWith('host=logbox\n'));

    assert.throws(
      () => readLog(path.join(dir, 'nope.log')),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    assert.throws(
      () => readLog(s.logPath, { tail: -1 }),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  test('readLog tails a log larger than one read chunk', async (t) => {
    const b = bed(t);
    const dir = tmpDir(b);
    const p = path.join(dir, 'big.log');
    const lines = Array.from({ length: 20_000 }, (_, i) => `line ${i} ${'x'.repeat(20)}`);
    fs.writeFileSync(p, `${lines.join('\n')}\n`);
    assert.equal(readLog(p, { tail: 3 }), `${lines.slice(-3).join('\n')}\n`);
    assert.equal(readLog(p, { tail: 5000 }), `${lines.slice(-5000).join('\n')}\n`);
    fs.appendFileSync(p, 'no newline at the end');
    assert.equal(readLog(p, { tail: 2 }), `${lines.at(-1)}\nno newline at the end`);
  });

  test('the process outlives the short-lived process that started it', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const s = spec(dir, { netns: 'host', hostname: 'orphan' });
    const { ref: started, starterPid } = await startFromChild(dir, s, c.ns.path);
    const ref = track(b, started);
    assert.notEqual(ref.pid, starterPid);

    // The starter is gone; the sandbox lives on, in its own session, in the bed's namespace.
    assert.ok(processAlive(ref.pid, ref.startTime));
    const stat = fs.readFileSync(`/proc/${ref.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    assert.equal(Number(fields[3]), ref.pid, 'it leads its own session'); // field 6: session
    assert.notEqual(Number(fields[1]), starterPid, 'reparented'); // field 4: ppid
    assert.equal(nsInode(ref.pid, 'net'), c.ns.inode);
    assert.equal((await inside(ref, 'hostname')).trim(), 'orphan');
    assert.equal(fs.readlinkSync(`/proc/${ref.pid}/fd/0`), '/dev/null');
    assert.equal(fs.readlinkSync(`/proc/${ref.pid}/fd/1`), s.logPath);

    await stopProcess(ref.pid, ref.startTime, { timeoutMs: 2000 });
    assert.equal(processAlive(ref.pid, ref.startTime), false);
  });

  test('stopProcess escalates to SIGKILL, takes the process group, and spares a reused pid', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const marker = `WEFT_PROBE=${RUN_ID}-${process.pid}-stubborn`;
    const [k, v] = marker.split('=') as [string, string];
    const s = spec(dir, {
      netns: c.ns,
      // SIGTERM ignored by the shell and (inherited) by its sleeping children.
      cmd: ['sh', '-c', 'trap "" TERM; while :; do sleep 0.2; done'],
      env: testEnv({ [k]: v }),
    });
    const ref = track(b, await startProcess(s));
    assert.ok(await until(() => pidsWithEnv(marker).length >= 2), 'the shell forks its sleep');

    // A different start time is someone else's process: neither alive for us nor signalled.
    const other = String(Number(ref.startTime) + 1);
    assert.equal(processAlive(ref.pid, other), false);
    await stopProcess(ref.pid, other, { timeoutMs: 100 });
    assert.ok(processAlive(ref.pid, ref.startTime));

    const started = Date.now();
    await stopProcess(ref.pid, ref.startTime, { timeoutMs: 300 });
    assert.ok(Date.now() - started >= 300, 'SIGTERM was ignored, SIGKILL after the timeout');
    assert.equal(processAlive(ref.pid, ref.startTime), false);
    assert.ok(await until(() => pidsWithEnv(marker).length === 0), 'no process of the group survives');
    assert.equal(await waitExit(ref.pid, ref.startTime, 0), true);
  });

  test('execArgs runs a command inside the sandbox', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const s = spec(dir, { netns: c.ns, hostname: 'execbox' });
    const ref = track(b, await startProcess(s));
    const args = execArgs(ref.pid);
    assert.deepEqual(args, ['nsenter', '--target', String(ref.pid), '--net', '--uts', '--mount', '--']);
    assert.equal(await inside(ref, 'cat', '/etc/hostname'), 'execbox\n');
    assert.throws(
      () => execArgs(0),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  test('an unknown command is a typed error and leaves no process', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    for (const [i, cmd] of [
      ['weft-no-such-command-x', 'arg'],
      ['/nonexistent/bin/tool'],
      [path.join(dir, 'files', 'hosts')], // exists but is not executable
      ['cd', '/'], // a shell builtin, but there is nothing to exec
    ].entries()) {
      const marker = `WEFT_PROBE=${RUN_ID}-${process.pid}-bad${i}`;
      const [k, v] = marker.split('=') as [string, string];
      const s = spec(dir, { netns: c.ns, cmd, env: testEnv({ [k]: v }) });
      await assert.rejects(startProcess(s), (e) => {
        assert.ok(isWeftError(e), String(e));
        assert.ok(e.code === 'NOT_FOUND' || e.code === 'INVALID', `${cmd[0]}: ${e.code} ${e.message}`);
        assert.ok(e.message.includes(cmd[0] as string), e.message);
        assert.equal(e.details.command, cmd[0]);
        return true;
      });
      assert.deepEqual(pidsWithEnv(marker), [], `no process left for ${cmd[0]}`);
    }
  });

  test('bad input fails before anything is written', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const bad: Partial<ProcessSpec>[] = [
      { hostname: 'bad_name' },
      { hostname: '-x' },
      { hostname: 'a'.repeat(65) },
      { hostname: '' },
      { cmd: [] },
      { cmd: [''] },
      { cmd: ['echo', 'a\0b'] },
      { filesDir: 'relative/files' },
      { logPath: 'relative.log' },
      { env: { 'A=B': 'x' } },
      { cwd: 'relative' },
    ];
    for (const over of bad) {
      await assert.rejects(startProcess(spec(dir, { netns: c.ns, ...over })), (e) =>
        isWeftError(e, 'INVALID'),
      );
    }
    await assert.rejects(startProcess(spec(dir, { netns: c.ns, cwd: path.join(dir, 'nope') })), (e) =>
      isWeftError(e, 'NOT_FOUND'),
    );
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  test("'host' keeps the caller's network namespace but has its own hostname and files", async (t) => {
    const b = bed(t);
    const dir = tmpDir(b);
    const s = spec(dir, { netns: 'host', hostname: 'hostnet', cwd: dir });
    const ref = track(b, await startProcess(s));
    assert.equal(nsInode(ref.pid, 'net'), nsInode('self', 'net'));
    assert.notEqual(nsInode(ref.pid, 'uts'), nsInode('self', 'uts'));
    assert.notEqual(nsInode(ref.pid, 'mnt'), nsInode('self', 'mnt'));
    assert.equal(fs.readlinkSync(`/proc/${ref.pid}/cwd`), dir);
    assert.equal((await inside(ref, 'hostname')).trim(), 'hostnet');
    assert.equal(await inside(ref, 'cat', '/etc/hosts'), s.files.hosts);
    assert.equal(await inside(ref, 'cat', '/etc/resolv.conf'), s.files.resolvConf);
    assert.equal(await inside(ref, 'cat', '/etc/hostname'), 'hostnet\n');
    assert.notEqual(os.hostname(), 'hostnet');
  });

  test('a symlinked, dangling or missing /etc entry is handled inside the sandbox only', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    // An outer mount namespace (of the starter only) where /etc/hosts is a symlink to a real
    // file, /etc/resolv.conf a dangling symlink and /etc/hostname missing.
    const real = path.join(dir, 'real-hosts');
    fs.writeFileSync(real, 'the real hosts file\n');
    const outer = path.join(dir, 'outer');
    const setup = [
      'set -e',
      'mkdir -p "$1/u" "$1/w"',
      'mount -n -t overlay weft-outer -o "lowerdir=/etc,upperdir=$1/u,workdir=$1/w" /etc',
      'rm -f /etc/hosts /etc/resolv.conf /etc/hostname',
      'ln -s "$2" /etc/hosts',
      'ln -s /run/weft-test-dangling/resolv.conf /etc/resolv.conf',
      'shift 2',
      'exec "$@"',
    ].join('\n');
    const wrap = [
      'unshare',
      '--mount',
      '--propagation',
      'private',
      '--',
      'sh',
      '-c',
      setup,
      'outer',
      outer,
      real,
    ];
    const s = spec(dir, { netns: 'host', hostname: 'linky' });
    const { ref: started } = await startFromChild(dir, s, c.ns.path, wrap);
    const ref = track(b, started);
    assert.equal(nsInode(ref.pid, 'net'), c.ns.inode);
    assert.equal(await inside(ref, 'cat', '/etc/hosts'), s.files.hosts);
    assert.equal(await inside(ref, 'cat', '/etc/resolv.conf'), s.files.resolvConf);
    assert.equal(await inside(ref, 'cat', '/etc/hostname'), 'linky\n');
    // Outside the sandbox nothing changed: the symlink's target, and the runner's /etc.
    assert.equal(fs.readFileSync(real, 'utf8'), 'the real hosts file\n');
    assert.equal(fs.existsSync('/run/weft-test-dangling'), false);
    assert.ok(fs.statSync('/etc/hostname').isFile());
    // The starter's /etc saw only its own changes: hostname there is still a whiteout (deleted),
    // the sandbox's empty file went into its own tmpfs-backed layer.
    assert.deepEqual(fs.readdirSync(path.join(outer, 'u')).sort(), ['hostname', 'hosts', 'resolv.conf']);
    assert.ok(fs.statSync(path.join(outer, 'u', 'hostname')).isCharacterDevice(), 'a whiteout');
    assert.ok(fs.lstatSync(path.join(outer, 'u', 'resolv.conf')).isSymbolicLink());
  });
});
