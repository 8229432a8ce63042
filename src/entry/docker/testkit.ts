/**
 * Test helpers for the Docker plugin: a client that speaks the plugin protocol over a unix
 * socket the way dockerd does, and a fake host service that records what the driver asks of
 * it (for the pure tests of the protocol handlers).
 */
import * as http from 'node:http';
import { parsePortSpec } from '../../control/ports.js';
import type {
  AttachRequest,
  AttachView,
  ContainerView,
  CreateNetworkRequest,
  NetworkView,
} from '../../control/service.js';
import type { PortRecord } from '../../control/state.js';
import { conflict, notFound, WeftError } from '../../lib/errors.js';
import type { DockerBackend } from './driver.js';

export interface PluginAnswer<T = Record<string, unknown>> {
  status: number;
  contentType: string | undefined;
  body: T;
  text: string;
}

/**
 * POST `/<method>` with `body` (a value to encode, or a raw string sent as it is), as dockerd
 * does (its Accept header included); resolves with the status and the parsed answer.
 */
export function pluginCall<T = Record<string, unknown>>(
  socketPath: string,
  method: string,
  body?: unknown,
  opts: { httpMethod?: string; timeoutMs?: number } = {},
): Promise<PluginAnswer<T>> {
  const payload = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method: opts.httpMethod ?? 'POST',
        path: `/${method}`,
        headers: {
          accept: 'application/vnd.docker.plugins.v1.2+json',
          'content-length': Buffer.byteLength(payload),
        },
        timeout: opts.timeoutMs ?? 60_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : {};
          } catch {
            parsed = { unparsed: text };
          }
          resolve({
            status: res.statusCode ?? 0,
            contentType: res.headers['content-type'],
            body: parsed as T,
            text,
          });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method}: no answer in time`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** A fake host service: networks and attachments in memory, every call recorded. */
export class FakeBackend implements DockerBackend {
  readonly calls: { method: string; arg: unknown }[] = [];
  readonly nets = new Map<string, NetworkView>();
  readonly atts = new Map<string, AttachView>();
  /** Ports held by other (non-Docker) containers. */
  otherPorts: PortRecord[] = [];
  #n = 2;

  networks(): NetworkView[] {
    return [...this.nets.values()];
  }

  async createNetwork(req: CreateNetworkRequest): Promise<NetworkView> {
    this.calls.push({ method: 'createNetwork', arg: req });
    if (this.nets.has(req.name)) throw new WeftError('EXISTS', `network "${req.name}" already exists`);
    const v = {
      id: `id-${req.name}`,
      name: req.name,
      driver: req.driver ?? 'bridge',
      bridge: `br-${req.name}`,
      mtu: Number(req.options?.mtu ?? 1500),
      subnets: (req.subnets ?? []).map((s) => ({ subnet: s.subnet, gateway: s.gateway ?? '' })),
      internal: req.internal ?? false,
      icc: true,
      masquerade: true,
      dns: true,
      options: { ...(req.options ?? {}) },
      builtin: false,
      created: new Date(0).toISOString(),
      containers: [],
    } satisfies NetworkView;
    this.nets.set(req.name, v);
    return v;
  }

  async removeNetwork(name: string): Promise<void> {
    this.calls.push({ method: 'removeNetwork', arg: name });
    if (!this.nets.delete(name)) throw notFound(`network "${name}" not found`);
  }

  attachments(owner?: string): AttachView[] {
    return [...this.atts.values()].filter((a) => owner === undefined || a.owner === owner);
  }

  async attach(req: AttachRequest): Promise<AttachView> {
    this.calls.push({ method: 'attach', arg: req });
    const known = this.atts.get(req.containerId);
    if (known) return known;
    const n = this.nets.get(req.network ?? 'bridge');
    if (!n) throw notFound(`network "${req.network}" not found`);
    const ports = (req.ports ?? []).map(parsePortSpec);
    for (const p of ports) {
      if (this.#taken(req.containerId).some((o) => o.proto === p.proto && o.hostPort === p.hostPort))
        throw conflict(`host port ${p.hostPort}/${p.proto} is already published`);
    }
    const v4 = n.subnets.find((x) => !x.subnet.includes(':'))!;
    const v6 = n.subnets.find((x) => x.subnet.includes(':'));
    const addresses = [
      `${req.ip ?? v4.subnet.replace(/\.0\/\d+$/, `.${this.#n++}`)}/${v4.subnet.split('/')[1]}`,
    ];
    if (v6 && req.ip6 !== undefined) addresses.push(`${req.ip6}/${v6.subnet.split('/')[1]}`);
    const gateways = [v4.gateway, ...(v6 && req.ip6 !== undefined ? [v6.gateway] : [])];
    const v: AttachView = {
      owner: req.owner,
      containerId: req.containerId,
      ifname: req.ifname,
      container: `${req.owner}-${req.containerId.slice(0, 12)}`,
      netns: req.netns ?? null,
      network: n.name,
      networkId: n.id,
      bridge: n.bridge,
      hostIfname: `veth${req.containerId.slice(0, 7)}`,
      mac: req.mac ?? '02:42:0a:00:00:02',
      mtu: n.mtu,
      addresses,
      gateways,
      routes: n.internal ? [] : gateways.map((gw) => ({ dst: gw.includes(':') ? '::/0' : '0.0.0.0/0', gw })),
      dns: { nameservers: [v4.gateway] },
      ports,
    };
    this.atts.set(req.containerId, v);
    return v;
  }

  async detach(req: { owner: string; containerId: string; ifname?: string }): Promise<{ removed: number }> {
    this.calls.push({ method: 'detach', arg: req });
    return { removed: this.atts.delete(req.containerId) ? 1 : 0 };
  }

  async setAttachmentPorts(req: {
    owner: string;
    containerId: string;
    ports: readonly string[];
  }): Promise<AttachView[]> {
    this.calls.push({ method: 'setAttachmentPorts', arg: req });
    const a = this.atts.get(req.containerId);
    if (!a) throw notFound(`no attachment ${req.owner}/${req.containerId}`);
    const v = { ...a, ports: req.ports.map(parsePortSpec) };
    this.atts.set(req.containerId, v);
    return [v];
  }

  containers(): ContainerView[] {
    const mk = (id: string, owner: 'docker' | undefined, ports: readonly PortRecord[]) =>
      ({
        id,
        name: id,
        ...(owner !== undefined && { owner, containerId: id }),
        ports,
      }) as unknown as ContainerView;
    return [
      mk('other', undefined, this.otherPorts),
      ...[...this.atts.values()].map((a) => mk(a.containerId, 'docker', a.ports)),
    ];
  }

  #taken(except: string): PortRecord[] {
    return [
      ...this.otherPorts,
      ...[...this.atts.values()].filter((a) => a.containerId !== except).flatMap((a) => a.ports),
    ];
  }

  /** The calls of one method, their arguments. */
  argsOf(method: string): unknown[] {
    return this.calls.filter((c) => c.method === method).map((c) => c.arg);
  }
}
