/**
 * The Docker-like commands of the CLI: `network …`, `run`, `ps`, `exec`, `logs`, `stop`, `rm`,
 * and `daemon`. Each is a thin client of the daemon's API (found through --socket, $WEFT_SOCKET
 * or /run/weft/weft.sock); `exec` then enters the container's namespaces itself with nsenter.
 */
import { spawn } from 'node:child_process';
import { type Command, Option } from 'commander';
import type { ContainerView, NetworkView } from '../control/service.js';
import { findProgram } from '../kernel/run.js';
import { invalid, isWeftError, WeftError } from '../lib/errors.js';
import type { Level } from '../lib/log.js';
import type { ApiClient } from './client.js';
import { DEFAULT_PLUGIN_SOCKET } from './docker/protocol.js';
import {
  daemonClient,
  execEnv,
  exitStatusOf,
  logChunk,
  parseTail,
  psPort,
  table,
  tailStart,
} from './text.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];
const out = (s: string): void => {
  process.stdout.write(`${s}\n`);
};
const json = (v: unknown): void => out(JSON.stringify(v, null, 2));

const client = daemonClient;

/** `-o key=value` options into a record. */
function options(list: string[] = []): Record<string, string> {
  const o: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i <= 0) throw invalid(`option "${kv}" is not KEY=VALUE`);
    o[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return o;
}

function env(list: string[] = []): Record<string, string> {
  const e: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i <= 0) throw invalid(`-e "${kv}" is not NAME=VALUE`);
    e[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return e;
}

export function positiveInt(v: string, what: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1) throw invalid(`${what} must be a positive integer, not "${v}"`);
  return n;
}

const SOCKET_FLAGS = '--socket <path>';

