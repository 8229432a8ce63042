/**
 * The codec against real kernel replies: datagrams captured by scripts/capture-fixtures.ts (a
 * throwaway namespace with a bridge, veth pair, vxlan, macvlan, addresses, routes, neighbours,
 * FDB entries, and a few provoked errors) are decoded here, without root, and compared with what
 * iproute2 (`ip -j`, `bridge -j`) said about the same objects at capture time.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { codeForErrno, Errno, KernelError } from '../lib/errors.js';
import { formatIP, type IPAddr } from '../lib/ip.js';
import { type Attrs, decodeAttrs, NLA_F_NESTED } from './attr.js';
import {
  AF,
  IFA,
  IFA_F,
  IFLA,
  IFLA_BRPORT,
  IFLA_INFO,
  NDA,
  NLM_F,
  NLMSG,
  NTF,
  NUD,
  RTA,
  RTM,
  RTN,
} from './consts.js';
import { decodeLink, type Link } from './link.js';
import {
  decodeBody,
  type FixedCodec,
  ifaddrmsg,
  ifinfomsg,
  type NlMessage,
  ndmsg,
  parseDone,
  parseError,
  parseMessages,
  rtmsg,
} from './message.js';

// ---- loading ----------------------------------------------------------------------------------

interface Capture<IP> {
  readonly kernel: string;
  readonly request: string;
  readonly datagrams: string[];
  readonly ip: IP;
}
const load = <T>(name: string): T =>
  JSON.parse(fs.readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8')) as T;
const bytes = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex, 'hex'));

/**
 * The messages of a dump: every datagram parsed on its own, all answering the request's
 * sequence number, ending with NLMSG_DONE (error 0), which is left out.
 */
function dumpMessages(c: Capture<unknown>, type: number): NlMessage[] {
  const [req] = parseMessages(bytes(c.request));
  assert.ok(req && req.flags & NLM_F.DUMP, 'the request is a dump');
  const all = c.datagrams.flatMap((d) => parseMessages(bytes(d)));
  const done = all.pop();
  assert.equal(done?.type, NLMSG.DONE);
  assert.equal(parseDone(done!), 0);
  for (const m of all) {
    assert.equal(m.seq, req.seq);
    assert.equal(m.type, type);
    assert.ok(m.flags & NLM_F.MULTI);
  }
  return all;
}

/** Decode every attribute flagged nested (and the `alsoNested` types) at any depth. */
function walkNested(attrs: Attrs, alsoNested: (path: number[]) => boolean, path: number[] = []): number {
  let n = 0;
  for (const x of attrs.list) {
    n++;
    const here = [...path, x.type];
    if (x.flags & NLA_F_NESTED || alsoNested(here)) n += walkNested(decodeAttrs(x.value), alsoNested, here);
  }
  return n;
}

const ipText = (ip: IPAddr | undefined): string | undefined => (ip ? formatIP(ip) : undefined);
const sorted = (xs: string[]): string[] => [...xs].sort();

// ---- links ------------------------------------------------------------------------------------

interface IpLink {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  operstate: string;
  txqlen: number;
  address: string;
  master?: string;
  link?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown>; info_slave_kind?: string };
}
const linkFx = load<Capture<IpLink[]>>('link.json');

function decodeLinks(c: Capture<unknown>): { link: Link; attrs: Attrs; family: number }[] {
  return dumpMessages(c, RTM.NEWLINK).map((m) => {
    const { header, attrs } = decodeBody(ifinfomsg, m.payload);
    return { link: decodeLink(header, attrs), attrs, family: header.family };
  });
}
const links = decodeLinks(linkFx).map((l) => l.link);
const byIndex = new Map(links.map((l) => [l.index, l]));
const nameOf = (index: number | undefined): string | undefined =>
  index === undefined ? undefined : byIndex.get(index)?.name;
const link = (name: string): Link => links.find((l) => l.name === name) ?? assert.fail(`no link ${name}`);

