/**
 * The overlay daemon's bad input and unhappy starts: a store that does not answer (the API says
 * so and /readyz stays 503 until it does; SIGTERM ends the wait), no configuration yet, a public
 * IP or interface that does not exist, a cluster network overlapping the underlay, and a peer
 * lease that cannot be read (skipped and logged, the daemon keeps going).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type Bed, type BedNs, bed, needsRoot, RUN_ID } from '../../test/bed.js';
import type { ClusterView } from '../control/cluster.js';
import { EmbeddedRegistry } from '../control/store/embedded.js';
import { ApiClient } from './client.js';

const execFileP = promisify(execFile);
const CLI = new URL('./cli.ts', import.meta.url).pathname;

const weft = (...args: string[]) =>
  execFileP(process.execPath, ['--import', 'tsx', CLI, ...args], { timeout: 30_000 });

interface Started {
  child: ChildProcess;
  api: ApiClient;
  dir: string;
  log: () => string;
  exit: Promise<number | null>;
}

/** A daemon in `host` (not waited for: the tests look at how it starts). */
function spawnDaemon(b: Bed, host: BedNs, dir: string, args: string[]): Started {
  const socket = path.join(dir, 'run', 'weft.sock');
  const logFile = path.join(dir, 'daemon.log');
  fs.mkdirSync(dir, { recursive: true });
  const fd = fs.openSync(logFile, 'a');
  const child = b.spawn(
    host,
    process.execPath,
    [
      '--import',
      'tsx',
      CLI,
      'daemon',
      '--state-dir',
      path.join(dir, 'state'),
      '--run-dir',
      path.join(dir, 'run'),
      '--socket',
      socket,
      ...args,
    ],
    { stdio: ['ignore', fd, fd] },
  );
  fs.closeSync(fd);
  const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  return { child, api: new ApiClient(socket, 5000), dir, log: () => fs.readFileSync(logFile, 'utf8'), exit };
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function hostWithUplink(b: Bed): BedNs {
  const host = b.ns('host');
  const peer = b.ns('peer');
  host.h.links.add({ kind: 'veth', name: 'eth0', up: true, peer: { name: 'eth0', netns: peer.ns } });
  host.h.addrs.add('eth0', '192.168.60.11/24');
  return host;
}

function tempDir(b: Bed): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-cluster-`));
  b.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('an overlay daemon that cannot start yet, or must not', needsRoot, () => {
  test('a store that does not answer: /healthz ok, /readyz 503 saying why; SIGTERM ends the wait', async (t) => {
    const b = bed(t);
    const host = hostWithUplink(b);
    const dir = tempDir(b);
    // Nothing listens on this port of the host's own loopback.
    const d = spawnDaemon(b, host, path.join(dir, 'd'), ['--store', 'etcd://127.0.0.1:1', '--iface', 'eth0']);
    await until(
      'the API answers',
      async () => (await d.api.request('GET', '/healthz').catch(() => null)) !== null,
    );
    // Not ready, and why: first "opening the API" for a moment, then what it waits for.
    let why = '';
    await until('/readyz says it is joining the cluster', async () => {
      const e = await d.api.request('GET', '/readyz').then(
        () => undefined,
        (x: Error & { code?: string }) => x,
      );
      assert.equal(e?.code, 'UNAVAILABLE', 'never ready');
      why = e.message;
      return /joining the cluster/.test(why);
    });
    assert.match(why, /joining the cluster/);
    await assert.rejects(d.api.request('GET', '/v1/networks'), /starting/);
    await until('the log says it retries', () => /store not reachable yet; retrying/.test(d.log()));
    d.child.kill('SIGTERM');
    const code = await Promise.race([d.exit, new Promise((r) => setTimeout(() => r('hung'), 10_000))]);
    assert.equal(code, 0, `a stop while waiting is graceful:\n${d.log()}`);
  });

  test('no configuration yet: it waits, then joins as soon as `cluster init` writes one', async (t) => {
    const b = bed(t);
    const host = hostWithUplink(b);
    const dir = tempDir(b);
    const store = `embedded:${dir}/store.db`;
    const d = spawnDaemon(b, host, path.join(dir, 'd'), ['--store', store, '--iface', 'eth0']);
    b.onCleanup(async () => {
      d.child.kill('SIGTERM');
      await d.exit;
    });
    await until('it waits for the configuration', () =>
      /waiting for the cluster configuration/.test(d.log()),
    );
    await weft('cluster', 'init', '--store', store, '--network', '10.244.0.0/16', '--backend', 'host-gw');
    await until('ready', async () => (await d.api.request('GET', '/readyz').catch(() => null)) !== null);
    const v = await d.api.request<ClusterView>('GET', '/v1/cluster');
    assert.match(v.lease?.subnet ?? '', /^10\.244\.\d+\.0\/24$/);
  });

  test('a public IP on no interface, an unknown interface, a cluster network over the underlay: clear errors, nothing made', async (t) => {
    const b = bed(t);
    const host = hostWithUplink(b);
    const dir = tempDir(b);
    const store = `embedded:${dir}/store.db`;
    await weft('cluster', 'init', '--store', store, '--network', '192.168.0.0/16', '--backend', 'vxlan');
    const cases: [string[], RegExp][] = [
      [['--public-ip', '10.9.9.9'], /no interface has the address 10\.9\.9\.9/],
      [['--iface', 'nope0'], /interface nope0 does not exist/],
      [['--iface', 'eth0'], /cluster network 192\.168\.0\.0\/16 overlaps .*192\.168\.60\.0\/24/],
    ];
    for (const [i, [args, msg]] of cases.entries()) {
      const d = spawnDaemon(b, host, path.join(dir, `d${i}`), ['--store', store, ...args]);
      const code = await Promise.race([d.exit, new Promise((r) => setTimeout(() => r('hung'), 20_000))]);
      assert.notEqual(code, 0, `${args.join(' ')} must fail`);
      assert.match(d.log(), msg);
    }
    const links = host.h.links.list().map((l) => l.name);
    assert.deepEqual(links.sort(), ['eth0', 'lo'], 'no device was made');
    const reg = EmbeddedRegistry.open(`${dir}/store.db`);
    try {
      assert.deepEqual((await reg.list('/weft/network/subnets/')).entries, [], 'no lease was taken');
    } finally {
      await reg.close();
    }
  });

  test('a peer lease that cannot be read is skipped and logged; the daemon keeps serving', async (t) => {
    const b = bed(t);
    const host = hostWithUplink(b);
    const dir = tempDir(b);
    const store = `embedded:${dir}/store.db`;
    await weft('cluster', 'init', '--store', store, '--network', '10.244.0.0/16', '--backend', 'host-gw');
    const d = spawnDaemon(b, host, path.join(dir, 'd'), ['--store', store, '--iface', 'eth0']);
    b.onCleanup(async () => {
      d.child.kill('SIGTERM');
      await d.exit;
    });
    await until('ready', async () => (await d.api.request('GET', '/readyz').catch(() => null)) !== null);
    const reg = EmbeddedRegistry.open(`${dir}/store.db`);
    try {
      await reg.put('/weft/network/subnets/10.244.200.0-24', '{not json');
      await reg.put('/weft/network/subnets/10.244.201.0-24', '{"PublicIP": "not an address"}');
      await reg.put('/weft/network/subnets/garbage', '{}');
      await reg.put(
        '/weft/network/subnets/10.244.202.0-24',
        '{"PublicIP":"192.168.60.12","BackendType":"host-gw","BackendData":null}',
      );
    } finally {
      await reg.close();
    }
    await until('the good peer is programmed', async () => {
      const v = await d.api.request<ClusterView>('GET', '/v1/cluster');
      return v.peers.some((p) => p.subnet === '10.244.202.0/24');
    });
    await until(
      'the bad ones are logged',
      () => (d.log().match(/ignoring a lease weft cannot read/g) ?? []).length >= 2,
    );
    const routes = (await b.ipJson<{ dst: string; gateway?: string }[]>(host, '-4', 'route')).map(
      (r) => `${r.dst} ${r.gateway ?? ''}`,
    );
    assert.ok(routes.includes('10.244.202.0/24 192.168.60.12'), routes.join(', '));
    assert.equal(d.child.exitCode, null, 'still running');
  });
});
