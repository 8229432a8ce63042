/**
 * The three name files every sandbox gets, rendered as Docker renders them: `/etc/hosts`,
 * `/etc/resolv.conf` and `/etc/hostname`. Pure: text in, text out; the caller writes and
 * bind-mounts them.
 *
 * - hosts: the fixed localhost block (IPv4 and IPv6 loopback, the ip6 multicast names Docker
 *   writes), then the sandbox's own address(es) with its hostname (and the short name when the
 *   hostname has a domain) and aliases, then the `--add-host` entries in the order given.
 *   Columns are tab-separated, as Docker's `etchosts.Build`.
 * - resolv.conf: on a user-defined network the nameserver is the network's DNS server on the
 *   gateway address (see server.ts); `--dns` replaces it. `parseResolvConf` reads the host's
 *   file for the upstream resolvers that server forwards to: loopback resolvers (127.0.0.0/8,
 *   ::1, e.g. systemd-resolved's 127.0.0.53) are unreachable from a sandbox namespace and are
 *   skipped, as Docker does; if none is left there are none (no public fallback is invented).
 * - hostname: the name and a newline.
 *
 * Validation happens before anything is rendered: hostnames are RFC 1123 names (labels of 1-63
 * letters, digits and hyphens, not starting or ending with a hyphen); a hostname is at most 64
 * bytes (the kernel's UTS limit), other DNS names at most 253. Everything else is INVALID.
 */
import { invalid } from '../../lib/errors.js';
import { formatIP, type IPAddr, tryParseIP } from '../../lib/ip.js';

/** The kernel's limit for a UTS hostname (__NEW_UTS_LEN). */
export const HOSTNAME_MAX = 64;
/** Longest DNS name in text form, without a trailing dot. */
export const DNS_NAME_MAX = 253;
/** Nameserver lines a resolver reads (glibc and musl MAXNS); more would be silently ignored. */
export const MAX_NAMESERVERS = 3;

const LABEL_RE = /^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

/**
 * Throws INVALID unless `name` is an RFC 1123 DNS name (a trailing dot is refused: these names
 * go into files and answers in their relative form).
 */
export function checkDnsName(name: string, what = 'name', max = DNS_NAME_MAX): string {
  if (typeof name !== 'string' || name.length === 0) throw invalid(`${what} must not be empty`);
  if (name.length > max) {
    throw invalid(`${what} "${name}" is too long (${name.length} characters, at most ${max})`, { name });
  }
  for (const label of name.split('.')) {
    if (!LABEL_RE.test(label)) {
      throw invalid(
        `${what} "${name}" is not a valid host name: each dot-separated label must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen`,
        { name, label },
      );
    }
  }
  return name;
}

/** Throws INVALID unless `name` is a valid sandbox hostname (RFC 1123, at most 64 bytes). */
export function checkHostname(name: string, what = 'hostname'): string {
  return checkDnsName(name, what, HOSTNAME_MAX);
}

function toIP(ip: IPAddr | string, what: string): IPAddr {
  if (typeof ip !== 'string') {
    if (ip === null || typeof ip !== 'object' || (ip.family !== 4 && ip.family !== 6)) {
      throw invalid(`${what} is not an IP address`);
    }
    return ip;
  }
  const parsed = tryParseIP(ip);
  if (!parsed) throw invalid(`${what} "${ip}" is not an IP address`, { input: ip });
  return parsed;
}

export interface ExtraHost {
  readonly name: string;
  readonly ip: IPAddr | string;
}

export interface HostsSpec {
  readonly hostname: string;
  /** The sandbox's own addresses (none for a `none` network: then no own line). */
  readonly ips: readonly IPAddr[];
  /** More names for the own addresses (`--network-alias`). */
  readonly aliases?: readonly string[];
  /** `--add-host NAME:IP` entries, in order. */
  readonly extraHosts: readonly ExtraHost[];
}

/** The localhost block of every Docker container's /etc/hosts. */
export const HOSTS_HEADER = [
  '127.0.0.1\tlocalhost',
  '::1\tlocalhost ip6-localhost ip6-loopback',
  'fe00::0\tip6-localnet',
  'ff00::0\tip6-mcastprefix',
  'ff02::1\tip6-allnodes',
  'ff02::2\tip6-allrouters',
] as const;

/** Render /etc/hosts. Throws INVALID for a bad hostname, alias, add-host name or address. */
export function renderHosts(spec: HostsSpec): string {
  checkHostname(spec.hostname);
  const aliases = spec.aliases ?? [];
  for (const a of aliases) checkDnsName(a, 'network alias');
  const ips = spec.ips.map((ip, i) => toIP(ip, `address ${i + 1}`));
  const extras = spec.extraHosts.map((e) => {
    checkDnsName(e.name, 'add-host name');
    return { name: e.name, ip: toIP(e.ip, `add-host address for "${e.name}"`) };
  });

  // A hostname with a domain also answers to its short name (Docker: "h.example.com h").
  const names: string[] = [spec.hostname];
  const dot = spec.hostname.indexOf('.');
  if (dot > 0) names.push(spec.hostname.slice(0, dot));
  for (const a of aliases) if (!names.includes(a)) names.push(a);

  const lines: string[] = [...HOSTS_HEADER];
  for (const ip of ips) lines.push(`${formatIP(ip)}\t${names.join(' ')}`);
  for (const e of extras) lines.push(`${formatIP(e.ip)}\t${e.name}`);
  return `${lines.join('\n')}\n`;
}

