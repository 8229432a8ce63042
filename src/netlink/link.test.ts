import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { formatIP, type IPAddr, parseIP } from '../lib/ip.js';
import { type Attr, type Attrs, a, formatMac, LITTLE_ENDIAN } from './attr.js';
import {
  AF,
  IFF,
  IFLA,
  IFLA_BR,
  IFLA_INFO,
  IFLA_MACVLAN,
  IFLA_TUN,
  IFLA_VXLAN,
  MACVLAN_MODE,
  RTM,
  VETH_INFO_PEER,
} from './consts.js';
import {
  blankIfInfo,
  creatableKinds,
  decodeLink,
  decodeStats64,
  encodeNewLink,
  type Link,
  type MacvlanMode,
  type NewLink,
} from './link.js';
import { decodeBody, encodeMessage, type IfInfoMsg, ifinfomsg, parseMessages } from './message.js';

// ---- arbitraries ----------------------------------------------------------------------------

const nameChars = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-_.@'.split(''));
const arbName = fc
  .string({ unit: nameChars, minLength: 1, maxLength: 15 })
  .filter((s) => s !== '.' && s !== '..');
const arbMac = fc.uint8Array({ minLength: 6, maxLength: 6 }).map(formatMac);
const arbIndex = fc.integer({ min: 1, max: 0x7fffffff });
const arbFd = fc.integer({ min: 0, max: 1 << 20 });
const arbV4 = fc.ipV4().map(parseIP);
const arbV6 = fc.ipV6().map(parseIP);
const arbModes = fc.constantFrom(...(Object.keys(MACVLAN_MODE) as MacvlanMode[]));

const common = {
  name: arbName,
  mtu: fc.integer({ min: 68, max: 65535 }),
  mac: arbMac,
  masterIndex: arbIndex,
  txQueueLen: fc.integer({ min: 0, max: 100000 }),
  up: fc.boolean(),
  netnsFd: arbFd,
};
const req = ['name', 'kind'] as const;

const arbNewLink: fc.Arbitrary<NewLink> = fc.oneof(
  fc.record(
    {
      ...common,
      kind: fc.constant('bridge' as const),
      vlanFiltering: fc.boolean(),
      stp: fc.boolean(),
      ageingTime: fc.integer({ min: 0, max: 0xffffffff }),
      mcastSnooping: fc.boolean(),
    },
    { requiredKeys: [...req] },
  ),
  fc.record(
    {
      ...common,
      kind: fc.constant('veth' as const),
      peer: fc.record(
        { name: arbName, netnsFd: arbFd, mtu: fc.integer({ min: 68, max: 65535 }), mac: arbMac },
        { requiredKeys: ['name'] },
      ),
    },
    { requiredKeys: [...req, 'peer'] },
  ),
  fc.record(
    {
      ...common,
      kind: fc.constant('vxlan' as const),
      vni: fc.integer({ min: 0, max: 0xffffff }),
      local: fc.oneof(arbV4, arbV6),
      group: fc.oneof(arbV4, arbV6),
      devIndex: arbIndex,
      port: fc.integer({ min: 1, max: 65535 }),
      learning: fc.boolean(),
      ttl: fc.integer({ min: 0, max: 255 }),
      udpCsum: fc.boolean(),
    },
    { requiredKeys: [...req, 'vni'] },
  ),
  fc.record(
    { ...common, kind: fc.constant('macvlan' as const), parentIndex: arbIndex, mode: arbModes },
    { requiredKeys: [...req, 'parentIndex'] },
  ),
  fc.record({ ...common, kind: fc.constant('dummy' as const) }, { requiredKeys: [...req] }),
) as fc.Arbitrary<NewLink>;

/** Encode a request as a full RTM_NEWLINK message and decode it back, as the kernel would. */
function wire(spec: NewLink): { header: IfInfoMsg; attrs: Attrs } {
  const buf = encodeMessage(
    { type: RTM.NEWLINK, flags: 0x605, seq: 1, pid: 0 },
    ifinfomsg,
    encodeNewLink(spec),
  );
  const [m] = parseMessages(buf);
  assert.equal(m!.type, RTM.NEWLINK);
  return decodeBody(ifinfomsg, m!.payload);
}

const ipText = (ip: IPAddr | undefined): string | undefined => (ip ? formatIP(ip) : undefined);

// ---- encodeNewLink --------------------------------------------------------------------------

