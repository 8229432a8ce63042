/**
 * The cluster configuration, stored once at `<prefix>/config` as JSON compatible with flannel's
 * (`Network`, `SubnetLen`, `SubnetMin`, `SubnetMax`, `Backend{Type, VNI, Port, DirectRouting}`),
 * with flannel's defaults and validation, so a store written by flannel is read by weft and the
 * other way round. Pure.
 *
 * flannel's rules: SubnetLen defaults to 24 when the network is /22 or larger, else to the
 * network's length + 2 (four subnets); the network must hold at least four subnets and be at
 * most a /28; SubnetMin defaults to the second subnet (the first would hold the network's own
 * address), SubnetMax to the last; both must lie in the network and on a subnet boundary.
 */
import { invalid } from '../../lib/errors.js';
import {
  addIP,
  compareIP,
  containsIP,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  lastIP,
  maskIP,
  parseCidr,
  parseIP,
} from '../../lib/ip.js';
import type { BackendConfig, BackendType } from '../../net/backends/types.js';

export const BACKEND_TYPES: readonly BackendType[] = ['vxlan', 'host-gw', 'udp'];
export const DEFAULT_PREFIX = '/weft/network';

export interface ClusterConfig {
  readonly network: IPNet;
  readonly subnetLen: number;
  readonly subnetMin: IPAddr;
  readonly subnetMax: IPAddr;
  readonly backend: BackendConfig;
}

export interface ClusterConfigInput {
  network: string;
  subnetLen?: number | undefined;
  subnetMin?: string | undefined;
  subnetMax?: string | undefined;
  backend?: string | undefined;
  vni?: number | undefined;
  port?: number | undefined;
  directRouting?: boolean | undefined;
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function intIn(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalid(`${what} must be an integer from ${min} to ${max}, not ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Validate and fill in defaults, flannel's way.
 * @throws WeftError INVALID naming the field that is wrong.
 */
export function makeClusterConfig(i: ClusterConfigInput): ClusterConfig {
  const network = parseCidr(i.network);
  if (network.ip.family !== 4) throw invalid(`the cluster network must be IPv4, not ${i.network}`);
  let subnetLen: number;
  if (i.subnetLen !== undefined) {
    subnetLen = intIn(i.subnetLen, 'SubnetLen', 1, 30);
    if (subnetLen < network.len + 2) {
      throw invalid(
        `SubnetLen /${subnetLen} leaves fewer than four subnets in ${formatIPNet(network)} (use /${network.len + 2} or longer)`,
      );
    }
  } else {
    if (network.len > 28)
      throw invalid(`network ${formatIPNet(network)} is too small: /28 is the smallest useful`);
    subnetLen = network.len <= 22 ? 24 : network.len + 2;
  }
  const size = 2 ** (32 - subnetLen);
  const bound = (v: string | undefined, what: string, dflt: IPAddr): IPAddr => {
    if (v === undefined) return dflt;
    const ip = parseIP(v);
    if (ip.family !== 4 || !containsIP(network, ip)) {
      throw invalid(`${what} ${v} is not in the network ${formatIPNet(network)}`);
    }
    if (compareIP(maskIP(ip, subnetLen), ip) !== 0) {
      throw invalid(`${what} ${v} is not on a /${subnetLen} boundary`);
    }
    return ip;
  };
  const subnetMin = bound(i.subnetMin, 'SubnetMin', addIP(network.ip, size));
  const subnetMax = bound(i.subnetMax, 'SubnetMax', maskIP(lastIP(network), subnetLen));
  if (compareIP(subnetMin, subnetMax) > 0) {
    throw invalid(`SubnetMin ${formatIP(subnetMin)} is after SubnetMax ${formatIP(subnetMax)}`);
  }
  const type = (i.backend ?? 'vxlan').toLowerCase();
  if (!BACKEND_TYPES.includes(type as BackendType)) {
    throw invalid(`unknown backend "${i.backend}" (choose one of ${BACKEND_TYPES.join(', ')})`);
  }
  const backend: BackendConfig = {
    type: type as BackendType,
    ...(i.vni !== undefined && { vni: intIn(i.vni, 'VNI', 1, 16_777_215) }),
    ...(i.port !== undefined && { port: intIn(i.port, 'Port', 1, 65_535) }),
    ...(i.directRouting !== undefined && { directRouting: i.directRouting }),
  };
  if (type !== 'vxlan' && (backend.vni !== undefined || backend.directRouting !== undefined)) {
    throw invalid(`VNI and DirectRouting are vxlan options, not ${type}'s`);
  }
  if (type === 'host-gw' && backend.port !== undefined) throw invalid('host-gw has no port');
  return { network, subnetLen, subnetMin, subnetMax, backend };
}

/**
 * Parse the stored JSON (flannel's field names; unknown fields are ignored as flannel does).
 * @throws WeftError INVALID when it is not JSON or a field is wrong.
 */
export function parseClusterConfig(text: string): ClusterConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw invalid('the cluster configuration is not valid JSON');
  }
  if (!isObj(raw) || typeof raw.Network !== 'string') {
    throw invalid('the cluster configuration has no "Network"');
  }
  const b = isObj(raw.Backend) ? raw.Backend : {};
  const opt = <T>(v: unknown, kind: string, what: string): T | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== kind) throw invalid(`${what} must be a ${kind}`);
    return v as T;
  };
  // flannel writes 0 / "" for "unset"
  const nz = (v: number | undefined) => (v === 0 ? undefined : v);
  const ns = (v: string | undefined) => (v === '' ? undefined : v);
  return makeClusterConfig({
    network: raw.Network,
    subnetLen: nz(opt<number>(raw.SubnetLen, 'number', 'SubnetLen')),
    subnetMin: ns(opt<string>(raw.SubnetMin, 'string', 'SubnetMin')),
    subnetMax: ns(opt<string>(raw.SubnetMax, 'string', 'SubnetMax')),
    backend: opt<string>(b.Type, 'string', 'Backend.Type') ?? 'udp', // flannel's default backend
    vni: nz(opt<number>(b.VNI, 'number', 'Backend.VNI')),
    port: nz(opt<number>(b.Port, 'number', 'Backend.Port')),
    directRouting: opt<boolean>(b.DirectRouting, 'boolean', 'Backend.DirectRouting'),
  });
}

/** The JSON to store: every field explicit (defaults filled in), flannel's names. */
export function renderClusterConfig(c: ClusterConfig): string {
  const backend: Record<string, unknown> = { Type: c.backend.type };
  if (c.backend.vni !== undefined) backend.VNI = c.backend.vni;
  if (c.backend.port !== undefined) backend.Port = c.backend.port;
  if (c.backend.directRouting !== undefined) backend.DirectRouting = c.backend.directRouting;
  return JSON.stringify({
    Network: formatIPNet(c.network),
    SubnetLen: c.subnetLen,
    SubnetMin: formatIP(c.subnetMin),
    SubnetMax: formatIP(c.subnetMax),
    Backend: backend,
  });
}

/** How many subnets the configuration can hand out. */
export const subnetCount = (c: ClusterConfig): number =>
  ((c.subnetMax.value as number) - (c.subnetMin.value as number)) / 2 ** (32 - c.subnetLen) + 1;

/** The i-th subnet from SubnetMin (0-based). */
export const nthSubnet = (c: ClusterConfig, i: number): IPNet => ({
  ip: addIP(c.subnetMin, i * 2 ** (32 - c.subnetLen)),
  len: c.subnetLen,
});
