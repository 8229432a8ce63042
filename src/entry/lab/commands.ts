/**
 * The `weft lab …` commands: thin, as every command of the CLI. They parse, call the lab library
 * (loaded when a lab command runs, so other commands do not pay for it), and print: progress on
 * stderr, results on stdout (`--json` for scripts). Errors leave through the CLI's one exit path.
 * Every command takes `--name LAB` (default $WEFT_LAB, else "weft"), so several labs coexist.
 */
import type { Command } from 'commander';
import { invalid } from '../../lib/errors.js';
import { table } from '../text.js';
import type { CheckReport } from './check.js';
import type { HostStatus, LabStatus, UpTimings } from './lab.js';

const out = (s: string): void => {
  process.stdout.write(`${s}\n`);
};
const err = (s: string): void => {
  process.stderr.write(`${s}\n`);
};
const json = (v: unknown): void => out(JSON.stringify(v, null, 2));

const labName = (o: { name?: string }): string => o.name ?? process.env.WEFT_LAB ?? 'weft';
/** The `--name` flag to repeat in hints, when the lab is not the default one. */
const nameFlag = (lab: string): string => (lab === 'weft' ? '' : ` --name ${lab}`);

function int(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw invalid(`${what} must be a whole number, not "${v}"`);
  return Number(v);
}

function containersCell(h: HostStatus, st: LabStatus): string {
  if (h.daemon === 'dead') return `(daemon dead: ${h.error ?? 'see weft lab logs'})`;
  if (h.containers.length === 0) return '-';
  return h.containers
    .map((c) => {
      const pub =
        st.published?.host === h.name && st.published.container === c.name
          ? ` (published ${st.published.publicIp}:${st.published.port})`
          : '';
      return `${c.name} ${c.ip ?? '-'}${c.status === 'running' ? '' : ` [${c.status}]`}${pub}`;
    })
    .join(', ');
}

function hostsTable(st: LabStatus): string {
  return table(
    ['HOST', 'PUBLIC IP', 'SUBNET', 'DAEMON', 'CONTAINERS'],
    st.hosts.map((h) => [h.name, h.publicIp, h.subnet ?? '-', h.daemon, containersCell(h, st)]),
  );
}

function explore(st: LabStatus): string[] {
  const n = nameFlag(st.name);
  const h1 = st.hosts[0];
  const h2 = st.hosts[1] ?? h1;
  const c1 = h1?.containers[0];
  const peer = (h2?.containers ?? []).find((c) => c.name !== c1?.name && c.ip);
  const rows: [string, string][] = [
    [`weft lab check${n}`, 'every container to every other, to the internet, the published port'],
    [`weft lab status${n}`, 'hosts, subnets, containers (--json for scripts)'],
  ];
  if (h2) {
    rows.push([
      `weft lab exec${n} ${h2.name} -- weft ps`,
      `inside a host, weft talks to its daemon (${h2.name}'s)`,
    ]);
    rows.push([
      `weft lab exec${n} ${h2.name} -- ip route`,
      'the routes the backend made for the other subnets',
    ]);
  }
  if (h1 && c1 && peer?.ip) {
    rows.push([
      `weft lab exec${n} ${h1.name} ${c1.name} -- curl -s http://${peer.ip}/`,
      `inside ${c1.name}, to ${peer.name}`,
    ]);
  }
  if (st.published) {
    rows.push([
      `weft lab exec${n} internet -- curl -s http://${st.published.publicIp}:${st.published.port}/`,
      'the published port, from the internet',
    ]);
  }
  rows.push([
    `weft lab add-host${n}; weft lab rm-host${n} ${h2?.name ?? 'host2'}`,
    'hosts join and leave; the others converge',
  ]);
  rows.push([`weft lab logs${n} ${h1?.name ?? 'host1'}`, "a daemon's log"]);
  const w = Math.max(...rows.map(([c]) => c.length));
  return rows.map(([c, d]) => `  ${c.padEnd(w)}   ${d}`);
}

function printUp(st: LabStatus, t: UpTimings): void {
  out(
    `lab "${st.name}" is up in ${(t.total / 1000).toFixed(1)} s: ${st.hosts.length} host${st.hosts.length === 1 ? '' : 's'}, ${st.backend} backend, ${st.store} store, cluster network ${st.network}`,
  );
  out('');
  out(hostsTable(st));
  out('');
  out(`underlay ${st.underlay}; the internet server ${st.internet.server} answers with the address it sees`);
  out('');
  out('explore:');
  for (const l of explore(st)) out(l);
  out('');
  out(`take it down:  weft lab down${nameFlag(st.name)}`);
}

