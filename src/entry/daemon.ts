/**
 * `weft daemon`: the composition root of one host. It parses its options into a Host, opens the
 * state, builds the drivers registry, the firewall, the DNS server and the process runner, hands
 * them to the host service, reconciles, and serves the API on the unix socket until SIGTERM or
 * SIGINT. Stopping closes the socket, the DNS server and the state; it does not touch running
 * sandboxes, their interfaces or the firewall (a restarted daemon picks them up).
 */
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import { type HostOptions, localHost } from '../control/host.js';
import { type DnsPort, HostService, type ProcessPort } from '../control/service.js';
import { HostState } from '../control/state.js';
import { openHandle } from '../kernel/handle.js';
import { formatIP, type IPAddr } from '../lib/ip.js';
import { createLogger, type Level, type Logger } from '../lib/log.js';
import { BridgeDriver } from '../net/bridge/driver.js';
import type { UplinkRecord } from '../net/bridge/uplink.js';
import { parseResolvConf, renderHostname, renderHosts, renderResolvConf } from '../net/dns/files.js';
import { DnsServer } from '../net/dns/server.js';
import { HostFirewall } from '../net/firewall/apply.js';
import { HostDriver } from '../net/host/driver.js';
import { MacvlanDriver } from '../net/macvlan/driver.js';
import { NoneDriver } from '../net/none/driver.js';
import { processAlive, startProcess, stopProcess } from '../net/process.js';
import { createApiServer } from './api.js';

export interface DaemonOptions extends HostOptions {
  logLevel?: Level;
  /** Resolvers for names weft does not know (default: the host's /etc/resolv.conf). */
  upstreams?: string[];
  defaultBridge?: string;
  defaultSubnet?: string;
}

/** Keeps one DNS server whose listeners follow the networks that have DNS. */
class DnsManager implements DnsPort {
  #server: DnsServer | undefined;
  #listening = new Map<string, string>();
  constructor(
    private readonly upstreamList: string[],
    private readonly log: Logger,
  ) {}

  upstreams(): string[] {
    return this.upstreamList;
  }

  async update(
    listen: readonly { address: string; network: string }[],
    records: readonly { network: string; name: string; ips: readonly IPAddr[] }[],
  ): Promise<void> {
    if (!this.#server) {
      if (listen.length === 0) return;
      this.#server = await DnsServer.start({ listen: [], upstreams: this.upstreamList, log: this.log });
    }
    const want = new Map(listen.map((l) => [l.address, l.network]));
    for (const [address, network] of this.#listening) {
      if (want.get(address) !== network) {
        this.#server.removeListen(address);
        this.#listening.delete(address);
      }
    }
    for (const [address, network] of want) {
      if (this.#listening.has(address)) continue;
      await this.#server.addListen({ address, network });
      this.#listening.set(address, network);
    }
    this.#server.setRecords(records.map((r) => ({ name: r.name, ips: r.ips, network: r.network })));
  }

  close(): void {
    this.#server?.close();
    this.#server = undefined;
  }
}

const processes: ProcessPort = {
  start: (spec) => startProcess(spec),
  alive: (pid, startTime) => processAlive(pid, startTime),
  stop: (pid, startTime, opts) => stopProcess(pid, startTime, opts),
  renderFiles: (i) => ({
    hosts: renderHosts({ hostname: i.hostname, ips: i.ips, aliases: i.aliases, extraHosts: i.extraHosts }),
    resolvConf: renderResolvConf({ nameservers: i.nameservers.slice(0, 3) }),
    hostname: renderHostname(i.hostname),
  }),
};

function hostUpstreams(): string[] {
  try {
    return parseResolvConf(fs.readFileSync('/etc/resolv.conf', 'utf8')).nameservers.map(formatIP);
  } catch {
    return [];
  }
}

export interface RunningDaemon {
  readonly service: HostService;
  readonly server: http.Server;
  close(): Promise<void>;
}

/** Start the daemon; resolves once the API socket listens and the state is reconciled. */
export async function startDaemon(opts: DaemonOptions = {}): Promise<RunningDaemon> {
  const host = localHost(opts);
  const log = createLogger({ level: opts.logLevel ?? 'info', fields: { host: host.name } });
  fs.mkdirSync(host.runDir, { recursive: true, mode: 0o755 });
  const state = HostState.open(host.stateDir);
  const h = openHandle(host.ns);
  const dns = new DnsManager(opts.upstreams ?? hostUpstreams(), log.child({ component: 'dns' }));
  const service = new HostService({
    host,
    state,
    drivers: {
      bridge: new BridgeDriver({
        host: h,
        // What `-o uplink` moved, handed back so that removing the network restores it exactly.
        uplinks: Object.fromEntries(
          state.networks().flatMap((n) => {
            const u = (n.driverState as { uplink?: UplinkRecord } | undefined)?.uplink;
            return u ? [[n.id, u]] : [];
          }),
        ),
      }),
      macvlan: new MacvlanDriver({ host: h }),
      host: new HostDriver({ host: h }),
      none: new NoneDriver({ host: h }),
    },
    firewall: new HostFirewall({ host: h, log: log.child({ component: 'firewall' }) }),
    dns,
    processes,
    log,
    defaultNetwork: {
      name: 'bridge',
      bridge: opts.defaultBridge ?? 'weft0',
      ...(opts.defaultSubnet !== undefined && { subnet: opts.defaultSubnet }),
    },
  });
  let ready = false;
  const server = createApiServer({ service, log: log.child({ component: 'api' }), ready: () => ready });
  // The socket: a stale one from a crashed daemon is replaced; a live daemon is a conflict.
  fs.mkdirSync(path.dirname(host.socketPath), { recursive: true });
  if (fs.existsSync(host.socketPath)) fs.rmSync(host.socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(host.socketPath, () => resolve());
  });
  fs.chmodSync(host.socketPath, 0o660);
  try {
    await service.start();
  } catch (e) {
    server.close();
    dns.close();
    state.close();
    throw e;
  }
  ready = true;
  log.info('weft daemon ready', { socket: host.socketPath, stateDir: host.stateDir, runDir: host.runDir });
  return {
    service,
    server,
    async close() {
      ready = false;
      await new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      dns.close();
      state.close();
      fs.rmSync(host.socketPath, { force: true });
      log.info('weft daemon stopped');
    },
  };
}

/** `weft daemon`: run until SIGTERM/SIGINT, then stop gracefully. */
export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const d = await startDaemon(opts);
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  await d.close();
}
