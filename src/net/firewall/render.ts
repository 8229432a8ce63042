/**
 * The firewall renderer: desired state in, nftables text out. Pure; src/kernel/nft.ts applies
 * the text with `nft -f -` inside the host's namespace as one atomic batch.
 *
 * Design. weft owns exactly one nftables table, `inet weft`, and never edits anything else in
 * nftables. Every change re-renders the whole table from the whole state and replaces it in one
 * batch (`table inet weft` / `delete table inet weft` / `table inet weft { … }`: the first line
 * makes the delete valid when the table is absent), so applying is idempotent, re-applying
 * repairs drift, and removal (`renderRemoval`) is exact. Rules are generated per address family
 * from one shape (a subnet or address carries its family; `FAMILIES` gives the `ip`/`ip6`
 * words), never from two hand-written copies. The table is rendered in the form
 * `nft list table inet weft` prints it back (`renderTable`), so drift is a string comparison
 * (after a whole-table or rules-only apply; insertions append published ports, see renderInsert).
 *
 * Chains, in the order a packet meets them:
 *  - `prerouting`/`output` (nat, dstnat): traffic to a local address (`fib daddr type local`)
 *    jumps to `published`; locally generated traffic to ::1 returns first (IPv6 cannot
 *    forward loopback-sourced packets, so ::1 would only time out; refused now instead).
 *  - `published`: one DNAT per port mapping and family. Single ports `dnat ip to A:P`; equal
 *    ranges `dnat ip to A:8000-8010` (the NAT core keeps a port that is in range: one to one);
 *    shifted ranges a map `dnat ip to tcp dport map { 9000 : A . 8000, … }`.
 *  - `postrouting` (nat, srcnat): outbound NAT per subnet (`oifname != BR`); hairpin
 *    (`ct status dnat`, from the subnet back into its own bridge) so containers reach their
 *    own and their neighbours' published ports through host addresses; 127.0.0.0/8 sources
 *    going into a bridge (published ports reached through localhost, with route_localnet).
 *    Hairpin matches the source subnet, not `iifname`: with br_netfilter the postrouting hook
 *    of bridged packets has no input interface.
 *  - `forward` (filter, policy accept: weft drops only what it must): replies accepted; per
 *    network, traffic within the bridge (icc), DNATed traffic into it (published ports);
 *    everything else into a bridge dropped (isolation between networks, no direct access
 *    from outside); internal networks drop everything in and out. On an overlay host the
 *    default network also accepts traffic from the cluster network, and its outbound NAT
 *    skips traffic to the cluster network (other hosts see the container's own address); the
 *    host's own traffic to the cluster leaves from the bridge's gateway (an address of the
 *    cluster), since other hosts let in only what comes from the cluster.
 *
 * icc=false is a rule of the `forward` chain (`iifname BR oifname BR drop`, after accepting
 * DNATed hairpin traffic), as Docker does it: container-to-container frames are bridged, and
 * br_netfilter (bridge-nf-call-iptables=1, listed by requiredSysctls) passes them through the
 * IP forward hook with the bridge as input and output. Decided against the planned `table
 * bridge weft` with `meta ibrname`: this project's kernel has no NFT_BRIDGE_META (the rule
 * fails with EOPNOTSUPP) and no bridge conntrack, and with br_netfilter active a DNATed hairpin
 * packet is bridged port to port too, so a bridge-family drop would also kill published ports
 * reached from the same network.
 *
 * Caller duties that are not rules: the sysctls of `requiredSysctls` (a failure to set
 * bridge-nf-call-* means icc=false cannot be enforced: fail, don't ignore); bridge-port
 * hairpin mode on each endpoint's port for a container to reach its own published port while
 * br_netfilter is active; deleting conntrack entries of removed published ports; the iptables
 * coexistence piece in ./iptables.ts when a foreign FORWARD policy may drop.
 *
 * Cost: rules grow linearly with networks (2-4 each) and port mappings (one per family); the
 * nat chains see only the first packet of a connection. Per-network verdict maps are the next
 * step if hundreds of networks ever matter. Chain names, priorities and comment texts are part
 * of the readable contract: change them together with the tests.
 */
