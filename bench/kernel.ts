/**
 * Kernel-layer benchmark: the same work through weft's netlink layer and by spawning `ip`, side
 * by side in one run, inside throwaway namespaces (removed at the end, also on failure).
 *   1,000 route adds, then 1,000 route deletes
 *   1,000 address adds (then one flush, not timed)
 *   200 veth pairs created with the peer directly in a container namespace, then removed
 * Usage: node --import tsx bench/kernel.ts [--json]
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openHandle } from '../src/kernel/handle.js';
import { Netns } from '../src/kernel/netns.js';

const ROUTES = 1000;
const ADDRS = 1000;
const VETHS = 200;
const json = process.argv.includes('--json');
const id = randomBytes(3).toString('hex');
const log = (s: string) => {
  if (!json) process.stderr.write(`${s}\n`);
};

interface Row {
  work: string;
  count: number;
  weftMs: number;
  ipMs: number;
}

function time(fn: () => void): number {
  const t = performance.now();
  fn();
  return performance.now() - t;
}

const ip = (ns: string, args: string[]) => execFileSync('ip', ['-n', ns, ...args], { stdio: 'pipe' });

function routeDst(i: number): string {
  return `10.${100 + (i >> 8)}.${i & 255}.0/24`;
}
function addr(i: number): string {
  return `10.201.${i >> 7}.${(i & 127) + 1}/32`;
}

function run(): Row[] {
  const made: Netns[] = [];
  const mk = (label: string) => {
    const ns = Netns.create(`/run/netns/wb-${id}-${label}`);
    made.push(ns);
    return { ns, name: `wb-${id}-${label}`, h: openHandle(ns) };
  };
  try {
    const host = mk('host');
    const cont = mk('cont');
    host.h.links.add({ kind: 'veth', name: 'bench0', up: true, peer: { name: 'bench0p' } });
    host.h.links.setUp('bench0p');
    host.h.addrs.add('bench0', '10.200.0.1/16');
    const rows: Row[] = [];

    // Routes: add all, delete all; weft then ip, on the same device and prefixes.
    log(`routes: ${ROUTES} adds and ${ROUTES} deletes`);
    const wAdd = time(() => {
      for (let i = 0; i < ROUTES; i++) host.h.routes.add({ dst: routeDst(i), via: '10.200.0.2' });
    });
    const wDel = time(() => {
      for (let i = 0; i < ROUTES; i++) host.h.routes.delete({ dst: routeDst(i), via: '10.200.0.2' });
    });
    const iAdd = time(() => {
      for (let i = 0; i < ROUTES; i++) ip(host.name, ['route', 'add', routeDst(i), 'via', '10.200.0.2']);
    });
    const iDel = time(() => {
      for (let i = 0; i < ROUTES; i++) ip(host.name, ['route', 'del', routeDst(i), 'via', '10.200.0.2']);
    });
    rows.push({ work: 'route add', count: ROUTES, weftMs: wAdd, ipMs: iAdd });
    rows.push({ work: 'route delete', count: ROUTES, weftMs: wDel, ipMs: iDel });

    log(`addresses: ${ADDRS} adds`);
    const wAddr = time(() => {
      for (let i = 0; i < ADDRS; i++) host.h.addrs.add('bench0p', addr(i));
    });
    host.h.addrs.flush('bench0p', 4);
    const iAddr = time(() => {
      for (let i = 0; i < ADDRS; i++) ip(host.name, ['addr', 'add', addr(i), 'dev', 'bench0p']);
    });
    host.h.addrs.flush('bench0p', 4);
    rows.push({ work: 'address add', count: ADDRS, weftMs: wAddr, ipMs: iAddr });

    log(`veth pairs: ${VETHS} created (peer directly in the container namespace) and removed`);
    const wVeth = time(() => {
      for (let i = 0; i < VETHS; i++) {
        host.h.links.add({ kind: 'veth', name: `vb${i}`, peer: { name: `eth${i}`, netns: cont.ns } });
      }
    });
    const wVethDel = time(() => {
      for (let i = 0; i < VETHS; i++) host.h.links.delete(`vb${i}`);
    });
    const iVeth = time(() => {
      for (let i = 0; i < VETHS; i++) {
        ip(host.name, [
          'link',
          'add',
          `vb${i}`,
          'type',
          'veth',
          'peer',
          'name',
          `eth${i}`,
          'netns',
          cont.name,
        ]);
      }
    });
    const iVethDel = time(() => {
      for (let i = 0; i < VETHS; i++) ip(host.name, ['link', 'del', `vb${i}`]);
    });
    rows.push({ work: 'veth create', count: VETHS, weftMs: wVeth, ipMs: iVeth });
    rows.push({ work: 'veth delete', count: VETHS, weftMs: wVethDel, ipMs: iVethDel });
    return rows;
  } finally {
    for (const ns of made.reverse()) ns.delete();
  }
}

const rows = run();
if (json) {
  process.stdout.write(`${JSON.stringify(rows)}\n`);
} else {
  const f = (n: number) => n.toFixed(n < 10 ? 2 : 0);
  console.log('| work | count | weft total ms | weft per op µs | ip total ms | ip per op µs | ip / weft |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    const ratio = r.ipMs / r.weftMs;
    console.log(
      `| ${r.work} | ${r.count} | ${f(r.weftMs)} | ${f((r.weftMs * 1000) / r.count)} | ${f(r.ipMs)} | ${f((r.ipMs * 1000) / r.count)} | ${ratio.toFixed(1)}× |`,
    );
  }
}