export function addCommands(program: Command): void {
  // `run` and `exec` stop parsing options at their command (`weft exec c1 ls -l`), which commander
  // allows only when the program's options stop at the subcommand; --socket is kept working after
  // it by globalOptionsEverywhere.
  program.enablePositionalOptions();
  program.option(SOCKET_FLAGS, 'the daemon API socket (default $WEFT_SOCKET or /run/weft/weft.sock)');

  program
    .command('daemon')
    .description("run this host's weft daemon in the foreground (API on a unix socket)")
    .option('--state-dir <dir>', 'durable state (default /var/lib/weft)')
    .option('--run-dir <dir>', 'runtime state: namespaces, sandbox files, logs (default /run/weft)')
    .option('--default-bridge <name>', 'bridge device of the default network', 'weft0')
    .option('--default-subnet <cidr>', 'subnet of the default network (default: a free one from the pools)')
    .option(
      '--upstream <ip>',
      'resolver for names weft does not know (repeatable; default /etc/resolv.conf)',
      collect,
    )
    .option('--name <name>', 'this host’s name in logs and the lab (default: the hostname)')
    .option('--store <spec>', 'join a cluster: embedded:/path/store.db or etcd://host:2379[,host:2379]')
    .option('--prefix <key>', 'key prefix in the store (flannel’s is /coreos.com/network)', '/weft/network')
    .option('--iface <name>', 'interface that carries the overlay (default: the default route’s)')
    .option('--public-ip <ip>', 'this host’s underlay address (default: the interface’s first IPv4)')
    .option('--ip-masq', 'masquerade traffic that leaves the cluster network')
    .option('--subnet-file <path>', 'where to write subnet.env (default <run-dir>/subnet.env)')
    .option('--lease-ttl <seconds>', 'lease time to live', (v) => positiveInt(v, '--lease-ttl'))
    .option(
      '--resync-period <seconds>',
      'how often the kernel is checked against the leases (default 10)',
      (v) => positiveInt(v, '--resync-period'),
    )
    .option('--etcd-cafile <path>', 'TLS CA for etcd')
    .option('--etcd-certfile <path>', 'TLS client certificate for etcd')
    .option('--etcd-keyfile <path>', 'TLS client key for etcd')
    .option(
      '--docker-plugin [path]',
      `serve the Docker network and IPAM plugin (default ${DEFAULT_PLUGIN_SOCKET})`,
    )
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices(['debug', 'info', 'warn', 'error'])
        .default('info'),
    )
    .action(
      async (
        o: {
          stateDir?: string;
          runDir?: string;
          defaultBridge: string;
          defaultSubnet?: string;
          upstream?: string[];
          logLevel: Level;
          name?: string;
          store?: string;
          prefix: string;
          iface?: string;
          publicIp?: string;
          ipMasq?: boolean;
          subnetFile?: string;
          leaseTtl?: number;
          resyncPeriod?: number;
          etcdCafile?: string;
          etcdCertfile?: string;
          etcdKeyfile?: string;
          dockerPlugin?: string | true;
        },
        cmd: Command,
      ) => {
        const { runDaemon } = await import('./daemon.js');
        const socket = (cmd.optsWithGlobals() as { socket?: string }).socket;
        await runDaemon({
          ...(o.stateDir !== undefined && { stateDir: o.stateDir }),
          ...(o.runDir !== undefined && { runDir: o.runDir }),
          ...(socket !== undefined && { socketPath: socket }),
          ...(o.upstream !== undefined && { upstreams: o.upstream }),
          ...(o.defaultSubnet !== undefined && { defaultSubnet: o.defaultSubnet }),
          defaultBridge: o.defaultBridge,
          logLevel: o.logLevel,
          ...(o.name !== undefined && { name: o.name }),
          ...(o.store !== undefined && { store: o.store, prefix: o.prefix, ipMasq: o.ipMasq === true }),
          ...(o.iface !== undefined && { iface: o.iface }),
          ...(o.publicIp !== undefined && { publicIp: o.publicIp }),
          ...(o.subnetFile !== undefined && { subnetFile: o.subnetFile }),
          ...(o.leaseTtl !== undefined && { leaseTtlSeconds: o.leaseTtl }),
          ...(o.resyncPeriod !== undefined && { resyncMs: o.resyncPeriod * 1000 }),
          ...(o.etcdCafile !== undefined && { etcdCaFile: o.etcdCafile }),
          ...(o.etcdCertfile !== undefined && { etcdCertFile: o.etcdCertfile }),
          ...(o.etcdKeyfile !== undefined && { etcdKeyFile: o.etcdKeyfile }),
          ...(o.dockerPlugin !== undefined && {
            dockerPluginSocket: o.dockerPlugin === true ? DEFAULT_PLUGIN_SOCKET : o.dockerPlugin,
          }),
        });
      },
    );

  // ---- networks -----------------------------------------------------------------------------
  const net = program.command('network').description('manage networks');
  net
    .command('create')
    .description('create a network')
    .argument('<name>')
    .addOption(
      new Option('-d, --driver <driver>', 'network driver').choices(['bridge', 'macvlan']).default('bridge'),
    )
    .option('--subnet <cidr>', 'subnet (repeatable: one IPv4, one IPv6)', collect)
    .option('--gateway <ip>', 'gateway of the subnet (repeatable, in --subnet order)', collect)
    .option('--ip-range <cidr>', 'addresses handed out dynamically (repeatable, in --subnet order)', collect)
    .option('--ipv6', 'enable IPv6 (needs an IPv6 --subnet)')
    .option('--internal', 'no outbound route and no NAT')
    .option(
      '-o, --opt <key=value>',
      'driver option: icc, masquerade, mtu, bridge-name, parent, uplink, macvlan_mode',
      collect,
    )
    .option('--json', 'print the network as JSON')
    .action(
      async (
        name: string,
        o: {
          driver: string;
          subnet?: string[];
          gateway?: string[];
          ipRange?: string[];
          ipv6?: boolean;
          internal?: boolean;
          opt?: string[];
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const subnets = (o.subnet ?? []).map((subnet, i) => ({
          subnet,
          ...(o.gateway?.[i] !== undefined && { gateway: o.gateway[i] }),
          ...(o.ipRange?.[i] !== undefined && { ipRange: o.ipRange[i] }),
        }));
        if ((o.gateway?.length ?? 0) > subnets.length) throw invalid('--gateway needs a --subnet');
        const n = await client(cmd).request<NetworkView>('POST', '/v1/networks', {
          name,
          driver: o.driver,
          subnets,
          ipv6: o.ipv6 === true,
          internal: o.internal === true,
          options: options(o.opt),
        });
        if (o.json) json(n);
        else out(n.id);
      },
    );
  net
    .command('ls')
    .description('list networks')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const list = await client(cmd).request<NetworkView[]>('GET', '/v1/networks');
      if (o.json) {
        json(list);
        return;
      }
      out(
        table(
          ['NETWORK ID', 'NAME', 'DRIVER', 'SUBNETS', 'CONTAINERS'],
          list.map((n) => [
            n.id,
            n.name,
            n.driver,
            n.subnets.map((s) => s.subnet).join(',') || '-',
            String(n.containers.length),
          ]),
        ),
      );
    });
  net
    .command('inspect')
    .description('show a network as JSON')
    .argument('<name>')
    .action(async (name: string, _o: unknown, cmd: Command) =>
      json(await client(cmd).request('GET', `/v1/networks/${encodeURIComponent(name)}`)),
    );
  net
    .command('rm')
    .alias('remove')
    .description('remove networks')
    .argument('<names...>')
    .action(async (names: string[], _o: unknown, cmd: Command) => {
      for (const n of names) {
        await client(cmd).request('DELETE', `/v1/networks/${encodeURIComponent(n)}`);
        out(n);
      }
    });
  net
    .command('connect')
    .description('connect a container to a network')
    .argument('<network>')
    .argument('<container>')
    .option('--ip <ip>', 'IPv4 address on the network')
    .option('--ip6 <ip>', 'IPv6 address on the network')
    .option('--alias <name>', 'another name for the container on this network (repeatable)', collect)
    .action(
      async (
        network: string,
        container: string,
        o: { ip?: string; ip6?: string; alias?: string[] },
        cmd: Command,
      ) => {
        await client(cmd).request('POST', `/v1/networks/${encodeURIComponent(network)}/connect`, {
          container,
          ...(o.ip !== undefined && { ip: o.ip }),
          ...(o.ip6 !== undefined && { ip6: o.ip6 }),
          aliases: o.alias ?? [],
        });
      },
    );
  net
    .command('disconnect')
    .description('disconnect a container from a network')
    .argument('<network>')
    .argument('<container>')
    .action(async (network: string, container: string, _o: unknown, cmd: Command) => {
      await client(cmd).request('POST', `/v1/networks/${encodeURIComponent(network)}/disconnect`, {
        container,
      });
    });

  // ---- containers ---------------------------------------------------------------------------
  program
    .command('run')
    .description('run a command in a new container (a sandbox with its own network, hostname and files)')
    .argument('<cmd...>', 'the command (options after it, or after --, are its own)')
    .passThroughOptions()
    .option(
      '-d, --detach',
      'print the container id and return (default: follow its output, exit with its exit code)',
    )
    .option('--name <name>', 'container name')
    .option('--network <name>', 'network to attach (repeatable; default: bridge)', collect)
    .option('--ip <ip>', 'IPv4 address on the first network')
    .option('--ip6 <ip>', 'IPv6 address on the first network')
    .option('-p, --publish <[hostip:]hostport:port[/proto]>', 'publish a port (repeatable)', collect)
    .option('--hostname <name>', 'hostname inside the container')
    .option('--network-alias <name>', 'another DNS name on the networks (repeatable)', collect)
    .option('--dns <ip>', 'resolver for /etc/resolv.conf (repeatable)', collect)
    .option('--add-host <name:ip>', 'an /etc/hosts entry (repeatable)', collect)
    .option('-e, --env <NAME=VALUE>', 'environment variable (repeatable)', collect)
    .option('--json', 'print the container as JSON')
    .action(
      async (
        argv: string[],
        o: {
          detach?: boolean;
          name?: string;
          network?: string[];
          ip?: string;
          ip6?: string;
          publish?: string[];
          hostname?: string;
          networkAlias?: string[];
          dns?: string[];
          addHost?: string[];
          env?: string[];
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const api = client(cmd);
        const c = await api.request<ContainerView>('POST', '/v1/containers', {
          cmd: argv,
          ...(o.name !== undefined && { name: o.name }),
          ...(o.network !== undefined && { networks: o.network }),
          ...(o.ip !== undefined && { ip: o.ip }),
          ...(o.ip6 !== undefined && { ip6: o.ip6 }),
          ports: o.publish ?? [],
          ...(o.hostname !== undefined && { hostname: o.hostname }),
          aliases: o.networkAlias ?? [],
          dns: o.dns ?? [],
          addHosts: o.addHost ?? [],
          env: env(o.env),
        });
        // Docker prints the id only when detaching; --json prints the view either way.
        if (o.json) json(c);
        else if (o.detach) out(c.id);
        if (o.detach) return;
        const last = await follow(api, c.name);
        process.exitCode = last === undefined ? 0 : await exitCode(api, last);
      },
    );
  program
    .command('ps')
    .description('list running containers (all with -a)')
    .option('-a, --all', 'also containers that are not running')
    .option('--json', 'machine-readable output')
    .action(async (o: { all?: boolean; json?: boolean }, cmd: Command) => {
      const all = await client(cmd).request<ContainerView[]>('GET', '/v1/containers');
      const list = o.all ? all : all.filter((c) => c.status === 'running');
      if (o.json) {
        json(list);
        return;
      }
      out(
        table(
          ['CONTAINER ID', 'NAME', 'STATUS', 'NETWORKS', 'PORTS', 'COMMAND'],
          list.map((c) => [
            c.id,
            c.name,
            c.exitCode !== undefined && c.status === 'exited' ? `exited (${c.exitCode})` : c.status,
            c.networks
              .map((n) => `${n.network}:${n.addresses.map((a) => a.split('/')[0]).join(',')}`)
              .join(' ') || '-',
            c.ports.map(psPort).join(', ') || '-',
            c.cmd.join(' ').slice(0, 40),
          ]),
        ),
      );
    });
  program
    .command('inspect')
    .description('show a container as JSON')
    .argument('<name>')
    .action(async (name: string, _o: unknown, cmd: Command) =>
      json(await client(cmd).request('GET', `/v1/containers/${encodeURIComponent(name)}`)),
    );
  program
    .command('exec')
    .description("run a command inside a running container's namespaces")
    .argument('<name>')
    .argument('<cmd...>', 'the command (options after it, or after --, are its own)')
    .passThroughOptions()
    .action(async (name: string, args: string[], _o: unknown, cmd: Command) => {
      // Passed through, a `--` right after the name is kept: it only ends our options.
      const argv = args[0] === '--' ? args.slice(1) : args;
      if (argv.length === 0) throw invalid('exec needs a command to run');
      const c = await client(cmd).request<ContainerView>('GET', `/v1/containers/${encodeURIComponent(name)}`);
      if (c.status !== 'running' || c.pid === undefined) {
        throw new WeftError('CONFLICT', `container "${name}" is not running`);
      }
      // Found on our PATH: the command's own PATH (the container's) may not have it.
      const nsenter = findProgram('nsenter');
      if (nsenter === undefined) throw new WeftError('NOT_FOUND', 'nsenter is not installed (util-linux)');
      // --net also for host-mode containers: their namespace is the daemon's host, which need not be ours.
      const child = spawn(nsenter, ['--target', String(c.pid), '--net', '--uts', '--mount', '--', ...argv], {
        stdio: 'inherit',
        env: execEnv(c),
      });
      process.exitCode = await new Promise<number>((resolve, reject) => {
        child.on('error', reject);
        child.on('exit', (code, sig) => resolve(exitStatusOf(code, sig)));
      });
    });
  program
    .command('logs')
    .description("print a container's output")
    .argument('<name>')
    .option('-n, --tail <lines>', 'only the last lines (a count, or all)', 'all')
    .option('-f, --follow', 'keep printing new output until the container stops')
    .action(async (name: string, o: { tail: string; follow?: boolean }, cmd: Command) => {
      const tail = parseTail(o.tail);
      if (o.follow) {
        await follow(client(cmd), name, tail);
        return;
      }
      const q = tail === undefined ? '' : `?tail=${tail}`;
      const r = await client(cmd).request<{ log: string }>(
        'GET',
        `/v1/containers/${encodeURIComponent(name)}/logs${q}`,
      );
      process.stdout.write(r.log);
    });
  program
    .command('stop')
    .description('stop containers (SIGTERM, then SIGKILL after -t seconds, default 10)')
    .argument('<names...>')
    .option('-t, --time <seconds>', 'seconds to wait for the container to stop before killing it')
    .action(async (names: string[], o: { time?: string }, cmd: Command) => {
      const q = o.time === undefined ? '' : `?t=${encodeURIComponent(o.time)}`;
      for (const n of names) {
        await client(cmd).request('POST', `/v1/containers/${encodeURIComponent(n)}/stop${q}`);
        out(n);
      }
    });
  program
    .command('rm')
    .description('remove containers and their network state')
    .argument('<names...>')
    .option('-f, --force', 'stop running containers first')
    .action(async (names: string[], o: { force?: boolean }, cmd: Command) => {
      for (const n of names) {
        await client(cmd).request(
          'DELETE',
          `/v1/containers/${encodeURIComponent(n)}${o.force ? '?force=1' : ''}`,
        );
        out(n);
      }
    });
}