describe('fixtures: RTM_GETLINK', () => {
  test('every link iproute2 lists decodes to the same name, kind, MTU, MAC, state and relations', () => {
    assert.equal(links.length, linkFx.ip.length);
    for (const want of linkFx.ip) {
      const got = byIndex.get(want.ifindex) ?? assert.fail(`no link with index ${want.ifindex}`);
      const kind = want.linkinfo?.info_kind;
      assert.equal(got.name, want.ifname);
      assert.equal(
        got.kind,
        ['bridge', 'veth', 'vxlan', 'macvlan', 'dummy', 'tun'].includes(kind ?? '') ? kind : 'device',
      );
      if (got.kind === 'device') assert.equal(got.rawKind, kind);
      assert.equal(got.mtu, want.mtu, want.ifname);
      assert.equal(got.mac, want.address, want.ifname);
      assert.equal(got.txQueueLen, want.txqlen);
      assert.equal(got.up, want.flags.includes('UP'));
      assert.equal(got.operState, want.operstate.toLowerCase());
      assert.equal(nameOf(got.masterIndex), want.master, `${want.ifname} master`);
      assert.equal(nameOf(got.parentIndex), want.link, `${want.ifname} link`);
      const data = want.linkinfo?.info_data;
      if (got.kind === 'vxlan') {
        assert.equal(got.vni, data?.id);
        assert.equal(got.port, data?.port);
        assert.equal(ipText(got.local), data?.local);
        assert.equal(got.learning, data?.learning);
        assert.equal(got.ttl, data?.ttl);
        assert.equal(nameOf(got.devIndex), data?.link);
      }
      if (got.kind === 'macvlan') assert.equal(got.mode, data?.mode);
      if (got.kind === 'bridge') {
        assert.equal(got.stp, data?.stp_state !== 0);
        assert.equal(got.vlanFiltering, data?.vlan_filtering !== 0);
      }
    }
  });

  test('the captured scenario: bridge, veth pair, vxlan 42, macvlan', () => {
    const br = link('br0');
    assert.equal(br.kind, 'bridge');
    assert.equal(br.mtu, 1400);
    assert.equal(br.mac, '02:00:00:00:01:00');
    const v0 = link('veth0');
    const v1 = link('veth1');
    assert.equal(v0.kind, 'veth');
    assert.equal(v0.masterIndex, br.index);
    assert.equal(v0.parentIndex, v1.index, 'a veth end points at its peer');
    assert.equal(v1.parentIndex, v0.index);
    const vx = link('vx0');
    assert.ok(vx.kind === 'vxlan');
    if (vx.kind === 'vxlan') {
      assert.deepEqual(
        {
          vni: vx.vni,
          port: vx.port,
          local: ipText(vx.local),
          learning: vx.learning,
          ttl: vx.ttl,
          dev: vx.devIndex,
        },
        { vni: 42, port: 8472, local: '192.0.2.1', learning: false, ttl: 64, dev: v1.index },
      );
    }
    const mv = link('mv0');
    assert.ok(mv.kind === 'macvlan' && mv.mode === 'bridge' && mv.parentIndex === v1.index);
    const lo = link('lo');
    assert.ok(lo.kind === 'device' && lo.rawKind === undefined && lo.index === 1);
  });

  test('every nested attribute of real link messages decodes (LINKINFO, AF_SPEC, stats…)', () => {
    let total = 0;
    for (const { attrs } of decodeLinks(linkFx)) {
      total += walkNested(
        attrs,
        (p) =>
          (p.length === 1 && (p[0] === IFLA.LINKINFO || p[0] === IFLA.AF_SPEC || p[0] === IFLA.PROTINFO)) ||
          (p.length === 2 &&
            p[0] === IFLA.LINKINFO &&
            (p[1] === IFLA_INFO.DATA || p[1] === IFLA_INFO.SLAVE_DATA)) ||
          (p.length === 2 && p[0] === IFLA.AF_SPEC),
      );
    }
    assert.ok(total > 100, `walked ${total} attributes`);
  });
});

