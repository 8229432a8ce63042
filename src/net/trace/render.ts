/**
 * `weft trace` as text: one numbered line per hop (where the packet is, what kind of table
 * entry decided, the entry), the packet on a second line where it changed (NAT, encapsulation),
 * a broken hop's problem and fix, and a last line saying whether the packet gets there. With
 * --probe, each hop the probe watched carries ✓/✗ and how far its counter moved. Pure.
 */
import type { ProbeResult } from './probe.js';
import type { Hop, PacketView, TraceResult } from './types.js';

const proto = (p: PacketView): string =>
  p.proto === 'icmp' ? 'icmp' : `${p.proto}${p.dport !== undefined ? `/${p.dport}` : ''}`;

/** `10.244.1.2 → 10.244.2.3 tcp/80`, with the inner packet of an encapsulated one. */
export function packetText(p: PacketView): string {
  const base = `${p.src} → ${p.dst} ${proto(p)}`;
  if (!p.encap) return base;
  const i = p.encap.inner;
  const kind = p.encap.kind === 'vxlan' ? `vxlan vni ${p.encap.vni ?? '?'}` : 'udp tunnel';
  const macs = i.srcMac && i.dstMac ? `eth ${i.srcMac} → ${i.dstMac}, ` : '';
  return `outer ${base} [${kind}] | inner ${macs}${packetText(i)}`;
}

export interface RenderOptions {
  /** The first line (what was traced, by the caller's names). */
  readonly title?: string;
  /** Where the packet was meant to go, for the last line. */
  readonly target?: string;
  readonly probe?: ProbeResult;
}

const MARK: Record<Hop['status'], string> = { ok: ' ', warning: '!', broken: '✗' };

function probeCell(h: Hop): string {
  const m = h.probe;
  if (!m) return '';
  const d = m.dropped > 0 ? ` drop+${m.dropped}` : '';
  return `${m.seen ? '✓' : '✗'} +${m.packets}${d}${m.lost ? ' LOST' : ''}`;
}

/** The trace as the lines a person reads. */
export function renderTrace(t: TraceResult, o: RenderOptions = {}): string {
  const lines: string[] = [];
  if (o.title) lines.push(o.title);
  lines.push(`  packet ${packetText(t.packet)}`);
  const placeW = Math.max(5, ...t.hops.map((h) => h.place.length));
  const stepW = Math.max(...t.hops.map((h) => h.step.length), 4);
  const numW = String(t.hops.length).length;
  const probeW = o.probe ? Math.max(...t.hops.map((h) => probeCell(h).length), 0) : 0;
  const indent = ' '.repeat(2 + numW + 2 + placeW + 4);
  for (const h of t.hops) {
    const cells = [
      String(h.n).padStart(numW),
      h.place.padEnd(placeW),
      `${MARK[h.status]} ${h.step.padEnd(stepW)}`,
      ...(o.probe ? [probeCell(h).padEnd(probeW)] : []),
      h.decision,
    ];
    lines.push(`  ${cells.join('  ')}`.trimEnd());
    if (h.changed) lines.push(`${indent}→ ${packetText(h.packet)}`);
    if (h.problem) lines.push(`${indent}problem: ${h.problem}`);
    if (h.fix) lines.push(`${indent}fix: ${h.fix}`);
    if (h.note) lines.push(`${indent}note: ${h.note}`);
  }
  lines.push(summary(t, o));
  if (o.probe) lines.push(probeSummary(o.probe, t));
  for (const n of t.notes) lines.push(`  note: ${n}`);
  return lines.join('\n');
}

/** The last line: does the packet get there, and if not, where it stops. */
export function summary(t: TraceResult, o: RenderOptions = {}): string {
  const b = t.hops.find((h) => h.status === 'broken');
  if (b) return `BROKEN at hop ${b.n} (${b.place} ${b.step}): ${b.problem ?? b.decision}`;
  const last = t.hops.at(-1);
  const warn = t.hops.filter((h) => h.status === 'warning').length;
  const w = warn ? ` (${warn} warning${warn > 1 ? 's' : ''})` : '';
  if (last?.step === 'leave') return `ok: ${t.hops.length} hops until the packet leaves ${last.place}${w}`;
  return `ok: the packet reaches ${last?.place ?? o.target ?? '?'} in ${t.hops.length} hops${w}`;
}

/** What the probe saw, in one line. */
export function probeSummary(p: ProbeResult, t: TraceResult): string {
  const lost = p.lostAt === undefined ? undefined : t.hops.find((h) => h.n === p.lostAt);
  const answer = p.answered ? `answered (${p.detail})` : `no answer (${p.detail})`;
  if (lost) {
    return `probe: ${p.command}: ${answer}; lost at hop ${lost.n} (${lost.place} ${lost.step})${p.reason ? `: ${p.reason}` : ''}`;
  }
  return `probe: ${p.command}: ${answer}; ${p.reason ?? 'every watched hop saw the packets'}`;
}
