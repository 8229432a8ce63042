import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { WeftError } from '../../lib/errors.js';
import { parseIP, parseIPNet } from '../../lib/ip.js';
import { chainRules, ep, net, port } from './fixtures.test.js';
import {
  renderInsert,
  renderRemoval,
  renderRuleUpdate,
  renderTable,
  renderTables,
  requiredSysctls,
} from './render.js';
import type { FirewallState } from './types.js';

const HEADER = 'table inet weft\ndelete table inet weft\n';

describe('renderTables', () => {
  test('one network with masquerade and one published port: the whole batch', () => {
    const state: FirewallState = {
      networks: [
        net('n1', 'br-n1', ['10.0.0.1/24'], { endpoints: [ep('e1', ['10.0.0.2'], [port('tcp', 8080, 80)])] }),
      ],
    };
    assert.equal(
      renderTables(state),
      `table inet weft
delete table inet weft
table inet weft {
\tchain loopback {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tiifname != "lo" ip daddr 127.0.0.0/8 drop comment "127.0.0.0/8 only from the host itself"
\t}

\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local jump published comment "published ports on host addresses"
\t}

\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tip6 daddr ::1 return comment "no DNAT from ::1: IPv6 cannot forward loopback traffic"
\t\tfib daddr type local jump published comment "published ports reached from the host"
\t}

\tchain published {
\t\tmeta nfproto ipv4 tcp dport 8080 dnat ip to 10.0.0.2:80 comment "net n1 ep e1: tcp 8080 -> 80"
\t}

\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 10.0.0.0/24 oifname != "br-n1" masquerade comment "net n1: outbound NAT"
\t\tct status dnat ip saddr 10.0.0.0/24 oifname "br-n1" masquerade comment "net n1: hairpin to published ports"
\t\tip saddr 127.0.0.0/8 oifname "br-n1" masquerade comment "net n1: published ports reached through localhost"
\t}

\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept comment "replies to allowed traffic"
\t\tiifname "br-n1" oifname "br-n1" accept comment "net n1: within the network"
\t\toifname "br-n1" ct status dnat accept comment "net n1: published ports"
\t\toifname "br-n1" drop comment "net n1: nothing else enters (isolation)"
\t}
}
`,
    );
    assert.deepEqual(requiredSysctls(state), [
      {
        key: 'net.ipv4.ip_forward',
        path: 'net/ipv4/ip_forward',
        value: '1',
        why: 'IPv4 networks are routed',
      },
      {
        key: 'net.ipv4.conf.br-n1.route_localnet',
        path: 'net/ipv4/conf/br-n1/route_localnet',
        value: '1',
        why: 'network n1 has ports published on 127.0.0.0/8',
      },
    ]);
  });

  test('renderTables is the add-delete idiom around renderTable; empty state and removal delete only', () => {
    const state: FirewallState = { networks: [net('n1', 'br0', ['10.0.0.0/24'])] };
    assert.equal(renderTables(state), HEADER + renderTable(state));
    assert.equal(renderTable({ networks: [] }), '');
    assert.equal(renderTables({ networks: [] }), HEADER);
    assert.equal(renderRemoval(), HEADER);
    // Network without ports: no hairpin, no localhost rule, empty published chain.
    assert.deepEqual(chainRules(renderTable(state), 'published'), []);
    assert.deepEqual(chainRules(renderTable(state), 'postrouting'), [
      'ip saddr 10.0.0.0/24 oifname != "br0" masquerade comment "net n1: outbound NAT"',
    ]);
    assert.deepEqual(
      requiredSysctls(state).map((s) => s.key),
      ['net.ipv4.ip_forward'],
    );
  });

  test('internal network: no NAT, nothing leaves or enters, within the bridge allowed', () => {
    const text = renderTable({
      networks: [
        net('int1', 'br-int', ['10.5.0.0/24'], { internal: true, endpoints: [ep('e1', ['10.5.0.2'])] }),
      ],
    });
    assert.deepEqual(chainRules(text, 'postrouting'), []);
    assert.deepEqual(chainRules(text, 'forward'), [
      'ct state established,related accept comment "replies to allowed traffic"',
      'iifname "br-int" oifname "br-int" accept comment "net int1: within the network"',
      'iifname "br-int" drop comment "net int1: internal, nothing leaves"',
      'oifname "br-int" drop comment "net int1: internal, nothing enters"',
    ]);
  });

  test('icc=false: hairpin DNAT accepted, everything else between containers dropped; br_netfilter sysctls', () => {
    const state: FirewallState = {
      networks: [
        net('n1', 'br0', ['10.0.0.0/24'], {
          icc: false,
          endpoints: [ep('a', ['10.0.0.2'], [port('tcp', 80, 80)]), ep('b', ['10.0.0.3'])],
        }),
      ],
    };
    assert.deepEqual(chainRules(renderTable(state), 'forward'), [
      'ct state established,related accept comment "replies to allowed traffic"',
      'iifname "br0" oifname "br0" ct status dnat accept comment "net n1: published ports from inside (hairpin)"',
      'iifname "br0" oifname "br0" drop comment "net n1: icc=false, no traffic between containers"',
      'oifname "br0" ct status dnat accept comment "net n1: published ports"',
      'oifname "br0" drop comment "net n1: nothing else enters (isolation)"',
    ]);
    const keys = requiredSysctls(state).map((s) => `${s.key}=${s.value}`);
    assert.deepEqual(keys, [
      'net.ipv4.ip_forward=1',
      'net.bridge.bridge-nf-call-iptables=1',
      'net.bridge.bridge-nf-call-ip6tables=1',
      'net.ipv4.conf.br0.route_localnet=1',
    ]);
  });

  test('IPv6 network: the same rules per family from one shape', () => {
    const state: FirewallState = {
      networks: [
        net('n6', 'br6', ['10.6.0.0/24', 'fd00:6::/64'], {
          endpoints: [
            ep('e1', ['10.6.0.2', 'fd00:6::2'], [port('tcp', 8080, 80), port('udp', 53, 5353, '::')]),
          ],
        }),
      ],
    };
    const text = renderTable(state);
    assert.deepEqual(chainRules(text, 'published'), [
      'meta nfproto ipv4 tcp dport 8080 dnat ip to 10.6.0.2:80 comment "net n6 ep e1: tcp 8080 -> 80"',
      'meta nfproto ipv6 tcp dport 8080 dnat ip6 to [fd00:6::2]:80 comment "net n6 ep e1: tcp 8080 -> 80"',
      'meta nfproto ipv6 udp dport 53 dnat ip6 to [fd00:6::2]:5353 comment "net n6 ep e1: udp 53 -> 5353"',
    ]);
    assert.deepEqual(chainRules(text, 'postrouting'), [
      'ip saddr 10.6.0.0/24 oifname != "br6" masquerade comment "net n6: outbound NAT"',
      'ip6 saddr fd00:6::/64 oifname != "br6" masquerade comment "net n6: outbound NAT"',
      'ct status dnat ip saddr 10.6.0.0/24 oifname "br6" masquerade comment "net n6: hairpin to published ports"',
      'ct status dnat ip6 saddr fd00:6::/64 oifname "br6" masquerade comment "net n6: hairpin to published ports"',
      'ip saddr 127.0.0.0/8 oifname "br6" masquerade comment "net n6: published ports reached through localhost"',
    ]);
    assert.deepEqual(
      requiredSysctls(state).map((s) => s.key),
      ['net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding', 'net.ipv4.conf.br6.route_localnet'],
    );
    // An IPv6-only network has no IPv4 word anywhere outside the fixed chains.
    const v6only = renderTable({
      networks: [
        net('v6', 'brv6', ['fd00:7::/64'], { endpoints: [ep('e', ['fd00:7::2'], [port('tcp', 80, 80)])] }),
      ],
    });
    for (const chain of ['published', 'postrouting']) {
      for (const r of chainRules(v6only, chain))
        assert.doesNotMatch(r, /\bip saddr|\bip daddr|ipv4|dnat ip to/);
    }
    assert.deepEqual(
      requiredSysctls({
        networks: [
          net('v6', 'brv6', ['fd00:7::/64'], { endpoints: [ep('e', ['fd00:7::2'], [port('tcp', 80, 80)])] }),
        ],
      }).map((s) => s.key),
      ['net.ipv6.conf.all.forwarding'],
    );
  });

  test('port ranges: equal ranges keep the port, shifted ranges map one to one', () => {
    const text = renderTable({
      networks: [
        net('n1', 'br0', ['10.0.0.0/24'], {
          endpoints: [
            ep(
              'e1',
              ['10.0.0.2'],
              [port('udp', [8000, 8010], [8000, 8010]), port('tcp', [9000, 9002], [7000, 7002])],
            ),
          ],
        }),
      ],
    });
    assert.deepEqual(chainRules(text, 'published'), [
      'meta nfproto ipv4 udp dport 8000-8010 dnat ip to 10.0.0.2:8000-8010 comment "net n1 ep e1: udp 8000-8010 -> 8000-8010"',
      'meta nfproto ipv4 tcp dport 9000-9002 dnat ip to tcp dport map { 9000 : 10.0.0.2 . 7000, 9001 : 10.0.0.2 . 7001, 9002 : 10.0.0.2 . 7002 } comment "net n1 ep e1: tcp 9000-9002 -> 7000-7002"',
    ]);
  });

  test('host-address-bound ports: localhost needs route_localnet and masquerade, others only a daddr match', () => {
    const state: FirewallState = {
      networks: [
        net('n1', 'br0', ['10.0.0.0/24'], {
          endpoints: [
            ep('e1', ['10.0.0.2'], [port('tcp', 8080, 80, '127.0.0.1')]),
            ep('e2', ['10.0.0.3'], [port('tcp', 8080, 80, '192.0.2.1')]),
          ],
        }),
        net('n2', 'br1', ['10.1.0.0/24'], {
          endpoints: [ep('e3', ['10.1.0.3'], [port('tcp', 8081, 80, '192.0.2.1')])],
        }),
      ],
    };
    const text = renderTable(state);
    assert.deepEqual(chainRules(text, 'published'), [
      'ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 10.0.0.2:80 comment "net n1 ep e1: tcp 8080 -> 80"',
      'ip daddr 192.0.2.1 tcp dport 8080 dnat ip to 10.0.0.3:80 comment "net n1 ep e2: tcp 8080 -> 80"',
      'ip daddr 192.0.2.1 tcp dport 8081 dnat ip to 10.1.0.3:80 comment "net n2 ep e3: tcp 8081 -> 80"',
    ]);
    const post = chainRules(text, 'postrouting');
    assert.ok(
      post.includes(
        'ip saddr 127.0.0.0/8 oifname "br0" masquerade comment "net n1: published ports reached through localhost"',
      ),
    );
    assert.ok(!post.some((r) => r.includes('127.0.0.0/8') && r.includes('br1')), 'n2 has no localhost port');
    assert.deepEqual(
      requiredSysctls(state)
        .filter((s) => s.key.endsWith('route_localnet'))
        .map((s) => s.path),
      ['net/ipv4/conf/br0/route_localnet'],
    );
  });

  test('two networks are isolated from each other; hostIps make SNAT; masquerade=false has none', () => {
    const text = renderTable({
      networks: [
        net('a', 'br-a', ['10.1.0.0/24'], { hostIps: [parseIP('192.0.2.1')] }),
        net('b', 'br-b', ['10.2.0.0/24'], { masquerade: false }),
      ],
    });
    assert.deepEqual(chainRules(text, 'postrouting'), [
      'ip saddr 10.1.0.0/24 oifname != "br-a" snat ip to 192.0.2.1 comment "net a: outbound NAT"',
    ]);
    assert.deepEqual(chainRules(text, 'forward'), [
      'ct state established,related accept comment "replies to allowed traffic"',
      'iifname "br-a" oifname "br-a" accept comment "net a: within the network"',
      'oifname "br-a" ct status dnat accept comment "net a: published ports"',
      'oifname "br-a" drop comment "net a: nothing else enters (isolation)"',
      'iifname "br-b" oifname "br-b" accept comment "net b: within the network"',
      'oifname "br-b" ct status dnat accept comment "net b: published ports"',
      'oifname "br-b" drop comment "net b: nothing else enters (isolation)"',
    ]);
  });

  test('overlay host: no NAT towards the cluster network, and the cluster may enter the bridge', () => {
    const text = renderTable({
      networks: [
        net('d', 'weft0', ['10.244.3.1/24'], {
          cluster: [parseIPNet('10.244.0.0/16')],
          clusterSource: parseIP('10.244.3.1'),
        }),
      ],
    });
    assert.deepEqual(chainRules(text, 'postrouting'), [
      'ip saddr 10.244.3.0/24 oifname != "weft0" ip daddr != 10.244.0.0/16 masquerade comment "net d: outbound NAT"',
      'fib saddr type local ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 oifname != "weft0" snat ip to 10.244.3.1 comment "net d: host traffic to the cluster"',
    ]);
    assert.deepEqual(chainRules(text, 'forward').slice(-2), [
      'ip saddr 10.244.0.0/16 oifname "weft0" accept comment "net d: from the cluster network"',
      'oifname "weft0" drop comment "net d: nothing else enters (isolation)"',
    ]);
    assert.throws(
      () =>
        renderTable({
          networks: [net('d', 'weft0', ['10.1.0.1/24'], { cluster: [parseIPNet('10.244.0.0/16')] })],
        }),
      (e: WeftError) => e.code === 'INVALID' && /contains none/.test(e.message),
    );
  });

  test('every rule carries a comment naming its network (or the whole table), within nft’s 128 characters', () => {
    const text = renderTable({
      networks: [
        net('x'.repeat(32), 'br0', ['10.0.0.0/24', 'fd00:ffff:ffff:ffff::/64'], {
          icc: false,
          endpoints: [
            ep(
              'y'.repeat(32),
              ['10.0.0.2', 'fd00:ffff:ffff:ffff::2'],
              [port('udp', [65000, 65535], [65000, 65535])],
            ),
          ],
        }),
      ],
    });
    for (const chain of ['prerouting', 'output', 'published', 'postrouting', 'forward']) {
      for (const r of chainRules(text, chain)) {
        const m = / comment "([^"]*)"$/.exec(r);
        assert.ok(m, `no comment: ${r}`);
        assert.ok(m[1]!.length <= 128, `comment too long: ${m[1]}`);
      }
    }
  });
});

