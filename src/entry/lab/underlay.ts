/**
 * The lab's wires, through weft's own kernel layer (no `ip` commands): the switch namespace
 * with bridge br0; every other namespace joined to it by a veth whose `eth0` end is created
 * directly inside that namespace (IFLA_NET_NS_FD, no move step) and whose switch end is a port
 * of br0 named after the role (host1, etcd1, router); the router's second link to the internet
 * namespace; addresses, default routes and forwarding. Also the internet's tiny HTTP server
 * (busybox httpd with a CGI answering with the client's address, so masquerade is visible).
 *
 * Removing a namespace takes its links along (the switch-side veth ends go with their peers),
 * so tearing a host down is deleting its namespace after its processes are gone.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type NetHandle, openHandle } from '../../kernel/handle.js';
import { Netns } from '../../kernel/netns.js';
import { type ProcRef, spawnDetached } from './procs.js';
import { INTERNET, type LabPaths, nsPath, type Role, type Underlay } from './topology.js';

export const SWITCH_BRIDGE = 'br0';

export interface LabNs {
  readonly role: Role;
  readonly ns: Netns;
  readonly h: NetHandle;
}

/**
 * Create the namespace of a role, pinned at /run/netns/weft-<lab>-<role>, with `lo` up. Throws
 * EXISTS when that pin exists (another lab of that name, or a leftover: `weft lab down` it).
 */
export function createNs(paths: LabPaths, lab: string, role: Role): LabNs {
  const ns = Netns.create(nsPath(paths, lab, role));
  const h = openHandle(ns);
  try {
    h.links.setUp('lo');
  } catch (e) {
    ns.delete();
    throw e;
  }
  return { role, ns, h };
}

/** Open an existing namespace of the lab. Throws NOT_FOUND when it is not pinned. */
export function openNs(paths: LabPaths, lab: string, role: Role): LabNs {
  const ns = Netns.open(nsPath(paths, lab, role));
  return { role, ns, h: openHandle(ns) };
}

/** The switch: bridge br0, up. */
export function buildSwitch(sw: LabNs): void {
  sw.h.links.add({ kind: 'bridge', name: SWITCH_BRIDGE, up: true, stp: false });
}

/**
 * Join `member` to the switch: a veth whose switch end is port `port` of br0 and whose other end
 * is `eth0` inside `member`, with `addr`/`u.len`, up, and (unless it is the router) a default
 * route via the router. Throws EXISTS when the port or eth0 exists.
 */
export function joinSwitch(sw: LabNs, member: LabNs, port: string, addr: string, u: Underlay): void {
  sw.h.links.add({
    kind: 'veth',
    name: port,
    master: SWITCH_BRIDGE,
    up: true,
    peer: { name: 'eth0', netns: member.ns },
  });
  member.h.addrs.add('eth0', `${addr}/${u.len}`);
  member.h.links.setUp('eth0');
  if (member.role !== 'router') member.h.routes.add({ dst: 'default', via: u.gateway });
}

/**
 * The router: on the switch at the underlay's gateway, linked to the internet namespace by a
 * second veth (router eth1 203.0.113.1 ↔ inet eth0 203.0.113.10), forwarding on, no NAT; the
 * internet's default route points back at it.
 */
export function buildRouter(sw: LabNs, router: LabNs, inet: LabNs, u: Underlay): void {
  joinSwitch(sw, router, 'router', u.gateway, u);
  router.h.links.add({ kind: 'veth', name: 'eth1', up: true, peer: { name: 'eth0', netns: inet.ns } });
  router.h.addrs.add('eth1', `${INTERNET.router}/${INTERNET.len}`);
  inet.h.addrs.add('eth0', `${INTERNET.server}/${INTERNET.len}`);
  inet.h.links.setUp('eth0');
  inet.h.routes.add({ dst: 'default', via: INTERNET.router });
  router.h.sysctl.set('net.ipv4.ip_forward', 1);
}

/** A host: joined to the switch at `ip`, forwarding on (the daemon would set it too). */
export function buildHost(sw: LabNs, host: LabNs, ip: string, u: Underlay): void {
  joinSwitch(sw, host, host.role, ip, u);
  host.h.sysctl.set('net.ipv4.ip_forward', 1);
}

/** The CGI that answers every request with who asked. */
export function helloCgi(greeting: string): string {
  return [
    '#!/bin/sh',
    "printf 'Content-Type: text/plain\\r\\n\\r\\n'",
    `printf '%s; you are %s\\n' '${greeting.replaceAll("'", '')}' "$REMOTE_ADDR"`,
    '',
  ].join('\n');
}

/**
 * Write a web root whose "/" runs `helloCgi(greeting)` (busybox httpd runs cgi-bin/index.cgi for
 * a folder without index.html).
 */
export function writeWebRoot(dir: string, greeting: string): void {
  fs.mkdirSync(path.join(dir, 'cgi-bin'), { recursive: true, mode: 0o755 });
  const cgi = path.join(dir, 'cgi-bin', 'index.cgi');
  fs.writeFileSync(cgi, helloCgi(greeting), { mode: 0o755 });
  fs.chmodSync(cgi, 0o755);
}

/** The command of a hello server on port 80 of IPv4 (so REMOTE_ADDR is a plain address). */
export const httpdCommand = (webRoot: string): string[] => [
  'busybox',
  'httpd',
  '-f',
  '-p',
  '0.0.0.0:80',
  '-h',
  webRoot,
];

/** Start the internet's HTTP server (detached, inside `inet`). Throws NOT_FOUND without busybox. */
export function startInternetServer(
  inet: LabNs,
  webRoot: string,
  log: string,
  env: Record<string, string>,
): Promise<ProcRef> {
  writeWebRoot(webRoot, `hello from the internet (${INTERNET.server})`);
  const [cmd, ...args] = httpdCommand(webRoot);
  return spawnDetached(inet.ns, cmd!, args, { env, log });
}
