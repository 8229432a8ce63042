/**
 * CNI results across spec versions, pure. weft builds one result in the newest shape (1.1.0)
 * and converts it to the version the network configuration asks for; it reads a `prevResult`
 * of any supported version back into that shape.
 *
 *   0.3.0, 0.3.1, 0.4.0  interfaces, ips (each with "version": "4" | "6"), routes, dns
 *   1.0.0                ips lose "version"
 *   1.1.0                interfaces may carry mtu, socketPath, pciID; routes mtu, advmss,
 *                        priority, table, scope
 * (0.1.0 and 0.2.0 had the older ip4/ip6 shape; weft does not speak them.)
 */
import { parseIP, parseIPNet } from '../../lib/ip.js';
import { CniCode, CniError } from './errors.js';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const LATEST: CniVersion = '1.1.0';

export interface CniInterface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}
export interface CniIPConfig {
  address: string;
  gateway?: string;
  interface?: number;
}
export interface CniRoute {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}
export interface CniDNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}
/** A result in the 1.1.0 shape, without cniVersion. */
export interface CniResult {
  interfaces: CniInterface[];
  ips: CniIPConfig[];
  routes: CniRoute[];
  dns: CniDNS;
}

export const isSupported = (v: unknown): v is CniVersion =>
  typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v);

/**
 * Compare two "x.y.z" versions numerically (a missing part counts as 0).
 * @throws CniError 6 when either is not a version.
 */
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    if (!/^\d+(\.\d+){0,2}$/.test(v))
      throw new CniError(CniCode.DecodingFailure, `"${v}" is not a CNI version`);
    const p = v.split('.').map(Number);
    return [p[0] ?? 0, p[1] ?? 0, p[2] ?? 0];
  };
  const x = parse(a);
  const y = parse(b);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  return 0;
}

const INTERFACE_11 = ['mtu', 'socketPath', 'pciID'] as const;
const ROUTE_11 = ['mtu', 'advmss', 'priority', 'table', 'scope'] as const;

/** The result as printed for `version` (a JSON-ready object with cniVersion first). */
export function encodeResult(r: CniResult, version: CniVersion): Record<string, unknown> {
  const v1 = compareVersions(version, '1.0.0') >= 0;
  const v11 = compareVersions(version, '1.1.0') >= 0;
  const interfaces = r.interfaces.map((i) => {
    const o: Record<string, unknown> = { name: i.name };
    if (i.mac !== undefined) o.mac = i.mac;
    if (v11) for (const k of INTERFACE_11) if (i[k] !== undefined) o[k] = i[k];
    if (i.sandbox !== undefined) o.sandbox = i.sandbox;
    return o;
  });
  const ips = r.ips.map((ip) => {
    const o: Record<string, unknown> = {};
    if (!v1) o.version = String(parseIPNet(ip.address).ip.family);
    if (ip.interface !== undefined) o.interface = ip.interface;
    o.address = ip.address;
    if (ip.gateway !== undefined) o.gateway = ip.gateway;
    return o;
  });
  const routes = r.routes.map((rt) => {
    const o: Record<string, unknown> = { dst: rt.dst };
    if (rt.gw !== undefined) o.gw = rt.gw;
    if (v11) for (const k of ROUTE_11) if (rt[k] !== undefined) o[k] = rt[k];
    return o;
  });
  const dns: Record<string, unknown> = {};
  for (const k of ['nameservers', 'domain', 'search', 'options'] as const) {
    const x = r.dns[k];
    if (x !== undefined && !(Array.isArray(x) && x.length === 0)) dns[k] = Array.isArray(x) ? [...x] : x;
  }
  return { cniVersion: version, interfaces, ips, routes, dns };
}

/**
 * Read a result (a prevResult) written for `version` into the 1.1.0 shape. Fields a version
 * does not have are dropped; unknown fields are ignored.
 * @throws CniError 6 (DecodingFailure) when it is not a well-formed result.
 */
