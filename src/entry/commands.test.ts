import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import { describe, test } from 'node:test';
import { Command } from 'commander';
import { isWeftError } from '../lib/errors.js';
import { addCommands, globalOptionsEverywhere } from './commands.js';
import { execEnv, exitStatusOf, jsonRequested, logChunk, parseTail, psPort, tailStart } from './text.js';

/** The CLI's commands with their actions replaced by a recorder: argv handling without a daemon. */
function parse(argv: string[]): { command: string; args: unknown[]; socket: unknown } {
  const program = new Command('weft').exitOverride();
  addCommands(program);
  globalOptionsEverywhere(program);
  let seen: { command: string; args: unknown[]; socket: unknown } | undefined;
  const record = (c: Command) =>
    c.exitOverride().action((...a: unknown[]) => {
      seen = {
        command: c.name(),
        args: a.slice(0, -2).concat([a.at(-2)]),
        socket: (program.opts() as { socket?: string }).socket,
      };
    });
  for (const c of program.commands) record(c);
  program.parse(argv, { from: 'user' });
  assert.ok(seen, 'an action ran');
  return seen;
}

describe('weft argv handling', () => {
  test('exec: the command keeps its options, with or without --', () => {
    assert.deepEqual(parse(['exec', 'c1', 'ls', '-l']).args, ['c1', ['ls', '-l'], {}]);
    assert.deepEqual(parse(['exec', 'c1', '--', 'ls', '-l']).args[1], ['--', 'ls', '-l']);
    assert.deepEqual(parse(['exec', 'c1', 'sh', '-c', 'echo --socket -V']).args[1], [
      'sh',
      '-c',
      'echo --socket -V',
    ]);
    // The program's own options do not reach into the command.
    assert.deepEqual(parse(['exec', 'c1', 'cat', '--socket', 'x']).args[1], ['cat', '--socket', 'x']);
  });

  test('run: options before the command are ours, after it its own', () => {
    const r = parse(['run', '-d', '--name', 'x', 'sh', '-c', 'echo hi', '--json']);
    assert.deepEqual(r.args[0], ['sh', '-c', 'echo hi', '--json']);
    assert.deepEqual(r.args[1], { detach: true, name: 'x' });
    assert.deepEqual(parse(['run', '--json', '--', 'echo', '-d']).args.slice(0, 2), [
      ['echo', '-d'],
      { json: true },
    ]);
  });

  test('--socket before or after the subcommand', () => {
    assert.equal(parse(['--socket', '/a.sock', 'ps']).socket, '/a.sock');
    assert.equal(parse(['ps', '--socket', '/b.sock', '-a']).socket, '/b.sock');
    assert.equal(parse(['daemon', '--socket', '/c.sock']).socket, '/c.sock');
    assert.equal(parse(['exec', '--socket', '/d.sock', 'c1', 'true']).socket, '/d.sock');
  });

  test('logs: --tail defaults to all, -f follows', () => {
    assert.deepEqual(parse(['logs', 'c1']).args[1], { tail: 'all' });
    assert.deepEqual(parse(['logs', '-f', '-n', '5', 'c1']).args[1], { tail: '5', follow: true });
  });

  test('JSON errors only when --json is ours (before any --)', () => {
    assert.equal(jsonRequested(['ps', '--json']), true);
    assert.equal(jsonRequested(['run', '--name', 'x', '--', 'echo', '--json']), false);
    assert.equal(jsonRequested(['run', '--json', '--', 'echo']), true);
  });

  test('through the CLI: a failing run prints JSON errors only for its own --json', () => {
    const cli = new URL('./cli.ts', import.meta.url).pathname;
    const weft = (...a: string[]) =>
      spawnSync(process.execPath, ['--import', 'tsx', cli, '--socket', '/nonexistent/weft.sock', ...a], {
        encoding: 'utf8',
        timeout: 20_000,
      });
    const plain = weft('run', '--name', 'x', '--', 'echo', '--json');
    assert.equal(plain.stdout, '');
    assert.match(plain.stderr, /^weft: the weft daemon is not running/);
    const asJson = weft('ps', '--json');
    assert.equal(asJson.status, plain.status);
    assert.equal((JSON.parse(asJson.stdout) as { error: { code: string } }).error.code, 'UNAVAILABLE');
  });
});

