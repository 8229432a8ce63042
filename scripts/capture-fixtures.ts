/**
 * Capture real kernel replies as test fixtures for the pure netlink codec.
 *
 *   node --import tsx scripts/capture-fixtures.ts [OUT_DIR]     (as root; default src/netlink/fixtures)
 *
 * Builds a throwaway namespace (/run/netns/wt-fixtures-PID, always removed at the end, also on
 * failure), fills it with iproute2 (a bridge, a veth pair, a vxlan device, a macvlan, IPv4 and
 * IPv6 addresses, routes in several tables, neighbours, vxlan FDB entries), then dumps links,
 * bridge ports, addresses, routes, neighbours and the bridge FDB through a raw NETLINK_ROUTE
 * socket, and provokes a few errors. Each fixture keeps the request and the raw reply datagrams
 * as hex, next to what `ip -j` / `bridge -j` said about the same objects, so
 * src/netlink/fixtures.test.ts can check the decoder against an independent reader without
 * root. Nothing touches the root namespace: every command runs with `-n NAME`.
 *
 * The socket here is a small copy of src/kernel/rtnl.ts's send/recv, because NetlinkSocket
 * parses answers and does not expose the datagrams.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as libc from '../src/kernel/libc.js';
import { Netns } from '../src/kernel/netns.js';
import { parseIP } from '../src/lib/ip.js';
import { type Attr, a } from '../src/netlink/attr.js';
import {
  AF,
  IFLA,
  NETLINK_OPT,
  NLM_F,
  NLMSG,
  RT_SCOPE,
  RT_TABLE,
  RTA,
  RTM,
  RTN,
  RTPROT,
  SOL_NETLINK,
} from '../src/netlink/consts.js';
import { blankIfInfo, encodeNewLink } from '../src/netlink/link.js';
import {
  type Body,
  encodeMessage,
  type FixedCodec,
  ifaddrmsg,
  ifinfomsg,
  ndmsg,
  parseMessages,
  rtmsg,
} from '../src/netlink/message.js';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const outDir = path.resolve(process.argv[2] ?? path.join(root, 'src/netlink/fixtures'));
const NAME = `wt-fixtures-${process.pid.toString(36)}`;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

// ---- a raw NETLINK_ROUTE socket -------------------------------------------------------------

interface Exchange {
  /** The request as sent. */
  readonly request: string;
  /** Every datagram of the answer, in order. */
  readonly datagrams: string[];
}

class RawSocket {
  readonly #fd: number;
  #seq = 1000;
  readonly #buf = new Uint8Array(1 << 20);