describe('encodeNewLink', () => {
  test('every creatable kind is covered', () => {
    assert.deepEqual([...creatableKinds].sort(), ['bridge', 'dummy', 'macvlan', 'veth', 'vxlan']);
  });

  test('the request decodes back to the requested fields', () => {
    fc.assert(
      fc.property(arbNewLink, (spec) => {
        const { header, attrs } = wire(spec);
        assert.equal(header.family, AF.UNSPEC);
        assert.equal(header.index, 0);
        assert.equal(header.flags, spec.up ? IFF.UP : 0);
        assert.equal(header.change, spec.up ? IFF.UP : 0);
        assert.equal(attrs.str(IFLA.IFNAME), spec.name);
        assert.equal(attrs.u32(IFLA.MTU), spec.mtu);
        assert.equal(attrs.mac(IFLA.ADDRESS), spec.mac);
        assert.equal(attrs.u32(IFLA.MASTER), spec.masterIndex);
        assert.equal(attrs.u32(IFLA.TXQLEN), spec.txQueueLen);
        assert.equal(attrs.u32(IFLA.NET_NS_FD), spec.netnsFd);
        assert.equal(attrs.u32(IFLA.LINK), spec.kind === 'macvlan' ? spec.parentIndex : undefined);
        const info = attrs.nested(IFLA.LINKINFO);
        assert.ok(info, 'IFLA_LINKINFO');
        assert.equal(info.str(IFLA_INFO.KIND), spec.kind);
        const data = info.nested(IFLA_INFO.DATA);
        switch (spec.kind) {
          case 'bridge': {
            const some = [spec.vlanFiltering, spec.stp, spec.ageingTime, spec.mcastSnooping].some(
              (v) => v !== undefined,
            );
            assert.equal(data !== undefined, some, 'IFLA_INFO_DATA only when a bridge option is set');
            const bit = (v: boolean | undefined) => (v === undefined ? undefined : v ? 1 : 0);
            assert.equal(data?.u8(IFLA_BR.VLAN_FILTERING), bit(spec.vlanFiltering));
            assert.equal(data?.u32(IFLA_BR.STP_STATE), bit(spec.stp));
            assert.equal(data?.u32(IFLA_BR.AGEING_TIME), spec.ageingTime);
            assert.equal(data?.u8(IFLA_BR.MCAST_SNOOPING), bit(spec.mcastSnooping));
            break;
          }
          case 'veth': {
            const raw = data?.get(VETH_INFO_PEER);
            assert.ok(raw, 'VETH_INFO_PEER');
            // The peer is a nested ifinfomsg followed by its own attributes.
            const peer = decodeBody(ifinfomsg, raw);
            assert.deepEqual(peer.header, blankIfInfo());
            assert.equal(peer.attrs.str(IFLA.IFNAME), spec.peer.name);
            assert.equal(peer.attrs.u32(IFLA.MTU), spec.peer.mtu);
            assert.equal(peer.attrs.mac(IFLA.ADDRESS), spec.peer.mac);
            assert.equal(peer.attrs.u32(IFLA.NET_NS_FD), spec.peer.netnsFd);
            break;
          }
          case 'vxlan': {
            assert.ok(data);
            assert.equal(data.u32(IFLA_VXLAN.ID), spec.vni);
            const local = spec.local?.family === 6 ? IFLA_VXLAN.LOCAL6 : IFLA_VXLAN.LOCAL;
            assert.equal(ipText(data.ip(local)), ipText(spec.local));
            const group = spec.group?.family === 6 ? IFLA_VXLAN.GROUP6 : IFLA_VXLAN.GROUP;
            assert.equal(ipText(data.ip(group)), ipText(spec.group));
            assert.equal(data.u32(IFLA_VXLAN.LINK), spec.devIndex);
            assert.equal(data.be16(IFLA_VXLAN.PORT), spec.port);
            assert.equal(
              data.u8(IFLA_VXLAN.LEARNING),
              spec.learning === undefined ? undefined : +spec.learning,
            );
            assert.equal(data.u8(IFLA_VXLAN.TTL), spec.ttl);
            assert.equal(
              data.u8(IFLA_VXLAN.UDP_CSUM),
              spec.udpCsum === undefined ? undefined : +spec.udpCsum,
            );
            break;
          }
          case 'macvlan':
            assert.equal(data?.u32(IFLA_MACVLAN.MODE), MACVLAN_MODE[spec.mode ?? 'bridge']);
            break;
          case 'dummy':
            assert.equal(data, undefined);
            break;
        }
      }),
      { numRuns: 300 },
    );
  });

  test('decodeLink reads a creation request back as the same link', () => {
    fc.assert(
      fc.property(arbNewLink, (spec) => {
        const { header, attrs } = wire(spec);
        const l = decodeLink(header, attrs);
        assert.equal(l.kind, spec.kind);
        assert.equal(l.name, spec.name);
        assert.equal(l.mtu, spec.mtu ?? 0);
        assert.equal(l.mac, spec.mac);
        assert.equal(l.masterIndex, spec.masterIndex);
        assert.equal(l.up, spec.up === true);
        if (l.kind === 'vxlan' && spec.kind === 'vxlan') {
          assert.equal(l.vni, spec.vni);
          assert.equal(ipText(l.local), ipText(spec.local));
          assert.equal(ipText(l.group), ipText(spec.group));
          assert.equal(l.port, spec.port ?? 0);
          assert.equal(l.learning, spec.learning === true);
          assert.equal(l.ttl, spec.ttl ?? 0);
          assert.equal(l.devIndex, spec.devIndex);
        }
        if (l.kind === 'macvlan' && spec.kind === 'macvlan') {
          assert.equal(l.mode, spec.mode ?? 'bridge');
          assert.equal(l.parentIndex, spec.parentIndex);
        }
        if (l.kind === 'bridge' && spec.kind === 'bridge') {
          assert.equal(l.vlanFiltering, spec.vlanFiltering === true);
          assert.equal(l.stp, spec.stp === true);
        }
      }),
    );
  });

  test('known bytes: vxlan 42 on port 8472 without learning', () => {
    const { attrs } = wire({
      kind: 'vxlan',
      name: 'vx0',
      vni: 42,
      port: 8472,
      learning: false,
      local: parseIP('192.0.2.1'),
      devIndex: 3,
      ttl: 64,
    });
    const data = attrs.nested(IFLA.LINKINFO)?.nested(IFLA_INFO.DATA);
    assert.deepEqual([...(data?.get(IFLA_VXLAN.PORT) ?? [])], [0x21, 0x18]);
    assert.deepEqual([...(data?.get(IFLA_VXLAN.LOCAL) ?? [])], [192, 0, 2, 1]);
    assert.deepEqual(
      data?.list.map((x) => x.type),
      [
        IFLA_VXLAN.ID,
        IFLA_VXLAN.LOCAL,
        IFLA_VXLAN.LINK,
        IFLA_VXLAN.PORT,
        IFLA_VXLAN.LEARNING,
        IFLA_VXLAN.TTL,
      ],
    );
  });
});

