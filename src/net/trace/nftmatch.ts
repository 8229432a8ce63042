/**
 * Which nftables rule a packet meets: a small evaluator over `nft -j list ruleset` output
 * (libnftables-json(5)), for `weft trace`. Pure.
 *
 * It is an APPROXIMATION of the kernel, good for the rules weft renders (src/net/firewall/
 * render.ts) and the usual hand-made ones, and says so where it cannot decide:
 *   - hooks: every base chain of the hook in every table of the packet's family (`inet` tables
 *     for both, `ip`/`ip6` for their own), in priority order; accept ends a base chain and the
 *     next one runs, drop/reject end the hook; a NAT statement is a verdict (accept) of its chain;
 *     once one NAT chain has made the binding, later NAT chains of the hook are skipped;
 *     jump/goto/return as nft does them, at most 16 deep;
 *   - matches: `meta` iifname/oifname/iif/oif (names, `*` wildcards), nfproto, l4proto,
 *     protocol, mark; `payload` ip/ip6 saddr/daddr/protocol, tcp/udp/th sport/dport (a match on
 *     another protocol's header does not match, as nft's implicit dependency); `fib saddr|daddr
 *     type` (local or unicast, from the caller's list of local addresses); `ct state` (the trace
 *     follows the FIRST packet of a new connection: state new) and `ct status` (dnat/snat as the
 *     trace has applied them); values as single values, prefixes, ranges and anonymous sets;
 *   - statements: counter, log, limit, quota, mangle, notrack and iptables-nft's comment match
 *     pass; REJECT of iptables-nft is reject; dnat/snat/masquerade/redirect with an address, a
 *     port or port range, or a map on tcp/udp dport;
 *   - anything else (named sets, other `xt` extensions, other expressions) makes the rule
 *     *uncertain*: it is skipped as if it did not match and reported in `uncertain`.
 */
import type { NftObject, NftRuleset } from '../../kernel/nft.js';
import {
  compareIP,
  containsIP,
  type Family,
  formatIP,
  type IPAddr,
  type IPNet,
  tryParseIP,
} from '../../lib/ip.js';

export type NftHook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';

/** The packet as the rules see it at one hook. */
export interface MatchPacket {
  readonly family: Family;
  readonly saddr: IPAddr;
  readonly daddr: IPAddr;
  readonly proto: 'tcp' | 'udp' | 'icmp';
  readonly sport?: number;
  readonly dport?: number;
  /** Input interface (prerouting, input, forward). */
  readonly iifname?: string;
  /** Output interface (forward, output, postrouting). */
  readonly oifname?: string;
  /** conntrack: NAT already done on this connection. */
  readonly dnat?: boolean;
  readonly snat?: boolean;
  /** conntrack state; default new (the first packet of a connection). */
  readonly ctState?: 'new' | 'established' | 'related';
  readonly mark?: number;
}

export interface MatchEnv {
  /** Whether `ip` is an address of the namespace (`fib … type local`). */
  isLocal(ip: IPAddr): boolean;
}

/** A rule, as a person finds it again: table, chain, handle, its comment, a rendering. */
export interface RuleRef {
  readonly family: string;
  readonly table: string;
  readonly chain: string;
  readonly handle?: number;
  readonly comment?: string;
  /** The rule in nft's words (approximately `nft list` syntax). */
  readonly text: string;
}

export interface NatAction {
  readonly kind: 'dnat' | 'snat' | 'masquerade' | 'redirect';
  /** The new address (dnat/snat); undefined: the interface's (masquerade) or unchanged. */
  readonly addr?: IPAddr;
  /** The new port (dnat/redirect); undefined: unchanged. */
  readonly port?: number;
  readonly rule: RuleRef;
}

export type ChainOutcome = 'accept' | 'drop' | 'reject' | 'nat' | 'policy-accept' | 'policy-drop';

/** What one base chain did with the packet. */
export interface ChainResult {
  readonly family: string;
  readonly table: string;
  readonly chain: string;
  readonly type: string;
  readonly prio: number;
  readonly policy: 'accept' | 'drop';
  readonly outcome: ChainOutcome;
  /** The rule that decided; undefined when the chain's policy did. */
  readonly rule?: RuleRef;
  /** Chains jumped into on the way to that rule. */
  readonly via: readonly string[];
}

