/**
 * The Docker remote network driver: each Docker network is a weft bridge network, each Docker
 * endpoint a weft attachment (owner `docker`, container id = the endpoint id), so weft's NAT,
 * published ports, isolation, DNS and FORWARD rules apply to Docker's containers as to its own.
 *
 * The call sequence dockerd 20.10 makes, and what each does here:
 *   CreateNetwork    → a bridge network `d-<12 of the id>` with Docker's pools and gateways
 *   CreateEndpoint   → attach: the veth pair is made now, its container end in the daemon's own
 *                      namespace under a temporary name (`wd…`), down, with its MAC; the ports
 *                      of `-p` (passed as options) are published at once, so a taken port
 *                      fails here, before anything else happened
 *   Join             → the name of that interface for Docker to move into the container and
 *                      rename `eth…`, and the gateway (none on an internal network)
 *   ProgramExternalConnectivity / RevokeExternalConnectivity → the published ports follow the
 *                      options (usually already as they are)
 *   EndpointOperInfo → the published ports, in Docker's shape
 *   Leave            → nothing (Docker moves the interface back or its namespace goes away)
 *   DeleteEndpoint   → detach (idempotent, also when the veth is already gone)
 *   DeleteNetwork    → the weft network is removed (idempotent)
 * Everything the driver knows lives in the daemon's state (networks and attachments), so a
 * restart of the daemon or of dockerd loses nothing and Docker need not replay anything.
 */

import { randomBytes } from 'node:crypto';
import { portsClash } from '../../control/ports.js';
import type { AttachView, ContainerView, HostService, NetworkView } from '../../control/service.js';
import type { PortRecord } from '../../control/state.js';
import { isWeftError, notFound, WeftError } from '../../lib/errors.js';
import { type Logger, nullLogger } from '../../lib/log.js';
import {
  addressOnly,
  type EndpointRef,
  EPHEMERAL_PORTS,
  endpointIfname,
  Label,
  networkName,
  parseCreateEndpoint,
  parseCreateNetwork,
  parseEndpointRef,
  parseJoin,
  parseNetworkRef,
  parseProgram,
  portSatisfies,
  portSpec,
  toPortBindings,
  type WantedPort,
  wantedPorts,
  weftNetworkRequest,
} from './protocol.js';

/** What the driver needs of the host service (HostService has it; tests give a fake). */
export type DockerBackend = Pick<
  HostService,
  | 'attach'
  | 'detach'
  | 'attachments'
  | 'setAttachmentPorts'
  | 'networks'
  | 'createNetwork'
  | 'removeNetwork'
  | 'containers'
>;

const OWNER = 'docker';

export class DockerNetworkDriver {
  readonly #b: DockerBackend;
  readonly #log: Logger;
  /** Choosing free host ports and publishing them is one step: calls that do it queue here. */
  #ports: Promise<unknown> = Promise.resolve();

  constructor(backend: DockerBackend, log: Logger = nullLogger) {
    this.#b = backend;
    this.#log = log;
  }