function printStatus(st: LabStatus): void {
  out(
    `lab "${st.name}": ${st.backend} backend, store ${st.storeSpec}, cluster network ${st.network}, underlay ${st.underlay}${st.ready ? '' : ' (not finished building)'}`,
  );
  out('');
  out(hostsTable(st));
  const dead = [
    ...st.etcd.filter((m) => !m.alive).map((m) => `etcd member ${m.name}`),
    ...(st.internet.alive ? [] : ['the internet server']),
  ];
  if (st.etcd.length > 0) {
    out('');
    out(`etcd: ${st.etcd.map((m) => `${m.name} ${m.ip} ${m.alive ? 'running' : 'DEAD'}`).join(', ')}`);
  }
  if (dead.length > 0) {
    out('');
    out(`not running: ${dead.join(', ')}`);
  }
}

/** `weft lab …`: register the command group. */
export function addLabCommands(program: Command): void {
  const lab = program
    .command('lab')
    .description(
      'a whole cluster on this machine: hosts in namespaces, a daemon each, containers, a router and an internet',
    );
  const nameOpt = (c: Command) => c.option('--name <lab>', 'the lab (default $WEFT_LAB or "weft")');

  nameOpt(
    lab
      .command('up')
      .description('build a lab: underlay switch, router, internet, store, a daemon per host, containers')
      .option('--hosts <n>', 'number of hosts', '3')
      .option('--backend <type>', 'vxlan, host-gw or udp', 'vxlan')
      .option('--store <kind>', 'embedded or etcd', 'embedded')
      .option('--etcd-members <n>', 'etcd members with --store etcd: 1 or 3', '1')
      .option('--containers <n>', 'containers per host (0: bare hosts)', '2')
      .option('--network <cidr>', 'the cluster network', '10.244.0.0/16')
      .option('--subnet-len <n>', 'prefix length of each host subnet', '24')
      .option('--underlay <cidr>', 'the underlay subnet (hosts at .11, .12, …)', '192.168.100.0/24')
      .option('--json', 'print the result as JSON'),
  ).action(
    async (o: {
      name?: string;
      hosts: string;
      backend: string;
      store: string;
      etcdMembers: string;
      containers: string;
      network: string;
      subnetLen: string;
      underlay: string;
      json?: boolean;
    }) => {
      const { up } = await import('./lab.js');
      const ac = new AbortController();
      const onInt = () => {
        err('interrupted: removing what was built (Ctrl-C again to leave at once)');
        ac.abort();
      };
      process.once('SIGINT', onInt);
      process.once('SIGTERM', onInt);
      const name = labName(o);
      try {
        const r = await up(
          {
            name,
            hosts: int(o.hosts, '--hosts')!,
            backend: o.backend,
            store: o.store,
            etcdMembers: int(o.etcdMembers, '--etcd-members')!,
            containers: int(o.containers, '--containers')!,
            network: o.network,
            subnetLen: int(o.subnetLen, '--subnet-len')!,
            underlay: o.underlay,
          },
          { progress: (l) => err(`weft lab: ${l}`), signal: ac.signal },
        );
        if (o.json) json({ ...r.status, timings: r.timings });
        else printUp(r.status, r.timings);
      } finally {
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onInt);
      }
    },
  );

  nameOpt(
    lab
      .command('check')
      .description(
        'HTTP from every container to every other, to the internet (masquerade), and to the published port',
      )
      .option('--json', 'print the results as JSON'),
  ).action(async (o: { name?: string; json?: boolean }) => {
    const { check, renderCheck } = await import('./check.js');
    const r: CheckReport = await check(labName(o));
    if (o.json) json(r);
    else out(renderCheck(r));
    if (!r.ok) process.exitCode = 1;
  });

  nameOpt(
    lab
      .command('status')
      .description('hosts, subnets, public IPs, containers, daemons')
      .option('--json', 'machine-readable output'),
  ).action(async (o: { name?: string; json?: boolean }) => {
    const { status } = await import('./lab.js');
    const st = await status(labName(o));
    if (o.json) json(st);
    else printStatus(st);
  });

  nameOpt(
    lab
      .command('exec')
      .description(
        'run a command in a host (where `weft …` talks to its daemon), in a container of a host, or in internet, router, switch, etcdN',
      )
      .usage('[--name LAB] HOST [CONTAINER] -- CMD…')
      .argument('<host>', 'host1…, internet, router, switch or etcd1…')
      .argument('[args...]', '[CONTAINER] -- CMD…'),
  ).action(async (target: string, args: string[], o: { name?: string }, cmd: Command) => {
    // Commander drops the `--`; what follows it in the raw argv is the command.
    let root: Command = cmd;
    while (root.parent) root = root.parent;
    const raw = ((root as unknown as { rawArgs?: string[] }).rawArgs ?? process.argv.slice(2)) as string[];
    const dd = raw.indexOf('--');
    const cmdLen = dd < 0 ? args.length : raw.length - dd - 1;
    const before = args.slice(0, Math.max(0, args.length - cmdLen));
    const command = args.slice(args.length - cmdLen);
    if (before.length > 1) throw invalid(`too many arguments before --: ${before.join(' ')}`);
    const { exec } = await import('./lab.js');
    const r = await exec(labName(o), target, before[0], command);
    process.exitCode = r.code;
  });

  nameOpt(
    lab
      .command('logs')
      .description("a host daemon's log (or internet's server, an etcd member's)")
      .argument('<host>')
      .option('-n, --tail <lines>', 'only the last lines'),
  ).action(async (host: string, o: { name?: string; tail?: string }) => {
    const { logs } = await import('./lab.js');
    const tail = int(o.tail, '--tail');
    process.stdout.write(logs(labName(o), host, tail === undefined ? {} : { tail }));
  });

  nameOpt(
    lab
      .command('add-host')
      .description('add a host (next free index) with its daemon and containers')
      .option('--json', 'print the host as JSON'),
  ).action(async (o: { name?: string; json?: boolean }) => {
    const { addHost } = await import('./lab.js');
    const t0 = performance.now();
    const h = await addHost(labName(o));
    if (o.json) {
      json(h);
      return;
    }
    out(
      `${h.name} joined in ${((performance.now() - t0) / 1000).toFixed(1)} s: public IP ${h.publicIp}, subnet ${h.subnet ?? '-'}${h.containers.length ? `, containers ${h.containers.map((c) => `${c.name} ${c.ip ?? '-'}`).join(', ')}` : ''}`,
    );
    out(
      `watch the others: weft lab exec${nameFlag(labName(o))} host1 -- ip route; weft lab check${nameFlag(labName(o))}`,
    );
  });

  nameOpt(
    lab
      .command('rm-host')
      .description(
        'remove a host: it leaves the cluster (peers drop its routes), its containers and daemon stop, its namespace goes',
      )
      .argument('<host>'),
  ).action(async (host: string, o: { name?: string }) => {
    const { rmHost } = await import('./lab.js');
    const r = await rmHost(labName(o), host);
    out(
      r.left
        ? `${host} left the cluster and is removed`
        : `${host} is removed (its daemon was not running, so its lease stays in the store until it expires)`,
    );
  });

  nameOpt(
    lab
      .command('restart-store')
      .description('restart the lab’s etcd members (watch the daemons keep their leases through the outage)'),
  ).action(async (o: { name?: string }) => {
    const { restartStore } = await import('./lab.js');
    const r = await restartStore(labName(o));
    out(`etcd restarted (${r.members.join(', ')}) in ${(r.ms / 1000).toFixed(1)} s`);
  });

  nameOpt(
    lab
      .command('down')
      .description('remove the lab: processes, namespaces, mounts, state (idempotent; also after crashes)')
      .option('--all', 'every lab on this machine'),
  ).action(async (o: { name?: string; all?: boolean }) => {
    const { down, downAll } = await import('./lab.js');
    const list = o.all ? await downAll() : [await down(labName(o))];
    if (list.length === 0) out('no labs');
    for (const d of list) {
      out(
        d.existed
          ? `lab "${d.name}" removed in ${(d.ms / 1000).toFixed(1)} s: ${d.processes} processes, ${d.namespaces} namespaces, ${d.mounts} sandboxes`
          : `lab "${d.name}": nothing to remove`,
      );
    }
  });

  lab
    .command('ls')
    .description('the labs on this machine')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const { listLabs } = await import('./lab.js');
      const list = listLabs();
      if (o.json) {
        json(list);
        return;
      }
      if (list.length === 0) {
        out('no labs; make one with `weft lab up`');
        return;
      }
      out(
        table(
          ['LAB', 'HOSTS', 'BACKEND', 'STORE', 'STATE'],
          list.map((l) => [l.name, String(l.hosts), l.backend ?? '-', l.store ?? '-', l.state]),
        ),
      );
    });
}
