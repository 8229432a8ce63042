import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { type ErrorCode, isWeftError, type WeftError } from '../../lib/errors.js';
import { parseIP, parseIPNet } from '../../lib/ip.js';
import { ep, net, port } from './fixtures.test.js';
import { renderIptables } from './iptables.js';
import { planFirewall } from './plan.js';
import { renderTables, requiredSysctls } from './render.js';
import type { FirewallState, NetworkFw, PortMapping } from './types.js';

/** Asserts that every renderer refuses `state` with `code` and a message matching `re`. */
function refuses(state: FirewallState, code: ErrorCode, re: RegExp): WeftError {
  let caught: WeftError | undefined;
  for (const render of [
    () => renderTables(state),
    () => requiredSysctls(state),
    () => renderIptables(state, { ipv4: '', ipv6: '' }),
  ]) {
    assert.throws(render, (e) => {
      assert.ok(isWeftError(e), `not a WeftError: ${String(e)}`);
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
      caught = e;
      return true;
    });
  }
  return caught!;
}

const one = (p: PortMapping, ips = ['10.0.0.2']): FirewallState => ({
  networks: [net('n1', 'br0', ['10.0.0.0/24', 'fd00::/64'], { endpoints: [ep('e1', ips, [p])] })],
});

describe('validation', () => {
  test('a host port published twice is a CONFLICT naming the owner', () => {
    const e = refuses(
      {
        networks: [
          net('n1', 'br0', ['10.0.0.0/24'], {
            endpoints: [ep('web', ['10.0.0.2'], [port('tcp', 8080, 80)])],
          }),
          net('n2', 'br1', ['10.1.0.0/24'], {
            endpoints: [ep('api', ['10.1.0.2'], [port('tcp', 8080, 8080)])],
          }),
        ],
      },
      'CONFLICT',
      /tcp port 8080 on 0\.0\.0\.0 is already published by network n1 endpoint web .*network n2 endpoint api/,
    );
    assert.deepEqual(e.details.owner, { network: 'n1', endpoint: 'web' });
    assert.deepEqual(e.details.claimant, { network: 'n2', endpoint: 'api' });
  });

  test('overlap rules: any overlaps every address of its family, ranges overlap, proto and family separate', () => {
    const two = (a: PortMapping, b: PortMapping): FirewallState => ({
      networks: [
        net('n1', 'br0', ['10.0.0.0/24', 'fd00::/64'], {
          endpoints: [ep('a', ['10.0.0.2', 'fd00::2'], [a]), ep('b', ['10.0.0.3', 'fd00::3'], [b])],
        }),
      ],
    });
    const clash = [
      [port('tcp', 80, 80, '192.0.2.1'), port('tcp', 80, 80)],
      [port('tcp', 80, 80, '192.0.2.1'), port('tcp', 80, 80, '0.0.0.0')],
      [port('tcp', 80, 80, '127.0.0.1'), port('tcp', 80, 80, '127.0.0.1')],
      [port('udp', [8000, 8010], [8000, 8010]), port('udp', 8010, 53)],
      [port('tcp', 80, 80, 'fd00::1'), port('tcp', 80, 80)],
      [port('tcp', 80, 80, '::'), port('tcp', 80, 80)],
    ] as const;
    for (const [a, b] of clash) refuses(two(a, b), 'CONFLICT', /already published by network n1 endpoint a/);
    const fine = [
      [port('tcp', 80, 80), port('udp', 80, 80)],
      [port('tcp', 80, 80, '192.0.2.1'), port('tcp', 80, 80, '192.0.2.2')],
      [port('tcp', 80, 80, '0.0.0.0'), port('tcp', 80, 80, '::')],
      [port('tcp', 80, 80, '127.0.0.1'), port('tcp', 80, 80, 'fd00::1')],
      [port('udp', [8000, 8010], [8000, 8010]), port('udp', 8011, 53)],
    ] as const;
    for (const [a, b] of fine) assert.ok(renderTables(two(a, b)).length > 0);
    // The same endpoint publishing a port twice is a conflict too.
    refuses(
      {
        networks: [
          net('n1', 'br0', ['10.0.0.0/24'], {
            endpoints: [ep('e1', ['10.0.0.2'], [port('tcp', 80, 80), port('tcp', 80, 81)])],
          }),
        ],
      },
      'CONFLICT',
      /tcp port 80 on 0\.0\.0\.0 is already published by network n1 endpoint e1 .*endpoint e1 cannot/,
    );
  });

  test('bad ports and ranges are INVALID', () => {
    const cases: [PortMapping, RegExp][] = [
      [port('tcp', 0, 80), /host port 0 is out of range \(1-65535\)/],
      [port('tcp', 65536, 80), /host port 65536 is out of range/],
      [port('tcp', 80, 70000), /container port 70000 is out of range/],
      [port('tcp', 80.5, 80), /host port 80.5 is out of range/],
      [port('tcp', [90, 80], [90, 80]), /host port range 90-80 ends before it starts/],
      [port('tcp', [80, 90], [80, 85]), /host ports 80-90 and container ports 80-85 differ in length/],
      [port('tcp', 80, [80, 81]), /host ports 80 and container ports 80-81 differ in length/],
      [port('tcp', [80, 81], 80), /differ in length/],
      [port('tcp', [80, 65536], [80, 65536]), /host port range end 65536 is out of range/],
      [{ ...port('tcp', 80, 80), proto: 'sctp' as 'tcp' }, /protocol "sctp" is not tcp or udp/],
      [port('tcp', 80, 80, 'fd00::1'), /host address fd00::1 is IPv6 but the endpoint has no IPv6 address/],
    ];
    for (const [p, re] of cases) {
      const e = refuses(one(p), 'INVALID', re);
      assert.match(e.message, /^network n1 endpoint e1 port mapping 1: /);
    }
    refuses(one(port('tcp', 80, 80), []), 'INVALID', /the endpoint has no address to publish to/);
    refuses(one(port('tcp', 80, 80, '::1'), ['10.0.0.2', 'fd00::2']), 'UNSUPPORTED', /::1/);
  });

  test('bad names, ids, subnets and addresses are INVALID; clashes between objects are CONFLICT', () => {
    const n = (o: Partial<NetworkFw>) => ({ networks: [net('n1', 'br0', ['10.0.0.0/24'], o)] });
    refuses(n({ bridge: 'x'.repeat(16) }), 'INVALID', /bridge name "x{16}" is too long/);
    refuses(n({ bridge: '' }), 'INVALID', /must not be empty/);
    refuses(n({ bridge: 'br 0' }), 'INVALID', /contains a character/);
    refuses(n({ bridge: 'br"0' }), 'INVALID', /characters weft does not put into firewall rules/);
    refuses(n({ bridge: 'br*' }), 'INVALID', /characters weft does not put into firewall rules/);
    refuses(n({ id: 'N1' }), 'INVALID', /network id "N1" is invalid/);
    refuses(n({ id: 'a'.repeat(33) }), 'INVALID', /network id "a{33}" is invalid/);
    refuses(
      n({ endpoints: [ep('e_1', ['10.0.0.2'])] }),
      'INVALID',
      /network n1 endpoint id "e_1" is invalid/,
    );
    refuses(n({ subnets: [parseIPNet('0.0.0.0/0')] }), 'INVALID', /covers every address/);
    refuses(n({ subnets: [parseIPNet('127.1.0.0/16')] }), 'INVALID', /overlaps the loopback range/);
    refuses(n({ subnets: [{ ip: parseIP('10.0.0.0'), len: 33 }] }), 'INVALID', /malformed subnet/);
    refuses(
      n({ endpoints: [ep('e1', ['10.9.0.2'])] }),
      'INVALID',
      /address 10\.9\.0\.2 is outside the network's subnets/,
    );
    refuses(n({ hostIps: [parseIP('192.0.2.1')], masquerade: false }), 'INVALID', /need masquerade/);
    refuses(n({ hostIps: [parseIP('192.0.2.1'), parseIP('192.0.2.2')] }), 'INVALID', /more than one IPv4/);
    refuses(n({ hostIps: [parseIP('0.0.0.0')] }), 'INVALID', /cannot be a source address/);
    refuses({ networks: null } as unknown as FirewallState, 'INVALID', /no networks list/);

    refuses(
      n({ endpoints: [ep('e1', ['10.0.0.2']), ep('e1', ['10.0.0.3'])] }),
      'CONFLICT',
      /two endpoints with id e1/,
    );
    refuses(
      n({ endpoints: [ep('e1', ['10.0.0.2']), ep('e2', ['10.0.0.2'])] }),
      'CONFLICT',
      /address 10\.0\.0\.2 of endpoint e2 is already used by endpoint e1/,
    );
    refuses(
      { networks: [net('n1', 'br0', ['10.0.0.0/24']), net('n1', 'br1', ['10.1.0.0/24'])] },
      'CONFLICT',
      /two networks have the id n1/,
    );
    refuses(
      { networks: [net('n1', 'br0', ['10.0.0.0/24']), net('n2', 'br0', ['10.1.0.0/24'])] },
      'CONFLICT',
      /networks n1 and n2 both use bridge br0/,
    );
    refuses(
      { networks: [net('n1', 'br0', ['10.0.0.0/16']), net('n2', 'br1', ['10.0.5.0/24'])] },
      'CONFLICT',
      /subnet 10\.0\.5\.0\/24 of network n2 overlaps 10\.0\.0\.0\/16 of network n1/,
    );
  });

  test('normal form: host bits cleared, first address of each family is the target, 0.0.0.0 means any IPv4', () => {
    const plan = planFirewall({
      networks: [
        net('n1', 'br0', ['10.0.0.1/24', 'fd00::1/64'], {
          internal: true,
          endpoints: [
            ep(
              'e1',
              ['10.0.0.2', '10.0.0.9', 'fd00::2'],
              [port('tcp', 80, 80), port('udp', 53, 53, '0.0.0.0')],
            ),
          ],
        }),
      ],
    });
    const n = plan.networks[0]!;
    assert.deepEqual(n.subnets, [parseIPNet('10.0.0.0/24'), parseIPNet('fd00::/64')]);
    assert.equal(n.outboundNat, false, 'internal wins over masquerade');
    assert.deepEqual(
      n.ports.map((p) => [p.family, p.proto, p.hostIp, p.target]),
      [
        [4, 'tcp', undefined, parseIP('10.0.0.2')],
        [6, 'tcp', undefined, parseIP('fd00::2')],
        [4, 'udp', undefined, parseIP('10.0.0.2')],
      ],
    );
  });
});

