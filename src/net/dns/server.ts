/**
 * The daemon's DNS server for user-defined networks: authoritative for the names of sandboxes
 * (their hostnames and `--network-alias`es), forwarding everything else to upstream resolvers.
 * Docker runs one such server per container on 127.0.0.11 inside the container's namespace and
 * redirects with iptables; weft runs one server in the daemon (host namespace) that listens on
 * each network's gateway address, which a sandbox's resolv.conf names directly. No per-sandbox
 * process, socket or NAT rule.
 *
 * How it works
 * - Each listen address belongs to a network and has a UDP socket and a TCP server on one port
 *   (53 by default). `addListen` binds one address, both or neither, so a caller binds each on
 *   its own (an IPv6 gateway still in DAD fails alone) and the table (`setRecords`) is
 *   independent of listeners.
 * - Who asks decides what is seen. A query on network N's listener from a source outside N's
 *   subnets is REFUSED: a container on another network, or anything routed to the gateway,
 *   neither reads N's names nor uses us as an open forwarder. A source inside is looked up among
 *   N's records: if it is a sandbox's address, the query sees N and every other network that
 *   sandbox has records on (Docker: a container on two networks resolves peers on both), N
 *   first, so a peer's address is the one on the network the query came in on. Records without
 *   a network are seen by every permitted client, after the networks.
 * - A and AAAA (and ANY: both) are answered from the table, authoritatively, with a short TTL
 *   (DEFAULT_TTL = 10 s; Docker answers with 600 s, too long when sandboxes come and go and
 *   addresses are reused). `name.network` is `name` on that network, if visible (Docker strips
 *   the suffix). A known name asked for another type gets NOERROR with no answers. PTR queries
 *   for a table address are answered with its first name.
 * - Replies are encoded here, not re-encoded from a decoded query: the question goes back byte
 *   for byte as received (a label may hold a dot, which a decoded name cannot say) and answers
 *   point at it. A query with EDNS gets OPT back (its DO bit echoed; version > 0: BADVERS).
 *   Over UDP a reply fits the client's size (512, or its EDNS size up to 4096), else TC is set
 *   and glibc retries over TCP.
 * - TCP (RFC 7766): length-framed messages, several (pipelined) per connection, answers in any
 *   order, a half-closed connection still gets its answers. Connections are bounded
 *   (`maxTcpConnections`, 16 per client address; beyond it, or from outside the subnets, a new
 *   one is closed at once), closed after `tcpIdleMs` without traffic or when the client stops
 *   reading our answers, and not read while 32 of their queries are forwarded.
 * - Names the table does not know are never answered NXDOMAIN here: the query is forwarded,
 *   unchanged but for a fresh random id, to every upstream at once (the sandbox's own, from
 *   `setRecords`, else the server's) over the transport it came in on: UDP from a fresh
 *   ephemeral socket per query, closed with the answer (a fixed source port makes spoofed
 *   answers easy), accepting only the upstreams' address and port and our id; TCP over a new
 *   connection per upstream. The first useful answer (not SERVFAIL/REFUSED) wins and is relayed
 *   with the client's id. If all upstreams fail the last failure is relayed (SERVFAIL if none
 *   answered); after `timeoutMs`
 *   (default 2 s, below the 5 s a glibc client waits) the client gets SERVFAIL. With no
 *   upstreams: SERVFAIL at once. Pending forwards are bounded (`maxPending`, default 1024,
 *   Docker's figure); beyond it queries get SERVFAIL at once.
 * - Whatever cannot be decoded (by dns-packet), responses sent to us, and queries without exactly
 *   one question are dropped and counted (`stats()`); a handler never throws into the socket.
 *   Non-QUERY opcodes get NOTIMP.
 *
 * Costs: a few map lookups per query; a forwarded query costs a timer, one socket per address
 * family (UDP) or one connection per upstream (TCP). Listening on an IPv6 gateway needs the
 * address out of DAD (add it with noDad) or bind fails with NOT_FOUND.
 */

import { randomInt } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as packet from 'dns-packet';
import { invalid, WeftError } from '../../lib/errors.js';
import {
  containsIP,
  type Family,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  ipToBytes,
  parseIPNet,
  tryParseIP,
} from '../../lib/ip.js';
import { type Logger, nullLogger } from '../../lib/log.js';

export const DEFAULT_TTL = 10;
export const DEFAULT_TIMEOUT_MS = 2000;
export const DEFAULT_MAX_PENDING = 1024;
export const DEFAULT_MAX_TCP_CONNECTIONS = 256;
export const DEFAULT_TCP_IDLE_MS = 10_000;
export const DNS_PORT = 53;
/** The largest UDP reply we send, and what our OPT advertises. */
export const EDNS_UDP_SIZE = 4096;

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NOTIMP: 4, REFUSED: 5, BADVERS: 16 } as const;
const TYPE = { A: 1, PTR: 12, AAAA: 28, OPT: 41, ANY: 255 } as const;
const CLASS_IN = 1;
const QR = 0x8000;
const OPCODE_MASK = 0x7800;
const AA = 0x0400;
const TC = 0x0200;
const RD = 0x0100;
const RA = 0x0080;
const CD = 0x0010;
const HEADER = 12;
const OPT_SIZE = 11;
const UDP_MIN = 512;
const TCP_MAX = 65535;
/** Forwarded queries of one TCP connection before we stop reading it. */
const TCP_INFLIGHT = 32;
/** Connections of one client address (a share of `maxTcpConnections`). */
const TCP_PER_SOURCE = 16;
/** Unread answers queued to a TCP client before we drop it. */
const TCP_WRITE_BUFFER = 1 << 20;
/** Attempts at one free port for both UDP and TCP when port 0 is asked. */
const PORT0_TRIES = 8;