/**
 * Print a container's output as it grows until its process is gone (bounded by its life), from
 * its last `tail` lines if given. Returns the container's last view, or undefined when it was
 * removed meanwhile.
 */
async function follow(api: ApiClient, name: string, tail?: number): Promise<ContainerView | undefined> {
  const at = `/v1/containers/${encodeURIComponent(name)}`;
  let shown: number | undefined;
  for (;;) {
    // The view first: a log read after it saw the process gone holds all its output.
    const c = await gone(api.request<ContainerView>('GET', at));
    if (c === undefined) return undefined;
    const r = await gone(api.request<{ log: string }>('GET', `${at}/logs`));
    if (r === undefined) return undefined;
    const final = c.status !== 'running';
    shown ??= tail === undefined ? 0 : tailStart(r.log, tail);
    const next = logChunk(r.log, shown, final);
    if (next.out.length > 0) await write(next.out);
    shown = next.shown;
    if (final) return c;
    await new Promise((r2) => setTimeout(r2, 200));
  }
}

/** The answer, or undefined when the container is not (any longer) there. */
async function gone<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (e) {
    if (isWeftError(e, 'NOT_FOUND')) return undefined;
    throw e;
  }
}

const write = (b: Buffer) =>
  new Promise<void>((resolve, reject) => process.stdout.write(b, (e) => (e ? reject(e) : resolve())));

