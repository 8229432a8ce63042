/**
 * The host's durable state: networks, sandboxes (containers), endpoints and IP allocations, in
 * one SQLite database under the state dir (better-sqlite3: synchronous, transactional, safe for
 * several processes through SQLite's own locking; WAL journal). Every change the daemon makes
 * is one `tx()`: an allocation and the endpoint that owns it are committed together or not at
 * all, so a crash mid-operation can never leave an address handed out twice or orphaned.
 *
 * Records are stored as JSON documents beside the few columns that need uniqueness or lookup;
 * addresses are kept as text (formatIP) and parsed back on read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { WeftError } from '../lib/errors.js';
import { formatIP, type IPAddr, parseIP } from '../lib/ip.js';
import type { Allocation, IpamStore } from './ipam/index.js';

/** A network as persisted (subnets as text; control parses them into canonical values). */
export interface NetworkRecord {
  readonly id: string;
  readonly name: string;
  readonly driver: string;
  readonly bridge: string;
  readonly mtu: number;
  readonly subnets: readonly { subnet: string; gateway: string; ipRange?: string }[];
  readonly internal: boolean;
  readonly icc: boolean;
  readonly masquerade: boolean;
  /** Runs an embedded DNS server on its gateways (user-defined networks). */
  readonly dns: boolean;
  readonly options: Readonly<Record<string, string>>;
  /** Driver-private state that must survive restarts (e.g. what an uplink moved). */
  readonly driverState?: unknown;
  readonly builtin: boolean;
  readonly created: string;
}

export interface PortRecord {
  readonly proto: 'tcp' | 'udp';
  readonly hostIp?: string;
  readonly hostPort: number;
  readonly hostPortEnd?: number;
  readonly containerPort: number;
  readonly containerPortEnd?: number;
}

export interface SandboxRecord {
  readonly id: string;
  readonly name: string;
  readonly hostname: string;
  readonly cmd: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly dns: readonly string[];
  readonly addHosts: readonly { name: string; ip: string }[];
  readonly ports: readonly PortRecord[];
  /**
   * 'host' when the sandbox shares the host's network namespace; 'external' for an attachment
   * (CNI, Docker): a namespace weft did not make (`netnsPath`), or none yet (Docker moves a bare
   * interface itself), and no process of weft's.
   */
  readonly netnsMode: 'own' | 'host' | 'external';
  /** External sandboxes: who attached it, their container id, the namespace path. */
  readonly owner?: 'cni' | 'docker';
  readonly containerId?: string;
  readonly netnsPath?: string;
  readonly pid?: number;
  readonly startTime?: string;
  readonly status: 'created' | 'running' | 'exited';
  /** The command's exit status (its code, or 128 + a signal's number), once the daemon saw it end. */
  readonly exitCode?: number;
  readonly created: string;
}

export interface EndpointRecord {
  readonly id: string;
  readonly sandboxId: string;
  readonly networkId: string;
  readonly ifname: string;
  /** `ADDR/LEN` strings. */
  readonly addresses: readonly string[];
  readonly mac?: string;
  readonly aliases: readonly string[];
  /** Plumbed only, for a runtime that configures it itself (see EndpointSpec.bare). */
  readonly bare?: boolean;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS networks (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sandboxes (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
  id TEXT PRIMARY KEY, sandbox_id TEXT NOT NULL, network_id TEXT NOT NULL, doc TEXT NOT NULL,
  UNIQUE (sandbox_id, network_id));
CREATE INDEX IF NOT EXISTS endpoints_network ON endpoints (network_id);
CREATE TABLE IF NOT EXISTS ipam (pool TEXT NOT NULL, ip TEXT NOT NULL, owner TEXT NOT NULL, PRIMARY KEY (pool, ip));
CREATE TABLE IF NOT EXISTS ipam_cursor (pool TEXT PRIMARY KEY, ip TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

interface Row {
  id: string;
  doc: string;
}

export class HostState implements IpamStore {
  readonly #db: Database.Database;
  /** Statements prepared once and reused: preparing costs more than running them. */
  readonly #stmts = new Map<string, Database.Statement<never, never>>();
  readonly #parsed = new Map<string, { doc: string; value: unknown }>();
  /**
   * Whole lists read before, while nothing was written since: by this object (`#changed`) or by
   * another connection (SQLite's data_version). The daemon reads the sandboxes and a network's
   * endpoints several times per change (ports, firewall, DNS); each read made 200 row objects.
   */
  readonly #lists = new Map<string, readonly unknown[]>();
  #dataVersion = -1;

  private constructor(db: Database.Database) {
    this.#db = db;
  }

  /** Open (creating if needed) the state database in `stateDir`. */
  static open(stateDir: string): HostState {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const db = new Database(path.join(stateDir, 'state.db'));
    db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode: a commit survives a crash of the daemon; only a power loss can lose
    // the last commits, and it takes the kernel state they describe (namespaces, links, rules)
    // with it. FULL's fsync per commit cost ~0.4 ms of each change.
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    // A host's state is small (a few hundred records): a 1 MiB page cache holds it all, where
    // SQLite's default (2 MiB) would only add resident memory to the daemon.
    db.pragma('cache_size = -1024');
    db.exec(SCHEMA);
    return new HostState(db);
  }

  close(): void {
    this.#stmts.clear();
    this.#db.close();
  }

  /**
   * A record parsed from its row, reused while the row's text is the same: the daemon reads all
   * records back after every change (firewall, DNS), and parsing them again each time was most
   * of that. Records are immutable values (readonly types), so sharing one object is safe.
   */
  #parse<T>(table: 'n' | 's' | 'e', row: Row): T {
    const key = `${table}:${row.id}`;
    const known = this.#parsed.get(key);
    if (known && known.doc === row.doc) return known.value as T;
    const value = JSON.parse(row.doc) as T;
    this.#parsed.set(key, { doc: row.doc, value });
    return value;
  }

  #prep<P extends unknown[] = unknown[], R = unknown>(sql: string): Database.Statement<P, R> {
    let st = this.#stmts.get(sql) as Database.Statement<P, R> | undefined;
    if (!st) {
      st = this.#db.prepare<P, R>(sql);
      this.#stmts.set(sql, st as unknown as Database.Statement<never, never>);
    }
    return st;
  }

  /** Run `fn` in one immediate transaction (serialised with other processes). */
  tx<T>(fn: () => T): T {
    try {
      return this.#db.transaction(fn).immediate();
    } catch (e) {
      // Lists read inside it may hold what was rolled back, and parsed records rows that are
      // no more.
      this.#changed();
      this.#parsed.clear();
      throw e;
    }
  }

  #changed(): void {
    this.#lists.clear();
  }

