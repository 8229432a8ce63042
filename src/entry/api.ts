/**
 * The daemon's HTTP+JSON API on its unix socket. Thin: route, parse the JSON body, call the host
 * service, answer JSON; every error goes through `errorBody` (one mapping of codes to statuses).
 *
 *   GET    /healthz | /readyz
 *   GET    /v1/networks                      POST /v1/networks            {name, driver, subnets, …}
 *   GET    /v1/networks/:name                DELETE /v1/networks/:name
 *   POST   /v1/networks/:name/connect        {container, ip?, ip6?, aliases?}
 *   POST   /v1/networks/:name/disconnect     {container}
 *   GET    /v1/containers                    POST /v1/containers          {name, cmd, networks, ports, …}
 *   GET    /v1/containers/:name              DELETE /v1/containers/:name?force=1
 *   POST   /v1/containers/:name/stop         GET /v1/containers/:name/logs?tail=N
 *   GET    /v1/attachments?owner=            POST /v1/attachments          {owner, containerId, netns?, ifname, …}
 *   DELETE /v1/attachments/:owner/:id?ifname=   POST /v1/attachments/check {owner, containerId, ifname}
 *   PUT    /v1/attachments/:owner/:id/ports  {ports: [...]}            (CNI plugin, Docker plugin)
 *   GET    /v1/cluster                       POST /v1/cluster/leave        (overlay hosts)
 *   POST   /v1/cluster/resync
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type {
  AttachRequest,
  ConnectRequest,
  CreateNetworkRequest,
  HostService,
  RunRequest,
} from '../control/service.js';
import { invalid, WeftError } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import { errorBody } from './edge.js';
import { serveJson } from './http.js';

type Handler = (p: Record<string, string>, body: unknown, q: URLSearchParams) => Promise<unknown> | unknown;

export interface ApiOptions {
  /** The host service; undefined while the daemon is still starting (waiting for its lease). */
  readonly service: HostService | (() => HostService | undefined);
  /** What the daemon is doing while it starts, for the UNAVAILABLE answers. */
  readonly starting?: () => string;
  readonly log: Logger;
  readonly ready: () => boolean;
  /** The overlay side (daemons started with --store). */
  readonly cluster?: () => ClusterApi | undefined;
}

export interface ClusterApi {
  view(): unknown;
  leave(): Promise<void>;
  resync(): Promise<void>;
}

export function createApiServer(opts: ApiOptions): http.Server {
  const svc = (): HostService => {
    const x = typeof opts.service === 'function' ? opts.service() : opts.service;
    if (!x)
      throw new WeftError('UNAVAILABLE', `the daemon is starting: ${opts.starting?.() ?? 'not ready yet'}`);
    return x;
  };
  const routes: [string, RegExp, Handler][] = [];
  const route = (method: string, pattern: string, h: Handler) => {
    const re = new RegExp(`^${pattern.replace(/:(\w+)/g, '(?<$1>[^/]+)')}$`);
    routes.push([method, re, h]);
  };
  route('GET', '/healthz', () => ({ ok: true }));
  route('GET', '/readyz', () => {
    if (!opts.ready())
      throw new WeftError('UNAVAILABLE', `the daemon is starting: ${opts.starting?.() ?? 'not ready yet'}`);
    return { ready: true };
  });
  const cluster = (): ClusterApi => {
    const c = opts.cluster?.();
    if (!c)
      throw new WeftError('NOT_FOUND', 'this daemon is not part of a cluster (started without --store)');
    return c;
  };
  route('GET', '/v1/cluster', () => cluster().view());
  route('POST', '/v1/cluster/leave', async () => {
    await cluster().leave();
    return { left: true };
  });
  route('POST', '/v1/cluster/resync', async () => {
    await cluster().resync();
    return { resynced: true };
  });
  route('GET', '/v1/attachments', (_p, _b, q) => svc().attachments(q.get('owner') ?? undefined));
  route('POST', '/v1/attachments', (_p, b) => svc().attach(object<AttachRequest>(b, ATTACH)));
  route('POST', '/v1/attachments/check', (_p, b) =>
    svc().checkAttachment(
      object<{ owner: string; containerId: string; ifname: string }>(b, {
        owner: 'string',
        containerId: 'string',
        ifname: 'string',
      }),
    ),
  );
  route('DELETE', '/v1/attachments/:owner/:id', (p, _b, q) =>
    svc().detach({
      owner: p.owner!,
      containerId: p.id!,
      ...(q.get('ifname') !== null && { ifname: q.get('ifname')! }),
    }),
  );
  route('PUT', '/v1/attachments/:owner/:id/ports', (p, b) =>
    svc().setAttachmentPorts({
      owner: p.owner!,
      containerId: p.id!,
      ports: object<{ ports?: string[] }>(b, { ports: 'string[]?' }).ports ?? [],
    }),
  );
  route('GET', '/v1/networks', () => svc().networks());
  route('POST', '/v1/networks', (_p, b) => svc().createNetwork(object<CreateNetworkRequest>(b, NETWORK)));
  route('GET', '/v1/networks/:name', (p) => svc().network(p.name!));
  route('DELETE', '/v1/networks/:name', async (p) => {
    await svc().removeNetwork(p.name!);
    return { removed: p.name };
  });
  route('POST', '/v1/networks/:name/connect', (p, b) =>
    svc().connect({
      ...object<Omit<ConnectRequest, 'network'>>(b, {
        container: 'string',
        ip: 'string?',
        ip6: 'string?',
        aliases: 'string[]?',
      }),
      network: p.name!,
    }),
  );
  route('POST', '/v1/networks/:name/disconnect', (p, b) =>
    svc().disconnect({
      container: object<{ container: string }>(b, { container: 'string' }).container,
      network: p.name!,
    }),
  );
  route('GET', '/v1/containers', () => svc().containers());
  route('POST', '/v1/containers', (_p, b) => svc().run(object<RunRequest>(b, RUN)));
  route('GET', '/v1/containers/:name', (p) => svc().container(p.name!));
  route('DELETE', '/v1/containers/:name', async (p, _b, q) => {
    await svc().remove(p.name!, { force: q.get('force') === '1' || q.get('force') === 'true' });
    return { removed: p.name };
  });
  route('POST', '/v1/containers/:name/stop', (p, _b, q) => {
    const t = q.get('t');
    if (t === null) return svc().stop(p.name!);
    if (!/^\d+$/.test(t)) throw invalid(`t=${t} is not a number of seconds`);
    return svc().stop(p.name!, { timeoutMs: Number(t) * 1000 });
  });
  route('GET', '/v1/containers/:name/logs', (p, _b, q) => {
    const file = svc().logPath(p.name!);
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    const tail = q.get('tail');
    if (tail === null) return { log: text };
    const n = Number(tail);
    if (!Number.isInteger(n) || n < 0) throw invalid(`tail=${tail} is not a line count`);
    const lines = text.split('\n');
    if (lines.at(-1) === '') lines.pop();
    return { log: lines.slice(-n).join('\n') + (lines.length && n ? '\n' : '') };
  });

  return http.createServer((req, res) =>
    serveJson(req, res, {
      contentType: 'application/json',
      handle: async (body, { url }) => {
        let pathMatched = false;
        for (const [method, re, h] of routes) {
          const m = re.exec(url.pathname);
          if (!m) continue;
          pathMatched = true;
          if (method !== req.method) continue;
          const params = Object.fromEntries(
            Object.entries(m.groups ?? {}).map(([k, v]) => {
              try {
                return [k, decodeURIComponent(v)];
              } catch {
                throw invalid(`"${v}" in the path is not valid percent-encoding`);
              }
            }),
          );
          return await h(params, body, url.searchParams);
        }
        throw new WeftError(
          'NOT_FOUND',
          pathMatched
            ? `${req.method} is not allowed on ${url.pathname}`
            : `no such endpoint: ${url.pathname}`,
        );
      },
      fail: errorBody,
      done: (status, { url, elapsed }, error) => {
        // 503 (starting, store unreachable) is expected while polling: not an error to log.
        if (error !== undefined && status >= 500 && status !== 503)
          opts.log.error('api request failed', { path: url.pathname, error });
        opts.log.debug('api', { method: req.method, path: url.pathname, status, ms: elapsed() });
      },
    }),
  );
}

