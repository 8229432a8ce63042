/**
 * Test helper, not part of the daemon: runs a DnsServer in the namespace this process was
 * started in (tests spawn it with `ns.spawn`, since a dgram socket cannot be bound from a
 * switched section of another process), and a tiny query client.
 *
 *   node --import tsx testserver.ts serve '<json>'
 *     json: { listen: ListenSpec[], upstreams, timeoutMs?, records?, sandboxUpstreams? }
 *     prints `ready <listening json>` on stdout once bound, then reads control lines on stdin:
 *     {"op":"setRecords","records":[{"name","ips":["10.0.0.2"],"network"?,"sandbox"?}],
 *      "sandboxUpstreams"?:{"SANDBOX":["10.0.0.53"]}} → `ok`
 *     {"op":"stats"} → `stats <json>`
 *     It exits when stdin closes, so it cannot outlive the test that started it.
 *   node --import tsx testserver.ts query SERVER PORT NAME TYPE [TIMEOUT_MS] [udp|tcp|auto]
 *     prints one JSON line {rcode, aa, tc, tcp, answers: [{type, data}], ms} or {error, ms};
 *     `auto` asks over UDP and again over TCP when the answer is truncated, as glibc does.
 *
 * Records travel as text and become IPAddr here (parseIP).
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as readline from 'node:readline';
import * as packet from 'dns-packet';
import { parseIP } from '../../lib/ip.js';
import { createLogger } from '../../lib/log.js';
import { type DnsRecord, DnsServer, type ListenSpec } from './server.js';

interface WireRecord {
  name: string;
  ips: string[];
  network?: string;
  sandbox?: string;
}
const toRecords = (rs: WireRecord[]): DnsRecord[] =>
  rs.map((r) => ({
    name: r.name,
    ips: r.ips.map(parseIP),
    ...(r.network !== undefined && { network: r.network }),
    ...(r.sandbox !== undefined && { sandbox: r.sandbox }),
  }));
const toUpstreams = (u: Record<string, string[]> | undefined) => ({
  upstreams: new Map(Object.entries(u ?? {})),
});

async function serve(json: string): Promise<void> {
  const cfg = JSON.parse(json) as {
    listen: ListenSpec[];
    upstreams: string[];
    timeoutMs?: number;
    records?: WireRecord[];
    sandboxUpstreams?: Record<string, string[]>;
  };
  const server = await DnsServer.start({
    listen: cfg.listen,
    upstreams: cfg.upstreams,
    ...(cfg.timeoutMs !== undefined && { timeoutMs: cfg.timeoutMs }),
    log: createLogger({ level: 'warn' }),
  });
  server.setRecords(toRecords(cfg.records ?? []), toUpstreams(cfg.sandboxUpstreams));
  const stop = () => {
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    try {
      const msg = JSON.parse(line) as {
        op: string;
        records?: WireRecord[];
        sandboxUpstreams?: Record<string, string[]>;
      };
      if (msg.op === 'setRecords') {
        server.setRecords(toRecords(msg.records ?? []), toUpstreams(msg.sandboxUpstreams));
        process.stdout.write('ok\n');
      } else if (msg.op === 'stats') {
        process.stdout.write(`stats ${JSON.stringify(server.stats())}\n`);
      } else {
        process.stdout.write(`error unknown op ${msg.op}\n`);
      }
    } catch (e) {
      process.stdout.write(`error ${String(e)}\n`);
    }
  });
  rl.on('close', stop);
  process.stdout.write(`ready ${JSON.stringify(server.listening())}\n`);
}

/** One exchange over UDP or TCP; rejects on timeout or a closed connection. */
function exchange(server: string, port: number, q: Buffer, tcp: boolean, timeoutMs: number): Promise<Buffer> {
  const id = q.readUInt16BE(0);
  return new Promise<Buffer>((resolve, reject) => {
    let cleanup = () => {};
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error('timeout'));
    }, timeoutMs);
    const done = (msg: Buffer) => {
      clearTimeout(timer);
      cleanup();
      resolve(msg);
    };
    if (tcp) {
      const sock = net.connect({ host: server, port });
      cleanup = () => sock.destroy();
      let buf = Buffer.alloc(0);
      sock.on('connect', () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(q.length);
        sock.write(Buffer.concat([len, q]));
      });
      sock.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0))
          done(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      });
      sock.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      sock.on('close', () => {
        clearTimeout(timer);
        reject(new Error('closed'));
      });
      return;
    }
    const sock = dgram.createSocket(server.includes(':') ? 'udp6' : 'udp4');
    cleanup = () => sock.close();
    sock.on('message', (msg) => {
      if (msg.length >= 2 && msg.readUInt16BE(0) === id) done(msg);
    });
    sock.send(q, port, server);
  });
}

async function query(
  server: string,
  port: string,
  name: string,
  type: string,
  timeout: string,
  mode: string,
) {
  const started = Date.now();
  const q = packet.encode({
    type: 'query',
    id: Math.floor(Math.random() * 0x10000),
    flags: packet.RECURSION_DESIRED,
    questions: [{ type: type as packet.RecordType, name }],
  });
  let out: Record<string, unknown>;
  try {
    let tcp = mode === 'tcp';
    let msg = await exchange(server, Number(port), q, tcp, Number(timeout));
    if (mode === 'auto' && packet.decode(msg).flag_tc) {
      tcp = true;
      msg = await exchange(server, Number(port), q, true, Number(timeout));
    }
    const r = packet.decode(msg);
    out = {
      rcode: (r as unknown as { rcode: string }).rcode,
      aa: r.flag_aa,
      tc: r.flag_tc,
      tcp,
      answers: (r.answers ?? []).map((a) => ({ type: a.type, data: 'data' in a ? a.data : undefined })),
    };
  } catch (e) {
    out = { error: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
  process.stdout.write(`${JSON.stringify({ ...out, ms: Date.now() - started })}\n`);
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'serve') await serve(args[0] ?? '{}');
else if (mode === 'query')
  await query(args[0]!, args[1]!, args[2]!, args[3]!, args[4] ?? '5000', args[5] ?? 'udp');
else {
  process.stderr.write(
    'usage: testserver.ts serve JSON | query SERVER PORT NAME TYPE [TIMEOUT_MS] [udp|tcp|auto]\n',
  );
  process.exit(2);
}
