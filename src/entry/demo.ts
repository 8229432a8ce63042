/**
 * `weft demo`: the kernel layer at work, readable by a person. It builds a "host" namespace with
 * a bridge and two "container" namespaces joined to it by veth pairs (the peer created directly
 * inside each container), gives them addresses and a default route, and pings across. Everything
 * lives in namespaces named weft-demo-* and is removed at the end, also on failure or Ctrl-C.
 * (The multi-host lab replaces this as the README's demo once it exists.)
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { type NetHandle, openHandle } from '../kernel/handle.js';
import { listPinned, Netns } from '../kernel/netns.js';

const execFileP = promisify(execFile);
const PREFIX = 'weft-demo-';
const DIR = '/run/netns';

const out = (s: string) => process.stdout.write(`${s}\n`);

export function removeDemo(): void {
  for (const name of listPinned(DIR).filter((n) => n.startsWith(PREFIX))) Netns.remove(`${DIR}/${name}`);
}

async function ping(ns: Netns, dst: string): Promise<{ ok: boolean; ms: number | undefined }> {
  let running: ReturnType<typeof execFileP> | undefined;
  ns.run(() => {
    running = execFileP('ping', ['-n', '-c', '1', '-w', '2', dst], { timeout: 5000 });
  });
  try {
    const { stdout } = await running!;
    const m = /time=([\d.]+) ms/.exec(String(stdout));
    return { ok: true, ms: m ? Number(m[1]) : undefined };
  } catch {
    return { ok: false, ms: undefined };
  }
}

export async function runDemo(opts: { keep: boolean }): Promise<void> {
  if (listPinned(DIR).some((n) => n.startsWith(PREFIX))) {
    out('a previous demo is still up; removing it first');
    removeDemo();
  }
  const made: Netns[] = [];
  const onSignal = () => {
    for (const ns of made) ns.delete();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  const t0 = performance.now();
  const step = (s: string) => out(`  ${((performance.now() - t0) / 1000).toFixed(3)}s  ${s}`);
  let failed = false;
  try {
    out('weft demo: a bridge network with two containers, built through netlink');
    const hostNs = Netns.create(`${DIR}/${PREFIX}host`);
    made.push(hostNs);
    const host: NetHandle = openHandle(hostNs);
    host.links.setUp('lo');
    host.links.add({ kind: 'bridge', name: 'weft0', up: true });
    host.addrs.add('weft0', '10.88.0.1/24');
    step('host namespace weft-demo-host: bridge weft0 with gateway 10.88.0.1/24');
    const containers: { name: string; ns: Netns; ip: string }[] = [];
    for (const [i, name] of ['c1', 'c2'].entries()) {
      const ns = Netns.create(`${DIR}/${PREFIX}${name}`);
      made.push(ns);
      const c = openHandle(ns);
      c.links.setUp('lo');
      host.links.add({
        kind: 'veth',
        name: `veth-${name}`,
        master: 'weft0',
        up: true,
        peer: { name: 'eth0', netns: ns },
      });
      const ip = `10.88.0.${10 + i}`;
      c.addrs.add('eth0', `${ip}/24`);
      c.links.setUp('eth0');
      c.routes.add({ dst: 'default', via: '10.88.0.1' });
      containers.push({ name, ns, ip });
      step(
        `container ${name} (weft-demo-${name}): eth0 ${ip}/24 ↔ veth-${name} on weft0, default via 10.88.0.1`,
      );
    }
    out('');
    out('connectivity:');
    const [c1, c2] = containers as [(typeof containers)[0], (typeof containers)[0]];
    for (const [from, to, label] of [
      [c1, c2.ip, 'c1 → c2'],
      [c2, c1.ip, 'c2 → c1'],
      [c1, '10.88.0.1', 'c1 → gateway'],
    ] as const) {
      const r = await ping(from.ns, to);
      failed ||= !r.ok;
      out(
        `  ${r.ok ? '✓' : '✗'} ${label.padEnd(14)} ${to.padEnd(12)} ${r.ok ? `${r.ms ?? '?'} ms` : 'no reply'}`,
      );
    }
    const c1h = openHandle(c1.ns);
    const route = c1h.routes.get(c2.ip);
    out('');
    out(
      `the kernel's own route lookup in c1 for ${c2.ip}: dev ${route.oif ? c1h.links.get(route.oif).name : '?'}`,
    );
  } finally {
    process.removeListener('SIGINT', onSignal);
    if (opts.keep) {
      out('');
      out('kept: explore with `ip netns exec weft-demo-c1 ip addr`, remove with `weft demo --down`');
      for (const ns of made) ns.close();
    } else {
      for (const ns of made.reverse()) ns.delete();
      step('removed every namespace the demo made');
    }
  }
  if (failed) process.exitCode = 1;
}