export interface ListenSpec {
  readonly address: string;
  /** Default 53; 0 picks a port free for both UDP and TCP (tests), see `listening()`. */
  readonly port?: number;
  /** The network this listener serves. */
  readonly network: string;
  /** The network's subnets (CIDR); queries from other sources get REFUSED. */
  readonly subnets: readonly string[];
}

export interface DnsRecord {
  /** A hostname or alias; case-insensitive, a trailing dot is ignored. */
  readonly name: string;
  readonly ips: readonly IPAddr[];
  /** Visible to clients of this network (and of sandboxes on it); absent: to every client. */
  readonly network?: string;
  /** The sandbox the record belongs to; a sandbox's records on all its networks share it. */
  readonly sandbox?: string;
}

export interface RecordOptions {
  /**
   * Upstreams per sandbox (Docker: a container's `--dns`): names not ours asked by that sandbox
   * are forwarded there instead of to the server's upstreams. Absent or empty: the server's.
   */
  readonly upstreams?: ReadonlyMap<string, readonly string[]>;
}

export interface DnsServerOptions {
  /** Bound all or nothing at start; `addListen` adds more one at a time. */
  readonly listen?: readonly ListenSpec[];
  /** Upstream resolvers: `1.2.3.4`, `1.2.3.4:5353`, `fd00::1`, `[fd00::1]:5353`. */
  readonly upstreams: readonly string[];
  readonly timeoutMs?: number;
  readonly maxPending?: number;
  readonly maxTcpConnections?: number;
  readonly tcpIdleMs?: number;
  readonly ttl?: number;
  readonly log?: Logger;
}

export interface DnsStats {
  queries: number;
  tcpQueries: number;
  answered: number;
  forwarded: number;
  servfail: number;
  refused: number;
  malformed: number;
  overloaded: number;
  lateAnswers: number;
  tcpRejected: number;
}

export interface Listening {
  address: string;
  port: number;
  network: string;
  subnets: string[];
}

interface Upstream {
  readonly ip: IPAddr;
  readonly host: string;
  readonly port: number;
}

interface CheckedListen {
  readonly address: string;
  readonly family: Family;
  readonly port: number;
  readonly network: string;
  readonly subnets: readonly IPNet[];
}

interface Listener {
  readonly address: string;
  readonly port: number;
  /** Updated in place when the address is added again. */
  network: string;
  subnets: readonly IPNet[];
  readonly udp: dgram.Socket;
  readonly tcp: net.Server;
  readonly conns: Set<Conn>;
}

/** A client's TCP connection. */
interface Conn {
  readonly sock: net.Socket;
  buf: Buffer;
  /** Its queries waiting for an upstream. */
  inflight: number;
  /** The client half-closed: end once every answer is out. */
  ended: boolean;
}

/** Where a query came from, and how its answer goes back. */
interface Client {
  readonly listener: Listener;
  readonly source: IPAddr;
  /** Undefined for UDP. */
  readonly conn: Conn | undefined;
  send(reply: Buffer): void;
}

interface Query {
  readonly id: number;
  readonly flags: number;
  /** The question section exactly as received. */
  readonly question: Buffer;
  /** The name as a table key; undefined when a label holds a dot (never one of ours). */
  readonly key: string | undefined;
  readonly qtype: number;
  readonly qclass: number;
  readonly edns: { size: number; version: number; dnssecOk: boolean } | undefined;
  readonly optCount: number;
  /** The whole message, forwarded as it is but for the id. */
  readonly raw: Buffer;
}

interface Forward {
  readonly client: Client;
  readonly q: Query;
  /** Our id towards the upstreams. */
  readonly id: number;
  readonly timer: NodeJS.Timeout;
  /** Sockets and connections to close when done. */
  readonly closers: (() => void)[];
  waiting: number;
  lastFailure: Buffer | undefined;
}

/** An answer record; its owner is always the question's name (a pointer to it). */
interface Rr {
  readonly type: number;
  readonly rdata: Uint8Array;
}

/** Parse an upstream address; throws INVALID. */
export function parseUpstream(s: string): Upstream {
  let host = s;
  let port = DNS_PORT;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  const v4port = /^([0-9.]+):(\d+)$/.exec(s);
  if (bracket) {
    host = bracket[1]!;
    if (bracket[2] !== undefined) port = Number(bracket[2]);
  } else if (v4port) {
    host = v4port[1]!;
    port = Number(v4port[2]);
  }
  const ip = tryParseIP(host);
  if (!ip || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalid(`upstream resolver "${s}" is invalid: expected IP, IP:PORT or [IPv6]:PORT`, { input: s });
  }
  return { ip, host: formatIP(ip), port };
}

