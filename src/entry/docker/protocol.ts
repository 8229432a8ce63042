/**
 * Docker's plugin protocol, the parts that are pure: the shapes of the requests and answers of
 * the remote `NetworkDriver` and `IpamDriver` APIs (libnetwork's `drivers/remote/api` and
 * `ipams/remote/api`), checking a request body before anything changes, and the conversions
 * between Docker's values and weft's (network and interface names, port bindings, driver
 * options).
 *
 * Every call is an HTTP POST of a JSON object to `/<Interface>.<Method>` on the plugin's unix
 * socket; the answer is JSON with the content type below. A failure is an HTTP error status with
 * `{"Err": message}` for the network driver and `{"Error": message}` for IPAM (Docker's plugin
 * client reads `Err` from any non-200 answer, the IPAM client reads `Error`, so IPAM failures
 * carry both).
 *
 * Port bindings reach a remote driver as options (`com.docker.network.portmap`) in
 * CreateEndpoint, Join and ProgramExternalConnectivity: Docker publishes nothing itself for
 * remote drivers. A binding is `{Proto: 6|17, IP, Port, HostIP, HostPort, HostPortEnd}`;
 * HostPort 0 means "any free port", HostPort..HostPortEnd "any one of these".
 */
import { createHash } from 'node:crypto';
import type { PortRecord } from '../../control/state.js';
import { invalid } from '../../lib/errors.js';
import { formatIP, parseIP, tryParseIP } from '../../lib/ip.js';

export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1+json';
export const DEFAULT_PLUGIN_SOCKET = '/run/docker/plugins/weft.sock';
export const LOCAL_ADDRESS_SPACE = 'weft-local';
export const GLOBAL_ADDRESS_SPACE = 'weft-global';

/** Option keys Docker uses (libnetwork's netlabel). */
export const Label = {
  generic: 'com.docker.network.generic',
  enableIPv6: 'com.docker.network.enable_ipv6',
  internal: 'com.docker.network.internal',
  portMap: 'com.docker.network.portmap',
  exposedPorts: 'com.docker.network.endpoint.exposedports',
  macAddress: 'com.docker.network.endpoint.macaddress',
  requestAddressType: 'RequestAddressType',
  gatewayAddress: 'com.docker.network.gateway',
} as const;

// ---- request shapes (what Docker sends) ------------------------------------------------------

export interface IPAMData {
  readonly AddressSpace?: string;
  readonly Pool: string;
  readonly Gateway?: string;
  readonly AuxAddresses?: Record<string, string>;
}
export interface CreateNetworkRequest {
  readonly NetworkID: string;
  readonly Options: Record<string, unknown>;
  readonly IPv4Data: IPAMData[];
  readonly IPv6Data: IPAMData[];
}
export interface EndpointInterface {
  readonly Address?: string;
  readonly AddressIPv6?: string;
  readonly MacAddress?: string;
}
export interface CreateEndpointRequest {
  readonly NetworkID: string;
  readonly EndpointID: string;
  readonly Interface: EndpointInterface;
  readonly Options: Record<string, unknown>;
}
/** DeleteNetwork, DeleteEndpoint, EndpointOperInfo, Leave, Revoke: ids only. */
export interface EndpointRef {
  readonly NetworkID: string;
  readonly EndpointID: string;
}
export interface JoinRequest extends EndpointRef {
  readonly SandboxKey?: string;
  readonly Options: Record<string, unknown>;
}
export interface ProgramRequest extends EndpointRef {
  readonly Options: Record<string, unknown>;
}
export interface RequestPoolRequest {
  readonly AddressSpace: string;
  readonly Pool: string;
  readonly SubPool: string;
  readonly Options: Record<string, string>;
  readonly V6: boolean;
}
export interface RequestAddressRequest {
  readonly PoolID: string;
  readonly Address: string;
  readonly Options: Record<string, string>;
}
export interface ReleaseAddressRequest {
  readonly PoolID: string;
  readonly Address: string;
}

/** A port binding as Docker's JSON has it (types.PortBinding). */
export interface DockerPortBinding {
  readonly Proto: number;
  readonly IP?: string;
  readonly Port: number;
  readonly HostIP?: string;
  readonly HostPort?: number;
  readonly HostPortEnd?: number;
}

// ---- body checks ------------------------------------------------------------------------------

type Body = Record<string, unknown>;

