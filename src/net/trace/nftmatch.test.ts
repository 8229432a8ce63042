/**
 * The nftables matcher against a real ruleset: `nft -j list ruleset` of a lab host on the
 * host-gw backend (fixtures/host-ruleset.json: weft's `inet weft` table for subnet
 * 10.244.216.0/24 on bridge weft0 in cluster 10.244.0.0/16, port 8080 published to
 * 10.244.216.2:80, and iptables-nft's filter tables with weft's WEFT-FORWARD piece), and against
 * small hand-made rulesets for what weft does not render.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import type { NftObject, NftRuleset } from '../../kernel/nft.js';
import { formatIP, type IPAddr, parseIP } from '../../lib/ip.js';
import { baseChains, evaluateHook, type MatchPacket, ruleText } from './nftmatch.js';

const host: NftRuleset = JSON.parse(
  fs.readFileSync(new URL('./fixtures/host-ruleset.json', import.meta.url), 'utf8'),
) as NftRuleset;

const LOCAL = ['192.168.100.11', '10.244.216.1', '10.244.216.0', '127.0.0.1'].map(parseIP);
const env = { isLocal: (ip: IPAddr) => LOCAL.some((l) => l.value === ip.value) };

const pkt = (
  src: string,
  dst: string,
  o: Partial<Omit<MatchPacket, 'saddr' | 'daddr' | 'family'>> = {},
): MatchPacket => ({
  family: 4,
  saddr: parseIP(src),
  daddr: parseIP(dst),
  proto: 'tcp',
  dport: 80,
  ...o,
});

/** A ruleset of one table with the given chains (base chains: [hook, prio, policy]) and rules. */
function ruleset(
  family: string,
  table: string,
  chains: Record<string, { base?: [string, number, string]; type?: string; rules: unknown[][] }>,
): NftObject[] {
  const out: NftObject[] = [{ table: { family, name: table, handle: 1 } }];
  let handle = 10;
  for (const [name, c] of Object.entries(chains)) {
    out.push({
      chain: {
        family,
        table,
        name,
        handle: handle++,
        ...(c.base && { type: c.type ?? 'filter', hook: c.base[0], prio: c.base[1], policy: c.base[2] }),
      },
    });
  }
  for (const [name, c] of Object.entries(chains)) {
    for (const expr of c.rules) out.push({ rule: { family, table, chain: name, handle: handle++, expr } });
  }
  return out;
}

const match = (left: unknown, right: unknown, op = '==') => ({ match: { op, left, right } });
const payload = (protocol: string, field: string) => ({ payload: { protocol, field } });
const meta = (key: string) => ({ meta: { key } });

