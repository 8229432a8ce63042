/**
 * The nftables runner of one namespace: `nft` started *inside* the namespace (forked from a
 * switched section, so it talks to that namespace's nf_tables), a whole script per call.
 *
 * `apply` hands the script to `nft -f -` on stdin: nft sends it to the kernel as one
 * transaction, so a batch applies all or nothing, whether nft refuses it (a syntax error, an
 * unknown chain) or the kernel does (an unsupported hook). One batch is also ~50 times faster
 * than a command per rule (../../shared/design/NODE-KERNEL-NOTES.md). nft's complaint becomes a
 * typed error carrying its message, line and column. Every run has a timeout, after which the
 * process is killed by pid.
 *
 * Where libnftables is installed (it is, with Debian's nftables) the same scripts run in-process
 * through it instead (./libnft.ts): the same parser, the same one-transaction batch, the same
 * error text, ~20 ms less per call; `bin` set explicitly or WEFT_NFT_SPAWN forces the process.
 * The library's context is kept between calls and freed after `idleCloseMs` without one (or
 * on `close()`): releasing its socket right after a transaction that deleted rules would wait
 * for the kernel's RCU clean-up (~16 ms, see libnft.ts), and a kept socket keeps the namespace
 * alive, so owners of an Nft close it when they are done with the namespace.
 */
import { WeftError } from '../lib/errors.js';
import * as libnft from './libnft.js';
import type { Netns } from './netns.js';
import { runTool, type ToolResult } from './run.js';

export type NftFamily = 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev';
export const NFT_FAMILIES: readonly NftFamily[] = ['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev'];

export interface NftTable {
  readonly family: NftFamily;
  readonly name: string;
  readonly handle: number;
}

/** One object of `nft -j` output: `{table: …}`, `{chain: …}`, `{rule: …}`, `{set: …}`, `{metainfo: …}`… */
export type NftObject = Readonly<Record<string, Record<string, unknown>>>;

/** `nft -j list …` output (libnftables-json(5)). */
export interface NftRuleset {
  readonly nftables: readonly NftObject[];
}

export interface NftOptions {
  /** The nft executable (default `nft`, found on PATH). */
  readonly bin?: string;
  /** Per-run time limit in ms (default 10 s); the process is killed after it. */
  readonly timeoutMs?: number;
  /** In-process: free the kept libnftables context after this long without a call (default 2 s). */
  readonly idleCloseMs?: number;
}

/** A kept libnftables context is freed after this long without a call. */
const IDLE_CLOSE_MS = 2_000;
/** …and renewed after this many scripts (see #afterRun). */
const RECYCLE_RUNS = 8;
/** How long after a deleting transaction the kernel has surely finished its clean-up (~16 ms). */
const RECYCLE_QUIET_MS = 100;

const WORD_RE = /^[A-Za-z0-9_.-]{1,255}$/;
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,254}$/;

/**
 * Turn nft's stderr into a typed error: the first `FILE:LINE:COL: Error: MESSAGE` names the
 * place; the kernel's refusals (`Could not process rule: <strerror>`) map by errno text, anything
 * else (syntax, evaluation) is INVALID. Pure.
 */
export function nftError(stderr: string, what: string): WeftError {
  const text = stderr.trim();
  const m = /^(?:[^\n:]*):(\d+):(\d+)(?:-(\d+))?: Error: (.+)$/m.exec(text);
  const plain = /^(?:.*?)Error: (.+)$/m.exec(text);
  const message = m?.[4] ?? plain?.[1] ?? (text || 'nft failed without a message');
  const line = m ? Number(m[1]) : undefined;
  const column = m ? Number(m[2]) : undefined;
  // The script line nft quotes right below its message.
  const source = m ? text.slice(m.index + m[0].length + 1).split('\n')[0] : undefined;
  const code = /Operation not permitted|Permission denied/.test(message)
    ? 'PERMISSION'
    : /No such file or directory/.test(message)
      ? 'NOT_FOUND'
      : /File exists/.test(message)
        ? 'EXISTS'
        : /Device or resource busy/.test(message)
          ? 'BUSY'
          : /Operation not supported|Protocol not supported/.test(message)
            ? 'UNSUPPORTED'
            : 'INVALID';
  const where =
    line === undefined ? '' : ` (line ${line}, column ${column}${source ? `: ${source.trim()}` : ''})`;
  return new WeftError(code, `${what}: ${message}${where}`, {
    details: {
      nftMessage: message,
      ...(line !== undefined && { line, column }),
      ...(source !== undefined && { source }),
      stderr: text,
    },
  });
}

function checkFamily(family: string): NftFamily {
  if (!(NFT_FAMILIES as readonly string[]).includes(family)) {
    throw new WeftError(
      'INVALID',
      `nftables family must be one of ${NFT_FAMILIES.join(', ')}, not "${family}"`,
    );
  }
  return family as NftFamily;
}

function checkName(name: string, what: string): string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new WeftError(
      'INVALID',
      `nftables ${what} name "${name}" is invalid: use [A-Za-z0-9_.-], starting with a letter or _`,
    );
  }
  return name;
}

export class Nft {
  readonly #bin: string;
  readonly #timeoutMs: number;
  readonly #inProcess: boolean;
  readonly #idleCloseMs: number;
  #session: libnft.NftSession | undefined;
  #runs = 0;
  #lastDeleting = Number.NEGATIVE_INFINITY;
  #idle: NodeJS.Timeout | undefined;

