/**
 * The plugin's own record of what ADD returned, one JSON file per attachment under
 * `<dataDir>/<CNI network name>/<containerId>-<ifname>.json` (dataDir: the config's "dataDir",
 * default /var/lib/cni/weft, next to host-local's /var/lib/cni/networks and libcni's own
 * /var/lib/cni/results). The daemon keeps the real state (it survives the daemon's restarts);
 * this record says which CNI network an attachment was made for, so that GC of one network's
 * configuration never removes another's, and lets an operator see what a runtime was told.
 * Writes are atomic (temp file + rename).
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
  /** The result as printed (in the config's cniVersion). */
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
  }

  read(name: string, containerId: string, ifname: string): CacheEntry | undefined {
    return readEntry(this.file(name, containerId, ifname));
  }

  remove(name: string, containerId: string, ifname: string): void {
    fs.rmSync(this.file(name, containerId, ifname), { force: true });
  }

  list(name: string): CacheEntry[] {
    const d = path.join(this.dir, name);
    let files: string[];
    try {
      files = fs.readdirSync(d).filter((f) => f.endsWith('.json'));
    } catch {
      return [];
    }
    return files.map((f) => readEntry(path.join(d, f))).filter((e): e is CacheEntry => e !== undefined);
  }

  owners(containerId: string, ifname: string): string[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    return names.filter((n) => fs.existsSync(this.file(n, containerId, ifname)));
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
