import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type Bed, type BedNs, bed, NS_DIR, needsRoot, RUN_ID } from '../../test/bed.js';
import { openHandle } from '../kernel/handle.js';
import { Netns } from '../kernel/netns.js';
import { isWeftError } from '../lib/errors.js';
import {
  execArgs,
  type PreparedProcess,
  type ProcessRef,
  type ProcessSpec,
  ProcessStarter,
  prepareProcess,
  processAlive,
  readLog,
  readStat,
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

const stat = readStat;

/** Gone, or a zombie someone else has yet to reap. */
const gone = (pid: number): boolean => {
  const s = stat(pid);
  return s === undefined || s.state === 'Z' || s.state === 'X';
};

/** Sandbox helpers spawned by this test process (perl children), reaped or not. */
function helpers(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((x) => /^\d+$/.test(x))
    .map(Number)
    .filter((p) => {
      const s = stat(p);
      return s?.comm === 'perl' && s.ppid === process.pid;
    });
}

/** A `KEY=value` probe for the environment, unique to this test process and `label`. */
function probe(label: string): { marker: string; env: Record<string, string> } {
  const marker = `WEFT_PROBE=${RUN_ID}-${process.pid}-${label}`;
  const [k, v] = marker.split('=') as [string, string];
  return { marker, env: { [k]: v } };
}

/**
 * No command carrying `marker` runs any more, and no helper of ours but the idle one (`idle`,
 * read in the same tick). Helpers have an empty environment: they are found as our perl children.
 * Callers poll it: the next idle helper may be on its way (spawned off the thread) for a moment.
 */
const noneLeft = (marker: string, idle?: number): boolean =>
  pidsWithEnv(marker).length === 0 && helpers().every((p) => p === idle);

/** Cancel `p` at cleanup (a no-op once started). */
function trackPrepared(b: Bed, p: PreparedProcess): PreparedProcess {
  b.onCleanup(() => p.cancel());
  return p;
}

const argv = (pid: number): string[] => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
/** Mount points (field 5) of a process's mount namespace, with their optional fields. */
const mounts = (pid: number): { point: string; tags: string }[] =>
  fs
    .readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const f = l.split(' ');
      return { point: f[4] ?? '', tags: f.slice(6, f.indexOf('-')).join(' ') };
    });

async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

/** The two ways to prepare a sandbox: spawn a helper for it, or hand it to an idle one. */
type Way = 'cold' | 'warm';
const WAYS: readonly Way[] = ['cold', 'warm'];

/** prepare / start through one way; `idle()` is the warm starter's idle helper. */
interface Starter {
  prepare(s: ProcessSpec): Promise<PreparedProcess>;
  start(s: ProcessSpec): Promise<ProcessRef>;
  idle(): number | undefined;
}

/** A spec that primes a starter: prepared and cancelled, so that an idle helper is spawned. */
const primeSpec = (dir: string): ProcessSpec =>
  spec(dir, {
    netns: 'host',
    hostname: 'prime',
    filesDir: path.join(dir, 'prime'),
    logPath: path.join(dir, 'prime.log'),
    cmd: ['true'],
  });

/** Wait for the starter's idle helper, priming it when it has none; its pid. */
async function idleOf(st: ProcessStarter, dir: string): Promise<number> {
  if (!(await until(() => st.idlePid !== undefined, 200))) {
    await st.prepare(primeSpec(dir)).then(
      (p) => p.cancel(),
      () => {},
    );
  }
  assert.ok(await until(() => st.idlePid !== undefined), 'an idle helper was spawned');
  return st.idlePid as number;
}

/** A ProcessStarter closed at cleanup (before the bed's namespaces go). */
function newStarter(b: Bed): ProcessStarter {
  const st = new ProcessStarter();
  b.onCleanup(() => st.close());
  return st;
}

/** `way`'s prepare and start; warm: every call must be served by the idle helper. */
function starter(b: Bed, way: Way, dir: string): Starter {
  if (way === 'cold') return { prepare: prepareProcess, start: startProcess, idle: () => undefined };
  const st = newStarter(b);
  const prepare = async (s: ProcessSpec) => {
    const idle = await idleOf(st, dir);
    const p = await st.prepare(s);
    assert.equal(p.pid, idle, 'the idle helper served the request');
    return p;
  };
  return { prepare, start: async (s) => (await prepare(s)).start(), idle: () => st.idlePid };
}

/**
 * argv that runs the rest in a mount namespace of its own (with `propagation`) once the sh lines
 * of `script` have run there with `args` as $1, $2…
 */
function outerNs(propagation: 'private' | 'shared', script: string[], args: string[]): string[] {
  const sh = [...script, `shift ${args.length}`, 'exec "$@"'].join('\n');
  return ['unshare', '--mount', '--propagation', propagation, '--', 'sh', '-c', sh, 'outer', ...args];
}

/** outerNs where /etc is an overlay (upper layer in `outer`) changed by the sh lines `changes`. */
function outerEtc(outer: string, changes: string[], args: string[] = []): string[] {
  const overlay = 'mount -n -t overlay weft-outer -o "lowerdir=/etc,upperdir=$1/u,workdir=$1/w" /etc';
  return outerNs('private', ['set -e', 'mkdir -p "$1/u" "$1/w"', overlay, ...changes], [outer, ...args]);
}

/** What a short-lived starter process reports: the started process, or the typed error. */
type Started =
  | { ref: ProcessRef; starterPid: number; idle?: number }
  | { error: { code: string; message: string; details: Record<string, unknown> }; starterPid: number };

/**
 * Start a sandbox from a short-lived node process (it exits right after), optionally wrapped in
 * `wrap` (argv that ends by exec'ing the rest, e.g. an outer mount namespace). In 'crash' mode
 * the starter prepares the sandbox, reports the helper's pid (warm: and the idle helper's, spawned
 * after a second prepare) and SIGKILLs itself before start: a daemon dying between the phases.
 * Warm, the starter primes a ProcessStarter and checks that its idle helper serves the request.
 */