// ---- decodeLink of kernel-shaped messages ---------------------------------------------------

interface Shape {
  index?: number;
  flags?: number;
  name?: string;
  mtu?: number;
  mac?: string;
  operstate?: number;
  master?: number;
  link?: number;
  netnsid?: number;
  txqlen?: number;
  kind?: string;
  data?: Attr[];
  stats?: Uint8Array;
}

/** An RTM_NEWLINK as a dump would return it, through the wire and back. */
function kernelLink(s: Shape): Link {
  const attrs: Attr[] = [];
  if (s.name !== undefined) attrs.push(a.str(IFLA.IFNAME, s.name));
  if (s.txqlen !== undefined) attrs.push(a.u32(IFLA.TXQLEN, s.txqlen));
  if (s.operstate !== undefined) attrs.push(a.u8(IFLA.OPERSTATE, s.operstate));
  if (s.mtu !== undefined) attrs.push(a.u32(IFLA.MTU, s.mtu));
  if (s.master !== undefined) attrs.push(a.u32(IFLA.MASTER, s.master));
  if (s.link !== undefined) attrs.push(a.u32(IFLA.LINK, s.link));
  if (s.netnsid !== undefined) attrs.push(a.s32(IFLA.LINK_NETNSID, s.netnsid));
  if (s.stats !== undefined) attrs.push(a.bytes(IFLA.STATS64, s.stats));
  if (s.mac !== undefined) attrs.push(a.mac(IFLA.ADDRESS, s.mac), a.mac(IFLA.BROADCAST, 'ff:ff:ff:ff:ff:ff'));
  if (s.kind !== undefined) {
    const info: Attr[] = [a.str(IFLA_INFO.KIND, s.kind)];
    if (s.data) info.push(a.nest(IFLA_INFO.DATA, s.data));
    attrs.push(a.nest(IFLA.LINKINFO, info));
  }
  const header = blankIfInfo({ type: 1, index: s.index ?? 1, flags: s.flags ?? 0 });
  const [m] = parseMessages(
    encodeMessage({ type: RTM.NEWLINK, flags: 2, seq: 9, pid: 0 }, ifinfomsg, { header, attrs }),
  );
  const body = decodeBody(ifinfomsg, m!.payload);
  return decodeLink(body.header, body.attrs);
}

