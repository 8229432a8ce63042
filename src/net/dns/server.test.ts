// In-process tests of the DNS server on loopback addresses with random ports: answers from the
// table, who sees which names, TCP, EDNS, forwarding, timeouts, bounds, malformed input. No root
// needed (any 127.x address is local, so clients pick their source address by binding to one);
// the kernel test (dns.kernel.test.ts) covers the same server across namespaces.
import assert from 'node:assert/strict';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { describe, type TestContext, test } from 'node:test';
import * as packet from 'dns-packet';
import { isWeftError } from '../../lib/errors.js';
import { parseIP } from '../../lib/ip.js';
import { type DnsRecord, DnsServer, type DnsServerOptions, parseUpstream, reverseName } from './server.js';

interface Answer {
  rcode: string;
  aa: boolean;
  tc: boolean;
  id: number;
  answers: { type: string; name: string; data: unknown; ttl: number | undefined }[];
  /** The reply's OPT record, if any. */
  opt: packet.OptAnswer | undefined;
  raw: Buffer;
  ms: number;
}

/** Loopback is ours: the whole 127/8 is local, so listeners and clients each take an address. */
const LOOP = ['127.0.0.0/8'];

async function start(t: TestContext, opts: Partial<DnsServerOptions> = {}): Promise<DnsServer> {
  const s = await DnsServer.start({
    listen: [{ address: '127.0.0.1', port: 0, network: 'n0', subnets: LOOP }],
    upstreams: [],
    ...opts,
  });
  t.after(() => s.close());
  return s;
}
const portOf = (s: DnsServer, address = '127.0.0.1'): number => {
  const l = s.listening().find((x) => x.address === address);
  assert.ok(l, `listening on ${address}`);
  return l.port;
};

/** A raw UDP socket on loopback (a silent or scripted upstream, or a client). */
async function udp(t: TestContext, onMessage?: (msg: Buffer, r: dgram.RemoteInfo, s: dgram.Socket) => void) {
  const s = dgram.createSocket('udp4');
  if (onMessage) s.on('message', (m, r) => onMessage(m, r, s));
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  t.after(() => s.close());
  return s;
}

/** A scripted upstream's answer: `ip` for any A question, echoing id and question. */
function answerWith(msg: Buffer, ip: string): Buffer {
  const q = packet.decode(msg);
  const question = q.questions?.[0];
  return packet.encode({
    type: 'response',
    id: q.id ?? 0,
    flags: packet.RECURSION_AVAILABLE,
    questions: q.questions ?? [],
    answers: question ? [{ type: 'A', name: question.name, ttl: 60, data: ip }] : [],
  });
}

interface AskOptions {
  /** The server's address (default 127.0.0.1). */
  address?: string;
  /** The client's source address (default: the kernel's choice, 127.0.0.1). */
  from?: string;
  timeoutMs?: number;
  /** Bytes to send instead (their id is overwritten). */
  raw?: Buffer;
  tcp?: boolean;
  edns?: { size: number; version?: number; do?: boolean };
}

function queryBytes(id: number, name: string, type: string, edns: AskOptions['edns']): Buffer {
  return packet.encode({
    type: 'query',
    id,
    flags: packet.RECURSION_DESIRED,
    questions: [{ type: type as packet.RecordType, name }],
    ...(edns && {
      additionals: [
        {
          type: 'OPT',
          name: '.',
          udpPayloadSize: edns.size,
          extendedRcode: 0,
          ednsVersion: edns.version ?? 0,
          flags: edns.do ? packet.DNSSEC_OK : 0,
          flag_do: edns.do ?? false,
          options: [],
        },
      ],
    }),
  });
}

function toAnswer(msg: Buffer, started: number): Answer {
  const r = packet.decode(msg);
  return {
    rcode: (r as unknown as { rcode: string }).rcode,
    aa: r.flag_aa,
    tc: r.flag_tc,
    id: r.id ?? 0,
    answers: (r.answers ?? []).map((a) => ({
      type: a.type,
      name: a.name,
      data: 'data' in a ? a.data : undefined,
      ttl: 'ttl' in a ? a.ttl : undefined,
    })),
    opt: (r.additionals ?? []).find((a): a is packet.OptAnswer => a.type === 'OPT'),
    raw: msg,
    ms: Date.now() - started,
  };
}