import { type Family, formatIP, formatIPNet, type IPAddr } from '../../lib/ip.js';
import { isLoopback, type Plan, type PlannedNetwork, type PlannedPort, planFirewall } from './plan.js';
import type { FirewallState } from './types.js';

export const TABLE_FAMILY = 'inet';
export const TABLE_NAME = 'weft';

interface FamilyWords {
  readonly family: Family;
  /** The payload keyword and NAT family: `ip saddr`, `dnat ip to`. */
  readonly ip: 'ip' | 'ip6';
  /** `meta nfproto` value. */
  readonly nfproto: 'ipv4' | 'ipv6';
}
const FAMILIES: readonly FamilyWords[] = [
  { family: 4, ip: 'ip', nfproto: 'ipv4' },
  { family: 6, ip: 'ip6', nfproto: 'ipv6' },
];
const words = (f: Family): FamilyWords => FAMILIES[f === 4 ? 0 : 1]!;

const q = (s: string): string => `"${s}"`;
const range = (a: number, b: number): string => (a === b ? `${a}` : `${a}-${b}`);
const addrPort = (ip: IPAddr, port: string): string =>
  ip.family === 4 ? `${formatIP(ip)}:${port}` : `[${formatIP(ip)}]:${port}`;

/** DNAT rules made before, by planned port (the same object while its endpoint is unchanged). */
const dnatRules = new WeakMap<PlannedPort, { readonly network: string; readonly text: string }>();

function dnatRule(n: PlannedNetwork, p: PlannedPort): string {
  const known = dnatRules.get(p);
  if (known?.network === n.id) return known.text;
  const text = dnatRuleNow(n, p);
  dnatRules.set(p, { network: n.id, text });
  return text;
}

function dnatRuleNow(n: PlannedNetwork, p: PlannedPort): string {
  const w = words(p.family);
  const match = p.hostIp ? `${w.ip} daddr ${formatIP(p.hostIp)}` : `meta nfproto ${w.nfproto}`;
  const dport = `${p.proto} dport ${range(p.hostStart, p.hostEnd)}`;
  let to: string;
  if (p.hostStart === p.containerStart || p.hostStart === p.hostEnd) {
    to = `dnat ${w.ip} to ${addrPort(p.target, range(p.containerStart, p.containerEnd))}`;
  } else {
    const target = formatIP(p.target);
    const elems: string[] = [];
    for (let i = 0; i <= p.hostEnd - p.hostStart; i++) {
      elems.push(`${p.hostStart + i} : ${target} . ${p.containerStart + i}`);
    }
    to = `dnat ${w.ip} to ${p.proto} dport map { ${elems.join(', ')} }`;
  }
  const what = `${p.proto} ${range(p.hostStart, p.hostEnd)} -> ${range(p.containerStart, p.containerEnd)}`;
  return `${match} ${dport} ${to} comment ${q(`net ${n.id} ep ${p.endpoint}: ${what}`)}`;
}

/** Whether a network has v4 ports reachable through 127.0.0.0/8 (any address, or loopback). */
const needsLocalnet = (n: PlannedNetwork): boolean =>
  n.ports.some((p) => p.family === 4 && (p.hostIp === undefined || isLoopback(p.hostIp)));

