/**
 * Coexistence with iptables rules weft does not own. In nftables a packet dropped by any base
 * chain is dropped, so an iptables(-nft) FORWARD policy of DROP (Docker sets one) would drop
 * weft's traffic whatever weft's own table says. The fix is a small piece in iptables' filter
 * table: a chain WEFT-FORWARD, jumped to from FORWARD at position 1, accepting traffic in and
 * out of each weft bridge. Isolation stays with weft's `inet weft` table: its drops still win.
 * Traffic from a weft bridge to another manager's bridge (Docker's docker0 and br-*, libvirt's
 * virbr*) goes back to FORWARD instead: an accept at position 1 would pass it before that
 * manager's own isolation rules (Docker: no direct way to a container's unpublished ports).
 *
 * The texts are for `iptables-restore --noflush` / `ip6tables-restore --noflush`. Unlike nft,
 * iptables-restore has no "delete if present": `-D` and `-X` of something absent fail the whole
 * batch, and a second `-I` adds a second jump. So the renderers take what is there now (the
 * output of `iptables-save -t filter`, read just before) and emit exactly the difference for
 * the jump; the chain itself is declared (`:WEFT-FORWARD - [0:0]`), which with --noflush
 * creates it or flushes it, and then refilled. Applying the result twice in a row (re-reading
 * in between) is a no-op; removal deletes the jump(s) and the chain and nothing else.
 */
import type { Family } from '../../lib/ip.js';
import { planFirewall } from './plan.js';
import type { FirewallState } from './types.js';

export const IPT_CHAIN = 'WEFT-FORWARD';
/** Other managers' bridges, by their names (iptables matches no link kind): Docker's, libvirt's. */
const FOREIGN_BRIDGES = ['docker0', 'br-+', 'virbr+'];
const JUMP = `-A FORWARD -j ${IPT_CHAIN}`;

/** What `iptables-save -t filter` / `ip6tables-save -t filter` print now; undefined: skip that family (no iptables there). */
export interface IptablesSaved {
  readonly ipv4?: string | undefined;
  readonly ipv6?: string | undefined;
}

export interface IptablesBatch {
  readonly family: Family;
  /** The program to feed `text` on stdin. */
  readonly command: 'iptables-restore' | 'ip6tables-restore';
  readonly args: readonly string[];
  readonly text: string;
}

interface SavedFilter {
  /** WEFT-FORWARD exists. */
  readonly chain: boolean;
  /** Number of `-j WEFT-FORWARD` rules in FORWARD. */
  readonly jumps: number;
  /** The first FORWARD rule is our jump. */
  readonly jumpFirst: boolean;
}

/** Reads the filter table section of iptables-save output. Never throws: unknown lines are ignored. */
function readSaved(saved: string): SavedFilter {
  let inFilter = false;
  let chain = false;
  let jumps = 0;
  let firstForward: string | undefined;
  for (const raw of saved.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      inFilter = line === '*filter';
      continue;
    }
    if (!inFilter) continue;
    if (line === 'COMMIT') {
      inFilter = false;
      continue;
    }
    if (line.startsWith(`:${IPT_CHAIN} `)) chain = true;
    if (line.startsWith('-A FORWARD ')) {
      firstForward ??= line;
      if (line === JUMP) jumps++;
    }
  }
  return { chain, jumps, jumpFirst: firstForward === JUMP };
}

const FAMS = [
  { family: 4, key: 'ipv4', command: 'iptables-restore' },
  { family: 6, key: 'ipv6', command: 'ip6tables-restore' },
] as const;

const batch = (f: (typeof FAMS)[number], lines: readonly string[]): IptablesBatch => ({
  family: f.family,
  command: f.command,
  args: ['--noflush'],
  text: ['*filter', ...lines, 'COMMIT', ''].join('\n'),
});

function removalLines(s: SavedFilter): string[] | undefined {
  if (!s.chain && s.jumps === 0) return undefined;
  const lines: string[] = [];
  for (let i = 0; i < s.jumps; i++) lines.push(`-D FORWARD -j ${IPT_CHAIN}`);
  if (s.chain) lines.push(`-F ${IPT_CHAIN}`, `-X ${IPT_CHAIN}`);
  return lines;
}

/**
 * The iptables-restore batches that make the coexistence piece match `state`, per family given
 * in `saved`: WEFT-FORWARD accepting `-i BR` and `-o BR` for every weft bridge (both families,
 * since br_netfilter passes bridged IPv6 of any network through ip6tables too), one jump at
 * FORWARD position 1. A state without networks yields the removal. Families with nothing to
 * do are left out.
 * @throws WeftError INVALID, CONFLICT or UNSUPPORTED from validation (see planFirewall).
 */
export function renderIptables(state: FirewallState, saved: IptablesSaved): IptablesBatch[] {
  const { networks } = planFirewall(state);
  if (networks.length === 0) return renderIptablesRemoval(saved);
  const out: IptablesBatch[] = [];
  for (const f of FAMS) {
    const text = saved[f.key];
    if (text === undefined) continue;
    const s = readSaved(text);
    const lines = [`:${IPT_CHAIN} - [0:0]`];
    if (!(s.jumps === 1 && s.jumpFirst)) {
      for (let i = 0; i < s.jumps; i++) lines.push(`-D FORWARD -j ${IPT_CHAIN}`);
      lines.push(`-I FORWARD 1 -j ${IPT_CHAIN}`);
    }
    const comment = (n: { id: string }) => `-m comment --comment "weft net ${n.id}"`;
    for (const n of networks) lines.push(`-A ${IPT_CHAIN} -o ${n.bridge} ${comment(n)} -j ACCEPT`);
    for (const other of FOREIGN_BRIDGES) {
      lines.push(
        `-A ${IPT_CHAIN} -o ${other} -m comment --comment "not a weft bridge: its own rules decide" -j RETURN`,
      );
    }
    for (const n of networks) lines.push(`-A ${IPT_CHAIN} -i ${n.bridge} ${comment(n)} -j ACCEPT`);
    out.push(batch(f, lines));
  }
  return out;
}

/**
 * The iptables-restore batches that remove the coexistence piece exactly (every jump to
 * WEFT-FORWARD, then the chain), per family given in `saved`; families where nothing is
 * present are left out, so the result is empty when there is nothing to remove. Never throws.
 */
export function renderIptablesRemoval(saved: IptablesSaved): IptablesBatch[] {
  const out: IptablesBatch[] = [];
  for (const f of FAMS) {
    const text = saved[f.key];
    if (text === undefined) continue;
    const lines = removalLines(readSaved(text));
    if (lines) out.push(batch(f, lines));
  }
  return out;
}
