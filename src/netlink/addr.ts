/**
 * Interface addresses and their rtnetlink codec: struct ifaddrmsg followed by IFA_* attributes.
 *
 * Two attributes carry addresses and their meaning differs by family (iproute2's reading, which
 * the kernel follows): IFA_LOCAL is the interface's own address, IFA_ADDRESS the peer of a
 * point-to-point address or else the same address again. IPv4 dumps always carry both; IPv6
 * dumps carry only IFA_ADDRESS unless there is a peer. A decoded `Addr` therefore takes its own
 * address from IFA_LOCAL when present, else IFA_ADDRESS, and reports a peer only when the two
 * differ. The 8-bit `ifa_flags` of the header cannot hold IFA_F_NOPREFIXROUTE and later flags:
 * those travel in IFA_FLAGS (u32), which wins when present.
 */
import { invalid } from '../lib/errors.js';
import { bitsOf, type Family, type IPAddr, type IPNet, ipEqual } from '../lib/ip.js';
import { type Attr, type Attrs, a, LITTLE_ENDIAN } from './attr.js';
import { AF, IFA, RT_SCOPE } from './consts.js';
import type { Body, IfAddrMsg } from './message.js';

/** Lifetime value meaning "forever" (INFINITY_LIFE_TIME). */
export const LIFETIME_FOREVER = 0xffffffff;

/** An address of an interface, as read back from the kernel. */
export interface Addr {
  /** Index of the interface the address is on. */
  readonly index: number;
  readonly family: Family;
  /** The interface's own address and its prefix length (host bits set: 10.0.0.1/24). */
  readonly ipnet: IPNet;
  /** RT_SCOPE_* (0 universe, 253 link, 254 host). */
  readonly scope: number;
  /** IFA_F_* flags (all 32 bits from IFA_FLAGS when the kernel sends it). */
  readonly flags: number;
  /** IPv4 label (`eth0`, `eth0:1`); IPv6 addresses have none. */
  readonly label: string | undefined;
  readonly broadcast: IPAddr | undefined;
  /** IFA_LOCAL as the kernel sent it (IPv4 always; IPv6 only with a peer). */
  readonly local: IPAddr | undefined;
  /** The other end of a point-to-point address (IFA_ADDRESS when it differs from IFA_LOCAL). */
  readonly peer: IPAddr | undefined;
  /** Seconds left from IFA_CACHEINFO; LIFETIME_FOREVER for a permanent address. */
  readonly preferredLft: number | undefined;
  readonly validLft: number | undefined;
}

/** What an RTM_NEWADDR (or the key of an RTM_DELADDR) carries. Indexes, not names. */
export interface NewAddr {
  readonly index: number;
  /** Own address and prefix length; the family follows the address. */
  readonly ipnet: IPNet;
  readonly peer?: IPAddr;
  readonly broadcast?: IPAddr;
  readonly label?: string;
  /** RT_SCOPE_*; default universe. */
  readonly scope?: number;
  /** IFA_F_* flags. */
  readonly flags?: number;
  /** Lifetimes in seconds (IFA_CACHEINFO); one given alone makes the other forever. */
  readonly preferredLft?: number;
  readonly validLft?: number;
}

/** AF_INET / AF_INET6 for an address family. */
export const afOf = (f: Family): number => (f === 4 ? AF.INET : AF.INET6);

/** The family of an AF_* value, or undefined for anything but AF_INET / AF_INET6. */
export const familyOfAf = (af: number): Family | undefined =>
  af === AF.INET ? 4 : af === AF.INET6 ? 6 : undefined;

const CACHEINFO_SIZE = 16; // struct ifa_cacheinfo: prefered, valid, cstamp, tstamp (u32 each)

function cacheinfo(preferred: number, valid: number): Uint8Array {
  const b = new Uint8Array(CACHEINFO_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, preferred >>> 0, LITTLE_ENDIAN);
  dv.setUint32(4, valid >>> 0, LITTLE_ENDIAN);
  return b;
}

/** The body of an RTM_NEWADDR request (also the key of an RTM_DELADDR: index and ipnet suffice). */
export function encodeNewAddr(spec: NewAddr): Body<IfAddrMsg> {
  const { ip, len } = spec.ipnet;
  if (!Number.isInteger(len) || len < 0 || len > bitsOf(ip.family)) {
    throw invalid(`prefix length ${len} is out of range for IPv${ip.family}`);
  }
  for (const [what, other] of [
    ['peer', spec.peer],
    ['broadcast', spec.broadcast],
  ] as const) {
    if (other !== undefined && other.family !== ip.family) {
      throw invalid(`${what} address of family IPv${other.family} on an IPv${ip.family} address`);
    }
  }
  const flags = spec.flags ?? 0;
  const attrs: Attr[] = [a.ip(IFA.LOCAL, ip), a.ip(IFA.ADDRESS, spec.peer ?? ip)];
  if (spec.broadcast !== undefined) attrs.push(a.ip(IFA.BROADCAST, spec.broadcast));
  if (spec.label !== undefined) attrs.push(a.str(IFA.LABEL, spec.label));
  if (flags !== 0) attrs.push(a.u32(IFA.FLAGS, flags));
  if (spec.preferredLft !== undefined || spec.validLft !== undefined) {
    const valid = spec.validLft ?? LIFETIME_FOREVER;
    attrs.push(a.bytes(IFA.CACHEINFO, cacheinfo(spec.preferredLft ?? valid, valid)));
  }
  return {
    header: {
      family: afOf(ip.family),
      prefixlen: len,
      flags: flags & 0xff,
      scope: spec.scope ?? RT_SCOPE.UNIVERSE,
      index: spec.index,
    },
    attrs,
  };
}

/** The body of an RTM_GETADDR dump request (all families when `family` is undefined). */
export function addrDumpRequest(family?: Family): Body<IfAddrMsg> {
  return {
    header: {
      family: family === undefined ? AF.UNSPEC : afOf(family),
      prefixlen: 0,
      flags: 0,
      scope: 0,
      index: 0,
    },
    attrs: [],
  };
}

/** Decode an RTM_NEWADDR message (dump entry or notification). INVALID for non-IP families. */
export function decodeAddr(header: IfAddrMsg, attrs: Attrs): Addr {
  const family = familyOfAf(header.family);
  if (family === undefined) throw invalid(`address of family ${header.family} is not IPv4 or IPv6`);
  const local = attrs.ip(IFA.LOCAL);
  const address = attrs.ip(IFA.ADDRESS);
  const own = local ?? address;
  if (own === undefined) throw invalid('address message without IFA_LOCAL or IFA_ADDRESS');
  if (own.family !== family) throw invalid(`IPv${own.family} address in an IPv${family} message`);
  const peer = local !== undefined && address !== undefined && !ipEqual(local, address) ? address : undefined;
  const ci = attrs.get(IFA.CACHEINFO);
  let preferredLft: number | undefined;
  let validLft: number | undefined;
  if (ci !== undefined && ci.length >= 8) {
    const dv = new DataView(ci.buffer, ci.byteOffset, ci.length);
    preferredLft = dv.getUint32(0, LITTLE_ENDIAN);
    validLft = dv.getUint32(4, LITTLE_ENDIAN);
  }
  return {
    index: header.index,
    family,
    ipnet: { ip: own, len: header.prefixlen },
    scope: header.scope,
    flags: attrs.u32(IFA.FLAGS) ?? header.flags,
    label: attrs.str(IFA.LABEL),
    broadcast: attrs.ip(IFA.BROADCAST),
    local,
    peer,
    preferredLft,
    validLft,
  };
}