describe('fixtures: RTM_GETLINK AF_BRIDGE (bridge ports)', () => {
  interface BrPort {
    ifindex: number;
    ifname: string;
    master: string;
    mtu: number;
    state: string;
    priority: number;
    cost: number;
    hairpin: boolean;
    learning: boolean;
    flood: boolean;
    isolated: boolean;
    neigh_suppress: boolean;
  }
  const fx = load<Capture<BrPort[]>>('link-bridge.json');
  const ports = decodeLinks(fx);
  const states = ['disabled', 'listening', 'learning', 'forwarding', 'blocking'];

  test('ports, their master and IFLA_PROTINFO match `bridge -d link`', () => {
    assert.equal(ports.length, fx.ip.length);
    for (const want of fx.ip) {
      const got = ports.find((p) => p.link.index === want.ifindex) ?? assert.fail(want.ifname);
      assert.equal(got.family, AF.BRIDGE);
      assert.equal(got.link.name, want.ifname);
      assert.equal(got.link.mtu, want.mtu);
      assert.equal(nameOf(got.link.masterIndex), want.master);
      const p = got.attrs.nested(IFLA.PROTINFO) ?? assert.fail('IFLA_PROTINFO');
      assert.equal(states[p.u8(IFLA_BRPORT.STATE) ?? -1], want.state);
      assert.equal(p.u16(IFLA_BRPORT.PRIORITY), want.priority);
      assert.equal(p.u32(IFLA_BRPORT.COST), want.cost);
      assert.equal(p.u8(IFLA_BRPORT.MODE) === 1, want.hairpin);
      assert.equal(p.u8(IFLA_BRPORT.LEARNING) === 1, want.learning);
      assert.equal(p.u8(IFLA_BRPORT.UNICAST_FLOOD) === 1, want.flood);
      assert.equal(p.u8(IFLA_BRPORT.ISOLATED) === 1, want.isolated);
      assert.equal(p.u8(IFLA_BRPORT.NEIGH_SUPPRESS) === 1, want.neigh_suppress);
    }
    assert.deepEqual(
      ports.map((p) => p.link.name),
      ['veth0'],
    );
  });
});

// ---- addresses --------------------------------------------------------------------------------

describe('fixtures: RTM_GETADDR', () => {
  interface IpAddrLink {
    ifindex: number;
    ifname: string;
    addr_info: {
      family: string;
      local: string;
      prefixlen: number;
      scope: string;
      label?: string;
      nodad?: boolean;
    }[];
  }
  const fx = load<Capture<IpAddrLink[]>>('addr.json');
  const scopes: Record<number, string> = {
    0: 'global',
    200: 'site',
    253: 'link',
    254: 'host',
    255: 'nowhere',
  };
  const addrs = dumpMessages(fx, RTM.NEWADDR).map((m) => {
    const { header, attrs } = decodeBody(ifaddrmsg, m.payload);
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on point-to-point links.
    const local = attrs.ip(IFA.LOCAL) ?? attrs.ip(IFA.ADDRESS);
    const flags = attrs.u32(IFA.FLAGS) ?? header.flags;
    return {
      key: `${header.index} ${header.family === AF.INET ? 'inet' : 'inet6'} ${ipText(local)}/${header.prefixlen} ${scopes[header.scope]}`,
      label: attrs.str(IFA.LABEL),
      nodad: (flags & IFA_F.NODAD) !== 0,
      family: header.family,
    };
  });

  test('the same addresses, prefixes and scopes as `ip addr`, labels and nodad too', () => {
    const want = fx.ip.flatMap((l) =>
      l.addr_info.map((x) => ({
        key: `${l.ifindex} ${x.family} ${x.local}/${x.prefixlen} ${x.scope}`,
        label: x.label,
        nodad: x.nodad === true,
      })),
    );
    assert.deepEqual(sorted(addrs.map((x) => x.key)), sorted(want.map((x) => x.key)));
    for (const w of want) {
      const got = addrs.find((x) => x.key === w.key)!;
      assert.equal(got.label, w.label, w.key);
      assert.equal(got.nodad, w.nodad, w.key);
    }
    const br = link('br0').index;
    const v1 = link('veth1').index;
    for (const k of [
      `${br} inet 10.88.0.1/24 global`,
      `${br} inet6 2001:db8:88::1/64 global`,
      `${v1} inet 192.0.2.1/24 global`,
      `${v1} inet6 2001:db8:1::1/64 global`,
      `${link('mv0').index} inet 10.77.0.5/16 global`,
      '1 inet 127.0.0.1/8 host',
      '1 inet6 ::1/128 host',
    ]) {
      assert.ok(
        addrs.some((x) => x.key === k),
        k,
      );
    }
  });
});

// ---- routes -----------------------------------------------------------------------------------

