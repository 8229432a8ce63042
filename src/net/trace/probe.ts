/**
 * `weft trace --probe`: send real packets along the traced way and confirm each hop by what the
 * kernel counted. Every hop that moves a packet from one device to another carries a `watch`
 * (a device and a direction: the veth end that received it, the bridge port that sent it, the
 * VTEP or TUN that encapsulated it…); a broken hop carries the counter that would move if it
 * worked (`expect`). The probe reads those counters (IFLA_STATS64 through the kernel layer)
 * before and after sending, from the source's namespace, a bounded burst: `ping -c 3` (ICMP) or
 * one connection attempt with `nc -z` (TCP, UDP), each with a deadline and killed by pid after
 * it. A hop is seen when its counter moved by at least the packets sent; the first watched hop
 * that did not is where the packets were lost, and the reason is the trace's own finding there
 * when it has one, else the drops the device counted, else unknown.
 *
 * Counters count all traffic: another flow through the same device at the same moment can make
 * a hop look passed (never the reverse), so the probe can confirm a loss but may, on a busy
 * host, miss one. ARP and IPv6 housekeeping are a few packets and only add.
 */
import { runTool } from '../../kernel/run.js';
import { WeftError } from '../../lib/errors.js';
import { formatIP, type IPAddr } from '../../lib/ip.js';
import type { LinkStats } from '../../netlink/link.js';
import type { Hop, Place, Proto, Topology, TraceResult, Watch } from './types.js';

export interface ProbeSpec {
  /** Where the probe runs (the trace's source). */
  readonly from: Place;
  readonly dst: IPAddr;
  readonly proto: Proto;
  readonly dport?: number;
  /** ICMP echo requests to send (default 3, at most 20). */
  readonly count?: number;
  /** The whole probe's time limit in ms (default 5000). */
  readonly timeoutMs?: number;
}

export interface ProbeCounter {
  readonly place: string;
  readonly dev: string;
  readonly dir: 'rx' | 'tx';
  /** undefined: the device does not exist (before or after). */
  readonly packets: number | undefined;
  readonly dropped: number | undefined;
}

export interface ProbeResult {
  /** The command, as run in the source's namespace. */
  readonly command: string;
  /** Packets the probe sends and every hop must see. */
  readonly sent: number;
  /** Echo replies came back / the connection was made. */
  readonly answered: boolean;
  /** ping's or nc's own summary. */
  readonly detail: string;
  /** Every watched hop of the trace saw the packets, and an answer came. */
  readonly confirmed: boolean;
  /** The first watched hop the packets did not pass. */
  readonly lostAt?: number;
  readonly reason?: string;
  readonly counters: readonly ProbeCounter[];
}

type Snapshot = Map<string, LinkStats | undefined>;

const wkey = (w: Watch): string => `${w.place}\u0000${w.dev}`;

function snapshot(topo: Topology, watches: readonly Watch[]): Snapshot {
  const out: Snapshot = new Map();
  for (const w of watches) {
    const k = wkey(w);
    if (out.has(k)) continue;
    const p = topo.places.find((x) => x.id === w.place);
    let stats: LinkStats | undefined;
    try {
      stats = p?.h.links.find(w.dev)?.stats;
    } catch {
      stats = undefined;
    }
    out.set(k, stats);
  }
  return out;
}

const packetsOf = (s: LinkStats | undefined, dir: 'rx' | 'tx'): number | undefined =>
  s === undefined ? undefined : dir === 'rx' ? s.rxPackets : s.txPackets;
const dropsOf = (s: LinkStats | undefined, dir: 'rx' | 'tx'): number | undefined =>
  s === undefined ? undefined : dir === 'rx' ? s.rxDropped : s.txDropped;

/** The probe's command line for `spec`. Throws INVALID for a count out of range. */
export function probeCommand(spec: ProbeSpec): { argv: string[]; sent: number } {
  const dst = formatIP(spec.dst);
  if (spec.proto === 'icmp') {
    const count = spec.count ?? 3;
    if (!Number.isInteger(count) || count < 1 || count > 20) {
      throw new WeftError('INVALID', `probe count must be 1-20, not ${count}`);
    }
    // -W: wait for the last reply; no -w, which would keep sending until replies come.
    return {
      argv: ['ping', '-n', '-c', String(count), '-i', '0.2', '-W', '1', dst],
      sent: count,
    };
  }
  if (spec.dport === undefined) throw new WeftError('INVALID', `a ${spec.proto} probe needs a port`);
  const argv =
    spec.proto === 'tcp'
      ? ['nc', '-z', '-n', '-w', '2', dst, String(spec.dport)]
      : ['nc', '-z', '-u', '-n', '-w', '1', dst, String(spec.dport)];
  return { argv, sent: 1 };
}

