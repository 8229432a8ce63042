/**
 * Applying the firewall for real: the host's side of ./render.ts and ./iptables.ts.
 *
 * `HostFirewall.apply(state)` validates first (planFirewall: bad input throws before anything
 * changes), then, as one transaction (lib/rollback.ts):
 *   1. sysctls   `requiredSysctls(state)` in the host namespace (forwarding, br_netfilter for
 *                icc=false, route_localnet); a value that cannot be set fails the apply, a
 *                changed one is restored when a later step fails; skipped when the list is
 *                the previous apply's (a container coming or going) and was read less than
 *                `sysctlRecheckMs` ago, except on `repair`
 *   2. nftables  `renderTables(state)` as ONE `nft -f` batch (weft's `inet weft` table replaced
 *                atomically); undone by re-applying the previous state's table (or removing it)
 *   3. iptables  the coexistence piece (WEFT-FORWARD and its jump), per family: the current
 *                filter table is read with `iptables-save -t filter` / `ip6tables-save -t filter`
 *                run inside the host namespace, the difference rendered by renderIptables and
 *                fed to `iptables-restore --noflush` / `ip6tables-restore --noflush` on stdin.
 *                A family whose tools are missing is skipped (logged): with no iptables there is
 *                no foreign FORWARD policy to coexist with.
 * After a successful apply, the conntrack entries of port mappings that were in the previous
 * state but are not in the new one are deleted, so a removed published port stops answering at
 * once (UDP "connections" and established TCP ones would otherwise keep their DNAT binding): the
 * entries of the mapping's family and protocol whose original destination port is one of its
 * host ports, whose reply comes from its target at the matching container port and, for a
 * mapping bound to one host address, whose original destination is that address. This runs
 * in-process over ctnetlink (kernel/conntrack.ts: one dump, then one delete per entry) on a
 * socket kept open between applies; spawning the `conntrack` tool cost ~6 ms a port, and ~16 ms
 * more at its exit, when the release of its netfilter socket made the kernel wait for the RCU
 * clean-up of the rules just deleted. A failure here is logged, not thrown: the rules are in
 * place. `close()` releases that socket (daemon shutdown; tests, before their namespace goes).
 *
 * `remove()` removes weft's table and the iptables piece exactly (idempotent; it works from what
 * the kernel holds, so it also cleans up after a previous process) and forgets the conntrack
 * entries of the last applied state's ports. Sysctls are left as they are (forwarding may serve
 * others); so is an iptables filter table that iptables-nft created to hold the jump.
 *
 * Calls are serialised: an apply or remove starts when the previous one has finished. The last
 * applied state is kept in memory to diff against; after a restart the first apply has nothing
 * to diff against and cleans no conntrack entries.
 *
 * Every process (the iptables tools) runs inside the host namespace (forked from a switched
 * section) with a time limit, after which it is killed by pid.
 */
import { Conntrack, type CtFilter } from '../../kernel/conntrack.js';
import type { NetHandle } from '../../kernel/handle.js';
import { Nft } from '../../kernel/nft.js';
import { runTool, type ToolResult } from '../../kernel/run.js';
import { WeftError } from '../../lib/errors.js';
import { formatIP } from '../../lib/ip.js';
import { type Logger, nullLogger } from '../../lib/log.js';
import { type Rollback, transaction } from '../../lib/rollback.js';
import { type IptablesBatch, type IptablesSaved, renderIptables, renderIptablesRemoval } from './iptables.js';
import { type Plan, type PlannedPort, planFirewall } from './plan.js';
import {
  renderInsert,
  renderRemoval,
  renderRuleUpdate,
  renderTables,
  requiredSysctls,
  type Sysctl,
} from './render.js';
import type { FirewallState } from './types.js';

export type FirewallTool = 'iptables-save' | 'ip6tables-save' | 'iptables-restore' | 'ip6tables-restore';

export interface HostFirewallOptions {
  /** The host namespace's handle (root namespace in production, a lab host in tests). */
  readonly host: NetHandle;
  /** The nft runner (default: one for the host namespace). */
  readonly nft?: Nft;
  /** The conntrack table (default: one for the host namespace, closed by `close()`). */
  readonly conntrack?: Conntrack;
  readonly log?: Logger;
  /** Executables of the helper tools (default: the tool's name, found on PATH). */
  readonly tools?: Partial<Record<FirewallTool, string>>;
  /** Per-process time limit in ms (default 10 s). */
  readonly timeoutMs?: number;
  /**
   * Sysctls are read again on an apply at least this long after they were last read (default
   * 1 s), even when their list is the same: something outside weft (`sysctl --system`) may have
   * reset them, and no request would put them back otherwise.
   */
  readonly sysctlRecheckMs?: number;
}

