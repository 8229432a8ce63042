/**
 * `weft daemon`: the composition root of one host. It parses its options into a Host, opens the
 * state, builds the drivers registry, the firewall, the DNS server and the process runner, hands
 * them to the host service, reconciles, and serves the API on the unix socket until SIGTERM or
 * SIGINT. Stopping closes the socket, the DNS server and the state; it does not touch running
 * sandboxes, their interfaces or the firewall (a restarted daemon picks them up).
 *
 * With `--store` the host is part of a cluster (flannel's design): before anything else the
 * cluster agent waits for the configuration, has the backend prepare, and acquires the lease;
 * the default network then takes the leased subnet, the backend's MTU, `--ip-masq` and the
 * cluster network; the agent runs the backend and follows the peers' leases. The API socket
 * opens once the lease is held; /readyz answers 200 once the backend runs too. The backends are chosen
 * here, from an explicit table, never by import side effects.
 */
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import { ClusterAgent } from '../control/cluster.js';
import { type HostOptions, localHost } from '../control/host.js';
import { DEFAULT_PREFIX } from '../control/leases/config.js';
import { DEFAULT_TTL_SECONDS } from '../control/leases/manager.js';
import {
  type DnsListen,
  type DnsPort,
  type DnsRecord,
  HostService,
  type ProcessPort,
} from '../control/service.js';
import { HostState } from '../control/state.js';
import { openRegistry, parseStoreSpec } from '../control/store/index.js';
import type { Registry } from '../control/store/types.js';
import { openHandle } from '../kernel/handle.js';
import { WeftError } from '../lib/errors.js';
import { formatIP, formatIPNet, parseIP } from '../lib/ip.js';
import { createLogger, type Level, type Logger } from '../lib/log.js';
import { hostGwBackend } from '../net/backends/hostgw/hostgw.js';
import type { BackendFactory, BackendType } from '../net/backends/types.js';
import { udpBackend } from '../net/backends/udp/udp.js';
import { findUnderlay } from '../net/backends/underlay.js';
import { vxlanBackend } from '../net/backends/vxlan/vxlan.js';
import { BridgeDriver } from '../net/bridge/driver.js';
import type { UplinkRecord } from '../net/bridge/uplink.js';
import {
  type HostResolvers,
  hostResolvers,
  renderHostname,
  renderHosts,
  renderResolvConf,
} from '../net/dns/files.js';
import { DnsServer } from '../net/dns/server.js';
import { HostFirewall } from '../net/firewall/apply.js';
import { HostDriver } from '../net/host/driver.js';
import { MacvlanDriver } from '../net/macvlan/driver.js';
import { NoneDriver } from '../net/none/driver.js';
import { ProcessStarter, processAlive, stopProcess } from '../net/process.js';
import { createApiServer } from './api.js';
import { type DockerPlugin, startDockerPlugin } from './docker/plugin.js';

export interface DaemonOptions extends HostOptions {
  logLevel?: Level;
  /** Resolvers for names weft does not know (default: the host's /etc/resolv.conf). */
  upstreams?: string[];
  defaultBridge?: string;
  defaultSubnet?: string;
  /** Join a cluster: `embedded:/path/store.db` or `etcd://host:2379,…`. */
  store?: string;
  /** Key prefix in the store (default /weft/network; flannel's is /coreos.com/network). */
  prefix?: string;
  /** The interface that carries the overlay (default: the default route's). */
  iface?: string;
  /** This host's underlay address (default: the interface's first IPv4 address). */
  publicIp?: string;
  /** Masquerade traffic leaving the cluster network (flannel's --ip-masq). */
  ipMasq?: boolean;
  /** Where subnet.env is written (default <runDir>/subnet.env). */
  subnetFile?: string;
  leaseTtlSeconds?: number;
  /** Period of the backend's resync against the leases (default 10 s). */
  resyncMs?: number;
  etcdCaFile?: string;
  etcdCertFile?: string;
  etcdKeyFile?: string;
  /** Serve the Docker network and IPAM plugin on this socket (e.g. /run/docker/plugins/weft.sock). */
  dockerPluginSocket?: string;
}

