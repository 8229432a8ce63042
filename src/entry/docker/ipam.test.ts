import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { isWeftError } from '../../lib/errors.js';
import { type IPNet, parseCidr } from '../../lib/ip.js';
import { DockerIpam, type DockerIpamOptions } from './ipam.js';

const GW = { RequestAddressType: 'com.docker.network.gateway' };
const pool = (Pool: string, extra: { SubPool?: string; V6?: boolean; AddressSpace?: string } = {}) => ({
  AddressSpace: extra.AddressSpace ?? 'weft-local',
  Pool,
  SubPool: extra.SubPool ?? '',
  Options: {},
  V6: extra.V6 ?? false,
});
const addr = (PoolID: string, Address = '', Options: Record<string, string> = {}) => ({
  PoolID,
  Address,
  Options,
});
const code = (c: string) => (e: unknown) => isWeftError(e) && e.code === c;

function setup(o: { nets?: { name: string; subnet: IPNet }[]; routes?: IPNet[] } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-dipam-'));
  const opts: DockerIpamOptions = {
    file: path.join(dir, 'state', 'docker-ipam.json'),
    networks: () => o.nets ?? [],
    routes: () => o.routes ?? [],
  };
  return {
    dir,
    opts,
    ipam: DockerIpam.open(opts),
    done: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

describe('docker IPAM', () => {
  test('handshake: capabilities and weft’s address spaces', (t) => {
    const s = setup();
    t.after(s.done);
    assert.deepEqual(s.ipam.capabilities(), { RequiresMACAddress: false, RequiresRequestReplay: false });
    assert.deepEqual(s.ipam.addressSpaces(), {
      LocalDefaultAddressSpace: 'weft-local',
      GlobalDefaultAddressSpace: 'weft-global',
    });
  });

  test('the sequence of `docker network create --subnet` and two containers', (t) => {
    const s = setup();
    t.after(s.done);
    const p = s.ipam.requestPool(pool('10.99.0.0/24'));
    assert.deepEqual(p, { PoolID: 'weft-local/10.99.0.0/24', Pool: '10.99.0.0/24', Data: {} });
    assert.equal(s.ipam.requestAddress(addr(p.PoolID, '', GW)).Address, '10.99.0.1/24');
    assert.equal(s.ipam.requestAddress(addr(p.PoolID)).Address, '10.99.0.2/24');
    assert.equal(s.ipam.requestAddress(addr(p.PoolID)).Address, '10.99.0.3/24');
    assert.equal(s.ipam.requestAddress(addr(p.PoolID, '10.99.0.50')).Address, '10.99.0.50/24');
    // Released addresses are not reused at once (round robin).
    s.ipam.releaseAddress({ PoolID: p.PoolID, Address: '10.99.0.2' });
    assert.equal(s.ipam.requestAddress(addr(p.PoolID)).Address, '10.99.0.4/24');
    assert.deepEqual(Object.keys(s.ipam.pools()[0]!.addresses).sort(), [
      '10.99.0.1',
      '10.99.0.3',
      '10.99.0.4',
      '10.99.0.50',
    ]);
    // Teardown: gateway, pool.
    s.ipam.releaseAddress({ PoolID: p.PoolID, Address: '10.99.0.1' });
    assert.equal(s.ipam.pools()[0]!.gateway, undefined);
    s.ipam.releasePool({ PoolID: p.PoolID });
    assert.deepEqual(s.ipam.pools(), []);
  });

  test('an explicit gateway, a SubPool bounds dynamic addresses', (t) => {
    const s = setup();
    t.after(s.done);
    const p = s.ipam.requestPool(pool('10.98.0.0/24', { SubPool: '10.98.0.128/25' }));
    assert.equal(p.PoolID, 'weft-local/10.98.0.0/24/10.98.0.128/25');
    assert.equal(s.ipam.requestAddress(addr(p.PoolID, '10.98.0.254', GW)).Address, '10.98.0.254/24');
    assert.equal(s.ipam.requestAddress(addr(p.PoolID)).Address, '10.98.0.128/24');
    // A requested address may lie outside the SubPool (Docker's rule), never on the gateway.
    assert.equal(s.ipam.requestAddress(addr(p.PoolID, '10.98.0.5')).Address, '10.98.0.5/24');
    assert.throws(() => s.ipam.requestAddress(addr(p.PoolID, '10.98.0.254')), code('CONFLICT'));
  });

  test('two requests never get one address; bad and foreign addresses are refused', (t) => {
    const s = setup();
    t.after(s.done);
    const { PoolID } = s.ipam.requestPool(pool('10.97.0.0/29'));
    s.ipam.requestAddress(addr(PoolID, '', GW));
    assert.equal(s.ipam.requestAddress(addr(PoolID, '10.97.0.3')).Address, '10.97.0.3/29');
    assert.throws(() => s.ipam.requestAddress(addr(PoolID, '10.97.0.3')), code('CONFLICT'));
    assert.throws(() => s.ipam.requestAddress(addr(PoolID, '10.97.1.3')), code('INVALID'));
    assert.throws(() => s.ipam.requestAddress(addr(PoolID, '10.97.0.7')), code('INVALID')); // broadcast
    assert.throws(() => s.ipam.requestAddress(addr(PoolID, 'ten')), code('INVALID'));
    assert.throws(() => s.ipam.requestAddress(addr('weft-local/10.1.0.0/24')), code('NOT_FOUND'));
    const got = new Set<string>();
    for (let i = 0; i < 4; i++) got.add(s.ipam.requestAddress(addr(PoolID)).Address);
    assert.equal(got.size, 4);
    assert.ok(!got.has('10.97.0.3/29') && !got.has('10.97.0.1/29'));
    assert.throws(() => s.ipam.requestAddress(addr(PoolID)), code('BUSY'));
  });

  test('pools: one asked for again, or overlapping, is CONFLICT (Docker too); bad input INVALID', (t) => {
    const s = setup({ nets: [{ name: 'front', subnet: parseCidr('10.50.0.0/24') }] });
    t.after(s.done);
    const a = s.ipam.requestPool(pool('10.99.0.0/24'));
    const gw = s.ipam.requestAddress(
      addr(a.PoolID, '', { RequestAddressType: 'com.docker.network.gateway' }),
    );
    assert.throws(() => s.ipam.requestPool(pool('10.99.0.0/24')), code('CONFLICT'));
    assert.equal(s.ipam.pools().length, 1);
    assert.deepEqual(
      Object.keys(s.ipam.pools()[0]!.addresses),
      [gw.Address.split('/')[0]],
      'its gateway kept',
    );
    assert.throws(() => s.ipam.requestPool(pool('10.99.0.0/16')), code('CONFLICT'));
    assert.throws(
      () => s.ipam.requestPool(pool('10.50.0.128/25')),
      (e) => code('CONFLICT')(e) && /front/.test((e as Error).message),
    );
    assert.throws(() => s.ipam.requestPool(pool('10.60.0.1/24')), code('INVALID')); // host bits
    assert.throws(() => s.ipam.requestPool(pool('', { SubPool: '10.1.0.0/25' })), code('INVALID'));
    assert.throws(() => s.ipam.requestPool(pool('10.61.0.0/24', { AddressSpace: 'other' })), code('INVALID'));
    assert.throws(() => s.ipam.requestPool(pool('10.62.0.0/24', { V6: true })), code('INVALID'));
    // Releasing what is unknown is fine (Docker may repeat a teardown).
    assert.deepEqual(s.ipam.releasePool({ PoolID: 'weft-local/10.1.0.0/24' }), {});
    assert.deepEqual(s.ipam.releaseAddress({ PoolID: 'weft-local/10.1.0.0/24', Address: '10.1.0.2' }), {});
  });

  test('a pool left to the plugin skips weft networks, its own pools and host routes', (t) => {
    const s = setup({
      nets: [{ name: 'front', subnet: parseCidr('172.18.0.0/16') }],
      routes: [parseCidr('172.19.0.0/16'), parseCidr('0.0.0.0/0')],
    });
    t.after(s.done);
    assert.equal(s.ipam.requestPool(pool('')).Pool, '172.20.0.0/16');
    assert.equal(s.ipam.requestPool(pool('')).Pool, '172.21.0.0/16');
    assert.throws(() => s.ipam.requestPool(pool('', { V6: true })), code('BUSY'));
  });

  test('the state survives a restart: reservations and the round-robin cursor', (t) => {
    const s = setup();
    t.after(s.done);
    const { PoolID } = s.ipam.requestPool(pool('10.99.0.0/24'));
    s.ipam.requestAddress(addr(PoolID, '', GW));
    s.ipam.requestAddress(addr(PoolID));
    s.ipam.requestAddress(addr(PoolID));
    const again = DockerIpam.open(s.opts);
    assert.deepEqual(again.pools(), s.ipam.pools());
    assert.equal(again.requestAddress(addr(PoolID)).Address, '10.99.0.4/24');
    assert.throws(() => again.requestPool(pool('10.99.0.128/25')), code('CONFLICT'));
    // The file is whole JSON, no temp file is left.
    assert.deepEqual(fs.readdirSync(path.dirname(s.opts.file)), ['docker-ipam.json']);
  });

  test('a change that cannot be written is not made; a damaged file fails loudly', (t) => {
    const s = setup();
    t.after(s.done);
    // The state dir turns into a file under the plugin's feet: the write fails.
    fs.writeFileSync(path.join(s.dir, 'state'), '');
    const broken = s.ipam;
    assert.throws(() => broken.requestPool(pool('10.99.0.0/24')));
    assert.deepEqual(broken.pools(), []);
    fs.rmSync(path.join(s.dir, 'state'));
    fs.mkdirSync(path.dirname(s.opts.file), { recursive: true });
    fs.writeFileSync(s.opts.file, '{"version": 1, "pools": [{"pool": "nonsense"}]}');
    assert.throws(
      () => DockerIpam.open(s.opts),
      (e) => code('INTERNAL')(e) && /damaged/.test((e as Error).message),
    );
  });
});