async function runStarter(
  dir: string,
  s: ProcessSpec,
  nsPath: string,
  opts: { wrap?: string[]; mode?: 'start' | 'crash'; way?: Way } = {},
): Promise<Started> {
  const { wrap = [], mode = 'start', way = 'cold' } = opts;
  const script = path.join(dir, 'start.mts');
  fs.writeFileSync(
    script,
    [
      `import { Netns } from ${JSON.stringify(path.join(repoRoot, 'src/kernel/netns.ts'))};`,
      `import { ProcessStarter, prepareProcess } from ${JSON.stringify(path.join(here, 'process.ts'))};`,
      'const s = JSON.parse(process.argv[2]);',
      "const spec = { ...s, netns: process.argv[3] === 'host' ? 'host' : Netns.open(process.argv[3]) };",
      'const [mode, way] = [process.argv[4], process.argv[5]];',
      "const prime = { ...spec, netns: 'host', filesDir: spec.filesDir + '-prime', logPath: spec.logPath + '.prime', cmd: ['true'] };",
      "const st = way === 'warm' ? new ProcessStarter() : undefined;",
      'async function idle() {',
      '  await st.prepare(prime).then((p) => p.cancel(), () => {});',
      '  for (let i = 0; i < 250 && st.idlePid === undefined; i++) await new Promise((r) => setTimeout(r, 20));',
      "  if (st.idlePid === undefined) throw new Error('no idle helper');",
      '  return st.idlePid;',
      '}',
      'async function prepare() {',
      '  if (!st) return prepareProcess(spec);',
      '  const first = await idle();',
      '  const p = await st.prepare(spec);',
      "  if (p.pid !== first) throw new Error('served by ' + p.pid + ', not by the idle helper ' + first);",
      '  return p;',
      '}',
      "if (mode === 'crash') {",
      '  const p = await prepare();',
      '  process.stdout.write(JSON.stringify({ pid: p.pid, idle: st ? await idle() : undefined }));',
      "  process.kill(process.pid, 'SIGKILL');",
      '}',
      'try {',
      '  process.stdout.write(JSON.stringify({ ref: await (await prepare()).start() }));',
      '} catch (e) {',
      '  process.stdout.write(JSON.stringify({ error: { code: e.code, message: e.message, details: e.details } }));',
      '}',
      'await st?.close();',
    ].join('\n'),
  );
  const argv = [...wrap, process.execPath, '--import', 'tsx', script, JSON.stringify(s), nsPath, mode, way];
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
  const [code, sig] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (c, sg) => {
      clearTimeout(timer);
      resolve([c, sg]);
    });
  });
  if (mode === 'crash') {
    assert.equal(sig, 'SIGKILL', err);
    const { pid, idle } = JSON.parse(out) as { pid: number; idle?: number };
    return {
      ref: { pid, startTime: '' },
      starterPid: child.pid as number,
      ...(idle !== undefined && { idle }),
    };
  }
  assert.equal(code, 0, err);
  return {
    ...(JSON.parse(out) as
      | { ref: ProcessRef }
      | { error: { code: string; message: string; details: Record<string, unknown> } }),
    starterPid: child.pid as number,
  };
}

/** runStarter that must succeed. */
async function startFromChild(
  dir: string,
  s: ProcessSpec,
  nsPath: string,
  opts: { wrap?: string[]; way?: Way } = {},
): Promise<{ ref: ProcessRef; starterPid: number }> {
  const r = await runStarter(dir, s, nsPath, opts);
  if ('error' in r) assert.fail(`${r.error.code}: ${r.error.message}`);
  return r;
}