function checkListen(l: ListenSpec): CheckedListen {
  const ip = typeof l?.address === 'string' ? tryParseIP(l.address) : undefined;
  if (!ip) throw invalid(`DNS listen address "${String(l?.address)}" is not an IP address`);
  const port = l.port ?? DNS_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalid(`DNS listen port ${port} is out of range`, { port });
  }
  if (typeof l.network !== 'string' || l.network === '') {
    throw invalid(`DNS listen address ${formatIP(ip)} has no network`);
  }
  if (!Array.isArray(l.subnets) || l.subnets.length === 0) {
    throw invalid(`DNS listen address ${formatIP(ip)} has no subnets`, { network: l.network });
  }
  const subnets = l.subnets.map((s) => parseIPNet(s));
  return { address: formatIP(ip), family: ip.family, port, network: l.network, subnets };
}

/** The PTR name of an address (`4.3.2.1.in-addr.arpa`, nibbles for IPv6). */
export function reverseName(ip: IPAddr): string {
  if (ip.family === 4) {
    const n = ip.value;
    return `${n & 255}.${(n >>> 8) & 255}.${(n >>> 16) & 255}.${n >>> 24}.in-addr.arpa`;
  }
  const nibbles: string[] = [];
  for (let i = 0; i < 32; i++) nibbles.push(Number((ip.value >> BigInt(i * 4)) & 0xfn).toString(16));
  return `${nibbles.join('.')}.ip6.arpa`;
}

// DNS compares names byte-wise with only ASCII case folded (RFC 4343): keys are the name's bytes
// as latin1 text, ASCII lower-cased, labels joined by dots.
const asciiLower = (s: string): string =>
  s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));

/** A record name's labels as wire bytes; undefined when no query could carry it. */
function wireLabels(name: string): Buffer[] | undefined {
  const labels = name
    .replace(/\.$/, '')
    .split('.')
    .map((l) => Buffer.from(l, 'utf8'));
  const size = labels.reduce((n, l) => n + 1 + l.length, 1);
  if (size > 255 || labels.some((l) => l.length === 0 || l.length > 63)) return undefined;
  return labels;
}
const keyOf = (labels: readonly Buffer[]): string =>
  labels.map((l) => asciiLower(l.toString('latin1'))).join('.');
const encodeName = (labels: readonly Buffer[]): Buffer =>
  Buffer.concat([...labels.flatMap((l) => [Buffer.from([l.length]), l]), Buffer.from([0])]);
const ipKey = (ip: IPAddr): string => `${ip.family}/${ip.value}`;

interface Entry {
  v4: IPAddr[];
  v6: IPAddr[];
}
interface Table {
  /** network ('' for every client) → name key → addresses. */
  readonly names: Map<string, Map<string, Entry>>;
  /** network → reverse name → the wire name to answer. */
  readonly ptr: Map<string, Map<string, Buffer>>;
  /** network → address → the sandbox that has it there. */
  readonly owners: Map<string, Map<string, string>>;
  /** sandbox → the networks it has records on, in record order. */
  readonly networksOf: Map<string, string[]>;
  readonly upstreams: Map<string, Upstream[]>;
}

function getOrAdd<K, V>(m: Map<K, V>, k: K, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) {
    v = make();
    m.set(k, v);
  }
  return v;
}

function buildTable(records: readonly DnsRecord[], opts: RecordOptions): Table {
  const t: Table = {
    names: new Map(),
    ptr: new Map(),
    owners: new Map(),
    networksOf: new Map(),
    upstreams: new Map(),
  };
  for (const [sandbox, list] of opts.upstreams ?? []) {
    if (list.length > 0) t.upstreams.set(sandbox, list.map(parseUpstream));
  }
  for (const r of records) {
    if (typeof r?.name !== 'string' || r.name.replace(/\.$/, '') === '') {
      throw invalid(`DNS record name "${String(r?.name)}" is empty`);
    }
    if (!Array.isArray(r.ips)) throw invalid(`DNS record "${r.name}" has no address list`);
    for (const ip of r.ips) {
      if (ip === null || typeof ip !== 'object' || (ip.family !== 4 && ip.family !== 6)) {
        throw invalid(`DNS record "${r.name}" has an invalid address`);
      }
    }
    const network = r.network ?? '';
    if (r.sandbox !== undefined && network !== '') {
      const nets = getOrAdd(t.networksOf, r.sandbox, () => []);
      if (!nets.includes(network)) nets.push(network);
      const owners = getOrAdd(t.owners, network, () => new Map<string, string>());
      for (const ip of r.ips) if (!owners.has(ipKey(ip))) owners.set(ipKey(ip), r.sandbox);
    }
    // A name too long for the wire (a 64-character container name) cannot be asked: skip it, the
    // rest of the table still serves.
    const labels = wireLabels(r.name);
    if (!labels) continue;
    const e = getOrAdd(
      getOrAdd(t.names, network, () => new Map<string, Entry>()),
      keyOf(labels),
      (): Entry => ({ v4: [], v6: [] }),
    );
    const rev = getOrAdd(t.ptr, network, () => new Map<string, Buffer>());
    for (const ip of r.ips) {
      const list = ip.family === 4 ? e.v4 : e.v6;
      if (!list.some((x) => x.value === ip.value)) list.push(ip);
      const rn = reverseName(ip);
      if (!rev.has(rn)) rev.set(rn, encodeName(labels));
    }
  }
  return t;
}