async function ask(
  port: number,
  name: string,
  type: packet.RecordType | 'ANY' = 'A',
  opts: AskOptions = {},
): Promise<Answer> {
  const started = Date.now();
  const id = Math.floor(Math.random() * 0x10000);
  const q = opts.raw ? Buffer.from(opts.raw) : queryBytes(id, name, type, opts.edns);
  q.writeUInt16BE(id, 0);
  if (opts.tcp) {
    const c = await tcpClient(port, opts);
    try {
      return toAnswer(await c.ask(q, opts.timeoutMs), started);
    } finally {
      c.close();
    }
  }
  const sock = dgram.createSocket((opts.address ?? '').includes(':') ? 'udp6' : 'udp4');
  try {
    return await new Promise<Answer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer for ${name}`)), opts.timeoutMs ?? 3000);
      sock.on('message', (msg) => {
        if (msg.length < 2 || msg.readUInt16BE(0) !== id) return;
        clearTimeout(timer);
        resolve(toAnswer(msg, started));
      });
      const send = () => sock.send(q, port, opts.address ?? '127.0.0.1');
      if (opts.from) sock.bind(0, opts.from, send);
      else send();
    });
  } finally {
    sock.close();
  }
}

/** A DNS-over-TCP client: length-framed queries, answers matched by id; several per connection. */
async function tcpClient(port: number, opts: { address?: string; from?: string } = {}) {
  const sock = net.connect({
    host: opts.address ?? '127.0.0.1',
    port,
    ...(opts.from !== undefined && { localAddress: opts.from }),
  });
  const waiting = new Map<number, (msg: Buffer) => void>();
  let buf = Buffer.alloc(0);
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  sock.on('error', () => {});
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
      buf = buf.subarray(2 + msg.length);
      waiting.get(msg.readUInt16BE(0))?.(msg);
    }
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return {
    sock,
    closed,
    ask: (q: Buffer, timeoutMs = 3000) =>
      new Promise<Buffer>((resolve, reject) => {
        const id = q.readUInt16BE(0);
        const timer = setTimeout(() => reject(new Error(`no TCP answer for id ${id}`)), timeoutMs);
        waiting.set(id, (msg) => {
          clearTimeout(timer);
          resolve(msg);
        });
        const len = Buffer.alloc(2);
        len.writeUInt16BE(q.length);
        sock.write(Buffer.concat([len, q]));
      }),
    close: () => sock.destroy(),
  };
}

/** A scripted TCP upstream answering `ip` after `delayMs`; `seen` collects the ids it was asked. */
async function tcpUpstream(t: TestContext, ip: string, delayMs = 0) {
  const seen: number[] = [];
  const server = net.createServer((conn) => {
    let buf = Buffer.alloc(0);
    conn.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const q = buf.subarray(2, 2 + buf.readUInt16BE(0));
      seen.push(q.readUInt16BE(0));
      const reply = answerWith(q, ip);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(reply.length);
      setTimeout(() => conn.end(Buffer.concat([len, reply])), delayMs);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, seen };
}

/** Send bytes and resolve true if anything comes back within `ms`. */
async function sendRaw(port: number, bytes: Buffer, ms = 300): Promise<boolean> {
  const sock = dgram.createSocket('udp4');
  try {
    return await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      sock.on('message', () => {
        clearTimeout(timer);
        resolve(true);
      });
      sock.send(bytes, port, '127.0.0.1');
    });
  } finally {
    sock.close();
  }
}

/** The question section of a message, as bytes (labels as they are, no decoding). */
function questionBytes(msg: Buffer): Buffer {
  let off = 12;
  while (msg[off] !== 0) off += 1 + msg[off]!;
  return msg.subarray(12, off + 5);
}

const data = (a: Answer) => a.answers.map((x) => x.data);

describe('answers from the table', () => {
  test('A and AAAA for a name and an alias, case-insensitive, trailing dot, short TTL, AA', async (t) => {
    const s = await start(t);
    s.setRecords([
      { name: 'web', ips: [parseIP('10.77.0.2'), parseIP('fd77::2')] },
      { name: 'frontend.', ips: [parseIP('10.77.0.2'), parseIP('fd77::2')] },
    ]);
    const p = portOf(s);
    const a = await ask(p, 'web');
    assert.equal(a.rcode, 'NOERROR');
    assert.ok(a.aa);
    assert.deepEqual(a.answers, [{ type: 'A', name: 'web', data: '10.77.0.2', ttl: 10 }]);
    assert.deepEqual(data(await ask(p, 'WEB.', 'AAAA')), ['fd77::2']);
    assert.deepEqual(data(await ask(p, 'Frontend', 'A')), ['10.77.0.2']);
    assert.deepEqual(data(await ask(p, 'frontend', 'ANY')), ['10.77.0.2', 'fd77::2']);
    // A known name asked for another type: NOERROR, no data (not forwarded, not NXDOMAIN).
    const mx = await ask(p, 'web', 'MX');
    assert.equal(mx.rcode, 'NOERROR');
    assert.deepEqual(mx.answers, []);
    // PTR for a table address.
    const ptr = await ask(p, reverseName(parseIP('10.77.0.2')), 'PTR');
    assert.deepEqual(data(ptr), ['web']);
    assert.equal(reverseName(parseIP('10.77.0.2')), '2.0.77.10.in-addr.arpa');
    assert.match(reverseName(parseIP('fd77::2')), /^2(\.0){27}\.7\.7\.d\.f\.ip6\.arpa$/);
  });

  test('setRecords replaces the table; a bad record leaves the old one', async (t) => {
    const s = await start(t);
    s.setRecords([{ name: 'db', ips: [parseIP('10.0.0.5')] }]);
    assert.deepEqual(data(await ask(portOf(s), 'db')), ['10.0.0.5']);
    s.setRecords([{ name: 'db', ips: [parseIP('10.0.0.6'), parseIP('10.0.0.7')] }]);
    assert.deepEqual(data(await ask(portOf(s), 'db')), ['10.0.0.6', '10.0.0.7']);
    assert.throws(
      () => s.setRecords([{ name: '', ips: [] }]),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.deepEqual(data(await ask(portOf(s), 'db')), ['10.0.0.6', '10.0.0.7']);
    // A name no query can carry (a label over 63 bytes) is skipped, not fatal to the rest.
    s.setRecords([
      { name: 'x'.repeat(64), ips: [parseIP('10.0.0.8')] },
      { name: 'db', ips: [parseIP('10.0.0.9')] },
    ]);
    assert.deepEqual(data(await ask(portOf(s), 'db')), ['10.0.0.9']);
  });

  test('records of a network are seen only on that network’s listener', async (t) => {
    const s = await start(t, {
      listen: [
        { address: '127.0.0.1', port: 0, network: 'red', subnets: LOOP },
        { address: '127.0.0.2', port: 0, network: 'blue', subnets: LOOP },
      ],
    });
    s.setRecords([
      { name: 'app', ips: [parseIP('10.1.0.2')], network: 'red' },
      { name: 'app', ips: [parseIP('10.2.0.2')], network: 'blue' },
      { name: 'only-red', ips: [parseIP('10.1.0.3')], network: 'red' },
      { name: 'everywhere', ips: [parseIP('10.9.0.9')] },
    ]);
    const red = portOf(s, '127.0.0.1');
    const blue = portOf(s, '127.0.0.2');
    assert.deepEqual(data(await ask(red, 'app')), ['10.1.0.2']);
    assert.deepEqual(data(await ask(blue, 'app', 'A', { address: '127.0.0.2' })), ['10.2.0.2']);
    assert.deepEqual(data(await ask(blue, 'everywhere', 'A', { address: '127.0.0.2' })), ['10.9.0.9']);
    // Unknown on blue: forwarded; with no upstreams that is SERVFAIL, never NXDOMAIN.
    assert.equal((await ask(blue, 'only-red', 'A', { address: '127.0.0.2' })).rcode, 'SERVFAIL');
  });

  test('an answer larger than 512 bytes is truncated with TC', async (t) => {
    const s = await start(t);
    const ips = Array.from({ length: 60 }, (_, i) => parseIP(`10.0.1.${i + 1}`));
    s.setRecords([{ name: 'many', ips }]);
    const a = await ask(portOf(s), 'many');
    assert.ok(a.tc);
    assert.ok(a.answers.length > 0 && a.answers.length < 60, String(a.answers.length));
  });
});

describe('forwarding', () => {
  test('unknown names go to the upstream; its answer comes back with the client id', async (t) => {
    const up = await start(t);
    up.setRecords([{ name: 'example.org', ips: [parseIP('192.0.2.80')] }]);
    const s = await start(t, { upstreams: [`127.0.0.1:${portOf(up)}`] });
    s.setRecords([{ name: 'web', ips: [parseIP('10.77.0.2')] }]);
    const a = await ask(portOf(s), 'Example.ORG');
    assert.equal(a.rcode, 'NOERROR');
    assert.deepEqual(data(a), ['192.0.2.80']);
    assert.deepEqual(data(await ask(portOf(s), 'web')), ['10.77.0.2']);
    assert.equal(s.stats().forwarded, 1);
    assert.equal(s.pending, 0);
    // The upstream's own SERVFAIL (it has no upstreams) is relayed at once, not after a timeout.
    const nx = await ask(portOf(s), 'nowhere.invalid');
    assert.equal(nx.rcode, 'SERVFAIL');
    assert.ok(nx.ms < 1000, `${nx.ms} ms`);
  });

  test('first useful answer wins over a REFUSED one', async (t) => {
    const refuser = await udp(t, (msg, r, sock) => {
      const q = packet.decode(msg);
      sock.send(
        packet.encode({ type: 'response', id: q.id ?? 0, flags: 5, questions: q.questions ?? [] }),
        r.port,
        r.address,
      );
    });
    const up = await start(t);
    up.setRecords([{ name: 'x.example', ips: [parseIP('192.0.2.7')] }]);
    const s = await start(t, {
      upstreams: [`127.0.0.1:${refuser.address().port}`, `127.0.0.1:${portOf(up)}`],
    });
    assert.deepEqual(data(await ask(portOf(s), 'x.example')), ['192.0.2.7']);
  });

  test('a silent upstream: SERVFAIL after the timeout, never a hang', async (t) => {
    const silent = await udp(t, () => {});
    const s = await start(t, { upstreams: [`127.0.0.1:${silent.address().port}`], timeoutMs: 400 });
    const a = await ask(portOf(s), 'slow.example');
    assert.equal(a.rcode, 'SERVFAIL');
    assert.ok(a.ms >= 350 && a.ms < 1500, `${a.ms} ms`);
    assert.equal(s.pending, 0);
    assert.equal(s.stats().servfail, 1);
  });

  test('pending forwards are bounded: beyond the bound SERVFAIL at once', async (t) => {
    const silent = await udp(t, () => {});
    const s = await start(t, {
      upstreams: [`127.0.0.1:${silent.address().port}`],
      timeoutMs: 1500,
      maxPending: 2,
    });
    const p = portOf(s);
    const slow = [ask(p, 'a.example'), ask(p, 'b.example')];
    await new Promise((r) => setTimeout(r, 100));
    const third = await ask(p, 'c.example');
    assert.equal(third.rcode, 'SERVFAIL');
    assert.ok(third.ms < 500, `${third.ms} ms`);
    assert.equal(s.stats().overloaded, 1);
    for (const a of await Promise.all(slow)) assert.equal(a.rcode, 'SERVFAIL');
  });

  test('answers from strangers or with a wrong question are ignored', async (t) => {
    // The "upstream" answers with a different question name: not relayed; the timeout answers.
    const liar = await udp(t, (msg, r, sock) => {
      const q = packet.decode(msg);
      sock.send(
        packet.encode({
          type: 'response',
          id: q.id ?? 0,
          questions: [{ type: 'A', name: 'other.example' }],
          answers: [{ type: 'A', name: 'other.example', data: '6.6.6.6' }],
        }),
        r.port,
        r.address,
      );
    });
    const s = await start(t, { upstreams: [`127.0.0.1:${liar.address().port}`], timeoutMs: 300 });
    const a = await ask(portOf(s), 'victim.example');
    assert.equal(a.rcode, 'SERVFAIL');
    assert.equal(s.stats().lateAnswers, 1);
  });
});

describe('malformed input', () => {
  test('garbage, responses and empty queries are dropped and counted; the server keeps answering', async (t) => {
    const s = await start(t);
    s.setRecords([{ name: 'web', ips: [parseIP('10.77.0.2')] }]);
    const p = portOf(s);
    const response = packet.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'web' }] });
    const noQuestion = packet.encode({ type: 'query', id: 2, questions: [] });
    const truncated = packet
      .encode({ type: 'query', id: 3, questions: [{ type: 'A', name: 'web' }] })
      .subarray(0, 15);
    const pointerLoop = Buffer.from([0, 4, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
    const inputs = [
      Buffer.alloc(0),
      Buffer.from([1]),
      Buffer.alloc(12, 0xff),
      response,
      noQuestion,
      truncated,
      pointerLoop,
    ];
    for (const bytes of inputs) assert.equal(await sendRaw(p, bytes, 100), false);
    assert.equal(s.stats().malformed, inputs.length);
    assert.deepEqual(data(await ask(p, 'web')), ['10.77.0.2']);
  });

  test('a non-QUERY opcode gets NOTIMP', async (t) => {
    const s = await start(t);
    const q = packet.encode({
      type: 'query',
      id: 0,
      flags: 2 << 11,
      questions: [{ type: 'A', name: 'web' }],
    });
    assert.equal((await ask(portOf(s), 'web', 'A', { raw: q })).rcode, 'NOTIMP');
  });
});

describe('lifecycle and bad input', () => {
  test('addListen / removeListen', async (t) => {
    const s = await start(t);
    s.setRecords([{ name: 'web', ips: [parseIP('10.77.0.2')] }]);
    await s.addListen({ address: '127.0.0.3', port: 0, network: 'n3', subnets: LOOP });
    await s.addListen({ address: '127.0.0.3', port: 0, network: 'n3', subnets: LOOP }); // idempotent
    const p3 = portOf(s, '127.0.0.3');
    assert.deepEqual(data(await ask(p3, 'web', 'A', { address: '127.0.0.3' })), ['10.77.0.2']);
    s.removeListen('127.0.0.3');
    s.removeListen('127.0.0.3');
    assert.equal(
      s.listening().some((l) => l.address === '127.0.0.3'),
      false,
    );
    await assert.rejects(ask(p3, 'web', 'A', { address: '127.0.0.3', timeoutMs: 300 }));
    s.close();
    s.close();
  });

  test('start validates before binding: bad upstreams, listen addresses, loops; bind errors are typed', async (t) => {
    const invalid = (e: unknown) => isWeftError(e, 'INVALID');
    await assert.rejects(
      DnsServer.start({
        listen: [{ address: '127.0.0.1', port: 0, network: 'n0', subnets: LOOP }],
        upstreams: ['dns.google'],
      }),
      invalid,
    );
    await assert.rejects(
      DnsServer.start({ listen: [{ address: 'localhost', network: 'n0', subnets: LOOP }], upstreams: [] }),
      invalid,
    );
    await assert.rejects(
      DnsServer.start({
        listen: [{ address: '127.0.0.1', port: 70000, network: 'n0', subnets: LOOP }],
        upstreams: [],
      }),
      invalid,
    );
    await assert.rejects(
      DnsServer.start({
        listen: [{ address: '127.0.0.1', port: 5399, network: 'n0', subnets: LOOP }],
        upstreams: ['127.0.0.1:5399'],
      }),
      invalid,
    );
    await assert.rejects(
      DnsServer.start({
        listen: [{ address: '127.0.0.1', port: 0, network: 'n0', subnets: LOOP }],
        upstreams: [],
        timeoutMs: 0,
      }),
      invalid,
    );
    const s = await start(t);
    await assert.rejects(
      DnsServer.start({
        listen: [{ address: '127.0.0.1', port: portOf(s), network: 'n0', subnets: LOOP }],
        upstreams: [],
      }),
      (e) => isWeftError(e, 'CONFLICT'),
    );
    await assert.rejects(
      DnsServer.start({
        listen: [{ address: '192.0.2.1', port: 0, network: 'n0', subnets: LOOP }],
        upstreams: [],
      }),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
  });

  test('parseUpstream', () => {
    assert.deepEqual(
      [
        parseUpstream('1.2.3.4'),
        parseUpstream('1.2.3.4:5353'),
        parseUpstream('fd00::1'),
        parseUpstream('[fd00::1]:54'),
      ].map((u) => `${u.host} ${u.port}`),
      ['1.2.3.4 53', '1.2.3.4 5353', 'fd00::1 53', 'fd00::1 54'],
    );
    for (const bad of ['', '1.2.3.4:0', '1.2.3.4:65536', '[1.2.3.4]x', 'fd00::1:53x', 'host:53']) {
      assert.throws(
        () => parseUpstream(bad),
        (e) => isWeftError(e, 'INVALID'),
        bad,
      );
    }
  });
});

describe('TCP', () => {
  test('one client gets a share of the connections, not all', async (t) => {
    const s = await start(t, { maxTcpConnections: 64 });
    const conns: Awaited<ReturnType<typeof tcpClient>>[] = [];
    for (let i = 0; i < 16; i++) conns.push(await tcpClient(portOf(s), { from: '127.0.0.20' }));
    t.after(() => {
      for (const c of conns) c.close();
    });
    const extra = await tcpClient(portOf(s), { from: '127.0.0.20' });
    await extra.closed;
    const other = await tcpClient(portOf(s), { from: '127.0.0.21' });
    t.after(() => other.close());
    s.setRecords([{ name: 'web', ips: [parseIP('10.77.0.2')] }]);
    assert.deepEqual(data(toAnswer(await other.ask(queryBytes(5, 'web', 'A', undefined)), 0)), ['10.77.0.2']);
    assert.equal(s.tcpConnections, 17);
  });

  test('a client that half-closes after its query still gets the forwarded answer', async (t) => {
    const up = await tcpUpstream(t, '192.0.2.4', 100);
    const s = await start(t, { upstreams: [`127.0.0.1:${up.port}`] });
    const c = await tcpClient(portOf(s));
    const answer = c.ask(queryBytes(77, 'late.example', 'A', undefined));
    c.sock.end();
    assert.deepEqual(data(toAnswer(await answer, 0)), ['192.0.2.4']);
    await c.closed;
  });

  test('an answer truncated over UDP is served in full over TCP, several queries per connection', async (t) => {
    const s = await start(t);
    const ips = Array.from({ length: 60 }, (_, i) => parseIP(`10.0.1.${i + 1}`));
    s.setRecords([
      { name: 'many', ips },
      { name: 'web', ips: [parseIP('10.77.0.2'), parseIP('fd77::2')] },
    ]);
    const p = portOf(s);
    assert.ok((await ask(p, 'many')).tc);
    const full = await ask(p, 'many', 'A', { tcp: true });
    assert.equal(full.tc, false);
    assert.equal(full.answers.length, 60);
    assert.ok(full.aa);
    // Pipelined on one connection, as glibc sends A and AAAA.
    const c = await tcpClient(p);
    t.after(() => c.close());
    const [a, aaaa] = await Promise.all([
      c.ask(queryBytes(101, 'many', 'A', undefined)),
      c.ask(queryBytes(102, 'WEB.', 'AAAA', undefined)),
    ]);
    assert.equal(toAnswer(a, 0).answers.length, 60);
    assert.deepEqual(data(toAnswer(aaaa, 0)), ['fd77::2']);
    assert.deepEqual(data(toAnswer(await c.ask(queryBytes(103, 'web', 'A', undefined)), 0)), ['10.77.0.2']);
    assert.ok(s.stats().tcpQueries >= 4);
  });

  test('names not ours are forwarded to the upstream over TCP', async (t) => {
    const { port, seen } = await tcpUpstream(t, '192.0.2.53');
    const s = await start(t, { upstreams: [`127.0.0.1:${port}`] });
    const a = await ask(portOf(s), 'tcp.example', 'A', { tcp: true });
    assert.equal(a.rcode, 'NOERROR');
    assert.deepEqual(data(a), ['192.0.2.53']);
    assert.equal(seen.length, 1);
    assert.equal(s.pending, 0);
  });

  test('idle connections are closed, connections are bounded, close() ends them', async (t) => {
    const s = await start(t, { tcpIdleMs: 400, maxTcpConnections: 2 });
    const p = portOf(s);
    const c1 = await tcpClient(p);
    const c2 = await tcpClient(p);
    const opened = Date.now();
    const c3 = await tcpClient(p);
    await c3.closed;
    assert.ok(Date.now() - opened < 300, 'beyond the bound: closed at once');
    assert.equal(s.stats().tcpRejected, 1);
    // c2 stays busy; c1 idles out.
    const keep = setInterval(() => void c2.ask(queryBytes(7, 'x', 'A', undefined)).catch(() => {}), 150);
    await c1.closed;
    clearInterval(keep);
    const idle = Date.now() - opened;
    assert.ok(idle >= 350 && idle < 2000, `${idle} ms`);
    assert.equal(c2.sock.destroyed, false);
    const c4 = await tcpClient(p);
    s.close();
    await Promise.all([c2.closed, c4.closed]);
  });
});

/**
 * Two networks on loopback: n1 (127.0.0.0/24, listener 127.0.0.1) and n2 (127.0.1.0/24, listener
 * 127.0.1.1). Sandbox A is on both (a), B on n1 only (b), C on n2 only (c).
 */
const twoNetworks: DnsRecord[] = [
  { name: 'a', ips: [parseIP('127.0.0.2')], network: 'n1', sandbox: 'A' },
  { name: 'a', ips: [parseIP('127.0.1.2')], network: 'n2', sandbox: 'A' },
  { name: 'b', ips: [parseIP('127.0.0.3')], network: 'n1', sandbox: 'B' },
  { name: 'c', ips: [parseIP('127.0.1.4')], network: 'n2', sandbox: 'C' },
];
async function startTwo(t: TestContext, opts: Partial<DnsServerOptions> = {}) {
  const s = await start(t, {
    listen: [
      { address: '127.0.0.1', port: 0, network: 'n1', subnets: ['127.0.0.0/24'] },
      { address: '127.0.1.1', port: 0, network: 'n2', subnets: ['127.0.1.0/24'] },
    ],
    ...opts,
  });
  s.setRecords(twoNetworks);
  const n1 = portOf(s, '127.0.0.1');
  const n2 = portOf(s, '127.0.1.1');
  return {
    s,
    /** Ask n1's listener from `from`. */
    n1: (name: string, from: string, o: AskOptions = {}) => ask(n1, name, 'A', { from, ...o }),
    n2: (name: string, from: string, o: AskOptions = {}) =>
      ask(n2, name, 'A', { from, address: '127.0.1.1', ...o }),
  };
}

describe('who sees which names', () => {
  test('a sandbox on two networks resolves peers on both; one on a single network only its own', async (t) => {
    const { n1, n2 } = await startTwo(t);
    assert.deepEqual(data(await n1('c', '127.0.0.2')), ['127.0.1.4']);
    assert.deepEqual(data(await n1('b', '127.0.0.2')), ['127.0.0.3']);
    // The address on the network the query came in on.
    assert.deepEqual(data(await n1('a', '127.0.0.3')), ['127.0.0.2']);
    assert.deepEqual(data(await n2('a', '127.0.1.4')), ['127.0.1.2']);
    // Not visible: forwarded, and with no upstream that is SERVFAIL.
    assert.equal((await n1('c', '127.0.0.3')).rcode, 'SERVFAIL');
    assert.equal((await n2('b', '127.0.1.4')).rcode, 'SERVFAIL');
    // Over TCP the same.
    assert.deepEqual(data(await n1('c', '127.0.0.2', { tcp: true })), ['127.0.1.4']);
    assert.equal((await n1('c', '127.0.0.3', { tcp: true })).rcode, 'SERVFAIL');
  });

  test('queries from outside the network’s subnets are REFUSED, names not ours too; TCP closed', async (t) => {
    const { s, n1 } = await startTwo(t);
    assert.equal((await n1('b', '127.0.1.4')).rcode, 'REFUSED');
    assert.equal((await n1('example.org', '127.0.2.1')).rcode, 'REFUSED');
    assert.equal(s.stats().forwarded, 0);
    assert.equal(s.stats().refused, 2);
    // Over TCP an outsider is not even given a connection slot.
    const c = await tcpClient(portOf(s, '127.0.0.1'), { from: '127.0.1.4' });
    await c.closed;
    assert.equal(s.stats().tcpRejected, 1);
  });

  test('name.network resolves like name on that network, when it is visible', async (t) => {
    const { n1 } = await startTwo(t);
    assert.deepEqual(data(await n1('B.N1.', '127.0.0.2')), ['127.0.0.3']);
    assert.deepEqual(data(await n1('c.n2', '127.0.0.2')), ['127.0.1.4']);
    assert.deepEqual(data(await n1('a.n1', '127.0.0.3')), ['127.0.0.2']);
    assert.deepEqual(data(await n1('a.n2', '127.0.0.2')), ['127.0.1.2']);
    assert.equal((await n1('c.n2', '127.0.0.3')).rcode, 'SERVFAIL');
    assert.equal((await n1('a.n2', '127.0.0.3')).rcode, 'SERVFAIL');
  });

  test('a sandbox with its own upstreams has its other names forwarded there', async (t) => {
    const up1 = await start(t);
    up1.setRecords([{ name: 'ext.example', ips: [parseIP('192.0.2.1')] }]);
    const up2 = await start(t);
    up2.setRecords([{ name: 'ext.example', ips: [parseIP('192.0.2.2')] }]);
    const { s, n1 } = await startTwo(t, { upstreams: [`127.0.0.1:${portOf(up1)}`] });
    s.setRecords(twoNetworks, { upstreams: new Map([['A', [`127.0.0.1:${portOf(up2)}`]]]) });
    assert.deepEqual(data(await n1('ext.example', '127.0.0.2')), ['192.0.2.2']);
    assert.deepEqual(data(await n1('ext.example', '127.0.0.2', { tcp: true })), ['192.0.2.2']);
    assert.deepEqual(data(await n1('ext.example', '127.0.0.3')), ['192.0.2.1']);
    // Local names stay local.
    assert.deepEqual(data(await n1('b', '127.0.0.2')), ['127.0.0.3']);
    assert.throws(
      () => s.setRecords([], { upstreams: new Map([['A', ['dns.google']]]) }),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.deepEqual(data(await n1('ext.example', '127.0.0.2')), ['192.0.2.2']);
  });
});

describe('EDNS and sizes', () => {
  test('a reply to an EDNS query carries OPT and fits the advertised size; 512 without EDNS', async (t) => {
    const s = await start(t);
    const ips = Array.from({ length: 60 }, (_, i) => parseIP(`10.0.1.${i + 1}`));
    s.setRecords([{ name: 'many', ips }]);
    const p = portOf(s);
    const plain = await ask(p, 'many');
    assert.ok(plain.tc && plain.raw.length <= 512, String(plain.raw.length));
    assert.equal(plain.opt, undefined);
    const big = await ask(p, 'many', 'A', { edns: { size: 1232 } });
    assert.equal(big.tc, false);
    assert.equal(big.answers.length, 60);
    assert.ok(big.opt, 'OPT in the reply');
    assert.equal(big.opt.ednsVersion, 0);
    assert.ok(big.raw.length <= 1232);
    const mid = await ask(p, 'many', 'A', { edns: { size: 600, do: true } });
    assert.ok(mid.tc && mid.raw.length <= 600 && mid.raw.length > 512, String(mid.raw.length));
    assert.ok(mid.opt?.flag_do, 'DO echoed');
    // An advertised size below 512 means 512.
    const tiny = await ask(p, 'many', 'A', { edns: { size: 100 } });
    assert.ok(tiny.tc && tiny.raw.length <= 512 && tiny.raw.length > 400, String(tiny.raw.length));
    // Errors carry OPT too; an unknown EDNS version gets BADVERS.
    const fail = await ask(p, 'nowhere.example', 'A', { edns: { size: 1232 } });
    assert.equal(fail.rcode, 'SERVFAIL');
    assert.ok(fail.opt);
    const badvers = await ask(p, 'many', 'A', { edns: { size: 1232, version: 1 } });
    assert.equal(badvers.opt?.extendedRcode, 1);
    assert.deepEqual(badvers.answers, []);
  });
});

describe('forwarding sockets', () => {
  test('each forwarded query leaves from a fresh port, closed once answered', async (t) => {
    const ports: number[] = [];
    const up = await udp(t, (msg, r, sock) => {
      ports.push(r.port);
      sock.send(answerWith(msg, '192.0.2.9'), r.port, r.address);
    });
    const s = await start(t, { upstreams: [`127.0.0.1:${up.address().port}`] });
    assert.deepEqual(data(await ask(portOf(s), 'one.example')), ['192.0.2.9']);
    assert.deepEqual(data(await ask(portOf(s), 'two.example')), ['192.0.2.9']);
    assert.equal(ports.length, 2);
    assert.notEqual(ports[0], ports[1]);
    // The port is free again: the socket was closed with the answer.
    const probe = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.bind(ports[0], '127.0.0.1', resolve);
    });
    probe.close();
  });

  test('an answer from another port or with another id is ignored', async (t) => {
    const other = await udp(t);
    const up = await udp(t, (msg, r, sock) => {
      const reply = answerWith(msg, '6.6.6.6');
      other.send(reply, r.port, r.address); // right id, wrong source port
      const wrongId = Buffer.from(reply);
      wrongId.writeUInt16BE((reply.readUInt16BE(0) + 1) & 0xffff, 0);
      sock.send(wrongId, r.port, r.address);
    });
    const s = await start(t, { upstreams: [`127.0.0.1:${up.address().port}`], timeoutMs: 300 });
    const a = await ask(portOf(s), 'victim.example');
    assert.equal(a.rcode, 'SERVFAIL');
    assert.equal(s.stats().lateAnswers, 2);
  });
});

describe('questions are echoed as received', () => {
  test('a dot inside a label survives, and such a name never matches ours', async (t) => {
    const s = await start(t);
    s.setRecords([
      { name: 'a.b.web', ips: [parseIP('10.0.0.1')] },
      { name: 'web', ips: [parseIP('10.0.0.2')] },
    ]);
    // \x03a.b\x03web\x00, type A, class IN
    const q = Buffer.concat([
      Buffer.from([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
      Buffer.from('\x03a.b\x03web\x00\x00\x01\x00\x01', 'latin1'),
    ]);
    const a = await ask(portOf(s), '', 'A', { raw: q });
    assert.deepEqual(questionBytes(a.raw), q.subarray(12));
    assert.equal(a.rcode, 'SERVFAIL');
    const mixed = queryBytes(9, 'WeB', 'A', undefined);
    const b = await ask(portOf(s), '', 'A', { raw: mixed });
    assert.deepEqual(questionBytes(b.raw), mixed.subarray(12));
    assert.deepEqual(b.answers, [{ type: 'A', name: 'WeB', data: '10.0.0.2', ttl: 10 }]);
  });
});

describe('listeners one at a time', () => {
  test('an IPv6 listener serves UDP and TCP', async (t) => {
    const s = await start(t, { listen: [{ address: '::1', port: 0, network: 'v6', subnets: ['::1/128'] }] });
    s.setRecords([{ name: 'web', ips: [parseIP('fd77::2')], network: 'v6', sandbox: 'W' }]);
    const p = portOf(s, '::1');
    assert.deepEqual(data(await ask(p, 'web', 'AAAA', { address: '::1' })), ['fd77::2']);
    assert.deepEqual(data(await ask(p, 'web.v6', 'AAAA', { address: '::1', tcp: true })), ['fd77::2']);
  });

  test('binds of one address are serialised; a removeListen during a bind wins', async (t) => {
    const s = await start(t);
    const spec = { address: '127.0.0.10', port: 0, network: 'n10', subnets: LOOP };
    await Promise.all([s.addListen(spec), s.addListen({ ...spec, network: 'renamed' })]);
    assert.deepEqual(
      s
        .listening()
        .filter((l) => l.address === '127.0.0.10')
        .map((l) => l.network),
      ['renamed'],
    );
    s.removeListen('127.0.0.10');
    const binding = s.addListen({ ...spec, address: '127.0.0.11' });
    s.removeListen('127.0.0.11');
    await binding;
    assert.deepEqual(
      s.listening().map((l) => l.address),
      ['127.0.0.1'],
    );
    s.close();
    await assert.rejects(s.addListen(spec), (e) => isWeftError(e, 'INTERNAL'));
  });

  test('a failed addListen is typed and leaves nothing bound; other listeners and records carry on', async (t) => {
    const s = await start(t);
    // 127.0.0.6:P taken for TCP only: UDP would bind, TCP not.
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.6', r));
    t.after(() => squatter.close());
    const port = (squatter.address() as net.AddressInfo).port;
    await assert.rejects(s.addListen({ address: '127.0.0.6', port, network: 'n6', subnets: LOOP }), (e) =>
      isWeftError(e, 'CONFLICT'),
    );
    const probe = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.bind(port, '127.0.0.6', resolve);
    });
    probe.close();
    await assert.rejects(s.addListen({ address: '192.0.2.1', port: 0, network: 'n7', subnets: LOOP }), (e) =>
      isWeftError(e, 'NOT_FOUND'),
    );
    await assert.rejects(
      s.addListen({ address: '127.0.0.8', port: 0, network: 'n8', subnets: ['nope'] }),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.deepEqual(
      s.listening().map((l) => l.address),
      ['127.0.0.1'],
    );
    s.setRecords([{ name: 'web', ips: [parseIP('10.77.0.3')] }]);
    assert.deepEqual(data(await ask(portOf(s), 'web')), ['10.77.0.3']);
    // Port 0: UDP and TCP on one port.
    await s.addListen({ address: '127.0.0.9', port: 0, network: 'n9', subnets: LOOP });
    const p9 = portOf(s, '127.0.0.9');
    assert.deepEqual(data(await ask(p9, 'web', 'A', { address: '127.0.0.9' })), ['10.77.0.3']);
    assert.deepEqual(data(await ask(p9, 'web', 'A', { address: '127.0.0.9', tcp: true })), ['10.77.0.3']);
  });
});
