// In-process tests of the DNS server on loopback addresses with random ports: answers from the
// table, network scoping, forwarding, timeouts, bounds, malformed input. No root needed; the
// kernel test (dns.kernel.test.ts) covers the same server across namespaces.
import assert from 'node:assert/strict';
import * as dgram from 'node:dgram';
import { describe, type TestContext, test } from 'node:test';
import * as packet from 'dns-packet';
import { isWeftError } from '../../lib/errors.js';
import { parseIP } from '../../lib/ip.js';
import { DnsServer, type DnsServerOptions, parseUpstream, reverseName } from './server.js';

interface Answer {
  rcode: string;
  aa: boolean;
  tc: boolean;
  id: number;
  answers: { type: string; name: string; data: unknown; ttl: number | undefined }[];
  ms: number;
}

async function start(t: TestContext, opts: Partial<DnsServerOptions> = {}): Promise<DnsServer> {
  const s = await DnsServer.start({ listen: [{ address: '127.0.0.1', port: 0 }], upstreams: [], ...opts });
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

async function ask(
  port: number,
  name: string,
  type: packet.RecordType | 'ANY' = 'A',
  opts: { address?: string; timeoutMs?: number; raw?: Buffer } = {},
): Promise<Answer> {
  const started = Date.now();
  const sock = dgram.createSocket('udp4');
  const id = Math.floor(Math.random() * 0x10000);
  try {
    return await new Promise<Answer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer for ${name}`)), opts.timeoutMs ?? 3000);
      sock.on('message', (msg) => {
        const r = packet.decode(msg);
        if (r.id !== id) return;
        clearTimeout(timer);
        resolve({
          rcode: (r as unknown as { rcode: string }).rcode,
          aa: r.flag_aa,
          tc: r.flag_tc,
          id: r.id,
          answers: (r.answers ?? []).map((a) => ({
            type: a.type,
            name: a.name,
            data: 'data' in a ? a.data : undefined,
            ttl: 'ttl' in a ? a.ttl : undefined,
          })),
          ms: Date.now() - started,
        });
      });
      const q =
        opts.raw ??
        packet.encode({
          type: 'query',
          id,
          flags: packet.RECURSION_DESIRED,
          questions: [{ type: type as packet.RecordType, name }],
        });
      if (opts.raw) q.writeUInt16BE(id, 0);
      sock.send(q, port, opts.address ?? '127.0.0.1');
    });
  } finally {
    sock.close();
  }
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
  });

  test('records of a network are seen only on that network’s listener', async (t) => {
    const s = await start(t, {
      listen: [
        { address: '127.0.0.1', port: 0, network: 'red' },
        { address: '127.0.0.2', port: 0, network: 'blue' },
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
    await s.addListen({ address: '127.0.0.3', port: 0, network: 'n3' });
    await s.addListen({ address: '127.0.0.3', port: 0, network: 'n3' }); // idempotent
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
      DnsServer.start({ listen: [{ address: '127.0.0.1', port: 0 }], upstreams: ['dns.google'] }),
      invalid,
    );
    await assert.rejects(DnsServer.start({ listen: [{ address: 'localhost' }], upstreams: [] }), invalid);
    await assert.rejects(
      DnsServer.start({ listen: [{ address: '127.0.0.1', port: 70000 }], upstreams: [] }),
      invalid,
    );
    await assert.rejects(
      DnsServer.start({ listen: [{ address: '127.0.0.1', port: 5399 }], upstreams: ['127.0.0.1:5399'] }),
      invalid,
    );
    await assert.rejects(
      DnsServer.start({ listen: [{ address: '127.0.0.1', port: 0 }], upstreams: [], timeoutMs: 0 }),
      invalid,
    );
    const s = await start(t);
    await assert.rejects(
      DnsServer.start({ listen: [{ address: '127.0.0.1', port: portOf(s) }], upstreams: [] }),
      (e) => isWeftError(e, 'CONFLICT'),
    );
    await assert.rejects(
      DnsServer.start({ listen: [{ address: '192.0.2.1', port: 0 }], upstreams: [] }),
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