export interface HookResult {
  readonly hook: NftHook;
  /** accept: the packet goes on; drop: a rule or a policy ended it (`decisive` says which). */
  readonly verdict: 'accept' | 'drop';
  /** Every base chain of the hook that ran, in order. */
  readonly chains: readonly ChainResult[];
  /** The chain whose rule or policy dropped the packet. */
  readonly decisive?: ChainResult;
  /** The NAT the packet got at this hook. */
  readonly nat?: NatAction;
  /** Rules skipped because they use what this matcher does not model. */
  readonly uncertain: readonly RuleRef[];
}

// ---- ruleset index ------------------------------------------------------------------------

interface ChainDef {
  readonly family: string;
  readonly table: string;
  readonly name: string;
  readonly type?: string;
  readonly hook?: string;
  readonly prio?: number;
  readonly policy?: string;
  readonly rules: {
    readonly expr: readonly unknown[];
    readonly handle?: number;
    readonly comment?: string;
  }[];
}

const key = (family: string, table: string, chain: string): string => `${family} ${table} ${chain}`;

function indexRuleset(rs: NftRuleset): Map<string, ChainDef> {
  const chains = new Map<string, ChainDef>();
  for (const o of rs.nftables as readonly NftObject[]) {
    const c = o.chain;
    if (c) {
      chains.set(key(String(c.family), String(c.table), String(c.name)), {
        family: String(c.family),
        table: String(c.table),
        name: String(c.name),
        ...(typeof c.type === 'string' && { type: c.type }),
        ...(typeof c.hook === 'string' && { hook: c.hook }),
        ...(typeof c.prio === 'number' && { prio: c.prio }),
        ...(typeof c.policy === 'string' && { policy: c.policy }),
        rules: [],
      });
    }
  }
  for (const o of rs.nftables as readonly NftObject[]) {
    const r = o.rule;
    if (!r) continue;
    const c = chains.get(key(String(r.family), String(r.table), String(r.chain)));
    if (!c) continue;
    c.rules.push({
      expr: Array.isArray(r.expr) ? (r.expr as unknown[]) : [],
      ...(typeof r.handle === 'number' && { handle: r.handle }),
      ...(typeof r.comment === 'string' && { comment: r.comment }),
    });
  }
  return chains;
}

const appliesTo = (tableFamily: string, f: Family): boolean =>
  tableFamily === 'inet' || (tableFamily === 'ip' && f === 4) || (tableFamily === 'ip6' && f === 6);

/** The base chains of `hook` for family `f`, in the order the kernel runs them. */
export function baseChains(
  rs: NftRuleset,
  hook: NftHook,
  f: Family,
): { family: string; table: string; name: string; type: string; prio: number; policy: string }[] {
  return [...indexRuleset(rs).values()]
    .filter((c) => c.hook === hook && appliesTo(c.family, f))
    .map((c) => ({
      family: c.family,
      table: c.table,
      name: c.name,
      type: c.type ?? 'filter',
      prio: c.prio ?? 0,
      policy: c.policy ?? 'accept',
    }))
    .sort((a, b) => a.prio - b.prio);
}

// ---- evaluation ---------------------------------------------------------------------------

/** Tri-state: undefined means "cannot tell". */
type Tri = boolean | undefined;

type Outcome =
  | { readonly kind: 'continue' }
  | { readonly kind: 'return' }
  | { readonly kind: 'accept' | 'drop' | 'reject'; readonly rule: RuleRef; readonly via: string[] }
  | { readonly kind: 'nat'; readonly nat: NatAction; readonly via: string[] };

const MAX_DEPTH = 16;
const NEUTRAL = new Set(['counter', 'log', 'limit', 'quota', 'mangle', 'notrack', 'comment']);

/**
 * Run `pkt` through every base chain of `hook` in `rs`. Never throws: what it cannot evaluate it
 * reports in `uncertain`.
 */
