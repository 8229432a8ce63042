/**
 * `weft trace SRC DST[:PORT[/tcp|udp]]`: the way of one packet, hop by hop, read from the live
 * kernel state of every namespace it crosses (src/net/trace/). Thin: resolve the names
 * (./resolve.ts), walk, optionally probe, print; the exit status is 1 when the way is broken or
 * the probe loses the packets, and the CLI's usual statuses for bad input (2) and unknown names
 * (3). The library is loaded only when the command runs.
 */
import type { Command } from 'commander';
import { formatIP } from '../../lib/ip.js';
import type { ProbeResult, TraceResult } from '../../net/trace/index.js';
import type { LabOptions } from '../lab/lab.js';

export interface TraceArgs {
  readonly src: string;
  readonly dst: string;
  /** The lab; undefined: $WEFT_LAB, else lab "weft" when a name only a lab has is used, else this host. */
  readonly lab?: string;
  /** The daemon socket on one host (default $WEFT_SOCKET or /run/weft/weft.sock). */
  readonly socket?: string;
  readonly probe?: boolean;
  readonly env?: NodeJS.ProcessEnv;
  readonly labOptions?: LabOptions;
}

export interface TraceReport {
  readonly ok: boolean;
  readonly lab?: string;
  readonly backend?: string;
  readonly from: { readonly name: string; readonly place?: string; readonly address?: string };
  readonly to: { readonly name: string; readonly place?: string; readonly address: string };
  readonly trace: TraceResult;
  readonly probe?: ProbeResult;
  /** The text `weft trace` prints. */
  readonly text: string;
}

/**
 * Resolve, trace and (with `probe`) probe. Throws INVALID for malformed names, NOT_FOUND for
 * unknown ones (or an unknown lab), UNAVAILABLE when the host's daemon does not answer (one-host
 * mode), UNSUPPORTED when the probe's tools are missing.
 */
export async function runTrace(a: TraceArgs): Promise<TraceReport> {
  const { labOnlyName, labWorld, hostWorld, parseTarget } = await import('./resolve.js');
  const lib = await import('../../net/trace/index.js');
  const env = a.env ?? process.env;
  const src = parseTarget(a.src, 'SRC');
  const dst = parseTarget(a.dst, 'DST');
  const lab = a.lab ?? env.WEFT_LAB ?? (labOnlyName(src.name) || labOnlyName(dst.name) ? 'weft' : undefined);
  const world = lab !== undefined ? await labWorld(lab, a.labOptions ?? {}) : await hostWorld(a.socket);
  try {
    const from = world.resolve(src, 'SRC');
    const to = world.resolve(dst, 'DST');
    if (!from.place) throw new Error('unreachable: a source always has a place');
    const proto = dst.port === undefined ? 'icmp' : (dst.proto ?? 'tcp');
    const req = {
      from: from.place,
      ...(from.addr && { src: from.addr }),
      dst: to.addr!,
      ...(to.place && { to: to.place }),
      proto,
      ...(dst.port !== undefined && { dport: dst.port }),
    } as const;
    const t = await lib.trace(world.topo, req);
    let p: ProbeResult | undefined;
    if (a.probe) {
      p = await lib.probe(world.topo, t, {
        from: from.place,
        dst: to.addr!,
        proto,
        ...(dst.port !== undefined && { dport: dst.port }),
      });
    }
    const where = world.lab !== undefined ? `  (lab "${world.lab}", ${world.backend} backend)` : '';
    const title = `trace ${a.src} (${from.label}) → ${a.dst} (${to.label})${where}`;
    const text = lib.renderTrace(t, { title, target: to.label, ...(p && { probe: p }) });
    return {
      ok: t.ok && (p === undefined || p.lostAt === undefined),
      ...(world.lab !== undefined && { lab: world.lab }),
      ...(world.backend !== undefined && { backend: world.backend }),
      from: {
        name: a.src,
        place: from.place.id,
        ...(from.addr && { address: formatIP(from.addr) }),
      },
      to: { name: a.dst, ...(to.place && { place: to.place.id }), address: formatIP(to.addr!) },
      trace: t,
      ...(p && { probe: p }),
      text,
    };
  } finally {
    world.close();
  }
}

/** `weft trace`: register the command (one call in the CLI). */
export function addTraceCommand(program: Command): void {
  program
    .command('trace')
    .description(
      "follow a packet from SRC to DST through the live kernel state: routes (the kernel's own lookups), neighbour and FDB entries, bridges, veths, VTEPs, the udp tunnel, nftables rules and NAT",
    )
    .usage('SRC DST[:PORT[/tcp|udp]] [--lab NAME] [--json] [--probe]')
    .argument(
      '<src>',
      'a container (NAME, or HOST/NAME in a lab), a host (host1, or `host`), an address, or internet',
    )
    .argument('<dst>', 'the same, with :PORT[/tcp|udp] for TCP or UDP (ICMP echo without a port)')
    .option(
      '--lab <name>',
      'trace in a lab (default $WEFT_LAB; HOST/NAME, hostN and internet mean lab "weft")',
    )
    .option(
      '--probe',
      "send real packets (ping, or one connection with nc) and confirm each hop by the kernel's counters",
    )
    .option('--json', 'the hops as data')
    .action(
      async (
        src: string,
        dst: string,
        o: { lab?: string; probe?: boolean; json?: boolean },
        cmd: Command,
      ) => {
        const socket = (cmd.optsWithGlobals() as { socket?: string }).socket;
        const r = await runTrace({
          src,
          dst,
          ...(o.lab !== undefined && { lab: o.lab }),
          ...(socket !== undefined && { socket }),
          ...(o.probe && { probe: true }),
        });
        if (o.json) {
          const { text: _text, trace, ...rest } = r;
          process.stdout.write(
            `${JSON.stringify({ ...rest, packet: trace.packet, brokenAt: trace.brokenAt, hops: trace.hops, notes: trace.notes }, null, 2)}\n`,
          );
        } else process.stdout.write(`${r.text}\n`);
        if (!r.ok) process.exitCode = 1;
      },
    );
}
