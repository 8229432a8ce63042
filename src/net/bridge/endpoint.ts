/**
 * Plumbing one endpoint into a sandbox, as one transaction of named steps:
 *   createVeth   the pair in one request (off the caller's thread): host end `veth<id7>` on the bridge, up; the peer
 *                created directly in the sandbox under its final name (eth0, eth1…; the kernel
 *                checks a peer's name in the namespace it is made in, so the host's own eth0
 *                is no clash), with the requested MAC; no move, no rename
 *   peerUp       the sandbox end up (not at creation: a veth cannot open before its pair is
 *                linked, the kernel answers ENOTCONN)
 *   hairpin      the host end's bridge port in hairpin mode, so a container reaches its own
 *                published port through a host address (with br_netfilter the DNATed packet
 *                leaves by the port it came in on; see net/firewall/render.ts)
 *   addresses    each endpoint address (IPv6 with nodad)
 *   defaultRoute via the network's gateway, per family, when the sandbox has none yet (the
 *                first interface gets it) and the network is not internal
 * A `bare` endpoint waits in the daemon's own namespace for its runtime (Docker), which moves
 * it, brings it up and gives it its addresses and routes: its peer is made down under a unique
 * temporary name (the daemon's namespace may hold an eth0), then renamed and given its MAC.
 * Any failure unwinds: deleting the host end takes the peer along, so nothing is half-made.
 */
import { randomBytes } from 'node:crypto';
import { type NetHandle, openHandle } from '../../kernel/handle.js';
import { formatIP } from '../../lib/ip.js';
import type { Rollback } from '../../lib/rollback.js';
import type { EndpointInfo, EndpointSpec, NetworkSpec, SandboxRef } from '../driver.js';
import { ensureDefaultRoutes, hostVethName, subnetFor } from './setup.js';

/** A temporary, unique interface name for a peer before its rename (`wtmp` + 8 hex chars). */
export const tempIfName = (): string => `wtmp${randomBytes(4).toString('hex')}`;

export interface Plumbed {
  readonly hostIf: string;
  /** Families whose default route this endpoint installed. */
  readonly defaultRoutes: readonly (4 | 6)[];
}

/**
 * Run the join steps inside the caller's transaction `rb`. Throws NOT_FOUND when the bridge is
 * missing, EXISTS when the host veth or the sandbox interface name is taken, and whatever the
 * kernel refuses (an invalid MAC); the caller's transaction undoes what was done.
 */
export async function plumbEndpoint(
  host: NetHandle,
  net: NetworkSpec,
  ep: EndpointSpec,
  sandbox: SandboxRef,
  rb: Rollback,
): Promise<Plumbed> {
  const hostIf = hostVethName(ep);
  const peerName = ep.bare ? tempIfName() : ep.ifname;
  // The pair's creation is the kernel's longest step (~1.2 ms): made on the thread pool, so
  // the caller's thread can meanwhile do what does not need it (the daemon: the firewall).
  await host.links.createAsync({
    kind: 'veth',
    name: hostIf,
    master: net.bridge,
    mtu: net.mtu,
    up: true,
    peer: {
      name: peerName,
      netns: sandbox.ns,
      mtu: net.mtu,
      ...(!ep.bare && ep.mac !== undefined && { mac: ep.mac }),
    },
  });
  rb.push(`delete veth ${hostIf}`, () => host.links.delete(hostIf));
  host.links.setBridgePort(hostIf, { hairpin: true });

  const sb = openHandle(sandbox.ns);
  // A bare endpoint is for a runtime that moves and configures the interface itself (Docker).
  if (ep.bare) {
    sb.links.rename(peerName, ep.ifname);
    if (ep.mac !== undefined) sb.links.setMac(ep.ifname, ep.mac);
    return { hostIf, defaultRoutes: [] };
  }
  sb.links.setUp(ep.ifname);
  for (const a of ep.addresses) sb.addrs.add(ep.ifname, a, a.ip.family === 6 ? { noDad: true } : {});

  const defaultRoutes = ensureDefaultRoutes(sb, net, ep);
  return { hostIf, defaultRoutes };
}

/**
 * Read back a joined endpoint and list what differs from its spec: the host end on the bridge
 * and up, the sandbox interface with the endpoint's addresses, up, and (unless the network is
 * internal) a default route via the gateway per family. Never throws for missing pieces: they
 * are problems. A bare endpoint is checked on the host side only.
 */
export function inspectPlumbed(
  host: NetHandle,
  net: NetworkSpec,
  ep: EndpointSpec,
  sandbox: SandboxRef,
): EndpointInfo {
  const problems: string[] = [];
  const hostIfname = hostVethName(ep);
  const hl = host.links.find(hostIfname);
  const bridge = host.links.find(net.bridge);
  if (!hl) problems.push(`host veth ${hostIfname} is missing`);
  else {
    if (!bridge || hl.masterIndex !== bridge.index)
      problems.push(`host veth ${hostIfname} is not on bridge ${net.bridge}`);
    if (!hl.up) problems.push(`host veth ${hostIfname} is down`);
  }
  const sb = openHandle(sandbox.ns);
  if (ep.bare) {
    // Until its runtime moves it, the interface waits in `sandbox` (the daemon's namespace).
    const waiting = sb.links.find(ep.ifname);
    return {
      hostIfname,
      ...(hl?.mac && { hostMac: hl.mac }),
      ...(waiting?.mac && { mac: waiting.mac }),
      problems,
    };
  }
  const l = sb.links.find(ep.ifname);
  if (!l) {
    problems.push(`interface ${ep.ifname} is missing in the container`);
    return { hostIfname, ...(hl?.mac && { hostMac: hl.mac }), problems };
  }
  if (!l.up) problems.push(`interface ${ep.ifname} is down`);
  if (ep.mac !== undefined && l.mac?.toLowerCase() !== ep.mac.toLowerCase()) {
    problems.push(`interface ${ep.ifname} has MAC ${l.mac}, not ${ep.mac}`);
  }
  const have = sb.addrs.list({ dev: ep.ifname }).map((a) => `${formatIP(a.ipnet.ip)}/${a.ipnet.len}`);
  for (const a of ep.addresses) {
    const want = `${formatIP(a.ip)}/${a.len}`;
    if (!have.includes(want)) problems.push(`address ${want} is missing on ${ep.ifname}`);
  }
  if (!net.internal) {
    for (const a of ep.addresses) {
      const gw = formatIP(subnetFor(net, a).gateway);
      const def = sb.routes.list({ family: a.ip.family, dst: 'default' });
      if (!def.some((r) => r.gateway && formatIP(r.gateway) === gw)) {
        problems.push(`no IPv${a.ip.family} default route via ${gw} in the container`);
      }
    }
  }
  return { hostIfname, ...(hl?.mac && { hostMac: hl.mac }), ...(l.mac && { mac: l.mac }), problems };
}
