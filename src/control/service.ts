/**
 * The host service: what `weft daemon` does for each API call. It decides what should exist
 * (names, ids, subnets, addresses, published ports), records it in HostState in one transaction,
 * and has the drivers, the firewall, the DNS server and the process runner make it so. A
 * multi-step operation is a transaction over both: every kernel step pushes its undo, and the
 * state rows are removed again when a later step fails, so a failed `run` leaves nothing.
 *
 * Mutations are serialised through one queue (the daemon is the only writer of its host's
 * kernel state); reads are served from the database directly. After a restart `start()`
 * reconciles: networks are re-ensured (idempotent steps), endpoints of running sandboxes are
 * re-registered with their drivers without touching their interfaces, the firewall is re-applied
 * from the recorded state, and sandboxes whose process died are marked exited.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Netns } from '../kernel/netns.js';
import { conflict, invalid, notFound, WeftError } from '../lib/errors.js';
import {
  containsIP,
  formatIP,
  formatIPNet,
  type IPAddr,
  networkOf,
  parseCidr,
  parseIP,
  parseIPNet,
} from '../lib/ip.js';
import { type Logger, nullLogger } from '../lib/log.js';
import { checkIfName, checkObjectName } from '../lib/names.js';
import { type Rollback, transaction } from '../lib/rollback.js';
import type { EndpointInfo, EndpointSpec, NetworkDriver, NetworkSpec, SandboxRef } from '../net/driver.js';
import type { EndpointFw, FirewallState, NetworkFw, PortMapping } from '../net/firewall/types.js';
import { routedPrefixes } from '../net/routed.js';
import { openExternalSandbox, openSandbox, removeSandbox, sandboxPath } from '../net/sandbox.js';
import type { Host } from './host.js';
import { allocate, canonicalSubnet, checkSubnetFree, type Pool, pickSubnet, release } from './ipam/index.js';
import { checkPortsFree, parsePortSpec } from './ports.js';
import type { EndpointRecord, HostState, NetworkRecord, PortRecord, SandboxRecord } from './state.js';

// ---- ports to the layers below (implemented over net/ in the daemon's composition root) ------

export interface FirewallPort {
  /**
   * `repair`: also re-check what is normally only touched when networks change. `forget: false`:
   * keep the connection-tracking entries of removed ports until `forgetRemoved` (a removal that
   * may still fail and be applied back).
   */
  apply(state: FirewallState, opts?: { repair?: boolean; forget?: boolean }): Promise<void>;
  forgetRemoved(): Promise<void>;
  remove(): Promise<void>;
}

export interface DnsRecord {
  readonly network: string;
  readonly name: string;
  readonly ips: readonly IPAddr[];
  /** The sandbox it names: a query from one of its addresses sees all its networks' names. */
  readonly sandbox: string;
}
export interface DnsListen {
  readonly address: string;
  readonly network: string;
  /** Only clients from these (CIDR) are answered. */
  readonly subnets: readonly string[];
}
export interface DnsPort {
  /**
   * Listen on these addresses (the gateways of networks with DNS) and answer these names; other
   * names are forwarded to the host's resolvers, or to `upstreams` of the asking sandbox (its
   * `--dns`). An address that cannot be bound is logged and tried again at the next update.
   */
  update(
    listen: readonly DnsListen[],
    records: readonly DnsRecord[],
    upstreams: ReadonlyMap<string, readonly string[]>,
  ): Promise<void>;
  /**
   * What a sandbox's resolv.conf takes from the host: resolvers reachable from its namespace
   * (for sandboxes on networks without DNS), search domains and options (for all).
   */
  hostResolv(): { nameservers: string[]; search: string[]; options: string[] };
}

/** A new network namespace, made by the process's helper and pinned at `pin` (see net/process.ts). */
export interface NewNetns {
  readonly pin: string;
}
export interface ProcessSpec {
  readonly netns: Netns | 'host' | NewNetns;
  readonly hostname: string;
  readonly filesDir: string;
  readonly files: { readonly hosts: string; readonly resolvConf: string; readonly hostname: string };
  readonly cmd: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly logPath: string;
}
/** A sandbox process set up and waiting to exec its command (see net/process.ts). */
export interface PreparedProcess {
  readonly pid: number;
  /** `exited`: the command's exit status once it ends (its code, or 128 + a signal's number). */
  start(): Promise<{ pid: number; startTime: string; exited?: Promise<number> }>;
  cancel(): Promise<void>;
}
/** A prepare under way: the sandbox's namespace as soon as there is one, then the process. */
export interface Preparing {
  readonly netns: Promise<Netns | 'host'>;
  readonly prepared: Promise<PreparedProcess>;
}
export interface ProcessPort {
  /**
   * Set the process up in its namespaces, without running the command yet; with a `{ pin }`
   * spec its new network namespace is reported first (see ProcessStarter.begin).
   */
  begin(spec: ProcessSpec): Preparing;
  alive(pid: number, startTime: string): boolean;
  stop(pid: number, startTime: string, opts: { timeoutMs: number }): Promise<void>;
  renderFiles(input: {
    hostname: string;
    ips: IPAddr[];
    aliases: string[];
    extraHosts: { name: string; ip: string }[];
    nameservers: string[];
    search: string[];
    options: string[];
  }): { hosts: string; resolvConf: string; hostname: string };
}

export interface ServiceDeps {
  readonly host: Host;
  readonly state: HostState;
  readonly drivers: Readonly<Record<string, NetworkDriver & { readonly sharesHostNetns?: boolean }>>;
  readonly firewall: FirewallPort;
  readonly dns: DnsPort;
  readonly processes: ProcessPort;
  readonly log?: Logger;
  /** Name and bridge device of the default network (Docker: bridge / docker0). */
  readonly defaultNetwork?: DefaultNetwork;
}

/**
 * The default network. On an overlay host its subnet is the host's lease, its MTU the
 * backend's, its outbound NAT `--ip-masq`, and `cluster` the cluster network (never NATed to,
 * allowed in).
 */
export interface DefaultNetwork {
  readonly name: string;
  readonly bridge: string;
  readonly subnet?: string;
  readonly mtu?: number;
  readonly masquerade?: boolean;
  readonly cluster?: string;
}

// ---- requests -------------------------------------------------------------------------------

export interface CreateNetworkRequest {
  readonly name: string;
  readonly driver?: string;
  readonly subnets?: readonly { subnet: string; gateway?: string; ipRange?: string }[];
  readonly ipv6?: boolean;
  readonly internal?: boolean;
  /** `-o key=value`: icc, masquerade, mtu, bridge-name, parent, uplink, macvlan_mode. */
  readonly options?: Readonly<Record<string, string>>;
}

export interface RunRequest {
  readonly name?: string;
  readonly cmd: readonly string[];
  /** Networks to attach, first is primary (default: the default network). */
  readonly networks?: readonly string[];
  readonly ip?: string;
  readonly ip6?: string;
  readonly ports?: readonly string[];
  readonly hostname?: string;
  readonly aliases?: readonly string[];
  readonly dns?: readonly string[];
  readonly addHosts?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
}

/** An attachment made for a runtime (a CNI ADD, a Docker endpoint): see HostService.attach. */
export interface AttachRequest {
  readonly owner: 'cni' | 'docker';
  /** CNI_CONTAINERID or Docker's endpoint id. */
  readonly containerId: string;
  /**
   * The container's network namespace (CNI_NETNS). Absent: the container end is made in the
   * daemon's own namespace under `ifname`, left down without addresses, for a runtime that moves
   * and configures it itself (Docker).
   */
  readonly netns?: string;
  readonly ifname: string;
  /** Default: the default network. */
  readonly network?: string;
  readonly ip?: string;
  readonly ip6?: string;
  readonly mac?: string;
  /** `[HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]`, as `weft run -p`. */
  readonly ports?: readonly string[];
  readonly aliases?: readonly string[];
  readonly hostname?: string;
}