interface Applied {
  readonly state: FirewallState;
  readonly plan: Plan;
  /** The sysctls ensured for it (key=value, in order). */
  readonly sysctls: string;
  /** When they were last read (Date.now()). */
  readonly sysctlsAt: number;
}

const EMPTY: FirewallState = { networks: [] };

const FAMS = [
  { family: 4, key: 'ipv4', save: 'iptables-save', restore: 'iptables-restore' },
  { family: 6, key: 'ipv6', save: 'ip6tables-save', restore: 'ip6tables-restore' },
] as const;

/** Identity of a planned port: a mapping that changes in any way is a removed one. */
const portKey = (p: PlannedPort): string => {
  let k = portKeys.get(p);
  if (k === undefined) {
    k = portKeyNow(p);
    portKeys.set(p, k);
  }
  return k;
};
/** Keys made before, by planned port (the same object while its endpoint is unchanged). */
const portKeys = new WeakMap<PlannedPort, string>();

const portKeyNow = (p: PlannedPort): string =>
  [
    p.family,
    p.proto,
    p.hostIp ? formatIP(p.hostIp) : '*',
    p.hostStart,
    p.hostEnd,
    formatIP(p.target),
    p.containerStart,
    p.containerEnd,
  ].join(' ');

const portsOf = (plan: Plan | undefined): PlannedPort[] => plan?.networks.flatMap((n) => n.ports) ?? [];

/** Those of `ports` that `plan` does not have (exactly). Pure. */
function absentFrom(ports: readonly PlannedPort[], plan: Plan | undefined): PlannedPort[] {
  const keep = new Set(portsOf(plan).map(portKey));
  return ports.filter((p) => !keep.has(portKey(p)));
}

/** Ports of `prev` that `next` does not have (exactly). Pure. */
export const removedPorts = (prev: Plan | undefined, next: Plan | undefined): PlannedPort[] =>
  absentFrom(portsOf(prev), next);

/** The conntrack entries a removed mapping leaves behind (see the note at the top). Pure. */
export function conntrackFilter(p: PlannedPort): CtFilter {
  return {
    family: p.family,
    proto: p.proto,
    dport: [p.hostStart, p.hostEnd],
    replySrc: p.target,
    replySport: p.containerStart,
    ...(p.hostIp && { origDst: p.hostIp }),
  };
}

export class HostFirewall {
  readonly #host: NetHandle;
  readonly #nft: Nft;
  readonly #ct: Conntrack;
  readonly #ownCt: boolean;
  readonly #ownNft: boolean;
  readonly #log: Logger;
  readonly #tools: Partial<Record<FirewallTool, string>>;
  readonly #timeoutMs: number;
  readonly #sysctlRecheckMs: number;
  #last: Applied | undefined;
  /** Ports removed by an apply with `forget: false`, whose conntrack entries are kept for now. */
  #heldBack: PlannedPort[] = [];
  #queue: Promise<unknown> = Promise.resolve();

