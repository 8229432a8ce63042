/**
 * A network's subnet configuration, canonicalised once: the caller's `--subnet`, `--gateway`
 * and `--ip-range` become a value with every field filled in and checked, so that allocation
 * never has to think about defaults or bad input again (the idea of CNI host-local's
 * `Range.Canonicalize`, with Docker's rules):
 *
 * - the subnet must be a network address (no host bits set); an error suggests the network;
 * - IPv4 reserves the network and broadcast addresses, except in a /31 or /32 (RFC 3021 point
 *   to point links, single addresses); IPv6 has no broadcast and reserves only the
 *   subnet-router anycast address (the all-zero host part), except in a /127 or /128 (RFC 6164);
 * - the gateway defaults to the first usable address of the subnet, must lie inside the subnet
 *   and must not be a reserved address;
 * - the ip-range (the addresses handed out dynamically) must lie inside the subnet; its reserved
 *   ends are trimmed off.
 */
import { invalid, WeftError } from '../../lib/errors.js';
import {
  addIP,
  bitsOf,
  compareIP,
  containsIP,
  containsNet,
  type Family,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  ipEqual,
  lastIP,
  maskIP,
  networkOf,
  parseIPNet,
  tryParseIP,
} from '../../lib/ip.js';

/** What a user gives: strings as typed on the command line, or already parsed values. */
export interface SubnetConfig {
  readonly subnet: string | IPNet;
  readonly gateway?: string | IPAddr | undefined;
  readonly ipRange?: string | IPNet | undefined;
}

/** An inclusive range of addresses of one family, `start <= end`. */
export interface IPRange {
  readonly start: IPAddr;
  readonly end: IPAddr;
}

/** A subnet configuration with every default filled in and every rule checked. */
export interface CanonicalSubnet {
  /** The network (host bits clear). */
  readonly subnet: IPNet;
  /** The gateway address (given, or the first usable address of the subnet). */
  readonly gateway: IPAddr;
  /**
   * The addresses handed out dynamically: the ip-range if one was given, else the subnet,
   * without the reserved addresses at either end. May contain the gateway (allocation skips it).
   */
  readonly range: IPRange;
  readonly family: Family;
  /** The ip-range as given, when there was one (kept for display and persistence). */
  readonly ipRange?: IPNet;
}

/**
 * True when `ip` is a reserved address of `subnet` that is never handed out nor used as a
 * gateway: the IPv4 network and broadcast addresses (not in a /31 or /32), the IPv6
 * subnet-router anycast address (not in a /127 or /128). Addresses outside the subnet or of the
 * other family are not reserved (by this subnet). Never throws.
 */
export function isReserved(subnet: IPNet, ip: IPAddr): boolean {
  return reservedKind(subnet, ip) !== undefined;
}

function reservedKind(subnet: IPNet, ip: IPAddr): 'network' | 'broadcast' | 'anycast' | undefined {
  if (!containsIP(subnet, ip)) return undefined;
  const hostBits = bitsOf(subnet.ip.family) - subnet.len;
  if (hostBits <= 1) return undefined;
  if (ipEqual(ip, maskIP(subnet.ip, subnet.len))) return subnet.ip.family === 4 ? 'network' : 'anycast';
  if (subnet.ip.family === 4 && ipEqual(ip, lastIP(subnet))) return 'broadcast';
  return undefined;
}

const reservedWords = {
  network: 'the network address',
  broadcast: 'the broadcast address',
  anycast: 'the subnet-router anycast address',
} as const;

/**
 * Why `ip` cannot be used in `subnet` ("is the broadcast address of 10.0.0.0/24"), or undefined
 * when it is a usable address of it. Never throws.
 */
export function reservedReason(subnet: IPNet, ip: IPAddr): string | undefined {
  const kind = reservedKind(subnet, ip);
  return kind === undefined ? undefined : `is ${reservedWords[kind]} of subnet ${formatIPNet(subnet)}`;
}

/** The usable addresses of a subnet: all of it minus the reserved ends. Never throws. */
export function usableRange(subnet: IPNet): IPRange {
  const net = networkOf(subnet);
  const first = net.ip;
  const last = lastIP(net);
  const hostBits = bitsOf(net.ip.family) - net.len;
  if (hostBits <= 1) return { start: first, end: last };
  return { start: addIP(first, 1), end: net.ip.family === 4 ? addIP(last, -1) : last };
}

