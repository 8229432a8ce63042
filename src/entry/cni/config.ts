/**
 * What a runtime hands a CNI plugin, parsed and validated before anything is asked of the daemon:
 * the environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH), the
 * network configuration on stdin (with runtimeConfig for the declared capabilities, prevResult,
 * and for GC cni.dev/valid-attachments) and CNI_ARGS (`IgnoreUnknown=1;IP=…;MAC=…`). Pure.
 *
 * weft's configuration: `{"cniVersion", "name", "type": "weft", "network"?, "ipMasq"?, "mtu"?,
 * "socket"?, "dataDir"?, "capabilities": {portMappings, ips, mac, dns, aliases}}`. `network` is a
 * weft network (default: the daemon's default network); `ipMasq` and `mtu` must agree with it
 * (weft networks carry those settings); `socket` is the daemon's API socket.
 */
import { parseIPNet } from '../../lib/ip.js';
import { checkIfName } from '../../lib/names.js';
import { CniCode, CniError, type Command } from './errors.js';
import {
  type CniResult,
  type CniVersion,
  decodeResult,
  isSupported,
  LATEST,
  SUPPORTED_VERSIONS,
} from './result.js';

export const COMMANDS: readonly Command[] = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'];

export interface CniEnv {
  readonly command: Command;
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  readonly args: string;
  readonly path: string;
}

/** Which variables each command needs (as libcni's skel asks; CNI_NETNS is optional for DEL). */
const REQUIRED: Record<Command, readonly string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH'],
  STATUS: [],
  GC: [],
  VERSION: [],
};

const CONTAINER_ID_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const NETWORK_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/**
 * Read the CNI_* variables.
 * @throws CniError 4 (a missing or invalid variable, naming it)
 */
export function parseEnv(env: Readonly<Record<string, string | undefined>>): CniEnv {
  const command = env.CNI_COMMAND ?? '';
  if (command === '')
    throw new CniError(CniCode.InvalidEnvironment, 'required env variables [CNI_COMMAND] missing');
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new CniError(CniCode.InvalidEnvironment, `unknown CNI_COMMAND: ${command}`, COMMANDS.join(', '));
  }
  const cmd = command as Command;
  const missing = REQUIRED[cmd].filter((k) => (env[k] ?? '') === '');
  if (missing.length > 0) {
    throw new CniError(CniCode.InvalidEnvironment, `required env variables [${missing.join(',')}] missing`);
  }
  const containerId = env.CNI_CONTAINERID ?? '';
  const ifname = env.CNI_IFNAME ?? '';
  if (cmd === 'ADD' || cmd === 'DEL' || cmd === 'CHECK') {
    // weft's daemon keys attachments by ids of up to 128 characters.
    if (!CONTAINER_ID_RE.test(containerId) || containerId.length > 128) {
      throw new CniError(
        CniCode.InvalidEnvironment,
        'invalid CNI_CONTAINERID: use 1-128 of [a-zA-Z0-9_.-], starting with a letter or digit',
        containerId,
      );
    }
    try {
      checkIfName(ifname, 'CNI_IFNAME');
    } catch (e) {
      throw new CniError(CniCode.InvalidEnvironment, (e as Error).message, ifname);
    }
  }
  return {
    command: cmd,
    containerId,
    netns: env.CNI_NETNS ?? '',
    ifname,
    args: env.CNI_ARGS ?? '',
    path: env.CNI_PATH ?? '',
  };
}

export interface Attachment {
  readonly containerID: string;
  readonly ifname: string;
}

export interface RuntimeConfig {
  /** Published ports in weft's `[HOSTIP:]HOSTPORT:CONTAINERPORT/PROTO` syntax. */
  readonly ports: string[];
  /** Wanted addresses (bare, one per family at most). */
  readonly ips: string[];
  readonly mac?: string;
  readonly aliases: string[];
  readonly dns?: { servers?: string[]; searches?: string[]; options?: string[] };
}

export interface NetConf {
  readonly cniVersion: CniVersion;
  /** The CNI network name (the runtime's key, with the container id and interface name). */
  readonly name: string;
  readonly type: string;
  /** The weft network; undefined: the daemon's default. */
  readonly network?: string;
  readonly ipMasq?: boolean;
  readonly mtu?: number;
  readonly socket?: string;
  readonly dataDir?: string;
  readonly runtime: RuntimeConfig;
  /** `args.cni` (the "args in network config" convention): ips and mac. */
  readonly argsIps: string[];
  readonly argsMac?: string;
  readonly prevResult?: CniResult;
  /** GC: the attachments the runtime still knows. */
  readonly validAttachments?: Attachment[];
}

