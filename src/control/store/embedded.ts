/**
 * The embedded registry: the shared store for hosts on one machine (the lab, a single host),
 * one SQLite file opened by every daemon that shares it, each in its own process.
 *
 * How it works. Three tables: `kv` (the live keys), `meta` (the store revision and how far the
 * history was compacted) and `events` (one row per revision: what changed). Every write is one
 * `BEGIN IMMEDIATE` transaction, so writers from all processes are serialised by SQLite's own
 * lock (busy_timeout makes them wait for each other rather than fail): the revision counter, the
 * key and its event are committed together, and revisions are committed in order. That is what
 * lets a watcher read the events table as a log: it never sees revision N+1 without N.
 *
 * TTL. A key carries `expires_at`; reads filter expired keys out, and every write transaction
 * first deletes the keys that have expired (each a 'delete' event, as etcd's lease expiry is).
 * While watches are open, each poll also checks for expired keys with a cheap indexed read and
 * sweeps them in a write transaction, so watchers see expiries within one poll period.
 *
 * Watch. No cross-process notification exists in SQLite, so watchers poll the events table
 * (every `pollMs`, default 100 ms). Two hints make delivery quicker than the period: a write
 * through this same object polls at once, and every writer touches the database file's mtime
 * after its commit, which watchers in other processes see through fs.watch (inotify) and poll
 * on. (The `-wal` file's own change events are useless here: they fire when the frames are
 * written, before the commit becomes visible to readers.) The timer alone stays correct. A
 * watch keeps its cursor (the last revision it scanned) and delivers each event exactly once,
 * in order. The log keeps the last `historyLimit` revisions (default 10,000); a watch whose
 * cursor falls behind the compacted revision gets onCompacted, and its owner re-lists.
 *
 * Cost: a write is one small transaction with an fsync (synchronous=FULL: a lease must survive
 * power loss); a poll is one indexed range read. better-sqlite3 is synchronous: a writer waiting
 * for another process's lock blocks this event loop for at most busy_timeout (5 s).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { invalid, WeftError } from '../../lib/errors.js';
import { checkKey, checkRevision, checkWrite } from './common.js';
import type { KvEntry, PutOptions, Registry, Watch, WatchEvent, WatchHandlers } from './types.js';

export interface EmbeddedOptions {
  /** How often watches poll the events table, in ms (default 100). */
  readonly pollMs?: number;
  /** Revisions of history kept for watches (default 10,000). */
  readonly historyLimit?: number;
  /** How long a write waits for another process's lock, in ms (default 5,000). */
  readonly busyTimeoutMs?: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY, value TEXT NOT NULL, mod_revision INTEGER NOT NULL, expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
