/**
 * The daemon's DNS server for user-defined networks: authoritative for the names of sandboxes
 * (their hostnames and `--network-alias`es), forwarding everything else to the host's resolvers.
 * Docker runs one such server per container on 127.0.0.11 inside the container's namespace and
 * redirects with iptables; weft runs one server in the daemon (host namespace) that listens on
 * each network's gateway address, which a sandbox's resolv.conf names directly. No per-sandbox
 * process, socket or NAT rule.
 *
 * How it works
 * - One UDP socket per listen address (port 53 by default). A listener may belong to a network;
 *   records may too. A query that arrives on a network's listener sees the records of that
 *   network and those with no network, so containers resolve only peers they share a network
 *   with, at the peer's address on that network.
 * - A and AAAA (and ANY: both) are answered from the table, authoritatively, with a short TTL
 *   (DEFAULT_TTL = 10 s; Docker answers with 600 s, too long when sandboxes come and go and
 *   addresses are reused). A known name asked for another type gets NOERROR with no answers.
 *   PTR queries for a table address are answered with its first name.
 * - Names the table does not know are never answered NXDOMAIN here: the query is forwarded,
 *   unchanged but for a fresh random id, to every upstream at once; the first useful answer
 *   (not SERVFAIL/REFUSED) wins and is relayed with the client's id. If all upstreams fail the
 *   last failure is relayed; after `timeoutMs` (default 2 s, below the 5 s a glibc client waits)
 *   the client gets SERVFAIL. With no upstreams: SERVFAIL at once. Pending forwards are bounded
 *   (`maxPending`, default 1024, Docker's figure); beyond it queries get SERVFAIL at once.
 * - Whatever cannot be decoded (by dns-packet), responses sent to us, and queries without exactly
 *   one question are dropped and counted (`stats()`); a handler never throws into the socket.
 *   Non-QUERY opcodes get NOTIMP.
 * - UDP only. TCP is not served: own answers that do not fit the client's UDP size (512, or its
 *   EDNS size) are truncated (TC); forwarded answers are already sized by the upstream for the
 *   client's advertised size. A client retrying over TCP after TC gets a refused connection.
 *
 * Costs: one map lookup per query; forwarded queries cost one timer and one map entry each.
 * Listening on an IPv6 gateway needs the address out of DAD (add it with noDad) or bind fails.
 */

import { randomInt } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as packet from 'dns-packet';
import { invalid, WeftError } from '../../lib/errors.js';
import { formatIP, type IPAddr, tryParseIP } from '../../lib/ip.js';
import { type Logger, nullLogger } from '../../lib/log.js';

export const DEFAULT_TTL = 10;
export const DEFAULT_TIMEOUT_MS = 2000;
export const DEFAULT_MAX_PENDING = 1024;
export const DNS_PORT = 53;

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
const QR = 0x8000;
const OPCODE_MASK = 0x7800;

export interface ListenSpec {
  readonly address: string;
  /** Default 53; 0 picks a free port (tests), see `listening()`. */
  readonly port?: number;
  /** The network this listener serves; it then sees that network's records (and network-less ones). */
  readonly network?: string;
}

export interface DnsRecord {
  /** A hostname or alias; case-insensitive, a trailing dot is ignored. */
  readonly name: string;
  readonly ips: readonly IPAddr[];
  /** Visible only on listeners of this network; absent: on every listener. */
  readonly network?: string;
}

export interface DnsServerOptions {
  readonly listen: readonly ListenSpec[];
  /** Upstream resolvers: `1.2.3.4`, `1.2.3.4:5353`, `fd00::1`, `[fd00::1]:5353`. */
  readonly upstreams: readonly string[];
  readonly timeoutMs?: number;
  readonly maxPending?: number;
  readonly ttl?: number;
  readonly log?: Logger;
}

export interface DnsStats {
  queries: number;
  answered: number;
  forwarded: number;
  servfail: number;
  malformed: number;
  overloaded: number;
  lateAnswers: number;
}

interface Upstream {
  readonly ip: IPAddr;
  readonly host: string;
  readonly port: number;
}