/** The request body as an object; an empty body or `null` is an empty object (no-argument calls). */
export function bodyObject(b: unknown): Body {
  if (b === undefined || b === null) return {};
  if (typeof b !== 'object' || Array.isArray(b)) throw invalid('the request body must be a JSON object');
  return b as Body;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** A required id field (NetworkID, EndpointID, PoolID is checked separately). Throws INVALID. */
export function idField(b: Body, key: string): string {
  const v = b[key];
  if (typeof v !== 'string' || v === '') throw invalid(`${key} is missing`, { field: key });
  if (!ID_RE.test(v)) throw invalid(`${key} "${v}" is not an id (1-128 of [A-Za-z0-9_.-])`, { field: key });
  return v;
}

/** An optional string field ("" when absent). Throws INVALID when present but not a string. */
export function strField(b: Body, key: string): string {
  const v = b[key];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw invalid(`${key} must be a string`, { field: key });
  return v;
}

/** An optional object field ({} when absent). Throws INVALID when present but not an object. */
export function objField(b: Body, key: string): Body {
  const v = b[key];
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid(`${key} must be an object`, { field: key });
  return v as Body;
}

/** An optional string→string map (IPAM options). Throws INVALID for other values. */
export function stringMap(b: Body, key: string): Record<string, string> {
  const o = objField(b, key);
  for (const [k, v] of Object.entries(o)) {
    if (typeof v !== 'string') throw invalid(`${key}.${k} must be a string`, { field: `${key}.${k}` });
  }
  return o as Record<string, string>;
}

function ipamData(v: unknown, key: string): IPAMData[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalid(`${key} must be an array`, { field: key });
  return v.map((d, i) => {
    const o = bodyObject(d);
    const pool = strField(o, 'Pool');
    if (pool === '') throw invalid(`${key}[${i}].Pool is missing`, { field: key });
    return {
      Pool: pool,
      AddressSpace: strField(o, 'AddressSpace'),
      Gateway: strField(o, 'Gateway'),
    };
  });
}

export function parseCreateNetwork(b: unknown): CreateNetworkRequest {
  const o = bodyObject(b);
  return {
    NetworkID: idField(o, 'NetworkID'),
    Options: objField(o, 'Options'),
    IPv4Data: ipamData(o.IPv4Data, 'IPv4Data'),
    IPv6Data: ipamData(o.IPv6Data, 'IPv6Data'),
  };
}

export function parseNetworkRef(b: unknown): { NetworkID: string } {
  return { NetworkID: idField(bodyObject(b), 'NetworkID') };
}

export function parseEndpointRef(b: unknown): EndpointRef {
  const o = bodyObject(b);
  return { NetworkID: idField(o, 'NetworkID'), EndpointID: idField(o, 'EndpointID') };
}

export function parseCreateEndpoint(b: unknown): CreateEndpointRequest {
  const o = bodyObject(b);
  const i = objField(o, 'Interface');
  return {
    ...parseEndpointRef(o),
    Interface: {
      Address: strField(i, 'Address'),
      AddressIPv6: strField(i, 'AddressIPv6'),
      MacAddress: strField(i, 'MacAddress'),
    },
    Options: objField(o, 'Options'),
  };
}

export function parseJoin(b: unknown): JoinRequest {
  const o = bodyObject(b);
  return { ...parseEndpointRef(o), SandboxKey: strField(o, 'SandboxKey'), Options: objField(o, 'Options') };
}

export function parseProgram(b: unknown): ProgramRequest {
  const o = bodyObject(b);
  return { ...parseEndpointRef(o), Options: objField(o, 'Options') };
}

export function parseRequestPool(b: unknown): RequestPoolRequest {
  const o = bodyObject(b);
  const v6 = o.V6;
  if (v6 !== undefined && v6 !== null && typeof v6 !== 'boolean') throw invalid('V6 must be a boolean');
  return {
    AddressSpace: strField(o, 'AddressSpace'),
    Pool: strField(o, 'Pool'),
    SubPool: strField(o, 'SubPool'),
    Options: stringMap(o, 'Options'),
    V6: v6 === true,
  };
}

function poolIdField(o: Body): string {
  const id = strField(o, 'PoolID');
  if (id === '') throw invalid('PoolID is missing', { field: 'PoolID' });
  return id;
}

export function parseRequestAddress(b: unknown): RequestAddressRequest {
  const o = bodyObject(b);
  return { PoolID: poolIdField(o), Address: strField(o, 'Address'), Options: stringMap(o, 'Options') };
}

export function parseReleaseAddress(b: unknown): ReleaseAddressRequest {
  const o = bodyObject(b);
  const address = strField(o, 'Address');
  if (address === '') throw invalid('Address is missing', { field: 'Address' });
  return { PoolID: poolIdField(o), Address: address };
}

export function parsePoolRef(b: unknown): { PoolID: string } {
  return { PoolID: poolIdField(bodyObject(b)) };
}

// ---- names ------------------------------------------------------------------------------------

/** The weft network that stands for a Docker network: `d-` and the first 12 characters of its id. */
export const networkName = (networkId: string): string => `d-${networkId.slice(0, 12)}`;

/**
 * The temporary name of the container end of an endpoint's veth, made in the daemon's namespace
 * for Docker to move and rename (`wd` + 10 hex of the endpoint id; a hash when the id is not hex).
 */
export function endpointIfname(endpointId: string): string {
  const hex = /^[0-9a-f]{10}/.test(endpointId)
    ? endpointId.slice(0, 10)
    : createHash('sha256').update(endpointId).digest('hex').slice(0, 10);
  return `wd${hex}`;
}

/** "10.1.2.3/24" or "10.1.2.3" → "10.1.2.3" (canonical). Throws INVALID naming `what`. */
export function addressOnly(text: string, what: string): string {
  const ip = tryParseIP(text.split('/')[0] ?? '');
  if (ip === undefined) throw invalid(`${what} "${text}" is not an IP address`, { [what]: text });
  return formatIP(ip);
}

// ---- port bindings ------------------------------------------------------------------------------

const PROTO: Record<number, 'tcp' | 'udp'> = { 6: 'tcp', 17: 'udp' };
const PROTO_NUMBER = { tcp: 6, udp: 17 } as const;
/** Where a binding without a host port gets one (Docker's dynamic range). */
export const EPHEMERAL_PORTS = { start: 49153, end: 60999 } as const;

/** A binding in weft's terms: hostPort..hostPortEnd is the range to choose one port from. */
export interface WantedPort {
  readonly proto: 'tcp' | 'udp';
  readonly hostIp?: string;
  readonly containerPort: number;
  readonly hostPort: number;
  readonly hostPortEnd: number;
}

function portNumber(v: unknown, what: string, allowZero: boolean): number {
  if (v === undefined || v === null) {
    if (allowZero) return 0;
    throw invalid(`${what} is missing`);
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535)
    throw invalid(`${what} ${JSON.stringify(v)} is not a port number`);
  return v;
}

/**
 * The port bindings in a request's options (`com.docker.network.portmap`), as weft wants them.
 * HostIP "" or 0.0.0.0 means every address; a "::" binding next to an every-address binding of
 * the same port is the same publication (weft publishes on both families). Throws INVALID for a
 * malformed binding (unknown protocol, port out of range, backwards range, bad address).
 */
export function wantedPorts(options: Record<string, unknown>): WantedPort[] {
  const raw = options[Label.portMap];
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalid(`${Label.portMap} must be an array of port bindings`);
  const out: WantedPort[] = [];
  for (const [i, x] of raw.entries()) {
    const b = bodyObject(x);
    const where = `${Label.portMap}[${i}]`;
    const proto = PROTO[b.Proto as number];
    if (proto === undefined) throw invalid(`${where}: protocol ${JSON.stringify(b.Proto)} is not 6 or 17`);
    const containerPort = portNumber(b.Port, `${where}.Port`, false);
    const hostPort = portNumber(b.HostPort, `${where}.HostPort`, true);
    const end = portNumber(b.HostPortEnd, `${where}.HostPortEnd`, true);
    const hostPortEnd = end === 0 ? hostPort : end;
    if (hostPortEnd < hostPort) throw invalid(`${where}: host port range ${hostPort}-${end} runs backwards`);
    const hostIpText = typeof b.HostIP === 'string' ? b.HostIP : '';
    const hostIp = hostIpText === '' ? undefined : formatIP(parseIP(hostIpText));
    const w: WantedPort = {
      proto,
      ...(hostIp !== undefined && hostIp !== '0.0.0.0' && { hostIp }),
      containerPort,
      hostPort,
      hostPortEnd,
    };
    const same = (a: WantedPort, c: WantedPort) =>
      a.proto === c.proto &&
      a.containerPort === c.containerPort &&
      a.hostPort === c.hostPort &&
      a.hostPortEnd === c.hostPortEnd;
    if (w.hostIp === '::' && out.some((o) => same(o, w) && o.hostIp === undefined)) continue;
    if (w.hostIp === undefined) {
      const v6 = out.findIndex((o) => same(o, w) && o.hostIp === '::');
      if (v6 >= 0) out.splice(v6, 1);
    }
    if (out.some((o) => same(o, w) && o.hostIp === w.hostIp)) continue;
    out.push(w);
  }
  return out;
}

/** True when the published `p` satisfies the binding `w` (any port of its range). */
export function portSatisfies(p: PortRecord, w: WantedPort): boolean {
  return (
    p.proto === w.proto &&
    p.containerPort === w.containerPort &&
    p.containerPortEnd === undefined &&
    p.hostPortEnd === undefined &&
    (p.hostIp ?? undefined) === w.hostIp &&
    (w.hostPort === 0
      ? p.hostPort >= EPHEMERAL_PORTS.start && p.hostPort <= EPHEMERAL_PORTS.end
      : p.hostPort >= w.hostPort && p.hostPort <= w.hostPortEnd)
  );
}

/** A published port in `weft run -p` syntax. */
export function portSpec(p: {
  proto: string;
  hostIp?: string;
  hostPort: number;
  containerPort: number;
}): string {
  const ip = p.hostIp === undefined ? '' : p.hostIp.includes(':') ? `[${p.hostIp}]:` : `${p.hostIp}:`;
  return `${ip}${p.hostPort}:${p.containerPort}/${p.proto}`;
}

/** Published ports back in Docker's shape (EndpointOperInfo). */
export function toPortBindings(ports: readonly PortRecord[], containerIp?: string): DockerPortBinding[] {
  return ports.flatMap((p) => {
    const n = (p.hostPortEnd ?? p.hostPort) - p.hostPort;
    return Array.from({ length: n + 1 }, (_, i) => ({
      Proto: PROTO_NUMBER[p.proto],
      IP: containerIp ?? '',
      Port: p.containerPort + i,
      HostIP: p.hostIp ?? '',
      HostPort: p.hostPort + i,
      HostPortEnd: p.hostPort + i,
    }));
  });
}

// ---- network options ---------------------------------------------------------------------------

/** Driver options (`docker network create -o`) weft understands, by Docker's and weft's names. */
const GENERIC_OPTIONS: Record<string, 'mtu' | 'icc' | 'masquerade'> = {
  mtu: 'mtu',
  'com.docker.network.driver.mtu': 'mtu',
  icc: 'icc',
  'com.docker.network.bridge.enable_icc': 'icc',
  masquerade: 'masquerade',
  'com.docker.network.bridge.enable_ip_masquerade': 'masquerade',
};

/**
 * The weft network request for a Docker CreateNetwork: a bridge network named after the id,
 * with Docker's pools and gateways as subnets and the driver options that map.
 * Throws INVALID for an unknown driver option, a malformed pool or gateway.
 */
export function weftNetworkRequest(req: CreateNetworkRequest): {
  name: string;
  driver: 'bridge';
  subnets: { subnet: string; gateway?: string }[];
  ipv6: boolean;
  internal: boolean;
  options: Record<string, string>;
} {
  const generic = req.Options[Label.generic];
  const options: Record<string, string> = {};
  if (generic !== undefined && generic !== null) {
    if (typeof generic !== 'object' || Array.isArray(generic))
      throw invalid(`${Label.generic} must be an object`);
    for (const [k, v] of Object.entries(generic as Record<string, unknown>)) {
      const key = GENERIC_OPTIONS[k];
      if (key === undefined) {
        throw invalid(
          `driver option "${k}" is not known to weft (known: ${Object.keys(GENERIC_OPTIONS).join(', ')})`,
          { option: k },
        );
      }
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean')
        throw invalid(`driver option "${k}" must be a string`, { option: k });
      options[key] = String(v);
    }
  }
  const subnets = [...req.IPv4Data, ...req.IPv6Data].map((d) => ({
    subnet: d.Pool,
    ...(d.Gateway ? { gateway: addressOnly(d.Gateway, 'Gateway') } : {}),
  }));
  const flag = (k: string) => req.Options[k] === true || req.Options[k] === 'true';
  return {
    name: networkName(req.NetworkID),
    driver: 'bridge',
    subnets,
    ipv6: req.IPv6Data.length > 0,
    internal: flag(Label.internal),
    options,
  };
}