  constructor(
    private readonly ns: Netns,
    opts: NftOptions = {},
  ) {
    this.#bin = opts.bin ?? 'nft';
    this.#inProcess = opts.bin === undefined && libnft.available();
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#idleCloseMs = opts.idleCloseMs ?? IDLE_CLOSE_MS;
    if (!Number.isInteger(this.#timeoutMs) || this.#timeoutMs <= 0) {
      throw new WeftError('INVALID', `nft timeout must be a positive integer of ms, not ${opts.timeoutMs}`);
    }
  }

  /**
   * Apply a script as one atomic batch (`nft -f -`). On failure nothing of it is applied and
   * the error says why: INVALID (syntax or evaluation, with nft's message, line and column),
   * NOT_FOUND / EXISTS / BUSY / UNSUPPORTED / PERMISSION (the kernel refused), TIMEOUT,
   * UNSUPPORTED when nft is not installed.
   */
  async apply(script: string): Promise<void> {
    if (typeof script !== 'string') throw new WeftError('INVALID', 'an nft script must be a string');
    const r = await this.#run(['-f', '-'], script);
    if (r.code !== 0) throw nftError(r.stderr, `nft -f in ${this.ns.path}`);
  }

  /**
   * `nft -j list <what>` parsed, e.g. `list()` (the whole ruleset), `list('table inet weft')`,
   * `list('chain inet weft forward')`. NOT_FOUND when the object does not exist.
   */
  async list(what = 'ruleset'): Promise<NftRuleset> {
    const words = what.trim().split(/\s+/);
    if (words.length > 6 || !words.every((w) => WORD_RE.test(w))) {
      throw new WeftError('INVALID', `"${what}" is not something nft can list (e.g. "table inet weft")`);
    }
    const r = await this.#run(['-j', 'list', ...words]);
    if (r.code !== 0) throw nftError(r.stderr, `nft list ${what} in ${this.ns.path}`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(r.stdout);
    } catch (e) {
      throw new WeftError('INTERNAL', `nft list ${what}: output is not JSON`, { cause: e });
    }
    if (!parsed || typeof parsed !== 'object' || !Array.isArray((parsed as NftRuleset).nftables)) {
      throw new WeftError('INTERNAL', `nft list ${what}: JSON without an "nftables" array`);
    }
    return parsed as NftRuleset;
  }

  /** Every table of the namespace. */
  async listTables(): Promise<NftTable[]> {
    const out = await this.list('tables');
    return out.nftables.flatMap((o) => {
      const t = o.table;
      if (!t) return [];
      return [{ family: t.family as NftFamily, name: String(t.name), handle: Number(t.handle) }];
    });
  }

  /**
   * Delete a table and everything in it. A table that does not exist is success: the batch
   * declares it (creating an empty one if absent) and deletes it, atomically.
   */
  async deleteTable(family: NftFamily, name: string): Promise<void> {
    const f = checkFamily(family);
    const n = checkName(name, 'table');
    await this.apply(`table ${f} ${n} {\n}\ndelete table ${f} ${n}\n`);
  }

  /**
   * Free the kept libnftables context now (idempotent; a later call makes a new one). Call it
   * before the namespace is deleted: the context's socket would keep it alive until the idle close.
   */
  close(): void {
    if (this.#idle) clearTimeout(this.#idle);
    this.#idle = undefined;
    const s = this.#session;
    this.#session = undefined;
    this.#runs = 0;
    s?.close(); // closing a socket needs no namespace switch
  }

  /**
   * A kept context holds on to memory as it runs (~100 KB a script in the daemon, measured: 20
   * MiB over 200 container starts), so it is renewed every RECYCLE_RUNS scripts — right after a
   * script that deleted nothing when the last deleting one is RECYCLE_QUIET_MS old (then freeing
   * costs nothing), or anyway after four times as many.
   */
  #afterRun(script: string): void {
    this.#runs++;
    const now = performance.now();
    if (/^\s*(flush|delete|destroy|replace)\b/m.test(script)) this.#lastDeleting = now;
    const quiet = now - this.#lastDeleting > RECYCLE_QUIET_MS;
    if ((this.#runs >= RECYCLE_RUNS && quiet) || this.#runs >= 4 * RECYCLE_RUNS) this.close();
  }

  /** Run nft inside the namespace with a time limit; the process is killed by pid after it. */
  async #run(args: readonly string[], stdin?: string): Promise<ToolResult> {
    if (this.#inProcess) {
      // Same command, as one buffer: `-f -` runs stdin; `-j list …` lists as JSON.
      const json = args[0] === '-j';
      const script = args[0] === '-f' ? (stdin ?? '') : args.slice(json ? 1 : 0).join(' ');
      const r = this.ns.run(() => {
        this.#session ??= new libnft.NftSession();
        return this.#session.run(script, {
          outputFlags: json ? libnft.NFT_OUTPUT_JSON : 0,
          file: args[0] === '-f',
        });
      });
      this.#afterRun(script);
      if (!this.#session) return r;
      if (this.#idle) this.#idle.refresh();
      else {
        this.#idle = setTimeout(() => this.close(), this.#idleCloseMs);
        this.#idle.unref();
      }
      return r;
    }
    const r = await runTool(this.ns, this.#bin, args, stdin, this.#timeoutMs);
    if (!r) throw new WeftError('UNSUPPORTED', `${this.#bin} is not installed (apt-get install nftables)`);
    return r;
  }
}