export function evaluateHook(rs: NftRuleset, hook: NftHook, pkt: MatchPacket, env: MatchEnv): HookResult {
  const chains = indexRuleset(rs);
  const uncertain: RuleRef[] = [];
  const results: ChainResult[] = [];
  let nat: NatAction | undefined;
  for (const bc of baseChains(rs, hook, pkt.family)) {
    const def = chains.get(key(bc.family, bc.table, bc.name))!;
    if (bc.type === 'nat' && nat) continue;
    const o = runChain(chains, def, pkt, env, uncertain, 0, []);
    const base = {
      family: bc.family,
      table: bc.table,
      chain: bc.name,
      type: bc.type,
      prio: bc.prio,
      policy: bc.policy === 'drop' ? ('drop' as const) : ('accept' as const),
    };
    let r: ChainResult;
    if (o.kind === 'continue' || o.kind === 'return') {
      r = { ...base, outcome: bc.policy === 'drop' ? 'policy-drop' : 'policy-accept', via: [] };
    } else if (o.kind === 'nat') {
      nat = o.nat;
      r = { ...base, outcome: 'nat', rule: o.nat.rule, via: o.via };
    } else {
      r = { ...base, outcome: o.kind, rule: o.rule, via: o.via };
    }
    results.push(r);
    if (r.outcome === 'drop' || r.outcome === 'reject' || r.outcome === 'policy-drop') {
      return { hook, verdict: 'drop', chains: results, decisive: r, ...(nat && { nat }), uncertain };
    }
  }
  return { hook, verdict: 'accept', chains: results, ...(nat && { nat }), uncertain };
}

function runChain(
  chains: Map<string, ChainDef>,
  def: ChainDef,
  pkt: MatchPacket,
  env: MatchEnv,
  uncertain: RuleRef[],
  depth: number,
  via: string[],
): Outcome {
  for (const rule of def.rules) {
    const ref = ruleRef(def, rule);
    const r = evalRule(rule.expr, pkt, env, ref);
    if (r === 'nomatch') continue;
    if (r === 'uncertain') {
      uncertain.push(ref);
      continue;
    }
    switch (r.kind) {
      case 'none':
        continue;
      case 'return':
        return { kind: 'return' };
      case 'jump':
      case 'goto': {
        const target = chains.get(key(def.family, def.table, r.target));
        if (!target || depth >= MAX_DEPTH) {
          uncertain.push(ref);
          continue;
        }
        const o = runChain(chains, target, pkt, env, uncertain, depth + 1, [...via, r.target]);
        if (o.kind === 'continue' || o.kind === 'return') {
          if (r.kind === 'goto') return { kind: 'return' };
          continue;
        }
        return o;
      }
      case 'nat':
        return { kind: 'nat', nat: r.nat, via };
      default:
        return { kind: r.kind, rule: ref, via };
    }
  }
  return { kind: 'continue' };
}

type RuleVerdict =
  | { readonly kind: 'none' | 'return' | 'accept' | 'drop' | 'reject' }
  | { readonly kind: 'jump' | 'goto'; readonly target: string }
  | { readonly kind: 'nat'; readonly nat: NatAction };

function evalRule(
  exprs: readonly unknown[],
  pkt: MatchPacket,
  env: MatchEnv,
  ref: RuleRef,
): RuleVerdict | 'nomatch' | 'uncertain' {
  let unsure = false;
  for (const e of exprs) {
    if (!e || typeof e !== 'object') {
      unsure = true;
      continue;
    }
    const [k, v] = Object.entries(e as Record<string, unknown>)[0] ?? ['', undefined];
    if (k === 'match') {
      const m = evalMatch(v as MatchExpr, pkt, env);
      if (m === false) return 'nomatch';
      if (m === undefined) unsure = true;
      continue;
    }
    if (NEUTRAL.has(k)) continue;
    if (k === 'xt') {
      const x = v as { type?: string; name?: string };
      if (x.type === 'match' && x.name === 'comment') continue;
      if (x.type === 'target' && x.name === 'REJECT') return unsure ? 'uncertain' : { kind: 'reject' };
      unsure = true;
      continue;
    }
    let verdict: RuleVerdict | undefined;
    switch (k) {
      case 'accept':
      case 'drop':
      case 'reject':
      case 'return':
        verdict = { kind: k };
        break;
      case 'continue':
        verdict = { kind: 'none' };
        break;
      case 'jump':
      case 'goto': {
        const t = (v as { target?: unknown } | null)?.target;
        if (typeof t !== 'string') return 'uncertain';
        verdict = { kind: k, target: t };
        break;
      }
      case 'dnat':
      case 'snat':
      case 'masquerade':
      case 'redirect': {
        const n = natOf(k, v, pkt, ref);
        if (!n) return 'uncertain';
        verdict = { kind: 'nat', nat: n };
        break;
      }
      default:
        unsure = true;
        continue;
    }
    return unsure ? 'uncertain' : verdict;
  }
  return unsure ? 'uncertain' : { kind: 'none' };
}

interface MatchExpr {
  readonly op?: string;
  readonly left?: unknown;
  readonly right?: unknown;
}

