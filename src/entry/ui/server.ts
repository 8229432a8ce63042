/**
 * `weft ui`: a small HTTP server (node:http) on a loopback address that serves the topology page
 * (./page/, with cytoscape from node_modules: nothing comes from the internet) and its data:
 *   GET /api/topology   the lab's live topology (./topology.ts), JSON
 *   GET /api/events     server-sent events: `topology` with the whole topology on connect and
 *                       each time it changes (the lab is polled about once a second while
 *                       someone listens)
 *   GET /api/path?src=host1/h1c1&dst=host2/h2c1   the hops between two containers
 * A lab that is missing or down is not an error: the topology says `state: "empty"` with a
 * sentence, and the page shows it.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { asWeftError, invalid, WeftError } from '../../lib/errors.js';
import { httpStatus } from '../edge.js';
import type { LabOptions } from '../lab/lab.js';
import { checkLabName } from '../lab/topology.js';
import { runTrace } from '../trace/command.js';
import {
  emptyTopology,
  gatherTopology,
  labPath,
  pathFromTrace,
  type UiPath,
  type UiTopology,
} from './topology.js';

export interface UiOptions {
  readonly lab: string;
  readonly port?: number;
  /** A loopback address (127.0.0.0/8 or ::1); default 127.0.0.1. */
  readonly listen?: string;
  /** How often the lab is polled for the event stream (default 1000 ms). */
  readonly pollMs?: number;
  readonly labOptions?: LabOptions;
}

export interface UiServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const PAGE_DIR = fileURLToPath(new URL('./page/', import.meta.url));
const require = createRequire(import.meta.url);
const STATIC: Record<string, { file: () => string; type: string }> = {
  '/': { file: () => path.join(PAGE_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: () => path.join(PAGE_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/vendor/cytoscape.min.js': {
    file: () => require.resolve('cytoscape/dist/cytoscape.min.js'),
    type: 'text/javascript; charset=utf-8',
  },
};

const isLoopback = (a: string): boolean => /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a) || a === '::1';

/**
 * Start the server. Throws INVALID for a bad lab name, a non-loopback address or a bad port;
 * UNAVAILABLE when it cannot listen (the port is in use).
 */
export async function startUi(o: UiOptions): Promise<UiServer> {
  checkLabName(o.lab);
  const listen = o.listen ?? '127.0.0.1';
  if (!isLoopback(listen))
    throw invalid(`--listen ${listen}: weft ui listens on loopback addresses only (127.0.0.1, ::1)`);
  const port = o.port ?? 8088;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalid(`--port ${port}: not a port number`);
  const pollMs = o.pollMs ?? 1000;
  const lo = o.labOptions ?? {};

  const clients = new Set<http.ServerResponse>();
  let last = '';
  let latest: UiTopology | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const gather = async (): Promise<UiTopology> => {
    try {
      latest = await gatherTopology(o.lab, lo);
    } catch (e) {
      latest = emptyTopology(o.lab, `The lab "${o.lab}" cannot be read: ${asWeftError(e).message}`);
    }
    return latest;
  };
  const push = (t: UiTopology): void => {
    const json = JSON.stringify(t);
    if (json === last) return;
    last = json;
    for (const c of clients) c.write(`event: topology\ndata: ${json}\n\n`);
  };
  const poll = async (): Promise<void> => {
    timer = undefined;
    if (closed || clients.size === 0) return;
    push(await gather());
    if (!closed && clients.size > 0 && !timer) timer = setTimeout(() => void poll(), pollMs);
  };

  /** The trace's hops when `weft trace` can walk the path; else the lab's data, saying why. */
  const pathOf = async (t: UiTopology, src: string, dst: string): Promise<UiPath> => {
    const fallback = labPath(t, src, dst); // checks both names first (NOT_FOUND)
    try {
      const r = await runTrace({ src, dst, lab: o.lab, labOptions: lo });
      return pathFromTrace(t, src, dst, r.trace.hops);
    } catch (e) {
      return {
        ...fallback,
        note: `from the lab's data (weft trace could not walk it: ${asWeftError(e).message})`,
      };
    }
  };

  const sendJson = (res: http.ServerResponse, status: number, body: unknown): void => {
    const b = Buffer.from(JSON.stringify(body));
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': b.length,
      'cache-control': 'no-store',
    });
    res.end(b);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://ui');
    if (req.method !== 'GET') return sendJson(res, 405, { error: { code: 'INVALID', message: 'only GET' } });
    const st = STATIC[url.pathname === '/index.html' ? '/' : url.pathname];
    if (st) {
      const body = fs.readFileSync(st.file());
      res.writeHead(200, { 'content-type': st.type, 'content-length': body.length });
      return void res.end(body);
    }
    if (url.pathname === '/api/topology') return sendJson(res, 200, await gather());
    if (url.pathname === '/api/path') {
      const src = url.searchParams.get('src') ?? '';
      const dst = url.searchParams.get('dst') ?? '';
      try {
        if (!src || !dst)
          throw invalid('give both containers: /api/path?src=HOST/CONTAINER&dst=HOST/CONTAINER');
        return sendJson(res, 200, await pathOf(latest ?? (await gather()), src, dst));
      } catch (e) {
        const err = asWeftError(e);
        return sendJson(res, httpStatus[err.code], { error: { code: err.code, message: err.message } });
      }
    }
    if (url.pathname === '/api/events') {
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-store',
        connection: 'keep-alive',
      });
      res.write('retry: 1000\n\n');
      clients.add(res);
      req.on('close', () => clients.delete(res));
      const t = await gather();
      last = JSON.stringify(t);
      for (const c of clients) c.write(`event: topology\ndata: ${last}\n\n`);
      if (!timer) timer = setTimeout(() => void poll(), pollMs);
      return;
    }
    sendJson(res, 404, { error: { code: 'NOT_FOUND', message: `nothing at ${url.pathname}` } });
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent)
        sendJson(res, 500, { error: { code: 'INTERNAL', message: asWeftError(e).message } });
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new WeftError('UNAVAILABLE', `cannot listen on ${listen}:${port}: ${e.code ?? e.message}`)),
    );
    server.listen(port, listen, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  const host = listen.includes(':') ? `[${listen}]` : listen;
  return {
    url: `http://${host}:${bound}/`,
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        closed = true;
        if (timer) clearTimeout(timer);
        for (const c of clients) c.end();
        clients.clear();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
