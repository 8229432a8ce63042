import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { bed, needsRoot } from '../../test/bed.js';
import { isWeftError } from '../lib/errors.js';
import * as libc from './libc.js';
import { createTun } from './tun.js';

interface IpLinkTun {
  ifname: string;
  flags: string[];
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}

// ---- packets by hand --------------------------------------------------------------------------

/** The Internet checksum (RFC 1071) of `b`. */
function checksum(b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += ((b[i] ?? 0) << 8) + (b[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

const ipBytes = (s: string): number[] => s.split('.').map(Number);
const ipText = (b: Uint8Array, off: number): string => Array.from(b.subarray(off, off + 4)).join('.');

/** An IPv4 packet carrying an ICMP echo request or reply, with both checksums right. */
function icmpEcho(o: {
  src: string;
  dst: string;
  type: 8 | 0;
  id: number;
  seq: number;
  data: Uint8Array;
}): Uint8Array {
  const icmp = new Uint8Array(8 + o.data.length);
  const dv = new DataView(icmp.buffer);
  icmp[0] = o.type;
  dv.setUint16(4, o.id);
  dv.setUint16(6, o.seq);
  icmp.set(o.data, 8);
  dv.setUint16(2, checksum(icmp));
  const ip = new Uint8Array(20 + icmp.length);
  const iv = new DataView(ip.buffer);
  ip[0] = 0x45; // version 4, 5 words of header
  iv.setUint16(2, ip.length);
  iv.setUint16(4, 0x1234); // id
  iv.setUint16(6, 0x4000); // don't fragment
  ip[8] = 64; // ttl
  ip[9] = 1; // ICMP
  ip.set(ipBytes(o.src), 12);
  ip.set(ipBytes(o.dst), 16);
  iv.setUint16(10, checksum(ip.subarray(0, 20)));
  ip.set(icmp, 20);
  return ip;
}

interface Echo {
  src: string;
  dst: string;
  type: number;
  id: number;
  seq: number;
  data: Uint8Array;
}
/** Parse an IPv4 ICMP echo packet (undefined for anything else: IPv6, router solicitations…). */
function parseEcho(p: Uint8Array): Echo | undefined {
  if (p.length < 28 || p[0] !== 0x45 || p[9] !== 1) return undefined;
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const total = dv.getUint16(2);
  assert.equal(checksum(p.subarray(0, 20)), 0, 'IPv4 header checksum of a kernel packet');
  assert.equal(checksum(p.subarray(20, total)), 0, 'ICMP checksum of a kernel packet');
  const type = p[20]!;
  if (type !== 0 && type !== 8) return undefined;
  return {
    src: ipText(p, 12),
    dst: ipText(p, 16),
    type,
    id: dv.getUint16(24),
    seq: dv.getUint16(26),
    data: p.slice(28, total),
  };
}

/**
 * Read packets from any of `fds` until `want` accepts one; without blocking the event loop
 * (poll with a zero timeout, then yield), bounded by a deadline.
 */
async function readUntil(
  fds: readonly number[],
  want: (e: Echo) => boolean,
  timeoutMs = 3000,
): Promise<{ echo: Echo; fd: number }> {
  const buf = new Uint8Array(65536);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let got = false;
    for (const fd of fds) {
      if (!libc.pollIn(fd, 0)) continue;
      got = true;
      const n = libc.read(fd, buf);
      const e = parseEcho(buf.subarray(0, n));
      if (e && want(e)) return { echo: e, fd };
    }
    if (!got) await sleep(5);
  }
  throw new Error(`no matching packet within ${timeoutMs} ms`);
}

describe('tun', needsRoot, () => {
  test('a real packet through the TUN: our echo request in, the kernel’s echo reply out; and the reverse', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const tun = createTun(host.ns, { name: 'weft0' });
    t.after(() => tun.close());
    assert.equal(tun.name, 'weft0');
    assert.equal(tun.fds.length, 1);
    const link = host.h.links.get('weft0');
    assert.equal(link.kind, 'tun');
    if (link.kind !== 'tun') return;
    assert.equal(link.tunType, 'tun');
    assert.equal(link.pi, false, 'IFF_NO_PI');
    assert.equal(link.multiQueue, false);
    assert.equal(link.persist, false);
    const [ip] = await b.ipJson<IpLinkTun[]>(host, '-d', 'link', 'show', 'weft0');
    assert.equal(ip?.linkinfo?.info_kind, 'tun');
    assert.equal(ip?.linkinfo?.info_data?.type, 'tun');
    assert.equal(ip?.linkinfo?.info_data?.pi, false);

    await b.exec(host, 'ip', ['addr', 'add', '10.77.0.1/24', 'dev', 'weft0']);
    await b.exec(host, 'ip', ['link', 'set', 'weft0', 'up']);
    await b.exec(host, 'ip', ['route', 'add', '10.78.0.0/24', 'dev', 'weft0']);

    // 1. Userspace → kernel: an echo request from "10.77.0.2" (behind the TUN) to the host.
    const data = Buffer.from('weft through a tun');
    const req = icmpEcho({ src: '10.77.0.2', dst: '10.77.0.1', type: 8, id: 0x7e57, seq: 1, data });
    assert.equal(fs.writeSync(tun.fds[0]!, req), req.length);
    const { echo: reply } = await readUntil(tun.fds, (e) => e.type === 0 && e.id === 0x7e57);
    assert.deepEqual(
      { src: reply.src, dst: reply.dst, seq: reply.seq, data: Buffer.from(reply.data).toString() },
      { src: '10.77.0.1', dst: '10.77.0.2', seq: 1, data: 'weft through a tun' },
    );

    // 2. Kernel → userspace: `ping` in the namespace goes out through the route on the TUN; this
    //    test answers it from the fd, and ping sees the reply.
    const pinging = b.ping(host, '10.78.0.5', { count: 1, deadlineS: 4 });
    const { echo: ping } = await readUntil(tun.fds, (e) => e.type === 8 && e.dst === '10.78.0.5');
    assert.equal(ping.src, '10.77.0.1', 'source chosen from the TUN address');
    const answer = icmpEcho({
      src: ping.dst,
      dst: ping.src,
      type: 0,
      id: ping.id,
      seq: ping.seq,
      data: ping.data,
    });
    assert.equal(libc.write(tun.fds[0]!, answer), answer.length);
    assert.equal(await pinging, true, 'ping got the reply written into the TUN');

    // Closing the only fd of a non-persistent TUN removes the device.
    tun.close();
    tun.close(); // idempotent
    assert.equal(host.h.links.find('weft0'), undefined);
  });

  test('multi-queue: two fds on one device, traffic on either; persistent devices outlive their fds', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const mq = createTun(host.ns, { name: 'mq0', multiQueue: true, queues: 2 });
    t.after(() => mq.close());
    assert.equal(mq.fds.length, 2);
    assert.notEqual(mq.fds[0], mq.fds[1]);
    const link = host.h.links.get('mq0');
    assert.equal(link.kind === 'tun' && link.multiQueue, true);
    const [ip] = await b.ipJson<IpLinkTun[]>(host, '-d', 'link', 'show', 'mq0');
    assert.equal(ip?.linkinfo?.info_data?.multi_queue, true);
    assert.equal(ip?.linkinfo?.info_data?.numqueues, 2);
    await b.exec(host, 'ip', ['addr', 'add', '10.79.0.1/24', 'dev', 'mq0']);
    await b.exec(host, 'ip', ['link', 'set', 'mq0', 'up']);
    for (const [q, fd] of mq.fds.entries()) {
      const req = icmpEcho({
        src: '10.79.0.2',
        dst: '10.79.0.1',
        type: 8,
        id: 0x4d51,
        seq: q,
        data: Buffer.from(`q${q}`),
      });
      fs.writeSync(fd, req);
      const { echo } = await readUntil(mq.fds, (e) => e.type === 0 && e.id === 0x4d51 && e.seq === q);
      assert.equal(Buffer.from(echo.data).toString(), `q${q}`, `queue ${q} carries packets`);
    }
    mq.close();
    assert.equal(host.h.links.find('mq0'), undefined, 'last queue closed: device gone');

    // persist + vnet header: the device stays after close and can be attached to again.
    const p = createTun(host.ns, { name: 'tp0', persist: true, vnetHdr: true });
    p.close();
    const kept = host.h.links.get('tp0');
    assert.equal(kept.kind === 'tun' && kept.persist, true);
    assert.equal(kept.kind === 'tun' && kept.vnetHdr, true);
    const again = createTun(host.ns, { name: 'tp0', vnetHdr: true });
    assert.equal(again.fds.length, 1);
    again.close();
    assert.ok(host.h.links.find('tp0'), 'still there');
    host.h.links.delete('tp0', { mustExist: true });
    assert.equal(host.h.links.find('tp0'), undefined);
  });

  test('bad input and clashes: typed errors, nothing created, nothing left open', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    host.h.links.add({ kind: 'veth', name: 'v0', peer: { name: 'v0p' } });
    const names = () =>
      host.h.links
        .list()
        .map((l) => l.name)
        .sort();
    const before = names();
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    const bad: [() => unknown, string][] = [
      [() => createTun(host.ns, { name: '' }), 'INVALID'],
      [() => createTun(host.ns, { name: 'x'.repeat(16) }), 'INVALID'],
      [() => createTun(host.ns, { name: 'a/b' }), 'INVALID'],
      [() => createTun(host.ns, { name: 'tq0', queues: 2 }), 'INVALID'],
      [() => createTun(host.ns, { name: 'tq0', multiQueue: true, queues: 0 }), 'INVALID'],
      [() => createTun(host.ns, { name: 'tq0', multiQueue: true, queues: 257 }), 'INVALID'],
      [() => createTun(host.ns, { name: 'v0' }), 'EXISTS'],
    ];
    for (const [fn, code] of bad) assert.throws(fn, (e) => isWeftError(e, code as 'INVALID'));
    assert.deepEqual(names(), before);

    // A single-queue TUN takes one fd: a second attach is BUSY and leaves the first working.
    const one = createTun(host.ns, { name: 'one0' });
    t.after(() => one.close());
    assert.throws(
      () => createTun(host.ns, { name: 'one0' }),
      (e) => isWeftError(e, 'BUSY'),
    );
    assert.ok(host.h.links.find('one0'));
    one.close();
    assert.deepEqual(names(), before);
    assert.equal(fs.readdirSync('/proc/self/fd').length, fdsBefore, 'no fd leaked');
  });
});