describe('the nftables matcher on a weft host', () => {
  test('base chains of a hook come in priority order across tables, by family', () => {
    assert.deepEqual(
      baseChains(host, 'forward', 4).map((c) => `${c.family} ${c.table} ${c.name}`),
      ['ip filter FORWARD', 'inet weft forward'],
    );
    assert.deepEqual(
      baseChains(host, 'forward', 6).map((c) => `${c.family} ${c.table} ${c.name}`),
      ['ip6 filter FORWARD', 'inet weft forward'],
    );
    assert.deepEqual(
      baseChains(host, 'prerouting', 4).map((c) => [c.name, c.type, c.prio]),
      [['prerouting', 'nat', -100]],
    );
  });

  test('a published port: prerouting DNATs tcp 8080 on a host address, nothing else', () => {
    const r = evaluateHook(
      host,
      'prerouting',
      pkt('203.0.113.10', '192.168.100.11', { dport: 8080, iifname: 'eth0' }),
      env,
    );
    assert.equal(r.verdict, 'accept');
    assert.equal(r.nat?.kind, 'dnat');
    assert.equal(formatIP(r.nat!.addr!), '10.244.216.2');
    assert.equal(r.nat?.port, 80);
    assert.equal(r.nat?.rule.comment, 'net 06bbbece8cd9 ep 537833996b27: tcp 8080 -> 80');
    assert.equal(r.nat?.rule.chain, 'published');
    assert.equal(r.chains[0]?.outcome, 'nat');
    assert.deepEqual(r.chains[0]?.via, ['published']);
    // UDP on that port, another port, or not a local address: no DNAT.
    for (const p of [
      pkt('203.0.113.10', '192.168.100.11', { proto: 'udp', dport: 8080 }),
      pkt('203.0.113.10', '192.168.100.11', { dport: 8081 }),
      pkt('203.0.113.10', '10.244.216.2', { dport: 8080 }),
    ]) {
      const x = evaluateHook(host, 'prerouting', p, env);
      assert.equal(x.nat, undefined, JSON.stringify(p.dport));
      assert.equal(x.verdict, 'accept');
      assert.equal(x.chains[0]?.outcome, 'policy-accept');
    }
  });

  test('forward: DNATed traffic and the cluster are let into the bridge; anything else is isolated', () => {
    const dnat = evaluateHook(
      host,
      'forward',
      pkt('203.0.113.10', '10.244.216.2', { iifname: 'eth0', oifname: 'weft0', dnat: true }),
      env,
    );
    assert.equal(dnat.verdict, 'accept');
    const weft = dnat.chains.find((c) => c.table === 'weft')!;
    assert.equal(weft.rule?.comment, 'net 06bbbece8cd9: published ports');
    // iptables' FORWARD jumps to WEFT-FORWARD, which accepts -o weft0.
    const ipt = dnat.chains.find((c) => c.table === 'filter')!;
    assert.equal(ipt.outcome, 'accept');
    assert.deepEqual(ipt.via, ['WEFT-FORWARD']);

    const cluster = evaluateHook(
      host,
      'forward',
      pkt('10.244.96.2', '10.244.216.2', { iifname: 'eth0', oifname: 'weft0' }),
      env,
    );
    assert.equal(cluster.verdict, 'accept');
    assert.equal(cluster.chains.at(-1)?.rule?.comment, 'net 06bbbece8cd9: from the cluster network');

    const outside = evaluateHook(
      host,
      'forward',
      pkt('203.0.113.10', '10.244.216.2', { iifname: 'eth0', oifname: 'weft0' }),
      env,
    );
    assert.equal(outside.verdict, 'drop');
    assert.equal(outside.decisive?.outcome, 'drop');
    assert.equal(outside.decisive?.rule?.comment, 'net 06bbbece8cd9: nothing else enters (isolation)');

    const within = evaluateHook(
      host,
      'forward',
      pkt('10.244.216.3', '10.244.216.2', { iifname: 'weft0', oifname: 'weft0' }),
      env,
    );
    assert.equal(within.chains.at(-1)?.rule?.comment, 'net 06bbbece8cd9: within the network');

    // A new connection is not "established": the replies rule does not take it; an established one it does.
    const est = evaluateHook(
      host,
      'forward',
      pkt('203.0.113.10', '10.244.216.2', { iifname: 'eth0', oifname: 'weft0', ctState: 'established' }),
      env,
    );
    assert.equal(est.verdict, 'accept');
    assert.equal(est.chains.at(-1)?.rule?.comment, 'replies to allowed traffic');
  });

  test('postrouting: outbound NAT, none to the cluster, the host’s own traffic, hairpin', () => {
    const out = evaluateHook(
      host,
      'postrouting',
      pkt('10.244.216.2', '203.0.113.10', { oifname: 'eth0' }),
      env,
    );
    assert.equal(out.nat?.kind, 'masquerade');
    assert.equal(out.nat?.rule.comment, 'net 06bbbece8cd9: outbound NAT');

    const toCluster = evaluateHook(
      host,
      'postrouting',
      pkt('10.244.216.2', '10.244.96.2', { oifname: 'eth0' }),
      env,
    );
    assert.equal(toCluster.nat, undefined);

    const hostOwn = evaluateHook(
      host,
      'postrouting',
      pkt('192.168.100.11', '10.244.96.2', { oifname: 'eth0' }),
      env,
    );
    assert.equal(hostOwn.nat?.kind, 'snat');
    assert.equal(formatIP(hostOwn.nat!.addr!), '10.244.216.1');

    const hairpin = evaluateHook(
      host,
      'postrouting',
      pkt('10.244.216.2', '10.244.216.2', { oifname: 'weft0', iifname: 'weft0', dnat: true }),
      env,
    );
    assert.equal(hairpin.nat?.rule.comment, 'net 06bbbece8cd9: hairpin to published ports');
    const noDnat = evaluateHook(
      host,
      'postrouting',
      pkt('10.244.216.2', '10.244.216.3', { oifname: 'weft0' }),
      env,
    );
    assert.equal(noDnat.nat, undefined);
  });

  test('IPv6 packets do not match ip rules (and ip6 ::1 returns in output)', () => {
    const p: MatchPacket = {
      family: 6,
      saddr: parseIP('::1'),
      daddr: parseIP('::1'),
      proto: 'tcp',
      dport: 8080,
    };
    const r = evaluateHook(host, 'output', p, env);
    assert.equal(r.nat, undefined);
    assert.equal(r.chains[0]?.outcome, 'policy-accept');
  });
});