function postroutingRules(n: PlannedNetwork): string[] {
  const out: string[] = [];
  const br = q(n.bridge);
  if (n.outboundNat) {
    for (const s of n.subnets) {
      const w = words(s.ip.family);
      const snat = n.snat[s.ip.family];
      const nat = snat ? `snat ${w.ip} to ${formatIP(snat)}` : 'masquerade';
      // Overlay: traffic to the other hosts' subnets keeps its source (flannel's RETURN rule).
      const cluster = n.cluster.filter((c) => c.ip.family === s.ip.family);
      const notCluster =
        cluster.length === 0
          ? ''
          : cluster.length === 1
            ? ` ${w.ip} daddr != ${formatIPNet(cluster[0]!)}`
            : ` ${w.ip} daddr != { ${cluster.map(formatIPNet).join(', ')} }`;
      out.push(
        `${w.ip} saddr ${formatIPNet(s)} oifname != ${br}${notCluster} ${nat} comment ${q(`net ${n.id}: outbound NAT`)}`,
      );
    }
  }
  const src = n.clusterSource;
  if (src && !n.internal) {
    for (const cn of n.cluster.filter((c) => c.ip.family === src.family)) {
      const w = words(src.family);
      out.push(
        `fib saddr type local ${w.ip} saddr != ${formatIPNet(cn)} ${w.ip} daddr ${formatIPNet(cn)} oifname != ${br} snat ${w.ip} to ${formatIP(src)} comment ${q(`net ${n.id}: host traffic to the cluster`)}`,
      );
    }
  }
  for (const s of n.subnets) {
    if (!n.ports.some((p) => p.family === s.ip.family)) continue;
    const w = words(s.ip.family);
    out.push(
      `ct status dnat ${w.ip} saddr ${formatIPNet(s)} oifname ${br} masquerade comment ${q(`net ${n.id}: hairpin to published ports`)}`,
    );
  }
  if (needsLocalnet(n)) {
    out.push(
      `ip saddr 127.0.0.0/8 oifname ${br} masquerade comment ${q(`net ${n.id}: published ports reached through localhost`)}`,
    );
  }
  return out;
}

function forwardRules(n: PlannedNetwork): string[] {
  const br = q(n.bridge);
  const c = (text: string) => `comment ${q(`net ${n.id}: ${text}`)}`;
  const out: string[] = [];
  if (n.icc) {
    out.push(`iifname ${br} oifname ${br} accept ${c('within the network')}`);
  } else {
    out.push(
      `iifname ${br} oifname ${br} ct status dnat accept ${c('published ports from inside (hairpin)')}`,
    );
    out.push(`iifname ${br} oifname ${br} drop ${c('icc=false, no traffic between containers')}`);
  }
  if (n.internal) {
    out.push(`iifname ${br} drop ${c('internal, nothing leaves')}`);
    out.push(`oifname ${br} drop ${c('internal, nothing enters')}`);
  } else {
    out.push(`oifname ${br} ct status dnat accept ${c('published ports')}`);
    for (const cn of n.cluster) {
      out.push(
        `${words(cn.ip.family).ip} saddr ${formatIPNet(cn)} oifname ${br} accept ${c('from the cluster network')}`,
      );
    }
    out.push(`oifname ${br} drop ${c('nothing else enters (isolation)')}`);
  }
  return out;
}

function chain(name: string, hook: string | undefined, rules: readonly string[]): string {
  const lines = [`\tchain ${name} {`];
  if (hook) lines.push(`\t\t${hook}`);
  for (const r of rules) lines.push(`\t\t${r}`);
  lines.push('\t}');
  return lines.join('\n');
}

interface ChainText {
  readonly name: string;
  readonly hook: string | undefined;
  readonly rules: readonly string[];
}

/** The chains of weft's table, always the same six in this order; only their rules vary. */
function chains(plan: Plan): ChainText[] {
  let cs = chainsOf.get(plan);
  if (!cs) {
    cs = chainsNow(plan);
    chainsOf.set(plan, cs);
  }
  return cs;
}

const chainsOf = new WeakMap<Plan, ChainText[]>();