// ---- properties ------------------------------------------------------------------------------

/** Random valid states: distinct ids, bridges, subnets and addresses; host ports unique per proto. */
const validState = fc
  .record({
    nets: fc.array(
      fc.record({
        v4: fc.boolean(),
        v6: fc.boolean(),
        masquerade: fc.boolean(),
        internal: fc.boolean(),
        icc: fc.boolean(),
        endpoints: fc.array(
          fc.array(
            fc.record({
              proto: fc.constantFrom('tcp' as const, 'udp' as const),
              len: fc.integer({ min: 0, max: 20 }),
              shift: fc.integer({ min: -5, max: 5 }),
              bind: fc.constantFrom('any', 'any4', 'lo', 'ip'),
            }),
            { maxLength: 3 },
          ),
          { maxLength: 4 },
        ),
      }),
      { minLength: 1, maxLength: 4 },
    ),
  })
  .map(({ nets }): FirewallState => {
    let nextPort = 1000;
    return {
      networks: nets.map((n, i) => {
        const subnets = [...(n.v4 || !n.v6 ? [`10.${i}.0.0/24`] : []), ...(n.v6 ? [`fd00:${i}::/64`] : [])];
        const v4 = subnets.some((s) => s.startsWith('10.'));
        return net(`n${i}`, `br-${i}`, subnets, {
          masquerade: n.masquerade,
          internal: n.internal,
          icc: n.icc,
          endpoints: n.endpoints.map((ports, j) =>
            ep(
              `e${j}`,
              [...(v4 ? [`10.${i}.0.${j + 2}`] : []), ...(n.v6 ? [`fd00:${i}::${j + 2}`] : [])],
              ports.map((p) => {
                const start = nextPort;
                nextPort += p.len + 1;
                const cs = Math.max(1, start + p.shift);
                const hostIp =
                  p.bind === 'any'
                    ? undefined
                    : p.bind === 'any4' && v4
                      ? '0.0.0.0'
                      : p.bind === 'lo' && v4
                        ? '127.0.0.1'
                        : p.bind === 'ip'
                          ? v4
                            ? '192.0.2.1'
                            : '2001:db8::1'
                          : undefined;
                return port(p.proto, [start, start + p.len], [cs, cs + p.len], hostIp);
              }),
            ),
          ),
        });
      }),
    };
  });