/** A value of the packet: an address, a number, a name, or a set of flags. */
type Val =
  | { readonly t: 'ip'; readonly v: IPAddr }
  | { readonly t: 'num'; readonly v: number }
  | { readonly t: 'str'; readonly v: string }
  | { readonly t: 'flags'; readonly v: readonly string[] }
  /** The header is not there (a tcp match on a udp packet): the match is false. */
  | { readonly t: 'absent' };

function leftValue(left: unknown, pkt: MatchPacket, env: MatchEnv): Val | undefined {
  if (!left || typeof left !== 'object') return undefined;
  const l = left as Record<string, Record<string, unknown> | undefined>;
  if (l.meta) {
    switch (l.meta.key) {
      case 'iifname':
      case 'iif':
        return { t: 'str', v: pkt.iifname ?? '' };
      case 'oifname':
      case 'oif':
        return { t: 'str', v: pkt.oifname ?? '' };
      case 'nfproto':
        return { t: 'str', v: pkt.family === 4 ? 'ipv4' : 'ipv6' };
      case 'protocol':
        return { t: 'str', v: pkt.family === 4 ? 'ip' : 'ip6' };
      case 'l4proto':
        return { t: 'str', v: pkt.proto === 'icmp' && pkt.family === 6 ? 'ipv6-icmp' : pkt.proto };
      case 'mark':
        return { t: 'num', v: pkt.mark ?? 0 };
      default:
        return undefined;
    }
  }
  if (l.payload) {
    const { protocol, field } = l.payload as { protocol?: string; field?: string };
    if (protocol === 'ip' || protocol === 'ip6') {
      if ((protocol === 'ip') !== (pkt.family === 4)) return { t: 'absent' };
      if (field === 'saddr') return { t: 'ip', v: pkt.saddr };
      if (field === 'daddr') return { t: 'ip', v: pkt.daddr };
      if (field === 'protocol' || field === 'nexthdr') {
        return { t: 'str', v: pkt.proto === 'icmp' && pkt.family === 6 ? 'ipv6-icmp' : pkt.proto };
      }
      return undefined;
    }
    if (protocol === 'tcp' || protocol === 'udp' || protocol === 'th') {
      if (protocol === 'th' ? pkt.proto === 'icmp' : pkt.proto !== protocol) return { t: 'absent' };
      if (field === 'dport') return pkt.dport === undefined ? undefined : { t: 'num', v: pkt.dport };
      if (field === 'sport') return pkt.sport === undefined ? undefined : { t: 'num', v: pkt.sport };
      return undefined;
    }
    if (protocol === 'icmp' || protocol === 'icmpv6') {
      if (pkt.proto !== 'icmp' || (protocol === 'icmp') !== (pkt.family === 4)) return { t: 'absent' };
      if (field === 'type') return { t: 'str', v: 'echo-request' };
      return undefined;
    }
    return undefined;
  }
  if (l.fib) {
    const { result, flags } = l.fib as { result?: string; flags?: unknown };
    const fl = Array.isArray(flags) ? flags : [flags];
    if (result !== 'type') return undefined;
    const ip = fl.includes('daddr') ? pkt.daddr : fl.includes('saddr') ? pkt.saddr : undefined;
    if (!ip) return undefined;
    return { t: 'str', v: env.isLocal(ip) ? 'local' : 'unicast' };
  }
  if (l.ct) {
    const k = (l.ct as { key?: string }).key;
    if (k === 'state') return { t: 'flags', v: [pkt.ctState ?? 'new'] };
    if (k === 'status') {
      return { t: 'flags', v: [...(pkt.dnat ? ['dnat'] : []), ...(pkt.snat ? ['snat'] : [])] };
    }
    if (k === 'direction') return { t: 'str', v: 'original' };
    return undefined;
  }
  return undefined;
}

