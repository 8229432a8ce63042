/**
 * The cluster agent over a real embedded store (SQLite in a temp dir) and a recording backend:
 * the lease policy, the watch-diff-apply loop and the recovery paths, without root.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { formatIPNet, parseIP } from '../lib/ip.js';
import type { Backend, LeaseInfo } from '../net/backends/types.js';
import { ClusterAgent, type ClusterAgentOptions } from './cluster.js';
import { makeClusterConfig, renderClusterConfig } from './leases/config.js';
import { configKey, leaseKey } from './leases/lease.js';
import { LeaseManager } from './leases/manager.js';
import { EmbeddedRegistry } from './store/embedded.js';

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
    this.peers.set(formatIPNet(p.subnet), (p.publicIp.value as number).toString());
  }
  async removePeer(p: LeaseInfo) {
    this.peers.delete(formatIPNet(p.subnet));
  }
  async resync(peers: readonly LeaseInfo[]) {
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
