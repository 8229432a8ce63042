/**
 * `weft cluster …`: the overlay's configuration and leases, read and written in the store
 * directly (`init`, `leases`), and this host's view through its daemon (`status`, `leave`).
 */
import type { Command } from 'commander';
import type { ClusterView } from '../control/cluster.js';
import {
  DEFAULT_PREFIX,
  makeClusterConfig,
  parseClusterConfig,
  renderClusterConfig,
} from '../control/leases/config.js';
import { configKey, parseLease, subnetsPrefix } from '../control/leases/lease.js';
import { openRegistry, parseStoreSpec } from '../control/store/index.js';
import type { Registry } from '../control/store/types.js';
import { WeftError } from '../lib/errors.js';
import { formatIP, formatIPNet } from '../lib/ip.js';
import { positiveInt } from './commands.js';
import { daemonClient, table } from './text.js';

const out = (s: string): void => {
  process.stdout.write(`${s}\n`);
};

interface StoreOpts {
  store: string;
  prefix: string;
  etcdCafile?: string;
  etcdCertfile?: string;
  etcdKeyfile?: string;
}

function storeOptions(c: Command): Command {
  return c
    .requiredOption('--store <spec>', 'embedded:/path/store.db or etcd://host:2379[,host:2379]')
    .option('--prefix <key>', 'key prefix (flannel’s is /coreos.com/network)', DEFAULT_PREFIX)
    .option('--etcd-cafile <path>', 'TLS CA for etcd')
    .option('--etcd-certfile <path>', 'TLS client certificate for etcd')
    .option('--etcd-keyfile <path>', 'TLS client key for etcd');
}

async function withRegistry<T>(o: StoreOpts, fn: (r: Registry) => Promise<T>): Promise<T> {
  const r = await openRegistry(parseStoreSpec(o.store, process.env.WEFT_STATE_DIR), {
    ...(o.etcdCafile !== undefined && { caFile: o.etcdCafile }),
    ...(o.etcdCertfile !== undefined && { certFile: o.etcdCertfile }),
    ...(o.etcdKeyfile !== undefined && { keyFile: o.etcdKeyfile }),
  });
  try {
    return await fn(r);
  } finally {
    await r.close();
  }
}

const daemon = daemonClient;

const until = (iso: string | null | undefined): string => {
  if (!iso) return 'never';
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (s < 0) return 'expired';
  return s >= 3600
    ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`
    : `${Math.floor(s / 60)}m${s % 60}s`;
};

export function addClusterCommands(program: Command): void {
  const cl = program
    .command('cluster')
    .description('the multi-host overlay: configuration, leases, this host');

  storeOptions(cl.command('init'))
    .description('write the cluster configuration to the store (flannel-compatible)')
    .requiredOption('--network <cidr>', 'the cluster network, e.g. 10.244.0.0/16')
    .option('--subnet-len <n>', 'prefix length of each host’s subnet (default 24)', (v) =>
      positiveInt(v, '--subnet-len'),
    )
    .option('--subnet-min <ip>', 'first subnet handed out')
    .option('--subnet-max <ip>', 'last subnet handed out')
    .option('--backend <type>', 'vxlan, host-gw or udp', 'vxlan')
    .option('--vni <n>', 'vxlan network identifier (default 1)', (v) => positiveInt(v, '--vni'))
    .option('--port <n>', 'UDP port (vxlan 8472, udp 8285)', (v) => positiveInt(v, '--port'))
    .option('--direct-routing', 'vxlan: plain routes to peers on the same subnet')
    .option('--force', 'replace a different configuration already stored')
    .option('--json', 'machine-readable output')
    .action(
      async (
        o: StoreOpts & {
          network: string;
          subnetLen?: number;
          subnetMin?: string;
          subnetMax?: string;
          backend: string;
          vni?: number;
          port?: number;
          directRouting?: boolean;
          force?: boolean;
          json?: boolean;
        },
      ) => {
        const cfg = makeClusterConfig({
          network: o.network,
          subnetLen: o.subnetLen,
          subnetMin: o.subnetMin,
          subnetMax: o.subnetMax,
          backend: o.backend,
          vni: o.vni,
          port: o.port,
          directRouting: o.directRouting,
        });
        const text = renderClusterConfig(cfg);
        const status = await withRegistry(o, async (r) => {
          const key = configKey(o.prefix);
          if (await r.create(key, text)) return 'written';
          const now = await r.get(key);
          if (now && renderClusterConfig(parseClusterConfig(now.value)) === text) return 'unchanged';
          if (!o.force) {
            throw new WeftError(
              'CONFLICT',
              `another cluster configuration is stored at ${key} (use --force to replace it)`,
              {
                details: { key, stored: now?.value },
              },
            );
          }
          await r.put(key, text);
          return 'replaced';
        });
        if (o.json) out(JSON.stringify({ status, config: JSON.parse(text) }));
        else out(`cluster configuration ${status}: ${text}`);
      },
    );

  storeOptions(cl.command('leases'))
    .description('list the subnet leases in the store')
    .option('--json', 'machine-readable output')
    .action(async (o: StoreOpts & { json?: boolean }) => {
      const leases = await withRegistry(o, async (r) => (await r.list(subnetsPrefix(o.prefix))).entries);
      const rows = leases.flatMap((e) => {
        const l = parseLease(o.prefix, e);
        return l
          ? [
              {
                subnet: formatIPNet(l.subnet),
                publicIp: formatIP(l.publicIp),
                backendType: l.backendType,
                backendData: l.backendData,
                expiresAt: l.expiresAt === undefined ? null : new Date(l.expiresAt).toISOString(),
              },
            ]
          : [];
      });
      if (o.json) return out(JSON.stringify(rows, null, 2));
      out(
        table(
          ['SUBNET', 'PUBLIC IP', 'BACKEND', 'EXPIRES IN'],
          rows.map((l) => [l.subnet, l.publicIp, l.backendType, until(l.expiresAt)]),
        ),
      );
    });

  cl.command('status')
    .description('this host’s lease and peers, from its daemon')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const v = await daemon(cmd).request<ClusterView>('GET', '/v1/cluster');
      if (o.json) return out(JSON.stringify(v, null, 2));
      out(`network ${v.network}, backend ${v.backend.type}, store ${v.store.kind} ${v.store.address}`);
      out(
        `this host: ${v.lease?.subnet ?? '(no lease)'} on ${v.publicIp}, MTU ${v.mtu}, lease expires in ${until(v.lease?.expiresAt)}`,
      );
      out(
        table(
          ['PEER SUBNET', 'PUBLIC IP', 'BACKEND', 'EXPIRES IN'],
          v.peers.map((p) => [p.subnet, p.publicIp, p.backendType, until(p.expiresAt)]),
        ),
      );
    });

  cl.command('leave')
    .description(
      'remove this host from the cluster: its backend state and its lease (the daemon keeps serving)',
    )
    .action(async (_o: unknown, cmd: Command) => {
      await daemon(cmd).request('POST', '/v1/cluster/leave');
      out('left the cluster');
    });
}