  /** A socket opened inside `ns`; `capAck`: NETLINK_CAP_ACK (errors do not echo the request). */
  constructor(ns: Netns, capAck: boolean) {
    this.#fd = ns.run(() => libc.socket(AF.NETLINK, libc.SOCK.RAW | libc.SOCK.CLOEXEC, 0));
    try {
      const addr = new Uint8Array(12);
      new DataView(addr.buffer).setUint16(0, AF.NETLINK, true);
      libc.bind(this.#fd, addr);
      libc.setsockoptInt(this.#fd, SOL_NETLINK, NETLINK_OPT.EXT_ACK, 1);
      libc.setsockoptInt(this.#fd, SOL_NETLINK, NETLINK_OPT.CAP_ACK, capAck ? 1 : 0);
      const tv = new Uint8Array(16);
      new DataView(tv.buffer).setBigInt64(0, 5n, true);
      libc.setsockopt(this.#fd, libc.SOL_SOCKET, libc.SO.RCVTIMEO, tv);
    } catch (e) {
      libc.close(this.#fd);
      throw e;
    }
  }

  close(): void {
    libc.close(this.#fd);
  }

  #recv(): Uint8Array {
    const n = libc.recv(this.#fd, this.#buf, libc.MSG.TRUNC);
    if (n > this.#buf.length) throw new Error(`datagram truncated (${n} bytes)`);
    return this.#buf.slice(0, n);
  }

  /** Send one message; collect datagrams until NLMSG_DONE or NLMSG_ERROR answers it. */
  exchange<H>(type: number, flags: number, codec: FixedCodec<H>, body: Body<H>): Exchange {
    for (let attempt = 1; attempt <= 5; attempt++) {
      const seq = ++this.#seq;
      const req = encodeMessage({ type, flags: NLM_F.REQUEST | flags, seq, pid: 0 }, codec, body);
      const kernel = new Uint8Array(12);
      new DataView(kernel.buffer).setUint16(0, AF.NETLINK, true);
      libc.sendto(this.#fd, req, kernel);
      const datagrams: Uint8Array[] = [];
      let done = false;
      let interrupted = false;
      while (!done) {
        const d = this.#recv();
        datagrams.push(d);
        for (const m of parseMessages(d)) {
          if (m.seq !== seq) throw new Error(`unexpected answer to seq ${m.seq} (want ${seq})`);
          if (m.flags & NLM_F.DUMP_INTR) interrupted = true;
          if (m.type === NLMSG.DONE || m.type === NLMSG.ERROR) done = true;
        }
      }
      if (!interrupted) return { request: hex(req), datagrams: datagrams.map(hex) };
    }
    throw new Error('dump interrupted 5 times');
  }
}

// ---- iproute2 in the namespace --------------------------------------------------------------

function ip(...args: string[]): string {
  return execFileSync('ip', ['-n', NAME, ...args], { encoding: 'utf8', timeout: 10_000 });
}
function ipJson(...args: string[]): unknown {
  return JSON.parse(ip('-j', ...args) || '[]');
}
function bridgeJson(...args: string[]): unknown {
  const out = execFileSync('bridge', ['-n', NAME, '-j', ...args], { encoding: 'utf8', timeout: 10_000 });
  return JSON.parse(out || '[]');
}
/** What iproute2 prints for a command expected to fail. */
function ipFails(...args: string[]): { command: string; status: number | null; stderr: string } {
  const r = spawnSync('ip', ['-n', NAME, ...args], { encoding: 'utf8', timeout: 10_000 });
  if (r.status === 0) throw new Error(`ip ${args.join(' ')} unexpectedly succeeded`);
  return { command: `ip ${args.join(' ')}`, status: r.status, stderr: r.stderr.trim() };
}
const run = (cmd: string, ...args: string[]) =>
  execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });

/** The objects every fixture describes. Keep in step with fixtures.test.ts. */
function populate(ns: Netns): void {
  // No duplicate address detection: addresses are final at once, so the dump and `ip -j` agree.
  for (const scope of ['all', 'default']) {
    const fd = ns.openFile(`/proc/sys/net/ipv6/conf/${scope}/accept_dad`, 'w');
    try {
      fs.writeSync(fd, '0');
    } finally {
      fs.closeSync(fd);
    }
  }
  ip('link', 'set', 'lo', 'up');
  ip('link', 'add', 'br0', 'address', '02:00:00:00:01:00', 'mtu', '1400', 'type', 'bridge');
  ip(
    'link',
    'add',
    'veth0',
    'address',
    '02:00:00:00:02:00',
    'mtu',
    '1400',
    'type',
    'veth',
    'peer',
    'name',
    'veth1',
    'address',
    '02:00:00:00:02:01',
    'mtu',
    '1500',
  );
  ip('link', 'set', 'veth0', 'master', 'br0');
  ip('addr', 'add', '192.0.2.1/24', 'dev', 'veth1');
  ip('-6', 'addr', 'add', '2001:db8:1::1/64', 'dev', 'veth1', 'nodad');
  ip(
    'link',
    'add',
    'vx0',
    'address',
    '02:00:00:00:03:00',
    'mtu',
    '1450',
    'type',
    'vxlan',
    'id',
    '42',
    'dstport',
    '8472',
    'nolearning',
    'local',
    '192.0.2.1',
    'dev',
    'veth1',
    'ttl',
    '64',
  );
  ip(
    'link',
    'add',
    'mv0',
    'link',
    'veth1',
    'address',
    '02:00:00:00:04:00',
    'type',
    'macvlan',
    'mode',
    'bridge',
  );
  for (const l of ['br0', 'veth0', 'veth1', 'vx0', 'mv0']) ip('link', 'set', l, 'up');
  ip('addr', 'add', '10.88.0.1/24', 'dev', 'br0');
  ip('-6', 'addr', 'add', '2001:db8:88::1/64', 'dev', 'br0', 'nodad');
  ip('addr', 'add', '10.77.0.5/16', 'dev', 'mv0');
  // Routes: a gateway route with a metric, a blackhole, one in table 100, an IPv6 gateway route.
  ip('route', 'add', '198.51.100.0/24', 'via', '192.0.2.254', 'metric', '50');
  ip('route', 'add', 'blackhole', '203.0.113.0/24');
  ip('route', 'add', '10.100.0.0/16', 'dev', 'veth1', 'table', '100');
  ip('-6', 'route', 'add', '2001:db8:2::/64', 'via', '2001:db8:1::fe');
  // Neighbours: permanent IPv4 and IPv6 entries.
  ip('neigh', 'add', '192.0.2.10', 'lladdr', '02:00:00:00:00:10', 'dev', 'veth1', 'nud', 'permanent');
  ip(
    '-6',
    'neigh',
    'add',
    '2001:db8:1::10',
    'lladdr',
    '02:00:00:00:00:11',
    'dev',
    'veth1',
    'nud',
    'permanent',
  );
  // VXLAN FDB: the all-zeros default destination and one learned-by-hand peer MAC.
  run('bridge', '-n', NAME, 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vx0', 'dst', '192.0.2.2');
  run(
    'bridge',
    '-n',
    NAME,
    'fdb',
    'add',
    '02:00:00:00:00:20',
    'dev',
    'vx0',
    'dst',
    '192.0.2.20',
    'self',
    'permanent',
  );
}

// ---- capture ---------------------------------------------------------------------------------

function write(file: string, value: unknown): void {
  fs.writeFileSync(path.join(outDir, file), `${JSON.stringify(value, null, 2)}\n`);
  console.log(`wrote ${path.relative(root, path.join(outDir, file))}`);
}

function capture(ns: Netns): void {
  const meta = {
    kernel: os.release(),
    iproute2: run('ip', '-V').trim(),
    captured: new Date().toISOString().slice(0, 10),
    by: 'scripts/capture-fixtures.ts',
  };
  const sock = new RawSocket(ns, true);
  const uncapped = new RawSocket(ns, false);
  try {
    const dump = <H>(type: number, codec: FixedCodec<H>, header: H, attrs: Attr[] = []) =>
      sock.exchange(type, NLM_F.DUMP, codec, { header, attrs });
    const nd = (family: number) => ({ family, index: 0, state: 0, flags: 0, type: 0 });
    const rt = (family: number) => ({
      family,
      dstLen: 0,
      srcLen: 0,
      tos: 0,
      table: 0,
      protocol: 0,
      scope: 0,
      type: 0,
      flags: 0,
    });

    write('link.json', {
      about: 'RTM_GETLINK dump (AF_UNSPEC); ip: `ip -j -d link show`',
      ...meta,
      ...dump(RTM.GETLINK, ifinfomsg, blankIfInfo()),
      ip: ipJson('-d', 'link', 'show'),
    });
    write('link-bridge.json', {
      about: 'RTM_GETLINK dump (AF_BRIDGE: bridge ports with IFLA_PROTINFO); ip: `bridge -j -d link show`',
      ...meta,
      ...dump(RTM.GETLINK, ifinfomsg, blankIfInfo({ family: AF.BRIDGE })),
      ip: bridgeJson('-d', 'link', 'show'),
    });
    write('addr.json', {
      about: 'RTM_GETADDR dump (AF_UNSPEC); ip: `ip -j addr show`',
      ...meta,
      ...dump(RTM.GETADDR, ifaddrmsg, { family: AF.UNSPEC, prefixlen: 0, flags: 0, scope: 0, index: 0 }),
      ip: ipJson('addr', 'show'),
    });
    write('route.json', {
      about: 'RTM_GETROUTE dump (AF_UNSPEC: every family and table); ip: `ip -j [-6] route show table all`',
      ...meta,
      ...dump(RTM.GETROUTE, rtmsg, rt(AF.UNSPEC)),
      ip: {
        inet: ipJson('-4', 'route', 'show', 'table', 'all'),
        inet6: ipJson('-6', 'route', 'show', 'table', 'all'),
      },
    });
    write('neigh.json', {
      about: 'RTM_GETNEIGH dump (AF_UNSPEC: ARP and NDP); ip: `ip -j neigh show`',
      ...meta,
      ...dump(RTM.GETNEIGH, ndmsg, nd(AF.UNSPEC)),
      ip: ipJson('neigh', 'show'),
    });
    write('fdb.json', {
      about: 'RTM_GETNEIGH dump (AF_BRIDGE: the FDB of bridges and vxlan devices); ip: `bridge -j fdb show`',
      ...meta,
      ...dump(RTM.GETNEIGH, ndmsg, nd(AF.BRIDGE)),
      ip: bridgeJson('fdb', 'show'),
    });

    // Errors, and one plain ACK, as the kernel answers them with and without NETLINK_CAP_ACK.
    const create = NLM_F.ACK | NLM_F.CREATE | NLM_F.EXCL;
    const existing = encodeNewLink({ kind: 'bridge', name: 'br0' });
    const badGw = {
      header: {
        ...rt(AF.INET),
        dstLen: 24,
        table: RT_TABLE.MAIN,
        protocol: RTPROT.BOOT,
        scope: RT_SCOPE.UNIVERSE,
        type: RTN.UNICAST,
      },
      attrs: [a.ip(RTA.DST, parseIP('10.9.0.0')), a.ip(RTA.GATEWAY, parseIP('10.200.0.1'))],
    };
    const unknownKind = {
      header: blankIfInfo(),
      attrs: [a.str(IFLA.IFNAME, 'x0'), a.nest(IFLA.LINKINFO, [a.str(1, 'nosuchkind')])],
    };
    const gone = { header: blankIfInfo(), attrs: [a.str(IFLA.IFNAME, 'nosuch0')] };
    const sameMtu = { header: blankIfInfo(), attrs: [a.str(IFLA.IFNAME, 'veth1'), a.u32(IFLA.MTU, 1500)] };
    write('errors.json', {
      about:
        'NLMSG_ERROR answers (one ACK); capAck: NETLINK_CAP_ACK was set; ip: what iproute2 says to the same request',
      ...meta,
      cases: [
        {
          name: 'newlink-exists',
          what: 'RTM_NEWLINK bridge br0 with NLM_F_CREATE|NLM_F_EXCL, br0 exists',
          errno: 'EEXIST',
          capAck: true,
          ...sock.exchange(RTM.NEWLINK, create, ifinfomsg, existing),
          ip: ipFails('link', 'add', 'br0', 'type', 'bridge'),
        },
        {
          name: 'newlink-exists-uncapped',
          what: 'the same, on a socket without NETLINK_CAP_ACK: the request is echoed in full',
          errno: 'EEXIST',
          capAck: false,
          ...uncapped.exchange(RTM.NEWLINK, create, ifinfomsg, existing),
          ip: ipFails('link', 'add', 'br0', 'type', 'bridge'),
        },
        {
          name: 'newroute-bad-gateway',
          what: 'RTM_NEWROUTE 10.9.0.0/24 via 10.200.0.1, a gateway no route reaches',
          capAck: true,
          ...sock.exchange(RTM.NEWROUTE, create, rtmsg, badGw),
          ip: ipFails('route', 'add', '10.9.0.0/24', 'via', '10.200.0.1'),
        },
        {
          name: 'newroute-bad-gateway-uncapped',
          what: 'the same without NETLINK_CAP_ACK: extended ACK TLVs after the echoed request',
          capAck: false,
          ...uncapped.exchange(RTM.NEWROUTE, create, rtmsg, badGw),
          ip: ipFails('route', 'add', '10.9.0.0/24', 'via', '10.200.0.1'),
        },
        {
          name: 'newlink-unknown-kind',
          what: 'RTM_NEWLINK x0 of kind "nosuchkind"',
          capAck: true,
          ...sock.exchange(RTM.NEWLINK, create, ifinfomsg, unknownKind),
          ip: ipFails('link', 'add', 'x0', 'type', 'nosuchkind'),
        },
        {
          name: 'dellink-missing',
          what: 'RTM_DELLINK nosuch0, which does not exist',
          capAck: true,
          ...sock.exchange(RTM.DELLINK, NLM_F.ACK, ifinfomsg, gone),
          ip: ipFails('link', 'del', 'nosuch0'),
        },
        {
          name: 'setlink-ack',
          what: 'RTM_SETLINK veth1 mtu 1500 (unchanged): a plain ACK, errno 0',
          errno: 'OK',
          capAck: true,
          ...sock.exchange(RTM.SETLINK, NLM_F.ACK, ifinfomsg, sameMtu),
        },
      ],
    });
  } finally {
    sock.close();
    uncapped.close();
  }
}

// ---- main ------------------------------------------------------------------------------------

if (process.getuid?.() !== 0) {
  console.error('capture-fixtures needs root (it creates a network namespace)');
  process.exit(1);
}
fs.mkdirSync(outDir, { recursive: true });
const ns = Netns.create(`/run/netns/${NAME}`);
try {
  populate(ns);
  // Let link watch settle operational states (carrier, bridge port forwarding) before reading.
  await new Promise((r) => setTimeout(r, 1500));
  capture(ns);
} finally {
  ns.delete();
}
// Keep committed files in the project's formatting (biome checks src/**); other folders are left as written.
const biome = path.join(root, 'node_modules/.bin/biome');
if (outDir.startsWith(path.join(root, 'src')) && fs.existsSync(biome)) {
  const r = spawnSync(biome, ['format', '--write', outDir], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) console.error('biome format failed: run `npx biome format --write` on the fixtures');
}