export interface ResolvConfSpec {
  /** At most 3 (what resolvers read); none renders no nameserver line. */
  readonly nameservers: readonly (IPAddr | string)[];
  /** Search domains (`--dns-search`). */
  readonly search?: readonly string[];
  /** Resolver options (`--dns-option`), e.g. `ndots:0`, `timeout:2`. */
  readonly options?: readonly string[];
}

const OPTION_RE = /^[a-zA-Z0-9_-]+(?::[0-9]+)?$/;

/** Render /etc/resolv.conf. Throws INVALID for a bad address, search domain or option, or >3 nameservers. */
export function renderResolvConf(spec: ResolvConfSpec): string {
  if (spec.nameservers.length > MAX_NAMESERVERS) {
    throw invalid(
      `at most ${MAX_NAMESERVERS} nameservers are read by resolvers, ${spec.nameservers.length} given`,
      { count: spec.nameservers.length },
    );
  }
  const servers = spec.nameservers.map((ns, i) => toIP(ns, `nameserver ${i + 1}`));
  const search = spec.search ?? [];
  for (const s of search) checkDnsName(s.endsWith('.') ? s.slice(0, -1) : s, 'search domain');
  const options = spec.options ?? [];
  for (const o of options) {
    if (!OPTION_RE.test(o)) {
      throw invalid(`resolver option "${o}" is invalid: expected NAME or NAME:NUMBER (e.g. ndots:0)`, {
        option: o,
      });
    }
  }
  const lines: string[] = servers.map((ip) => `nameserver ${formatIP(ip)}`);
  if (search.length > 0) lines.push(`search ${search.join(' ')}`);
  if (options.length > 0) lines.push(`options ${options.join(' ')}`);
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** Render /etc/hostname. Throws INVALID for a bad hostname. */
export function renderHostname(name: string): string {
  return `${checkHostname(name)}\n`;
}

export interface ParsedResolvConf {
  /** Usable upstream resolvers, in file order. */
  readonly nameservers: IPAddr[];
  /** Nameserver entries left out: loopback (unreachable from a namespace) or unparsable. */
  readonly skipped: string[];
  /** The loopback ones among them (reachable from the host's own namespace only). */
  readonly loopback: IPAddr[];
  /** The last `search` or `domain` line wins, as in glibc. */
  readonly search: string[];
  readonly options: string[];
}

const isLoopback = (ip: IPAddr): boolean => (ip.family === 4 ? ip.value >>> 24 === 127 : ip.value === 1n);

/** Read a host's resolv.conf: never throws; what it cannot use is listed in `skipped`. */
export function parseResolvConf(text: string): ParsedResolvConf {
  const nameservers: IPAddr[] = [];
  const skipped: string[] = [];
  const loopback: IPAddr[] = [];
  let search: string[] = [];
  const options: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [key, ...rest] = line.split(/\s+/);
    switch (key) {
      case 'nameserver': {
        const value = rest[0];
        if (value === undefined) break;
        const ip = tryParseIP(value);
        if (!ip || isLoopback(ip)) skipped.push(value);
        else nameservers.push(ip);
        if (ip && isLoopback(ip)) loopback.push(ip);
        break;
      }
      case 'search':
        search = rest;
        break;
      case 'domain':
        search = rest.slice(0, 1);
        break;
      case 'options':
        options.push(...rest);
        break;
      default:
        break;
    }
  }
  return { nameservers, skipped, loopback, search, options };
}

export interface HostResolvers {
  /**
   * For weft's DNS server, which runs in the host's namespace: every usable nameserver, loopback
   * ones included (systemd-resolved's stub 127.0.0.53 answers there).
   */
  readonly upstreams: IPAddr[];
  /** For a sandbox's resolv.conf when it does not use weft's server: none on loopback. */
  readonly nameservers: IPAddr[];
  /** The host's search domains and resolver options that a resolv.conf can carry. */
  readonly search: string[];
  readonly options: string[];
}

const validSearch = (d: string): boolean => {
  try {
    checkDnsName(d.endsWith('.') ? d.slice(0, -1) : d, 'search domain');
    return true;
  } catch {
    return false;
  }
};

/**
 * The host's resolvers as Docker reads them. `etc` is /etc/resolv.conf; when it lists loopback
 * resolvers only (systemd-resolved's stub), sandboxes get the servers systemd-resolved itself uses,
 * from `resolved` (/run/systemd/resolve/resolv.conf), when there is one. Search domains and
 * options a resolv.conf cannot carry (`search .`) are left out. Never throws.
 */
export function hostResolvers(etc: string, resolved?: string): HostResolvers {
  const host = parseResolvConf(etc);
  const upstreams = [...host.nameservers, ...host.loopback];
  let nameservers = host.nameservers;
  if (nameservers.length === 0 && host.loopback.length > 0 && resolved !== undefined) {
    nameservers = parseResolvConf(resolved).nameservers;
  }
  return {
    upstreams,
    nameservers,
    search: host.search.filter(validSearch),
    options: host.options.filter((o) => OPTION_RE.test(o)),
  };
}