describe('fixtures: RTM_GETROUTE', () => {
  interface IpRoute {
    type?: string;
    dst: string;
    gateway?: string;
    dev?: string;
    table?: string;
    metric?: number;
    prefsrc?: string;
    scope?: string;
  }
  const fx = load<Capture<{ inet: IpRoute[]; inet6: IpRoute[] }>>('route.json');
  const types = Object.fromEntries(Object.entries(RTN).map(([k, v]) => [v, k.toLowerCase()]));
  const scopes: Record<number, string> = { 0: 'global', 200: 'site', 253: 'link', 254: 'host' };
  const routes = dumpMessages(fx, RTM.NEWROUTE).map((m) => {
    const { header, attrs } = decodeBody(rtmsg, m.payload);
    const dst = attrs.ip(RTA.DST);
    const table = attrs.u32(RTA.TABLE) ?? header.table;
    assert.equal(header.table, Math.min(table, 255), 'rtm_table is RTA_TABLE capped to 8 bits');
    return { header, attrs, dst, table };
  });

  /** A decoded route in the words of `ip -j route`. */
  const asIp = (r: (typeof routes)[number]): IpRoute => {
    const full = r.header.family === AF.INET ? 32 : 128;
    const out: IpRoute = {
      dst:
        r.header.dstLen === 0
          ? 'default'
          : r.header.dstLen === full
            ? ipText(r.dst)!
            : `${ipText(r.dst)}/${r.header.dstLen}`,
    };
    if (r.header.type !== RTN.UNICAST) out.type = types[r.header.type]!;
    const gw = ipText(r.attrs.ip(RTA.GATEWAY));
    if (gw) out.gateway = gw;
    const dev = nameOf(r.attrs.u32(RTA.OIF));
    if (dev) out.dev = dev;
    if (r.table !== 254) out.table = r.table === 255 ? 'local' : String(r.table);
    return out;
  };
  const key = (r: IpRoute) =>
    `${r.type ?? 'unicast'} ${r.dst} via ${r.gateway ?? '-'} dev ${r.dev ?? '-'} table ${r.table ?? 'main'}`;

  test('IPv4 and IPv6 routes of every table match `ip route show table all`', () => {
    assert.deepEqual(
      [...new Set(routes.map((r) => r.header.family))].sort((x, y) => x - y),
      [AF.INET, AF.INET6],
    );
    for (const [family, want] of [
      [AF.INET, fx.ip.inet],
      [AF.INET6, fx.ip.inet6],
    ] as const) {
      const got = routes.filter((r) => r.header.family === family);
      assert.deepEqual(sorted(got.map((r) => key(asIp(r)))), sorted(want.map(key)));
      for (const w of want) {
        const r = got.find((g) => key(asIp(g)) === key(w))!;
        if (w.metric !== undefined) assert.equal(r.attrs.u32(RTA.PRIORITY) ?? 0, w.metric, key(w));
        if (w.prefsrc !== undefined) assert.equal(ipText(r.attrs.ip(RTA.PREFSRC)), w.prefsrc, key(w));
        if (w.scope !== undefined) assert.equal(scopes[r.header.scope], w.scope, key(w));
      }
    }
  });

  test('the captured routes: gateway with metric, blackhole, table 100, IPv6 gateway', () => {
    const find = (dst: string) => routes.find((r) => asIp(r).dst === dst) ?? assert.fail(dst);
    const gw = find('198.51.100.0/24');
    assert.equal(ipText(gw.attrs.ip(RTA.GATEWAY)), '192.0.2.254');
    assert.equal(gw.attrs.u32(RTA.PRIORITY), 50);
    assert.equal(gw.table, 254);
    assert.equal(nameOf(gw.attrs.u32(RTA.OIF)), 'veth1');
    const bh = find('203.0.113.0/24');
    assert.equal(bh.header.type, RTN.BLACKHOLE);
    assert.equal(bh.attrs.u32(RTA.OIF), undefined);
    const t100 = find('10.100.0.0/16');
    assert.equal(t100.table, 100);
    assert.equal(t100.header.table, 100);
    const v6 = find('2001:db8:2::/64');
    assert.equal(v6.header.family, AF.INET6);
    assert.equal(ipText(v6.attrs.ip(RTA.GATEWAY)), '2001:db8:1::fe');
    assert.equal(v6.attrs.u32(RTA.PRIORITY), 1024);
  });

  test('nested route attributes (metrics, cache info) decode', () => {
    for (const r of routes) walkNested(r.attrs, (p) => p.length === 1 && p[0] === RTA.METRICS);
  });
});

// ---- neighbours and FDB ------------------------------------------------------------------------

const nudNames: [number, string][] = Object.entries(NUD)
  .filter(([, v]) => v !== 0)
  .map(([k, v]) => [v, k]);