/** Whether `val` equals (or lies in) the JSON value `right`; undefined when `right` is not understood. */
function contains(val: Val, right: unknown): Tri {
  if (val.t === 'absent') return false;
  if (Array.isArray(right)) {
    // ct state { established, related } is printed as a plain array.
    let any: Tri = false;
    for (const r of right) {
      const m = contains(val, r);
      if (m === true) return true;
      if (m === undefined) any = undefined;
    }
    return any;
  }
  if (right && typeof right === 'object') {
    const r = right as Record<string, unknown>;
    if ('set' in r) return contains(val, Array.isArray(r.set) ? r.set : [r.set]);
    if ('prefix' in r) {
      const p = r.prefix as { addr?: unknown; len?: unknown };
      const ip = typeof p.addr === 'string' ? tryParseIP(p.addr) : undefined;
      if (val.t !== 'ip' || !ip || typeof p.len !== 'number') return undefined;
      const net: IPNet = { ip, len: p.len };
      return containsIP(net, val.v);
    }
    if ('range' in r && Array.isArray(r.range) && r.range.length === 2) {
      const [a, b] = r.range as [unknown, unknown];
      if (val.t === 'num' && typeof a === 'number' && typeof b === 'number') return val.v >= a && val.v <= b;
      if (val.t === 'ip' && typeof a === 'string' && typeof b === 'string') {
        const lo = tryParseIP(a);
        const hi = tryParseIP(b);
        if (!lo || !hi || lo.family !== val.v.family) return undefined;
        return compareIP(val.v, lo) >= 0 && compareIP(val.v, hi) <= 0;
      }
      return undefined;
    }
    return undefined;
  }
  switch (val.t) {
    case 'ip': {
      const ip = typeof right === 'string' ? tryParseIP(right) : undefined;
      return ip ? ip.family === val.v.family && ip.value === val.v.value : undefined;
    }
    case 'num':
      return typeof right === 'number' ? val.v === right : undefined;
    case 'str':
      if (typeof right !== 'string') return undefined;
      if (right.endsWith('*') && !right.endsWith('\\*')) return val.v.startsWith(right.slice(0, -1));
      return val.v === right;
    case 'flags':
      return typeof right === 'string' ? val.v.includes(right) : undefined;
  }
}

function evalMatch(m: MatchExpr, pkt: MatchPacket, env: MatchEnv): Tri {
  const val = leftValue(m.left, pkt, env);
  if (!val) return undefined;
  const op = m.op ?? '==';
  if (val.t === 'absent') return false;
  if (op === '<' || op === '>' || op === '<=' || op === '>=') {
    if (val.t !== 'num' || typeof m.right !== 'number') return undefined;
    const r = m.right;
    return op === '<' ? val.v < r : op === '>' ? val.v > r : op === '<=' ? val.v <= r : val.v >= r;
  }
  const c = contains(val, m.right);
  if (c === undefined) return undefined;
  if (op === '==' || op === 'in') return c;
  if (op === '!=') return !c;
  return undefined;
}

function natOf(kind: NatAction['kind'], v: unknown, pkt: MatchPacket, rule: RuleRef): NatAction | undefined {
  if (kind === 'masquerade') return { kind, rule };
  const o = (v ?? {}) as { addr?: unknown; port?: unknown };
  let addr: IPAddr | undefined;
  let port: number | undefined;
  if (typeof o.addr === 'string') {
    addr = tryParseIP(o.addr);
    if (!addr) return undefined;
  } else if (o.addr && typeof o.addr === 'object' && 'map' in (o.addr as object)) {
    // dnat ip to tcp dport map { 9000 : 10.0.0.2 . 8000, … }
    const map = (o.addr as { map: { key?: unknown; data?: unknown } }).map;
    const k = leftValue(map.key, pkt, { isLocal: () => false });
    const data = (map.data as { set?: unknown } | undefined)?.set;
    if (k?.t !== 'num' || !Array.isArray(data)) return undefined;
    for (const el of data) {
      if (!Array.isArray(el) || el.length !== 2) continue;
      if (contains(k, el[0]) !== true) continue;
      const to = el[1] as unknown;
      const parts =
        to && typeof to === 'object' && 'concat' in to ? (to as { concat: unknown[] }).concat : [to];
      addr = typeof parts[0] === 'string' ? tryParseIP(parts[0]) : undefined;
      if (typeof parts[1] === 'number') port = parts[1];
      break;
    }
    if (!addr) return undefined;
  } else if (o.addr !== undefined) {
    return undefined;
  }
  if (typeof o.port === 'number') port = o.port;
  else if (o.port && typeof o.port === 'object' && 'range' in o.port) {
    const [a, b] = (o.port as { range: [number, number] }).range;
    // The NAT core keeps a port that lies in the range (one to one), else takes the first.
    port = pkt.dport !== undefined && pkt.dport >= a && pkt.dport <= b ? pkt.dport : a;
  }
  return { kind, ...(addr && { addr }), ...(port !== undefined && { port }), rule };
}

// ---- rendering ------------------------------------------------------------------------------