/** The cniVersion to answer errors with, read leniently from whatever came on stdin. */
export function versionOf(stdin: string): string {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' && v !== '' ? v : LATEST;
  } catch {
    return LATEST;
  }
}

/**
 * Parse the network configuration from stdin. DEL reads only the fields it uses (see delConfig).
 * @throws CniError 6 (not JSON, a malformed prevResult), 1 (a cniVersion weft does not speak),
 *   7 (a missing name, a field of the wrong type or out of range), 2 (a field weft does not
 *   support: `ipam`)
 */
export function parseConfig(stdin: string, command: Command): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(
      CniCode.DecodingFailure,
      `error unmarshalling network config: ${(e as Error).message}`,
    );
  }
  if (!isObject(raw)) throw new CniError(CniCode.DecodingFailure, 'the network config is not a JSON object');
  const version = raw.cniVersion ?? '0.1.0';
  if (!isSupported(version)) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      'incompatible CNI versions',
      `config is ${JSON.stringify(version)}, plugin supports [${SUPPORTED_VERSIONS.map((v) => `"${v}"`).join(' ')}]`,
    );
  }
  const bad = (msg: string, details = ''): never => {
    throw new CniError(CniCode.InvalidConfig, msg, details);
  };
  const name = raw.name;
  if (typeof name !== 'string' || name === '') bad('missing network name');
  if (!NETWORK_NAME_RE.test(name as string)) bad(`invalid network name "${String(name)}"`);
  const optString = (k: string): string | undefined => {
    const v = raw[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v === '') bad(`"${k}" must be a non-empty string`, JSON.stringify(v));
    return v as string;
  };
  const socket = optString('socket');
  if (socket !== undefined && !socket.startsWith('/'))
    bad(`"socket" must be an absolute path, not "${socket}"`);
  const dataDir = optString('dataDir');
  if (dataDir !== undefined && !dataDir.startsWith('/'))
    bad(`"dataDir" must be an absolute path, not "${dataDir}"`);
  if (command === 'DEL') return delConfig(raw, version, name as string, socket, dataDir);
  if (raw.ipam !== undefined) {
    throw new CniError(
      CniCode.UnsupportedField,
      `unsupported field "ipam": ${JSON.stringify(raw.ipam)}`,
      'weft allocates addresses itself, from the subnets of the weft network',
    );
  }
  const network = optString('network');
  let ipMasq: boolean | undefined;
  if (raw.ipMasq !== undefined) {
    if (typeof raw.ipMasq !== 'boolean') bad('"ipMasq" must be true or false', JSON.stringify(raw.ipMasq));
    ipMasq = raw.ipMasq as boolean;
  }
  let mtu: number | undefined;
  if (raw.mtu !== undefined) {
    const m = raw.mtu;
    if (typeof m !== 'number' || !Number.isInteger(m) || m < 576 || m > 65535)
      bad('"mtu" must be an integer from 576 to 65535', JSON.stringify(m));
    mtu = m as number;
  }
  const runtime = parseRuntimeConfig(raw.runtimeConfig, name as string);
  const cniArgs = isObject(raw.args) && isObject(raw.args.cni) ? raw.args.cni : {};
  const argsIps = cniArgs.ips === undefined ? [] : stringList(cniArgs.ips, 'args.cni.ips');
  const argsMac = cniArgs.mac === undefined ? undefined : stringValue(cniArgs.mac, 'args.cni.mac');
  let prevResult: CniResult | undefined;
  if (raw.prevResult !== undefined && raw.prevResult !== null && command !== 'GC' && command !== 'STATUS') {
    prevResult = decodeResult(raw.prevResult, version);
  }
  let validAttachments: Attachment[] | undefined;
  if (command === 'GC') {
    // libcni sends both spellings (cni.dev/attachments came from an early draft of the spec).
    const list = raw['cni.dev/valid-attachments'] ?? raw['cni.dev/attachments'] ?? [];
    if (!Array.isArray(list)) bad('"cni.dev/valid-attachments" must be a list');
    validAttachments = (list as unknown[]).map((a, i) => {
      if (!isObject(a) || typeof a.containerID !== 'string' || typeof a.ifname !== 'string')
        bad(`cni.dev/valid-attachments[${i}] must be {"containerID": string, "ifname": string}`);
      const x = a as { containerID: string; ifname: string };
      return { containerID: x.containerID, ifname: x.ifname };
    });
  }
  return {
    cniVersion: version,
    name: name as string,
    type: typeof raw.type === 'string' ? raw.type : 'weft',
    ...(network !== undefined && { network }),
    ...(ipMasq !== undefined && { ipMasq }),
    ...(mtu !== undefined && { mtu }),
    ...(socket !== undefined && { socket }),
    ...(dataDir !== undefined && { dataDir }),
    runtime,
    argsIps,
    ...(argsMac !== undefined && { argsMac }),
    ...(prevResult !== undefined && { prevResult }),
    ...(validAttachments !== undefined && { validAttachments }),
  };
}