interface Listener {
  readonly address: string;
  readonly port: number;
  readonly network: string | undefined;
  readonly socket: dgram.Socket;
}

interface Pending {
  readonly client: { address: string; port: number };
  readonly listener: Listener;
  readonly clientId: number;
  readonly question: string;
  readonly timer: NodeJS.Timeout;
  waiting: number;
  lastFailure: Buffer | undefined;
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

function checkListen(l: ListenSpec): { address: string; port: number; network: string | undefined } {
  const ip = typeof l?.address === 'string' ? tryParseIP(l.address) : undefined;
  if (!ip) throw invalid(`DNS listen address "${String(l?.address)}" is not an IP address`);
  const port = l.port ?? DNS_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalid(`DNS listen port ${port} is out of range`, { port });
  }
  return { address: formatIP(ip), port, network: l.network };
}

/** Lower-case, without the trailing dot: the table key of a DNS name. */
export const canonicalName = (name: string): string => name.toLowerCase().replace(/\.$/, '');

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

interface Entry {
  v4: IPAddr[];
  v6: IPAddr[];
}
/** network ('' for all) → name → addresses; and network → reverse name → name. */
interface Table {
  readonly names: Map<string, Map<string, Entry>>;
  readonly ptr: Map<string, Map<string, string>>;
}

function getOrAdd<K, V>(m: Map<K, V>, k: K, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) {
    v = make();
    m.set(k, v);
  }
  return v;
}

function buildTable(records: readonly DnsRecord[]): Table {
  const names = new Map<string, Map<string, Entry>>();
  const ptr = new Map<string, Map<string, string>>();
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
    const net = r.network ?? '';
    const byName = getOrAdd(names, net, () => new Map<string, Entry>());
    const e = getOrAdd(byName, canonicalName(r.name), (): Entry => ({ v4: [], v6: [] }));
    const rev = getOrAdd(ptr, net, () => new Map<string, string>());
    for (const ip of r.ips) {
      const list = ip.family === 4 ? e.v4 : e.v6;
      if (!list.some((x) => x.value === ip.value)) list.push(ip);
      const rn = reverseName(ip);
      if (!rev.has(rn)) rev.set(rn, r.name.replace(/\.$/, ''));
    }
  }
  return { names, ptr };
}

