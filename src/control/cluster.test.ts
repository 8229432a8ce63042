/**
 * The cluster agent over a real embedded store (SQLite in a temp dir) and a recording backend:
 * the lease policy, the watch-diff-apply loop and the recovery paths, without root.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { WeftError } from '../lib/errors.js';
import { formatIPNet, type IPNet, parseCidr, parseIP } from '../lib/ip.js';
import type { Backend, LeaseInfo } from '../net/backends/types.js';
import { ClusterAgent, type ClusterAgentOptions } from './cluster.js';
import { makeClusterConfig, renderClusterConfig } from './leases/config.js';
import { configKey, leaseKey, renderLeaseValue, subnetsPrefix } from './leases/lease.js';
import { LeaseManager } from './leases/manager.js';
import { EmbeddedRegistry } from './store/embedded.js';
import type { Registry } from './store/types.js';

const PREFIX = '/weft/network';

class RecordingBackend implements Backend {
  readonly type = 'vxlan' as const;
  readonly peers = new Map<string, string>();
  own: string | undefined;
  calls: string[] = [];
  async prepare() {
    return { backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' }, mtu: 1450 };
  }
  async start(own: LeaseInfo) {
    this.own = formatIPNet(own.subnet);
    this.calls.push(`start ${this.own}`);
  }
  async addPeer(p: LeaseInfo) {
    this.calls.push(`add ${formatIPNet(p.subnet)}`);
    this.peers.set(formatIPNet(p.subnet), (p.publicIp.value as number).toString());
  }
  async removePeer(p: LeaseInfo) {
    this.calls.push(`remove ${formatIPNet(p.subnet)}`);
    this.peers.delete(formatIPNet(p.subnet));
  }
  /** ms each resync takes (to stop the agent in the middle of one). */
  slowResync = 0;
  async resync(peers: readonly LeaseInfo[]) {
    if (this.slowResync > 0) await sleep(this.slowResync);
    this.calls.push('resync');
    this.peers.clear();
    for (const p of peers) await this.addPeer(p);
  }
  async stop() {
    this.calls.push('stop');
  }
  async teardown() {
    this.calls.push('teardown');
    this.peers.clear();
  }
}

interface Rig {
  dir: string;
  file: string;
  registries: EmbeddedRegistry[];
  agents: ClusterAgent[];
}