  #withPorts<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#ports.then(fn, fn);
    this.#ports = run.catch(() => undefined);
    return run;
  }

  capabilities(): { Scope: 'local'; ConnectivityScope: 'local' } {
    return { Scope: 'local', ConnectivityScope: 'local' };
  }

  /**
   * Throws INVALID (bad id, pool, gateway, driver option), EXISTS (the weft network exists with
   * other subnets), CONFLICT (a subnet overlaps another network).
   */
  async createNetwork(body: unknown): Promise<Record<string, never>> {
    const req = parseCreateNetwork(body);
    const want = weftNetworkRequest(req);
    const existing = this.#network(want.name);
    if (existing) {
      const same =
        existing.subnets.length === want.subnets.length &&
        want.subnets.every((s) => existing.subnets.some((e) => e.subnet === s.subnet));
      if (same) return {}; // a repeated call
      throw new WeftError(
        'EXISTS',
        `network ${want.name} exists with subnets ${existing.subnets.map((s) => s.subnet).join(', ')}`,
      );
    }
    await this.#b.createNetwork(want);
    this.#log.info('docker network created', { network: want.name, dockerId: req.NetworkID });
    return {};
  }

  /**
   * Idempotent: an unknown network is success. Docker deletes a network only once its endpoints
   * are gone, so Docker attachments still on it are stale (their DeleteEndpoint never arrived,
   * e.g. while the daemon was down) and are removed first.
   * Throws BUSY while other (non-Docker) containers remain on it.
   */
  async deleteNetwork(body: unknown): Promise<Record<string, never>> {
    const { NetworkID } = parseNetworkRef(body);
    const name = networkName(NetworkID);
    if (!this.#network(name)) return {};
    for (const a of this.#b.attachments(OWNER).filter((x) => x.network === name)) {
      this.#log.warn('removing a stale docker endpoint', {
        endpoint: a.containerId.slice(0, 12),
        network: name,
      });
      await this.#b.detach({ owner: OWNER, containerId: a.containerId });
    }
    try {
      await this.#b.removeNetwork(name);
    } catch (e) {
      if (!isWeftError(e, 'NOT_FOUND')) throw e;
    }
    this.#log.info('docker network removed', { network: name, dockerId: NetworkID });
    return {};
  }

  /**
   * Attach the endpoint (see the file comment). Answers the fields Docker left empty: the MAC,
   * and an address weft chose when Docker's IPAM gave none.
   * Throws INVALID (bad id, address, MAC, port binding), NOT_FOUND (the network), CONFLICT (the
   * address or a host port is taken), BUSY (no free address or port).
   */
  createEndpoint(body: unknown): Promise<{ Interface?: Record<string, string> }> {
    return this.#withPorts(() => this.#createEndpoint(body));
  }

  async #createEndpoint(body: unknown): Promise<{ Interface?: Record<string, string> }> {
    const req = parseCreateEndpoint(body);
    const network = networkName(req.NetworkID);
    if (!this.#network(network)) throw notFound(`network ${req.NetworkID} is not a weft network`);
    const i = req.Interface;
    const ip = i.Address ? addressOnly(i.Address, 'Interface.Address') : undefined;
    const ip6 = i.AddressIPv6 ? addressOnly(i.AddressIPv6, 'Interface.AddressIPv6') : undefined;
    // Docker leaves the MAC to the driver: one derived from the address, as Docker's bridge does.
    const mac = i.MacAddress || macFor(ip);
    const wanted = wantedPorts(req.Options);
    // A repeated call gets the attachment as it is (attach is idempotent): ports are not chosen again.
    const ports = this.#find(req) ? [] : this.#choosePorts(wanted, [], undefined);
    const view = await this.#b.attach({
      owner: OWNER,
      containerId: req.EndpointID,
      ifname: endpointIfname(req.EndpointID),
      network,
      ...(ip !== undefined && { ip }),
      ...(ip6 !== undefined && { ip6 }),
      mac,
      ...(ports.length > 0 && { ports }),
    });
    this.#log.info('docker endpoint created', {
      endpoint: req.EndpointID.slice(0, 12),
      network,
      addresses: view.addresses,
      ports: view.ports.map(portSpec),
    });
    const out: Record<string, string> = {};
    if (!i.MacAddress) out.MacAddress = view.mac ?? mac;
    if (!i.Address) {
      const a = view.addresses.find((x) => !x.includes(':'));
      if (a !== undefined) out.Address = a;
    }
    if (!i.AddressIPv6) {
      const a = view.addresses.find((x) => x.includes(':'));
      if (a !== undefined) out.AddressIPv6 = a;
    }
    return Object.keys(out).length > 0 ? { Interface: out } : {};
  }

  /** Idempotent: an unknown endpoint (or one whose veth is gone) is success. */
  async deleteEndpoint(body: unknown): Promise<Record<string, never>> {
    const req = parseEndpointRef(body);
    const { removed } = await this.#b.detach({ owner: OWNER, containerId: req.EndpointID });
    if (removed > 0) this.#log.info('docker endpoint deleted', { endpoint: req.EndpointID.slice(0, 12) });
    return {};
  }

  /** Throws NOT_FOUND for an unknown endpoint. */
  endpointOperInfo(body: unknown): { Value: Record<string, unknown> } {
    const a = this.#get(parseEndpointRef(body));
    const ip = a.addresses.find((x) => !x.includes(':'))?.split('/')[0];
    return {
      Value: {
        [Label.portMap]: toPortBindings(a.ports, ip),
        ...(a.mac !== undefined && { [Label.macAddress]: a.mac }),
      },
    };
  }

  /** The interface to move and the gateways. Throws NOT_FOUND for an unknown endpoint. */
  join(body: unknown): {
    InterfaceName: { SrcName: string; DstPrefix: string };
    Gateway?: string;
    GatewayIPv6?: string;
    StaticRoutes: never[];
    DisableGatewayService: boolean;
  } {
    const a = this.#get(parseJoin(body));
    const gw4 = a.routes.find((r) => r.gw !== undefined && !r.gw.includes(':'))?.gw;
    const gw6 = a.routes.find((r) => r.gw?.includes(':'))?.gw;
    return {
      InterfaceName: { SrcName: a.ifname, DstPrefix: 'eth' },
      ...(gw4 !== undefined && { Gateway: gw4 }),
      ...(gw6 !== undefined && { GatewayIPv6: gw6 }),
      StaticRoutes: [],
      DisableGatewayService: false,
    };
  }

  /** Nothing to undo here: Docker takes the interface back, DeleteEndpoint removes it. */
  leave(body: unknown): Record<string, never> {
    parseEndpointRef(body);
    return {};
  }

  /**
   * Publish the ports the options name, keeping those already published that still fit.
   * Throws NOT_FOUND (unknown endpoint), INVALID (a malformed binding), CONFLICT (a host port is
   * taken by another container), BUSY (no free port in a range).
   */
  programExternalConnectivity(body: unknown): Promise<Record<string, never>> {
    return this.#withPorts(() => this.#program(body));
  }

  async #program(body: unknown): Promise<Record<string, never>> {
    const req = parseProgram(body);
    const a = this.#get(req);
    const want = wantedPorts(req.Options);
    const kept = want.map((w) => a.ports.find((p) => portSatisfies(p, w)));
    if (kept.every((k) => k !== undefined) && a.ports.length === want.length) return {};
    const ports = this.#choosePorts(want, kept, req.EndpointID);
    await this.#b.setAttachmentPorts({ owner: OWNER, containerId: req.EndpointID, ports });
    this.#log.info('docker endpoint ports published', { endpoint: req.EndpointID.slice(0, 12), ports });
    return {};
  }

  /** Unpublish the endpoint's ports. Idempotent: an unknown endpoint is success. */
  async revokeExternalConnectivity(body: unknown): Promise<Record<string, never>> {
    const a = this.#find(parseEndpointRef(body));
    if (a && a.ports.length > 0) {
      await this.#b.setAttachmentPorts({ owner: OWNER, containerId: a.containerId, ports: [] });
    }
    return {};
  }

  #network(name: string): NetworkView | undefined {
    return this.#b.networks().find((n) => n.name === name);
  }

  #find(ref: EndpointRef): AttachView | undefined {
    return this.#b.attachments(OWNER).find((x) => x.containerId === ref.EndpointID);
  }

  #get(ref: EndpointRef): AttachView {
    const a = this.#find(ref);
    if (!a) throw notFound(`endpoint ${ref.EndpointID} is not known to weft`, { endpoint: ref.EndpointID });
    if (a.network !== networkName(ref.NetworkID)) {
      throw notFound(`endpoint ${ref.EndpointID} is not on network ${ref.NetworkID}`, {
        endpoint: ref.EndpointID,
      });
    }
    return a;
  }

  /**
   * One concrete host port per binding: the one already published (`kept`), else the first of
   * the binding's range (Docker's dynamic range for HostPort 0) that no other container holds.
   * Throws BUSY when a range has no free port left; CONFLICT (from the service) comes later.
   */
  #choosePorts(
    want: readonly WantedPort[],
    kept: readonly (PortRecord | undefined)[],
    self?: string,
  ): string[] {
    const others: PortRecord[] = this.#b
      .containers()
      .filter((c: ContainerView) => !(self !== undefined && c.owner === OWNER && c.containerId === self))
      .flatMap((c) => [...c.ports]);
    const chosen: PortRecord[] = [];
    return want.map((w, i) => {
      const k = kept[i];
      if (k !== undefined) {
        chosen.push(k);
        return portSpec(k);
      }
      const [start, end] =
        w.hostPort === 0 ? [EPHEMERAL_PORTS.start, EPHEMERAL_PORTS.end] : [w.hostPort, w.hostPortEnd];
      // A fixed port is left to the service, which names the holder if it is taken.
      if (start === end) {
        const p: PortRecord = {
          proto: w.proto,
          ...(w.hostIp !== undefined && { hostIp: w.hostIp }),
          hostPort: start,
          containerPort: w.containerPort,
        };
        chosen.push(p);
        return portSpec(p);
      }
      for (let port = start; port <= end; port++) {
        const p: PortRecord = {
          proto: w.proto,
          ...(w.hostIp !== undefined && { hostIp: w.hostIp }),
          hostPort: port,
          containerPort: w.containerPort,
        };
        if (![...others, ...chosen].some((o) => portsClash(o, p))) {
          chosen.push(p);
          return portSpec(p);
        }
      }
      throw new WeftError(
        'BUSY',
        `no free host port in ${start}-${end}/${w.proto} for container port ${w.containerPort}`,
      );
    });
  }
}

/** 02:42 and the four bytes of the IPv4 address (Docker's rule); random locally administered without one. */
export function macFor(ip: string | undefined): string {
  const bytes =
    ip !== undefined && !ip.includes(':')
      ? [0x02, 0x42, ...ip.split('.').map(Number)]
      : [0x02, ...randomBytes(5)];
  return bytes.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