/** What a body field may hold; `?` after it: the field may be absent. */
type FieldType = 'string' | 'boolean' | 'string[]' | 'strings' | 'subnets';
type Shape = Readonly<Record<string, `${FieldType}` | `${FieldType}?`>>;

const isStrings = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');
const fieldOk: Record<FieldType, (v: unknown) => boolean> = {
  string: (v) => typeof v === 'string',
  boolean: (v) => typeof v === 'boolean',
  'string[]': isStrings,
  // A record of strings (options, env).
  strings: (v) =>
    v !== null &&
    typeof v === 'object' &&
    !Array.isArray(v) &&
    Object.values(v).every((x) => typeof x === 'string'),
  subnets: (v) =>
    Array.isArray(v) &&
    v.every(
      (x) =>
        x !== null &&
        typeof x === 'object' &&
        typeof x.subnet === 'string' &&
        ['gateway', 'ipRange'].every((k) => x[k] === undefined || typeof x[k] === 'string'),
    ),
};

/**
 * The body as a JSON object whose fields named in `shape` have their types (the service checks
 * the values): INVALID naming the field otherwise. A string where a list is meant (`"cmd":
 * "sleep"`) would otherwise be spread into characters.
 */
function object<T>(b: unknown, shape: Shape = {}): T {
  if (b === null || typeof b !== 'object' || Array.isArray(b))
    throw invalid('the request body must be a JSON object');
  const o = b as Record<string, unknown>;
  for (const [k, spec] of Object.entries(shape)) {
    const optional = spec.endsWith('?');
    const type = (optional ? spec.slice(0, -1) : spec) as FieldType;
    if (o[k] === undefined && optional) continue;
    if (!fieldOk[type](o[k])) {
      const want = {
        string: 'a string',
        boolean: 'true or false',
        'string[]': 'a list of strings',
        strings: 'an object of strings',
        subnets: 'a list of {subnet, gateway?, ipRange?}',
      }[type];
      throw invalid(`"${k}" must be ${want}`, { field: k });
    }
  }
  return b as T;
}

const RUN: Shape = {
  name: 'string?',
  cmd: 'string[]',
  networks: 'string[]?',
  ip: 'string?',
  ip6: 'string?',
  ports: 'string[]?',
  hostname: 'string?',
  aliases: 'string[]?',
  dns: 'string[]?',
  addHosts: 'string[]?',
  env: 'strings?',
};
const NETWORK: Shape = {
  name: 'string',
  driver: 'string?',
  subnets: 'subnets?',
  ipv6: 'boolean?',
  internal: 'boolean?',
  options: 'strings?',
};
const ATTACH: Shape = {
  owner: 'string',
  containerId: 'string',
  netns: 'string?',
  ifname: 'string',
  network: 'string?',
  ip: 'string?',
  ip6: 'string?',
  mac: 'string?',
  ports: 'string[]?',
  aliases: 'string[]?',
  hostname: 'string?',
};