function chainsNow(plan: Plan): ChainText[] {
  const nets = plan.networks;
  return [
    // route_localnet (on bridges with ports published on all addresses or 127.0.0.0/8) makes the
    // kernel route 127.0.0.0/8 from outside: a LAN host or a container would reach ports bound to
    // 127.0.0.1 (and the host's own loopback services). Only lo may carry those. Before conntrack
    // (raw), so an answer de-NATed back to 127.0.0.1 is not seen here.
    {
      name: 'loopback',
      hook: 'type filter hook prerouting priority raw; policy accept;',
      rules: [
        `iifname != "lo" ip daddr 127.0.0.0/8 drop comment ${q('127.0.0.0/8 only from the host itself')}`,
      ],
    },
    {
      name: 'prerouting',
      hook: 'type nat hook prerouting priority dstnat; policy accept;',
      rules: [`fib daddr type local jump published comment ${q('published ports on host addresses')}`],
    },
    // nft 1.0.6 refuses the `dstnat` keyword for the output hook; -100 is its value.
    {
      name: 'output',
      hook: 'type nat hook output priority -100; policy accept;',
      rules: [
        `ip6 daddr ::1 return comment ${q('no DNAT from ::1: IPv6 cannot forward loopback traffic')}`,
        `fib daddr type local jump published comment ${q('published ports reached from the host')}`,
      ],
    },
    { name: 'published', hook: undefined, rules: nets.flatMap((n) => n.ports.map((p) => dnatRule(n, p))) },
    {
      name: 'postrouting',
      hook: 'type nat hook postrouting priority srcnat; policy accept;',
      rules: nets.flatMap(postroutingRules),
    },
    {
      name: 'forward',
      hook: 'type filter hook forward priority filter; policy accept;',
      rules: [
        `ct state established,related accept comment ${q('replies to allowed traffic')}`,
        // Internal networks' drops before any other network's accepts: a published port of
        // another network, reached through an internal network's gateway, must not get out.
        ...nets.filter((n) => n.internal).flatMap(forwardRules),
        ...nets.filter((n) => !n.internal).flatMap(forwardRules),
      ],
    },
  ];
}

function tableText(plan: Plan): string {
  const text = chains(plan).map((c) => chain(c.name, c.hook, c.rules));
  return `table ${TABLE_FAMILY} ${TABLE_NAME} {\n${text.join('\n\n')}\n}\n`;
}

/**
 * The batch that brings an existing weft table (all six chains present) to `state` by
 * flushing and refilling its chains, without declaring them again: creating or re-declaring a
 * base chain registers a netfilter hook, which costs ~15 ms (an RCU grace period) per
 * transaction, while flushing and adding rules costs well under a millisecond. Atomic like the
 * full batch; it fails (NOT_FOUND) when a chain is missing, and the caller then applies
 * `renderTables`. '' when the state has no networks (the table is to be removed instead).
 * @throws WeftError INVALID, CONFLICT or UNSUPPORTED from validation (see planFirewall).
 */
export function renderRuleUpdate(state: FirewallState): string {
  const plan = planFirewall(state);
  if (plan.networks.length === 0) return '';
  const t = `${TABLE_FAMILY} ${TABLE_NAME}`;
  const cs = chains(plan);
  return [
    ...cs.map((c) => `flush chain ${t} ${c.name}`),
    ...cs.flatMap((c) => c.rules.map((r) => `add rule ${t} ${c.name} ${r}`)),
    '',
  ].join('\n');
}

/**
 * When `next` only adds rules compared with `prev` (every chain's old rules are still there, in
 * order: a container with published ports joined), the batch that inserts exactly those rules
 * at their places (`add rule … index N` puts a rule after the N-th, `insert rule … index 0`
 * before the first; the published chain's, whose order does not matter, are appended, so the
 * kernel may list that chain in another order than `renderTable`): nothing is deleted, so the kernel need not wait for an RCU grace period
 * (~15 ms: any deletion in a transaction costs that). '' when the rules are the same (nothing to
 * send); undefined when a rule went away or moved (the caller sends `renderRuleUpdate`).
 * @throws WeftError INVALID, CONFLICT or UNSUPPORTED from validation (see planFirewall).
 */