/** The parts of a query we act on; undefined when it is malformed or not a query. */
function parseQuery(msg: Buffer): Query | undefined {
  let decoded: packet.DecodedPacket;
  try {
    decoded = packet.decode(msg);
  } catch {
    return undefined;
  }
  if (msg.length < HEADER) return undefined;
  const flags = msg.readUInt16BE(2);
  if (flags & QR || msg.readUInt16BE(4) !== 1) return undefined;
  // The name by hand: dns-packet joins labels with dots, losing a dot inside one.
  const labels: Buffer[] = [];
  let off = HEADER;
  for (;;) {
    const len = msg[off];
    if (len === undefined || len > 63) return undefined; // a pointer has no business here
    off++;
    if (len === 0) break;
    if (off + len > msg.length) return undefined;
    labels.push(msg.subarray(off, off + len));
    off += len;
  }
  if (off + 4 > msg.length) return undefined;
  const opts = (decoded.additionals ?? []).filter((a): a is packet.OptAnswer => a.type === 'OPT');
  const opt = opts[0];
  return {
    id: msg.readUInt16BE(0),
    flags,
    question: Buffer.from(msg.subarray(HEADER, off + 4)),
    key: labels.some((l) => l.includes(0x2e)) ? undefined : keyOf(labels),
    qtype: msg.readUInt16BE(off),
    qclass: msg.readUInt16BE(off + 2),
    edns: opt && { size: opt.udpPayloadSize, version: opt.ednsVersion, dnssecOk: opt.flag_do },
    optCount: opts.length,
    raw: msg,
  };
}

/** The largest reply this client takes. */
function limitOf(c: Client, q: Query): number {
  if (c.conn) return TCP_MAX;
  return q.edns ? Math.max(UDP_MIN, Math.min(q.edns.size, EDNS_UDP_SIZE)) : UDP_MIN;
}

/** A reply to `q`: its question as received, as many answers as fit `limit` (TC if not all). */
function encodeReply(
  q: Query,
  o: { rcode: number; limit: number; ttl?: number; aa?: boolean; tc?: boolean; answers?: readonly Rr[] },
): Buffer {
  const answers = o.answers ?? [];
  let size = HEADER + q.question.length + (q.edns ? OPT_SIZE : 0);
  let n = 0;
  for (const a of answers) {
    if (size + 12 + a.rdata.length > o.limit) break;
    size += 12 + a.rdata.length;
    n++;
  }
  const tc = o.tc === true || n < answers.length;
  const buf = Buffer.alloc(size);
  buf.writeUInt16BE(q.id, 0);
  buf.writeUInt16BE(
    QR | (q.flags & (OPCODE_MASK | RD | CD)) | RA | (o.aa ? AA : 0) | (tc ? TC : 0) | (o.rcode & 0xf),
    2,
  );
  buf.writeUInt16BE(1, 4);
  buf.writeUInt16BE(n, 6);
  buf.writeUInt16BE(q.edns ? 1 : 0, 10);
  q.question.copy(buf, HEADER);
  let off = HEADER + q.question.length;
  for (const a of answers.slice(0, n)) {
    buf.writeUInt16BE(0xc000 | HEADER, off);
    buf.writeUInt16BE(a.type, off + 2);
    buf.writeUInt16BE(CLASS_IN, off + 4);
    buf.writeUInt32BE(o.ttl ?? 0, off + 6);
    buf.writeUInt16BE(a.rdata.length, off + 10);
    buf.set(a.rdata, off + 12);
    off += 12 + a.rdata.length;
  }
  if (q.edns) {
    // Root owner, type OPT, our UDP size, extended rcode, version 0, DO echoed (RFC 3225), no options.
    buf.writeUInt16BE(TYPE.OPT, off + 1);
    buf.writeUInt16BE(EDNS_UDP_SIZE, off + 3);
    buf.writeUInt8(o.rcode >> 4, off + 5);
    buf.writeUInt16BE(q.edns.dnssecOk ? 0x8000 : 0, off + 7);
  }
  return buf;
}

/** True when `reply` (an upstream's) answers our `id` with the question we asked. */
function answersQuery(reply: Buffer, id: number, question: Buffer): boolean {
  if (reply.length < HEADER + question.length) return false;
  if (reply.readUInt16BE(0) !== id || !(reply.readUInt16BE(2) & QR) || reply.readUInt16BE(4) !== 1)
    return false;
  const got = reply.subarray(HEADER, HEADER + question.length);
  return asciiLower(got.toString('latin1')) === asciiLower(question.toString('latin1'));
}

function frame(msg: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(msg.length);
  return Buffer.concat([len, msg]);
}

function bindError(e: unknown, l: { address: string; port: number }, proto: string): WeftError {
  const code = (e as NodeJS.ErrnoException).code;
  const where = `${l.address}:${l.port}/${proto}`;
  const details = { address: l.address, port: l.port, proto };
  if (code === 'EADDRINUSE')
    return new WeftError('CONFLICT', `DNS port ${where} is already in use`, { cause: e, details });
  if (code === 'EADDRNOTAVAIL')
    return new WeftError('NOT_FOUND', `cannot listen on ${where}: no such local address`, {
      cause: e,
      details,
    });
  if (code === 'EACCES' || code === 'EPERM')
    return new WeftError('PERMISSION', `not allowed to listen on ${where}`, { cause: e, details });
  return new WeftError('INTERNAL', `cannot listen on ${where}: ${String(e)}`, { cause: e, details });
}

function quietly(close: () => void): void {
  try {
    close();
  } catch {
    // already closed
  }
}

/**
 * `start` a socket or server that reports its bind through a callback or an 'error' event; on
 * an error it is closed and the typed bind error thrown.
 */