const nudOf = (state: number): string[] => nudNames.filter(([v]) => state & v).map(([, k]) => k);

describe('fixtures: RTM_GETNEIGH', () => {
  interface IpNeigh {
    dst: string;
    dev: string;
    lladdr?: string;
    state: string[];
  }
  const fx = load<Capture<IpNeigh[]>>('neigh.json');
  const neigh = dumpMessages(fx, RTM.NEWNEIGH).map((m) => {
    const { header, attrs } = decodeBody(ndmsg, m.payload);
    return { header, dst: ipText(attrs.ip(NDA.DST)), lladdr: attrs.mac(NDA.LLADDR) };
  });

  test('entries match `ip neigh` (which hides NOARP ones)', () => {
    const key = (n: IpNeigh) => `${n.dst} dev ${n.dev} lladdr ${n.lladdr ?? '-'} ${n.state.join(',')}`;
    const got = neigh
      .filter((n) => !(n.header.state & NUD.NOARP))
      .map((n) => ({
        dst: n.dst!,
        dev: nameOf(n.header.index)!,
        ...(n.lladdr !== undefined && { lladdr: n.lladdr }),
        state: nudOf(n.header.state),
      }));
    assert.deepEqual(sorted(got.map(key)), sorted(fx.ip.map(key)));
    for (const n of neigh) assert.ok(n.header.family === AF.INET || n.header.family === AF.INET6);
  });

  test('the permanent IPv4 and IPv6 entries', () => {
    const v1 = link('veth1').index;
    for (const [dst, mac, family] of [
      ['192.0.2.10', '02:00:00:00:00:10', AF.INET],
      ['2001:db8:1::10', '02:00:00:00:00:11', AF.INET6],
    ] as const) {
      const n = neigh.find((x) => x.dst === dst) ?? assert.fail(dst);
      assert.equal(n.lladdr, mac);
      assert.equal(n.header.family, family);
      assert.equal(n.header.index, v1);
      assert.equal(n.header.state, NUD.PERMANENT);
    }
  });
});

describe('fixtures: RTM_GETNEIGH AF_BRIDGE (FDB)', () => {
  interface BridgeFdb {
    mac: string;
    ifname: string;
    dst?: string;
    master?: string;
    flags: string[];
    state: string;
  }
  const fx = load<Capture<BridgeFdb[]>>('fdb.json');
  const fdb = dumpMessages(fx, RTM.NEWNEIGH).map((m) => {
    const { header, attrs } = decodeBody(ndmsg, m.payload);
    return {
      header,
      mac: attrs.mac(NDA.LLADDR)!,
      dst: ipText(attrs.ip(NDA.DST)),
      master: nameOf(attrs.u32(NDA.MASTER)),
    };
  });
  // bridge/fdb.c state_n2a
  const stateText = (s: number) =>
    s & NUD.PERMANENT ? 'permanent' : s & NUD.NOARP ? 'static' : s & NUD.STALE ? 'stale' : '';

  test('entries match `bridge fdb show`: MAC, device, vxlan destination, master, self, state', () => {
    const key = (e: BridgeFdb) =>
      `${e.mac} dev ${e.ifname} dst ${e.dst ?? '-'} master ${e.master ?? '-'} ${e.flags.includes('self') ? 'self' : ''} ${e.state}`;
    const got = fdb.map((e) => ({
      mac: e.mac,
      ifname: nameOf(e.header.index)!,
      ...(e.dst !== undefined && { dst: e.dst }),
      ...(e.master !== undefined && { master: e.master }),
      flags: e.header.flags & NTF.SELF ? ['self'] : [],
      state: stateText(e.header.state),
    }));
    assert.deepEqual(sorted(got.map(key)), sorted(fx.ip.map(key)));
    for (const e of fdb) assert.equal(e.header.family, AF.BRIDGE);
  });

  test('the vxlan entries: the all-zeros default and a peer MAC', () => {
    const vx = link('vx0').index;
    const onVx = fdb.filter((e) => e.header.index === vx);
    assert.deepEqual(sorted(onVx.map((e) => `${e.mac} ${e.dst}`)), [
      '00:00:00:00:00:00 192.0.2.2',
      '02:00:00:00:00:20 192.0.2.20',
    ]);
    for (const e of onVx) {
      assert.ok(e.header.flags & NTF.SELF);
      assert.ok(e.header.state & NUD.PERMANENT);
    }
  });
});

