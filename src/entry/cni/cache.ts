/**
 * The plugin's own record of an attachment, one JSON file per attachment under
 * `<dataDir>/<CNI network name>/<containerId>:<ifname>.json` (dataDir: the config's "dataDir",
 * default /var/lib/cni/weft, next to host-local's /var/lib/cni/networks and libcni's own
 * /var/lib/cni/results). The daemon keeps the real state (it survives the daemon's restarts);
 * this record says which CNI network an attachment was made for, so that GC of one network's
 * configuration never removes another's, and lets an operator see what a runtime was told. ADD
 * writes it `pending` before asking the daemon, so an attachment never exists unowned, and
 * completes it with the result. Writes are atomic (temp file + rename).
 *
 * ":" separates the two parts: neither a CNI container id ([a-zA-Z0-9_.-]) nor an interface name
 * (the kernel refuses it) can hold one. The previous version named files
 * `<containerId>-<ifname>.json`, which is ambiguous; such a file is still read, and only for
 * the attachment its content names.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CniCode, CniError } from './errors.js';

export const DEFAULT_DATA_DIR = '/var/lib/cni/weft';

export interface CacheEntry {
  readonly kind: 'weft-cni-result';
  /** The CNI network name. */
  readonly name: string;
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
  readonly netns: string;
  readonly cniVersion: string;
  /** Written before the daemon's attach; the ADD has not completed (or died). */
  readonly pending?: true;
  /** The result as printed (in the config's cniVersion); null while pending. */
  readonly result: unknown;
  readonly created: string;
}

export interface Cache {
  write(e: CacheEntry): void;
  read(name: string, containerId: string, ifname: string): CacheEntry | undefined;
  remove(name: string, containerId: string, ifname: string): void;
  /** Every entry of one CNI network. */
  list(name: string): CacheEntry[];
  /** The CNI networks that hold an entry for this attachment. */
  owners(containerId: string, ifname: string): string[];
}

export class ResultCache implements Cache {
  constructor(readonly dir: string = DEFAULT_DATA_DIR) {}

  file(name: string, containerId: string, ifname: string): string {
    return path.join(this.dir, name, `${containerId}:${ifname}.json`);
  }

  /** The previous version's name for the record (shared by "a-b"+"c" and "a"+"b-c"). */
  legacyFile(name: string, containerId: string, ifname: string): string {
    return path.join(this.dir, name, `${containerId}-${ifname}.json`);
  }

  /** @throws CniError 5 when the file cannot be written */
  write(e: CacheEntry): void {
    const f = this.file(e.name, e.containerId, e.ifname);
    const tmp = `${f}.${process.pid}.tmp`;
    try {
      fs.mkdirSync(path.dirname(f), { recursive: true, mode: 0o700 });
      fs.writeFileSync(tmp, `${JSON.stringify(e)}\n`, { mode: 0o600 });
      fs.renameSync(tmp, f);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw new CniError(CniCode.IOFailure, `cannot write the result cache ${f}: ${(err as Error).message}`);
    }
    // The new record supersedes an old-named one (which list() would also return); the new one
    // is written, so a failure here changes nothing read.
    try {
      this.#removeLegacy(e.name, e.containerId, e.ifname);
    } catch {}
  }

  read(name: string, containerId: string, ifname: string): CacheEntry | undefined {
    return readEntry(this.file(name, containerId, ifname)) ?? this.#readLegacy(name, containerId, ifname);
  }

  remove(name: string, containerId: string, ifname: string): void {
    fs.rmSync(this.file(name, containerId, ifname), { force: true });
    this.#removeLegacy(name, containerId, ifname);
  }

  list(name: string): CacheEntry[] {
    const d = path.join(this.dir, name);
    let files: string[];
    try {
      files = fs.readdirSync(d).filter((f) => f.endsWith('.json'));
    } catch {
      return [];
    }
    // One entry per attachment: the new-named record wins over an old-named one.
    const byKey = new Map<string, CacheEntry>();
    for (const f of files) {
      const e = readEntry(path.join(d, f));
      if (e === undefined) continue;
      const key = `${e.containerId}\n${e.ifname}`;
      if (!byKey.has(key) || f === path.basename(this.file(name, e.containerId, e.ifname))) byKey.set(key, e);
    }
    return [...byKey.values()];
  }

  owners(containerId: string, ifname: string): string[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    // A new-named file owns even when unreadable (GC then leaves the attachment alone).
    return names.filter(
      (n) =>
        fs.existsSync(this.file(n, containerId, ifname)) ||
        this.#readLegacy(n, containerId, ifname) !== undefined,
    );
  }

  /** The old-named record, if its content is this attachment's. */
  #readLegacy(name: string, containerId: string, ifname: string): CacheEntry | undefined {
    const e = readEntry(this.legacyFile(name, containerId, ifname));
    return e?.containerId === containerId && e.ifname === ifname ? e : undefined;
  }

  #removeLegacy(name: string, containerId: string, ifname: string): void {
    if (this.#readLegacy(name, containerId, ifname) !== undefined)
      fs.rmSync(this.legacyFile(name, containerId, ifname), { force: true });
  }
}

function readEntry(f: string): CacheEntry | undefined {
  try {
    const e = JSON.parse(fs.readFileSync(f, 'utf8')) as CacheEntry;
    return e && e.kind === 'weft-cni-result' ? e : undefined;
  } catch {
    return undefined;
  }
}