  /** The list under `key`, read again only after a write (here or by another connection). */
  #list<T>(key: string, read: () => T[]): readonly T[] {
    const version = (
      this.#prep<[], { data_version: number }>('PRAGMA data_version').get() as {
        data_version: number;
      }
    ).data_version;
    if (version !== this.#dataVersion) {
      // Another connection wrote: its deleted rows' parsed records would stay here for good.
      this.#lists.clear();
      this.#parsed.clear();
      this.#dataVersion = version;
    }
    let l = this.#lists.get(key) as readonly T[] | undefined;
    if (!l) {
      l = Object.freeze(read());
      this.#lists.set(key, l);
    }
    return l;
  }

  // ---- networks -----------------------------------------------------------------------------

  networks(): readonly NetworkRecord[] {
    return this.#list('n', () =>
      this.#prep<[], Row>('SELECT id, doc FROM networks ORDER BY name')
        .all()
        .map((r) => this.#parse<NetworkRecord>('n', r)),
    );
  }
  network(nameOrId: string): NetworkRecord | undefined {
    const r = this.#prep<[string, string], Row>('SELECT id, doc FROM networks WHERE name = ? OR id = ?').get(
      nameOrId,
      nameOrId,
    );
    return r ? this.#parse<NetworkRecord>('n', r) : undefined;
  }
  putNetwork(n: NetworkRecord): void {
    try {
      this.#prep(
        'INSERT INTO networks (id, name, doc) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc',
      ).run(n.id, n.name, JSON.stringify(n));
    } catch (e) {
      throw uniqueToExists(e, `network "${n.name}" already exists`);
    } finally {
      this.#changed();
    }
  }
  deleteNetwork(id: string): void {
    this.#changed();
    this.#prep('DELETE FROM networks WHERE id = ?').run(id);
    this.#parsed.delete(`n:${id}`);
  }

  // ---- sandboxes ----------------------------------------------------------------------------

  sandboxes(): readonly SandboxRecord[] {
    return this.#list('s', () =>
      this.#prep<[], Row>('SELECT id, doc FROM sandboxes ORDER BY name')
        .all()
        .map((r) => this.#parse<SandboxRecord>('s', r)),
    );
  }
  sandbox(nameOrId: string): SandboxRecord | undefined {
    const r = this.#prep<[string, string], Row>('SELECT id, doc FROM sandboxes WHERE name = ? OR id = ?').get(
      nameOrId,
      nameOrId,
    );
    return r ? this.#parse<SandboxRecord>('s', r) : undefined;
  }
  /**
   * What a user names a sandbox by, as Docker reads it: its name, its id, or a unique start of
   * its id. Throws CONFLICT when a start matches more than one.
   */
  findSandbox(ref: string): SandboxRecord | undefined {
    const exact = this.sandbox(ref);
    if (exact || !/^[0-9a-f]+$/.test(ref)) return exact;
    const rows = this.#prep<[number, string], Row>(
      'SELECT id, doc FROM sandboxes WHERE substr(id, 1, ?) = ? LIMIT 2',
    ).all(ref.length, ref);
    if (rows.length > 1) {
      throw new WeftError('CONFLICT', `"${ref}" starts more than one container id: give more of it`, {
        details: { prefix: ref },
      });
    }
    return rows[0] ? this.#parse<SandboxRecord>('s', rows[0]) : undefined;
  }
  putSandbox(s: SandboxRecord): void {
    try {
      this.#prep(
        'INSERT INTO sandboxes (id, name, doc) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc',
      ).run(s.id, s.name, JSON.stringify(s));
    } catch (e) {
      throw uniqueToExists(e, `a container named "${s.name}" already exists`);
    } finally {
      this.#changed();
    }
  }
  deleteSandbox(id: string): void {
    this.#changed();
    this.#prep('DELETE FROM sandboxes WHERE id = ?').run(id);
    this.#parsed.delete(`s:${id}`);
  }

  // ---- endpoints ----------------------------------------------------------------------------

  endpoints(filter: { sandboxId?: string; networkId?: string } = {}): readonly EndpointRecord[] {
    const { sandboxId: sb, networkId: net } = filter;
    return this.#list(`e:${sb ?? ''}:${net ?? ''}`, () => this.#endpointsNow(sb, net));
  }

  #endpointsNow(sb: string | undefined, net: string | undefined): EndpointRecord[] {
    // Filtered by SQLite on the indexed columns: callers mostly want one sandbox's or one
    // network's, and parsing every endpoint each time was O(n) per call.
    const rows =
      sb !== undefined && net !== undefined
        ? this.#prep<[string, string], Row>(
            'SELECT id, doc FROM endpoints WHERE sandbox_id = ? AND network_id = ? ORDER BY id',
          ).all(sb, net)
        : sb !== undefined
          ? this.#prep<[string], Row>('SELECT id, doc FROM endpoints WHERE sandbox_id = ? ORDER BY id').all(
              sb,
            )
          : net !== undefined
            ? this.#prep<[string], Row>('SELECT id, doc FROM endpoints WHERE network_id = ? ORDER BY id').all(
                net,
              )
            : this.#prep<[], Row>('SELECT id, doc FROM endpoints ORDER BY id').all();
    return rows.map((r) => this.#parse<EndpointRecord>('e', r));
  }
  putEndpoint(e: EndpointRecord): void {
    try {
      this.#prep(
        'INSERT INTO endpoints (id, sandbox_id, network_id, doc) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc',
      ).run(e.id, e.sandboxId, e.networkId, JSON.stringify(e));
    } catch (err) {
      throw uniqueToExists(err, 'the container is already connected to that network');
    } finally {
      this.#changed();
    }
  }
  deleteEndpoint(id: string): void {
    this.#changed();
    this.#prep('DELETE FROM endpoints WHERE id = ?').run(id);
    this.#parsed.delete(`e:${id}`);
  }

  // ---- IpamStore ----------------------------------------------------------------------------

  allocated(poolId: string): Iterable<Allocation> {
    return this.#prep<[string], { ip: string; owner: string }>('SELECT ip, owner FROM ipam WHERE pool = ?')
      .all(poolId)
      .map((r) => ({ ip: parseIP(r.ip), owner: r.owner }));
  }
  lastAllocated(poolId: string): IPAddr | undefined {
    const r = this.#prep<[string], { ip: string }>('SELECT ip FROM ipam_cursor WHERE pool = ?').get(poolId);
    return r ? parseIP(r.ip) : undefined;
  }
  add(poolId: string, a: Allocation): void {
    this.#prep('INSERT INTO ipam (pool, ip, owner) VALUES (?, ?, ?)').run(poolId, formatIP(a.ip), a.owner);
  }
  setLastAllocated(poolId: string, ip: IPAddr): void {
    this.#prep(
      'INSERT INTO ipam_cursor (pool, ip) VALUES (?, ?) ON CONFLICT(pool) DO UPDATE SET ip = excluded.ip',
    ).run(poolId, formatIP(ip));
  }
  remove(poolId: string, ip: IPAddr): void {
    this.#prep('DELETE FROM ipam WHERE pool = ? AND ip = ?').run(poolId, formatIP(ip));
  }
  /** Forget a whole pool (its network was removed). */
  dropPool(poolId: string): void {
    this.#prep('DELETE FROM ipam WHERE pool = ?').run(poolId);
    this.#prep('DELETE FROM ipam_cursor WHERE pool = ?').run(poolId);
  }
}

function uniqueToExists(e: unknown, message: string): unknown {
  if (e instanceof Error && (e as { code?: string }).code?.startsWith('SQLITE_CONSTRAINT')) {
    return new WeftError('EXISTS', message, { cause: e });
  }
  return e;
}
