/**
 * A small cluster for backend kernel tests (vxlan, host-gw, udp): N "hosts" inside one test
 * Bed, each a namespace joined to an underlay switch, with a bridge holding the host's subnet
 * gateway and one "container" namespace on it. Generic: the backend under test is built by the
 * caller from `host.ctx`, and its lease from `host.lease` (plus the backend's data).
 *
 *   switch ns:  bridge sw0 ── p0, p1, … (veth)
 *   host i:     eth0 192.168.100.(10+i)/24  ·  bridge weft0 10.244.(i+1).1/24  ·  vc0 (veth)
 *   container:  eth0 10.244.(i+1).2/24, default via 10.244.(i+1).1
 *
 * Host i (0-based) leases 10.244.(i+1).0/24 of 10.244.0.0/16; hosts forward (ip_forward=1).
 * Test-only code under src/ so that every backend's tests share it; nothing here runs in the
 * daemon. Everything lives in the bed's namespaces and goes with them.
 */
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import type { NetHandle } from '../../kernel/handle.js';
import type { Netns } from '../../kernel/netns.js';
import { WeftError } from '../../lib/errors.js';
import { addIP, formatIP, formatIPNet, type IPNet, maskIP, parseCidr } from '../../lib/ip.js';
import { createLogger } from '../../lib/log.js';
import type { BackendContext, LeaseInfo } from './types.js';

/**
 * What the testbed needs of test/bed.ts's `Bed` and `BedNs`, stated here because code under
 * src/ may not import from test/ (the layer check): a `Bed` is passed where `Bed` is asked.
 */
