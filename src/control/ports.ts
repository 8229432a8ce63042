/**
 * Docker's `-p` syntax: `[HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/tcp|udp]`, with IPv6 host
 * addresses in brackets (`[::1]:8080:80`). Ranges map one to one and must have equal length.
 * Pure; conflicts between containers are checked by the caller against all published ports.
 */
import { conflict, invalid } from '../lib/errors.js';
import { formatIP, parseIP } from '../lib/ip.js';
import type { PortRecord } from './state.js';

const RE = /^(?:(\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(\d+)(?:-(\d+))?:(\d+)(?:-(\d+))?(?:\/(tcp|udp))?$/;

function port(text: string | undefined, spec: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw invalid(`port ${text} in "${spec}" is out of range (1-65535)`);
  return n;
}

/** Parse one `-p` value. Throws INVALID naming the problem. */
export function parsePortSpec(spec: string): PortRecord {
  const m = RE.exec(spec.trim());
  if (!m) {
    throw invalid(`"${spec}" is not a port mapping; use [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]`, { spec });
  }
  const hostIpText = m[1]?.replace(/^\[|\]$/g, '');
  const hostIp = hostIpText === undefined ? undefined : formatIP(parseIP(hostIpText));
  const hostPort = port(m[2], spec)!;
  const hostPortEnd = port(m[3], spec);
  const containerPort = port(m[4], spec)!;
  const containerPortEnd = port(m[5], spec);
  if ((hostPortEnd === undefined) !== (containerPortEnd === undefined)) {
    throw invalid(`"${spec}": a port range must be given on both sides`, { spec });
  }
  if (hostPortEnd !== undefined && containerPortEnd !== undefined) {
    if (hostPortEnd < hostPort || containerPortEnd < containerPort)
      throw invalid(`"${spec}": a range must not run backwards`);
    if (hostPortEnd - hostPort !== containerPortEnd - containerPort) {
      throw invalid(`"${spec}": the host and container ranges must have the same length`, { spec });
    }
  }
  return {
    proto: (m[6] as 'tcp' | 'udp' | undefined) ?? 'tcp',
    ...(hostIp !== undefined && { hostIp }),
    hostPort,
    ...(hostPortEnd !== undefined && hostPortEnd !== hostPort && { hostPortEnd }),
    containerPort,
    ...(containerPortEnd !== undefined && containerPortEnd !== containerPort && { containerPortEnd }),
  };
}

const end = (p: PortRecord) => p.hostPortEnd ?? p.hostPort;
const anyAddr = (ip: string | undefined) => ip === undefined || ip === '0.0.0.0' || ip === '::';

/** True when two mappings claim a host port in common (same protocol, overlapping addresses). */
export function portsClash(a: PortRecord, b: PortRecord): boolean {
  if (a.proto !== b.proto) return false;
  if (a.hostPort > end(b) || b.hostPort > end(a)) return false;
  return anyAddr(a.hostIp) || anyAddr(b.hostIp) || a.hostIp === b.hostIp;
}

export const formatPort = (p: PortRecord): string =>
  `${p.hostIp === undefined ? '' : p.hostIp.includes(':') ? `[${p.hostIp}]:` : `${p.hostIp}:`}${p.hostPort}${
    p.hostPortEnd ? `-${p.hostPortEnd}` : ''
  }:${p.containerPort}${p.containerPortEnd ? `-${p.containerPortEnd}` : ''}/${p.proto}`;

/**
 * Throws CONFLICT when one of `wanted` claims a host port that `taken` (owned by others, with
 * their owner's name) or another of `wanted` already claims.
 */
export function checkPortsFree(
  wanted: readonly PortRecord[],
  taken: readonly { owner: string; port: PortRecord }[],
): void {
  for (const [i, w] of wanted.entries()) {
    for (const t of taken) {
      if (portsClash(w, t.port)) {
        throw conflict(
          `host port ${formatPort(w)} is already published by ${t.owner} (${formatPort(t.port)})`,
          {
            port: formatPort(w),
            owner: t.owner,
          },
        );
      }
    }
    for (const other of wanted.slice(i + 1)) {
      if (portsClash(w, other))
        throw conflict(`host port ${formatPort(w)} is published twice in one request`);
    }
  }
}
