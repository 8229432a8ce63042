import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type Bed, bed, needsRoot } from '../../../../test/bed.js';
import * as libc from '../../../kernel/libc.js';
import { isWeftError } from '../../../lib/errors.js';
import { formatIPNet, parseCidr, parseIP } from '../../../lib/ip.js';
import { buildTestbed, capture, peersOf, setPodMtu, type Testbed, type TestHost } from '../testbed.js';
import { createUdpBackend, UDP_DEVICE, type UdpBackend, type UdpOptions } from './udp.js';

const here = path.dirname(fileURLToPath(import.meta.url));

interface Cluster {
  tb: Testbed;
  backends: UdpBackend[];
}

/** A testbed of `n` hosts, each running a started udp backend that knows every other host. */
async function cluster(b: Bed, n: number, opts: UdpOptions = {}): Promise<Cluster> {
  const tb = buildTestbed(b, { hosts: n, backendType: 'udp' });
  const backends = tb.hosts.map((h) => createUdpBackend({ type: 'udp' }, h.ctx, opts));
  // Stopped before the bed removes the namespaces (bed cleanups run first).
  b.onCleanup(async () => {
    for (const x of backends) await x.teardown();
  });
  const leases = tb.hosts.map((h) => h.lease);
  for (const [i, h] of tb.hosts.entries()) {
    const { mtu } = await backends[i]!.prepare();
    setPodMtu(h, mtu);
    await backends[i]!.start(h.lease);
    await backends[i]!.resync(peersOf(leases, h.lease));
  }
  return { tb, backends };
}

const ping = (b: Bed, from: TestHost, to: string) => b.ping(from.container, to, { count: 1, deadlineS: 3 });

/** Hex bytes of tcpdump -x output lines (the IP packet, without the link header). */
function hexPackets(lines: readonly string[]): Uint8Array[] {
  const out: number[][] = [];
  for (const l of lines) {
    const m = /^\s+0x([0-9a-f]{4}):\s+((?:[0-9a-f]{2,4}\s?)+)/.exec(l);
    if (!m) continue;
    if (m[1] === '0000') out.push([]);
    const hex = m[2]!.replace(/\s+/g, '');
    for (let i = 0; i + 1 < hex.length; i += 2) out.at(-1)?.push(Number.parseInt(hex.slice(i, i + 2), 16));
  }
  return out.map((p) => Uint8Array.from(p));
}
const ipAt = (p: Uint8Array, off: number): string => Array.from(p.subarray(off, off + 4)).join('.');

/** Send one UDP datagram from inside a host namespace (bound to `src`), with a raw payload. */
function sendUdp(h: TestHost, src: string, dst: string, port: number, payload: Uint8Array): void {
  const fd = h.ns.ns.run(() => libc.socket(libc.AF_INET, libc.SOCK.DGRAM | libc.SOCK.CLOEXEC, 0));
  try {
    const sa = (ip: string, p: number) => {
      const b = new Uint8Array(16);
      const dv = new DataView(b.buffer);
      dv.setUint16(0, libc.AF_INET, true);
      dv.setUint16(2, p, false);
      dv.setUint32(4, parseIP(ip).value as number, false);
      return b;
    };
    libc.bind(fd, sa(src, 0));
    libc.sendto(fd, payload, sa(dst, port));
  } finally {
    libc.close(fd);
  }
}

/** A minimal IPv4 header (enough for the backend's checks) from src to dst. */
function innerPacket(src: string, dst: string): Uint8Array {
  const p = new Uint8Array(28);
  const dv = new DataView(p.buffer);
  p[0] = 0x45;
  dv.setUint16(2, p.length);
  p[8] = 64;
  p[9] = 17;
  dv.setUint32(12, parseIP(src).value as number);
  dv.setUint32(16, parseIP(dst).value as number);
  return p;
}

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await sleep(20);
  }
  assert.fail(`timed out after ${ms} ms waiting for: ${what}`);
}