export interface BedNs {
  readonly ns: Netns;
  readonly h: NetHandle;
  readonly name: string;
}
export interface Bed {
  ns(label?: string): BedNs;
  spawn(b: BedNs, cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  ipJson<T = unknown>(b: BedNs, ...args: string[]): Promise<T>;
}
/** A Bed that also runs a command to completion (test/bed.ts's does), for `measure`. */
export interface ExecBed extends Bed {
  exec(b: BedNs, cmd: string, args: string[], opts?: { timeoutMs?: number }): Promise<{ stdout: string }>;
}

export interface TestbedOptions {
  /** Number of hosts (1-50); default 3. */
  readonly hosts?: number;
  /** Written into every host's `lease.backendType`. */
  readonly backendType: string;
  /** Cluster network, a /16 (host i leases the (i+1)th /24 of it); default 10.244.0.0/16. */
  readonly network?: string;
  /** Underlay /24; host i is .(10+i) on it; default 192.168.100.0/24. */
  readonly underlay?: string;
  /** Name of each host's container bridge; default weft0 (the udp backend may want another). */
  readonly bridge?: string;
  /** MTU of the underlay links (switch ports and each host's eth0); default 1500. */
  readonly underlayMtu?: number;
}

/** One log record a backend wrote through `ctx.log` (for asserting warnings). */
export interface LogRecord {
  readonly level: string;
  readonly msg: string;
  readonly [field: string]: unknown;
}

export interface TestHost {
  /** 0-based. */
  readonly index: number;
  /** h0, h1, … (also the namespace's label). */
  readonly label: string;
  readonly ns: BedNs;
  readonly ctx: BackendContext;
  /** This host's lease with `backendData: null`; see `withBackendData`. */
  readonly lease: LeaseInfo;
  readonly container: BedNs;
  readonly containerIp: string;
  /** The bridge's address, the container's default gateway (10.244.(i+1).1). */
  readonly gateway: string;
  readonly publicIp: string;
  /** The container bridge's name in the host namespace. */
  readonly bridge: string;
  /** This host's port on the switch bridge (in the switch namespace). */
  readonly switchPort: string;
  /** What the backend logged through `ctx.log`, oldest first. */
  readonly logs: LogRecord[];
}

export interface Testbed {
  readonly network: IPNet;
  readonly underlay: IPNet;
  /** The switch namespace and its bridge. */
  readonly switch: BedNs;
  readonly switchBridge: string;
  readonly hosts: readonly TestHost[];
}

const SWITCH_BRIDGE = 'sw0';

/**
 * Build the cluster. Throws INVALID for bad options; kernel errors as the kernel layer reports
 * them. The namespaces belong to `b` and are removed at its cleanup.
 */
export function buildTestbed(b: Bed, opts: TestbedOptions): Testbed {
  const count = opts.hosts ?? 3;
  if (!Number.isInteger(count) || count < 1 || count > 50) {
    throw new WeftError('INVALID', `testbed hosts must be 1-50, not ${count}`);
  }
  const network = parseCidr(opts.network ?? '10.244.0.0/16');
  const underlay = parseCidr(opts.underlay ?? '192.168.100.0/24');
  if (network.ip.family !== 4 || network.len > 16 || underlay.ip.family !== 4 || underlay.len > 24) {
    throw new WeftError('INVALID', 'testbed network must be an IPv4 /16 or larger, underlay a /24 or larger');
  }
  const bridge = opts.bridge ?? 'weft0';
  const underlayMtu = opts.underlayMtu ?? 1500;

  const sw = b.ns('sw');
  sw.h.links.add({ kind: 'bridge', name: SWITCH_BRIDGE, up: true, stp: false });

  const hosts: TestHost[] = [];
  for (let i = 0; i < count; i++) {
    const label = `h${i}`;
    const host = b.ns(label);
    const publicIp = addIP(underlay.ip, 10 + i);
    const switchPort = `p${i}`;
    sw.h.links.add({
      kind: 'veth',
      name: switchPort,
      master: SWITCH_BRIDGE,
      mtu: underlayMtu,
      up: true,
      peer: { name: 'eth0', netns: host.ns, mtu: underlayMtu },
    });
    host.h.links.setUp('eth0');
    host.h.addrs.add('eth0', { ip: publicIp, len: underlay.len });
    host.h.sysctl.set('net.ipv4.ip_forward', 1);

    // The host's subnet: the (i+1)th /24 of the cluster network.
    const subnet: IPNet = { ip: maskIP(addIP(network.ip, (i + 1) * 256), 24), len: 24 };
    const gateway = addIP(subnet.ip, 1);
    const containerIp = addIP(subnet.ip, 2);
    host.h.links.add({ kind: 'bridge', name: bridge, up: true, stp: false });
    host.h.addrs.add(bridge, { ip: gateway, len: 24 });

    const container = b.ns(`c${i}`);
    host.h.links.add({
      kind: 'veth',
      name: 'vc0',
      master: bridge,
      up: true,
      peer: { name: 'eth0', netns: container.ns },
    });
    container.h.links.setUp('eth0');
    container.h.addrs.add('eth0', { ip: containerIp, len: 24 });
    container.h.routes.add({ dst: 'default', via: gateway });

    const eth0 = host.h.links.get('eth0');
    const logs: LogRecord[] = [];
    const log = createLogger({
      level: 'debug',
      fields: { host: label },
      sink: (line) => logs.push(JSON.parse(line) as LogRecord),
    });
    hosts.push({
      index: i,
      label,
      ns: host,
      ctx: {
        host: host.h,
        network,
        publicIp,
        iface: { name: 'eth0', index: eth0.index, mtu: eth0.mtu },
        log,
      },
      lease: { subnet, publicIp, backendType: opts.backendType, backendData: null },
      container,
      containerIp: formatIP(containerIp),
      gateway: formatIP(gateway),
      publicIp: formatIP(publicIp),
      bridge,
      switchPort,
      logs,
    });
  }
  return { network, underlay, switch: sw, switchBridge: SWITCH_BRIDGE, hosts };
}

/** The host's lease carrying the backend's data (what `prepare()` returned). */
export const withBackendData = (lease: LeaseInfo, backendData: unknown): LeaseInfo => ({
  ...lease,
  backendData,
});

/** Every other host's lease, as host `self` sees its peers. */
export const peersOf = (leases: readonly LeaseInfo[], self: LeaseInfo): LeaseInfo[] =>
  leases.filter((l) => formatIPNet(l.subnet) !== formatIPNet(self.subnet));

/**
 * Set the container-side MTU of a host (its bridge, the bridge's veth and the container's eth0),
 * as the daemon gives the bridge network the backend's MTU.
 */
/**
 * The host's routes to cluster subnets (10.244.0.0/16) other than its own bridge's, as iproute2
 * prints them (`DST [via GW] dev DEV [onlink]`, sorted): the independent cross-check of what a
 * backend programmed.
 */
export async function clusterRoutes(b: Bed, host: TestHost): Promise<string[]> {
  const routes = await b.ipJson<{ dst: string; gateway?: string; dev: string; flags: string[] }[]>(
    host.ns,
    'route',
    'show',
  );
  return routes
    .filter((r) => r.dst.startsWith('10.244.') && r.dev !== host.bridge)
    .map(
      (r) =>
        `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''} dev ${r.dev}${r.flags.includes('onlink') ? ' onlink' : ''}`,
    )
    .sort();
}

export function setPodMtu(host: TestHost, mtu: number): void {
  host.container.h.links.setMtu('eth0', mtu);
  host.ns.h.links.setMtu('vc0', mtu);
  host.ns.h.links.setMtu(host.bridge, mtu);
}

/** Warnings (and errors) the backend logged on this host. */
export const warnings = (host: TestHost): LogRecord[] =>
  host.logs.filter((r) => r.level === 'warn' || r.level === 'error');

export interface CaptureOptions {
  /** Interface to listen on inside `where`; default the switch bridge (sw0). */
  readonly iface?: string;
  /** tcpdump filter words, e.g. ['udp', 'port', '8472']. */
  readonly filter: readonly string[];
  /** Extra tcpdump flags, e.g. ['-T', 'vxlan'] to decode port 8472 as VXLAN. */
  readonly flags?: readonly string[];
  /** Packets to wait for (tcpdump -c); default 1. */
  readonly count?: number;
  /** Hard bound on the capture (timeout -s KILL); default 5 s. */
  readonly timeoutS?: number;
}

/**
 * Capture packets with tcpdump inside `where` (default: the switch namespace) while `trigger`
 * runs: starts `timeout N tcpdump -c COUNT -nn -l …`, waits until it listens, runs the trigger,
 * and resolves to tcpdump's printed lines (fewer than `count` if the timeout hit first).
 * Bounded by `timeoutS`; the process is also killed at the bed's cleanup.
 */
export async function capture(
  b: Bed,
  where: BedNs,
  opts: CaptureOptions,
  trigger: () => Promise<unknown>,
): Promise<string[]> {
  const timeoutS = opts.timeoutS ?? 5;
  const child: ChildProcess = b.spawn(
    where,
    'timeout',
    [
      '-s',
      'KILL',
      String(timeoutS),
      'tcpdump',
      '-c',
      String(opts.count ?? 1),
      '-nn',
      '-l',
      '-i',
      opts.iface ?? SWITCH_BRIDGE,
      ...(opts.flags ?? []),
      ...opts.filter,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // tcpdump says "listening on IFACE" on stderr once its socket is open.
  await new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(done, timeoutS * 1000);
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      if (err.includes('listening on')) done();
    });
    void exited.then(done);
  });
  await trigger();
  await exited;
  return out.split('\n').filter((l) => l.trim().length > 0);
}