describe('the nftables matcher on hand-made rules', () => {
  const weftForward = (first: unknown[][]): NftRuleset => ({
    nftables: [
      ...host.nftables.filter((o) => !(o.rule && o.rule.table === 'weft' && o.rule.chain === 'forward')),
      ...first.map((expr, i) => ({
        rule: { family: 'inet', table: 'weft', chain: 'forward', handle: 900 + i, expr },
      })),
      ...host.nftables.filter((o) => o.rule && o.rule.table === 'weft' && o.rule.chain === 'forward'),
    ],
  });

  test('a DROP rule inserted first into weft’s forward chain wins, named by its handle and text', () => {
    const rs = weftForward([[match(payload('ip', 'daddr'), '10.244.96.2'), { drop: null }]]);
    const r = evaluateHook(
      rs,
      'forward',
      pkt('10.244.216.2', '10.244.96.2', { iifname: 'eth0', oifname: 'weft0' }),
      env,
    );
    assert.equal(r.verdict, 'drop');
    assert.equal(r.decisive?.rule?.handle, 900);
    assert.equal(r.decisive?.rule?.text, 'ip daddr 10.244.96.2 drop');
    assert.equal(r.decisive?.rule?.comment, undefined);
    // Other destinations pass it.
    const other = evaluateHook(
      rs,
      'forward',
      pkt('10.244.216.2', '10.244.96.3', { iifname: 'eth0', oifname: 'weft0' }),
      env,
    );
    assert.equal(other.verdict, 'accept');
  });

  test('iptables FORWARD policy DROP: weft’s jump accepts; without it the policy drops', () => {
    const withDrop = (rs: NftRuleset, keepJump: boolean): NftRuleset => ({
      nftables: rs.nftables
        .map((o) =>
          o.chain && o.chain.family === 'ip' && o.chain.name === 'FORWARD'
            ? { chain: { ...o.chain, policy: 'drop' } }
            : o,
        )
        .filter((o) => keepJump || !(o.rule && o.rule.family === 'ip' && o.rule.chain === 'FORWARD')),
    });
    const p = pkt('10.244.96.2', '10.244.216.2', { iifname: 'eth0', oifname: 'weft0' });
    const ok = evaluateHook(withDrop(host, true), 'forward', p, env);
    assert.equal(ok.verdict, 'accept');
    const ipt = ok.chains.find((c) => c.table === 'filter')!;
    assert.equal(ipt.policy, 'drop');
    assert.equal(ipt.outcome, 'accept');
    const bad = evaluateHook(withDrop(host, false), 'forward', p, env);
    assert.equal(bad.verdict, 'drop');
    assert.equal(bad.decisive?.outcome, 'policy-drop');
    assert.equal(bad.decisive?.table, 'filter');
    assert.equal(bad.decisive?.chain, 'FORWARD');
    assert.equal(bad.decisive?.rule, undefined);
  });

  test('jump, goto and return; NAT ends a nat chain; later nat chains are skipped', () => {
    const rs: NftRuleset = {
      nftables: [
        ...ruleset('inet', 't', {
          pre: {
            base: ['prerouting', -100, 'accept'],
            type: 'nat',
            rules: [
              [{ jump: { target: 'a' } }],
              [match(payload('tcp', 'dport'), 81), { goto: { target: 'b' } }],
              [match(payload('tcp', 'dport'), 82), { dnat: { family: 'ip', addr: '10.0.0.9', port: 8082 } }],
            ],
          },
          a: { rules: [[match(payload('tcp', 'dport'), 80), { return: null }], [{ counter: null }]] },
          b: {
            rules: [
              [match(payload('ip', 'saddr'), { prefix: { addr: '10.1.0.0', len: 16 } }), { drop: null }],
            ],
          },
        }),
        ...ruleset('ip', 'n2', {
          pre2: {
            base: ['prerouting', -90, 'accept'],
            type: 'nat',
            rules: [[{ dnat: { family: 'ip', addr: '10.0.0.1' } }]],
          },
        }),
      ],
    };
    // dport 82: the first nat chain DNATs; the second nat chain is skipped.
    const r82 = evaluateHook(rs, 'prerouting', pkt('10.2.0.1', '10.9.9.9', { dport: 82 }), env);
    assert.equal(formatIP(r82.nat!.addr!), '10.0.0.9');
    assert.equal(r82.nat?.port, 8082);
    assert.equal(r82.chains.length, 1);
    // dport 81 from 10.1/16: goto b drops.
    const r81 = evaluateHook(rs, 'prerouting', pkt('10.1.2.3', '10.9.9.9', { dport: 81 }), env);
    assert.equal(r81.verdict, 'drop');
    assert.deepEqual(r81.decisive?.via, ['b']);
    // dport 81 from elsewhere: goto b falls off b, which returns from `pre` (no later rule runs):
    // policy accept, then the second table's chain DNATs.
    const r81b = evaluateHook(rs, 'prerouting', pkt('10.2.0.1', '10.9.9.9', { dport: 81 }), env);
    assert.equal(r81b.chains[0]?.outcome, 'policy-accept');
    assert.equal(formatIP(r81b.nat!.addr!), '10.0.0.1');
  });

  test('maps, port ranges, sets, ranges, wildcards; what it cannot evaluate is uncertain', () => {
    const rs: NftRuleset = {
      nftables: ruleset('inet', 't', {
        pre: {
          base: ['prerouting', -100, 'accept'],
          type: 'nat',
          rules: [
            [match(payload('ip', 'saddr'), '@blocked'), { drop: null }],
            [
              match(payload('tcp', 'dport'), { range: [9000, 9001] }),
              {
                dnat: {
                  family: 'ip',
                  addr: {
                    map: {
                      key: payload('tcp', 'dport'),
                      data: {
                        set: [
                          [9000, { concat: ['10.0.0.2', 8000] }],
                          [9001, { concat: ['10.0.0.2', 8001] }],
                        ],
                      },
                    },
                  },
                },
              },
            ],
            [
              match(payload('tcp', 'dport'), { range: [7000, 7010] }),
              { dnat: { family: 'ip', addr: '10.0.0.3', port: { range: [7000, 7010] } } },
            ],
            [
              match(payload('ip', 'daddr'), { set: ['10.1.2.4', { range: ['10.1.3.0', '10.1.3.9'] }] }),
              match(meta('iifname'), 'veth*'),
              { reject: { type: 'icmp', expr: 'port-unreachable' } },
            ],
          ],
        },
      }),
    };
    const m = evaluateHook(rs, 'prerouting', pkt('1.1.1.1', '10.9.9.9', { dport: 9001 }), env);
    assert.equal(formatIP(m.nat!.addr!), '10.0.0.2');
    assert.equal(m.nat?.port, 8001);
    assert.equal(m.uncertain.length, 1, 'the @blocked rule');
    assert.match(m.uncertain[0]!.text, /ip saddr @blocked drop/);
    const range = evaluateHook(rs, 'prerouting', pkt('1.1.1.1', '10.9.9.9', { dport: 7005 }), env);
    assert.equal(range.nat?.port, 7005, 'a port in the range is kept (one to one)');
    const rej = evaluateHook(
      rs,
      'prerouting',
      pkt('1.1.1.1', '10.1.3.5', { dport: 1, iifname: 'veth12' }),
      env,
    );
    assert.equal(rej.verdict, 'drop');
    assert.equal(rej.decisive?.outcome, 'reject');
    const notVeth = evaluateHook(
      rs,
      'prerouting',
      pkt('1.1.1.1', '10.1.3.5', { dport: 1, iifname: 'eth0' }),
      env,
    );
    assert.equal(notVeth.verdict, 'accept');
  });

  test('ruleText reads like nft list', () => {
    assert.equal(
      ruleText([
        match(payload('ip', 'saddr'), { prefix: { addr: '10.244.0.0', len: 16 } }),
        match(meta('oifname'), 'weft0', '!='),
        { masquerade: null },
      ]),
      'ip saddr 10.244.0.0/16 oifname != weft0 masquerade',
    );
    assert.equal(
      ruleText([match({ ct: { key: 'state' } }, ['established', 'related'], 'in'), { accept: null }]),
      'ct state established,related accept',
    );
    assert.equal(
      ruleText([
        match({ fib: { result: 'type', flags: ['daddr'] } }, 'local'),
        { jump: { target: 'published' } },
      ]),
      'fib daddr type local jump published',
    );
    assert.equal(
      ruleText([{ dnat: { family: 'ip', addr: '10.0.0.2', port: 80 } }]),
      'dnat ip to 10.0.0.2:80',
    );
  });
});