export function renderInsert(prev: FirewallState, next: FirewallState): string | undefined {
  const [p, n] = [planFirewall(prev), planFirewall(next)];
  if (p.networks.length === 0 || n.networks.length === 0) return undefined;
  const before = chains(p);
  const t = `${TABLE_FAMILY} ${TABLE_NAME}`;
  const out: string[] = [];
  for (const [i, c] of chains(n).entries()) {
    const old = before[i]!;
    if (old.name !== c.name) return undefined;
    let o = 0; // old rules matched so far, in order
    for (const [k, r] of c.rules.entries()) {
      if (o < old.rules.length && old.rules[o] === r) {
        o++;
        continue;
      }
      // The published chain's DNAT rules never overlap (planFirewall refuses a port claimed
      // twice), so their order does not matter: append, which needs no rule cache (a position
      // makes libnftables list the chain first: ~1.5 ms at 200 rules, measured).
      if (c.name === 'published') {
        out.push(`add rule ${t} ${c.name} ${r}`);
        continue;
      }
      // New rule at final position k: rules 0..k-1 are already in place when it is inserted.
      out.push(
        k === 0
          ? c.rules.length > 1 && o < old.rules.length
            ? `insert rule ${t} ${c.name} index 0 ${r}`
            : `add rule ${t} ${c.name} ${r}`
          : `add rule ${t} ${c.name} index ${k - 1} ${r}`,
      );
    }
    if (o !== old.rules.length) return undefined; // an old rule is gone or moved
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}

/**
 * weft's table as `nft list table inet weft` prints it (tabs, chains in order, blank lines
 * between them), or '' when the state has no networks (no table). For drift checks and tests.
 * @throws WeftError INVALID, CONFLICT or UNSUPPORTED from validation (see planFirewall).
 */
export function renderTable(state: FirewallState): string {
  const plan = planFirewall(state);
  return plan.networks.length === 0 ? '' : tableText(plan);
}

/**
 * The one atomic `nft -f` batch that makes weft's table exactly what `state` says: creates it,
 * replaces it, or (no networks) removes it. Valid whether or not the table exists.
 * @throws WeftError INVALID, CONFLICT or UNSUPPORTED from validation (see planFirewall); no
 *   text is produced for a state that does not validate.
 */
export function renderTables(state: FirewallState): string {
  const table = renderTable(state);
  if (table === '') return renderRemoval();
  return `table ${TABLE_FAMILY} ${TABLE_NAME}\ndelete table ${TABLE_FAMILY} ${TABLE_NAME}\n${table}`;
}

/** The `nft -f` batch that removes weft's table, valid when it does not exist. Never throws. */
export function renderRemoval(): string {
  return `table ${TABLE_FAMILY} ${TABLE_NAME}\ndelete table ${TABLE_FAMILY} ${TABLE_NAME}\n`;
}

export interface Sysctl {
  /** Dotted name as `sysctl` shows it: net.ipv4.conf.br0.route_localnet. */
  readonly key: string;
  /** Path under /proc/sys (unambiguous also for interface names with dots). */
  readonly path: string;
  readonly value: string;
  /** Why the state needs it, for logs and errors. */
  readonly why: string;
}

const sysctl = (parts: readonly string[], value: string, why: string): Sysctl => ({
  key: parts.join('.'),
  path: parts.join('/'),
  value,
  why,
});

/**
 * The sysctls (in the host's namespace) the rendered rules rely on, in a stable order:
 * forwarding per family in use; bridge-nf-call-iptables/ip6tables when a network has
 * icc=false (without br_netfilter icc=false cannot be enforced: a caller that cannot set
 * them must fail); route_localnet on each bridge with IPv4 ports reachable through
 * 127.0.0.0/8.
 * @throws WeftError INVALID, CONFLICT or UNSUPPORTED from validation (see planFirewall).
 */
export function requiredSysctls(state: FirewallState): Sysctl[] {
  const { networks } = planFirewall(state);
  const out: Sysctl[] = [];
  const has = (f: Family) => networks.some((n) => n.subnets.some((s) => s.ip.family === f));
  if (has(4)) out.push(sysctl(['net', 'ipv4', 'ip_forward'], '1', 'IPv4 networks are routed'));
  if (has(6)) out.push(sysctl(['net', 'ipv6', 'conf', 'all', 'forwarding'], '1', 'IPv6 networks are routed'));
  const noIcc = networks.filter((n) => !n.icc).map((n) => n.id);
  if (noIcc.length > 0) {
    const why = `icc=false on ${noIcc.join(', ')} is enforced on bridged traffic through br_netfilter`;
    out.push(sysctl(['net', 'bridge', 'bridge-nf-call-iptables'], '1', why));
    out.push(sysctl(['net', 'bridge', 'bridge-nf-call-ip6tables'], '1', why));
  }
  for (const n of networks) {
    if (needsLocalnet(n)) {
      out.push(
        sysctl(
          ['net', 'ipv4', 'conf', n.bridge, 'route_localnet'],
          '1',
          `network ${n.id} has ports published on 127.0.0.0/8`,
        ),
      );
    }
  }
  return out;
}