  /** @throws WeftError INVALID for a timeout that is not a positive integer of ms. */
  constructor(opts: HostFirewallOptions) {
    this.#host = opts.host;
    this.#nft = opts.nft ?? new Nft(opts.host.ns);
    this.#ct = opts.conntrack ?? new Conntrack(opts.host.ns);
    this.#ownCt = opts.conntrack === undefined;
    this.#ownNft = opts.nft === undefined;
    this.#log = (opts.log ?? nullLogger).child({ component: 'firewall' });
    this.#tools = { ...opts.tools };
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#sysctlRecheckMs = opts.sysctlRecheckMs ?? 1_000;
    if (!Number.isInteger(this.#timeoutMs) || this.#timeoutMs <= 0) {
      throw new WeftError(
        'INVALID',
        `firewall tool timeout must be a positive integer of ms, not ${opts.timeoutMs}`,
      );
    }
  }

  /** The last state applied successfully (undefined before the first apply and after remove). */
  get applied(): FirewallState | undefined {
    return this.#last?.state;
  }

  /**
   * Make the host's firewall exactly what `state` says (see the note at the top). All or
   * nothing: when a step fails, the earlier ones are undone and the error is rethrown.
   * @throws WeftError INVALID, CONFLICT or UNSUPPORTED from validation (planFirewall), nothing changed.
   * @throws WeftError from a required sysctl that cannot be set (NOT_FOUND: e.g. a bridge that
   *   does not exist; PERMISSION; INVALID), its message naming the sysctl and why it is needed.
   * @throws WeftError from nft (see Nft.apply): INVALID, UNSUPPORTED, PERMISSION, TIMEOUT, …
   * @throws WeftError INTERNAL when iptables-save or iptables-restore fails, TIMEOUT when one
   *   does not finish in time.
   *
   * The iptables piece is re-synced only when the set of bridges changed, or with `repair`
   * (the daemon's start): a foreign rule inserted before weft's jump is then undone.
   */
  apply(state: FirewallState, opts: { repair?: boolean; forget?: boolean } = {}): Promise<void> {
    return this.#serial(() => this.#apply(state, opts.repair === true, opts.forget !== false));
  }

  /**
   * Delete the conntrack entries held back by an apply with `forget: false` (of ports that are
   * still not in the applied state): for a removal that is tentative until something else has
   * succeeded, so that a failure and a re-apply with the ports back leave their connections be.
   * Failures are logged (see #forget).
   */
  forgetRemoved(): Promise<void> {
    return this.#serial(async () => {
      const held = this.#heldBack;
      this.#heldBack = [];
      this.#forget(held);
    });
  }

  /**
   * Remove weft's nft table and the iptables piece exactly; idempotent.
   * @throws WeftError from nft (see Nft.apply), INTERNAL/TIMEOUT from the iptables tools.
   */
  remove(): Promise<void> {
    return this.#serial(() => this.#remove());
  }

  /**
   * Release the conntrack socket and the nft context kept for the host namespace (those this
   * firewall opened);
   * idempotent, and a later apply opens a new one. Call it at shutdown, and before the host
   * namespace is deleted: an open socket keeps the namespace alive. Throws nothing.
   */
  close(): void {
    if (this.#ownCt) this.#ct.close();
    if (this.#ownNft) this.#nft.close();
  }

  #serial(fn: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #apply(state: FirewallState, repair: boolean, forget: boolean): Promise<void> {
    // Everything that validates input comes before the first change.
    // (planFirewall validates; the renderings below cannot fail after it, so they are made
    // only when used.)
    const plan = planFirewall(state);
    const sysctls = requiredSysctls(state);
    // With the networks' ids: a network made again (same bridge name, new device) needs its
    // bridge's sysctls set again.
    const sysctlsKey = [...sysctls.map((s) => `${s.key}=${s.value}`), ...plan.networks.map((n) => n.id)].join(
      ' ',
    );
    const prev = this.#last;
    const now = Date.now();
    // Read and set when the list changed, on repair, or a while after the last read: a burst of
    // containers coming and going leaves them be (reading them all cost ~0.1 ms of each attach),
    // and one reset from outside is put back by the next apply after the recheck interval.
    const checkSysctls =
      repair || !prev || prev.sysctls !== sysctlsKey || now - prev.sysctlsAt >= this.#sysctlRecheckMs;
    await transaction(async (rb) => {
      if (checkSysctls) for (const s of sysctls) this.#ensureSysctl(s, rb);
      // Rules only when weft's table was applied before (chains in place): no hook is
      // registered again. Anything missing (drift, a first start) gets the whole table.
      let done = false;
      // Cheapest first: only rules appended (no deletion, no RCU wait), or nothing at all.
      const append = !repair && prev ? renderInsert(prev.state, state) : undefined;
      if (append !== undefined) {
        done =
          append === '' ||
          (await this.#nft.apply(append).then(
            () => true,
            () => false,
          ));
      }
      const update = !done && !repair && prev && prev.plan.networks.length > 0 ? renderRuleUpdate(state) : '';
      if (update !== '') {
        done = await this.#nft.apply(update).then(
          () => true,
          (e) => {
            this.#log.info('rules-only firewall update refused; applying the whole table', {
              error: String(e),
            });
            return false;
          },
        );
      }
      if (!done) await this.#nft.apply(renderTables(state));
      rb.push('restore the previous nft table', () =>
        this.#nft.apply(prev ? renderTables(prev.state) : renderRemoval()),
      );
      // The iptables piece depends only on the set of bridges: a container coming or going
      // leaves it as it is, which saves four process spawns (~35 ms) per attach and detach.
      if (repair || !prev || bridgesKey(prev.state) !== bridgesKey(state)) {
        await this.#syncIptables(state, rb, prev?.state ?? EMPTY);
      }
    });
    this.#last = {
      state,
      plan,
      sysctls: sysctlsKey,
      sysctlsAt: checkSysctls ? now : (prev?.sysctlsAt ?? now),
    };
    this.#log.info('firewall applied', {
      networks: plan.networks.length,
      ports: portsOf(plan).length,
    });
    // With those held back earlier that are still gone: forgotten now, or held back again.
    const removed = absentFrom([...this.#heldBack, ...portsOf(prev?.plan)], plan);
    this.#heldBack = forget ? [] : removed;
    if (forget) this.#forget(removed);
  }

  async #remove(): Promise<void> {
    await this.#nft.apply(renderRemoval());
    const saved = await this.#saved();
    await this.#restore(renderIptablesRemoval(saved));
    const last = this.#last;
    this.#last = undefined;
    this.#forget([...this.#heldBack, ...portsOf(last?.plan)]);
    this.#heldBack = [];
    this.#log.info('firewall removed');
  }

  #ensureSysctl(s: Sysctl, rb: Rollback): void {
    const sc = this.#host.sysctl;
    let before: string;
    try {
      before = sc.get(s.path);
      if (before.trim() === s.value) return;
      sc.set(s.path, s.value);
    } catch (e) {
      const code = e instanceof WeftError ? e.code : 'INTERNAL';
      const why = e instanceof Error ? e.message : String(e);
      throw new WeftError(
        code,
        `cannot set sysctl ${s.key}=${s.value} in ${this.#host.ns.path}, needed because ${s.why}: ${why}`,
        { cause: e, details: { key: s.key, value: s.value } },
      );
    }
    this.#log.debug('sysctl set', { key: s.key, value: s.value, was: before });
    rb.push(`restore sysctl ${s.key}`, () => sc.set(s.path, before));
  }

  /** Bring the iptables piece to `state`; the undo brings it back to `prev`. */
  async #syncIptables(state: FirewallState, rb: Rollback, prev: FirewallState): Promise<void> {
    const batches = renderIptables(state, await this.#saved());
    if (batches.length === 0) return;
    rb.push('restore the previous iptables piece', async () => {
      await this.#restore(renderIptables(prev, await this.#saved()));
    });
    await this.#restore(batches);
  }

  /** `iptables-save -t filter` per family, read inside the host namespace; undefined: tool missing. */
  async #saved(): Promise<IptablesSaved> {
    const out: { ipv4?: string; ipv6?: string } = {};
    for (const f of FAMS) {
      const r = await this.#run(f.save, ['-t', 'filter']);
      if (r === undefined) {
        this.#log.info(`${f.save} is not installed: IPv${f.family} iptables coexistence skipped`);
        continue;
      }
      if (r.code !== 0) {
        throw new WeftError(
          'INTERNAL',
          `${f.save} -t filter in ${this.#host.ns.path} failed: ${r.stderr.trim()}`,
          {
            details: { code: r.code, stderr: r.stderr },
          },
        );
      }
      out[f.key] = r.stdout;
    }
    return out;
  }

  async #restore(batches: readonly IptablesBatch[]): Promise<void> {
    for (const b of batches) {
      const tool = b.command;
      const r = await this.#run(tool, b.args, b.text);
      if (r === undefined) {
        this.#log.info(`${tool} is not installed: IPv${b.family} iptables coexistence skipped`);
        continue;
      }
      if (r.code !== 0) {
        throw new WeftError(
          'INTERNAL',
          `${tool} ${b.args.join(' ')} in ${this.#host.ns.path} failed: ${r.stderr.trim()}`,
          { details: { code: r.code, stderr: r.stderr, text: b.text } },
        );
      }
    }
  }

  /** Delete the conntrack entries of `ports`; failures are logged (the rules are already right). */
  #forget(ports: readonly PlannedPort[]): void {
    if (ports.length === 0) return;
    try {
      const deleted = this.#ct.delete(ports.map(conntrackFilter));
      if (deleted > 0) this.#log.debug('conntrack entries deleted', { ports: ports.length, deleted });
    } catch (e) {
      if (e instanceof WeftError && e.code === 'UNSUPPORTED') {
        this.#log.info('conntrack is not available: entries of removed published ports are kept', {
          error: e.message,
        });
        return;
      }
      this.#log.warn('cannot delete conntrack entries of removed published ports', {
        error: e,
        ports: ports.map((p) => `${p.proto} ${p.hostStart}-${p.hostEnd} -> ${formatIP(p.target)}`),
      });
    }
  }

  /** Run a tool inside the host namespace; undefined when it is not installed. */
  #run(tool: FirewallTool, args: readonly string[], stdin?: string): Promise<ToolResult | undefined> {
    return runTool(this.#host.ns, this.#tools[tool] ?? tool, args, stdin, this.#timeoutMs);
  }
}

const bridgesKey = (s: FirewallState): string =>
  s.networks
    .map((n) => n.bridge)
    .sort()
    .join(' ');
