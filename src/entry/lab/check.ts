/**
 * `weft lab check`: is the cluster working, as a person would test it. Every request is a real
 * TCP connection carrying an HTTP GET made by curl (bounded: `-m 2`) started inside the client's
 * network namespace (a container's sandbox pin, or the internet namespace), and the answer is
 * checked, not just its arrival, because every server in the lab says who it is and who asked:
 *
 *   - every container → every other container, by IP: the right container answers and sees the
 *     client's own address (no NAT between cluster subnets);
 *   - by name, where names resolve: a container's network with DNS resolves the names of the
 *     containers of the same host (each daemon's DNS knows its own); the default network has no
 *     DNS (as Docker's default bridge), which the report says instead of failing;
 *   - every container → the internet server, which must see the container's host's public IP
 *     (the host masquerades traffic that leaves the cluster network);
 *   - the internet → the published port on its host's public IP;
 *   - the lab against its record: a dead daemon, or a container the lab started that its daemon
 *     no longer has (removed by hand), is a failure, not just fewer checks.
 *
 * One curl per client namespace makes all of that client's requests, a few at a time
 * (`--parallel`); a few clients run at once (these machines have 2 cores). The report is a
 * matrix with ✓/✗ and the request's time (curl's time_total), then the failures with reasons.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Netns } from '../../kernel/netns.js';
import { runTool } from '../../kernel/run.js';
import { ApiClient } from '../client.js';
import { type LabOptions, type LabStatus, loadLab, status } from './lab.js';
import type { LabRecord } from './record.js';
import { DEFAULT_PATHS, INTERNET, nsPath } from './topology.js';

/** `lab`: a part of the lab its record names that is not there (a dead daemon, a missing container). */
export type CheckKind = 'ip' | 'name' | 'internet' | 'published' | 'lab';

export interface CheckResult {
  readonly kind: CheckKind;
  /** Client: a container name, or "internet"; for `lab`, the host. */
  readonly from: string;
  /** Server: a container name, or "internet"; for `lab`, the missing container, or "daemon". */
  readonly to: string;
  readonly url: string;
  readonly ok: boolean;
  /** curl's total time, when an answer came. */
  readonly ms?: number;
  /** The address the server saw the request come from. */
  readonly seenAs?: string;
  /** Why it failed. */
  readonly error?: string;
}

export interface CheckReport {
  readonly lab: string;
  readonly backend: string;
  readonly store: string;
  readonly ok: boolean;
  readonly passed: number;
  readonly failed: number;
  readonly containers: readonly { name: string; host: string; ip: string | undefined }[];
  readonly results: readonly CheckResult[];
  /** Things not checked, and why (names that do not resolve, no published port). */
  readonly notes: readonly string[];
  readonly ms: number;
}

const CURL_MAX_S = 2;
/** Client namespaces checked at once, and transfers at once inside each client's curl. */
const DEFAULT_CONCURRENCY = 2;
const CURL_PARALLEL = 6;

/** Run `fn` over `items` with at most `limit` at once; results in order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (x: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

interface Answer {
  ok: boolean;
  body: string;
  ms?: number;
  error?: string;
}

/**
 * HTTP GETs of `urls` from inside the namespace pinned at `pin`: one curl for them all, a few
 * transfers at a time (`--parallel`), each body to its own file, one status line per transfer.
 */