/** How long requests under way may take to finish when the daemon stops. */
const CLOSE_GRACE_MS = 2_000;

/** The backends this build has: the explicit registry ARCHITECTURE.md asks for. */
export const BACKENDS: Readonly<Record<BackendType, BackendFactory>> = {
  vxlan: vxlanBackend,
  'host-gw': hostGwBackend,
  udp: udpBackend,
};

/** Keeps one DNS server whose listeners follow the networks that have DNS. */
class DnsManager implements DnsPort {
  #server: DnsServer | undefined;
  /** Bound addresses, with the network and subnets they were bound for. */
  #listening = new Map<string, string>();
  readonly upstreamList: string[];
  constructor(
    private readonly resolv: HostResolvers,
    private readonly log: Logger,
  ) {
    this.upstreamList = resolv.upstreams.map(formatIP);
  }

  hostResolv(): { nameservers: string[]; search: string[]; options: string[] } {
    const r = this.resolv;
    return { nameservers: r.nameservers.map(formatIP), search: r.search, options: r.options };
  }

  async update(
    listen: readonly DnsListen[],
    records: readonly DnsRecord[],
    upstreams: ReadonlyMap<string, readonly string[]>,
  ): Promise<void> {
    if (!this.#server) {
      if (listen.length === 0) return;
      this.#server = await DnsServer.start({ upstreams: this.upstreamList, log: this.log });
    }
    const server = this.#server;
    // Names first: they wait on no bind.
    server.setRecords(records, { upstreams });
    const key = (l: DnsListen) => `${l.network} ${l.subnets.join(',')}`;
    const want = new Map(listen.map((l) => [l.address, l]));
    for (const address of this.#listening.keys()) {
      if (want.has(address)) continue;
      server.removeListen(address);
      this.#listening.delete(address);
    }
    // Each address on its own: one that cannot be bound (a host DNS server on 0.0.0.0:53) keeps
    // no other network from its names, and is tried again at the next update.
    for (const [address, l] of want) {
      if (this.#listening.get(address) === key(l)) continue;
      try {
        await server.addListen({ address, network: l.network, subnets: l.subnets });
        this.#listening.set(address, key(l));
      } catch (error) {
        this.log.warn('the DNS server cannot listen on a network gateway; trying again at the next change', {
          address,
          network: l.network,
          error,
        });
      }
    }
  }

  close(): void {
    this.#server?.close();
    this.#server = undefined;
  }
}

/** The process runner: `starter` keeps a sandbox helper warm, off the request path. */
const processPort = (starter: ProcessStarter): ProcessPort => ({
  begin: (spec) => starter.begin(spec),
  alive: (pid, startTime) => processAlive(pid, startTime),
  stop: (pid, startTime, opts) => stopProcess(pid, startTime, opts),
  renderFiles: (i) => ({
    hosts: renderHosts({ hostname: i.hostname, ips: i.ips, aliases: i.aliases, extraHosts: i.extraHosts }),
    resolvConf: renderResolvConf({
      nameservers: i.nameservers.slice(0, 3),
      search: i.search,
      options: i.options,
    }),
    hostname: renderHostname(i.hostname),
  }),
});

/** The host's resolvers (see hostResolvers); `upstreams` given: those, for both, and nothing else. */
function readHostResolvers(upstreams: string[] | undefined): HostResolvers {
  if (upstreams !== undefined) {
    const ips = upstreams.map((u) => parseIP(u));
    return { upstreams: ips, nameservers: ips, search: [], options: [] };
  }
  const read = (p: string): string | undefined => {
    try {
      return fs.readFileSync(p, 'utf8');
    } catch {
      return undefined;
    }
  };
  return hostResolvers(read('/etc/resolv.conf') ?? '', read('/run/systemd/resolve/resolv.conf'));
}

export interface RunningDaemon {
  readonly service: HostService;
  readonly server: http.Server;
  close(): Promise<void>;
}

/**
 * Start the daemon; resolves once the API socket listens, the cluster (with --store) is joined
 * and the state is reconciled. The socket opens first: until the daemon is ready every call but
 * /healthz answers UNAVAILABLE saying what it waits for. `signal` aborts a start that waits
 * (for the store or the cluster configuration).
 */
export async function startDaemon(opts: DaemonOptions = {}, signal?: AbortSignal): Promise<RunningDaemon> {
  const host = localHost(opts);
  const log = createLogger({ level: opts.logLevel ?? 'info', fields: { host: host.name } });
  fs.mkdirSync(host.runDir, { recursive: true, mode: 0o755 });
  const h = openHandle(host.ns);

  let ready = false;
  let phase = 'opening the API';
  let service: HostService | undefined;
  let cluster: ClusterAgent | undefined;
  const server = createApiServer({
    service: () => service,
    starting: () => phase,
    log: log.child({ component: 'api' }),
    ready: () => ready,
    ...(opts.store !== undefined && {
      cluster: () => {
        if (!cluster) throw new WeftError('UNAVAILABLE', `the daemon is starting: ${phase}`);
        return cluster;
      },
    }),
  });
  // The socket: a stale one from a crashed daemon is replaced.
  fs.mkdirSync(path.dirname(host.socketPath), { recursive: true });
  if (fs.existsSync(host.socketPath)) fs.rmSync(host.socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(host.socketPath, () => resolve());
  });
  fs.chmodSync(host.socketPath, 0o660);

