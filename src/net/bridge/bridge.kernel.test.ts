import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type Bed, type BedNs, bed, needsRoot, RUN_ID } from '../../../test/bed.js';
import { openHandle } from '../../kernel/handle.js';
import { isWeftError } from '../../lib/errors.js';
import { formatIP, parseCidr, parseIP, parseIPNet } from '../../lib/ip.js';
import type { EndpointSpec, NetworkSpec } from '../driver.js';
import { createSandbox, openSandbox, removeSandbox, type Sandbox } from '../sandbox.js';
import { BridgeDriver, type BridgeFirewallState } from './driver.js';

const execFileP = promisify(execFile);

function network(over: Partial<NetworkSpec> & { v6?: boolean } = {}): NetworkSpec {
  const { v6, ...rest } = over;
  return {
    id: 'n1',
    name: 'net1',
    driver: 'bridge',
    bridge: 'wbr1',
    mtu: 1400,
    subnets: [
      { subnet: parseCidr('10.77.0.0/24'), gateway: parseIP('10.77.0.1') },
      ...(v6 ? [{ subnet: parseCidr('fd77::/64'), gateway: parseIP('fd77::1') }] : []),
    ],
    internal: false,
    icc: true,
    masquerade: true,
    options: {},
    ...rest,
  };
}

const endpoint = (
  id: string,
  networkId: string,
  addrs: string[],
  ifname = 'eth0',
  mac?: string,
): EndpointSpec => ({
  id,
  networkId,
  addresses: addrs.map(parseIPNet),
  ifname,
  ...(mac !== undefined && { mac }),
});