async function getAll(pin: string, urls: readonly string[]): Promise<Answer[]> {
  const fail = (error: string): Answer[] => urls.map(() => ({ ok: false, body: '', error }));
  let ns: Netns;
  try {
    ns = Netns.open(pin);
  } catch (e) {
    return fail(`cannot enter ${pin}: ${(e as Error).message}`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-lab-check-'));
  try {
    const args = [
      '-s',
      '-S',
      '-m',
      String(CURL_MAX_S),
      '--parallel',
      '--parallel-max',
      String(CURL_PARALLEL),
    ];
    args.push('-w', '\nweft-check %{urlnum} %{exitcode} %{time_total} %{errormsg}\n');
    for (const [i, u] of urls.entries()) args.push('-o', path.join(dir, String(i)), u);
    const bound = (CURL_MAX_S * Math.ceil(urls.length / CURL_PARALLEL) + 5) * 1000;
    const r = await runTool(ns, 'curl', args, undefined, bound);
    if (!r) return fail('curl is not installed');
    const out = urls.map((): Answer => ({ ok: false, body: '', error: r.stderr.trim() || 'no answer' }));
    for (const line of r.stdout.split('\n')) {
      const m = /^weft-check (\d+) (\d+) ([\d.]+) ?(.*)$/.exec(line);
      if (!m) continue;
      const i = Number(m[1]);
      if (i >= urls.length) continue;
      const time = Number(m[3]);
      const ms = time > 0 ? Math.round(time * 10000) / 10 : undefined;
      let body = '';
      try {
        body = fs.readFileSync(path.join(dir, String(i)), 'utf8').trim();
      } catch {
        body = '';
      }
      out[i] =
        m[2] === '0'
          ? { ok: true, body, ...(ms !== undefined && { ms }) }
          : { ok: false, body, error: m[4] || `curl exit ${m[2]}`, ...(ms !== undefined && { ms }) };
    }
    return out;
  } catch (e) {
    return fail((e as Error).message);
  } finally {
    ns.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const HELLO_RE = /^hello from (.+?); you are (\S+)$/m;

interface Probe {
  kind: CheckKind;
  from: string;
  to: string;
  pin: string;
  url: string;
  /** The greeting the right server gives. */
  expect: string;
  /** The address it must see the client as, when that matters. */
  seenAs?: string;
  seenWhat?: string;
}

function judge(p: Probe, a: Answer): CheckResult {
  const base = { kind: p.kind, from: p.from, to: p.to, url: p.url, ...(a.ms !== undefined && { ms: a.ms }) };
  if (!a.ok) return { ...base, ok: false, error: a.error ?? 'no answer' };
  const m = HELLO_RE.exec(a.body);
  if (!m) return { ...base, ok: false, error: `unexpected answer: ${a.body.slice(0, 80) || '(empty)'}` };
  const [, who, seen] = m as unknown as [string, string, string];
  if (who !== p.expect)
    return { ...base, ok: false, seenAs: seen, error: `answered by "${who}", not "${p.expect}"` };
  if (p.seenAs !== undefined && seen !== p.seenAs) {
    return {
      ...base,
      ok: false,
      seenAs: seen,
      error: `the server saw ${seen}, not ${p.seenAs} (${p.seenWhat})`,
    };
  }
  return { ...base, ok: true, seenAs: seen };
}

/** All probes, one curl per client namespace, a few clients at a time; results in probe order. */
async function runProbes(probes: readonly Probe[], concurrency: number): Promise<CheckResult[]> {
  const byPin = new Map<string, number[]>();
  probes.forEach((p, i) => {
    const list = byPin.get(p.pin) ?? [];
    list.push(i);
    byPin.set(p.pin, list);
  });
  const out = new Array<CheckResult>(probes.length);
  await mapLimit([...byPin.entries()], concurrency, async ([pin, idx]) => {
    const answers = await getAll(
      pin,
      idx.map((i) => probes[i]!.url),
    );
    idx.forEach((i, k) => {
      out[i] = judge(probes[i]!, answers[k]!);
    });
  });
  return out;
}

/**
 * What the record says the lab is made of and is not there: each host's daemon (dead: its
 * containers cannot be checked, and nothing on it follows the cluster any more) and the
 * containers the lab started on each host with a live daemon. One failed `lab` result each.
 */
export function missingParts(rec: LabRecord, st: LabStatus): CheckResult[] {
  const out: CheckResult[] = [];
  const fail = (from: string, to: string, error: string): CheckResult => ({
    kind: 'lab',
    from,
    to,
    url: '',
    ok: false,
    error,
  });
  for (const hr of rec.hosts) {
    const h = st.hosts.find((x) => x.name === hr.name);
    if (!h) continue; // the status is made from the record: not reached
    if (h.daemon === 'dead') {
      const cs =
        hr.containers.length > 0 ? `its containers (${hr.containers.join(', ')}) are not checked; ` : '';
      out.push(
        fail(
          h.name,
          'daemon',
          `the daemon of ${h.name} is dead: ${cs}nothing on ${h.name} follows the cluster (peers joining or leaving) nor renews its lease, and no container can start there (${h.error ?? 'no answer'})`,
        ),
      );
      continue;
    }
    const have = new Set(h.containers.map((c) => c.name));
    for (const c of hr.containers) {
      if (!have.has(c)) {
        out.push(
          fail(
            h.name,
            c,
            `${c} on ${h.name} is missing: the lab started it, its daemon no longer has it (removed by hand?)`,
          ),
        );
      }
    }
  }
  return out;
}

/**
 * Check the lab's connectivity (see the note at the top). Throws NOT_FOUND for an unknown lab;
 * failed requests are results, never exceptions.
 */
export async function check(
  name: string,
  o: LabOptions & { concurrency?: number } = {},
): Promise<CheckReport> {
  const t0 = performance.now();
  const rec = loadLab(name, o);
  const st: LabStatus = await status(name, o);
  const paths = o.paths;
  const notes: string[] = [];
  const containers: {
    name: string;
    host: string;
    hostIp: string;
    ip: string | undefined;
    pin: string | undefined;
  }[] = [];
  const dnsHosts = new Set<string>();
  for (const h of st.hosts) {
    if (h.daemon === 'dead') continue; // a failure of missingParts

    for (const c of h.containers) {
      containers.push({
        name: c.name,
        host: h.name,
        hostIp: h.publicIp,
        ip: c.status === 'running' ? c.ip : undefined,
        pin: c.status === 'running' ? c.netnsPath : undefined,
      });
    }
    const hr = rec.hosts.find((x) => x.name === h.name);
    if (hr) {
      try {
        const nets = await new ApiClient(hr.socket, 5000).request<{ name: string; dns: boolean }[]>(
          'GET',
          '/v1/networks',
        );
        if (nets.find((n) => n.name === 'bridge')?.dns) dnsHosts.add(h.name);
      } catch {
        // counted through the host's containers
      }
    }
  }
  const results: CheckResult[] = missingParts(rec, st);
  const probes: Probe[] = [];
  for (const c of containers) {
    if (!c.pin || !c.ip) {
      results.push({
        kind: 'ip',
        from: c.name,
        to: c.name,
        url: '',
        ok: false,
        error: `${c.name} is not running`,
      });
    }
  }
  const live = containers.filter((c) => c.pin && c.ip);
  for (const src of live) {
    for (const dst of live) {
      if (src === dst) continue;
      probes.push({
        kind: 'ip',
        from: src.name,
        to: dst.name,
        pin: src.pin!,
        url: `http://${dst.ip}/`,
        expect: `${dst.name} on ${dst.host}`,
        seenAs: src.ip!,
        seenWhat: 'traffic between containers must not be NATed',
      });
      if (src.host === dst.host && dnsHosts.has(src.host)) {
        probes.push({
          kind: 'name',
          from: src.name,
          to: dst.name,
          pin: src.pin!,
          url: `http://${dst.name}/`,
          expect: `${dst.name} on ${dst.host}`,
        });
      }
    }
    probes.push({
      kind: 'internet',
      from: src.name,
      to: 'internet',
      pin: src.pin!,
      url: `http://${INTERNET.server}/`,
      expect: `the internet (${INTERNET.server})`,
      seenAs: src.hostIp,
      seenWhat: `${src.host} must masquerade traffic leaving the cluster network`,
    });
  }
  if (live.length > 1) {
    if (dnsHosts.size === 0) {
      notes.push(
        'names: not checked: the default network "bridge" has no DNS (as Docker\'s default bridge); containers reach each other by IP',
      );
    } else {
      notes.push(
        "names: checked between containers of the same host; names of other hosts' containers do not resolve (each daemon's DNS knows its own containers)",
      );
    }
  }
  const pub = st.published;
  if (pub) {
    probes.push({
      kind: 'published',
      from: 'internet',
      to: pub.container,
      pin: nsPath(paths ?? DEFAULT_PATHS, name, 'inet'),
      url: `http://${pub.publicIp}:${pub.port}/`,
      expect: `${pub.container} on ${pub.host}`,
    });
  } else if (containers.length > 0) {
    notes.push('published port: none in this lab (its host was removed); not checked');
  }
  results.push(...(await runProbes(probes, o.concurrency ?? DEFAULT_CONCURRENCY)));
  const failed = results.filter((r) => !r.ok).length;
  return {
    lab: name,
    backend: st.backend,
    store: st.store,
    ok: failed === 0,
    passed: results.filter((r) => r.ok).length,
    failed,
    containers: containers.map((c) => ({ name: c.name, host: c.host, ip: c.ip })),
    results,
    notes,
    ms: Math.round(performance.now() - t0),
  };
}

const cell = (r: CheckResult | undefined): string => {
  if (!r) return '';
  if (!r.ok) return '✗';
  return r.ms === undefined ? '✓' : `✓ ${r.ms < 10 ? r.ms.toFixed(1) : Math.round(r.ms)}`;
};

/** The report as a person reads it: matrices of ✓/✗ with ms, then failures and notes. */
export function renderCheck(r: CheckReport): string {
  const lines: string[] = [];
  const n = r.containers.length;
  lines.push(
    `weft lab check: lab "${r.lab}" (${r.backend}, ${r.store} store): ${new Set(r.containers.map((c) => c.host)).size} hosts, ${n} containers`,
  );
  const byKey = new Map(r.results.map((x) => [`${x.kind} ${x.from} ${x.to}`, x]));
  const label = (c: { name: string; ip: string | undefined }) => `${c.name} ${c.ip ?? '-'}`;
  const lw = Math.max(8, ...r.containers.map((c) => label(c).length));
  const cw = Math.max(7, ...r.containers.map((c) => c.name.length + 1));
  const matrix = (kind: CheckKind, title: string) => {
    lines.push('', title);
    lines.push(`${'from ↓  to →'.padEnd(lw)} ${r.containers.map((c) => c.name.padStart(cw)).join('')}`);
    for (const src of r.containers) {
      const cells = r.containers.map((dst) =>
        src === dst ? '·' : cell(byKey.get(`${kind} ${src.name} ${dst.name}`)),
      );
      lines.push(`${label(src).padEnd(lw)} ${cells.map((c) => c.padStart(cw)).join('')}`);
    }
  };
  if (n > 1) matrix('ip', 'containers → containers, HTTP by IP (✓ ms, ✗ failed)');
  if (r.results.some((x) => x.kind === 'name'))
    matrix('name', 'containers → containers, HTTP by name (same host)');
  const inet = r.results.filter((x) => x.kind === 'internet');
  if (inet.length > 0) {
    lines.push(
      '',
      `containers → internet ${INTERNET.server} (the server must see the host's public IP: masquerade)`,
    );
    for (const x of inet) {
      const c = r.containers.find((cc) => cc.name === x.from);
      lines.push(
        `${label({ name: x.from, ip: c?.ip }).padEnd(lw)} ${cell(x).padStart(cw)}   ${x.seenAs ? `seen as ${x.seenAs}` : ''}${c ? ` (${c.host})` : ''}`,
      );
    }
  }
  for (const x of r.results.filter((y) => y.kind === 'published')) {
    lines.push(
      '',
      `internet → published port ${x.url.replace(/^http:\/\/|\/$/g, '')} → ${x.to}:80   ${cell(x)}`,
    );
  }
  const failures = r.results.filter((x) => !x.ok);
  if (failures.length > 0) {
    lines.push('', 'failures:');
    for (const f of failures.slice(0, 40)) {
      lines.push(
        f.kind === 'lab'
          ? `  ✗ ${f.error}`
          : `  ✗ ${f.kind === 'name' ? 'by name ' : ''}${f.from} → ${f.to}${f.url ? ` (${f.url})` : ''}: ${f.error}`,
      );
    }
    if (failures.length > 40) lines.push(`  … and ${failures.length - 40} more (--json has them all)`);
  }
  for (const note of r.notes) lines.push('', note);
  lines.push(
    '',
    r.ok
      ? `all ${r.passed} checks passed (${(r.ms / 1000).toFixed(1)} s)`
      : `${r.failed} of ${r.passed + r.failed} checks FAILED (${(r.ms / 1000).toFixed(1)} s)`,
  );
  return lines.join('\n');
}
