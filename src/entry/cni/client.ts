/**
 * The CNI plugin's client of the weft daemon: one HTTP/1.1 request per connection on the
 * daemon's unix socket, written and read by hand over `node:net` so that the plugin loads no
 * HTTP machinery (every millisecond of a CNI executable's start counts). The daemon answers
 * with a Content-Length and closes when asked (`Connection: close`); chunked answers are read
 * too. Errors come back as WeftErrors with the daemon's code, so the plugin maps codes, never
 * message text.
 */
import * as net from 'node:net';
import type { AttachRequest, AttachView } from '../../control/service.js';
import { WeftError } from '../../lib/errors.js';
import { socketFrom } from '../../lib/paths.js';
import { errorFromBody } from '../edge.js';

/** Where the daemon listens: the config's "socket", else where the CLI looks (lib/paths.ts). */
export function socketPath(
  configured: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): string {
  return configured ?? socketFrom(env);
}

/** What the plugin asks of the daemon (an interface, so the plugin's logic is tested with a fake). */
export interface Daemon {
  attach(req: AttachRequest): Promise<AttachView>;
  detach(owner: string, containerId: string, ifname: string): Promise<{ removed: number }>;
  check(owner: string, containerId: string, ifname: string): Promise<AttachView>;
  attachments(owner: string): Promise<AttachView[]>;
  ready(): Promise<void>;
  network(name: string): Promise<{ name: string; mtu: number; masquerade: boolean }>;
}

export interface RawResponse {
  status: number;
  body: string;
}

/**
 * One request on a unix socket; resolves with the status and body of the answer. A failure
 * after the request went out carries `details.sent: true` (see mayHaveApplied).
 * @throws WeftError UNAVAILABLE (no daemon listening: ENOENT, ECONNREFUSED), TIMEOUT,
 *   INTERNAL (an answer that is not HTTP)
 */
export function rawRequest(
  socket: string,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 60_000,
): Promise<RawResponse> {
  const payload = body === undefined ? '' : JSON.stringify(body);
  const head =
    `${method} ${path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n` +
    (body === undefined
      ? '\r\n'
      : `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n\r\n`);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const conn = net.createConnection(socket);
    // Once the request is out, a failure without an answer leaves its outcome unknown.
    let sent = false;
    const timer = setTimeout(() => {
      conn.destroy();
      reject(
        new WeftError('TIMEOUT', `the weft daemon did not answer ${method} ${path} in ${timeoutMs} ms`, {
          details: { socket, sent },
        }),
      );
    }, timeoutMs);
    conn.on('connect', () => {
      sent = true;
      conn.write(head + payload);
    });
    conn.on('data', (c: Buffer) => chunks.push(c));
    conn.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const down = e.code === 'ENOENT' || e.code === 'ECONNREFUSED';
      reject(
        new WeftError(
          'UNAVAILABLE',
          down
            ? `the weft daemon is not running (no answer on ${socket})`
            : `cannot reach the weft daemon at ${socket}: ${e.message}`,
          { cause: e, details: { socket, sent } },
        ),
      );
    });
    conn.on('close', (hadError) => {
      clearTimeout(timer);
      if (hadError) return;
      try {
        resolve(parseResponse(Buffer.concat(chunks)));
      } catch (e) {
        if (e instanceof WeftError) e.details.sent = true;
        reject(e);
      }
    });
  });
}

/**
 * Split an HTTP/1.1 answer into status and body (Content-Length, chunked, or until close).
 * @throws WeftError INTERNAL when it is not an HTTP answer
 */
export function parseResponse(buf: Buffer): RawResponse {
  const end = buf.indexOf('\r\n\r\n');
  const m = end < 0 ? null : /^HTTP\/1\.[01] (\d{3})/.exec(buf.subarray(0, end).toString('latin1'));
  if (!m || end < 0) throw new WeftError('INTERNAL', 'the weft daemon sent an answer that is not HTTP');
  const headers = buf.subarray(0, end).toString('latin1').toLowerCase();
  let body = buf.subarray(end + 4);
  if (/\r\ntransfer-encoding:\s*chunked/.test(headers)) {
    const parts: Buffer[] = [];
    let i = 0;
    for (let guard = 0; guard < 100_000; guard++) {
      const eol = body.indexOf('\r\n', i);
      if (eol < 0) break;
      const size = Number.parseInt(body.subarray(i, eol).toString('latin1'), 16);
      if (!Number.isFinite(size) || size === 0) break;
      parts.push(body.subarray(eol + 2, eol + 2 + size));
      i = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else {
    const cl = /\r\ncontent-length:\s*(\d+)/.exec(headers);
    if (cl) body = body.subarray(0, Number(cl[1]));
  }
  return { status: Number(m[1]), body: body.toString('utf8') };
}

/**
 * Whether the daemon may have carried out a request that failed: it went out and no answer came
 * (a timeout, a connection broken midway, an answer that is not HTTP). An error the daemon
 * answered, or a daemon nobody listens for, did nothing.
 */
export function mayHaveApplied(e: unknown): boolean {
  return (e as { details?: { sent?: unknown } } | null)?.details?.sent === true;
}

/** The daemon's API as the plugin uses it. Every method throws the daemon's WeftError. */
export class DaemonClient implements Daemon {
  constructor(
    readonly socket: string,
    readonly timeoutMs = 60_000,
  ) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await rawRequest(this.socket, method, path, body, this.timeoutMs);
    let parsed: unknown;
    try {
      parsed = res.body ? JSON.parse(res.body) : undefined;
    } catch {
      parsed = undefined;
    }
    if (res.status >= 400) throw errorFromBody(res.status, parsed);
    return parsed as T;
  }

  attach(req: AttachRequest): Promise<AttachView> {
    return this.request('POST', '/v1/attachments', req);
  }
  detach(owner: string, containerId: string, ifname: string): Promise<{ removed: number }> {
    return this.request(
      'DELETE',
      `/v1/attachments/${encodeURIComponent(owner)}/${encodeURIComponent(containerId)}?ifname=${encodeURIComponent(ifname)}`,
    );
  }
  check(owner: string, containerId: string, ifname: string): Promise<AttachView> {
    return this.request('POST', '/v1/attachments/check', { owner, containerId, ifname });
  }
  attachments(owner: string): Promise<AttachView[]> {
    return this.request('GET', `/v1/attachments?owner=${encodeURIComponent(owner)}`);
  }
  async ready(): Promise<void> {
    await this.request('GET', '/readyz');
  }
  network(name: string): Promise<{ name: string; mtu: number; masquerade: boolean }> {
    return this.request('GET', `/v1/networks/${encodeURIComponent(name)}`);
  }
}