export function decodeResult(raw: unknown, version: CniVersion): CniResult {
  const bad = (what: string): never => {
    throw new CniError(CniCode.DecodingFailure, `prevResult: ${what}`);
  };
  if (!isObject(raw)) bad('not an object');
  const o = raw as Record<string, unknown>;
  const v11 = compareVersions(version, '1.1.0') >= 0;
  const list = (k: string): Record<string, unknown>[] => {
    const x = o[k];
    if (x === undefined || x === null) return [];
    if (!Array.isArray(x) || !x.every(isObject)) bad(`"${k}" is not a list of objects`);
    return x as Record<string, unknown>[];
  };
  const str = (x: Record<string, unknown>, k: string, where: string): string | undefined => {
    const v = x[k];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') bad(`${where}.${k} is not a string`);
    return v as string;
  };
  const int = (x: Record<string, unknown>, k: string, where: string): number | undefined => {
    const v = x[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) bad(`${where}.${k} is not an integer`);
    return v as number;
  };
  const interfaces = list('interfaces').map((x, i) => {
    const where = `interfaces[${i}]`;
    const name = str(x, 'name', where) ?? bad(`${where} has no name`);
    const out: CniInterface = { name };
    const mac = str(x, 'mac', where);
    if (mac !== undefined) out.mac = mac;
    if (v11) {
      const mtu = int(x, 'mtu', where);
      if (mtu !== undefined) out.mtu = mtu;
      const sp = str(x, 'socketPath', where);
      if (sp !== undefined) out.socketPath = sp;
      const pci = str(x, 'pciID', where);
      if (pci !== undefined) out.pciID = pci;
    }
    const sandbox = str(x, 'sandbox', where);
    if (sandbox !== undefined) out.sandbox = sandbox;
    return out;
  });
  const ips = list('ips').map((x, i) => {
    const where = `ips[${i}]`;
    const address = str(x, 'address', where) ?? bad(`${where} has no address`);
    if (!validCidr(address)) bad(`${where}.address "${address}" is not an address with a prefix length`);
    const out: CniIPConfig = { address };
    const gateway = str(x, 'gateway', where);
    if (gateway !== undefined) {
      if (!validIP(gateway)) bad(`${where}.gateway "${gateway}" is not an address`);
      out.gateway = gateway;
    }
    const idx = int(x, 'interface', where);
    if (idx !== undefined) {
      if (idx < 0 || idx >= interfaces.length) bad(`${where}.interface ${idx} names no interface`);
      out.interface = idx;
    }
    return out;
  });
  const routes = list('routes').map((x, i) => {
    const where = `routes[${i}]`;
    const dst = str(x, 'dst', where) ?? bad(`${where} has no dst`);
    if (!validCidr(dst)) bad(`${where}.dst "${dst}" is not a prefix`);
    const out: CniRoute = { dst };
    const gw = str(x, 'gw', where);
    if (gw !== undefined) {
      if (!validIP(gw)) bad(`${where}.gw "${gw}" is not an address`);
      out.gw = gw;
    }
    if (v11) {
      for (const k of ROUTE_11) {
        const n = int(x, k, where);
        if (n !== undefined) out[k] = n;
      }
    }
    return out;
  });
  const dns: CniDNS = {};
  if (o.dns !== undefined && o.dns !== null) {
    if (!isObject(o.dns)) bad('"dns" is not an object');
    const d = o.dns as Record<string, unknown>;
    const strings = (k: string): string[] | undefined => {
      const v = d[k];
      if (v === undefined || v === null) return undefined;
      if (!Array.isArray(v) || !v.every((s) => typeof s === 'string'))
        bad(`dns.${k} is not a list of strings`);
      return (v as string[]).length > 0 ? [...(v as string[])] : undefined;
    };
    const ns = strings('nameservers');
    if (ns) dns.nameservers = ns;
    const domain = str(d, 'domain', 'dns');
    if (domain !== undefined) dns.domain = domain;
    const search = strings('search');
    if (search) dns.search = search;
    const options = strings('options');
    if (options) dns.options = options;
  }
  return { interfaces, ips, routes, dns };
}

/** Drop what `version` cannot carry (what a round trip through that version keeps). */
export function restrictTo(r: CniResult, version: CniVersion): CniResult {
  return decodeResult(JSON.parse(JSON.stringify(encodeResult(r, version))), version);
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
function validCidr(s: string): boolean {
  if (!s.includes('/')) return false;
  try {
    parseIPNet(s);
    return true;
  } catch {
    return false;
  }
}
function validIP(s: string): boolean {
  try {
    parseIP(s);
    return true;
  } catch {
    return false;
  }
}