// ---- errors -----------------------------------------------------------------------------------

describe('fixtures: NLMSG_ERROR', () => {
  interface ErrorCase {
    name: string;
    capAck: boolean;
    request: string;
    datagrams: string[];
    ip?: { stderr: string };
  }
  const fx = load<{ cases: ErrorCase[] }>('errors.json');
  const expected: Record<string, { errno: number; message?: string }> = {
    'newlink-exists': { errno: Errno.EEXIST },
    'newlink-exists-uncapped': { errno: Errno.EEXIST },
    'newroute-bad-gateway': { errno: Errno.ENETUNREACH, message: 'Nexthop has invalid gateway' },
    'newroute-bad-gateway-uncapped': { errno: Errno.ENETUNREACH, message: 'Nexthop has invalid gateway' },
    'newlink-unknown-kind': { errno: Errno.EOPNOTSUPP, message: 'Unknown device type' },
    'dellink-missing': { errno: Errno.ENODEV },
    'setlink-ack': { errno: 0 },
  };
  const strerror: Record<string, number> = { 'File exists': Errno.EEXIST };

  test('every case is covered', () => {
    assert.deepEqual(sorted(fx.cases.map((c) => c.name)), sorted(Object.keys(expected)));
  });

  for (const c of fx.cases) {
    test(`${c.name}: errno, the request echoed, extended ACK text`, () => {
      const want = expected[c.name]!;
      const [req] = parseMessages(bytes(c.request));
      const msgs = c.datagrams.flatMap((d) => parseMessages(bytes(d)));
      assert.equal(msgs.length, 1);
      const m = msgs[0]!;
      assert.equal(m.type, NLMSG.ERROR);
      assert.equal(m.seq, req!.seq);
      const err = parseError(m);
      assert.equal(err.errno, want.errno);
      assert.deepEqual(err.request, { type: req!.type, flags: req!.flags, seq: req!.seq, pid: req!.pid });
      assert.equal(err.message, want.message);
      // Capped answers (and every ACK) carry only the request header; the others the full request.
      const capped = c.capAck || want.errno === 0;
      assert.equal((m.flags & NLM_F.CAPPED) !== 0, capped);
      assert.equal((m.flags & NLM_F.ACK_TLVS) !== 0, want.message !== undefined);
      if (!capped) assert.deepEqual(m.payload.subarray(4, 4 + req!.payload.length + 16), bytes(c.request));
      // iproute2's view of the same request: its extended ACK text or its strerror.
      const said = c.ip?.stderr;
      if (said?.startsWith('Error: ')) assert.equal(said, `Error: ${err.message}.`);
      if (said?.startsWith('RTNETLINK answers: ')) {
        assert.equal(strerror[said.slice('RTNETLINK answers: '.length)], err.errno);
      }
      if (err.errno !== 0) {
        const k = new KernelError(err.errno, c.name, err.message ? { message: err.message } : {});
        assert.equal(k.code, codeForErrno(want.errno));
      }
    });
  }

  test('EEXIST maps to EXISTS, ENODEV to NOT_FOUND', () => {
    assert.equal(codeForErrno(Errno.EEXIST), 'EXISTS');
    assert.equal(codeForErrno(Errno.ENODEV), 'NOT_FOUND');
  });
});

// ---- across all fixtures -----------------------------------------------------------------------

describe('fixtures: framing', () => {
  test('every datagram splits into whole messages; family headers decode', () => {
    const codecs: Record<string, FixedCodec<unknown>> = {
      'link.json': ifinfomsg,
      'link-bridge.json': ifinfomsg,
      'addr.json': ifaddrmsg,
      'route.json': rtmsg,
      'neigh.json': ndmsg,
      'fdb.json': ndmsg,
    };
    let n = 0;
    for (const [file, codec] of Object.entries(codecs)) {
      const fx = load<Capture<unknown>>(file);
      assert.match(fx.kernel, /^\d+\.\d+/);
      for (const d of fx.datagrams) {
        const b = bytes(d);
        let covered = 0;
        for (const m of parseMessages(b)) {
          covered += (16 + m.payload.length + 3) & ~3;
          if (m.type !== NLMSG.DONE) decodeBody(codec, m.payload);
          n++;
        }
        assert.equal(covered, b.length, `${file}: datagram fully consumed`);
      }
    }
    assert.ok(n > 40, `${n} messages`);
  });
});