/**
 * DEL's config: only what DEL uses (the name, the socket, the cache dir; the attachment is named
 * by the environment). A runtime calls DEL to clean up after a failed ADD, often with the very
 * config that made the ADD fail (an sctp port mapping, a bad mtu): DEL must not fail on it. An
 * undecodable prevResult counts as absent.
 */
function delConfig(
  raw: Record<string, unknown>,
  cniVersion: CniVersion,
  name: string,
  socket: string | undefined,
  dataDir: string | undefined,
): NetConf {
  let prevResult: CniResult | undefined;
  if (raw.prevResult !== undefined && raw.prevResult !== null) {
    try {
      prevResult = decodeResult(raw.prevResult, cniVersion);
    } catch {
      prevResult = undefined;
    }
  }
  return {
    cniVersion,
    name,
    type: typeof raw.type === 'string' ? raw.type : 'weft',
    ...(socket !== undefined && { socket }),
    ...(dataDir !== undefined && { dataDir }),
    runtime: { ports: [], ips: [], aliases: [] },
    argsIps: [],
    ...(prevResult !== undefined && { prevResult }),
  };
}

function parseRuntimeConfig(raw: unknown, networkName: string): RuntimeConfig {
  if (raw === undefined || raw === null) return { ports: [], ips: [], aliases: [] };
  if (!isObject(raw)) throw new CniError(CniCode.InvalidConfig, '"runtimeConfig" must be an object');
  const ports = raw.portMappings === undefined ? [] : parsePortMappings(raw.portMappings);
  const ips = raw.ips === undefined ? [] : stringList(raw.ips, 'runtimeConfig.ips');
  const mac = raw.mac === undefined ? undefined : stringValue(raw.mac, 'runtimeConfig.mac');
  // Aliases: a list, or (podman's CNI backend) an object keyed by network name.
  let aliases: string[] = [];
  if (Array.isArray(raw.aliases)) aliases = stringList(raw.aliases, 'runtimeConfig.aliases');
  else if (isObject(raw.aliases)) {
    const mine = raw.aliases[networkName];
    aliases = mine === undefined ? [] : stringList(mine, `runtimeConfig.aliases.${networkName}`);
  } else if (raw.aliases !== undefined) {
    throw new CniError(CniCode.InvalidConfig, '"runtimeConfig.aliases" must be a list of names');
  }
  let dns: RuntimeConfig['dns'];
  if (raw.dns !== undefined) {
    if (!isObject(raw.dns))
      throw new CniError(CniCode.InvalidConfig, '"runtimeConfig.dns" must be an object');
    const d = raw.dns;
    dns = {
      ...(d.servers !== undefined && { servers: stringList(d.servers, 'runtimeConfig.dns.servers') }),
      ...(d.searches !== undefined && { searches: stringList(d.searches, 'runtimeConfig.dns.searches') }),
      ...(d.options !== undefined && { options: stringList(d.options, 'runtimeConfig.dns.options') }),
    };
  }
  return {
    ports,
    ips,
    ...(mac !== undefined && { mac }),
    aliases: aliases.filter(isDnsName),
    ...(dns !== undefined && { dns }),
  };
}

