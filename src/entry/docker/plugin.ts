/**
 * The Docker plugin the daemon serves (`weft daemon --docker-plugin [PATH]`): HTTP on a unix
 * socket where dockerd finds plugins (`/run/docker/plugins/weft.sock` makes the driver and the
 * IPAM driver both named `weft`). Thin, like the daemon's own API: route `/<Interface>.<Method>`,
 * parse the JSON body, call the network driver or the IPAM driver, answer JSON with Docker's
 * plugin content type. Errors keep weft's stable codes as HTTP statuses (edge.ts) and carry the
 * message in the field Docker reads: `Err` for the network driver, `Error` (and `Err`) for IPAM.
 * Unknown methods answer 404, so dockerd treats optional ones as absent.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { Netns } from '../../kernel/netns.js';
import { asWeftError, invalid, WeftError } from '../../lib/errors.js';
import { parseCidr } from '../../lib/ip.js';
import { type Logger, nullLogger } from '../../lib/log.js';
import { routedPrefixes } from '../../net/routed.js';
import { httpStatus } from '../edge.js';
import { serveJson } from '../http.js';
import { type DockerBackend, DockerNetworkDriver } from './driver.js';
import { DockerIpam } from './ipam.js';
import {
  PLUGIN_CONTENT_TYPE,
  parsePoolRef,
  parseReleaseAddress,
  parseRequestAddress,
  parseRequestPool,
} from './protocol.js';

type Iface = 'Plugin' | 'NetworkDriver' | 'IpamDriver';
type Handler = (body: unknown) => unknown;

/** The methods served, by URL path. */
export function pluginRoutes(driver: DockerNetworkDriver, ipam: DockerIpam): Record<string, Handler> {
  const empty = () => ({});
  return {
    '/Plugin.Activate': () => ({ Implements: ['NetworkDriver', 'IpamDriver'] }),
    '/NetworkDriver.GetCapabilities': () => driver.capabilities(),
    '/NetworkDriver.CreateNetwork': (b) => driver.createNetwork(b),
    '/NetworkDriver.DeleteNetwork': (b) => driver.deleteNetwork(b),
    '/NetworkDriver.CreateEndpoint': (b) => driver.createEndpoint(b),
    '/NetworkDriver.EndpointOperInfo': (b) => driver.endpointOperInfo(b),
    '/NetworkDriver.DeleteEndpoint': (b) => driver.deleteEndpoint(b),
    '/NetworkDriver.Join': (b) => driver.join(b),
    '/NetworkDriver.Leave': (b) => driver.leave(b),
    '/NetworkDriver.ProgramExternalConnectivity': (b) => driver.programExternalConnectivity(b),
    '/NetworkDriver.RevokeExternalConnectivity': (b) => driver.revokeExternalConnectivity(b),
    '/NetworkDriver.DiscoverNew': empty,
    '/NetworkDriver.DiscoverDelete': empty,
    '/IpamDriver.GetCapabilities': () => ipam.capabilities(),
    '/IpamDriver.GetDefaultAddressSpaces': () => ipam.addressSpaces(),
    '/IpamDriver.RequestPool': (b) => ipam.requestPool(parseRequestPool(b)),
    '/IpamDriver.ReleasePool': (b) => ipam.releasePool(parsePoolRef(b)),
    '/IpamDriver.RequestAddress': (b) => ipam.requestAddress(parseRequestAddress(b)),
    '/IpamDriver.ReleaseAddress': (b) => ipam.releaseAddress(parseReleaseAddress(b)),
    '/IpamDriver.DiscoverNew': empty,
    '/IpamDriver.DiscoverDelete': empty,
  };
}

const ifaceOf = (p: string): Iface =>
  p.startsWith('/IpamDriver.') ? 'IpamDriver' : p.startsWith('/Plugin.') ? 'Plugin' : 'NetworkDriver';

/** An error answer in the field the interface's Docker client reads. */
export function pluginError(iface: Iface, e: unknown): { status: number; body: Record<string, string> } {
  const err = asWeftError(e);
  const message = err.message;
  return {
    status: httpStatus[err.code],
    body: iface === 'IpamDriver' ? { Error: message, Err: message } : { Err: message },
  };
}

export function createPluginServer(routes: Record<string, Handler>, log: Logger = nullLogger): http.Server {
  return http.createServer((req, res) => {
    const method = (req.url ?? '/').split('?')[0]!;
    serveJson(req, res, {
      contentType: PLUGIN_CONTENT_TYPE,
      handle: async (body) => {
        const h = routes[method];
        if (!h) throw new WeftError('NOT_FOUND', `${method.slice(1)} is not a method of the weft plugin`);
        if (req.method !== 'POST') throw invalid(`${method.slice(1)} is called with POST, not ${req.method}`);
        return await h(body);
      },
      fail: (e) => {
        const r = pluginError(ifaceOf(method), e);
        // dockerd takes a 404 for "not implemented" and goes on (ProgramExternalConnectivity:
        // ports silently unpublished): only an unknown method may say 404.
        return routes[method] && r.status === 404 ? { ...r, status: 500 } : r;
      },
      done: (status, { elapsed }, error) => {
        if (error !== undefined) {
          const fields = { method: method.slice(1), status, error: asWeftError(error) };
          if (status >= 500) log.error('docker plugin call failed', fields);
          else log.info('docker plugin call refused', fields);
        }
        log.debug('docker plugin call', { method: method.slice(1), status, ms: elapsed() });
      },
    });
  });
}

export interface DockerPluginOptions {
  /** Where dockerd finds the plugin (default /run/docker/plugins/weft.sock). */
  readonly socketPath: string;
  readonly service: DockerBackend;
  /** The daemon's state dir: the IPAM state is `docker-ipam.json` in it. */
  readonly stateDir: string;
  /** The host's namespace (its routes are avoided when picking pools). */
  readonly ns: Netns;
  readonly log?: Logger;
}

export interface DockerPlugin {
  readonly socketPath: string;
  readonly server: http.Server;
  readonly ipam: DockerIpam;
  close(): Promise<void>;
}

/**
 * Load the IPAM state and listen on the socket (a stale socket file is replaced).
 * Throws INTERNAL for a damaged IPAM state file, and what `listen` throws (EACCES, …).
 */
export async function startDockerPlugin(o: DockerPluginOptions): Promise<DockerPlugin> {
  const log = o.log ?? nullLogger;
  const ipam = DockerIpam.open({
    file: path.join(o.stateDir, 'docker-ipam.json'),
    networks: () =>
      o.service
        .networks()
        .flatMap((n) => n.subnets.map((s) => ({ name: n.name, subnet: parseCidr(s.subnet) }))),
    routes: (family) => routedPrefixes(o.ns, family),
    log,
  });
  const driver = new DockerNetworkDriver(o.service, log);
  const server = createPluginServer(pluginRoutes(driver, ipam), log);
  fs.mkdirSync(path.dirname(o.socketPath), { recursive: true });
  fs.rmSync(o.socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  fs.chmodSync(o.socketPath, 0o660);
  log.info('docker plugin listening', { socket: o.socketPath });
  return {
    socketPath: o.socketPath,
    server,
    ipam,
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections(); // dockerd keeps its connections open
      await closed;
      fs.rmSync(o.socketPath, { force: true });
    },
  };
}