describe('udp backend', needsRoot, () => {
  test('three hosts: containers reach each other by ping and TCP; the TUN is as specified', async (t: TestContext) => {
    const b = bed(t);
    const { tb, backends } = await cluster(b, 3);
    const [h0, h1, h2] = tb.hosts as [TestHost, TestHost, TestHost];

    assert.deepEqual(await backends[0]!.prepare(), { backendData: null, mtu: 1472 });
    for (const h of tb.hosts) {
      const dev = h.ns.h.links.get(UDP_DEVICE);
      assert.equal(dev.kind, 'tun');
      assert.equal(dev.mtu, 1500 - 28);
      assert.equal(dev.up, true);
      const addrs = h.ns.h.addrs.list({ dev: UDP_DEVICE, family: 4 }).map((a) => formatIPNet(a.ipnet));
      assert.deepEqual(addrs, [`10.244.${h.index + 1}.0/16`]);
      // The cluster route goes into the TUN; the local /24 stays on the bridge.
      assert.equal(h.ns.h.routes.get(`10.244.${((h.index + 1) % 3) + 1}.2`).dev, UDP_DEVICE);
      assert.equal(h.ns.h.routes.get(h.containerIp).dev, h.bridge);
    }

    for (const from of tb.hosts) {
      for (const to of tb.hosts) {
        if (from === to) continue;
        assert.ok(await ping(b, from, to.containerIp), `${from.label} → ${to.label} by ping`);
      }
    }

    // TCP both ways: 1 MB up, its byte count back.
    for (const [from, to] of [
      [h0, h2],
      [h2, h0],
    ] as const) {
      b.spawn(to.container, 'socat', ['-T', '5', 'TCP-LISTEN:7000,reuseaddr', 'SYSTEM:wc -c']);
      await until('socat listens', async () => {
        const ss = await b.exec(to.container, 'ss', ['-Hltn', 'sport = :7000']);
        return ss.stdout.trim().length > 0;
      });
      const { stdout } = await b.exec(
        from.container,
        'sh',
        ['-c', `head -c 1000000 /dev/zero | socat -T 5 - TCP:${to.containerIp}:7000`],
        { timeoutMs: 15_000 },
      );
      assert.equal(stdout.trim(), '1000000', `${from.label} → ${to.label} by TCP`);
    }
    const s = backends[0]!.stats();
    assert.ok(s.txPackets > 700, `host 0 sent ${s.txPackets} packets`);
    assert.ok(s.rxPackets > 0);
    assert.equal(s.running, true);
    assert.equal(s.workers, 2);
    assert.equal(s.peers, 2);
    void h1;
  });

  test('on the underlay: UDP to port 8285 carrying the raw inner IPv4 packet', async (t) => {
    const b = bed(t);
    const { tb } = await cluster(b, 2);
    const [h0, h1] = tb.hosts as [TestHost, TestHost];
    const lines = await capture(
      b,
      tb.switch,
      { iface: h0.switchPort, filter: ['udp', 'port', '8285'], flags: ['-x'], count: 2, timeoutS: 5 },
      () => ping(b, h0, h1.containerIp),
    );
    const pkts = hexPackets(lines);
    assert.equal(pkts.length, 2, lines.join('\n'));
    const [req, rep] = pkts as [Uint8Array, Uint8Array];
    // Outer: IPv4/UDP between the public IPs, 8285 → 8285.
    assert.equal(req[9], 17);
    assert.equal(ipAt(req, 12), h0.publicIp);
    assert.equal(ipAt(req, 16), h1.publicIp);
    const udp = new DataView(req.buffer, 20);
    assert.equal(udp.getUint16(0), 8285);
    assert.equal(udp.getUint16(2), 8285);
    // Inner, right after the 8-byte UDP header: the container's own ICMP echo, untouched.
    assert.equal(req[28], 0x45);
    assert.equal(req[28 + 9], 1);
    assert.equal(ipAt(req, 28 + 12), h0.containerIp);
    assert.equal(ipAt(req, 28 + 16), h1.containerIp);
    assert.equal(req[48], 8, 'echo request');
    assert.equal(udp.getUint16(4), req.length - 20, 'UDP length = 8 + the inner packet');
    assert.equal(ipAt(rep, 28 + 12), h1.containerIp);
    assert.equal(ipAt(rep, 28 + 16), h0.containerIp);
    assert.equal(rep[48], 0, 'echo reply');
  });

  test('drops are counted: no route, unknown peer, not our subnet; removePeer cuts a peer', async (t) => {
    const b = bed(t);
    const { tb, backends } = await cluster(b, 3);
    const [h0, h1, h2] = tb.hosts as [TestHost, TestHost, TestHost];
    const [u0, u1] = backends as [UdpBackend, UdpBackend];

    // A destination in the cluster network that no host leases.
    assert.equal(await ping(b, h0, '10.244.99.2'), false);
    await until('no-route drop counted', () => u0.stats().dropNoRoute >= 1);

    // From an address that is no peer's (a second address on host 1's eth0).
    h1.ns.h.addrs.add('eth0', '192.168.100.99/24');
    sendUdp(h1, '192.168.100.99', h0.publicIp, 8285, innerPacket('10.244.2.2', h0.containerIp));
    await until('unknown-peer drop counted', () => u0.stats().dropUnknownPeer >= 1);
    // From a peer, but for a subnet that is not host 0's.
    sendUdp(h1, h1.publicIp, h0.publicIp, 8285, innerPacket('10.244.2.2', h2.containerIp));
    await until('not-ours drop counted', () => u0.stats().dropNotOurs >= 1);
    // Not IPv4 at all.
    sendUdp(h1, h1.publicIp, h0.publicIp, 8285, new Uint8Array(40).fill(0x60, 0, 1));
    await until('malformed drop counted', () => u0.stats().dropMalformed >= 1);

    // removePeer: host 0 no longer sends to host 1, and drops what host 1 still sends.
    assert.ok(await ping(b, h0, h1.containerIp));
    const before = u0.stats();
    await u0.removePeer(h1.lease);
    assert.equal(u0.stats().peers, 1);
    assert.equal(await ping(b, h0, h1.containerIp), false);
    assert.equal(await ping(b, h1, h0.containerIp), false);
    const after = u0.stats();
    assert.ok(after.dropNoRoute > before.dropNoRoute, 'host 0 → host 1 dropped: no route');
    assert.ok(after.dropUnknownPeer > before.dropUnknownPeer, 'host 1 → host 0 dropped: unknown peer');
    assert.ok(await ping(b, h0, h2.containerIp), 'the other peer is untouched');
    await u0.addPeer(h1.lease);
    assert.ok(await ping(b, h0, h1.containerIp));
    void u1;
  });

  test('resync restores the device after it was broken by hand, and drops leases no longer listed', async (t) => {
    const b = bed(t);
    const { tb, backends } = await cluster(b, 2);
    const [h0, h1] = tb.hosts as [TestHost, TestHost];
    const u0 = backends[0]!;
    // Drift: address removed, MTU changed, device down.
    h0.ns.h.addrs.flush(UDP_DEVICE, 4);
    h0.ns.h.links.setMtu(UDP_DEVICE, 1300);
    assert.equal(await ping(b, h0, h1.containerIp), false);
    await u0.resync([h1.lease]);
    assert.equal(h0.ns.h.links.get(UDP_DEVICE).mtu, 1472);
    assert.ok(await ping(b, h0, h1.containerIp));

    // The device deleted by hand: the workers notice, resync starts a new data path.
    h0.ns.h.links.delete(UDP_DEVICE, { mustExist: true });
    await until('data path reported broken', () => u0.stats().broken !== undefined);
    assert.equal(u0.stats().running, false);
    await u0.resync([h1.lease]);
    assert.equal(u0.stats().running, true);
    assert.deepEqual(
      h0.ns.h.addrs.list({ dev: UDP_DEVICE, family: 4 }).map((a) => formatIPNet(a.ipnet)),
      ['10.244.1.0/16'],
    );
    assert.ok(await ping(b, h0, h1.containerIp));

    // A resync without host 1's lease removes it.
    await u0.resync([]);
    assert.equal(u0.stats().peers, 0);
    assert.equal(await ping(b, h0, h1.containerIp), false);
  });

  test('a data-path restart that failed is tried again by the next resync; none after stop()', async (t) => {
    const b = bed(t);
    const { tb, backends } = await cluster(b, 2);
    const [h0, h1] = tb.hosts as [TestHost, TestHost];
    const u0 = backends[0]!;
    h0.ns.h.links.delete(UDP_DEVICE, { mustExist: true });
    await until('data path reported broken', () => u0.stats().broken !== undefined);
    // The public IP briefly gone (a DHCP renewal): the restart cannot bind and fails.
    const addr = { ip: h0.ctx.publicIp, len: 24 };
    h0.ns.h.addrs.delete(h0.ctx.iface.name, addr);
    await assert.rejects(u0.resync([h1.lease]));
    assert.equal(u0.stats().running, false);
    h0.ns.h.addrs.add(h0.ctx.iface.name, addr);
    await u0.resync([h1.lease]);
    assert.equal(u0.stats().running, true);
    assert.ok(h0.ns.h.links.find(UDP_DEVICE), 'the TUN is back');
    assert.ok(await ping(b, h0, h1.containerIp));

    await u0.stop();
    await u0.resync([h1.lease]);
    assert.equal(u0.stats().running, false, 'a stopped backend stays stopped');
  });

  test('bad input fails before anything changes', async (t) => {
    const b = bed(t);
    const tb = buildTestbed(b, { hosts: 2, backendType: 'udp' });
    const [h0, h1] = tb.hosts as [TestHost, TestHost];
    assert.throws(
      () => createUdpBackend({ type: 'udp', port: 0 }, h0.ctx),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => createUdpBackend({ type: 'udp' }, h0.ctx, { workers: 0 }),
      (e) => isWeftError(e, 'INVALID'),
    );
    const u = createUdpBackend({ type: 'udp' }, h0.ctx);
    b.onCleanup(() => u.teardown());
    await assert.rejects(u.start({ ...h0.lease, subnet: parseCidr('10.9.1.0/24') }), (e) =>
      isWeftError(e, 'INVALID'),
    );
    assert.equal(h0.ns.h.links.find(UDP_DEVICE), undefined);

    // The port taken by another backend on the same host: EXISTS, and its device is gone again.
    await u.start(h0.lease);
    const other = createUdpBackend({ type: 'udp' }, h0.ctx, { device: 'weft-tun1' });
    b.onCleanup(() => other.teardown());
    await assert.rejects(other.start(h0.lease), (e) => isWeftError(e, 'EXISTS'));
    assert.equal(h0.ns.h.links.find('weft-tun1'), undefined);
    // A public IP that is on no interface.
    const stray = createUdpBackend({ type: 'udp' }, { ...h1.ctx, publicIp: parseIP('192.168.100.200') });
    b.onCleanup(() => stray.teardown());
    await assert.rejects(stray.start(h1.lease), (e) => isWeftError(e, 'NOT_FOUND'));
    assert.equal(h1.ns.h.links.find(UDP_DEVICE), undefined);
  });

  test('stop() ends the workers promptly; a process that started and stopped a backend exits by itself', async (t) => {
    const b = bed(t);
    const { tb, backends } = await cluster(b, 2, { pollMs: 100 });
    const u0 = backends[0]!;
    const t0 = performance.now();
    await u0.stop();
    const ms = performance.now() - t0;
    assert.ok(ms < 1000, `stop took ${ms.toFixed(0)} ms`);
    assert.equal(u0.stats().workers, 0);
    assert.equal(u0.stats().running, false);
    // The device goes with its last fd (it is not persistent), as flannel's does.
    assert.equal(tb.hosts[0]!.ns.h.links.find(UDP_DEVICE), undefined);
    await u0.stop(); // idempotent

    // In a child process: start a backend on host 1 (after stopping ours), stop it, and let the
    // script end without process.exit: lingering worker threads would keep it alive.
    await backends[1]!.stop();
    const h1 = tb.hosts[1]!;
    const script = `
      import { Netns } from ${JSON.stringify(path.join(here, '../../../kernel/netns.ts'))};
      import { openHandle } from ${JSON.stringify(path.join(here, '../../../kernel/handle.ts'))};
      import { parseCidr, parseIP } from ${JSON.stringify(path.join(here, '../../../lib/ip.ts'))};
      import { nullLogger } from ${JSON.stringify(path.join(here, '../../../lib/log.ts'))};
      import { createUdpBackend } from ${JSON.stringify(path.join(here, 'udp.ts'))};
      const ns = Netns.open(${JSON.stringify(`/run/netns/${h1.ns.name}`)});
      const host = openHandle(ns);
      const eth0 = host.links.get('eth0');
      const u = createUdpBackend({ type: 'udp' }, {
        host, network: parseCidr('10.244.0.0/16'), publicIp: parseIP(${JSON.stringify(h1.publicIp)}),
        iface: { name: 'eth0', index: eth0.index, mtu: eth0.mtu }, log: nullLogger,
      });
      await u.start({ subnet: parseCidr('10.244.2.0/24'), publicIp: parseIP(${JSON.stringify(h1.publicIp)}), backendType: 'udp', backendData: null });
      if (u.stats().workers !== 2) throw new Error('workers did not start');
      await u.stop();
      ns.close();
      console.log('stopped');
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: path.join(here, '../../../..'),
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) =>
      child.once('exit', (c, s) => r([c, s])),
    );
    clearTimeout(timer);
    assert.equal(signal, null, `the child did not exit by itself: ${out}`);
    assert.equal(code, 0, out);
    assert.match(out, /stopped/);
  });
});