export interface AttachView {
  readonly owner: 'cni' | 'docker';
  readonly containerId: string;
  readonly ifname: string;
  /** The weft container (sandbox) that holds the attachment: `weft ps` shows it. */
  readonly container: string;
  readonly netns: string | null;
  readonly network: string;
  readonly networkId: string;
  readonly bridge: string;
  readonly hostIfname?: string;
  readonly hostMac?: string;
  readonly mac?: string;
  readonly mtu: number;
  readonly addresses: string[];
  readonly gateways: string[];
  readonly routes: { dst: string; gw?: string }[];
  readonly dns: { nameservers: string[] };
  readonly ports: PortRecord[];
}

export interface ConnectRequest {
  readonly network: string;
  readonly container: string;
  readonly ip?: string;
  readonly ip6?: string;
  readonly aliases?: readonly string[];
}

/** What `network inspect` and the API show. */
export interface NetworkView extends NetworkRecord {
  readonly containers: { name: string; id: string; ifname: string; addresses: string[] }[];
}
export interface ContainerView extends SandboxRecord {
  readonly networks: {
    network: string;
    ifname: string;
    addresses: string[];
    mac?: string;
    aliases: string[];
  }[];
  readonly netnsPath?: string;
}

const BUILTIN_DRIVERS = new Set(['host', 'none']);
const networkOfCidr = (s: string) => networkOf(parseIPNet(s));
const newId = () => randomBytes(6).toString('hex');

export class HostService {
  readonly #d: ServiceDeps;
  readonly #log: Logger;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #epFw = new WeakMap<EndpointRecord, { s: SandboxRecord | undefined; fw: EndpointFw }>();
  #def: DefaultNetwork;

  constructor(deps: ServiceDeps) {
    this.#d = deps;
    this.#log = deps.log ?? nullLogger;
    this.#def = deps.defaultNetwork ?? { name: 'bridge', bridge: 'weft0' };
  }