describe('properties', () => {
  test('valid states render deterministically; every rule names its network; ids and bridges only in quotes', () => {
    fc.assert(
      fc.property(validState, (state) => {
        const text = renderTables(state);
        assert.equal(renderTables(state), text);
        assert.ok(text.startsWith('table inet weft\ndelete table inet weft\ntable inet weft {\n'));
        for (const line of text.split('\n')) {
          const m = / comment "([^"]*)"$/.exec(line);
          if (line.startsWith('\t\t') && !line.startsWith('\t\ttype ')) {
            assert.ok(m, `rule without comment: ${line}`);
            assert.ok(m[1]!.length <= 128);
          }
        }
        for (const n of state.networks) {
          assert.ok(text.includes(`oifname "${n.bridge}" drop comment "net ${n.id}: `), `${n.id} isolated`);
          assert.equal(text.includes(`net ${n.id}: outbound NAT`), n.masquerade && !n.internal);
          const ports = n.endpoints.reduce((a, e) => a + e.ports.length, 0);
          const dnats = text
            .split('\n')
            .filter((l) => l.includes('dnat') && l.includes(`comment "net ${n.id} ep `));
          assert.ok(dnats.length >= ports, 'at least one DNAT per mapping');
        }
      }),
      { numRuns: 200 },
    );
  });

  test('publishing any existing mapping again from another endpoint is a CONFLICT', () => {
    fc.assert(
      fc.property(
        validState.filter((s) => s.networks.some((n) => n.endpoints.some((e) => e.ports.length > 0))),
        fc.nat(),
        (state, pick) => {
          const all = state.networks.flatMap((n) =>
            n.endpoints.flatMap((e) => e.ports.map((p) => ({ n, e, p }))),
          );
          const { n, e, p } = all[pick % all.length]!;
          const thief = ep(
            'thief',
            e.ips.map((ip) => (ip.family === 4 ? '10.200.0.2' : 'fd00:200::2')),
            [p],
          );
          const stolen: FirewallState = {
            networks: [
              ...state.networks,
              net(
                'thief',
                'br-thief',
                [
                  ...(e.ips.some((ip) => ip.family === 4) ? ['10.200.0.0/24'] : []),
                  ...(e.ips.some((ip) => ip.family === 6) ? ['fd00:200::/64'] : []),
                ],
                { endpoints: [thief] },
              ),
            ],
          };
          assert.throws(
            () => renderTables(stolen),
            (err) =>
              isWeftError(err, 'CONFLICT') &&
              (err.details.owner as { network: string }).network === n.id &&
              (err.details.claimant as { network: string }).network === 'thief',
          );
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('endpoints reused across states (the daemon hands unchanged ones again)', () => {
  test('a reused endpoint plans the same, and is checked again against a network it moved to', () => {
    const e1 = ep('e1', ['10.0.0.2'], [port('tcp', 8080, 80)]);
    const a: FirewallState = { networks: [net('n1', 'br0', ['10.0.0.0/24'], { endpoints: [e1] })] };
    const b: FirewallState = { networks: [net('n1', 'br0', ['10.0.0.0/24'], { endpoints: [e1] })] };
    assert.equal(renderTables(a), renderTables(b));
    assert.deepEqual(planFirewall(a), planFirewall(b));
    // The same object in a network whose subnet does not hold its address: INVALID again.
    refuses(
      { networks: [net('n1', 'br0', ['10.9.0.0/24'], { endpoints: [e1] })] },
      'INVALID',
      /endpoint e1: address 10\.0\.0\.2 is outside the network's subnets/,
    );
    // ...and in another network id its rules name that network.
    const c: FirewallState = { networks: [net('n2', 'br0', ['10.0.0.0/24'], { endpoints: [e1] })] };
    assert.match(renderTables(c), /net n2 ep e1/);
    assert.doesNotMatch(renderTables(c), /net n1 /);
  });

  test('clashes between a reused endpoint and a new one are still found', () => {
    const e1 = ep('e1', ['10.0.0.2'], [port('tcp', 8080, 80)]);
    const state = (...eps: ReturnType<typeof ep>[]): FirewallState => ({
      networks: [net('n1', 'br0', ['10.0.0.0/24'], { endpoints: eps })],
    });
    assert.ok(renderTables(state(e1)).length > 0);
    refuses(
      state(e1, ep('e2', ['10.0.0.2'], [])),
      'CONFLICT',
      /address 10\.0\.0\.2 of endpoint e2 is already used by endpoint e1/,
    );
    refuses(
      state(e1, ep('e2', ['10.0.0.3'], [port('tcp', 8080, 81)])),
      'CONFLICT',
      /tcp port 8080 .* already published by network n1 endpoint e1/,
    );
    refuses(state(e1, e1), 'CONFLICT', /two endpoints with id e1/);
  });
});
