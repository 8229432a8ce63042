/**
 * The desired firewall state of one host: what the control layer decided, in the shape the
 * renderer reads. One shape for IPv4 and IPv6: a network lists its subnets of both families,
 * an endpoint its addresses of both, and the renderer derives the per-family rules from them.
 */
import type { IPAddr, IPNet } from '../../lib/ip.js';

export type Proto = 'tcp' | 'udp';

/**
 * One published port (`-p [HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/PROTO]`). Ranges map one
 * to one and must have the same length.
 */
export interface PortMapping {
  readonly proto: Proto;
  /**
   * Host address the port is published on. Absent: every host address of every family the
   * endpoint has an address of. `0.0.0.0` / `::`: every host address of that family only.
   * A 127.0.0.0/8 address publishes on loopback only (needs route_localnet, see
   * requiredSysctls). `::1` is refused: IPv6 cannot forward loopback-sourced traffic.
   */
  readonly hostIp?: IPAddr | undefined;
  readonly hostPort: number;
  /** Last host port of a range (inclusive); absent for a single port. */
  readonly hostPortEnd?: number | undefined;
  readonly containerPort: number;
  /** Last container port of a range (inclusive); required exactly when hostPortEnd is. */
  readonly containerPortEnd?: number | undefined;
}

export interface EndpointFw {
  /** Short id, [a-z0-9], 1-32 characters; unique within its network. */
  readonly id: string;
  /** The endpoint's addresses, each inside a subnet of its network; the first of each family is the DNAT target. */
  readonly ips: readonly IPAddr[];
  readonly ports: readonly PortMapping[];
}

export interface NetworkFw {
  /** Short id, [a-z0-9], 1-32 characters; unique on the host; named in every rule's comment. */
  readonly id: string;
  /** The bridge device of the network. */
  readonly bridge: string;
  /** IPv4 and/or IPv6 prefixes (host bits may be set: 10.0.0.1/24 means 10.0.0.0/24). */
  readonly subnets: readonly IPNet[];
  /** Outbound NAT for traffic leaving the network; internal networks have none whatever this says. */
  readonly masquerade: boolean;
  /** No traffic leaves or enters the network through the host (only the host itself talks to it). */
  readonly internal: boolean;
  /** Inter-container communication within the network; false drops container-to-container traffic. */
  readonly icc: boolean;
  /**
   * Source addresses for outbound NAT (Docker's host_ipv4 / host_ipv6): at most one per family;
   * a family with one gets `snat to` that address instead of `masquerade`. Refused without
   * masquerade; unused, like masquerade, on internal networks.
   */
  readonly hostIps?: readonly IPAddr[] | undefined;
  /**
   * The cluster network(s) this network is a subnet of (overlay hosts, flannel's design): traffic
   * to them is never masqueraded, and traffic from them may enter the bridge (containers of
   * other hosts reach this host's containers). Unused on internal networks.
   */
  readonly cluster?: readonly IPNet[] | undefined;
  /**
   * With `cluster`: the host's own traffic to the cluster leaves with this source (the
   * bridge's gateway, an address inside the cluster), so that the other hosts let it in.
   */
  readonly clusterSource?: IPAddr | undefined;
  readonly endpoints: readonly EndpointFw[];
}

export interface FirewallState {
  readonly networks: readonly NetworkFw[];
}
