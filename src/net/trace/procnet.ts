/**
 * Who listens where, from /proc/net/{tcp,tcp6,udp,udp6} of a namespace: for `weft trace` to say
 * whether a packet delivered to a port finds a socket (a server in a container, the udp
 * backend's daemon on UDP 8285). The parser is pure; `listening` reads the files inside the
 * namespace (a switched section: /proc/thread-self/net is the calling thread's namespace).
 */
import * as fs from 'node:fs';
import type { Netns } from '../../kernel/netns.js';
import { type IPAddr, ipEqual, v4 } from '../../lib/ip.js';

/** One socket of a /proc/net table: its local address (IPv4 or mapped, undefined for any IPv6) and port. */
export interface ProcSocket {
  /** undefined: the wildcard address (0.0.0.0 or ::), or an IPv6 address. */
  readonly addr: IPAddr | undefined;
  readonly wildcard: boolean;
  readonly port: number;
  /** The kernel's TCP state number (0x0A LISTEN; UDP sockets are 0x07 unless connected). */
  readonly state: number;
}

const TCP_LISTEN = 0x0a;

/** Parse the body of /proc/net/tcp, tcp6, udp or udp6. Lines that do not parse are skipped. */
export function parseProcNet(text: string): ProcSocket[] {
  const out: ProcSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    const local = f[1];
    const st = f[3];
    if (!local || !st) continue;
    const [hex, portHex] = local.split(':');
    if (!hex || !portHex) continue;
    const port = Number.parseInt(portHex, 16);
    const state = Number.parseInt(st, 16);
    if (!Number.isFinite(port) || !Number.isFinite(state)) continue;
    let addr: IPAddr | undefined;
    let wildcard = /^0+$/.test(hex);
    if (hex.length === 8) {
      // Host byte order (little-endian here) of the network-order address.
      const n = Number.parseInt(hex, 16);
      const b = [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
      addr = v4(((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0);
    } else if (hex.length === 32) {
      // An IPv4-mapped address (::ffff:a.b.c.d) is the last word; others stay undefined.
      if (/^0{16}FFFF0000/i.test(hex)) {
        const n = Number.parseInt(hex.slice(24), 16);
        const b = [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
        addr = v4(((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0);
        wildcard = false;
      }
    } else continue;
    out.push({ addr: wildcard ? undefined : addr, wildcard, port, state });
  }
  return out;
}

/** Whether one of `socks` takes a packet to `dst`:`port` (a TCP listener, or any bound UDP socket). */
export function accepts(
  socks: readonly ProcSocket[],
  proto: 'tcp' | 'udp',
  dst: IPAddr,
  port: number,
): boolean {
  return socks.some(
    (s) =>
      s.port === port &&
      (proto === 'udp' || s.state === TCP_LISTEN) &&
      (s.wildcard || (s.addr !== undefined && ipEqual(s.addr, dst))),
  );
}

/**
 * The sockets of `proto` (IPv4 and IPv6 tables) in namespace `ns`. A table that cannot be read
 * is empty. Never throws for a missing file.
 */
export function listening(ns: Netns, proto: 'tcp' | 'udp'): ProcSocket[] {
  return ns.run(() => {
    const out: ProcSocket[] = [];
    for (const f of [proto, `${proto}6`]) {
      try {
        out.push(...parseProcNet(fs.readFileSync(`/proc/thread-self/net/${f}`, 'utf8')));
      } catch {
        // no IPv6 in that namespace, or /proc not mounted: nothing known
      }
    }
    return out;
  });
}