describe('weft output helpers', () => {
  test('ports as docker ps shows them, ranges as ranges', () => {
    assert.equal(psPort({ proto: 'tcp', hostPort: 8080, containerPort: 80 }), '*:8080->80/tcp');
    assert.equal(
      psPort({
        proto: 'tcp',
        hostPort: 8000,
        hostPortEnd: 8002,
        containerPort: 8000,
        containerPortEnd: 8002,
      }),
      '*:8000-8002->8000-8002/tcp',
    );
    assert.equal(
      psPort({ proto: 'udp', hostIp: '127.0.0.1', hostPort: 53, containerPort: 5353 }),
      '127.0.0.1:53->5353/udp',
    );
    assert.equal(psPort({ proto: 'tcp', hostIp: '::1', hostPort: 1, containerPort: 2 }), '[::1]:1->2/tcp');
  });

  test('exit status: the code, or 128 + the signal number', () => {
    assert.equal(exitStatusOf(0, null), 0);
    assert.equal(exitStatusOf(3, null), 3);
    assert.equal(exitStatusOf(null, 'SIGKILL'), 128 + os.constants.signals.SIGKILL);
    assert.equal(exitStatusOf(null, 'SIGTERM'), 143);
    assert.equal(exitStatusOf(null, 'SIGINT'), 130);
  });

  test("exec's environment: the container's, over its default PATH and HOSTNAME", () => {
    assert.deepEqual(execEnv({ env: { A: '1' }, hostname: 'web' }), {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      HOSTNAME: 'web',
      A: '1',
    });
    assert.deepEqual(execEnv({ env: { PATH: '/opt/bin', HOSTNAME: 'h' }, hostname: 'web' }), {
      PATH: '/opt/bin',
      HOSTNAME: 'h',
    });
  });

  test('--tail: a count or all', () => {
    assert.equal(parseTail(undefined), undefined);
    assert.equal(parseTail('all'), undefined);
    assert.equal(parseTail('0'), 0);
    assert.equal(parseTail('12'), 12);
    assert.throws(
      () => parseTail('-1'),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => parseTail('ten'),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  test('tailStart: where the last n lines begin, in bytes', () => {
    const log = 'é1\nb\nc\n';
    assert.equal(tailStart(log, 0), Buffer.byteLength(log));
    assert.equal(Buffer.from(log).subarray(tailStart(log, 1)).toString(), 'c\n');
    assert.equal(Buffer.from(log).subarray(tailStart(log, 2)).toString(), 'b\nc\n');
    assert.equal(tailStart(log, 3), 0);
    assert.equal(tailStart(log, 10), 0);
    assert.equal(Buffer.from('a\nb').subarray(tailStart('a\nb', 1)).toString(), 'b');
    assert.equal(tailStart('', 3), 0);
  });

  test('logChunk: a character split between two reads is printed whole, once', () => {
    const full = Buffer.from('ok 😀 é\n');
    let shown = 0;
    const printed: Buffer[] = [];
    // Every cut of the file, decoded as the API reads it (a cut character becomes U+FFFD).
    for (let cut = 0; cut <= full.length; cut++) {
      const c = logChunk(full.subarray(0, cut).toString('utf8'), shown, false);
      printed.push(c.out);
      shown = c.shown;
    }
    const last = logChunk(full.toString(), shown, true);
    printed.push(last.out);
    assert.equal(Buffer.concat(printed).toString(), 'ok 😀 é\n');
    assert.ok(!Buffer.concat(printed).includes(Buffer.from('\uFFFD')));
  });

  test('logChunk: invalid bytes still show once the log is final or has moved on', () => {
    const bad = Buffer.from([0x61, 0xff]).toString();
    assert.equal(logChunk(bad, 0, false).out.toString(), 'a');
    assert.equal(logChunk(bad, 1, true).out.toString(), '\uFFFD');
    assert.equal(logChunk(`${bad}b`, 1, false).out.toString(), '\uFFFDb');
  });
});