/** A temp run dir whose path carries the run id (the leftover check covers its mounts). */
function runDir(b: Bed): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-run-`));
  const made: Sandbox[] = [];
  b.onCleanup(() => {
    for (const s of made) {
      s.ns.close();
      removeSandbox(dir, s.id);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  runDirs.set(dir, made);
  return dir;
}
const runDirs = new Map<string, Sandbox[]>();
function sandbox(dir: string, id: string): Sandbox {
  const s = createSandbox(dir, id);
  runDirs.get(dir)?.push(s);
  return s;
}
/** A sandbox as a BedNs, for b.ping / b.exec. */
const asBed = (s: Sandbox): BedNs => ({ ns: s.ns, h: openHandle(s.ns), name: s.id });

async function nsenterIpJson<T>(s: Sandbox, ...args: string[]): Promise<T> {
  const { stdout } = await execFileP('nsenter', [`--net=${s.path}`, 'ip', '-j', ...args], {
    timeout: 10_000,
  });
  return JSON.parse(stdout || '[]') as T;
}

function setup(b: Bed, firewall?: { apply(s: BridgeFirewallState): void }, reapAfterMs?: number) {
  const host = b.ns('host');
  const dir = runDir(b);
  const driver = new BridgeDriver({
    host: host.h,
    ...(firewall && { firewall }),
    ...(reapAfterMs !== undefined && { reapAfterMs }),
  });
  return { host, dir, driver };
}

/** Poll `cond` every 20 ms for at most `ms`; true once it holds. */
async function eventually(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (cond()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('bridge driver', needsRoot, () => {
  test('two sandboxes on one network reach each other and the gateway; eth0 reads back', async (t) => {
    const b = bed(t);
    const { host, dir, driver } = setup(b);
    const net = network();
    await driver.createNetwork(net);
    await driver.createNetwork(net); // idempotent
    const br = host.h.links.get('wbr1');
    assert.equal(br.kind, 'bridge');
    assert.equal(br.mtu, 1400);
    assert.equal(br.up, true);
    assert.equal(br.kind === 'bridge' && br.vlanFiltering, false);
    assert.deepEqual(
      host.h.addrs.list({ dev: 'wbr1', family: 4 }).map((a) => `${formatIP(a.ipnet.ip)}/${a.ipnet.len}`),
      ['10.77.0.1/24'],
    );
    assert.equal(host.h.sysctl.get('net.ipv4.ip_forward'), '1');

    // The host has an eth0 of its own: the peer is named in the sandbox, where it is made.
    host.h.links.add({ kind: 'veth', name: 'eth0', peer: { name: 'weth0peer' } });
    const s1 = sandbox(dir, 's1');
    const s2 = sandbox(dir, 's2');
    const e1 = endpoint('aaaaaaa1111', 'n1', ['10.77.0.2/24']);
    const e2 = endpoint('bbbbbbb2222', 'n1', ['10.77.0.3/24']);
    await driver.createEndpoint(net, e1);
    await driver.createEndpoint(net, e2);
    await driver.join(net, e1, s1);
    await driver.join(net, e2, s2);

    assert.equal(host.h.links.get('vethaaaaaaa').masterIndex, br.index);
    assert.equal(host.h.links.get('vethaaaaaaa').mtu, 1400);
    const sh = openHandle(s1.ns);
    const eth0 = sh.links.get('eth0');
    assert.equal(eth0.mtu, 1400);
    assert.equal(eth0.up, true);
    assert.deepEqual(
      sh.addrs.list({ dev: 'eth0', family: 4 }).map((a) => `${formatIP(a.ipnet.ip)}/${a.ipnet.len}`),
      ['10.77.0.2/24'],
    );
    const [def] = sh.routes.list({ family: 4, dst: 'default' });
    assert.equal(def?.gateway && formatIP(def.gateway), '10.77.0.1');
    assert.equal(def?.oif, eth0.index);
    // No temporary name left behind.
    assert.deepEqual(
      sh.links
        .list()
        .map((l) => l.name)
        .sort(),
      ['eth0', 'lo'],
    );

    // Cross-check with iproute2 inside the pinned sandbox namespace.
    const links = await nsenterIpJson<
      { ifname: string; mtu: number; addr_info: { local: string; prefixlen: number }[] }[]
    >(s1, 'addr', 'show', 'dev', 'eth0');
    assert.equal(links[0]?.mtu, 1400);
    assert.ok(links[0]?.addr_info.some((a) => a.local === '10.77.0.2' && a.prefixlen === 24));
    const routes = await nsenterIpJson<{ dst: string; gateway?: string; dev: string }[]>(
      s1,
      'route',
      'show',
      'default',
    );
    assert.deepEqual(
      routes.map((r) => [r.dst, r.gateway, r.dev]),
      [['default', '10.77.0.1', 'eth0']],
    );

    assert.ok(await b.ping(asBed(s1), '10.77.0.3', { count: 1, deadlineS: 3 }), 's1 reaches s2');
    assert.ok(await b.ping(asBed(s2), '10.77.0.2', { count: 1, deadlineS: 3 }), 's2 reaches s1');
    assert.ok(await b.ping(asBed(s1), '10.77.0.1', { count: 1, deadlineS: 3 }), 's1 reaches the gateway');

    // leave removes the veth (both ends), idempotently.
    await driver.leave(net, e1, s1);
    await driver.leave(net, e1, s1);
    assert.equal(host.h.links.find('vethaaaaaaa'), undefined);
    assert.equal(sh.links.find('eth0'), undefined);
    await driver.deleteEndpoint(net, e1);

    // deleteNetwork takes the bridge (and weft's remaining veth), idempotently.
    await driver.deleteNetwork(net);
    await driver.deleteNetwork(net);
    assert.equal(host.h.links.find('wbr1'), undefined);
    assert.equal(host.h.links.find('vethbbbbbbb'), undefined);
    assert.equal(openHandle(s2.ns).links.find('eth0'), undefined);
  });

  test('a container going with its namespace: host end down at once, the kernel deletes the pair; a kept namespace is reaped', async (t) => {
    const b = bed(t);
    const { host, dir, driver } = setup(b, undefined, 400);
    const net = network();
    await driver.createNetwork(net);
    const [s1, s2, s3] = [sandbox(dir, 's1'), sandbox(dir, 's2'), sandbox(dir, 's3')];
    const e1 = endpoint('aaaaaaa1111', 'n1', ['10.77.0.2/24']);
    const e2 = endpoint('bbbbbbb2222', 'n1', ['10.77.0.3/24']);
    const e3 = endpoint('ccccccc3333', 'n1', ['10.77.0.4/24']);
    for (const [e, s] of [
      [e1, s1],
      [e2, s2],
      [e3, s3],
    ] as const) {
      await driver.createEndpoint(net, e);
      await driver.join(net, e, s);
    }
    assert.ok(await b.ping(asBed(s2), '10.77.0.2', { count: 1, deadlineS: 3 }), 's2 reaches s1 before');

    // Leave + delete with the namespace going: nothing deleted by hand, the host end is down
    // (off the bridge's forwarding), so s1 is cut off at once.
    await driver.leave(net, e1, s1, { namespaceGoing: true });
    await driver.deleteEndpoint(net, e1);
    assert.equal(host.h.links.get('vethaaaaaaa').up, false);
    assert.equal(openHandle(s1.ns).links.find('eth0')?.kind, 'veth', 'the pair is still there');
    assert.equal(await b.ping(asBed(s2), '10.77.0.2', { count: 1, deadlineS: 1 }), false, 's1 is cut off');
    // Its namespace goes: the kernel takes the pair along.
    s1.ns.close();
    removeSandbox(dir, s1.id);
    assert.ok(
      await eventually(() => host.h.links.find('vethaaaaaaa') === undefined, 5_000),
      'the host end went with the namespace',
    );

    // A namespace something else keeps alive (here: still pinned): the pair is deleted after reapAfterMs.
    await driver.leave(net, e2, s2, { namespaceGoing: true });
    await driver.deleteEndpoint(net, e2);
    assert.ok(host.h.links.find('vethbbbbbbb'), 'not deleted at once');
    assert.ok(
      await eventually(() => host.h.links.find('vethbbbbbbb') === undefined, 3_000),
      'reaped after reapAfterMs',
    );
    assert.equal(openHandle(s2.ns).links.find('eth0'), undefined, 'its peer went with it');
    // Leaving an endpoint whose veth is gone already is fine; s3 was never touched.
    await driver.leave(net, e2, s2, { namespaceGoing: true });
    assert.equal(host.h.links.get('vethccccccc').up, true);
    await driver.deleteNetwork(net);
  });

  test('dual stack: IPv6 gateway with nodad, v6 default route, ping -6 between sandboxes', async (t) => {
    const b = bed(t);
    const { host, dir, driver } = setup(b);
    const net = network({ v6: true });
    await driver.createNetwork(net);
    assert.equal(host.h.sysctl.get('net.ipv6.conf.all.forwarding'), '1');
    const s1 = sandbox(dir, 's1');
    const s2 = sandbox(dir, 's2');
    const e1 = endpoint('c1c1c1c1', 'n1', ['10.77.0.2/24', 'fd77::2/64']);
    const e2 = endpoint('c2c2c2c2', 'n1', ['10.77.0.3/24', 'fd77::3/64']);
    for (const [e, s] of [
      [e1, s1],
      [e2, s2],
    ] as const) {
      await driver.createEndpoint(net, e);
      await driver.join(net, e, s);
    }
    const [def6] = openHandle(s1.ns).routes.list({ family: 6, dst: 'default' });
    assert.equal(def6?.gateway && formatIP(def6.gateway), 'fd77::1');
    const r6 = await nsenterIpJson<{ gateway?: string; dev: string }[]>(s1, '-6', 'route', 'show', 'default');
    assert.equal(r6[0]?.gateway, 'fd77::1');
    assert.ok(await b.ping(asBed(s1), 'fd77::3', { count: 1, deadlineS: 4 }), 's1 reaches s2 over IPv6');
    assert.ok(await b.ping(asBed(s2), 'fd77::1', { count: 1, deadlineS: 4 }), 's2 reaches the v6 gateway');
  });

  test('a second network gives the same sandbox eth1, without a second default route', async (t) => {
    const b = bed(t);
    const { host, dir, driver } = setup(b);
    const n1 = network();
    const n2 = network({
      id: 'n2',
      name: 'net2',
      bridge: 'wbr2',
      mtu: 1500,
      subnets: [{ subnet: parseCidr('10.78.0.0/24'), gateway: parseIP('10.78.0.1') }],
    });
    await driver.createNetwork(n1);
    await driver.createNetwork(n2);
    const s = sandbox(dir, 's1');
    await driver.createEndpoint(n1, endpoint('d1d1d1d1', 'n1', ['10.77.0.2/24']));
    await driver.join(n1, endpoint('d1d1d1d1', 'n1', ['10.77.0.2/24']), s);
    const e2 = endpoint('d2d2d2d2', 'n2', ['10.78.0.2/24'], 'eth1', '02:42:0a:4e:00:02');
    await driver.createEndpoint(n2, e2);
    await driver.join(n2, e2, s);
    const sh = openHandle(s.ns);
    const eth1 = sh.links.get('eth1');
    assert.equal(eth1.mtu, 1500);
    assert.equal(eth1.mac, '02:42:0a:4e:00:02');
    assert.equal(host.h.links.get('vethd2d2d2d').masterIndex, host.h.links.get('wbr2').index);
    const defs = sh.routes.list({ family: 4, dst: 'default' });
    assert.equal(defs.length, 1);
    assert.equal(defs[0]?.oif, sh.links.get('eth0').index);
    assert.ok(await b.ping(asBed(s), '10.78.0.1', { count: 1, deadlineS: 3 }), 'reaches the second gateway');
  });

  test('a join that fails midway leaves no veth on the host or in the sandbox', async (t) => {
    const b = bed(t);
    const applied: BridgeFirewallState[] = [];
    const { host, dir, driver } = setup(b, { apply: (s) => void applied.push(s) });
    const net = network();
    await driver.createNetwork(net);
    const s = sandbox(dir, 's1');
    const e1 = endpoint('e1e1e1e1', 'n1', ['10.77.0.2/24']);
    await driver.createEndpoint(net, e1);
    await driver.join(net, e1, s);
    const sh = openHandle(s.ns);
    const before = sh.links
      .list()
      .map((l) => l.name)
      .sort();
    const hostBefore = host.h.links
      .list()
      .map((l) => l.name)
      .sort();
    const appliedBefore = applied.length;

    // The rename to eth0 fails: the sandbox already has one (the veth was made by then).
    const clash = endpoint('e2e2e2e2', 'n1', ['10.77.0.3/24'], 'eth0');
    await driver.createEndpoint(net, clash);
    await assert.rejects(driver.join(net, clash, s), (e) => isWeftError(e, 'EXISTS'));
    // The kernel refuses a multicast MAC (after the veth and the rename).
    const mcast = endpoint('e3e3e3e3', 'n1', ['10.77.0.4/24'], 'eth1', '01:00:5e:00:00:01');
    await driver.createEndpoint(net, mcast);
    await assert.rejects(driver.join(net, mcast, s), (e) => isWeftError(e) && e.code !== 'INTERNAL');
    assert.deepEqual(
      sh.links
        .list()
        .map((l) => l.name)
        .sort(),
      before,
    );
    assert.deepEqual(
      host.h.links
        .list()
        .map((l) => l.name)
        .sort(),
      hostBefore,
    );
    assert.equal(applied.length, appliedBefore, 'firewall not re-applied for failed joins');
    assert.deepEqual(
      driver.firewallState().networks[0]?.endpoints.map((x) => x.hostIf),
      ['vethe1e1e1e'],
    );
  });

  test('a firewall hook failure undoes the join; the hook sees networks and endpoints', async (t) => {
    const b = bed(t);
    let fail = false;
    const seen: BridgeFirewallState[] = [];
    const { host, dir, driver } = setup(b, {
      apply(st) {
        if (fail) throw new Error('nft refused');
        seen.push(st);
      },
    });
    const net = network();
    await driver.createNetwork(net);
    assert.equal(seen.at(-1)?.networks[0]?.net.id, 'n1');
    const s = sandbox(dir, 's1');
    const e = endpoint('f1f1f1f1', 'n1', ['10.77.0.2/24']);
    await driver.createEndpoint(net, e);
    fail = true;
    await assert.rejects(driver.join(net, e, s), /nft refused/);
    assert.equal(host.h.links.find('vethf1f1f1f'), undefined);
    assert.equal(openHandle(s.ns).links.find('eth0'), undefined);
    fail = false;
    await driver.join(net, e, s);
    assert.deepEqual(
      seen.at(-1)?.networks[0]?.endpoints.map((x) => [x.sandboxId, x.hostIf]),
      [['s1', 'vethf1f1f1f']],
    );
  });

  test("a bridge that is not weft's is refused and left as it was; weft's own keep their MAC as ports come and go", async (t) => {
    const b = bed(t);
    const { host, dir, driver } = setup(b);
    // Someone else's bridge (Docker's docker0) under the name asked for.
    host.h.links.add({ kind: 'bridge', name: 'docker0', mtu: 9000, up: true });
    host.h.links.add({ kind: 'veth', name: 'veth1a2b3c4', master: 'docker0', peer: { name: 'veth1a2b3c5' } });
    const theirs = network({ id: 'n9', bridge: 'docker0' });
    const mtu = host.h.links.get('docker0').mtu;
    await assert.rejects(
      driver.createNetwork(theirs),
      (e) => isWeftError(e, 'CONFLICT') && /not weft's/.test(e.message),
    );
    const br = host.h.links.get('docker0');
    assert.equal(br.mtu, mtu, 'MTU untouched');
    assert.equal(br.alias, undefined);
    assert.deepEqual(host.h.addrs.list({ dev: 'docker0', family: 4 }), [], 'no gateway address');
    assert.ok(host.h.links.find('veth1a2b3c4'), 'its port untouched');
    // At the daemon's start, a bridge of a network weft has is taken as weft's (made before the alias).
    host.h.links.add({ kind: 'bridge', name: 'wbr1', up: true });
    await driver.createNetwork(network(), { restore: true });
    assert.equal(host.h.links.get('wbr1').alias, 'weft network n1');
    await driver.deleteNetwork(network());

    // A new bridge: weft's alias, and a MAC of its own that the ports do not move.
    const net = network();
    await driver.createNetwork(net);
    const made = host.h.links.get('wbr1');
    assert.equal(made.alias, 'weft network n1');
    await driver.createNetwork(net); // idempotent: its own alias
    const s1 = sandbox(dir, 's1');
    const s2 = sandbox(dir, 's2');
    // Host ends with MACs below and above the bridge's: without a MAC of its own, the bridge
    // would take the lowest port's.
    const e1 = endpoint('a1a1a1a1', 'n1', ['10.77.0.2/24']);
    const e2 = endpoint('b2b2b2b2', 'n1', ['10.77.0.3/24']);
    for (const [e, sb] of [
      [e1, s1],
      [e2, s2],
    ] as const) {
      await driver.createEndpoint(net, e);
      await driver.join(net, e, sb);
      assert.equal(host.h.links.get('wbr1').mac, made.mac);
    }
    host.h.links.setMac(`veth${e1.id.slice(0, 7)}`, '02:00:00:00:00:01');
    await driver.leave(net, e2, s2);
    await driver.deleteEndpoint(net, e2);
    assert.equal(host.h.links.get('wbr1').mac, made.mac, 'the gateway MAC stays');
    await driver.leave(net, e1, s1);
    await driver.deleteEndpoint(net, e1);
    await driver.deleteNetwork(net);
    assert.ok(host.h.links.find('docker0'), "someone else's bridge is still there");
    // A name the kernel would expand (br%d makes br0) is no name for a bridge.
    await assert.rejects(driver.createNetwork(network({ bridge: 'br%d' })), (e) => isWeftError(e, 'INVALID'));
    assert.equal(host.h.links.find('br0'), undefined);
  });

  test("a join whose host veth name is another endpoint's fails with EXISTS, and deleting it spares the other", async (t) => {
    const b = bed(t);
    const { host, dir, driver } = setup(b);
    const net = network();
    await driver.createNetwork(net);
    const s1 = sandbox(dir, 's1');
    const s2 = sandbox(dir, 's2');
    // Host veth names take 7 characters of the id: these two share theirs.
    const e1 = endpoint('c0ffee01aaaa', 'n1', ['10.77.0.2/24']);
    const e2 = endpoint('c0ffee02bbbb', 'n1', ['10.77.0.3/24']);
    await driver.createEndpoint(net, e1);
    await driver.join(net, e1, s1);
    await driver.createEndpoint(net, e2);
    await assert.rejects(driver.join(net, e2, s2), (e) => isWeftError(e, 'EXISTS'));
    await driver.deleteEndpoint(net, e2); // what the caller's rollback does
    assert.ok(host.h.links.find('vethc0ffee0'), "the other endpoint's veth is still there");
    assert.ok(openHandle(s1.ns).links.find('eth0'));
    await b.ping(asBed(s1), '10.77.0.1');
    await driver.leave(net, e1, s1);
    await driver.deleteEndpoint(net, e1);
    assert.equal(host.h.links.find('vethc0ffee0'), undefined);
  });

  test('bad input is a typed error and changes nothing', async (t) => {
    const b = bed(t);
    const { host, dir, driver } = setup(b);
    const linksBefore = host.h.links
      .list()
      .map((l) => l.name)
      .sort();
    await assert.rejects(driver.createNetwork(network({ bridge: 'a-bridge-name-too-long' })), (e) =>
      isWeftError(e, 'INVALID'),
    );
    await assert.rejects(
      driver.createNetwork(
        network({ subnets: [{ subnet: parseCidr('10.77.0.0/24'), gateway: parseIP('10.99.0.1') }] }),
      ),
      (e) => isWeftError(e, 'INVALID'),
    );
    await assert.rejects(driver.createNetwork(network({ mtu: 10 })), (e) => isWeftError(e, 'INVALID'));
    assert.deepEqual(
      host.h.links
        .list()
        .map((l) => l.name)
        .sort(),
      linksBefore,
    );

    const s = sandbox(dir, 's1');
    const unknown = network({ id: 'nope', name: 'nope', bridge: 'wbrx' });
    const e = endpoint('g1g1g1g1', 'nope', ['10.77.0.2/24']);
    await assert.rejects(driver.createEndpoint(unknown, e), (x) => isWeftError(x, 'NOT_FOUND'));
    await assert.rejects(driver.join(unknown, e, s), (x) => isWeftError(x, 'NOT_FOUND'));

    const net = network();
    await driver.createNetwork(net);
    const bad: [EndpointSpec, string][] = [
      [endpoint('g2g2g2g2', 'n1', ['10.88.0.2/24']), 'address outside the subnets'],
      [endpoint('g3g3g3g3', 'n1', ['10.77.0.2/16']), 'wrong prefix length'],
      [endpoint('g4g4g4g4', 'n1', ['10.77.0.1/24']), 'the gateway address'],
      [endpoint('g5g5g5g5', 'n1', ['10.77.0.2/24'], 'eth0', 'zz:00'), 'bad MAC'],
      [endpoint('g6g6g6g6', 'n1', ['10.77.0.2/24'], 'an-interface-name-too-long'), 'ifname too long'],
      [endpoint('g7g7g7g7', 'n2', ['10.77.0.2/24']), 'endpoint of another network'],
      [endpoint('short', 'n1', ['10.77.0.2/24']), 'id too short'],
    ];
    const before = host.h.links
      .list()
      .map((l) => l.name)
      .sort();
    for (const [ep, why] of bad) {
      await assert.rejects(driver.createEndpoint(net, ep), (x) => isWeftError(x, 'INVALID'), why);
      await assert.rejects(driver.join(net, ep, s), (x) => isWeftError(x, 'INVALID'), why);
    }
    assert.deepEqual(
      host.h.links
        .list()
        .map((l) => l.name)
        .sort(),
      before,
    );
    assert.deepEqual(
      openHandle(s.ns)
        .links.list()
        .map((l) => l.name),
      ['lo'],
    );

    // A bridge with a port weft does not own is not removed.
    host.h.links.add({ kind: 'veth', name: 'uplink0', master: 'wbr1', peer: { name: 'uplink1' } });
    await assert.rejects(driver.deleteNetwork(net), (x) => isWeftError(x, 'BUSY'));
    assert.ok(host.h.links.find('wbr1'));
    host.h.links.delete('uplink0');
    await driver.deleteNetwork(net);
    assert.equal(host.h.links.find('wbr1'), undefined);
  });
});

describe('sandboxes', needsRoot, () => {
  test('create pins a namespace with lo up; open finds it; remove is idempotent', async (t) => {
    const b = bed(t);
    const dir = runDir(b);
    const s = createSandbox(dir, 'sb1');
    try {
      assert.equal(s.path, path.join(dir, 'netns', 'sb1'));
      assert.equal(openHandle(s.ns).links.get('lo').up, true);
      const again = openSandbox(dir, 'sb1');
      assert.ok(again.ns.sameAs(s.ns));
      again.ns.close();
      assert.throws(
        () => createSandbox(dir, 'sb1'),
        (e) => isWeftError(e, 'EXISTS'),
      );
      assert.throws(
        () => createSandbox(dir, '../x'),
        (e) => isWeftError(e, 'INVALID'),
      );
    } finally {
      s.ns.close();
    }
    removeSandbox(dir, 'sb1');
    removeSandbox(dir, 'sb1');
    assert.equal(fs.existsSync(s.path), false);
    assert.throws(
      () => openSandbox(dir, 'sb1'),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
  });
});
