import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { KernelError } from '../lib/errors.js';
import { type Spawned, spawnWithControl, spawnWithControlAsync } from './spawn.js';

const PERL = '/usr/bin/perl';

/** All the child says on fd 3 until it closes it. */
function readAll(c: Spawned): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    c.control.on('data', (d: Buffer) => {
      out += d.toString();
    });
    c.control.once('end', () => resolve(out));
    c.control.once('error', reject);
  });
}

/** The exit, bounded (a timer also keeps the event loop alive while waiting). */
async function exitOf(c: Spawned, ms = 10_000) {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`pid ${c.pid} did not exit in ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([c.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const killQuietly = (c: Spawned) => {
  try {
    process.kill(c.pid, 'SIGKILL');
  } catch {}
};

describe('spawnWithControl', () => {
  test('the child gets /dev/null on 0-2, the socket on 3 and nothing else, exactly the env, its own session, default signals', async (t) => {
    // Node ignores SIGPIPE; the child must not inherit that.
    const script = String.raw`
      open(my $c, '+<&=', 3) or exit 9;
      my @fds = map { my $l = readlink("/proc/self/fd/$_"); "$_=$l" } grep { /^\d+$/ } do { opendir(my $d, '/proc/self/fd'); readdir($d) };
      open(my $st, '<', '/proc/self/status'); my %s = map { /^(\w+):\s*(.*)$/ ? ($1, $2) : () } <$st>;
      open(my $ps, '<', '/proc/self/stat'); my @f = split(/ /, (split(/\) /, <$ps>))[1]);
      syswrite($c, join("\n", "fds " . join(',', sort @fds), "env " . join(',', map { "$_=$ENV{$_}" } sort keys %ENV), "sid $f[3] pid $$", "ign $s{SigIgn}", "blk $s{SigBlk}") . "\n");
      exit 0;`;
    const c = spawnWithControl(PERL, [PERL, '-e', script], { FOO: 'bar baz', EMPTY: '' });
    t.after(() => killQuietly(c));
    const [out, st] = await Promise.all([readAll(c), exitOf(c)]);
    assert.deepEqual(st, { code: 0, signal: null });
    const lines = Object.fromEntries(
      out
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, 3), l.slice(4)]),
    );
    const fds = (lines.fds ?? '').split(',');
    assert.equal(fds.length, 5, `fds: ${lines.fds}`); // 0-3 and the one readdir has open
    for (const fd of ['0', '1', '2']) assert.ok(fds.includes(`${fd}=/dev/null`), `fd ${fd}: ${lines.fds}`);
    assert.match(lines.fds ?? '', /3=socket:\[\d+\]/);
    assert.equal(lines.env, 'EMPTY=,FOO=bar baz');
    assert.equal(lines.sid, `${c.pid} pid ${c.pid}`, 'its own session, led by itself');
    assert.equal(lines.ign, '0000000000000080', 'no signal ignored but SIGFPE, which perl ignores itself');
    assert.equal(lines.blk, '0000000000000000', 'no signal blocked');
  });

  test('the control socket carries words both ways', async (t) => {
    const c = spawnWithControl(
      PERL,
      [PERL, '-e', 'open(my $c, "+<&=", 3); sysread($c, my $b, 5); syswrite($c, uc($b)); exit 0'],
      {},
    );
    t.after(() => killQuietly(c));
    const got = readAll(c);
    c.control.write('hello');
    assert.equal(await got, 'HELLO');
    assert.deepEqual(await exitOf(c), { code: 0, signal: null });
  });

  test('exit codes and signals are decoded; status is set once it ended', async (t) => {
    const code = spawnWithControl('/bin/sh', ['sh', '-c', 'exit 7'], {});
    const sleeper = spawnWithControl('/bin/sleep', ['sleep', '30'], {});
    t.after(() => killQuietly(sleeper));
    assert.deepEqual(await exitOf(code), { code: 7, signal: null });
    assert.deepEqual(code.status, { code: 7, signal: null });
    assert.equal(sleeper.status, undefined);
    process.kill(sleeper.pid, 'SIGTERM');
    assert.deepEqual(await exitOf(sleeper), { code: null, signal: 'SIGTERM' });
    assert.equal(fs.existsSync(`/proc/${sleeper.pid}`), false, 'reaped: no zombie left');
  });

  test('many children ending together are all reaped (coalesced SIGCHLD), then the listener goes', async () => {
    const before = process.listenerCount('SIGCHLD');
    const kids = Array.from({ length: 25 }, () => spawnWithControl('/bin/true', ['true'], {}));
    const sts = await Promise.all(kids.map((k) => exitOf(k)));
    assert.ok(sts.every((s) => s.code === 0));
    for (const k of kids) assert.equal(fs.existsSync(`/proc/${k.pid}`), false, `pid ${k.pid} reaped`);
    assert.equal(process.listenerCount('SIGCHLD'), before);
  });

  test('async: same child, spawned on the thread pool; one that ends at once is still reaped', async (t) => {
    const c = await spawnWithControlAsync(
      PERL,
      [PERL, '-e', 'open(my $c, "+<&=", 3); syswrite($c, "up $$"); exit 4'],
      {},
    );
    t.after(() => killQuietly(c));
    const [out, st] = await Promise.all([readAll(c), exitOf(c)]);
    assert.equal(out, `up ${c.pid}`);
    assert.deepEqual(st, { code: 4, signal: null });
    // /bin/true may end (and its SIGCHLD be handled) before the pool thread reports its pid.
    const quick = await Promise.all(
      Array.from({ length: 10 }, () => spawnWithControlAsync('/bin/true', ['true'], {})),
    );
    for (const q of quick) assert.deepEqual(await exitOf(q), { code: 0, signal: null });
    await assert.rejects(
      spawnWithControlAsync('/nonexistent/prog', ['prog'], {}),
      (e: unknown) => e instanceof KernelError && e.errno === 2,
    );
    assert.equal(process.listenerCount('SIGCHLD'), 0);
  });

  test('a missing program throws ENOENT and leaves no fd or listener behind', () => {
    const fds = fs.readdirSync('/proc/self/fd').length;
    const listeners = process.listenerCount('SIGCHLD');
    assert.throws(
      () => spawnWithControl('/nonexistent/prog', ['prog'], {}),
      (e: unknown) => e instanceof KernelError && e.errno === 2 && e.code === 'NOT_FOUND',
    );
    assert.equal(fs.readdirSync('/proc/self/fd').length, fds);
    assert.equal(process.listenerCount('SIGCHLD'), listeners);
  });
});
