/**
 * Leases as flannel stores them, and flannel's subnet.env. Pure.
 *
 * Key `<prefix>/subnets/10.244.3.0-24`, value `{"PublicIP": "192.168.1.5", "BackendType":
 * "vxlan", "BackendData": {"VNI": 1, "VtepMAC": "…"}}`; the TTL is the store's. subnet.env is
 * what flannel writes for its CNI plugin and other tools: FLANNEL_NETWORK, FLANNEL_SUBNET (the
 * first address of the host's subnet with its length), FLANNEL_MTU, FLANNEL_IPMASQ.
 */
import {
  addIP,
  compareIP,
  formatIP,
  formatIPNet,
  type IPNet,
  maskIP,
  networkOf,
  parseCidr,
  parseIPNet,
  tryParseIP,
} from '../../lib/ip.js';
import type { LeaseInfo } from '../../net/backends/types.js';
import type { KvEntry } from '../store/types.js';

export interface Lease extends LeaseInfo {
  /** ms since the epoch; absent: never expires. */
  readonly expiresAt?: number | undefined;
  /** The store revision of the lease's last write (for compare-and-swap renewals). */
  readonly modRevision: number;
}

export const configKey = (prefix: string): string => `${prefix}/config`;
export const subnetsPrefix = (prefix: string): string => `${prefix}/subnets/`;
export const leaseKey = (prefix: string, subnet: IPNet): string =>
  `${subnetsPrefix(prefix)}${formatIP(subnet.ip)}-${subnet.len}`;
export const subnetKey = (subnet: IPNet): string => formatIPNet(networkOf(subnet));

/** The subnet a lease key names; undefined for keys that are not lease keys. */
export function parseLeaseKey(prefix: string, key: string): IPNet | undefined {
  const p = subnetsPrefix(prefix);
  if (!key.startsWith(p)) return undefined;
  const m = /^(\d+\.\d+\.\d+\.\d+)-(\d{1,2})$/.exec(key.slice(p.length));
  if (!m) return undefined;
  try {
    return parseCidr(`${m[1]}/${m[2]}`);
  } catch {
    return undefined;
  }
}

export function renderLeaseValue(l: Pick<LeaseInfo, 'publicIp' | 'backendType' | 'backendData'>): string {
  return JSON.stringify({
    PublicIP: formatIP(l.publicIp),
    BackendType: l.backendType,
    BackendData: l.backendData ?? null,
  });
}

/** A stored lease, or undefined when key or value is not one (foreign or corrupt: skipped). */
export function parseLease(
  prefix: string,
  e: Pick<KvEntry, 'key' | 'value' | 'modRevision' | 'expiresAt'>,
): Lease | undefined {
  const subnet = parseLeaseKey(prefix, e.key);
  if (!subnet) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(e.value);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const publicIp = typeof o.PublicIP === 'string' ? tryParseIP(o.PublicIP) : undefined;
  if (publicIp?.family !== 4) return undefined;
  return {
    subnet,
    publicIp,
    backendType: typeof o.BackendType === 'string' ? o.BackendType : '',
    backendData: o.BackendData ?? null,
    modRevision: e.modRevision,
    ...(e.expiresAt !== undefined && { expiresAt: e.expiresAt }),
  };
}

export interface SubnetEnv {
  readonly network: IPNet;
  /** The host's subnet (network form). */
  readonly subnet: IPNet;
  readonly mtu: number;
  readonly ipMasq: boolean;
}

export function renderSubnetEnv(s: SubnetEnv): string {
  const first = addIP(networkOf(s.subnet).ip, 1);
  return [
    `FLANNEL_NETWORK=${formatIPNet(networkOf(s.network))}`,
    `FLANNEL_SUBNET=${formatIP(first)}/${s.subnet.len}`,
    `FLANNEL_MTU=${s.mtu}`,
    `FLANNEL_IPMASQ=${s.ipMasq}`,
    '',
  ].join('\n');
}

/** What a previous subnet.env says (missing or malformed lines are left out; never throws). */
export function parseSubnetEnv(text: string): Partial<SubnetEnv> {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z_0-9]+)=(.*?)\s*$/.exec(line);
    if (m) vars.set(m[1]!, m[2]!);
  }
  const net = (k: string): IPNet | undefined => {
    const v = vars.get(k);
    if (v === undefined) return undefined;
    try {
      const n = parseIPNet(v);
      return n.ip.family === 4 ? networkOf(n) : undefined;
    } catch {
      return undefined;
    }
  };
  const out: { network?: IPNet; subnet?: IPNet; mtu?: number; ipMasq?: boolean } = {};
  const network = net('FLANNEL_NETWORK');
  if (network) out.network = network;
  const subnet = net('FLANNEL_SUBNET');
  if (subnet) out.subnet = subnet;
  const mtu = Number(vars.get('FLANNEL_MTU'));
  if (Number.isInteger(mtu) && mtu > 0) out.mtu = mtu;
  const masq = vars.get('FLANNEL_IPMASQ');
  if (masq === 'true' || masq === 'false') out.ipMasq = masq === 'true';
  return out;
}

/** Same subnet (network form compared). */
export const sameSubnet = (a: IPNet, b: IPNet): boolean =>
  a.len === b.len && compareIP(maskIP(a.ip, a.len), maskIP(b.ip, b.len)) === 0;