function rig(t: { after(fn: () => Promise<void>): void }): Rig {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-cluster-'));
  const r: Rig = { dir, file: path.join(dir, 'store.db'), registries: [], agents: [] };
  t.after(async () => {
    for (const a of r.agents) await a.stop().catch(() => undefined);
    for (const x of r.registries) await x.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return r;
}

function registry(r: Rig): EmbeddedRegistry {
  const x = EmbeddedRegistry.open(r.file, { pollMs: 20 });
  r.registries.push(x);
  return x;
}

async function init(r: Rig, network = '10.244.0.0/16', subnetLen?: number): Promise<void> {
  await registry(r).put(
    configKey(PREFIX),
    renderClusterConfig(makeClusterConfig({ network, subnetLen, backend: 'vxlan' })),
  );
}

async function join(
  r: Rig,
  ip: string,
  extra: Partial<ClusterAgentOptions> = {},
): Promise<{ agent: ClusterAgent; backend: RecordingBackend; env: string }> {
  const backend = new RecordingBackend();
  const env = path.join(r.dir, ip, 'subnet.env');
  const agent = await ClusterAgent.join({
    registry: registry(r),
    prefix: PREFIX,
    publicIp: parseIP(ip),
    makeBackend: () => backend,
    subnetEnvPath: env,
    ipMasq: true,
    resyncMs: 60_000,
    ...extra,
  });
  r.agents.push(agent);
  return { agent, backend, env };
}

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

async function untilAsync(what: string, cond: () => Promise<boolean>, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

test('hosts get distinct subnets, write subnet.env and learn each other; leaving is seen by the rest', async (t) => {
  const r = rig(t);
  await init(r);
  const hosts = await Promise.all(
    ['192.168.100.11', '192.168.100.12', '192.168.100.13'].map((ip) => join(r, ip)),
  );
  const subnets = hosts.map((h) => formatIPNet(h.agent.lease.subnet));
  assert.equal(new Set(subnets).size, 3, `distinct: ${subnets}`);
  for (const h of hosts) await h.agent.run();
  for (const [i, h] of hosts.entries()) {
    await until(`host ${i} sees two peers`, () => h.backend.peers.size === 2);
    assert.equal(h.backend.own, subnets[i]);
    const env = fs.readFileSync(h.env, 'utf8');
    assert.match(
      env,
      new RegExp(
        `^FLANNEL_NETWORK=10\\.244\\.0\\.0/16\nFLANNEL_SUBNET=${subnets[i]!.replace('.0/24', '.1/24').replaceAll('.', '\\.')}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n$`,
      ),
    );
  }
  const view = hosts[0]!.agent.view();
  assert.equal(view.peers.length, 2);
  assert.equal(view.lease?.subnet, subnets[0]);

  await hosts[2]!.agent.leave();
  assert.deepEqual(hosts[2]!.backend.calls.at(-1), 'teardown');
  assert.equal(fs.existsSync(hosts[2]!.env), false);
  await until(
    'the others drop the leaver',
    () => hosts[0]!.backend.peers.size === 1 && hosts[1]!.backend.peers.size === 1,
  );
  assert.equal(hosts[0]!.backend.peers.has(subnets[2]!), false);
});

test('a deleted lease is acquired again (same subnet); a restart keeps the lease; subnet.env is reused after loss', async (t) => {
  const r = rig(t);
  await init(r);
  const a = await join(r, '10.0.0.1');
  const b = await join(r, '10.0.0.2');
  await a.agent.run();
  await b.agent.run();
  const mine = a.agent.lease.subnet;
  const admin = registry(r);
  assert.equal(await admin.delete(leaseKey(PREFIX, mine)), true);
  await untilAsync(
    'the lease is in the store again',
    async () => (await admin.get(leaseKey(PREFIX, mine))) !== undefined,
  );
  assert.equal(formatIPNet(a.agent.lease.subnet), formatIPNet(mine));
  await until('b still sees a', () => b.backend.peers.has(formatIPNet(mine)));

  // Restart with the same public IP: the lease is kept, not a new one taken.
  await a.agent.stop();
  const a2 = await join(r, '10.0.0.1');
  assert.equal(formatIPNet(a2.agent.lease.subnet), formatIPNet(mine));

  // The lease gone while the host was down: subnet.env brings the same subnet back.
  await a2.agent.stop();
  await admin.delete(leaseKey(PREFIX, mine));
  const a3 = await join(r, '10.0.0.1');
  assert.equal(formatIPNet(a3.agent.lease.subnet), formatIPNet(mine));
});

test('short TTLs are renewed before they run out', async (t) => {
  const r = rig(t);
  await init(r);
  const a = await join(r, '10.0.0.1', { ttlSeconds: 2 });
  await a.agent.run();
  const first = a.agent.lease.modRevision;
  await new Promise((res) => setTimeout(res, 2600));
  const e = await registry(r).get(leaseKey(PREFIX, a.agent.lease.subnet));
  assert.ok(e, 'the lease is still there after its first TTL');
  assert.ok(a.agent.lease.modRevision > first, 'renewed');
});

test('join waits for the configuration; a full network is a clear CONFLICT', async (t) => {
  const r = rig(t);
  const pending = join(r, '10.0.0.1');
  await new Promise((res) => setTimeout(res, 300));
  await init(r, '10.9.0.0/22', 24); // three subnets to hand out
  const a = await pending;
  assert.equal(a.agent.config.subnetLen, 24);
  await join(r, '10.0.0.2');
  await join(r, '10.0.0.3');
  await assert.rejects(
    join(r, '10.0.0.4'),
    (e: Error & { code?: string }) => e.code === 'CONFLICT' && /no free subnet/.test(e.message),
  );
});

test('join gives up waiting when aborted', async (t) => {
  const r = rig(t);
  const ac = new AbortController();
  const p = ClusterAgent.join(
    {
      registry: registry(r),
      prefix: PREFIX,
      publicIp: parseIP('10.0.0.1'),
      makeBackend: () => new RecordingBackend(),
      subnetEnvPath: path.join(r.dir, 'x.env'),
      ipMasq: false,
    },
    ac.signal,
  );
  setTimeout(() => ac.abort(), 200);
  await assert.rejects(p, (e: Error & { code?: string }) => e.code === 'TIMEOUT');
});

test('renewal timing (fake clock): an hour before expiry for long TTLs, halfway for short ones', async (t) => {
  const r = rig(t);
  await init(r);
  for (const [ttl, want] of [
    [24 * 3600, 23 * 3600 * 1000],
    [60, 30_000],
  ] as const) {
    const m = new LeaseManager({
      registry: registry(r),
      prefix: PREFIX,
      publicIp: parseIP(`10.0.1.${ttl % 200}`),
      backendType: 'vxlan',
      backendData: null,
      ttlSeconds: ttl,
    });
    const l = await m.acquire(makeClusterConfig({ network: '10.244.0.0/16' }));
    const exp = l.expiresAt!;
    assert.ok(Math.abs(exp - Date.now() - ttl * 1000) < 5000, 'expiry is now + TTL');
    const now = exp - ttl * 1000; // the fake clock: the moment of acquisition
    assert.equal(m.renewDelayMs(now), want);
    assert.equal(m.renewDelayMs(exp), 0, 'overdue: renew at once');
  }
});

/** A registry whose data operations fail with UNAVAILABLE while `down` (the watch stays up). */
function flaky(inner: Registry): Registry & { down: boolean } {
  const guard = <T>(f: () => Promise<T>): Promise<T> =>
    w.down ? Promise.reject(new WeftError('UNAVAILABLE', 'store down (test)')) : f();
  const w: Registry & { down: boolean } = {
    down: false,
    kind: inner.kind,
    address: inner.address,
    get: (k) => guard(() => inner.get(k)),
    list: (p) => guard(() => inner.list(p)),
    create: (k, v, o) => guard(() => inner.create(k, v, o)),
    update: (k, v, o) => guard(() => inner.update(k, v, o)),
    put: (k, v, o) => guard(() => inner.put(k, v, o)),
    delete: (k, o) => guard(() => inner.delete(k, o)),
    watch: (p, r, h) => inner.watch(p, r, h),
    close: () => inner.close(),
  };
  return w;
}

const otherLease = (ip: string, mac: string) =>
  renderLeaseValue({ publicIp: parseIP(ip), backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac } });

test('stop() during the first listing: no watch outlives it, nothing reaches the backend after', async (t) => {
  const r = rig(t);
  await init(r);
  const a = await join(r, '10.0.0.1');
  a.backend.slowResync = 300;
  const running = a.agent.run();
  await sleep(100); // in the resync of the first listing
  await a.agent.stop();
  await running;
  const mark = a.backend.calls.length;
  await registry(r).create(
    leaseKey(PREFIX, parseCidr('10.244.77.0/24')),
    otherLease('10.0.0.9', '02:00:00:00:00:09'),
    {
      ttlSeconds: 60,
    },
  );
  await sleep(300);
  await a.agent.resync();
  assert.deepEqual(a.backend.calls.slice(mark), [], 'no addPeer (a watch) and no resync after stop');
});

test('leave() while a renewal sleeps in its retry: the lease is not created again', async (t) => {
  const r = rig(t);
  await init(r);
  const reg = flaky(registry(r));
  const a = await join(r, '10.0.0.1', { registry: reg, ttlSeconds: 2 });
  await a.agent.run();
  const admin = registry(r);
  const mine = a.agent.lease.subnet;
  reg.down = true; // longer than the TTL: the renewal (at 1 s) retries with backoff meanwhile
  await untilAsync(
    'the lease expired',
    async () => (await admin.get(leaseKey(PREFIX, mine))) === undefined,
    6000,
  );
  reg.down = false;
  await a.agent.leave();
  await sleep(500);
  const { entries } = await admin.list(subnetsPrefix(PREFIX));
  assert.deepEqual(
    entries.map((e) => e.key),
    [],
    'no lease after leave()',
  );
  await a.agent.resync();
  assert.equal(a.backend.calls.at(-1), 'teardown', 'resync after leave() does nothing');
});

test('release deletes only the revision it wrote; a closed manager refuses to acquire or renew', async (t) => {
  const r = rig(t);
  await init(r);
  const cfg = makeClusterConfig({ network: '10.244.0.0/16' });
  const manager = (ip: string, previousSubnet?: IPNet) =>
    new LeaseManager({
      registry: registry(r),
      prefix: PREFIX,
      publicIp: parseIP(ip),
      backendType: 'vxlan',
      backendData: null,
      previousSubnet,
    });
  const m1 = manager('10.0.0.1');
  const l1 = await m1.acquire(cfg);
  // The lease expires while host 1 is cut off, and host 2 takes the subnet.
  const admin = registry(r);
  assert.equal(await admin.delete(leaseKey(PREFIX, l1.subnet)), true);
  const m2 = manager('10.0.0.2', l1.subnet);
  const l2 = await m2.acquire(cfg);
  assert.equal(formatIPNet(l2.subnet), formatIPNet(l1.subnet));
  assert.equal(await m1.release(), false);
  assert.ok(await admin.get(leaseKey(PREFIX, l1.subnet)), 'host 2’s lease is still there');
  await assert.rejects(m1.acquire(cfg), (e: Error & { code?: string }) => e.code === 'INVALID');
  await assert.rejects(m1.renew(cfg), (e: Error & { code?: string }) => e.code === 'INVALID');
  m2.close();
  await assert.rejects(m2.renew(cfg), (e: Error & { code?: string }) => e.code === 'INVALID');
  assert.equal(await m2.release(), true, 'a closed manager still releases');
  assert.equal(await admin.get(leaseKey(PREFIX, l1.subnet)), undefined);
});