CREATE TABLE IF NOT EXISTS events (
  revision INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL, value TEXT, expires_at INTEGER
);
`;

interface KvRow {
  key: string;
  value: string;
  mod_revision: number;
  expires_at: number | null;
}
interface EventRow {
  revision: number;
  key: string;
  type: 'put' | 'delete';
  value: string | null;
  expires_at: number | null;
}

const toEntry = (r: KvRow): KvEntry => ({
  key: r.key,
  value: r.value,
  modRevision: r.mod_revision,
  ...(r.expires_at === null ? {} : { expiresAt: r.expires_at }),
});

/** Most events one poll scans per watch before yielding to the event loop. */
const SCAN_BATCH = 1000;
const SCAN_BATCHES_PER_POLL = 10;

export class EmbeddedRegistry implements Registry {
  readonly kind = 'embedded' as const;
  readonly address: string;
  readonly #db: Database.Database;
  readonly #pollMs: number;
  readonly #historyLimit: number;
  readonly #watches = new Set<EmbeddedWatch>();
  #timer: NodeJS.Timeout | undefined;
  #fileWatcher: fs.FSWatcher | undefined;
  #kick: NodeJS.Immediate | undefined;
  #closed = false;
  readonly #q;

  private constructor(file: string, db: Database.Database, opts: EmbeddedOptions) {
    this.address = file;
    this.#db = db;
    this.#pollMs = opts.pollMs ?? 100;
    this.#historyLimit = opts.historyLimit ?? 10_000;
    this.#q = {
      get: db.prepare<[string, number], KvRow>(
        'SELECT * FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)',
      ),
      // Keys sort by their UTF-8 bytes (BINARY collation), as etcd's do; the prefix test is
      // done in JS (startsWith), stopping at the first key past the prefix.
      from: db.prepare<[string, number], KvRow>(
        'SELECT * FROM kv WHERE key >= ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY key',
      ),
      meta: db.prepare<[string], { value: number }>('SELECT value FROM meta WHERE name = ?'),
      setMeta: db.prepare<[number, string]>('UPDATE meta SET value = ? WHERE name = ?'),
      bump: db.prepare<[], { value: number }>(
        "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
      ),
      upsert: db.prepare<[string, string, number, number | null]>(
        `INSERT INTO kv (key, value, mod_revision, expires_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision,
         expires_at = excluded.expires_at`,
      ),
      del: db.prepare<[string]>('DELETE FROM kv WHERE key = ?'),
      event: db.prepare<[number, string, string, string | null, number | null]>(
        'INSERT INTO events (revision, key, type, value, expires_at) VALUES (?, ?, ?, ?, ?)',
      ),
      trim: db.prepare<[number]>('DELETE FROM events WHERE revision <= ?'),
      expired: db.prepare<[number], { key: string }>(
        'SELECT key FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?',
      ),
      anyExpired: db.prepare<[number], { one: number }>(
        'SELECT 1 AS one FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1',
      ),
      events: db.prepare<[number, number], EventRow>(
        'SELECT * FROM events WHERE revision > ? ORDER BY revision LIMIT ?',
      ),
    };
  }

  /**
   * Open (creating if needed) the store at `file`, an absolute path; its folder is created.
   * Throws INVALID for a relative path or bad options, UNAVAILABLE when the file cannot be opened
   * or stays locked by another process beyond busy_timeout.
   */
  static open(file: string, opts: EmbeddedOptions = {}): EmbeddedRegistry {
    if (!path.isAbsolute(file)) throw invalid(`embedded store path must be absolute: "${file}"`);
    for (const [name, v] of Object.entries(opts)) {
      if (v !== undefined && (!Number.isInteger(v) || (v as number) < 1)) {
        throw invalid(`embedded store option ${name} must be a positive integer: ${v}`);
      }
    }
    let db: Database.Database | undefined;
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      db = new Database(file);
      // busy_timeout first: switching to WAL and creating the schema may meet another opener.
      db.pragma(`busy_timeout = ${opts.busyTimeoutMs ?? 5000}`);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      const d = db;
      d.transaction(() => d.exec(SCHEMA)).immediate();
      return new EmbeddedRegistry(file, db, opts);
    } catch (e) {
      db?.close();
      throw unavailable(`cannot open the embedded store ${file}`, e, file);
    }
  }

  /** Throws UNAVAILABLE when the file cannot be read. */
  async get(key: string): Promise<KvEntry | undefined> {
    checkKey(key);
    const row = this.#guard('get', () => this.#q.get.get(key, Date.now()));
    return row && toEntry(row);
  }

  /** Throws UNAVAILABLE when the file cannot be read. */
  async list(prefix: string): Promise<{ entries: KvEntry[]; revision: number }> {
    return this.#guard('list', () =>
      // One read transaction: the entries and the revision come from the same snapshot.
      this.#db.transaction(() => {
        const entries: KvEntry[] = [];
        for (const row of this.#q.from.iterate(prefix, Date.now())) {
          if (!row.key.startsWith(prefix)) break;
          entries.push(toEntry(row));
        }
        return { entries, revision: this.#meta('revision') };
      })(),
    );
  }

  /** Throws INVALID for a bad key or TTL, UNAVAILABLE when the store is locked or unreadable. */
  async create(key: string, value: string, opts: PutOptions = {}): Promise<KvEntry | undefined> {
    checkWrite(key, value, opts.ttlSeconds);
    return this.#write('create', (now) =>
      this.#q.get.get(key, now) ? undefined : this.#set(key, value, opts.ttlSeconds, now),
    );
  }

  /** Throws INVALID for a bad key, TTL or revision, UNAVAILABLE as create. */
  async update(
    key: string,
    value: string,
    opts: PutOptions & { ifRevision: number },
  ): Promise<KvEntry | undefined> {
    checkWrite(key, value, opts.ttlSeconds, opts.ifRevision);
    return this.#write('update', (now) =>
      this.#q.get.get(key, now)?.mod_revision === opts.ifRevision
        ? this.#set(key, value, opts.ttlSeconds, now)
        : undefined,
    );
  }

  /** Throws INVALID for a bad key or TTL, UNAVAILABLE as create. */
  async put(key: string, value: string, opts: PutOptions = {}): Promise<KvEntry> {
    checkWrite(key, value, opts.ttlSeconds);
    return this.#write('put', (now) => this.#set(key, value, opts.ttlSeconds, now));
  }

  /** Throws INVALID for a bad key or revision, UNAVAILABLE as create. */
  async delete(key: string, opts: { ifRevision?: number } = {}): Promise<boolean> {
    checkKey(key);
    if (opts.ifRevision !== undefined) checkRevision(opts.ifRevision, 'ifRevision');
    return this.#write('delete', (now) => {
      const row = this.#q.get.get(key, now);
      if (!row || (opts.ifRevision !== undefined && row.mod_revision !== opts.ifRevision)) return false;
      this.#remove(key);
      return true;
    });
  }

  /**
   * Watch `prefix` from `afterRevision`. Throws INVALID for a bad revision; store errors during
   * the watch go to onError and the poll retries at its next period.
   */
  watch(prefix: string, afterRevision: number, handlers: WatchHandlers): Watch {
    checkRevision(afterRevision, 'afterRevision');
    if (this.#closed) throw new WeftError('UNAVAILABLE', `embedded store ${this.address} is closed`);
    const w = new EmbeddedWatch(prefix, afterRevision, handlers, () => this.#unwatch(w));
    this.#watches.add(w);
    this.#timer ??= setInterval(() => this.#poll(), this.#pollMs).unref();
    this.#fileWatcher ??= this.#watchFile();
    this.#schedule(); // history is delivered at once, not after the first period
    return w;
  }

  /**
   * Discard the watch history before `revision` (as etcd's compact): watches from an earlier
   * revision get onCompacted. Throws INVALID for a revision beyond the store's, UNAVAILABLE as
   * create. Normally not needed: the history is trimmed to historyLimit as writes go.
   */
  async compact(revision: number): Promise<void> {
    checkRevision(revision);
    this.#guard('compact', () =>
      this.#db
        .transaction(() => {
          if (revision > this.#meta('revision')) {
            throw invalid(`cannot compact beyond the store revision: ${revision}`);
          }
          if (revision - 1 > this.#meta('compacted')) {
            this.#q.trim.run(revision - 1);
            this.#q.setMeta.run(revision - 1, 'compacted');
          }
        })
        .immediate(),
    );
  }

  /** Stop every timer and close the file; pending watches end silently. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#watches]) w.close();
    if (this.#kick) clearImmediate(this.#kick);
    this.#db.close();
  }

  // ---- internals ----------------------------------------------------------------------------

  #meta(name: 'revision' | 'compacted'): number {
    return this.#q.meta.get(name)!.value;
  }

  /** One immediate (write-locked) transaction; expired keys are swept first. */
  #write<T>(op: string, fn: (now: number) => T): T {
    const out = this.#guard(op, () =>
      this.#db
        .transaction(() => {
          const now = Date.now();
          this.#sweep(now);
          return fn(now);
        })
        .immediate(),
    );
    // Committed: wake watchers in other processes (an inotify attribute event; ~2 µs).
    try {
      const t = new Date();
      fs.utimesSync(this.address, t, t);
    } catch {
      // only a hint
    }
    this.#schedule();
    return out;
  }

  #sweep(now: number): void {
    for (const { key } of this.#q.expired.all(now)) this.#remove(key);
  }

  #set(key: string, value: string, ttl: number | undefined, now: number): KvEntry {
    const expiresAt = ttl === undefined ? null : now + ttl * 1000;
    const rev = this.#bump(key, 'put', value, expiresAt);
    this.#q.upsert.run(key, value, rev, expiresAt);
    return toEntry({ key, value, mod_revision: rev, expires_at: expiresAt });
  }

  #remove(key: string): void {
    this.#bump(key, 'delete', null, null);
    this.#q.del.run(key);
  }

  /** Next revision, with its event; trims the history once it outgrows the limit by 1/16. */
  #bump(key: string, type: 'put' | 'delete', value: string | null, expiresAt: number | null): number {
    const rev = this.#q.bump.get()!.value;
    this.#q.event.run(rev, key, type, value, expiresAt);
    const keepFrom = rev - this.#historyLimit;
    if (keepFrom - this.#meta('compacted') > Math.max(1, this.#historyLimit >> 4)) {
      this.#q.trim.run(keepFrom);
      this.#q.setMeta.run(keepFrom, 'compacted');
    }
    return rev;
  }

  #guard<T>(op: string, fn: () => T): T {
    if (this.#closed) throw new WeftError('UNAVAILABLE', `embedded store ${this.address} is closed`);
    try {
      return fn();
    } catch (e) {
      if (e instanceof WeftError) throw e;
      throw unavailable(`embedded store ${op} failed`, e, this.address);
    }
  }

  /** Poll soon (after a local write, or for a new watch's history). */
  #schedule(): void {
    if (this.#watches.size === 0 || this.#kick) return;
    this.#kick = setImmediate(() => {
      this.#kick = undefined;
      this.#poll();
    }).unref();
  }

  #poll(): void {
    if (this.#closed) return;
    try {
      // Sweeping needs the write lock: take it only when something has expired.
      if (this.#q.anyExpired.get(Date.now())) this.#write('expire', () => undefined);
    } catch (e) {
      for (const w of this.#watches) w.error(e as WeftError);
    }
    for (const w of [...this.#watches]) {
      try {
        w.poll(this.#db, this.#q.events, () => this.#meta('compacted'));
      } catch (e) {
        w.error(unavailable('embedded store watch poll failed', e, this.address));
      }
    }
  }

  #unwatch(w: EmbeddedWatch): void {
    this.#watches.delete(w);
    if (this.#watches.size > 0) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#fileWatcher?.close();
    this.#fileWatcher = undefined;
  }

  /** Poll when a writer touched the file (see #write). Only a hint: failing to watch is fine. */
  #watchFile(): fs.FSWatcher | undefined {
    const base = path.basename(this.address);
    try {
      // The folder, not the file, so that a file replaced on disk is still followed.
      const w = fs.watch(path.dirname(this.address), { persistent: false }, (_ev, name) => {
        if (name === base) this.#schedule();
      });
      w.on('error', () => undefined);
      return w;
    } catch {
      return undefined;
    }
  }
}

class EmbeddedWatch implements Watch {
  #cursor: number;
  #closed = false;

  constructor(
    readonly prefix: string,
    after: number,
    readonly handlers: WatchHandlers,
    readonly onClose: () => void,
  ) {
    this.#cursor = after;
  }

  poll(
    db: Database.Database,
    events: Database.Statement<[number, number], EventRow>,
    compacted: () => number,
  ) {
    for (let i = 0; i < SCAN_BATCHES_PER_POLL && !this.#closed; i++) {
      // The compaction mark and the events are read in one snapshot.
      const batch = db.transaction(() =>
        this.#cursor < compacted() ? undefined : events.all(this.#cursor, SCAN_BATCH),
      )();
      if (!batch) {
        this.close();
        this.handlers.onCompacted();
        return;
      }
      const last = batch.at(-1);
      if (!last) return;
      // The cursor moves past events of other prefixes too, before the handler runs: a
      // handler that throws still never sees an event twice.
      this.#cursor = last.revision;
      const out: WatchEvent[] = [];
      for (const r of batch) {
        if (!r.key.startsWith(this.prefix)) continue;
        out.push(
          r.type === 'put'
            ? {
                type: 'put',
                key: r.key,
                value: r.value ?? '',
                revision: r.revision,
                ...(r.expires_at === null ? {} : { expiresAt: r.expires_at }),
              }
            : { type: 'delete', key: r.key, revision: r.revision },
        );
      }
      if (out.length > 0) this.handlers.onEvents(out);
      if (batch.length < SCAN_BATCH) return;
    }
  }

  error(e: WeftError): void {
    if (!this.#closed) this.handlers.onError?.(e);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.onClose();
  }
}

function unavailable(message: string, cause: unknown, file: string): WeftError {
  const detail = cause instanceof Error ? `: ${cause.message}` : '';
  return new WeftError('UNAVAILABLE', `${message}${detail}`, { cause, details: { store: file } });
}