function bindError(e: unknown, l: { address: string; port: number }): WeftError {
  const code = (e as NodeJS.ErrnoException).code;
  const where = `${l.address}:${l.port}`;
  const details = { address: l.address, port: l.port };
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

export class DnsServer {
  readonly #listeners = new Map<string, Listener>();
  readonly #upstreams: Upstream[];
  readonly #timeoutMs: number;
  readonly #maxPending: number;
  readonly #ttl: number;
  readonly #log: Logger;
  readonly #pending = new Map<number, Pending>();
  #out: { 4?: dgram.Socket; 6?: dgram.Socket } = {};
  #table: Table = { names: new Map(), ptr: new Map() };
  #closed = false;
  readonly #stats: DnsStats = {
    queries: 0,
    answered: 0,
    forwarded: 0,
    servfail: 0,
    malformed: 0,
    overloaded: 0,
    lateAnswers: 0,
  };

  private constructor(upstreams: Upstream[], opts: DnsServerOptions) {
    this.#upstreams = upstreams;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING;
    this.#ttl = opts.ttl ?? DEFAULT_TTL;
    this.#log = (opts.log ?? nullLogger).child({ component: 'dns' });
  }

  /**
   * Validate everything, then bind the upstream sockets and every listener (all or nothing).
   * Throws INVALID (bad address, port, upstream, timeout; an upstream that is one of our own
   * listeners), CONFLICT (port in use), NOT_FOUND (address not on this host), PERMISSION.
   */
  static async start(opts: DnsServerOptions): Promise<DnsServer> {
    const upstreams = opts.upstreams.map(parseUpstream);
    const listens = opts.listen.map(checkListen);
    for (const [what, v, min] of [
      ['timeoutMs', opts.timeoutMs, 1],
      ['maxPending', opts.maxPending, 1],
      ['ttl', opts.ttl, 0],
    ] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < min)) throw invalid(`DNS ${what} ${v} is invalid`);
    }
    const server = new DnsServer(upstreams, opts);
    server.#checkNoLoop(listens);
    try {
      await server.#bindUpstreamSockets();
      for (const l of listens) await server.#bindListener(l);
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

  /** Replace the whole table (names of every network). Throws INVALID for a bad record; the old table stays. */
  setRecords(records: readonly DnsRecord[]): void {
    this.#table = buildTable(records);
  }

  /**
   * Listen on more addresses (a network was created). Idempotent for an address already served
   * (its network label is updated). Throws as `start`; on failure nothing new stays bound.
   */
  async addListen(...specs: ListenSpec[]): Promise<void> {
    if (this.#closed) throw new WeftError('INTERNAL', 'DNS server is closed');
    const listens = specs.map(checkListen);
    this.#checkNoLoop(listens);
    const added: string[] = [];
    try {
      for (const l of listens) {
        const have = this.#listeners.get(l.address);
        if (have && (l.port === 0 || l.port === have.port)) {
          this.#listeners.set(l.address, { ...have, network: l.network });
          continue;
        }
        if (have) this.removeListen(l.address);
        await this.#bindListener(l);
        added.push(l.address);
      }
    } catch (e) {
      for (const a of added) this.removeListen(a);
      throw e;
    }
  }

  /** Stop listening on an address (a network was removed). Idempotent. */
  removeListen(address: string): void {
    const ip = tryParseIP(address);
    const key = ip ? formatIP(ip) : address;
    const l = this.#listeners.get(key);
    if (!l) return;
    this.#listeners.delete(key);
    try {
      l.socket.close();
    } catch {
      // already closed
    }
  }

  /** Where the server listens (with the real port when 0 was asked). */
  listening(): { address: string; port: number; network?: string }[] {
    return [...this.#listeners.values()].map((l) => ({
      address: l.address,
      port: l.port,
      ...(l.network !== undefined && { network: l.network }),
    }));
  }

  stats(): DnsStats {
    return { ...this.#stats };
  }

  get pending(): number {
    return this.#pending.size;
  }

  /** Close every socket and drop pending forwards. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const a of [...this.#listeners.keys()]) this.removeListen(a);
    for (const p of this.#pending.values()) clearTimeout(p.timer);
    this.#pending.clear();
    for (const s of [this.#out[4], this.#out[6]]) {
      try {
        s?.close();
      } catch {
        // already closed
      }
    }
    this.#out = {};
  }

  #checkNoLoop(listens: readonly { address: string; port: number }[]): void {
    for (const u of this.#upstreams) {
      for (const l of listens) {
        if (u.host === l.address && u.port === l.port) {
          throw invalid(`upstream resolver ${u.host}:${u.port} is this server itself`, { upstream: u.host });
        }
      }
    }
  }

  async #bindUpstreamSockets(): Promise<void> {
    for (const family of [4, 6] as const) {
      if (!this.#upstreams.some((u) => u.ip.family === family)) continue;
      const s = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
      this.#out[family] = s;
      s.on('message', (msg, rinfo) => this.#onUpstreamMessage(msg, rinfo));
      s.on('error', (e) => this.#log.warn('upstream socket error', { error: e }));
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(0, () => {
          s.off('error', reject);
          resolve();
        });
      });
    }
  }

  async #bindListener(l: { address: string; port: number; network: string | undefined }): Promise<void> {
    const family = tryParseIP(l.address)!.family;
    const socket = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6' });
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => {
        try {
          socket.close();
        } catch {
          // never bound
        }
        reject(bindError(e, l));
      };
      socket.once('error', onError);
      socket.bind({ address: l.address, port: l.port, exclusive: true }, () => {
        socket.off('error', onError);
        resolve();
      });
    });
    const listener: Listener = {
      address: l.address,
      port: socket.address().port,
      network: l.network,
      socket,
    };
    socket.on('error', (e) => this.#log.warn('listener socket error', { address: l.address, error: e }));
    socket.on('message', (msg, rinfo) => {
      // The listener's current network label (addListen may update it).
      const current = this.#listeners.get(listener.address);
      this.#onQuery(current?.socket === socket ? current : listener, msg, rinfo);
    });
    this.#listeners.set(l.address, listener);
  }

  #send(l: Listener, buf: Buffer, to: { address: string; port: number }): void {
    try {
      l.socket.send(buf, to.port, to.address, (e) => {
        if (e) this.#log.debug('send failed', { to: to.address, error: e });
      });
    } catch (e) {
      // the listener was closed meanwhile
      this.#log.debug('send failed', { to: to.address, error: e });
    }
  }

  #reply(
    l: Listener,
    to: { address: string; port: number },
    q: packet.DecodedPacket,
    rcode: number,
    answers: packet.Answer[] = [],
    authoritative = false,
  ): void {
    const flags =
      QR |
      ((q.flags ?? 0) & OPCODE_MASK) |
      (q.flag_rd ? packet.RECURSION_DESIRED : 0) |
      packet.RECURSION_AVAILABLE |
      (authoritative ? packet.AUTHORITATIVE_ANSWER : 0) |
      rcode;
    const base: packet.Packet = { type: 'response', id: q.id ?? 0, flags, questions: q.questions ?? [] };
    let out: packet.Packet = { ...base, answers };
    // Fit the client's UDP size: 512 bytes, or what it advertised with EDNS.
    const opt = (q.additionals ?? []).find((a): a is packet.OptAnswer => a.type === 'OPT');
    const limit = Math.max(512, Math.min(opt?.udpPayloadSize ?? 512, 4096));
    let n = answers.length;
    while (n > 0 && packet.encodingLength(out) > limit) {
      n--;
      out = { ...base, flags: flags | packet.TRUNCATED_RESPONSE, answers: answers.slice(0, n) };
    }
    if (rcode === RCODE.SERVFAIL) this.#stats.servfail++;
    else this.#stats.answered++;
    this.#send(l, packet.encode(out), to);
  }

  #onQuery(l: Listener, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.#stats.queries++;
    let q: packet.DecodedPacket;
    try {
      q = packet.decode(msg);
    } catch {
      this.#stats.malformed++;
      return;
    }
    const question = q.questions?.[0];
    if (q.flag_qr || question === undefined || q.questions?.length !== 1) {
      this.#stats.malformed++;
      return;
    }
    const client = { address: rinfo.address, port: rinfo.port };
    try {
      if (((q.flags ?? 0) & OPCODE_MASK) !== 0) {
        this.#reply(l, client, q, RCODE.NOTIMP);
        return;
      }
      const answers = this.#lookup(l, question);
      if (answers) {
        this.#reply(l, client, q, RCODE.NOERROR, answers, true);
        return;
      }
      this.#forward(l, client, q, question, msg);
    } catch (e) {
      // A bug or a packet dns-packet decodes but cannot re-encode: count it, keep serving.
      this.#stats.malformed++;
      this.#log.debug('query dropped', { error: e });
    }
  }

  /** Answers from the table, or undefined when the name is not ours (forward it). */
  #lookup(l: Listener, question: packet.Question): packet.Answer[] | undefined {
    if ((question.class ?? 'IN') !== 'IN') return undefined;
    const key = canonicalName(question.name);
    const nets = l.network === undefined ? [''] : [l.network, ''];
    if (question.type === 'PTR') {
      for (const net of nets) {
        const target = this.#table.ptr.get(net)?.get(key);
        if (target !== undefined)
          return [{ type: 'PTR', name: question.name, ttl: this.#ttl, class: 'IN', data: target }];
      }
      return undefined;
    }
    let entry: Entry | undefined;
    for (const net of nets) {
      const e = this.#table.names.get(net)?.get(key);
      if (e) entry = entry ? { v4: [...entry.v4, ...e.v4], v6: [...entry.v6, ...e.v6] } : e;
    }
    if (!entry) return undefined;
    const out: packet.Answer[] = [];
    const want4 = question.type === 'A' || (question.type as string) === 'ANY';
    const want6 = question.type === 'AAAA' || (question.type as string) === 'ANY';
    if (want4)
      for (const ip of entry.v4)
        out.push({ type: 'A', name: question.name, ttl: this.#ttl, class: 'IN', data: formatIP(ip) });
    if (want6)
      for (const ip of entry.v6)
        out.push({ type: 'AAAA', name: question.name, ttl: this.#ttl, class: 'IN', data: formatIP(ip) });
    return out;
  }

  #forward(
    l: Listener,
    client: { address: string; port: number },
    q: packet.DecodedPacket,
    question: packet.Question,
    msg: Buffer,
  ): void {
    const targets = this.#upstreams.filter((u) => this.#out[u.ip.family] !== undefined);
    if (targets.length === 0) {
      this.#reply(l, client, q, RCODE.SERVFAIL);
      return;
    }
    if (this.#pending.size >= this.#maxPending) {
      this.#stats.overloaded++;
      this.#reply(l, client, q, RCODE.SERVFAIL);
      return;
    }
    let id = randomInt(0, 0x10000);
    for (let i = 0; i < 16 && this.#pending.has(id); i++) id = randomInt(0, 0x10000);
    if (this.#pending.has(id)) {
      this.#stats.overloaded++;
      this.#reply(l, client, q, RCODE.SERVFAIL);
      return;
    }
    const timer = setTimeout(() => {
      const p = this.#pending.get(id);
      if (p?.timer !== timer) return;
      this.#pending.delete(id);
      this.#log.debug('upstream timeout', { name: question.name, type: question.type });
      this.#reply(p.listener, p.client, q, RCODE.SERVFAIL);
    }, this.#timeoutMs);
    timer.unref();
    this.#pending.set(id, {
      client,
      listener: l,
      clientId: q.id ?? 0,
      question: canonicalName(question.name),
      timer,
      waiting: targets.length,
      lastFailure: undefined,
    });
    const out = Buffer.from(msg);
    out.writeUInt16BE(id, 0);
    this.#stats.forwarded++;
    for (const u of targets) {
      this.#out[u.ip.family]!.send(out, u.port, u.host, (e) => {
        if (e) this.#upstreamFailed(id, undefined);
      });
    }
  }

  #onUpstreamMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    let r: packet.DecodedPacket;
    try {
      r = packet.decode(msg);
    } catch {
      this.#stats.malformed++;
      return;
    }
    const p = r.id === undefined ? undefined : this.#pending.get(r.id);
    const fromUpstream = this.#upstreams.some(
      (u) => u.port === rinfo.port && tryParseIP(rinfo.address)?.value === u.ip.value,
    );
    const q0 = r.questions?.[0];
    if (!p || !fromUpstream || !r.flag_qr || !q0 || canonicalName(q0.name) !== p.question) {
      this.#stats.lateAnswers++;
      return;
    }
    const rcode = msg.readUInt16BE(2) & 0xf;
    const relay = Buffer.from(msg);
    relay.writeUInt16BE(p.clientId, 0);
    if (rcode === RCODE.SERVFAIL || rcode === RCODE.REFUSED) {
      this.#upstreamFailed(r.id!, relay);
      return;
    }
    this.#finish(r.id!, p, relay);
  }

  #upstreamFailed(id: number, relay: Buffer | undefined): void {
    const p = this.#pending.get(id);
    if (!p) return;
    if (relay) p.lastFailure = relay;
    p.waiting--;
    // Every upstream has failed: relay the last failure now rather than waiting for the timer
    // (a send error alone leaves it to the timer, which answers SERVFAIL).
    if (p.waiting <= 0 && p.lastFailure) this.#finish(id, p, p.lastFailure);
  }

  #finish(id: number, p: Pending, relay: Buffer): void {
    clearTimeout(p.timer);
    this.#pending.delete(id);
    if ((relay.readUInt16BE(2) & 0xf) === RCODE.SERVFAIL) this.#stats.servfail++;
    else this.#stats.answered++;
    this.#send(p.listener, relay, p.client);
  }
}