describe('sandbox process', needsRoot, () => {
  for (const way of WAYS) {
    test(`runs in its netns, its own UTS namespace and its own /etc files (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      const hostsBefore = fs.readFileSync('/etc/hosts', 'utf8');
      const resolvBefore = fs.readFileSync('/etc/resolv.conf', 'utf8');
      const s = spec(dir, { netns: c.ns, hostname: 'web-1.example' });
      const ref = track(b, await starter(b, way, dir).start(s));
      assert.ok(processAlive(ref.pid, ref.startTime));

      // Namespaces: the bed's netns, a UTS and a mount namespace of its own.
      assert.equal(nsInode(ref.pid, 'net'), c.ns.inode);
      assert.notEqual(nsInode(ref.pid, 'uts'), nsInode('self', 'uts'));
      assert.notEqual(nsInode(ref.pid, 'mnt'), nsInode('self', 'mnt'));
      // The pid is the command's own (the helper exec'd it).
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

    test(`the command sees its hostname and files; stdout and stderr land in the log (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      const run = starter(b, way, dir);
      const s = spec(dir, {
        netns: c.ns,
        hostname: 'logbox',
        // Quoting is argv all the way: $0 and "a b" reach the inner shell untouched.
        cmd: [
          'sh',
          '-c',
          'echo "host=$(hostname)"; echo "arg=$1"; cat /etc/hostname; echo to-stderr >&2; for i in 1 2 3 4 5; do echo "line $i"; done; echo "env=$HOSTNAME $FOO"; echo "empty=[$EMPTY]"',
          'sh',
          'a b; $(touch /nonexistent)',
        ],
        env: testEnv({ FOO: 'it\'s "quoted" a=b', EMPTY: '' }),
      });
      const ref = track(b, await run.start(s));
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
          `env=logbox it's "quoted" a=b`,
          'empty=[]',
          '',
        ].join('\n'),
      );
      const mode = fs.statSync(s.logPath).mode & 0o777;
      assert.equal(mode & ~0o640, 0, 'at most 0640');
      assert.equal(mode & 0o600, 0o600);
      assert.equal(readLog(s.logPath, { tail: 2 }), `env=logbox it's "quoted" a=b\nempty=[]\n`);
      assert.equal(readLog(s.logPath, { tail: 0 }), '');
      assert.equal(readLog(s.logPath, { tail: 100 }), log);
      assert.equal(fs.existsSync('/nonexistent'), false);

      // The log is appended to, not truncated, by a second start with the same log.
      const again = track(b, await run.start({ ...s, cmd: ['echo', 'second'] }));
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

    test(`the process outlives the short-lived process that started it (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      const s = spec(dir, { netns: 'host', hostname: 'orphan' });
      const { ref: started, starterPid } = await startFromChild(dir, s, c.ns.path, { way });
      const ref = track(b, started);
      assert.notEqual(ref.pid, starterPid);

      // The starter is gone; the sandbox lives on, in its own session, in the bed's namespace.
      assert.ok(processAlive(ref.pid, ref.startTime));
      const st = stat(ref.pid);
      assert.equal(st?.session, ref.pid, 'it leads its own session');
      assert.notEqual(st?.ppid, starterPid, 'reparented');
      assert.equal(nsInode(ref.pid, 'net'), c.ns.inode);
      assert.equal((await inside(ref, 'hostname')).trim(), 'orphan');
      assert.equal(fs.readlinkSync(`/proc/${ref.pid}/fd/0`), '/dev/null');
      assert.equal(fs.readlinkSync(`/proc/${ref.pid}/fd/1`), s.logPath);
      assert.equal(fs.readlinkSync(`/proc/${ref.pid}/fd/2`), s.logPath);

      await stopProcess(ref.pid, ref.startTime, { timeoutMs: 2000 });
      assert.equal(processAlive(ref.pid, ref.startTime), false);
    });

    test(`bad input fails before anything is written (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      const primeDir = tmpDir(b);
      const st = newStarter(b);
      const idle = way === 'warm' ? await idleOf(st, primeDir) : undefined;
      const prepare = (s: ProcessSpec) => (way === 'warm' ? st.prepare(s) : prepareProcess(s));
      const bad: Partial<ProcessSpec>[] = [
        { hostname: 'bad_name' },
        { hostname: '-x' },
        { hostname: 'a'.repeat(65) },
        { hostname: '' },
        { cmd: [] },
        { cmd: [''] },
        { cmd: ['echo', 'a\0b'] },
        { filesDir: 'relative/files' },
        { filesDir: `${dir}/a\0b` },
        { logPath: 'relative.log' },
        { logPath: `${dir}/a\0b.log` },
        { env: { 'A=B': 'x' } },
        { env: { A: 'x\0y' } },
        { cwd: 'relative' },
        { files: { ...files('box1'), hosts: '127.0.0.1 a\0b\n' } },
      ];
      for (const over of bad) {
        await assert.rejects(prepare(spec(dir, { netns: c.ns, ...over })), (e) => isWeftError(e, 'INVALID'));
      }
      await assert.rejects(prepare(spec(dir, { netns: c.ns, cwd: path.join(dir, 'nope') })), (e) =>
        isWeftError(e, 'NOT_FOUND'),
      );
      // A closed namespace handle.
      const closed = Netns.open(c.ns.path);
      closed.close();
      await assert.rejects(prepare(spec(dir, { netns: closed })), (e) => isWeftError(e, 'INTERNAL'));
      // An architecture whose system call numbers the helper does not know.
      const arch = Object.getOwnPropertyDescriptor(process, 'arch') as PropertyDescriptor;
      Object.defineProperty(process, 'arch', { ...arch, value: 'ia32' });
      try {
        await assert.rejects(prepare(spec(dir, { netns: c.ns })), (e) => isWeftError(e, 'UNSUPPORTED'));
      } finally {
        Object.defineProperty(process, 'arch', arch);
      }
      assert.deepEqual(fs.readdirSync(dir), []);
      // The idle helper was not used up.
      assert.equal(st.idlePid, idle);
      assert.deepEqual(helpers(), idle === undefined ? [] : [idle]);
    });

    test(`'host' keeps the caller's network namespace but has its own hostname and files (${way})`, async (t) => {
      const b = bed(t);
      const dir = tmpDir(b);
      const s = spec(dir, { netns: 'host', hostname: 'hostnet', cwd: dir });
      const ref = track(b, await starter(b, way, dir).start(s));
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

    test(`the namespace entered is the handle's, and a pin made again meanwhile is refused (${way})`, async (t) => {
      const b = bed(t);
      const c1 = b.ns('c1');
      const c2 = b.ns('c2');
      const dir = tmpDir(b);
      const run = starter(b, way, dir);
      for (const [i, c] of [c1, c2].entries()) {
        const ref = track(b, await run.start(spec(dir, { netns: c.ns, hostname: `n${i}` })));
        assert.equal(nsInode(ref.pid, 'net'), c.ns.inode);
      }
      // A handle whose pin was removed and made again: the path names another namespace now.
      const pin = path.join(NS_DIR, `wt-${RUN_ID}-${process.pid.toString(36)}-repin-${way}`);
      const old = Netns.create(pin);
      b.onCleanup(() => Netns.remove(pin));
      const handle = Netns.open(pin);
      b.onCleanup(() => handle.close());
      old.delete();
      const other = Netns.create(pin);
      b.onCleanup(() => other.close());
      assert.notEqual(other.inode, handle.inode);
      const { marker, env } = probe(`repin-${way}`);
      const s = spec(dir, { netns: handle, env: testEnv(env) });
      await assert.rejects(run.prepare(s), (e) => {
        assert.ok(isWeftError(e, 'INTERNAL'), String(e));
        assert.match(e.message, /enter .*repin.*: not the namespace of the handle/);
        assert.match(String(e.details.step), /^enter /);
        assert.match(String(e.details.log), /weft-init: enter /);
        return true;
      });
      assert.ok(await until(() => noneLeft(marker, run.idle())));
    });

    test(`a symlinked, dangling or missing /etc entry is handled inside the sandbox only (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      // An outer mount namespace (of the starter only) where /etc/hosts is a symlink to a real
      // file, /etc/resolv.conf a dangling symlink and /etc/hostname missing.
      const real = path.join(dir, 'real-hosts');
      fs.writeFileSync(real, 'the real hosts file\n');
      const outer = path.join(dir, 'outer');
      const wrap = outerEtc(
        outer,
        [
          'rm -f /etc/hosts /etc/resolv.conf /etc/hostname',
          'ln -s "$2" /etc/hosts',
          'ln -s /run/weft-test-dangling/resolv.conf /etc/resolv.conf',
        ],
        [real],
      );
      const s = spec(dir, { netns: 'host', hostname: 'linky' });
      const { ref: started } = await startFromChild(dir, s, c.ns.path, { wrap, way });
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

    test(`one missing /etc entry does not hide the binds of the others (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      // /etc/hosts and /etc/resolv.conf regular files, /etc/hostname missing: the overlay that
      // makes a file for hostname must go on before the other two are bound. The files' folder
      // has a comma and a colon, which overlayfs's options must get escaped.
      const wrap = outerEtc(path.join(dir, 'outer'), ['rm -f /etc/hostname', 'echo outer > /etc/hosts']);
      const s = spec(dir, { netns: 'host', hostname: 'lone', filesDir: path.join(dir, 'files,a:b') });
      const { ref: started } = await startFromChild(dir, s, c.ns.path, { wrap, way });
      const ref = track(b, started);
      assert.equal(await inside(ref, 'cat', '/etc/hosts'), s.files.hosts);
      assert.equal(await inside(ref, 'cat', '/etc/resolv.conf'), s.files.resolvConf);
      assert.equal(await inside(ref, 'cat', '/etc/hostname'), 'lone\n');
    });

    test(`prepare sets the sandbox up and runs nothing; start execs the command in the same process (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      const mark = path.join(dir, 'ran');
      const { marker, env } = probe(`prep-${way}`);
      const s = spec(dir, {
        netns: c.ns,
        hostname: 'prep-1',
        cmd: ['sh', '-c', 'echo "$PERL5OPT $HOSTNAME" > "$1"; exec sleep 60', 'sh', mark],
        // Meant for the command; perl (the helper) must not read it.
        env: testEnv({ ...env, PERL5OPT: '-MWeft::No::Such::Module' }),
      });
      const p = trackPrepared(b, await starter(b, way, dir).prepare(s));

      // The helper waits: in the sandbox's namespaces, hostname and files in place, command not run.
      assert.equal(path.basename(argv(p.pid)[0] ?? ''), 'perl');
      assert.equal(fs.readFileSync(`/proc/${p.pid}/environ`, 'utf8'), '', 'the helper has no environment');
      assert.deepEqual(pidsWithEnv(marker), []);
      assert.equal(nsInode(p.pid, 'net'), c.ns.inode);
      assert.notEqual(nsInode(p.pid, 'uts'), nsInode('self', 'uts'));
      assert.notEqual(nsInode(p.pid, 'mnt'), nsInode('self', 'mnt'));
      assert.equal(fs.readlinkSync(`/proc/${p.pid}/fd/1`), s.logPath);
      const helperRef = { pid: p.pid, startTime: '' };
      assert.equal((await inside(helperRef, 'hostname')).trim(), 'prep-1');
      assert.equal(await inside(helperRef, 'cat', '/etc/hosts'), s.files.hosts);
      assert.equal(await inside(helperRef, 'cat', '/etc/resolv.conf'), s.files.resolvConf);
      const points = mounts(p.pid).map((m) => m.point);
      for (const f of ['/etc/hosts', '/etc/resolv.conf', '/etc/hostname']) assert.ok(points.includes(f), f);
      assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(s.filesDir));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(fs.existsSync(mark), false, 'the command has not run');

      const ref = track(b, await p.start());
      assert.equal(ref.pid, p.pid, 'the helper became the command');
      assert.ok(processAlive(ref.pid, ref.startTime));
      assert.ok(await until(() => fs.existsSync(mark) && argv(ref.pid)[0] === 'sleep'));
      assert.equal(fs.readFileSync(mark, 'utf8'), '-MWeft::No::Such::Module prep-1\n');
      assert.deepEqual(pidsWithEnv(marker), [ref.pid], 'the command has its environment');
      assert.equal(fs.existsSync(`/proc/${ref.pid}/fd/3`), false, 'fd 3 was closed by the exec');
      assert.deepEqual(await p.start(), ref, 'start again: the same answer');
      await p.cancel(); // a no-op once started
      assert.ok(processAlive(ref.pid, ref.startTime));
    });

    test(`cancel kills the prepared helper: the command never runs, nothing is left (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      const run = starter(b, way, dir);
      const mark = path.join(dir, 'ran');
      const { marker, env } = probe(`cancel-${way}`);
      const s = spec(dir, {
        netns: c.ns,
        cmd: ['sh', '-c', 'touch "$1"; exec sleep 60', 'sh', mark],
        env: testEnv(env),
      });
      const p = trackPrepared(b, await run.prepare(s));
      assert.ok(helpers().includes(p.pid));
      await p.cancel();
      assert.ok(await until(() => noneLeft(marker, run.idle())));
      assert.equal(fs.existsSync(`/proc/${p.pid}`), false);
      await p.cancel(); // idempotent
      await assert.rejects(p.start(), (e) => isWeftError(e, 'INVALID'));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(fs.existsSync(mark), false, 'the command never ran');
      assert.ok(await until(() => noneLeft(marker, run.idle())));
    });

    test(`helpers whose daemon dies before start exit without running the command (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      const mark = path.join(dir, 'ran');
      const { marker, env } = probe(`crash-${way}`);
      const s = spec(dir, {
        netns: 'host',
        cmd: ['sh', '-c', 'touch "$1"; exec sleep 60', 'sh', mark],
        env: testEnv(env),
      });
      const r = await runStarter(dir, s, c.ns.path, { mode: 'crash', way });
      assert.ok('ref' in r);
      assert.ok(r.ref.pid > 0);
      assert.ok(await until(() => gone(r.ref.pid)), 'the prepared helper exits once fd 3 is closed');
      if (way === 'warm') {
        assert.ok(r.idle !== undefined && r.idle !== r.ref.pid);
        assert.ok(await until(() => gone(r.idle as number)), 'so does the idle one');
      }
      assert.ok(noneLeft(marker));
      assert.equal(fs.existsSync(mark), false, 'the command never ran');
      assert.match(readLog(s.logPath, { tail: 1 }), /closed before the start, not running sh/);
    });

    test(`each way a start fails is a typed error and leaves no process (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      const run = starter(b, way, dir);
      const plain = path.join(dir, 'plain');
      fs.writeFileSync(plain, 'echo never\n', { mode: 0o644 });
      const cases: [string[], string, RegExp][] = [
        [['weft-no-such-command-x', 'arg'], 'NOT_FOUND', /not found/],
        [['/nonexistent/bin/tool'], 'NOT_FOUND', /not found/],
        [['cd', '/'], 'NOT_FOUND', /not found/], // a shell builtin: nothing to exec
        [[plain], 'INVALID', /cannot be executed: Permission denied/],
        [[dir], 'INVALID', /cannot be executed: Permission denied/],
      ];
      for (const [i, [cmd, code, re]] of cases.entries()) {
        for (const how of ['start', 'prepare+start'] as const) {
          const { marker, env } = probe(`bad${i}${how}${way}`);
          const s = spec(dir, { netns: c.ns, cmd, env: testEnv(env) });
          const started =
            how === 'start' ? run.start(s) : run.prepare(s).then((p) => trackPrepared(b, p).start());
          await assert.rejects(started, (e) => {
            assert.ok(isWeftError(e), String(e));
            assert.equal(e.code, code, `${cmd[0]}: ${e.message}`);
            assert.match(e.message, re);
            assert.ok(e.message.includes(cmd[0] as string), e.message);
            assert.equal(e.details.command, cmd[0]);
            return true;
          });
          assert.ok(await until(() => noneLeft(marker, run.idle())), `no process left for ${cmd[0]}`);
          assert.match(readLog(s.logPath, { tail: 1 }), new RegExp(`^weft-init: ${cmd[0]}: `));
        }
      }

      // The helper killed while prepared: INTERNAL; its alarm (never started in time): TIMEOUT.
      for (const [sig, code] of [
        ['SIGKILL', 'INTERNAL'],
        ['SIGALRM', 'TIMEOUT'],
      ] as const) {
        const { marker, env } = probe(`sig${sig}${way}`);
        const p = trackPrepared(b, await run.prepare(spec(dir, { netns: c.ns, env: testEnv(env) })));
        process.kill(p.pid, sig);
        await assert.rejects(p.start(), (e) => isWeftError(e, code));
        assert.ok(await until(() => noneLeft(marker, run.idle())));
      }
    });

    test(`a failed setup step is INTERNAL, names the step, and leaves no process (${way})`, async (t) => {
      const b = bed(t);
      const c = sandboxNs(b);
      const dir = tmpDir(b);
      // An outer mount namespace (of the starter only) where /etc/hosts is a directory.
      const outer = path.join(dir, 'outer');
      const wrap = outerEtc(outer, ['rm -f /etc/hosts', 'mkdir /etc/hosts']);
      const mark = path.join(dir, 'ran');
      const { marker, env } = probe(`setup-${way}`);
      const s = spec(dir, { netns: 'host', cmd: ['touch', mark], env: testEnv(env) });
      const r = await runStarter(dir, s, c.ns.path, { wrap, way });
      assert.ok('error' in r, 'the start failed');
      assert.equal(r.error.code, 'INTERNAL');
      assert.match(r.error.message, /bind \/etc\/hosts: Not a directory/);
      assert.equal(r.error.details.step, 'bind /etc/hosts: Not a directory');
      assert.match(String(r.error.details.log), /weft-init: bind \/etc\/hosts: Not a directory/);
      assert.ok(noneLeft(marker));
      assert.equal(fs.existsSync(mark), false);
    });
  }

  test('a log that cannot be opened is a failed setup step', async (t) => {
    const b = bed(t);
    const dir = tmpDir(b);
    // A folder where the log goes.
    fs.mkdirSync(path.join(dir, 'log', 'out.log'), { recursive: true });
    for (const way of WAYS) {
      const run = starter(b, way, dir);
      const { marker, env } = probe(`nolog-${way}`);
      await assert.rejects(run.prepare(spec(dir, { netns: 'host', env: testEnv(env) })), (e) => {
        assert.ok(isWeftError(e, 'INTERNAL'), String(e));
        assert.match(e.message, /open log .*out\.log: Is a directory/);
        assert.match(String(e.details.step), /^open log /);
        return true;
      });
      assert.ok(await until(() => noneLeft(marker, run.idle())));
    }
  });

  test('begin with a pin: the helper pins its own new namespace (lo up) first, the command runs in it', async (t) => {
    const b = bed(t);
    const dir = tmpDir(b);
    for (const way of WAYS) {
      const st = newStarter(b);
      if (way === 'warm') await idleOf(st, dir);
      const idle = st.idlePid;
      const pin = path.join(dir, `pins-${way}`, 'sb1');
      b.onCleanup(() => Netns.remove(pin));
      const going = st.begin(
        spec(dir, { netns: { pin }, hostname: `pin-${way}`, filesDir: path.join(dir, `pf-${way}`) }),
      );
      const ns = await going.netns;
      assert.ok(ns !== 'host');
      b.onCleanup(() => ns.close());
      const p = trackPrepared(b, await going.prepared);
      assert.equal(fs.statSync(pin).ino, ns.inode, 'the handle is the pinned namespace');
      if (way === 'warm') assert.equal(p.pid, idle, 'the idle helper made it');
      assert.equal(nsInode(p.pid, 'net'), ns.inode);
      const lo = openHandle(ns).links.get('lo');
      assert.equal(lo.up, true, 'lo is up');
      for (const k of ['all', 'default']) {
        assert.equal(openHandle(ns).sysctl.get(`net/ipv6/conf/${k}/accept_ra`), '0', `no RAs taken (${k})`);
      }
      const ref = track(b, await p.start());
      assert.equal((await inside(ref, 'hostname')).trim(), `pin-${way}`);
      // The pin outlives the process: the namespace is the caller's to remove.
      await stopProcess(ref.pid, ref.startTime, { timeoutMs: 2000 });
      assert.equal(fs.statSync(pin).ino, ns.inode);
    }
  });

  test('begin with a pin that exists: both promises reject, the file is left as it was, no process', async (t) => {
    const b = bed(t);
    const dir = tmpDir(b);
    const pin = path.join(dir, 'taken');
    fs.writeFileSync(pin, 'not a namespace');
    for (const way of WAYS) {
      const st = newStarter(b);
      if (way === 'warm') {
        // Idle means spawned; its namespace comes a moment later, and only then is it handed
        // over before the pin.
        const idle = await idleOf(st, dir);
        assert.ok(await until(() => nsInode(idle, 'net') !== nsInode('self', 'net')));
      }
      const { marker, env } = probe(`pintaken-${way}`);
      const going = st.begin(spec(dir, { netns: { pin }, env: testEnv(env) }));
      const check = (e: unknown) => {
        assert.ok(isWeftError(e, 'INTERNAL'), String(e));
        assert.match(String(e.details.step), /^pin .*taken: File exists/);
        return true;
      };
      // A helper that has made its namespace is handed over before it pins it: then only
      // `prepared` fails. One spawned for the request may or may not have made it yet.
      const ns = await going.netns.catch((e: unknown) => (check(e) ? undefined : undefined));
      if (ns && ns !== 'host') ns.close();
      if (way === 'warm') assert.ok(ns !== undefined, 'an idle helper hands its namespace over early');
      await assert.rejects(going.prepared, check);
      assert.equal(fs.readFileSync(pin, 'utf8'), 'not a namespace');
      assert.ok(await until(() => noneLeft(marker, st.idlePid)));
      await st.close();
    }
    await assert.rejects(newStarter(b).prepare(spec(dir, { netns: { pin: 'relative/pin' } })), (e) =>
      isWeftError(e, 'INVALID'),
    );
  });

  test('the helper makes missing folders and writes the files; one it cannot write is a failed setup step', async (t) => {
    const b = bed(t);
    const dir = tmpDir(b);
    for (const way of WAYS) {
      const run = starter(b, way, dir);
      // Folders that do not exist yet, two levels deep, for the files and for the log.
      const s = spec(dir, {
        netns: 'host',
        filesDir: path.join(dir, way, 'deep', 'files'),
        logPath: path.join(dir, way, 'logs', 'x', 'out.log'),
      });
      const p = trackPrepared(b, await run.prepare(s));
      for (const [f, body] of [
        ['hosts', s.files.hosts],
        ['resolv.conf', s.files.resolvConf],
        ['hostname', s.files.hostname],
      ] as const) {
        const file = path.join(s.filesDir, f);
        assert.equal(fs.readFileSync(file, 'utf8'), body, f);
        assert.equal(fs.statSync(file).mode & 0o777, 0o644, f);
      }
      assert.ok(fs.existsSync(s.logPath));
      await p.cancel();
      // A files folder that is a file: nothing can be written there.
      const blocked = path.join(dir, `${way}-blocked`);
      fs.writeFileSync(blocked, '');
      const { marker, env } = probe(`nofiles-${way}`);
      await assert.rejects(
        run.prepare(spec(dir, { netns: 'host', filesDir: blocked, env: testEnv(env) })),
        (e) => {
          assert.ok(isWeftError(e, 'INTERNAL'), String(e));
          assert.match(String(e.details.step), new RegExp(`^mkdir ${blocked}: `));
          return true;
        },
      );
      assert.ok(await until(() => noneLeft(marker, run.idle())));
    }
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
      const { marker, env } = probe(`unknown${i}`);
      const s = spec(dir, { netns: c.ns, cmd, env: testEnv(env) });
      await assert.rejects(startProcess(s), (e) => {
        assert.ok(isWeftError(e), String(e));
        assert.ok(e.code === 'NOT_FOUND' || e.code === 'INVALID', `${cmd[0]}: ${e.code} ${e.message}`);
        assert.ok(e.message.includes(cmd[0] as string), e.message);
        assert.equal(e.details.command, cmd[0]);
        return true;
      });
      assert.ok(noneLeft(marker), `no process left for ${cmd[0]}`);
    }
  });

  test('a warm helper idles with nothing of a sandbox, and serves the next prepare', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const st = newStarter(b);
    await new Promise((r) => setImmediate(r));
    assert.equal(st.idlePid, undefined, 'the constructor spawns nothing');
    assert.deepEqual(helpers(), []);

    // The first prepare spawns on demand; the idle helper comes once that sandbox settled.
    const first = trackPrepared(b, await st.prepare(spec(dir, { netns: c.ns, hostname: 'one' })));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(st.idlePid, undefined, 'not while the first sandbox is still prepared');
    const r1 = track(b, await first.start());
    const idle = await idleOf(st, dir);
    assert.notEqual(idle, r1.pid);

    // The idle helper: ours, its own session, /dev/null for 0-2, fd 3 a socket, no environment,
    // still in our own UTS and mount namespaces (it knows no sandbox yet), and in a network
    // namespace of its own with lo up, made while idle for a sandbox that wants a new one.
    const s = stat(idle);
    assert.equal(s?.comm, 'perl');
    assert.equal(s?.ppid, process.pid);
    assert.equal(s?.session, idle, 'it leads its own session');
    for (const fd of [0, 1, 2]) assert.equal(fs.readlinkSync(`/proc/${idle}/fd/${fd}`), '/dev/null');
    assert.match(fs.readlinkSync(`/proc/${idle}/fd/3`), /^socket:/);
    assert.equal(fs.readFileSync(`/proc/${idle}/environ`, 'utf8'), '');
    for (const kind of ['uts', 'mnt']) assert.equal(nsInode(idle, kind), nsInode('self', kind), kind);
    // (It unshares and brings lo up as perl starts, a moment after it is spawned and counted idle.)
    const loUp = () => {
      const out = execFileSync('nsenter', [
        '--target',
        String(idle),
        '--net',
        'ip',
        '-j',
        'link',
        'show',
        'lo',
      ]);
      return (JSON.parse(String(out)) as { flags: string[] }[])[0]?.flags.includes('UP') === true;
    };
    assert.ok(
      await until(() => nsInode(idle, 'net') !== nsInode('self', 'net') && loUp()),
      'own namespace, lo up',
    );

    // The second prepare is served by it, in the spec's namespace.
    const s2 = spec(dir, {
      netns: c.ns,
      hostname: 'two',
      filesDir: path.join(dir, 'f2'),
      logPath: path.join(dir, 'two.log'),
    });
    const p2 = trackPrepared(b, await st.prepare(s2));
    assert.equal(p2.pid, idle);
    assert.equal(nsInode(idle, 'net'), c.ns.inode);
    assert.notEqual(nsInode(idle, 'uts'), nsInode('self', 'uts'));
    assert.equal(fs.readlinkSync(`/proc/${idle}/fd/1`), s2.logPath);
    const r2 = track(b, await p2.start());
    assert.deepEqual(r2.pid, idle);
    assert.equal((await inside(r2, 'hostname')).trim(), 'two');
    // ...and the next one is spawned after it.
    assert.ok(await until(() => st.idlePid !== undefined));
    assert.ok(st.idlePid !== idle && st.idlePid !== r1.pid);
  });

  test('two concurrent prepares: one gets the idle helper, the other spawns its own', async (t) => {
    const b = bed(t);
    const c1 = b.ns('c1');
    const c2 = b.ns('c2');
    const dir = tmpDir(b);
    const st = newStarter(b);
    const idle = await idleOf(st, dir);
    const specs = [c1, c2].map((c, i) =>
      spec(dir, {
        netns: c.ns,
        hostname: `con${i}`,
        filesDir: path.join(dir, `f${i}`),
        logPath: path.join(dir, `l${i}.log`),
      }),
    );
    const ps = await Promise.all(specs.map((s) => st.prepare(s).then((p) => trackPrepared(b, p))));
    assert.deepEqual(
      ps.map((p) => p.pid === idle),
      [true, false],
      'the first got the idle helper',
    );
    assert.notEqual(ps[0]?.pid, ps[1]?.pid);
    const refs = await Promise.all(ps.map((p) => p.start().then((r) => track(b, r))));
    for (const [i, ref] of refs.entries()) {
      assert.equal(nsInode(ref.pid, 'net'), [c1, c2][i]?.ns.inode);
      assert.equal((await inside(ref, 'hostname')).trim(), `con${i}`);
    }
    assert.ok(await until(() => st.idlePid !== undefined));
    assert.ok(!refs.some((r) => r.pid === st.idlePid));
    assert.deepEqual(helpers(), [st.idlePid], 'one idle helper, no more');
  });

  test('warm: 2 keeps two idle helpers, the oldest serves first, both refilled; close kills both', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const st = new ProcessStarter({ warm: 2 });
    b.onCleanup(() => st.close());
    await idleOf(st, dir);
    assert.ok(await until(() => st.idlePids.length === 2), 'a second idle helper follows the first');
    const before = st.idlePids;
    assert.deepEqual(helpers().sort(), [...before].sort());
    const refs: ProcessRef[] = [];
    for (const i of [0, 1, 2]) {
      const next = st.idlePid;
      const p = trackPrepared(
        b,
        await st.prepare(
          spec(dir, {
            netns: c.ns,
            hostname: `w${i}`,
            filesDir: path.join(dir, `w${i}`),
            logPath: path.join(dir, `w${i}.log`),
          }),
        ),
      );
      assert.equal(p.pid, next, 'served by the oldest idle helper');
      refs.push(track(b, await p.start()));
      assert.ok(await until(() => st.idlePids.length === 2), 'refilled to two');
    }
    assert.equal(refs[0]?.pid, before[0]);
    assert.equal(refs[1]?.pid, before[1]);
    const idle = st.idlePids;
    await st.close();
    for (const pid of idle) assert.ok(!fs.existsSync(`/proc/${pid}`), `idle helper ${pid} killed and reaped`);
    assert.deepEqual(helpers(), []);
    assert.throws(
      () => new ProcessStarter({ warm: 0 }),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  test('close kills the idle helper and leaves nothing; no idle helper after it', async (t) => {
    const b = bed(t);
    const dir = tmpDir(b);
    const st = newStarter(b);
    const idle = await idleOf(st, dir);
    await st.close();
    assert.ok(!fs.existsSync(`/proc/${idle}`), 'killed and reaped');
    assert.equal(st.idlePid, undefined);
    assert.deepEqual(helpers(), []);
    await st.close(); // idempotent

    // Still usable (on demand), but no idle helper comes after.
    const { marker, env } = probe('closed');
    const p = trackPrepared(
      b,
      await st.prepare(spec(dir, { netns: 'host', cmd: ['true'], env: testEnv(env) })),
    );
    assert.notEqual(p.pid, idle);
    const ref = track(b, await p.start());
    assert.ok(await waitExit(ref.pid, ref.startTime, 5000));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(st.idlePid, undefined);
    assert.deepEqual(helpers(), []);

    // Closed while the next idle helper is due (right after a start): it never comes.
    const st2 = newStarter(b);
    await idleOf(st2, dir);
    const p2 = await st2.prepare(spec(dir, { netns: 'host', cmd: ['true'], env: testEnv(env) }));
    await p2.start();
    await st2.close();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(st2.idlePid, undefined);
    assert.deepEqual(helpers(), []);
    assert.ok(await until(() => noneLeft(marker)));
  });

  test('an idle helper killed from outside is not handed out, and is replaced', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const st = newStarter(b);
    for (const sig of ['SIGKILL', 'SIGALRM'] as const) {
      // Killed just before a request: the request is served all the same, by another helper.
      const idle = await idleOf(st, dir);
      process.kill(idle, sig);
      const s = spec(dir, { netns: c.ns, hostname: `after-${sig.toLowerCase()}` });
      const ref = track(b, await (await st.prepare(s)).start());
      assert.notEqual(ref.pid, idle);
      assert.equal(nsInode(ref.pid, 'net'), c.ns.inode);
      assert.equal((await inside(ref, 'hostname')).trim(), s.hostname);

      // Killed while idle (SIGALRM: as its TTL would): noticed and replaced without a request.
      assert.ok(await until(() => st.idlePid !== undefined));
      const next = st.idlePid as number;
      process.kill(next, sig);
      assert.ok(await until(() => st.idlePid !== undefined && st.idlePid !== next, 3000), 'replaced');
      assert.ok(gone(next));
      const replacement = st.idlePid as number;
      const p = trackPrepared(b, await st.prepare({ ...s, cmd: ['true'] }));
      assert.equal(p.pid, replacement, 'the replacement serves the next request');
      await p.cancel();
      assert.deepEqual(
        helpers().filter((h) => h !== st.idlePid),
        [],
      );
    }
  });

  test('an idle helper that dies as it takes a request: another takes it, unless its namespace was handed over', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const st = newStarter(b);
    // Stopped, so that the request reaches it and it answers nothing; then killed.
    const stopped = async () => {
      const idle = await idleOf(st, dir);
      assert.ok(await until(() => nsInode(idle, 'net') !== nsInode('self', 'net')));
      process.kill(idle, 'SIGSTOP');
      return idle;
    };

    // The caller's namespace: nothing of the dead helper reached the caller, another one serves.
    let idle = await stopped();
    const s = spec(dir, { netns: c.ns, hostname: 'retried' });
    const preparing = st.prepare(s);
    process.kill(idle, 'SIGKILL');
    const p = trackPrepared(b, await preparing);
    assert.notEqual(p.pid, idle);
    const ref = track(b, await p.start());
    assert.equal(nsInode(ref.pid, 'net'), c.ns.inode);
    assert.equal((await inside(ref, 'hostname')).trim(), 'retried');

    // A pin: the dead helper's namespace was handed over at once, so no other helper may take
    // the request (its command would run in another namespace). Both settle; no pin is left.
    idle = await stopped();
    const pin = path.join(dir, 'pins', 'dies');
    b.onCleanup(() => Netns.remove(pin)); // should the helper ever pin it, the mount goes too
    const going = st.begin(spec(dir, { netns: { pin }, hostname: 'dies' }));
    process.kill(idle, 'SIGKILL');
    const ns = await going.netns;
    assert.ok(ns !== 'host');
    b.onCleanup(() => ns.close());
    await assert.rejects(going.prepared, (e) => isWeftError(e));
    assert.equal(fs.existsSync(pin), false);
    assert.ok(await until(() => gone(idle)));
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

  test('a prepared sandbox can be started after a long pause', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    const s = spec(dir, { netns: c.ns, hostname: 'late', cmd: ['sh', '-c', 'echo "late $(hostname)"'] });
    const p = trackPrepared(b, await prepareProcess(s));
    await new Promise((r) => setTimeout(r, 1500));
    const ref = track(b, await p.start());
    assert.ok(await waitExit(ref.pid, ref.startTime, 5000));
    assert.equal(readLog(s.logPath), 'late late\n');
  });

  test('mount propagation is slave: host mounts and unmounts reach the sandbox, its own never leave', async (t) => {
    const b = bed(t);
    const c = sandboxNs(b);
    const dir = tmpDir(b);
    // An outer mount namespace whose mounts are all shared (as on a systemd host), kept alive by
    // a holder process after the starter is gone.
    const holderFile = path.join(dir, 'holder');
    const wrap = outerNs('shared', ['sleep 60 </dev/null >/dev/null 2>&1 & echo $! > "$1"'], [holderFile]);
    const s = spec(dir, { netns: 'host', hostname: 'slave' });
    const { ref: started } = await startFromChild(dir, s, c.ns.path, { wrap });
    const holder = Number(fs.readFileSync(holderFile, 'utf8'));
    b.onCleanup(() => {
      try {
        process.kill(holder, 'SIGKILL');
      } catch {
        // already gone
      }
    });
    const ref = track(b, started);
    const ms = mounts(ref.pid);
    assert.match(
      ms.find((m) => m.point === '/')?.tags ?? '',
      /master:\d+/,
      'the root receives from the host',
    );
    assert.deepEqual(
      ms.filter((m) => m.tags.includes('shared:')),
      [],
      'no mount of the sandbox propagates anywhere',
    );

    const recv = path.join(dir, 'recv');
    const send = path.join(dir, 'send');
    fs.mkdirSync(recv);
    fs.mkdirSync(send);
    const outer = (...cmd: string[]) =>
      execFileP('nsenter', ['--target', String(holder), '--mount', '--', ...cmd], { timeout: 10_000 });
    await outer('mount', '-t', 'tmpfs', 'wt-recv', recv);
    assert.ok(
      mounts(ref.pid).some((m) => m.point === recv),
      'a host mount reaches the sandbox',
    );
    await outer('umount', recv);
    assert.ok(!mounts(ref.pid).some((m) => m.point === recv), 'so does its unmount');
    await inside(ref, 'mount', '-t', 'tmpfs', 'wt-send', send);
    assert.ok(mounts(ref.pid).some((m) => m.point === send));
    assert.ok(!mounts(holder).some((m) => m.point === send), "the sandbox's mount stays inside");
    assert.equal(await inside(ref, 'cat', '/etc/hostname'), 'slave\n');
  });

  test('no helper of this file is left', () => {
    assert.deepEqual(helpers(), []);
  });
});
