/**
 * Test helper, not part of the daemon: runs a DnsServer in the namespace this process was
 * started in (tests spawn it with `ns.spawn`, since a dgram socket cannot be bound from a
 * switched section of another process), and a tiny query client.
 *
 *   node --import tsx testserver.ts serve '<json>'    json: { listen, upstreams, timeoutMs?, records? }
 *     prints `ready <listening json>` on stdout once bound, then reads control lines on stdin:
 *     {"op":"setRecords","records":[{"name","ips":["10.0.0.2"],"network"?}]} → `ok`
 *     {"op":"stats"} → `stats <json>`
 *     It exits when stdin closes, so it cannot outlive the test that started it.
 *   node --import tsx testserver.ts query SERVER PORT NAME TYPE [TIMEOUT_MS]
 *     prints one JSON line {rcode, aa, answers: [{type, data}], ms} or {error, ms}.
 *
 * Records travel as text and become IPAddr here (parseIP).
 */
import * as dgram from 'node:dgram';
import * as readline from 'node:readline';
import * as packet from 'dns-packet';
import { parseIP } from '../../lib/ip.js';
import { createLogger } from '../../lib/log.js';
import { type DnsRecord, DnsServer, type ListenSpec } from './server.js';

interface WireRecord {
  name: string;
  ips: string[];
  network?: string;
}
const toRecords = (rs: WireRecord[]): DnsRecord[] =>
  rs.map((r) => ({
    name: r.name,
    ips: r.ips.map(parseIP),
    ...(r.network !== undefined && { network: r.network }),
  }));

async function serve(json: string): Promise<void> {
  const cfg = JSON.parse(json) as {
    listen: ListenSpec[];
    upstreams: string[];
    timeoutMs?: number;
    records?: WireRecord[];
  };
  const server = await DnsServer.start({
    listen: cfg.listen,
    upstreams: cfg.upstreams,
    ...(cfg.timeoutMs !== undefined && { timeoutMs: cfg.timeoutMs }),
    log: createLogger({ level: 'warn' }),
  });
  server.setRecords(toRecords(cfg.records ?? []));
  const stop = () => {
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    try {
      const msg = JSON.parse(line) as { op: string; records?: WireRecord[] };
      if (msg.op === 'setRecords') {
        server.setRecords(toRecords(msg.records ?? []));
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

async function query(server: string, port: string, name: string, type: string, timeout: string) {
  const started = Date.now();
  const sock = dgram.createSocket(server.includes(':') ? 'udp6' : 'udp4');
  const id = Math.floor(Math.random() * 0x10000);
  const out = await new Promise<Record<string, unknown>>((resolve) => {
    const timer = setTimeout(() => resolve({ error: 'timeout' }), Number(timeout));
    sock.on('message', (msg) => {
      const r = packet.decode(msg);
      if (r.id !== id) return;
      clearTimeout(timer);
      resolve({
        rcode: (r as unknown as { rcode: string }).rcode,
        aa: r.flag_aa,
        tc: r.flag_tc,
        answers: (r.answers ?? []).map((a) => ({ type: a.type, data: 'data' in a ? a.data : undefined })),
      });
    });
    sock.send(
      packet.encode({
        type: 'query',
        id,
        flags: packet.RECURSION_DESIRED,
        questions: [{ type: type as packet.RecordType, name }],
      }),
      Number(port),
      server,
    );
  });
  sock.close();
  process.stdout.write(`${JSON.stringify({ ...out, ms: Date.now() - started })}\n`);
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'serve') await serve(args[0] ?? '{}');
else if (mode === 'query') await query(args[0]!, args[1]!, args[2]!, args[3]!, args[4] ?? '5000');
else {
  process.stderr.write('usage: testserver.ts serve JSON | query SERVER PORT NAME TYPE [TIMEOUT_MS]\n');
  process.exit(2);
}