/** RX/TX packet counters of a link, as `ip -s` reads them. */
export async function linkCounters(
  b: Bed,
  where: BedNs,
  dev: string,
): Promise<{ rxPackets: number; txPackets: number }> {
  const [l] = await b.ipJson<{ stats64?: { rx: { packets: number }; tx: { packets: number } } }[]>(
    where,
    '-s',
    'link',
    'show',
    'dev',
    dev,
  );
  return { rxPackets: l?.stats64?.rx.packets ?? 0, txPackets: l?.stats64?.tx.packets ?? 0 };
}

/** What `measure` found between two containers. */
export interface Figures {
  readonly rttMinMs: number;
  readonly rttAvgMs: number;
  readonly rttMaxMs: number;
  /** iperf3 TCP, one stream, 3 s; undefined when iperf3 is not installed. */
  readonly gbps: number | undefined;
}

/**
 * Ping RTT (10 pings) and an iperf3 run (`-t 3`, bounded) from `from`'s container to `to`'s.
 * Throws when the pings get no answer.
 */
export async function measure(b: ExecBed, from: TestHost, to: TestHost): Promise<Figures> {
  const { stdout } = await b.exec(from.container, 'ping', [
    '-n',
    '-q',
    '-c',
    '10',
    '-i',
    '0.05',
    '-w',
    '5',
    to.containerIp,
  ]);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(stdout);
  if (!rtt) throw new WeftError('INTERNAL', `no ping RTT in: ${stdout}`);
  const base = { rttMinMs: Number(rtt[1]), rttAvgMs: Number(rtt[2]), rttMaxMs: Number(rtt[3]) };
  const hasIperf = await b.exec(from.container, 'iperf3', ['--version']).then(
    () => true,
    () => false,
  );
  if (!hasIperf) return { ...base, gbps: undefined };
  const server = b.spawn(to.container, 'iperf3', ['-s', '-1', '-B', to.containerIp], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 3000);
    server.stdout?.setEncoding('utf8').on('data', (d: string) => {
      if (d.includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    server.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  const run = await b.exec(from.container, 'iperf3', ['-c', to.containerIp, '-t', '3', '-J'], {
    timeoutMs: 15_000,
  });
  const j = JSON.parse(run.stdout) as { end?: { sum_received?: { bits_per_second?: number } } };
  return { ...base, gbps: (j.end?.sum_received?.bits_per_second ?? 0) / 1e9 };
}

/** The network address of a subnet as text (10.244.2.0 for 10.244.2.0/24). */
export const networkAddr = (subnet: IPNet): string => formatIP(maskIP(subnet.ip, subnet.len));
