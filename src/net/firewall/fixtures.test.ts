/**
 * Small builders shared by the firewall tests: a .test.ts file so that the build leaves it out;
 * it registers no tests itself (it is imported by several test files).
 */
import { parseIP, parseIPNet } from '../../lib/ip.js';
import type { EndpointFw, NetworkFw, PortMapping } from './types.js';

export function net(id: string, bridge: string, subnets: string[], opts: Partial<NetworkFw> = {}): NetworkFw {
  return {
    id,
    bridge,
    subnets: subnets.map(parseIPNet),
    masquerade: true,
    internal: false,
    icc: true,
    endpoints: [],
    ...opts,
  };
}

export function ep(id: string, ips: string[], ports: PortMapping[] = []): EndpointFw {
  return { id, ips: ips.map(parseIP), ports };
}

/** `port('tcp', 8080, 80)`, `port('udp', [8000, 8010], [8000, 8010], '127.0.0.1')`. */
export function port(
  proto: 'tcp' | 'udp',
  host: number | [number, number],
  container: number | [number, number],
  hostIp?: string,
): PortMapping {
  const [hs, he] = typeof host === 'number' ? [host, undefined] : host;
  const [cs, ce] = typeof container === 'number' ? [container, undefined] : container;
  return {
    proto,
    hostPort: hs,
    containerPort: cs,
    ...(he === undefined ? {} : { hostPortEnd: he }),
    ...(ce === undefined ? {} : { containerPortEnd: ce }),
    ...(hostIp === undefined ? {} : { hostIp: parseIP(hostIp) }),
  };
}

/** The rule lines of one chain in rendered text (hook line left out), trimmed. */
export function chainRules(text: string, chain: string): string[] {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === `chain ${chain} {`);
  if (start < 0) throw new Error(`no chain ${chain} in\n${text}`);
  const out: string[] = [];
  for (const l of lines.slice(start + 1)) {
    const t = l.trim();
    if (t === '}') break;
    if (t.startsWith('type ')) continue;
    out.push(t);
  }
  return out;
}