  let registry: Registry | undefined;
  let state: HostState | undefined;
  let dns: DnsManager | undefined;
  let firewall: HostFirewall | undefined;
  // Two idle helpers: the one handed out has finished starting perl even when starts come
  // back to back (bench:attach: with one, the request often waited ~1 ms for it).
  const starter = new ProcessStarter({ log: log.child({ component: 'process' }), warm: 2 });
  let docker: DockerPlugin | undefined;
  try {
    // The cluster first: the default network depends on the lease.
    if (opts.store !== undefined) {
      const spec = parseStoreSpec(opts.store, host.stateDir);
      const underlay = findUnderlay(h, {
        ...(opts.iface !== undefined && { iface: opts.iface }),
        ...(opts.publicIp !== undefined && { publicIp: opts.publicIp }),
      });
      registry = await openRegistry(spec, {
        ...(opts.etcdCaFile !== undefined && { caFile: opts.etcdCaFile }),
        ...(opts.etcdCertFile !== undefined && { certFile: opts.etcdCertFile }),
        ...(opts.etcdKeyFile !== undefined && { keyFile: opts.etcdKeyFile }),
      });
      const clog = log.child({ component: 'cluster' });
      phase = `joining the cluster (store ${registry.address})`;
      clog.info('joining the cluster', {
        store: registry.address,
        iface: underlay.iface.name,
        publicIp: formatIP(underlay.publicIp),
      });
      cluster = await ClusterAgent.join(
        {
          registry,
          prefix: opts.prefix ?? DEFAULT_PREFIX,
          publicIp: underlay.publicIp,
          underlayNets: h.addrs.list({ family: 4, dev: underlay.iface.name }).map((a) => a.ipnet),
          makeBackend: (cfg, network) =>
            BACKENDS[cfg.type](cfg, {
              host: h,
              network,
              publicIp: underlay.publicIp,
              iface: underlay.iface,
              log: clog.child({ backend: cfg.type }),
            }),
          subnetEnvPath: opts.subnetFile ?? path.join(host.runDir, 'subnet.env'),
          ipMasq: opts.ipMasq ?? false,
          ttlSeconds: opts.leaseTtlSeconds ?? DEFAULT_TTL_SECONDS,
          ...(opts.resyncMs !== undefined && { resyncMs: opts.resyncMs }),
          log: clog,
          onSubnetChange: async (lease, mtu) =>
            service?.reconfigureDefault({ subnet: formatIPNet(lease.subnet), mtu }),
        },
        signal,
      );
    }

    phase = 'reconciling the host state';
    const st = HostState.open(host.stateDir);
    state = st;
    dns = new DnsManager(readHostResolvers(opts.upstreams), log.child({ component: 'dns' }));
    firewall = new HostFirewall({ host: h, log: log.child({ component: 'firewall' }) });
    const svc = new HostService({
      host,
      state: st,
      drivers: {
        bridge: new BridgeDriver({
          host: h,
          // What `-o uplink` moved, handed back so that removing the network restores it exactly.
          uplinks: Object.fromEntries(
            st.networks().flatMap((n) => {
              const u = (n.driverState as { uplink?: UplinkRecord } | undefined)?.uplink;
              return u ? [[n.id, u]] : [];
            }),
          ),
        }),
        macvlan: new MacvlanDriver({ host: h }),
        host: new HostDriver({ host: h }),
        none: new NoneDriver({ host: h }),
      },
      firewall,
      dns,
      processes: processPort(starter),
      log,
      defaultNetwork: {
        name: 'bridge',
        bridge: opts.defaultBridge ?? 'weft0',
        ...(opts.defaultSubnet !== undefined && { subnet: opts.defaultSubnet }),
        ...(cluster && {
          subnet: formatIPNet(cluster.lease.subnet),
          mtu: cluster.mtu,
          masquerade: opts.ipMasq ?? false,
          cluster: formatIPNet(cluster.config.network),
        }),
      },
    });
    await svc.start();
    service = svc;
    phase = 'starting the backend';
    await cluster?.run();
    if (opts.dockerPluginSocket !== undefined) {
      phase = 'starting the Docker plugin';
      docker = await startDockerPlugin({
        socketPath: opts.dockerPluginSocket,
        service: svc,
        stateDir: host.stateDir,
        ns: host.ns,
        log: log.child({ component: 'docker' }),
      });
    }
  } catch (e) {
    server.close();
    server.closeAllConnections();
    dns?.close();
    firewall?.close();
    await starter.close().catch(() => undefined);
    state?.close();
    await cluster?.stop().catch(() => undefined);
    await registry?.close().catch(() => undefined);
    fs.rmSync(host.socketPath, { force: true });
    throw e;
  }
  ready = true;
  log.info('weft daemon ready', { socket: host.socketPath, stateDir: host.stateDir, runDir: host.runDir });
  const svc = service;
  const d = dns;
  const st = state;
  const fw = firewall;
  return {
    service: svc,
    server,
    async close() {
      ready = false;
      await docker?.close();
      // Requests under way get a moment to finish; a client that stalls (a body half sent)
      // does not hold the stop: its connection is cut after the grace.
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      await closed;
      clearTimeout(grace);
      d.close();
      fw.close();
      await starter
        .close()
        .catch((e) => log.warn('stopping the idle sandbox helper failed', { error: String(e) }));
      await cluster?.stop().catch((e) => log.warn('stopping the cluster agent failed', { error: String(e) }));
      await registry?.close().catch(() => undefined);
      st.close();
      fs.rmSync(host.socketPath, { force: true });
      log.info('weft daemon stopped');
    },
  };
}

/** `weft daemon`: run until SIGTERM/SIGINT, then stop gracefully. */
export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const stopping = new AbortController();
  const stop = () => {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    stopping.abort();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  let d: RunningDaemon;
  try {
    d = await startDaemon(opts, stopping.signal);
  } catch (e) {
    if (stopping.signal.aborted) return; // stopped while still starting: a graceful end
    throw e;
  }
  if (!stopping.signal.aborted) {
    await new Promise<void>((resolve) => stopping.signal.addEventListener('abort', () => resolve()));
  }
  await d.close();
}
