/**
 * Backends carry packets between the hosts of a cluster network, flannel's way: every host
 * holds a lease on one subnet of the cluster network, and a backend makes every other host's
 * subnet reachable. One interface, one folder per backend (vxlan, host-gw, udp), chosen through
 * an explicit registry built by the daemon's composition root.
 *
 * Life of a backend in the daemon:
 *   prepare()        before the lease is acquired: what the lease must advertise (vxlan: the
 *                    VTEP's MAC, so the device is created here) and the MTU for the host's bridge
 *   start(own)       the host's own lease is known: device addresses, the route to the cluster
 *   addPeer / removePeer   one peer lease appeared, changed (addPeer again) or went away
 *   resync(peers)    the whole desired set: adds what is missing, repairs drift, and removes
 *                    what belongs to no lease (periodic, and after a re-list)
 *   stop()           the daemon stops: userspace parts end; kernel state stays for the next start
 *   teardown()       remove everything the backend made (cluster leave, tests)
 * All steps are idempotent; kernel errors surface as KernelError/WeftError.
 */
import type { NetHandle } from '../../kernel/handle.js';
import type { IPAddr, IPNet } from '../../lib/ip.js';
import type { Logger } from '../../lib/log.js';

export type BackendType = 'vxlan' | 'host-gw' | 'udp';

/** One host's lease, as a backend needs it. */
export interface LeaseInfo {
  /** The host's subnet of the cluster network (IPv4). */
  readonly subnet: IPNet;
  /** The host's underlay address (flannel's PublicIP). */
  readonly publicIp: IPAddr;
  readonly backendType: string;
  /** The backend's own data from the lease (vxlan: `{VNI, VtepMAC}`); JSON, unchecked. */
  readonly backendData: unknown;
  /**
   * The store revision of the lease's last write, when known: a higher one is a newer lease
   * (vxlan: of two leases with one VTEP MAC, the newer one is the host that has it now).
   */
  readonly modRevision?: number | undefined;
}

/** The `Backend` section of the cluster configuration (flannel's names, lower-cased). */
export interface BackendConfig {
  readonly type: BackendType;
  /** vxlan: VXLAN network identifier (default 1); the device is `weft.<vni>`. */
  readonly vni?: number | undefined;
  /** vxlan: UDP port (default 8472, flannel's); udp: UDP port (default 8285). */
  readonly port?: number | undefined;
  /** vxlan: peers on the same underlay subnet are reached by a plain route, not encapsulated. */
  readonly directRouting?: boolean | undefined;
}

export interface BackendContext {
  /** The host's own namespace (root in production, a lab host's namespace in the lab). */
  readonly host: NetHandle;
  /** The cluster network (e.g. 10.244.0.0/16). */
  readonly network: IPNet;
  /** This host's underlay address, and the interface that has it. */
  readonly publicIp: IPAddr;
  readonly iface: { readonly name: string; readonly index: number; readonly mtu: number };
  readonly log: Logger;
}

export interface Backend {
  readonly type: BackendType;
  /** Idempotent. `backendData` goes into this host's lease; `mtu` is for the host's bridge. */
  prepare(): Promise<{ backendData: unknown; mtu: number }>;
  start(own: LeaseInfo): Promise<void>;
  addPeer(peer: LeaseInfo): Promise<void>;
  removePeer(peer: LeaseInfo): Promise<void>;
  resync(peers: readonly LeaseInfo[]): Promise<void>;
  stop(): Promise<void>;
  teardown(): Promise<void>;
}

export type BackendFactory = (cfg: BackendConfig, ctx: BackendContext) => Backend;