function ruleRef(def: ChainDef, rule: ChainDef['rules'][number]): RuleRef {
  return {
    family: def.family,
    table: def.table,
    chain: def.name,
    ...(rule.handle !== undefined && { handle: rule.handle }),
    ...(rule.comment !== undefined && { comment: rule.comment }),
    text: ruleText(rule.expr),
  };
}

function valueText(v: unknown): string {
  if (typeof v === 'string') return /^[@A-Za-z0-9_.:/*-]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number') return String(v);
  if (Array.isArray(v)) return v.map(valueText).join(',');
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if ('prefix' in o) {
      const p = o.prefix as { addr?: unknown; len?: unknown };
      return `${String(p.addr)}/${String(p.len)}`;
    }
    if ('range' in o && Array.isArray(o.range)) return o.range.map(valueText).join('-');
    if ('set' in o) return `{ ${(Array.isArray(o.set) ? o.set : [o.set]).map(valueText).join(', ')} }`;
    if ('concat' in o && Array.isArray(o.concat)) return o.concat.map(valueText).join(' . ');
    if ('map' in o) {
      const m = o.map as { key?: unknown; data?: unknown };
      const d = (m.data as { set?: unknown[] } | undefined)?.set ?? [];
      return `${leftText(m.key)} map { ${d.map((e) => (Array.isArray(e) ? `${valueText(e[0])} : ${valueText(e[1])}` : valueText(e))).join(', ')} }`;
    }
  }
  return JSON.stringify(v);
}

function leftText(l: unknown): string {
  if (!l || typeof l !== 'object') return JSON.stringify(l);
  const o = l as Record<string, Record<string, unknown>>;
  if (o.meta) return `meta ${String(o.meta.key)}`.replace(/^meta (iifname|oifname|iif|oif|mark)$/, '$1');
  if (o.payload) return `${String(o.payload.protocol)} ${String(o.payload.field)}`;
  if (o.fib) {
    const f = o.fib.flags;
    return `fib ${(Array.isArray(f) ? f : [f]).join(' . ')} ${String(o.fib.result)}`;
  }
  if (o.ct) return `ct ${String(o.ct.key)}`;
  return JSON.stringify(l);
}

function exprText(e: unknown): string {
  if (!e || typeof e !== 'object') return JSON.stringify(e);
  const [k, v] = Object.entries(e as Record<string, unknown>)[0] ?? ['', undefined];
  switch (k) {
    case 'match': {
      const m = v as MatchExpr;
      const op = m.op === '==' || m.op === 'in' || m.op === undefined ? '' : `${m.op} `;
      return `${leftText(m.left)} ${op}${valueText(m.right)}`;
    }
    case 'accept':
    case 'drop':
    case 'return':
    case 'continue':
    case 'masquerade':
    case 'notrack':
      return k;
    case 'reject':
      return 'reject';
    case 'counter':
      return 'counter';
    case 'jump':
    case 'goto':
      return `${k} ${String((v as { target?: unknown }).target)}`;
    case 'dnat':
    case 'snat':
    case 'redirect': {
      const o = (v ?? {}) as { family?: string; addr?: unknown; port?: unknown };
      const addr = o.addr === undefined ? '' : valueText(o.addr);
      const port = o.port === undefined ? '' : `:${valueText(o.port)}`;
      return `${k}${o.family ? ` ${o.family}` : ''} to ${addr}${port}`.trim();
    }
    case 'xt': {
      const x = v as { type?: string; name?: string };
      return x.type === 'match' && x.name === 'comment' ? '' : `xt ${String(x.type)} ${String(x.name)}`;
    }
    default:
      return k;
  }
}

/** A rule's expressions as nft prints them (approximately), for a person to recognise. */
export function ruleText(exprs: readonly unknown[]): string {
  return exprs.map(exprText).filter(Boolean).join(' ');
}

/** `inet weft forward: "net …: published ports"` or the rule's text when it has no comment. */
export function describeRule(r: RuleRef): string {
  const where = `${r.family} ${r.table} ${r.chain}`;
  return r.comment !== undefined ? `${where}: ${r.text} comment "${r.comment}"` : `${where}: ${r.text}`;
}

/** The address a masquerade or dnat produces, as text (for notes). */
export const natText = (n: NatAction): string =>
  `${n.kind}${n.addr ? ` to ${formatIP(n.addr)}` : ''}${n.port !== undefined ? `:${n.port}` : ''}`;