  /** Serialise a mutation behind the previous ones. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  // ---- start-up and reconciliation ----------------------------------------------------------

  /** Create the built-in networks on first start, then reconcile the kernel with the state. */
  start(): Promise<void> {
    return this.#serial(async () => {
      const st = this.#d.state;
      await this.#ensureDefaultNetwork();
      for (const name of ['host', 'none']) {
        if (!st.network(name)) {
          st.putNetwork(
            this.#record({ id: newId(), name, driver: name, bridge: '', subnets: [], builtin: true }),
          );
        }
      }
      // One network that cannot be set up (a macvlan parent gone) does not keep the others, or
      // the API that can remove it, from starting.
      for (const n of st.networks()) {
        if (BUILTIN_DRIVERS.has(n.driver)) continue;
        try {
          await this.#driver(n.driver).createNetwork(this.#spec(n), { restore: true });
        } catch (error) {
          this.#log.error('network cannot be set up; its containers will not work until it is fixed', {
            network: n.name,
            error,
          });
        }
      }
      for (const s of st.sandboxes()) {
        const alive =
          s.pid !== undefined && s.startTime !== undefined && this.#d.processes.alive(s.pid, s.startTime);
        if (s.status === 'running' && !alive && s.netnsMode !== 'external') {
          this.#log.warn('container process is gone; marking it exited', { container: s.name, pid: s.pid });
          st.putSandbox({ ...s, status: 'exited' });
        }
        for (const e of st.endpoints({ sandboxId: s.id })) {
          const n = st.network(e.networkId);
          if (n && !BUILTIN_DRIVERS.has(n.driver))
            await this.#driver(n.driver).createEndpoint(this.#spec(n), this.#epSpec(e));
        }
      }
      await this.#applyFirewall({ repair: true });
      await this.#applyDns();
      this.#log.info('host state reconciled', {
        networks: st.networks().length,
        containers: st.sandboxes().length,
      });
    });
  }

  /**
   * Create the default network, or bring an existing one to what the daemon was started with
   * (an overlay host's lease may give it another subnet or MTU than last time). A network with
   * endpoints keeps its subnet (their addresses are in it) and the mismatch is logged.
   */
  async #ensureDefaultNetwork(): Promise<void> {
    const st = this.#d.state;
    const def = this.#def;
    let n = st.network(def.name);
    if (n) {
      const subnetDiffers =
        def.subnet !== undefined && n.subnets[0]?.subnet !== formatIPNet(networkOfCidr(def.subnet));
      const mtuDiffers = def.mtu !== undefined && n.mtu !== def.mtu;
      if (subnetDiffers || mtuDiffers) {
        const eps = st.endpoints({ networkId: n.id });
        if (eps.length > 0) {
          this.#log.warn(
            'the default network does not match the host’s lease but has containers; kept as it is',
            {
              network: n.name,
              has: n.subnets[0]?.subnet,
              want: def.subnet,
              containers: eps.length,
            },
          );
        } else {
          this.#log.info('default network re-created for the lease', {
            from: n.subnets[0]?.subnet,
            to: def.subnet,
          });
          await this.#driver(n.driver).deleteNetwork(this.#spec(n));
          const old = n;
          st.tx(() => {
            st.deleteNetwork(old.id);
            for (const s of old.subnets) st.dropPool(poolId(old, s.subnet));
          });
          n = undefined;
        }
      }
    }
    if (!n) {
      await this.#createNetworkNow({
        name: def.name,
        driver: 'bridge',
        ...(def.subnet !== undefined && { subnets: [{ subnet: formatIPNet(networkOfCidr(def.subnet)) }] }),
        options: {
          'bridge-name': def.bridge,
          ...(def.mtu !== undefined && { mtu: String(def.mtu) }),
          ...(def.masquerade !== undefined && { masquerade: String(def.masquerade) }),
        },
        builtin: true,
        dns: false,
      });
    } else if (def.masquerade !== undefined && n.masquerade !== def.masquerade) {
      st.putNetwork({ ...n, masquerade: def.masquerade });
    }
  }

  /** An overlay host's lease changed subnet: re-plumb the default network (see above). */
  reconfigureDefault(change: { subnet: string; mtu: number }): Promise<void> {
    return this.#serial(async () => {
      this.#def = { ...this.#def, ...change };
      await this.#ensureDefaultNetwork();
      await this.#applyFirewall();
    });
  }

  // ---- networks -----------------------------------------------------------------------------

  networks(): NetworkView[] {
    return this.#d.state.networks().map((n) => this.#networkView(n));
  }

  network(name: string): NetworkView {
    return this.#networkView(this.#network(name));
  }

  createNetwork(req: CreateNetworkRequest): Promise<NetworkView> {
    return this.#serial(async () =>
      this.#networkView(await this.#createNetworkNow({ ...req, builtin: false, dns: true })),
    );
  }

  async #createNetworkNow(
    req: CreateNetworkRequest & { builtin: boolean; dns: boolean },
  ): Promise<NetworkRecord> {
    const st = this.#d.state;
    checkObjectName(req.name, 'network name');
    if (st.network(req.name))
      throw new WeftError('EXISTS', `network "${req.name}" already exists`, {
        details: { network: req.name },
      });
    const driver = req.driver ?? 'bridge';
    if (BUILTIN_DRIVERS.has(driver)) {
      throw invalid(`only one network of driver "${driver}" exists (the built-in "${driver}" network)`);
    }
    this.#driver(driver);
    const opts = { ...(req.options ?? {}) };
    const known = new Set(['icc', 'masquerade', 'mtu', 'bridge-name', 'parent', 'uplink', 'macvlan_mode']);
    for (const k of Object.keys(opts))
      if (!known.has(k)) throw invalid(`unknown network option "${k}"`, { option: k });
    const bool = (k: string, dflt: boolean) => {
      const v = opts[k];
      if (v === undefined) return dflt;
      if (v === 'true' || v === '1') return true;
      if (v === 'false' || v === '0') return false;
      throw invalid(`option ${k}=${v}: expected true or false`);
    };
    const mtu = opts.mtu === undefined ? 1500 : Number(opts.mtu);
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535)
      throw invalid(`option mtu=${opts.mtu} is out of range (576-65535)`);
    if (driver === 'macvlan' && opts.parent === undefined)
      throw invalid('a macvlan network needs -o parent=IFACE');
    const id = newId();
    const bridge = driver === 'bridge' ? (opts['bridge-name'] ?? `br-${id}`) : '';
    if (bridge) checkIfName(bridge, 'bridge name');
    if (bridge && st.networks().some((n) => n.bridge === bridge)) {
      throw conflict(`bridge "${bridge}" is already used by another network`);
    }

    // Subnets: given ones are canonicalised and checked against every other network; a bridge
    // network without one gets a free subnet from the default pools that avoids host routes.
    const inUse = st
      .networks()
      .flatMap((n) => n.subnets.map((s) => ({ name: n.name, subnet: parseCidr(s.subnet) })));
    if (this.#def.cluster !== undefined && !req.builtin) {
      inUse.push({ name: `the cluster network ${this.#def.cluster}`, subnet: parseCidr(this.#def.cluster) });
    }
    const given = req.subnets ?? [];
    const subnets: { subnet: string; gateway: string; ipRange?: string }[] = [];
    for (const s of given) {
      const c = canonicalSubnet({ subnet: s.subnet, gateway: s.gateway, ipRange: s.ipRange });
      if (driver !== 'macvlan')
        checkSubnetFree(c.subnet, [...inUse, ...subnets.map((x) => parseCidr(x.subnet))]);
      subnets.push({
        subnet: formatIPNet(c.subnet),
        gateway: formatIP(c.gateway),
        ...(c.ipRange !== undefined && { ipRange: formatIPNet(c.ipRange) }),
      });
    }
    if (req.ipv6 && !subnets.some((s) => s.subnet.includes(':'))) {
      throw invalid('--ipv6 needs an IPv6 --subnet (e.g. --subnet fd00:1::/64)');
    }
    if (!req.ipv6 && subnets.some((s) => s.subnet.includes(':'))) {
      throw invalid('an IPv6 --subnet needs --ipv6');
    }
    if (!subnets.some((s) => !s.subnet.includes(':'))) {
      if (driver === 'macvlan')
        throw invalid("a macvlan network needs an IPv4 --subnet (the parent network's)");
      const routes = routedPrefixes(this.#d.host.ns, 4);
      const picked = pickSubnet({ family: 4, inUse, avoid: routes });
      const c = canonicalSubnet({ subnet: picked });
      subnets.unshift({ subnet: formatIPNet(c.subnet), gateway: formatIP(c.gateway) });
    }
    let rec = this.#record({
      id,
      name: req.name,
      driver,
      bridge,
      mtu,
      subnets,
      internal: req.internal ?? false,
      icc: bool('icc', true),
      masquerade: bool('masquerade', true),
      // The DNS server listens on the gateway, which must be a local address: not so for macvlan
      // (the gateway is a router on the parent's L2) nor for a bridge with an uplink.
      dns: req.dns && driver === 'bridge' && opts.uplink === undefined,
      options: opts,
      builtin: req.builtin,
    });
    await transaction(async (rb) => {
      // Pushed first so it runs last: the firewall and DNS follow the state once it is restored.
      rb.push('re-apply firewall and dns', () => this.#reapply());
      st.putNetwork(rec);
      rb.push('forget network', () => st.deleteNetwork(rec.id));
      const drv = this.#driver(driver);
      await drv.createNetwork(this.#spec(rec));
      rb.push('delete network', () => drv.deleteNetwork(this.#spec(rec)));
      // What a driver must get back after a restart (the bridge's uplink record) is persisted.
      const uplink = (drv as { uplinkRecord?: (id: string) => unknown }).uplinkRecord?.(rec.id);
      if (uplink !== undefined) {
        rec = { ...rec, driverState: { uplink } };
        st.putNetwork(rec);
      }
      await this.#applyFirewall();
      await this.#applyDns();
    });
    this.#log.info('network created', {
      network: rec.name,
      id: rec.id,
      driver,
      subnets: subnets.map((s) => s.subnet),
    });
    return rec;
  }

  removeNetwork(name: string): Promise<void> {
    return this.#serial(async () => {
      const st = this.#d.state;
      const n = this.#network(name);
      if (n.builtin) throw invalid(`"${n.name}" is a built-in network and cannot be removed`);
      const eps = st.endpoints({ networkId: n.id });
      if (eps.length > 0) {
        const names = eps.map((e) => st.sandbox(e.sandboxId)?.name ?? e.sandboxId);
        throw new WeftError('BUSY', `network "${n.name}" has active endpoints: ${names.join(', ')}`, {
          details: { network: n.name, containers: names },
        });
      }
      await this.#driver(n.driver).deleteNetwork(this.#spec(n));
      st.tx(() => {
        st.deleteNetwork(n.id);
        for (const s of n.subnets) st.dropPool(poolId(n, s.subnet));
      });
      await this.#applyFirewall();
      await this.#applyDns();
      this.#log.info('network removed', { network: n.name });
    });
  }

  // ---- containers ---------------------------------------------------------------------------

  containers(): ContainerView[] {
    return this.#d.state.sandboxes().map((s) => this.#containerView(s));
  }

  container(name: string): ContainerView {
    return this.#containerView(this.#sandbox(name));
  }

  run(req: RunRequest): Promise<ContainerView> {
    return this.#serial(() => this.#runNow(req));
  }

  async #runNow(req: RunRequest): Promise<ContainerView> {
    const st = this.#d.state;
    const id = newId();
    const name = req.name ?? `c-${id}`;
    checkObjectName(name, 'container name');
    if (st.sandbox(name)) throw new WeftError('EXISTS', `a container named "${name}" already exists`);
    if (req.cmd.length === 0) throw invalid('a command is needed: weft run [OPTIONS] -- CMD [ARGS…]');
    const hostname = req.hostname ?? name.slice(0, 63);
    checkHostname(hostname);
    const netNames = req.networks && req.networks.length > 0 ? [...req.networks] : [this.#defaultName()];
    if (new Set(netNames).size !== netNames.length) throw invalid('a network is named twice');
    const nets = netNames.map((n) => this.#network(n));
    const shares = nets.filter((n) => BUILTIN_DRIVERS.has(n.driver));
    if (shares.length > 0 && nets.length > 1) {
      throw invalid(`network "${shares[0]!.name}" cannot be combined with other networks`);
    }
    const hostMode = nets[0]!.driver === 'host';
    const ports = (req.ports ?? []).map(parsePortSpec);
    if (ports.length > 0 && (shares.length > 0 || nets[0]!.driver !== 'bridge')) {
      throw invalid(
        'ports can only be published on a bridge network (host networking uses the host ports directly)',
      );
    }
    checkPortsFree(ports, this.#publishedPorts());
    const addHosts = (req.addHosts ?? []).map(parseAddHost);
    const dns = (req.dns ?? []).map((d) => formatIP(parseIP(d)));
    for (const a of req.aliases ?? []) checkHostname(a);
    const rec: SandboxRecord = {
      id,
      name,
      hostname,
      cmd: [...req.cmd],
      env: { ...(req.env ?? {}) },
      dns,
      addHosts,
      ports,
      netnsMode: hostMode ? 'host' : 'own',
      status: 'created',
      created: new Date().toISOString(),
    };
    return await transaction(async (rb) => {
      rb.push('re-apply firewall and dns', () => this.#reapply());
      // 1. Records: the sandbox and, per network, its endpoint with freshly allocated addresses.
      const endpoints: EndpointRecord[] = [];
      st.tx(() => {
        st.putSandbox(rec);
        nets.forEach((n, i) => {
          if (BUILTIN_DRIVERS.has(n.driver)) return;
          endpoints.push(
            this.#newEndpoint(n, id, `eth${i}`, {
              ...(i === 0 && req.ip !== undefined && { ip: req.ip }),
              ...(i === 0 && req.ip6 !== undefined && { ip6: req.ip6 }),
              aliases: [...(req.aliases ?? [])],
            }),
          );
        });
      });
      rb.push('forget container', () =>
        st.tx(() => {
          for (const e of endpoints) this.#releaseEndpoint(e);
          st.deleteSandbox(id);
        }),
      );
      // 2. Kernel: the process's helper made a network namespace while it was idle and pins it
      // first thing; then it sets itself up in it (its own namespaces, files) while the endpoints
      // are joined and the firewall applied, and runs its command once the network is in place:
      // the two overlap, and the command never starts without its network.
      const runDir = this.#d.host.runDir;
      const pin = hostMode ? undefined : sandboxPath(runDir, id);
      if (!hostMode) rb.push('remove sandbox namespace', () => removeSandbox(runDir, id));
      rb.push('remove container files', () =>
        fs.rmSync(this.#filesDir(id), { recursive: true, force: true }),
      );
      const preparing = this.#prepareProcess(rec, pin === undefined ? 'host' : { pin }, endpoints);
      // Settled here so that a failure while joining does not leave it unhandled; cancelled on undo.
      const prepared = preparing.prepared.then(
        (p) => ({ p }),
        (error: unknown) => ({ error }),
      );
      rb.push('stop the prepared process', async () => {
        const r = await prepared;
        if ('p' in r) await r.p.cancel();
      });
      let sandbox: SandboxRef | undefined;
      const ns = await preparing.netns;
      if (ns !== 'host') {
        sandbox = { id, ns };
        rb.push('close the namespace handle', () => ns.close());
      }
      await this.#joinAndApplyFirewall(async () => {
        for (const e of endpoints) await this.#join(e, sandbox!, rb);
      });

      // 3. The command runs. Its name goes into the network's DNS while it execs (the daemon's
      // thread would only wait for that), and resolves by the time this answers.
      const ready = await prepared;
      if ('error' in ready) throw ready.error;
      const starting = ready.p.start().then(
        (ref) => ({ ref }),
        (error: unknown) => ({ error }),
      );
      const dns = await this.#applyDns().then(
        () => undefined,
        (error: unknown) => ({ error }),
      );
      const s = await starting;
      if ('error' in s) throw s.error;
      const { exited, ...started } = s.ref;
      rb.push('stop the process', () =>
        this.#d.processes.stop(started.pid, started.startTime, { timeoutMs: 2_000 }),
      );
      if (dns) throw dns.error;
      const running: SandboxRecord = { ...rec, ...started, status: 'running' };
      st.putSandbox(running);
      void exited?.then((code) => this.#exited(id, started, code));
      sandbox?.ns.close();
      this.#log.info('container started', { container: name, id, pid: started.pid });
      return this.#containerView(running);
    });
  }

  /**
   * SIGTERM, then SIGKILL after `timeoutMs` (default 10 s). The wait is outside the serial
   * queue: a container slow to stop holds no other request up. INVALID for a bad timeout.
   */
  async stop(name: string, opts: { timeoutMs?: number } = {}): Promise<ContainerView> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 3_600_000) {
      throw invalid(`stop timeout must be 0 to 3600 s, not ${timeoutMs / 1000} s`);
    }
    const first = this.#sandbox(name);
    if (first.pid !== undefined && first.startTime !== undefined) {
      await this.#d.processes.stop(first.pid, first.startTime, { timeoutMs });
    }
    return this.#serial(async () => {
      // Read again: the record may have changed while it stopped (its end recorded).
      const s = this.#d.state.sandbox(first.id);
      if (!s) throw notFound(`container "${name}" not found`, { container: name });
      // Its exit code comes with its end (#exited), which the serial queue puts after this.
      const stopped: SandboxRecord = { ...s, status: 'exited' };
      this.#d.state.putSandbox(stopped);
      // A stopped container's published ports and names are free (Docker's).
      if (s.status === 'running') await this.#reapply();
      this.#log.info('container stopped', { container: s.name });
      return this.#containerView(stopped);
    });
  }

  remove(name: string, opts: { force?: boolean } = {}): Promise<void> {
    return this.#serial(async () => {
      const s = this.#sandbox(name);
      const alive = this.#alive(s);
      if (alive && !opts.force) {
        throw conflict(`container "${s.name}" is running: stop it first or use rm -f`, { container: s.name });
      }
      // SIGKILL at once, as `docker rm -f` does.
      if (alive) await this.#d.processes.stop(s.pid!, s.startTime!, { timeoutMs: 0 });
      await this.#removeSandboxNow(s);
      await this.#applyFirewall();
      await this.#applyDns();
      this.#log.info('container removed', { container: s.name });
    });
  }

  connect(req: ConnectRequest): Promise<ContainerView> {
    return this.#serial(async () => {
      const st = this.#d.state;
      const s = this.#sandbox(req.container);
      const n = this.#network(req.network);
      if (BUILTIN_DRIVERS.has(n.driver) || s.netnsMode === 'host') {
        throw invalid(`cannot connect "${s.name}" to "${n.name}": host and none networks stand alone`);
      }
      const eps = st.endpoints({ sandboxId: s.id });
      if (eps.some((e) => e.networkId === n.id))
        throw new WeftError('EXISTS', `"${s.name}" is already connected to "${n.name}"`);
      const used = new Set(eps.map((e) => e.ifname));
      let i = 0;
      while (used.has(`eth${i}`)) i++;
      for (const a of req.aliases ?? []) checkHostname(a);
      await transaction(async (rb) => {
        rb.push('re-apply firewall and dns', () => this.#reapply());
        let ep!: EndpointRecord;
        st.tx(() => {
          ep = this.#newEndpoint(n, s.id, `eth${i}`, {
            ...(req.ip !== undefined && { ip: req.ip }),
            ...(req.ip6 !== undefined && { ip6: req.ip6 }),
            aliases: [...(req.aliases ?? [])],
          });
        });
        rb.push('forget endpoint', () => st.tx(() => this.#releaseEndpoint(ep)));
        const ref = this.#sandboxRef(s);
        if (!ref) throw notFound(`the network namespace of "${s.name}" is gone`);
        try {
          await this.#join(ep, ref, rb);
        } finally {
          ref.ns.close();
        }
        await this.#applyFirewall();
        await this.#applyDns();
        this.#refreshFiles(s);
      });
      this.#log.info('container connected', { container: s.name, network: n.name });
      return this.#containerView(s);
    });
  }

  disconnect(req: { network: string; container: string }): Promise<ContainerView> {
    return this.#serial(async () => {
      const st = this.#d.state;
      const s = this.#sandbox(req.container);
      const n = this.#network(req.network);
      const ep = st.endpoints({ sandboxId: s.id, networkId: n.id })[0];
      if (!ep) throw notFound(`"${s.name}" is not connected to "${n.name}"`);
      const drv = this.#driver(n.driver);
      const ref = this.#sandboxRef(s);
      try {
        if (ref) await drv.leave(this.#spec(n), this.#epSpec(ep), ref);
        await drv.deleteEndpoint(this.#spec(n), this.#epSpec(ep));
        st.tx(() => this.#releaseEndpoint(ep));
        // The default route may have left with it: the next network (by interface) takes it.
        if (ref) {
          const rest = [...st.endpoints({ sandboxId: s.id })].sort((a, b) =>
            a.ifname.localeCompare(b.ifname, 'en', { numeric: true }),
          );
          for (const e of rest) {
            const n2 = st.network(e.networkId);
            if (n2) await this.#driver(n2.driver).ensureDefaultRoute?.(this.#spec(n2), this.#epSpec(e), ref);
          }
        }
      } finally {
        ref?.ns.close();
      }
      await this.#applyFirewall();
      await this.#applyDns();
      this.#refreshFiles(s);
      return this.#containerView(s);
    });
  }

  // ---- attachments (CNI, Docker) ------------------------------------------------------------

  /**
   * Attach a runtime's container to a network: one weft sandbox per (owner, containerId,
   * ifname), without a process, holding one endpoint; ports are published on it. Idempotent:
   * an existing attachment is returned as it is.
   * @throws WeftError INVALID (bad id, interface name, address, port, a network that is not a
   *   bridge), NOT_FOUND (network, netns), CONFLICT (address or host port taken); nothing is
   *   left behind on failure.
   */
  attach(req: AttachRequest): Promise<AttachView> {
    return this.#serial(async () => {
      const st = this.#d.state;
      checkAttachKey(req.owner, req.containerId);
      checkIfName(req.ifname, 'interface name');
      const found = this.#attachment(req.owner, req.containerId, req.ifname);
      if (found) return this.#attachView(found);
      const n = this.#network(req.network ?? this.#defaultName());
      if (n.driver !== 'bridge') {
        throw invalid(
          `network "${n.name}" is a ${n.driver} network: attachments are made on bridge networks`,
        );
      }
      if (req.mac !== undefined && !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(req.mac)) {
        throw invalid(`"${req.mac}" is not a MAC address`, { mac: req.mac });
      }
      const ports = (req.ports ?? []).map(parsePortSpec);
      checkPortsFree(ports, this.#publishedPorts());
      for (const a of req.aliases ?? []) checkHostname(a);
      if (req.netns !== undefined) {
        // Fail before anything is recorded when the namespace is not there.
        openExternalSandbox('check', req.netns).ns.close();
      }
      const id = newId();
      const name = `${req.owner}-${createHash('sha256').update(`${req.containerId}/${req.ifname}`).digest('hex').slice(0, 12)}`;
      const hostname = req.hostname ?? name;
      checkHostname(hostname);
      const rec: SandboxRecord = {
        id,
        name,
        hostname,
        cmd: [],
        env: {},
        dns: [],
        addHosts: [],
        ports,
        netnsMode: 'external',
        owner: req.owner,
        containerId: req.containerId,
        ...(req.netns !== undefined && { netnsPath: req.netns }),
        status: 'running',
        created: new Date().toISOString(),
      };
      return await transaction(async (rb) => {
        rb.push('re-apply firewall and dns', () => this.#reapply());
        let ep!: EndpointRecord;
        st.tx(() => {
          st.putSandbox(rec);
          const e = this.#newEndpoint(n, id, req.ifname, {
            ...(req.ip !== undefined && { ip: req.ip }),
            ...(req.ip6 !== undefined && { ip6: req.ip6 }),
            aliases: [...(req.aliases ?? [])],
          });
          ep = {
            ...e,
            ...(req.mac !== undefined && { mac: req.mac }),
            ...(req.netns === undefined && { bare: true }),
          };
          st.putEndpoint(ep);
        });
        rb.push('forget attachment', () =>
          st.tx(() => {
            this.#releaseEndpoint(ep);
            st.deleteSandbox(id);
          }),
        );
        const ref = openExternalSandbox(id, req.netns);
        await this.#joinAndApplyFirewall(async () => {
          try {
            await this.#join(ep, ref, rb);
          } finally {
            ref.ns.close();
          }
        });
        await this.#applyDns();
        this.#log.info('attached', {
          owner: req.owner,
          containerId: req.containerId,
          ifname: req.ifname,
          network: n.name,
        });
        return this.#attachView(rec);
      });
    });
  }

  /**
   * Remove attachments of (owner, containerId), one interface or all. Idempotent: unknown ones
   * are success (removed 0), also when the container's namespace is already gone.
   */
  detach(req: { owner: string; containerId: string; ifname?: string }): Promise<{ removed: number }> {
    return this.#serial(async () => {
      checkAttachKey(req.owner, req.containerId);
      const list = this.#d.state
        .sandboxes()
        .filter(
          (s) =>
            s.netnsMode === 'external' &&
            s.owner === req.owner &&
            s.containerId === req.containerId &&
            (req.ifname === undefined ||
              this.#d.state.endpoints({ sandboxId: s.id })[0]?.ifname === req.ifname),
        );
      if (list.length > 0) {
        // Their firewall rules go while their veths are deleted: the kernel holds each deletion
        // ~17 ms (an RCU barrier), on the thread pool. A removal that fails keeps its records,
        // and the firewall is applied again with them; their connections' conntrack entries go
        // only once the removal succeeded.
        const gone = new Set(list.map((s) => s.id));
        const removed = (async () => {
          for (const s of list) await this.#removeSandboxNow(s);
        })().then(
          () => undefined,
          (error: unknown) => ({ error }),
        );
        const fw = await this.#applyFirewall({ without: gone, forget: false }).then(
          () => undefined,
          (error: unknown) => ({ error }),
        );
        const r = await removed;
        if (r) {
          if (fw) this.#log.warn('firewall apply failed too', { error: fw.error });
          await this.#applyFirewall().catch((error: unknown) =>
            this.#log.warn('firewall not applied again after a failed detach', { error }),
          );
          throw r.error;
        }
        if (fw) throw fw.error;
        await this.#d.firewall.forgetRemoved();
        await this.#applyDns();
        this.#log.info('detached', { owner: req.owner, containerId: req.containerId, removed: list.length });
      }
      return { removed: list.length };
    });
  }

  /** Every attachment (of one owner). */
  attachments(owner?: string): AttachView[] {
    return this.#d.state
      .sandboxes()
      .filter((s) => s.netnsMode === 'external' && (owner === undefined || s.owner === owner))
      .map((s) => this.#attachView(s));
  }

  /**
   * Compare an attachment's kernel state with what it should be.
   * @throws WeftError NOT_FOUND (no such attachment, its namespace is gone), CONFLICT with
   *   `details.problems` listing each difference.
   */
  checkAttachment(req: { owner: string; containerId: string; ifname: string }): Promise<AttachView> {
    return this.#serial(async () => {
      checkAttachKey(req.owner, req.containerId);
      const s = this.#attachment(req.owner, req.containerId, req.ifname);
      if (!s) throw notFound(`no attachment ${req.owner}/${req.containerId}/${req.ifname}`);
      const ref = this.#sandboxRef(s);
      if (!ref) throw notFound(`the network namespace ${s.netnsPath ?? ''} of ${req.containerId} is gone`);
      try {
        const e = this.#d.state.endpoints({ sandboxId: s.id })[0];
        const n = e && this.#d.state.network(e.networkId);
        if (!e || !n) throw notFound(`attachment ${req.containerId}/${req.ifname} has no endpoint`);
        const info = this.#driver(n.driver).inspectEndpoint?.(this.#spec(n), this.#epSpec(e), ref);
        if (info && info.problems.length > 0) {
          throw new WeftError('CONFLICT', `${req.containerId}/${req.ifname}: ${info.problems.join('; ')}`, {
            details: { problems: info.problems },
          });
        }
      } finally {
        ref.ns.close();
      }
      return this.#attachView(s);
    });
  }

  /** Replace the published ports of an attachment (Docker's ProgramExternalConnectivity). */
  setAttachmentPorts(req: {
    owner: string;
    containerId: string;
    ports: readonly string[];
  }): Promise<AttachView[]> {
    return this.#serial(async () => {
      checkAttachKey(req.owner, req.containerId);
      const st = this.#d.state;
      const list = st
        .sandboxes()
        .filter(
          (s) => s.netnsMode === 'external' && s.owner === req.owner && s.containerId === req.containerId,
        );
      if (list.length === 0) throw notFound(`no attachment ${req.owner}/${req.containerId}`);
      const ports = req.ports.map(parsePortSpec);
      const ids = new Set(list.map((s) => s.id));
      checkPortsFree(
        ports,
        st
          .sandboxes()
          .filter((s) => !ids.has(s.id))
          .flatMap((s) => s.ports.map((port) => ({ owner: `container "${s.name}"`, port }))),
      );
      const before = list.map((s) => ({ ...s }));
      try {
        list.forEach((s, i) => {
          st.putSandbox({ ...s, ports: i === 0 ? ports : [] });
        });
        await this.#applyFirewall();
      } catch (e) {
        for (const s of before) st.putSandbox(s);
        await this.#applyFirewall().catch(() => undefined);
        throw e;
      }
      return list.map((s) => this.#attachView(st.sandbox(s.name)!));
    });
  }

  #attachment(owner: string, containerId: string, ifname: string): SandboxRecord | undefined {
    const st = this.#d.state;
    return st
      .sandboxes()
      .find(
        (s) =>
          s.netnsMode === 'external' &&
          s.owner === owner &&
          s.containerId === containerId &&
          st.endpoints({ sandboxId: s.id })[0]?.ifname === ifname,
      );
  }

  #attachView(s: SandboxRecord): AttachView {
    const st = this.#d.state;
    const e = st.endpoints({ sandboxId: s.id })[0];
    const n = e && st.network(e.networkId);
    if (!e || !n) throw new WeftError('INTERNAL', `attachment ${s.name} has no endpoint`);
    let info: EndpointInfo | undefined;
    const ref = this.#sandboxRef(s);
    if (ref) {
      try {
        info = this.#driver(n.driver).inspectEndpoint?.(this.#spec(n), this.#epSpec(e), ref);
      } finally {
        ref.ns.close();
      }
    }
    const spec = this.#spec(n);
    const gateways = e.addresses.map((a) => {
      const ip = parseIPNet(a).ip;
      return formatIP(
        (
          spec.subnets.find((x) => x.subnet.ip.family === ip.family && containsIP(x.subnet, ip)) ??
          spec.subnets[0]!
        ).gateway,
      );
    });
    const nameservers = n.dns
      ? gateways.filter((g) => !g.includes(':')).slice(0, 1)
      : this.#d.dns.hostResolv().nameservers;
    return {
      owner: s.owner!,
      containerId: s.containerId!,
      ifname: e.ifname,
      container: s.name,
      netns: s.netnsPath ?? null,
      network: n.name,
      networkId: n.id,
      bridge: n.bridge,
      ...(info?.hostIfname !== undefined && { hostIfname: info.hostIfname }),
      ...(info?.hostMac !== undefined && { hostMac: info.hostMac }),
      ...((info?.mac ?? e.mac) !== undefined && { mac: (info?.mac ?? e.mac)! }),
      mtu: n.mtu,
      addresses: [...e.addresses],
      gateways,
      routes: n.internal ? [] : gateways.map((gw) => ({ dst: gw.includes(':') ? '::/0' : '0.0.0.0/0', gw })),
      dns: { nameservers },
      ports: [...s.ports],
    };
  }

  /** Path of a container's log file (for `weft logs`). */
  logPath(name: string): string {
    return path.join(this.#filesDir(this.#sandbox(name).id), 'output.log');
  }

  // ---- helpers ------------------------------------------------------------------------------

  #defaultName(): string {
    return this.#def.name;
  }

  #driver(name: string): NetworkDriver & { readonly sharesHostNetns?: boolean } {
    const d = this.#d.drivers[name];
    if (!d) {
      throw invalid(`unknown network driver "${name}" (known: ${Object.keys(this.#d.drivers).join(', ')})`, {
        driver: name,
      });
    }
    return d;
  }

  #network(name: string): NetworkRecord {
    const n = this.#d.state.network(name);
    if (!n) throw notFound(`network "${name}" not found`, { network: name });
    return n;
  }

  #sandbox(name: string): SandboxRecord {
    const s = this.#d.state.findSandbox(name);
    if (!s) throw notFound(`container "${name}" not found`, { container: name });
    return s;
  }

  /** Endpoints left and deleted, addresses released, namespace pin and files removed, records gone. */
  async #removeSandboxNow(s: SandboxRecord): Promise<void> {
    const st = this.#d.state;
    const eps = st.endpoints({ sandboxId: s.id });
    const ref = this.#sandboxRef(s);
    try {
      for (const e of eps) {
        const n = st.network(e.networkId);
        if (!n) continue;
        const drv = this.#driver(n.driver);
        // A namespace of our own goes right after: its interfaces are left to the kernel's
        // clean-up of it. One that is gone already (a reboot) has nothing to leave: the host's
        // namespace must not be searched for the container's interface names (a host's own
        // eth0), and deleteEndpoint removes what is left on the host (a veth's host end).
        if (ref || s.netnsMode === 'host') {
          await drv.leave(this.#spec(n), this.#epSpec(e), ref ?? { id: s.id, ns: this.#d.host.ns }, {
            namespaceGoing: ref !== undefined && s.netnsMode === 'own',
          });
        }
        await drv.deleteEndpoint(this.#spec(n), this.#epSpec(e));
      }
    } finally {
      ref?.ns.close();
    }
    if (s.netnsMode === 'own') removeSandbox(this.#d.host.runDir, s.id);
    st.tx(() => {
      for (const e of eps) this.#releaseEndpoint(e);
      st.deleteSandbox(s.id);
    });
    fs.rmSync(this.#filesDir(s.id), { recursive: true, force: true });
  }

  #alive(s: SandboxRecord): boolean {
    return s.pid !== undefined && s.startTime !== undefined && this.#d.processes.alive(s.pid, s.startTime);
  }

  #sandboxRef(s: SandboxRecord): (SandboxRef & { ns: Netns }) | undefined {
    if (s.netnsMode === 'host') return undefined;
    try {
      if (s.netnsMode === 'external') return openExternalSandbox(s.id, s.netnsPath);
      return openSandbox(this.#d.host.runDir, s.id);
    } catch (e) {
      // INVALID: the pin is a plain file now (its mount gone: a reboot with /run not on tmpfs).
      if (e instanceof WeftError && (e.code === 'NOT_FOUND' || e.code === 'INVALID')) return undefined;
      throw e;
    }
  }

  #filesDir(id: string): string {
    return path.join(this.#d.host.runDir, 'containers', id);
  }

  #record(
    r: Partial<NetworkRecord> &
      Pick<NetworkRecord, 'id' | 'name' | 'driver' | 'bridge' | 'subnets' | 'builtin'>,
  ): NetworkRecord {
    return {
      mtu: 1500,
      internal: false,
      icc: true,
      masquerade: true,
      dns: false,
      options: {},
      created: new Date().toISOString(),
      ...r,
    };
  }

  #spec(n: NetworkRecord): NetworkSpec {
    return {
      id: n.id,
      name: n.name,
      driver: n.driver,
      bridge: n.bridge,
      mtu: n.mtu,
      subnets: n.subnets.map((s) => ({ subnet: parseCidr(s.subnet), gateway: parseIP(s.gateway) })),
      internal: n.internal,
      icc: n.icc,
      masquerade: n.masquerade,
      options: n.options,
    };
  }

  #epSpec(e: EndpointRecord): EndpointSpec {
    return {
      id: e.id,
      networkId: e.networkId,
      addresses: e.addresses.map((a) => parseIPNet(a)),
      ifname: e.ifname,
      ...(e.mac !== undefined && { mac: e.mac }),
      ...(e.bare && { bare: true }),
    };
  }

  #pools(n: NetworkRecord): Pool[] {
    return n.subnets.map((s) => ({
      id: poolId(n, s.subnet),
      ...canonicalSubnet({ subnet: s.subnet, gateway: s.gateway, ipRange: s.ipRange }),
    }));
  }

  /** Allocate addresses on every subnet of `n` and record the endpoint (inside a state tx). */
  #newEndpoint(
    n: NetworkRecord,
    sandboxId: string,
    ifname: string,
    want: { ip?: string; ip6?: string; aliases: string[] },
  ): EndpointRecord {
    const id = newId();
    const addresses: string[] = [];
    const pools = this.#pools(n);
    for (const [want4, fam] of [
      [want.ip, 4],
      [want.ip6, 6],
    ] as const) {
      if (want4 !== undefined && !pools.some((p) => p.family === fam)) {
        throw invalid(`network "${n.name}" has no IPv${fam} subnet for the requested address ${want4}`);
      }
    }
    for (const p of pools) {
      const wanted = p.family === 4 ? want.ip : want.ip6;
      const request = wanted === undefined ? undefined : parseIP(wanted);
      const ip = allocate(p, this.#d.state, { owner: id, request });
      addresses.push(`${formatIP(ip)}/${p.subnet.len}`);
    }
    const rec: EndpointRecord = { id, sandboxId, networkId: n.id, ifname, addresses, aliases: want.aliases };
    this.#d.state.putEndpoint(rec);
    return rec;
  }

  /** Release an endpoint's addresses and forget it (inside a state tx). */
  #releaseEndpoint(e: EndpointRecord): void {
    const n = this.#d.state.network(e.networkId);
    if (n) for (const p of this.#pools(n)) release(p, this.#d.state, { owner: e.id });
    this.#d.state.deleteEndpoint(e.id);
  }

  /**
   * Run `join` (endpoints being plumbed) while the firewall is applied: its rules need the
   * bridge and the addresses, not the veths, and a veth pair is made on the thread pool (~1.2 ms
   * of kernel time). Both settle before this returns or throws (the join's error first).
   */
  async #joinAndApplyFirewall(join: () => Promise<void>): Promise<void> {
    const joined = join().then(
      () => undefined,
      (error: unknown) => ({ error }),
    );
    const fw = await this.#applyFirewall().then(
      () => undefined,
      (error: unknown) => ({ error }),
    );
    const j = await joined;
    if (j) {
      if (fw) this.#log.warn('firewall apply failed too', { error: fw.error });
      throw j.error;
    }
    if (fw) throw fw.error;
  }

  async #join(e: EndpointRecord, sandbox: SandboxRef, rb: Rollback): Promise<void> {
    const n = this.#network(e.networkId);
    const drv = this.#driver(n.driver);
    const spec = this.#spec(n);
    const ep = this.#epSpec(e);
    await drv.createEndpoint(spec, ep);
    rb.push(`delete endpoint ${e.ifname}`, () => drv.deleteEndpoint(spec, ep));
    await drv.join(spec, ep, sandbox);
    rb.push(`leave ${e.ifname}`, () => drv.leave(spec, ep, sandbox));
  }

  /**
   * A sandbox's resolv.conf, as Docker writes it: on a network with weft's DNS server, that
   * server (which forwards to `--dns` if given; and `ndots:0` unless an ndots option is there,
   * so that a peer's short name is asked as is first); otherwise `--dns` or the host's
   * resolvers. The host's search domains and options either way.
   */
  #resolvFor(
    s: SandboxRecord,
    endpoints: readonly EndpointRecord[],
  ): { nameservers: string[]; search: string[]; options: string[] } {
    const st = this.#d.state;
    const host = this.#d.dns.hostResolv();
    const dnsNet = endpoints.map((e) => st.network(e.networkId)).find((n) => n?.dns);
    // With weft's server, `--dns` servers are its upstreams for this sandbox (see #applyDns).
    if (!dnsNet) return s.dns.length > 0 ? { ...host, nameservers: [...s.dns] } : host;
    const gateway =
      dnsNet.subnets.find((x) => !x.gateway.includes(':'))?.gateway ?? dnsNet.subnets[0]!.gateway;
    const ndots = host.options.some((o) => o.startsWith('ndots:'));
    return {
      nameservers: [gateway],
      search: host.search,
      options: ndots ? host.options : [...host.options, 'ndots:0'],
    };
  }

  /** A container's /etc files for `endpoints`. Throws INVALID for what cannot be rendered. */
  #files(s: SandboxRecord, endpoints: readonly EndpointRecord[]): ReturnType<ProcessPort['renderFiles']> {
    return this.#d.processes.renderFiles({
      hostname: s.hostname,
      ips: endpoints.flatMap((e) => e.addresses.map((a) => parseIPNet(a).ip)),
      aliases: [],
      extraHosts: [...s.addHosts],
      ...this.#resolvFor(s, endpoints),
    });
  }

  /**
   * Write a container's /etc/hosts and /etc/resolv.conf again for the networks it is on now
   * (after connect or disconnect, as Docker does). In place: the container sees the files
   * through bind mounts of these very inodes. A failure is logged: the network change stands.
   */
  #refreshFiles(s: SandboxRecord): void {
    const dir = this.#filesDir(s.id);
    if (!fs.existsSync(dir)) return;
    try {
      const files = this.#files(s, this.#d.state.endpoints({ sandboxId: s.id }));
      fs.writeFileSync(path.join(dir, 'hosts'), files.hosts);
      fs.writeFileSync(path.join(dir, 'resolv.conf'), files.resolvConf);
    } catch (error) {
      this.#log.warn("cannot rewrite the container's /etc files", { container: s.name, error });
    }
  }

  #prepareProcess(
    s: SandboxRecord,
    netns: Netns | 'host' | NewNetns,
    endpoints: readonly EndpointRecord[],
  ): Preparing {
    const files = this.#files(s, endpoints);
    const dir = this.#filesDir(s.id);
    return this.#d.processes.begin({
      netns,
      hostname: s.hostname,
      filesDir: dir,
      files,
      cmd: s.cmd,
      env: s.env,
      logPath: path.join(dir, 'output.log'),
    });
  }

  /** Ports held by sandboxes; a container that exited holds none (Docker's). */
  #publishedPorts(): { owner: string; port: PortRecord }[] {
    return this.#d.state
      .sandboxes()
      .filter((s) => s.status !== 'exited')
      .flatMap((s) => s.ports.map((port) => ({ owner: `container "${s.name}"`, port })));
  }

  /**
   * A container's command ended (seen as our child's exit): its status and exit code recorded,
   * and its published ports and DNS names freed, in the serial queue (after a stop or removal
   * under way, whose record it must not overwrite). Nothing when the record is gone or is
   * another process's by now.
   */
  #exited(id: string, ref: { pid: number; startTime: string }, exitCode: number): void {
    void this.#serial(async () => {
      const s = this.#d.state.sandbox(id);
      if (!s || s.pid !== ref.pid || s.startTime !== ref.startTime || s.exitCode !== undefined) return;
      this.#d.state.putSandbox({ ...s, status: 'exited', exitCode });
      this.#log.info('container exited', { container: s.name, exitCode });
      if (s.status === 'running') await this.#reapply();
    }).catch((error: unknown) =>
      this.#log.warn("a container's end could not be recorded", { container: id, error }),
    );
  }

  /** The firewall's whole desired state, from the records; `without` these sandboxes' endpoints. */
  #firewallState(without?: ReadonlySet<string>): FirewallState {
    const st = this.#d.state;
    const sandboxes = new Map(st.sandboxes().map((s) => [s.id, s]));
    const networks: NetworkFw[] = st
      .networks()
      .filter((n) => n.driver === 'bridge')
      .map((n) => ({
        id: n.id,
        bridge: n.bridge,
        subnets: n.subnets.map((s) => parseCidr(s.subnet)),
        masquerade: n.masquerade,
        internal: n.internal,
        icc: n.icc,
        ...(n.builtin &&
          n.name === this.#def.name &&
          this.#def.cluster !== undefined && {
            cluster: [parseCidr(this.#def.cluster)],
            ...(n.subnets[0] && { clusterSource: parseIP(n.subnets[0].gateway) }),
          }),
        endpoints: st
          .endpoints({ networkId: n.id })
          .filter((e) => !without?.has(e.sandboxId))
          .map((e) => this.#endpointFw(e, sandboxes.get(e.sandboxId))),
      }));
    return { networks };
  }

  /**
   * An endpoint's part of the firewall state, the same object while its record and its
   * sandbox's are (the state hands out one object per unchanged row): the firewall plans and
   * renders each endpoint once, not all of them on every change.
   */
  #endpointFw(e: EndpointRecord, s: SandboxRecord | undefined): EndpointFw {
    const known = this.#epFw.get(e);
    if (known && known.s === s) return known.fw;
    // Ports are published on the container's first network (eth0), as Docker does, while it runs.
    const ports: PortMapping[] =
      s && s.status !== 'exited' && (e.ifname === 'eth0' || s.netnsMode === 'external')
        ? s.ports.map((p) => ({
            proto: p.proto,
            hostIp: p.hostIp === undefined ? undefined : parseIP(p.hostIp),
            hostPort: p.hostPort,
            hostPortEnd: p.hostPortEnd,
            containerPort: p.containerPort,
            containerPortEnd: p.containerPortEnd,
          }))
        : [];
    const fw: EndpointFw = { id: e.id, ips: e.addresses.map((a) => parseIPNet(a).ip), ports };
    this.#epFw.set(e, { s, fw });
    return fw;
  }

  /** Firewall and DNS back in step with the state (the last undo of a failed operation). */
  async #reapply(): Promise<void> {
    await this.#applyFirewall();
    await this.#applyDns();
  }

  async #applyFirewall(
    opts: { repair?: boolean; forget?: boolean; without?: ReadonlySet<string> } = {},
  ): Promise<void> {
    const { without, ...how } = opts;
    await this.#d.firewall.apply(this.#firewallState(without), how);
  }

  async #applyDns(): Promise<void> {
    const st = this.#d.state;
    const listen: DnsListen[] = [];
    const records: DnsRecord[] = [];
    const upstreams = new Map<string, readonly string[]>();
    const nets = st.networks().filter((x) => x.dns);
    // One read of the sandboxes, not one query per endpoint.
    const sandboxes = nets.length > 0 ? new Map(st.sandboxes().map((s) => [s.id, s])) : new Map();
    for (const n of nets) {
      const subnets = n.subnets.map((x) => x.subnet);
      listen.push(...n.subnets.map((x) => ({ address: x.gateway, network: n.name, subnets })));
      for (const e of st.endpoints({ networkId: n.id })) {
        const s = sandboxes.get(e.sandboxId);
        // A container that exited answers to no name (Docker's).
        if (!s || s.status === 'exited') continue;
        const ips = e.addresses.map((a) => parseIPNet(a).ip);
        for (const name of new Set([s.name, ...e.aliases])) {
          records.push({ network: n.name, name, ips, sandbox: s.id });
        }
        if (s.dns.length > 0) upstreams.set(s.id, s.dns);
      }
    }
    await this.#d.dns.update(listen, records, upstreams);
  }

  #networkView(n: NetworkRecord): NetworkView {
    const st = this.#d.state;
    return {
      ...n,
      containers: st.endpoints({ networkId: n.id }).map((e) => ({
        name: st.sandbox(e.sandboxId)?.name ?? e.sandboxId,
        id: e.sandboxId,
        ifname: e.ifname,
        addresses: [...e.addresses],
      })),
    };
  }

  #containerView(s: SandboxRecord): ContainerView {
    const st = this.#d.state;
    const status =
      s.status === 'running' && s.netnsMode !== 'external' && !this.#alive(s) ? 'exited' : s.status;
    return {
      ...s,
      status,
      networks: [...st.endpoints({ sandboxId: s.id })]
        .sort((a, b) => a.ifname.localeCompare(b.ifname, 'en', { numeric: true }))
        .map((e) => ({
          network: st.network(e.networkId)?.name ?? e.networkId,
          ifname: e.ifname,
          addresses: [...e.addresses],
          ...(e.mac !== undefined && { mac: e.mac }),
          aliases: [...e.aliases],
        })),
      ...(s.netnsMode === 'own' && { netnsPath: path.join(this.#d.host.runDir, 'netns', s.id) }),
      ...(s.netnsMode === 'external' && s.netnsPath !== undefined && { netnsPath: s.netnsPath }),
    };
  }
}

const poolId = (n: NetworkRecord, subnet: string) => `${n.id}/${subnet}`;

const HOSTNAME_RE =
  /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
function checkHostname(h: string): void {
  if (!HOSTNAME_RE.test(h)) throw invalid(`"${h}" is not a valid hostname (RFC 1123)`, { hostname: h });
}

const ATTACH_ID_RE = /^[A-Za-z0-9_.-]{1,128}$/;
function checkAttachKey(owner: string, containerId: string): void {
  if (owner !== 'cni' && owner !== 'docker')
    throw invalid(`unknown attachment owner "${owner}" (cni or docker)`);
  if (!ATTACH_ID_RE.test(containerId)) {
    throw invalid(`"${containerId}" is not a valid container id (1-128 of A-Z a-z 0-9 _ . -)`, {
      containerId,
    });
  }
}

function parseAddHost(s: string): { name: string; ip: string } {
  const i = s.indexOf(':');
  if (i <= 0) throw invalid(`--add-host "${s}": expected NAME:IP`);
  const name = s.slice(0, i);
  checkHostname(name);
  return { name, ip: formatIP(parseIP(s.slice(i + 1).replace(/^\[|\]$/g, ''))) };
}