test('renderRuleUpdate: flushes and refills the six chains, declares none; nothing for no networks', () => {
  const state: FirewallState = {
    networks: [
      net('n1', 'br-n1', ['10.0.0.1/24'], { endpoints: [ep('e1', ['10.0.0.2'], [port('tcp', 8080, 80)])] }),
    ],
  };
  const lines = renderRuleUpdate(state).trim().split('\n');
  assert.deepEqual(lines.slice(0, 6), [
    'flush chain inet weft loopback',
    'flush chain inet weft prerouting',
    'flush chain inet weft output',
    'flush chain inet weft published',
    'flush chain inet weft postrouting',
    'flush chain inet weft forward',
  ]);
  assert.ok(lines.slice(6).every((l) => l.startsWith('add rule inet weft ')));
  assert.ok(
    lines.includes(
      'add rule inet weft published meta nfproto ipv4 tcp dport 8080 dnat ip to 10.0.0.2:80 comment "net n1 ep e1: tcp 8080 -> 80"',
    ),
  );
  assert.ok(!/hook|chain \w+ \{/.test(renderRuleUpdate(state)), 'no chain is declared');
  assert.equal(renderRuleUpdate({ networks: [] }), '');
});

test('renderInsert: only the added rules, each at its place (published ones appended); undefined when a rule went away', () => {
  const n = (ports: number[]) => ({
    networks: [
      net('n1', 'br-n1', ['10.0.0.1/24'], {
        endpoints: ports.map((p) => ep(`e${p}`, [`10.0.0.${p - 8000}`], [port('tcp', p, 80)])),
      }),
    ],
  });
  assert.equal(renderInsert(n([8080]), n([8080])), '', 'the same rules: nothing to send');
  assert.equal(
    renderInsert(n([8080]), n([8080, 8081])),
    'add rule inet weft published meta nfproto ipv4 tcp dport 8081 dnat ip to 10.0.0.81:80 comment "net n1 ep e8081: tcp 8081 -> 80"\n',
  );
  assert.equal(
    renderInsert(n([8081]), n([8080, 8081])),
    'add rule inet weft published meta nfproto ipv4 tcp dport 8080 dnat ip to 10.0.0.80:80 comment "net n1 ep e8080: tcp 8080 -> 80"\n',
  );
  // The first port of a network also adds its hairpin and localhost rules to postrouting.
  const first = renderInsert(n([]), n([8080]))!;
  assert.match(first, /^add rule inet weft published meta nfproto ipv4 tcp dport 8080/m);
  assert.match(first, /^add rule inet weft postrouting index 0 ct status dnat .*hairpin/m);
  assert.equal(renderInsert(n([8080, 8081]), n([8081])), undefined, 'a removal is not an insertion');
  assert.equal(renderInsert({ networks: [] }, n([8080])), undefined, 'no table yet');
});

test('test builders: port() and chainRules()', () => {
  const p = port('udp', [8000, 8010], [8000, 8010], '127.0.0.1');
  assert.equal(p.hostPortEnd, 8010);
  assert.equal(p.containerPortEnd, 8010);
  assert.equal(p.hostIp?.family, 4);
  assert.equal('hostIp' in port('tcp', 1, 2), false);
  assert.deepEqual(
    chainRules('table x {\n\tchain a {\n\t\ttype nat hook output priority 0;\n\t\tr1\n\t}\n}', 'a'),
    ['r1'],
  );
  assert.throws(() => chainRules('', 'a'));
});