async function bound<T extends dgram.Socket | net.Server>(
  what: T,
  l: CheckedListen,
  port: number,
  proto: 'udp' | 'tcp',
  start: (done: () => void) => void,
): Promise<T> {
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error) => {
      quietly(() => what.close());
      reject(bindError(e, { address: l.address, port }, proto));
    };
    what.once('error', onError);
    start(() => {
      what.off('error', onError);
      resolve();
    });
  });
  return what;
}

function bindUdp(l: CheckedListen, port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type: l.family === 4 ? 'udp4' : 'udp6' });
  return bound(socket, l, port, 'udp', (done) =>
    socket.bind({ address: l.address, port, exclusive: true }, done),
  );
}

function listenTcp(l: CheckedListen, port: number): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true });
  return bound(server, l, port, 'tcp', (done) =>
    server.listen({ host: l.address, port, exclusive: true }, done),
  );
}

export class DnsServer {
  readonly #listeners = new Map<string, Listener>();
  /** Bumped by removeListen, so a bind still under way for that address is dropped. */
  readonly #generation = new Map<string, number>();
  readonly #binding = new Map<string, Promise<void>>();
  readonly #upstreams: Upstream[];
  readonly #timeoutMs: number;
  readonly #maxPending: number;
  readonly #maxTcp: number;
  readonly #tcpIdleMs: number;
  readonly #ttl: number;
  readonly #log: Logger;
  readonly #pending = new Set<Forward>();
  #tcpCount = 0;
  readonly #tcpPerSource = new Map<string, number>();
  #table: Table = buildTable([], {});
  #closed = false;
  readonly #stats: DnsStats = {
    queries: 0,
    tcpQueries: 0,
    answered: 0,
    forwarded: 0,
    servfail: 0,
    refused: 0,
    malformed: 0,
    overloaded: 0,
    lateAnswers: 0,
    tcpRejected: 0,
  };

  private constructor(upstreams: Upstream[], opts: DnsServerOptions) {
    this.#upstreams = upstreams;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING;
    this.#maxTcp = opts.maxTcpConnections ?? DEFAULT_MAX_TCP_CONNECTIONS;
    this.#tcpIdleMs = opts.tcpIdleMs ?? DEFAULT_TCP_IDLE_MS;
    this.#ttl = opts.ttl ?? DEFAULT_TTL;
    this.#log = (opts.log ?? nullLogger).child({ component: 'dns' });
  }

  /**
   * Validate everything, then bind every listener of `opts.listen` (all or nothing).
   * Throws INVALID (bad address, port, subnet, upstream, timeout; an upstream that is one of our
   * own listeners), CONFLICT (port in use), NOT_FOUND (address not on this host), PERMISSION.
   */
  static async start(opts: DnsServerOptions): Promise<DnsServer> {
    const upstreams = opts.upstreams.map(parseUpstream);
    const listens = (opts.listen ?? []).map(checkListen);
    for (const [what, v, min] of [
      ['timeoutMs', opts.timeoutMs, 1],
      ['maxPending', opts.maxPending, 1],
      ['maxTcpConnections', opts.maxTcpConnections, 1],
      ['tcpIdleMs', opts.tcpIdleMs, 1],
      ['ttl', opts.ttl, 0],
    ] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < min)) throw invalid(`DNS ${what} ${v} is invalid`);
    }
    const server = new DnsServer(upstreams, opts);
    for (const l of listens) server.#checkNoLoop(l);
    try {
      for (const spec of opts.listen ?? []) await server.addListen(spec);
    } catch (e) {
      server.close();
      throw e;
    }
    server.#log.info('dns server started', {
      listen: server.listening().map((l) => `${l.address}:${l.port}`),
      upstreams: upstreams.map((u) => `${u.host}:${u.port}`),
    });
    return server;
  }

  /**
   * Replace the whole table (names of every network) and the per-sandbox upstreams; works with
   * or without listeners. Throws INVALID for a bad record or upstream; the old table stays.
   */
  setRecords(records: readonly DnsRecord[], opts: RecordOptions = {}): void {
    this.#table = buildTable(records, opts);
  }

  /**
   * Listen on one address, UDP and TCP (a network was created). Idempotent for an address
   * already served (its network and subnets are updated). Throws INVALID (bad spec, an upstream
   * of the server at that address), CONFLICT (port in use, UDP or TCP), NOT_FOUND (address not
   * on this host, or an IPv6 address still in DAD), PERMISSION, INTERNAL (server closed); on
   * failure nothing of this address is bound and the other listeners are untouched.
   */
  async addListen(spec: ListenSpec): Promise<void> {
    if (this.#closed) throw new WeftError('INTERNAL', 'DNS server is closed');
    const l = checkListen(spec);
    this.#checkNoLoop(l);
    // One bind per address at a time: a second call waits, then finds the listener (or binds).
    for (let busy = this.#binding.get(l.address); busy; busy = this.#binding.get(l.address)) {
      await busy.catch(() => {});
    }
    const done = this.#addListen(l);
    this.#binding.set(l.address, done);
    try {
      await done;
    } finally {
      if (this.#binding.get(l.address) === done) this.#binding.delete(l.address);
    }
  }

  async #addListen(l: CheckedListen): Promise<void> {
    if (this.#closed) throw new WeftError('INTERNAL', 'DNS server is closed');
    const have = this.#listeners.get(l.address);
    if (have && (l.port === 0 || l.port === have.port)) {
      have.network = l.network;
      have.subnets = l.subnets;
      return;
    }
    if (have) this.removeListen(l.address);
    const generation = this.#generation.get(l.address) ?? 0;
    const listener = await this.#bind(l);
    // Closed or removed meanwhile: this bind is not wanted.
    if (this.#closed || (this.#generation.get(l.address) ?? 0) !== generation) {
      quietly(() => listener.udp.close());
      quietly(() => listener.tcp.close());
      if (this.#closed) throw new WeftError('INTERNAL', 'DNS server is closed');
      return;
    }
    this.#listeners.set(l.address, listener);
    this.#log.debug('dns listening', { address: l.address, port: listener.port, network: l.network });
  }

  /** Stop listening on an address and close its TCP connections (a network was removed). Idempotent. */
  removeListen(address: string): void {
    const ip = tryParseIP(address);
    const key = ip ? formatIP(ip) : address;
    this.#generation.set(key, (this.#generation.get(key) ?? 0) + 1);
    const l = this.#listeners.get(key);
    if (!l) return;
    this.#listeners.delete(key);
    quietly(() => l.udp.close());
    quietly(() => l.tcp.close());
    for (const c of l.conns) c.sock.destroy();
  }

  /** Where the server listens (with the real port when 0 was asked). */
  listening(): Listening[] {
    return [...this.#listeners.values()].map((l) => ({
      address: l.address,
      port: l.port,
      network: l.network,
      subnets: l.subnets.map(formatIPNet),
    }));
  }

  stats(): DnsStats {
    return { ...this.#stats };
  }

  /** Forwarded queries waiting for an upstream. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Open client TCP connections. */
  get tcpConnections(): number {
    return this.#tcpCount;
  }

  /** Close every socket and connection and drop pending forwards. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const a of [...this.#listeners.keys()]) this.removeListen(a);
    for (const f of [...this.#pending]) this.#release(f);
  }

  #checkNoLoop(l: CheckedListen): void {
    for (const u of this.#upstreams) {
      if (u.host === l.address && u.port === l.port) {
        throw invalid(`upstream resolver ${u.host}:${u.port} is this server itself`, { upstream: u.host });
      }
    }
  }

  /** Bind UDP and TCP on one port, both or neither. */
  async #bind(l: CheckedListen): Promise<Listener> {
    for (let attempt = 1; ; attempt++) {
      const udp = await bindUdp(l, l.port);
      const port = udp.address().port;
      let tcp: net.Server;
      try {
        tcp = await listenTcp(l, port);
      } catch (e) {
        quietly(() => udp.close());
        // Port 0: the kernel's free UDP port may be taken for TCP; try another.
        if (l.port === 0 && e instanceof WeftError && e.code === 'CONFLICT' && attempt < PORT0_TRIES)
          continue;
        throw e;
      }
      const listener: Listener = {
        address: l.address,
        port,
        network: l.network,
        subnets: l.subnets,
        udp,
        tcp,
        conns: new Set(),
      };
      udp.on('error', (e) => this.#log.warn('listener socket error', { address: l.address, error: e }));
      udp.on('message', (msg, rinfo) => this.#onDatagram(listener, msg, rinfo));
      tcp.on('error', (e) => this.#log.warn('listener socket error', { address: l.address, error: e }));
      tcp.on('connection', (sock) => this.#onConnection(listener, sock));
      return listener;
    }
  }

  #onDatagram(l: Listener, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const source = tryParseIP(rinfo.address);
    if (!source) return;
    this.#onQuery(
      {
        listener: l,
        source,
        conn: undefined,
        send: (reply) => {
          try {
            l.udp.send(reply, rinfo.port, rinfo.address, (e) => {
              if (e) this.#log.debug('send failed', { to: rinfo.address, error: e });
            });
          } catch (e) {
            // the listener was closed meanwhile
            this.#log.debug('send failed', { to: rinfo.address, error: e });
          }
        },
      },
      msg,
    );
  }

  #onConnection(l: Listener, sock: net.Socket): void {
    sock.on('error', (e) => this.#log.debug('tcp client error', { error: e }));
    const source = tryParseIP((sock.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, ''));
    // Outsiders would only be REFUSED: they get no connection slot to hold. One client gets a
    // share of the slots, not all of them.
    const perSource = source ? (this.#tcpPerSource.get(ipKey(source)) ?? 0) : 0;
    if (
      this.#closed ||
      !source ||
      !l.subnets.some((s) => containsIP(s, source)) ||
      this.#tcpCount >= this.#maxTcp ||
      perSource >= TCP_PER_SOURCE
    ) {
      this.#stats.tcpRejected++;
      sock.destroy();
      return;
    }
    this.#tcpCount++;
    this.#tcpPerSource.set(ipKey(source), perSource + 1);
    const conn: Conn = { sock, buf: Buffer.alloc(0), inflight: 0, ended: false };
    l.conns.add(conn);
    sock.setNoDelay(true);
    sock.setTimeout(this.#tcpIdleMs, () => {
      // An answer still owed comes within timeoutMs; only an idle connection goes.
      if (conn.inflight === 0) sock.destroy();
    });
    sock.on('data', (chunk) => {
      conn.buf = conn.buf.length === 0 ? chunk : Buffer.concat([conn.buf, chunk]);
      this.#pump(l, conn, source);
    });
    sock.on('end', () => {
      conn.ended = true;
      this.#pump(l, conn, source);
    });
    sock.on('close', () => {
      this.#tcpCount--;
      const n = (this.#tcpPerSource.get(ipKey(source)) ?? 1) - 1;
      if (n > 0) this.#tcpPerSource.set(ipKey(source), n);
      else this.#tcpPerSource.delete(ipKey(source));
      l.conns.delete(conn);
    });
  }

  /** Handle the complete messages buffered on a connection, as far as its bound allows. */
  #pump(l: Listener, conn: Conn, source: IPAddr): void {
    const { sock } = conn;
    while (!sock.destroyed && conn.inflight < TCP_INFLIGHT && conn.buf.length >= 2) {
      const len = conn.buf.readUInt16BE(0);
      if (conn.buf.length < 2 + len) break;
      const msg = conn.buf.subarray(2, 2 + len);
      conn.buf = conn.buf.subarray(2 + len);
      this.#stats.tcpQueries++;
      this.#onQuery(
        {
          listener: l,
          source,
          conn,
          send: (reply) => {
            if (sock.destroyed || !sock.writable) return;
            sock.write(frame(reply));
            // A client that sends but does not read would have us buffer without bound.
            if (sock.writableLength > TCP_WRITE_BUFFER) sock.destroy();
          },
        },
        msg,
      );
    }
    if (sock.destroyed) return;
    if (conn.inflight >= TCP_INFLIGHT) sock.pause();
    else sock.resume();
    if (conn.ended && conn.inflight === 0) sock.end();
  }

  #reply(c: Client, q: Query, rcode: number, answers?: readonly Rr[]): void {
    if (rcode === RCODE.SERVFAIL) this.#stats.servfail++;
    else if (rcode === RCODE.REFUSED) this.#stats.refused++;
    else this.#stats.answered++;
    const aa = answers !== undefined;
    c.send(encodeReply(q, { rcode, limit: limitOf(c, q), ttl: this.#ttl, aa, ...(answers && { answers }) }));
  }

  #onQuery(c: Client, msg: Buffer): void {
    this.#stats.queries++;
    const q = parseQuery(msg);
    if (!q) {
      this.#stats.malformed++;
      return;
    }
    try {
      const l = c.listener;
      if (!l.subnets.some((s) => containsIP(s, c.source))) {
        this.#reply(c, q, RCODE.REFUSED);
        return;
      }
      if ((q.flags & OPCODE_MASK) !== 0) {
        this.#reply(c, q, RCODE.NOTIMP);
        return;
      }
      if (q.optCount > 1) {
        this.#reply(c, q, RCODE.FORMERR);
        return;
      }
      if (q.edns && q.edns.version > 0) {
        this.#reply(c, q, RCODE.BADVERS);
        return;
      }
      const sandbox = this.#table.owners.get(l.network)?.get(ipKey(c.source));
      const networks = [l.network];
      for (const n of sandbox === undefined ? [] : (this.#table.networksOf.get(sandbox) ?? [])) {
        if (!networks.includes(n)) networks.push(n);
      }
      const answers = this.#lookup(networks, q);
      if (answers) {
        this.#reply(c, q, RCODE.NOERROR, answers);
        return;
      }
      this.#forward(c, q, sandbox);
    } catch (e) {
      // A bug: count it, keep serving.
      this.#stats.malformed++;
      this.#log.debug('query dropped', { error: e });
    }
  }

  /** Answers from the table, or undefined when the name is not ours (forward it). */
  #lookup(networks: readonly string[], q: Query): Rr[] | undefined {
    if (q.qclass !== CLASS_IN || q.key === undefined) return undefined;
    const key = q.key;
    const t = this.#table;
    const scopes = [...networks, ''];
    if (q.qtype === TYPE.PTR) {
      for (const n of scopes) {
        const target = t.ptr.get(n)?.get(key);
        if (target) return [{ type: TYPE.PTR, rdata: target }];
      }
      return undefined;
    }
    let entry: Entry | undefined;
    for (const n of scopes) {
      entry = t.names.get(n)?.get(key);
      if (entry) break;
    }
    // `name.network`: the name on that network, if the client sees it.
    for (const n of entry ? [] : networks) {
      const suffix = `.${asciiLower(Buffer.from(n, 'utf8').toString('latin1'))}`;
      if (key.length > suffix.length && key.endsWith(suffix)) {
        entry = t.names.get(n)?.get(key.slice(0, -suffix.length));
        if (entry) break;
      }
    }
    if (!entry) return undefined;
    const out: Rr[] = [];
    if (q.qtype === TYPE.A || q.qtype === TYPE.ANY)
      for (const ip of entry.v4) out.push({ type: TYPE.A, rdata: ipToBytes(ip) });
    if (q.qtype === TYPE.AAAA || q.qtype === TYPE.ANY)
      for (const ip of entry.v6) out.push({ type: TYPE.AAAA, rdata: ipToBytes(ip) });
    return out;
  }

  #forward(c: Client, q: Query, sandbox: string | undefined): void {
    const own = sandbox === undefined ? undefined : this.#table.upstreams.get(sandbox);
    // A sandbox's upstream may be one of our own listeners: asking ourselves helps nobody.
    const targets = (own ?? this.#upstreams).filter((u) => {
      const l = this.#listeners.get(u.host);
      return !l || l.port !== u.port;
    });
    if (targets.length === 0) {
      this.#reply(c, q, RCODE.SERVFAIL);
      return;
    }
    if (this.#pending.size >= this.#maxPending) {
      this.#stats.overloaded++;
      this.#reply(c, q, RCODE.SERVFAIL);
      return;
    }
    const id = randomInt(0, 0x10000);
    const timer = setTimeout(() => {
      if (!this.#pending.has(f)) return;
      this.#log.debug('upstream timeout', { question: q.key });
      this.#release(f);
      this.#reply(c, q, RCODE.SERVFAIL);
    }, this.#timeoutMs);
    timer.unref();
    const f: Forward = {
      client: c,
      q,
      id,
      timer,
      closers: [],
      waiting: targets.length,
      lastFailure: undefined,
    };
    this.#pending.add(f);
    if (c.conn) c.conn.inflight++;
    this.#stats.forwarded++;
    const out = Buffer.from(q.raw);
    out.writeUInt16BE(id, 0);
    if (c.conn) this.#forwardTcp(f, targets, out);
    else this.#forwardUdp(f, targets, out);
  }

  /** One fresh socket per family, closed when the forward ends; answers only from the targets. */
  #forwardUdp(f: Forward, targets: readonly Upstream[], out: Buffer): void {
    // Each upstream counts once, whether it answers (even twice) or its send fails.
    const settled = new Set<Upstream>();
    const settle = (u: Upstream): boolean => {
      if (settled.has(u)) return false;
      settled.add(u);
      return true;
    };
    for (const family of [4, 6] as const) {
      const mine = targets.filter((u) => u.ip.family === family);
      if (mine.length === 0) continue;
      const sock = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
      f.closers.push(() => sock.close());
      sock.on('error', (e) => {
        // The implicit bind failed (EMFILE…): no answer can come on this socket.
        this.#log.debug('upstream socket error', { error: e });
        for (const u of mine) if (settle(u)) this.#failed(f, undefined);
      });
      sock.on('message', (msg, rinfo) => {
        const from = tryParseIP(rinfo.address);
        const u = mine.find((x) => x.port === rinfo.port && x.ip.value === from?.value);
        if (!u || !this.#pending.has(f) || !answersQuery(msg, f.id, f.q.question) || !settle(u)) {
          this.#stats.lateAnswers++;
          return;
        }
        this.#upstreamAnswer(f, msg);
      });
      for (const u of mine) {
        try {
          sock.send(out, u.port, u.host, (e) => {
            if (e && settle(u)) this.#failed(f, undefined);
          });
        } catch {
          // closed meanwhile: the forward has ended
          if (settle(u)) this.#failed(f, undefined);
        }
      }
    }
  }

  /** One connection per upstream; its first message is the answer. */
  #forwardTcp(f: Forward, targets: readonly Upstream[], out: Buffer): void {
    for (const u of targets) {
      const sock = net.connect({ host: u.host, port: u.port });
      f.closers.push(() => sock.destroy());
      let buf = Buffer.alloc(0);
      let done = false;
      const fail = () => {
        if (done) return;
        done = true;
        this.#failed(f, undefined);
      };
      sock.on('connect', () => sock.write(frame(out)));
      sock.on('data', (chunk) => {
        if (done) return;
        buf = Buffer.concat([buf, chunk]);
        if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        if (!answersQuery(msg, f.id, f.q.question)) {
          this.#stats.lateAnswers++;
          fail();
          return;
        }
        done = true;
        this.#upstreamAnswer(f, msg);
      });
      sock.on('error', fail);
      sock.on('close', fail);
    }
  }

  #upstreamAnswer(f: Forward, msg: Buffer): void {
    try {
      packet.decode(msg);
    } catch {
      this.#stats.malformed++;
      this.#failed(f, undefined);
      return;
    }
    const relay = Buffer.from(msg);
    relay.writeUInt16BE(f.q.id, 0);
    const rcode = relay.readUInt16BE(2) & 0xf;
    if (rcode === RCODE.SERVFAIL || rcode === RCODE.REFUSED) this.#failed(f, relay);
    else this.#finish(f, relay);
  }

  #failed(f: Forward, relay: Buffer | undefined): void {
    if (!this.#pending.has(f)) return;
    if (relay) f.lastFailure = relay;
    f.waiting--;
    if (f.waiting > 0) return;
    // Every upstream has failed: say so now rather than at the timer.
    if (f.lastFailure) this.#finish(f, f.lastFailure);
    else {
      this.#release(f);
      this.#reply(f.client, f.q, RCODE.SERVFAIL);
    }
  }

  #finish(f: Forward, relay: Buffer): void {
    this.#release(f);
    const rcode = relay.readUInt16BE(2) & 0xf;
    // An upstream that ignored the client's size: the client gets TC and retries over TCP.
    if (relay.length > limitOf(f.client, f.q)) {
      this.#stats.answered++;
      f.client.send(encodeReply(f.q, { rcode, limit: UDP_MIN, tc: true }));
      return;
    }
    if (rcode === RCODE.SERVFAIL) this.#stats.servfail++;
    else this.#stats.answered++;
    f.client.send(relay);
  }

  /** Forget a forward: its timer, sockets and connections, and its connection's bound. */
  #release(f: Forward): void {
    if (!this.#pending.delete(f)) return;
    clearTimeout(f.timer);
    for (const close of f.closers) quietly(close);
    const conn = f.client.conn;
    if (conn) {
      conn.inflight--;
      queueMicrotask(() => this.#pump(f.client.listener, conn, f.client.source));
    }
  }
}