describe('decodeLink', () => {
  test('common fields', () => {
    const l = kernelLink({
      index: 7,
      flags: IFF.UP | IFF.BROADCAST | IFF.MULTICAST | IFF.LOWER_UP,
      name: 'veth0',
      mtu: 1450,
      mac: '02:00:00:00:00:07',
      operstate: 6,
      master: 3,
      link: 2,
      netnsid: 0,
      txqlen: 1000,
      kind: 'veth',
    });
    assert.deepEqual(l, {
      kind: 'veth',
      index: 7,
      name: 'veth0',
      mtu: 1450,
      mac: '02:00:00:00:00:07',
      flags: IFF.UP | IFF.BROADCAST | IFF.MULTICAST | IFF.LOWER_UP,
      up: true,
      operState: 'up',
      masterIndex: 3,
      parentIndex: 2,
      linkNetnsId: 0,
      txQueueLen: 1000,
    });
    const bare = kernelLink({ index: 9, kind: 'veth', operstate: 2 });
    assert.equal(bare.name, '');
    assert.equal(bare.mtu, 0);
    assert.equal(bare.mac, undefined);
    assert.equal(bare.up, false);
    assert.equal(bare.operState, 'down');
    assert.equal(bare.masterIndex, undefined);
    assert.equal(bare.parentIndex, undefined);
    assert.equal(bare.linkNetnsId, undefined);
    // IFLA_MASTER / IFLA_LINK of 0 mean none.
    const zero = kernelLink({ kind: 'veth', master: 0, link: 0 });
    assert.equal(zero.masterIndex, undefined);
    assert.equal(zero.parentIndex, undefined);
  });

  test('operational states', () => {
    const names = ['unknown', 'notpresent', 'down', 'lowerlayerdown', 'testing', 'dormant', 'up'];
    for (const [i, n] of names.entries()) assert.equal(kernelLink({ operstate: i }).operState, n);
    assert.equal(kernelLink({ operstate: 7 }).operState, 'unknown');
    assert.equal(kernelLink({}).operState, 'unknown');
  });

  test('bridge', () => {
    const l = kernelLink({
      name: 'br0',
      kind: 'bridge',
      data: [a.u32(IFLA_BR.STP_STATE, 1), a.u8(IFLA_BR.VLAN_FILTERING, 1), a.u32(IFLA_BR.AGEING_TIME, 30000)],
    });
    assert.equal(l.kind, 'bridge');
    assert.ok(l.kind === 'bridge' && l.stp && l.vlanFiltering);
    const plain = kernelLink({
      kind: 'bridge',
      data: [a.u32(IFLA_BR.STP_STATE, 0), a.u8(IFLA_BR.VLAN_FILTERING, 0)],
    });
    assert.ok(plain.kind === 'bridge' && !plain.stp && !plain.vlanFiltering);
    const noData = kernelLink({ kind: 'bridge' });
    assert.ok(noData.kind === 'bridge' && !noData.stp && !noData.vlanFiltering);
  });

  test('vxlan, IPv4 and IPv6 underlay', () => {
    const l = kernelLink({
      name: 'vx0',
      kind: 'vxlan',
      data: [
        a.u32(IFLA_VXLAN.ID, 42),
        a.u32(IFLA_VXLAN.LINK, 5),
        a.ip(IFLA_VXLAN.LOCAL, parseIP('192.0.2.1')),
        a.u8(IFLA_VXLAN.TTL, 64),
        a.u8(IFLA_VXLAN.LEARNING, 0),
        a.be16(IFLA_VXLAN.PORT, 8472),
        a.ip(IFLA_VXLAN.GROUP, parseIP('239.1.1.1')),
      ],
    });
    assert.equal(l.kind, 'vxlan');
    if (l.kind !== 'vxlan') return;
    assert.deepEqual(
      {
        vni: l.vni,
        dev: l.devIndex,
        local: ipText(l.local),
        group: ipText(l.group),
        ttl: l.ttl,
        port: l.port,
      },
      { vni: 42, dev: 5, local: '192.0.2.1', group: '239.1.1.1', ttl: 64, port: 8472 },
    );
    assert.equal(l.learning, false);

    const v6 = kernelLink({
      kind: 'vxlan',
      data: [
        a.u32(IFLA_VXLAN.ID, 0xffffff),
        a.ip(IFLA_VXLAN.LOCAL6, parseIP('2001:db8::1')),
        a.ip(IFLA_VXLAN.GROUP6, parseIP('ff05::100')),
        a.u8(IFLA_VXLAN.LEARNING, 1),
        a.u32(IFLA_VXLAN.LINK, 0),
        a.be16(IFLA_VXLAN.PORT, 4789),
      ],
    });
    assert.ok(v6.kind === 'vxlan');
    if (v6.kind !== 'vxlan') return;
    assert.equal(v6.vni, 0xffffff);
    assert.equal(ipText(v6.local), '2001:db8::1');
    assert.equal(ipText(v6.group), 'ff05::100');
    assert.equal(v6.learning, true);
    assert.equal(v6.devIndex, undefined, 'IFLA_VXLAN_LINK 0 means no underlay device');
    assert.equal(v6.port, 4789);
  });

  test('macvlan modes', () => {
    for (const [mode, v] of Object.entries(MACVLAN_MODE)) {
      const l = kernelLink({ kind: 'macvlan', link: 4, data: [a.u32(IFLA_MACVLAN.MODE, v)] });
      assert.ok(l.kind === 'macvlan');
      if (l.kind === 'macvlan') {
        assert.equal(l.mode, mode);
        assert.equal(l.parentIndex, 4);
      }
    }
    // The kernel's default mode is vepa.
    const l = kernelLink({ kind: 'macvlan' });
    assert.ok(l.kind === 'macvlan' && l.mode === 'vepa');
  });

  test('veth, dummy and tun', () => {
    assert.equal(kernelLink({ kind: 'veth' }).kind, 'veth');
    assert.equal(kernelLink({ kind: 'dummy' }).kind, 'dummy');
    const tap = kernelLink({
      kind: 'tun',
      data: [
        a.u8(IFLA_TUN.TYPE, 2),
        a.u8(IFLA_TUN.PI, 0),
        a.u8(IFLA_TUN.VNET_HDR, 1),
        a.u8(IFLA_TUN.PERSIST, 1),
        a.u8(IFLA_TUN.MULTI_QUEUE, 0),
      ],
    });
    assert.ok(tap.kind === 'tun');
    if (tap.kind === 'tun') {
      assert.deepEqual(
        { t: tap.tunType, pi: tap.pi, vnet: tap.vnetHdr, persist: tap.persist, mq: tap.multiQueue },
        { t: 'tap', pi: false, vnet: true, persist: true, mq: false },
      );
    }
    const tun = kernelLink({ kind: 'tun', data: [a.u8(IFLA_TUN.TYPE, 1), a.u8(IFLA_TUN.PI, 1)] });
    assert.ok(tun.kind === 'tun' && tun.tunType === 'tun' && tun.pi);
  });

  test('unknown kinds and no kind decode as a device with the raw kind', () => {
    const wg = kernelLink({ name: 'wg0', kind: 'wireguard', data: [a.u32(1, 1)] });
    assert.equal(wg.kind, 'device');
    assert.ok(wg.kind === 'device' && wg.rawKind === 'wireguard');
    const lo = kernelLink({ name: 'lo', flags: IFF.UP | IFF.LOOPBACK });
    assert.ok(lo.kind === 'device' && lo.rawKind === undefined && lo.up);
    // Names of Object.prototype members are kinds like any other.
    for (const k of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']) {
      const l = kernelLink({ kind: k });
      assert.ok(l.kind === 'device' && l.rawKind === k, k);
    }
    fc.assert(
      fc.property(
        fc.string({ maxLength: 20 }).filter((s) => !s.includes('\0')),
        (k) => {
          const l = kernelLink({ kind: k });
          const known = ['bridge', 'veth', 'vxlan', 'macvlan', 'dummy', 'tun'];
          if (known.includes(k)) assert.equal(l.kind, k);
          else assert.ok(l.kind === 'device' && l.rawKind === k);
        },
      ),
    );
  });
});

describe('IFLA_STATS64', () => {
  test('decodeLink reads the first counters of struct rtnl_link_stats64; absent or short: none', () => {
    // 24 u64 counters as the kernel sends them; the first eight are read.
    const b = new Uint8Array(24 * 8);
    const dv = new DataView(b.buffer);
    [5, 7, 500, 700, 1, 2, 3, 4, 99].forEach((v, i) => {
      dv.setBigUint64(i * 8, BigInt(v), LITTLE_ENDIAN);
    });
    const l = kernelLink({ name: 'eth0', kind: 'veth', stats: b });
    assert.deepEqual(l.stats, {
      rxPackets: 5,
      txPackets: 7,
      rxBytes: 500,
      txBytes: 700,
      rxErrors: 1,
      txErrors: 2,
      rxDropped: 3,
      txDropped: 4,
    });
    assert.equal(kernelLink({ name: 'eth0', kind: 'veth' }).stats, undefined);
    assert.equal('stats' in kernelLink({ name: 'eth0' }), false);
    assert.equal(decodeStats64(new Uint8Array(16)), undefined);
  });
});