/** runtimeConfig.portMappings (`{hostPort, containerPort, protocol, hostIP}`) in weft's syntax. */
export function parsePortMappings(raw: unknown): string[] {
  if (!Array.isArray(raw))
    throw new CniError(CniCode.InvalidConfig, '"runtimeConfig.portMappings" must be a list');
  return raw.map((m, i) => {
    const where = `runtimeConfig.portMappings[${i}]`;
    if (!isObject(m)) throw new CniError(CniCode.InvalidConfig, `${where} must be an object`);
    const port = (k: string): number => {
      const v = m[k];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535)
        throw new CniError(
          CniCode.InvalidConfig,
          `${where}.${k} must be a port number (1-65535)`,
          JSON.stringify(v),
        );
      return v;
    };
    const hostPort = port('hostPort');
    const containerPort = port('containerPort');
    const proto = m.protocol === undefined || m.protocol === '' ? 'tcp' : String(m.protocol).toLowerCase();
    if (proto !== 'tcp' && proto !== 'udp') {
      throw new CniError(
        CniCode.InvalidConfig,
        `${where}.protocol "${String(m.protocol)}" is not supported (tcp or udp)`,
      );
    }
    let host = '';
    if (m.hostIP !== undefined && m.hostIP !== '') {
      if (typeof m.hostIP !== 'string')
        throw new CniError(CniCode.InvalidConfig, `${where}.hostIP must be a string`);
      host = m.hostIP.includes(':') ? `[${m.hostIP}]:` : `${m.hostIP}:`;
    }
    return `${host}${hostPort}:${containerPort}/${proto}`;
  });
}

export interface CniArgs {
  readonly ips: string[];
  readonly mac?: string;
}

/**
 * Parse CNI_ARGS (`K=V;K=V`): IP (one address or a comma-separated list) and MAC; any other key
 * is refused unless `IgnoreUnknown` is 1/true (what runtimes send alongside K8S_POD_* and such).
 * @throws CniError 6 (a pair without "=", an unknown key, an IP that is not an address)
 */
export function parseCniArgs(s: string): CniArgs {
  if (s.trim() === '') return { ips: [] };
  const pairs = s.split(';').filter((p) => p !== '');
  const kv: [string, string][] = pairs.map((p) => {
    const i = p.indexOf('=');
    if (i <= 0) throw new CniError(CniCode.DecodingFailure, `CNI_ARGS: "${p}" is not KEY=VALUE`);
    return [p.slice(0, i), p.slice(i + 1)];
  });
  const ignore = kv.some(([k, v]) => k === 'IgnoreUnknown' && /^(1|true)$/i.test(v));
  let ips: string[] = [];
  let mac: string | undefined;
  for (const [k, v] of kv) {
    if (k === 'IP') {
      ips = v.split(',').filter((x) => x !== '');
      for (const ip of ips) {
        try {
          parseIPNet(ip);
        } catch {
          throw new CniError(CniCode.DecodingFailure, `CNI_ARGS: IP "${ip}" is not an IP address`);
        }
      }
    } else if (k === 'MAC') mac = v;
    else if (k !== 'IgnoreUnknown' && !ignore) {
      throw new CniError(
        CniCode.DecodingFailure,
        `CNI_ARGS: unknown argument "${k}" (set IgnoreUnknown=1 to allow)`,
      );
    }
  }
  return { ips, ...(mac !== undefined && { mac }) };
}

/**
 * The wanted addresses from runtimeConfig.ips, args.cni.ips and CNI_ARGS IP (first source that
 * gives any wins), split by family: at most one IPv4 and one IPv6.
 * @throws CniError 7 (not an address, two of one family)
 */
export function wantedAddresses(conf: NetConf, args: CniArgs): { ip?: string; ip6?: string } {
  const list =
    conf.runtime.ips.length > 0 ? conf.runtime.ips : conf.argsIps.length > 0 ? conf.argsIps : args.ips;
  const out: { ip?: string; ip6?: string } = {};
  for (const s of list) {
    let family: 4 | 6;
    let bare: string;
    try {
      const n = parseIPNet(s);
      family = n.ip.family;
      bare = s.split('/')[0]!;
    } catch {
      throw new CniError(CniCode.InvalidConfig, `requested IP "${s}" is not an IP address`);
    }
    const key = family === 4 ? 'ip' : 'ip6';
    if (out[key] !== undefined) {
      throw new CniError(
        CniCode.InvalidConfig,
        `more than one IPv${family} address requested (${out[key]}, ${bare})`,
      );
    }
    out[key] = bare;
  }
  return out;
}

// RFC 1123 names, as the daemon accepts for aliases; others (podman's container names with "_")
// are left out instead of failing the ADD.
const DNS_NAME_RE =
  /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
export const isDnsName = (s: string): boolean => DNS_NAME_RE.test(s);

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
function stringList(x: unknown, what: string): string[] {
  if (!Array.isArray(x) || !x.every((s) => typeof s === 'string'))
    throw new CniError(CniCode.InvalidConfig, `"${what}" must be a list of strings`);
  return [...(x as string[])];
}
function stringValue(x: unknown, what: string): string {
  if (typeof x !== 'string') throw new CniError(CniCode.InvalidConfig, `"${what}" must be a string`);
  return x;
}