/**
 * Probe the way `t` describes and mark its hops (`hop.probe`). Throws UNSUPPORTED when ping or
 * nc is not installed, TIMEOUT when the probe outlives its limit (it is killed), INVALID for a
 * bad spec.
 */
export async function probe(topo: Topology, t: TraceResult, spec: ProbeSpec): Promise<ProbeResult> {
  const { argv, sent } = probeCommand(spec);
  const watched = t.hops
    .map((h) => ({ h, w: h.watch ?? (h.status === 'broken' ? h.expect : undefined) }))
    .filter((x): x is { h: Hop; w: Watch } => x.w !== undefined);
  const watches = watched.map((x) => x.w);
  const before = snapshot(topo, watches);
  const r = await runTool(spec.from.h.ns, argv[0]!, argv.slice(1), undefined, spec.timeoutMs ?? 5000);
  if (!r) {
    throw new WeftError(
      'UNSUPPORTED',
      `${argv[0]} is not installed (apt-get install ${argv[0] === 'ping' ? 'iputils-ping' : 'netcat-openbsd'})`,
    );
  }
  const after = snapshot(topo, watches);
  const out = `${r.stdout}\n${r.stderr}`;
  let answered: boolean;
  let detail: string;
  if (spec.proto === 'icmp') {
    const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(out);
    const got = m ? Number(m[2]) : 0;
    answered = got > 0;
    detail = m ? `${m[1]} sent, ${got} replies` : out.trim().split('\n').at(-1) || `exit ${r.code}`;
  } else {
    answered = r.code === 0;
    detail = answered
      ? spec.proto === 'tcp'
        ? 'connected'
        : 'sent (no ICMP error came back)'
      : out.trim().split('\n')[0] || `nc exit ${r.code}`;
  }
  const counters: ProbeCounter[] = [];
  let lost: Hop | undefined;
  for (const { h, w } of watched) {
    const b = before.get(wkey(w));
    const a = after.get(wkey(w));
    const pb = packetsOf(b, w.dir);
    const pa = packetsOf(a, w.dir);
    const delta = pb === undefined || pa === undefined ? 0 : pa - pb;
    const db = dropsOf(b, w.dir);
    const da = dropsOf(a, w.dir);
    const dropped = db === undefined || da === undefined ? 0 : da - db;
    const seen = pa !== undefined && delta >= sent;
    counters.push({
      place: w.place,
      dev: w.dev,
      dir: w.dir,
      packets: pa === undefined ? undefined : delta,
      dropped: da === undefined ? undefined : dropped,
    });
    const mark = { seen, packets: delta, dropped, ...(!seen && !lost && { lost: true }) };
    h.probe = mark;
    if (!seen && !lost) lost = h;
  }
  const broken = t.hops.find((h) => h.status === 'broken');
  if (!lost && broken && !answered) {
    // Nothing watched at the broken hop (its device is gone, or it has no counter): the packets
    // passed every watched hop before it, and the trace says why they go no further.
    broken.probe = { seen: false, packets: 0, dropped: 0, lost: true };
    lost = broken;
  }
  let reason: string | undefined;
  if (lost) {
    const dev = lost.watch ?? lost.expect;
    const exists = dev ? after.get(wkey(dev)) !== undefined : true;
    if (broken && broken.n === lost.n && !dev) {
      reason = 'the packets passed every watched hop before this one, where the trace finds the way broken';
    } else if (broken && broken.n === lost.n) {
      const d = lost.probe?.dropped
        ? `; ${dev?.dev} counted ${lost.probe.dropped} drops (${dev?.dir}_dropped)`
        : '';
      reason = `where the trace finds the way broken${d}`;
    } else if (broken && broken.n > lost.n) {
      reason = `lost before the hop where the trace finds the way broken (hop ${broken.n}): ${lost.probe?.dropped ? `${dev?.dev} counted ${lost.probe.dropped} drops; ` : ''}something the trace does not model dropped it`;
    } else if (!exists) reason = `${dev?.dev} does not exist in ${dev?.place}`;
    else if (lost.probe?.dropped) {
      reason = `${dev?.dev} in ${dev?.place} counted ${lost.probe.dropped} drop${lost.probe.dropped > 1 ? 's' : ''} (${dev?.dir}_dropped)`;
    } else {
      reason =
        'no counter says why (a rule the trace cannot evaluate, a changed route, or the packets were still queued)';
    }
  } else if (broken) {
    reason = `every watched hop saw the packets; the trace finds the way broken at hop ${broken.n}: ${broken.problem ?? ''}`;
  } else if (!answered) {
    reason =
      'every watched hop on the way there saw the packets, but no answer came back: trace the way back (swap SRC and DST)';
  }
  return {
    command: argv.join(' '),
    sent,
    answered,
    detail,
    confirmed: !lost && answered && !broken,
    ...(lost && { lostAt: lost.n }),
    ...(reason !== undefined && { reason }),
    counters,
  };
}