/** Does the inclusive range contain `ip`? Never throws. */
export function rangeContains(range: IPRange, ip: IPAddr): boolean {
  return ip.family === range.start.family && compareIP(range.start, ip) <= 0 && compareIP(ip, range.end) <= 0;
}

/** `start-end`, for messages. Never throws. */
export const formatRange = (r: IPRange): string => `${formatIP(r.start)}-${formatIP(r.end)}`;

/** Parse (or check) a prefix that must be a network address. Throws INVALID. */
function networkArg(what: string, value: string | IPNet): IPNet {
  const text = typeof value === 'string' ? value : formatIPNet(value);
  if (typeof value === 'string' && !value.includes('/')) {
    throw invalid(`${what} "${value}" is not a CIDR (expected ADDR/LEN)`, { [keyOf(what)]: value });
  }
  let net: IPNet;
  try {
    net = typeof value === 'string' ? parseIPNet(value) : value;
    if (!Number.isInteger(net.len) || net.len < 0 || net.len > bitsOf(net.ip.family)) {
      throw invalid(`prefix length ${net.len} out of range`);
    }
  } catch (cause) {
    throw new WeftError('INVALID', `${what} "${text}" is not a valid CIDR`, {
      cause,
      details: { [keyOf(what)]: text },
    });
  }
  const network = networkOf(net);
  if (!ipEqual(network.ip, net.ip)) {
    const suggested = formatIPNet(network);
    throw invalid(`${what} ${text} has host bits set; did you mean ${suggested}?`, {
      [keyOf(what)]: text,
      suggested,
    });
  }
  return network;
}

/** Parse an address argument. Throws INVALID naming what it is. */
function addressArg(what: string, text: string): IPAddr {
  const ip = tryParseIP(text);
  if (ip === undefined) throw invalid(`${what} "${text}" is not an IP address`, { [what]: text });
  return ip;
}

const keyOf = (what: string): string => (what === 'ip range' ? 'ipRange' : what);

/**
 * Canonicalise a subnet configuration (see the file comment for the rules).
 *
 * Throws INVALID when: the subnet, gateway or ip-range does not parse; the subnet or ip-range
 * has host bits set (the message suggests the network); the gateway or ip-range is of the other
 * family, or not inside the subnet (the message names both); the gateway is a reserved address;
 * the ip-range holds no usable address.
 */
export function canonicalSubnet(config: SubnetConfig): CanonicalSubnet {
  const subnet = networkArg('subnet', config.subnet);
  const family = subnet.ip.family;
  const subnetText = formatIPNet(subnet);
  const usable = usableRange(subnet);

  let gateway = usable.start;
  if (config.gateway !== undefined) {
    const gw = typeof config.gateway === 'string' ? addressArg('gateway', config.gateway) : config.gateway;
    const gwText = formatIP(gw);
    if (!containsIP(subnet, gw)) {
      throw invalid(`gateway ${gwText} is not in subnet ${subnetText}`, {
        gateway: gwText,
        subnet: subnetText,
      });
    }
    const why = reservedReason(subnet, gw);
    if (why !== undefined) {
      throw invalid(`gateway ${gwText} ${why}`, { gateway: gwText, subnet: subnetText });
    }
    gateway = gw;
  }

  let range = usable;
  let ipRange: IPNet | undefined;
  if (config.ipRange !== undefined) {
    ipRange = networkArg('ip range', config.ipRange);
    const rangeText = formatIPNet(ipRange);
    if (!containsNet(subnet, ipRange)) {
      throw invalid(`ip range ${rangeText} is not inside subnet ${subnetText}`, {
        ipRange: rangeText,
        subnet: subnetText,
      });
    }
    const start = maxIP(ipRange.ip, usable.start);
    const end = minIP(lastIP(ipRange), usable.end);
    if (compareIP(start, end) > 0) {
      throw invalid(`ip range ${rangeText} holds no usable address of subnet ${subnetText}`, {
        ipRange: rangeText,
        subnet: subnetText,
      });
    }
    range = { start, end };
  }

  return ipRange === undefined
    ? { subnet, gateway, range, family }
    : { subnet, gateway, range, family, ipRange };
}

const maxIP = (a: IPAddr, b: IPAddr): IPAddr => (compareIP(a, b) >= 0 ? a : b);
const minIP = (a: IPAddr, b: IPAddr): IPAddr => (compareIP(a, b) <= 0 ? a : b);