/**
 * The exit code of a container seen not running: the daemon records it when it reaps the process,
 * which may be a moment after the status turned; 0 when it never tells (about 2 s).
 */
async function exitCode(api: ApiClient, last: ContainerView): Promise<number> {
  const deadline = Date.now() + 2000;
  let c: ContainerView | undefined = last;
  for (;;) {
    if (c === undefined) return 0;
    if (c.exitCode !== undefined) return c.exitCode;
    if (Date.now() >= deadline) return 0;
    await new Promise((r) => setTimeout(r, 100));
    c = await gone(api.request<ContainerView>('GET', `/v1/containers/${encodeURIComponent(c.name)}`));
  }
}

/**
 * With positional options (see addCommands), the program's options must come before the
 * subcommand. Give every command a hidden --socket that sets the program's, so
 * `weft daemon --socket …` and `weft ps --socket …` keep working, whichever way they are read
 * (optsWithGlobals or program.opts()). Call once all commands are added.
 */
export function globalOptionsEverywhere(program: Command): void {
  const visit = (c: Command): void => {
    for (const sub of c.commands) {
      if (!sub.options.some((opt) => opt.long === '--socket')) {
        sub.addOption(
          new Option(SOCKET_FLAGS).hideHelp().argParser((v: string) => {
            program.setOptionValueWithSource('socket', v, 'cli');
            return v;
          }),
        );
      }
      visit(sub);
    }
  };
  visit(program);
}
