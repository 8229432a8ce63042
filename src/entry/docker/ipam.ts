/**
 * The Docker IPAM driver: address pools and the addresses reserved in them, for networks made
 * with `docker network create --ipam-driver weft`.
 *
 * Docker asks for a pool (RequestPool), then for the network's gateway (RequestAddress with
 * `RequestAddressType: com.docker.network.gateway`), then for one address per endpoint; it
 * releases them in reverse. It never replays these after a restart of itself or of the plugin,
 * so the plugin keeps its own record: one JSON file under the daemon's state dir, loaded at
 * start and rewritten atomically (temp file, fsync, rename) on every change, before the answer
 * goes out. A change that cannot be written is not made.
 *
 * A pool given by the user must not overlap another pool of the plugin nor a weft network; a
 * pool left to the plugin is picked like weft picks subnets (Docker's default address pools,
 * skipping every weft network, every pool of the plugin and every prefix routed on the host).
 * Addresses are handed out by weft's own allocator (round-robin over the pool, or its SubPool)
 * and recorded, so two requests never get one address. A pool asked for again is CONFLICT, as
 * Docker's own IPAM answers (ErrPoolOverlap): two networks sharing one pool would share its
 * addresses, and the second one's teardown would release the first one's gateway. (`refs` stays
 * in the record for files written when identical requests shared a pool.)
 *
 * All methods are synchronous: each runs to completion between two requests, which is what
 * makes a reservation atomic in one Node process.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import {
  type Allocation,
  allocate,
  canonicalSubnet,
  checkSubnetFree,
  type InUseNet,
  type IpamStore,
  type Pool,
  pickSubnet,
} from '../../control/ipam/index.js';
import { conflict, invalid, notFound, WeftError } from '../../lib/errors.js';
import {
  type Family,
  formatIP,
  formatIPNet,
  type IPNet,
  parseCidr,
  parseIP,
  tryParseIP,
} from '../../lib/ip.js';
import { type Logger, nullLogger } from '../../lib/log.js';
import { writeAtomic } from '../../lib/paths.js';
import {
  GLOBAL_ADDRESS_SPACE,
  Label,
  LOCAL_ADDRESS_SPACE,
  type ReleaseAddressRequest,
  type RequestAddressRequest,
  type RequestPoolRequest,
} from './protocol.js';

/** One pool as persisted. `addresses` maps each reserved address to who holds it. */
export interface PoolRecord {
  readonly id: string;
  readonly addressSpace: string;
  readonly pool: string;
  readonly subPool?: string;
  readonly refs: number;
  readonly gateway?: string;
  readonly addresses: Readonly<Record<string, string>>;
  readonly last?: string;
}

export interface IpamFile {
  readonly version: 1;
  readonly pools: readonly PoolRecord[];
}

export interface DockerIpamOptions {
  /** The JSON file (created on first change). */
  readonly file: string;
  /** The weft networks that exist (their subnets are never handed out as pools). */
  readonly networks: () => readonly InUseNet[];
  /** Prefixes routed on the host, of one family (avoided when picking a pool). */
  readonly routes: (family: Family) => readonly IPNet[];
  readonly log?: Logger;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type Draft = Mutable<Omit<PoolRecord, 'addresses'>> & { addresses: Record<string, string> };

const GATEWAY_OWNER = 'gateway';

export class DockerIpam {
  readonly #o: DockerIpamOptions;
  readonly #log: Logger;
  #pools: Map<string, PoolRecord>;

  private constructor(o: DockerIpamOptions, pools: readonly PoolRecord[]) {
    this.#o = o;
    this.#log = o.log ?? nullLogger;
    this.#pools = new Map(pools.map((p) => [p.id, p]));
  }

  /**
   * Load the plugin's IPAM state (none yet: empty).
   * Throws INTERNAL when the file exists but cannot be read or is not this plugin's format.
   */
  static open(o: DockerIpamOptions): DockerIpam {
    let text: string;
    try {
      text = fs.readFileSync(o.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new DockerIpam(o, []);
      throw new WeftError(
        'INTERNAL',
        `cannot read the Docker IPAM state ${o.file}: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
    let parsed: IpamFile;
    try {
      parsed = JSON.parse(text) as IpamFile;
      if (parsed.version !== 1 || !Array.isArray(parsed.pools)) throw new Error('unknown format');
      for (const p of parsed.pools) {
        parseCidr(p.pool);
        if (typeof p.id !== 'string' || typeof p.addresses !== 'object') throw new Error(`bad pool ${p.id}`);
      }
    } catch (e) {
      throw new WeftError(
        'INTERNAL',
        `the Docker IPAM state ${o.file} is damaged (${(e as Error).message}); move it away to start afresh`,
        { cause: e },
      );
    }
    return new DockerIpam(o, parsed.pools);
  }

  /** The pools as they are now (for inspection and tests). */
  pools(): PoolRecord[] {
    return [...this.#pools.values()];
  }

  capabilities(): { RequiresMACAddress: boolean; RequiresRequestReplay: boolean } {
    return { RequiresMACAddress: false, RequiresRequestReplay: false };
  }

  addressSpaces(): { LocalDefaultAddressSpace: string; GlobalDefaultAddressSpace: string } {
    return { LocalDefaultAddressSpace: LOCAL_ADDRESS_SPACE, GlobalDefaultAddressSpace: GLOBAL_ADDRESS_SPACE };
  }

  /**
   * Register a pool: the given one, or a free one of the family asked.
   * Throws INVALID (unknown address space, a SubPool without Pool, a malformed pool or sub-pool),
   * CONFLICT (the pool overlaps another pool or a weft network), BUSY (no free pool left).
   */
  requestPool(req: RequestPoolRequest): { PoolID: string; Pool: string; Data: Record<string, string> } {
    const space = req.AddressSpace || LOCAL_ADDRESS_SPACE;
    if (space !== LOCAL_ADDRESS_SPACE && space !== GLOBAL_ADDRESS_SPACE) {
      throw invalid(
        `address space "${space}" is not weft's (${LOCAL_ADDRESS_SPACE} or ${GLOBAL_ADDRESS_SPACE})`,
        { addressSpace: space },
      );
    }
    if (req.Pool === '' && req.SubPool !== '') throw invalid('a SubPool needs a Pool');
    let subnet: IPNet;
    let subPool: string | undefined;
    if (req.Pool !== '') {
      const c = canonicalSubnet({ subnet: req.Pool, ...(req.SubPool !== '' && { ipRange: req.SubPool }) });
      if (req.V6 && c.family !== 6) throw invalid(`V6 is set but pool ${req.Pool} is IPv4`);
      subnet = c.subnet;
      if (c.ipRange !== undefined) subPool = formatIPNet(c.ipRange);
    } else {
      const family: Family = req.V6 ? 6 : 4;
      subnet = pickSubnet({
        family,
        inUse: this.#inUse(),
        avoid: [...this.#o.routes(family)],
      });
    }
    const pool = formatIPNet(subnet);
    const id = `${space}/${pool}${subPool === undefined ? '' : `/${subPool}`}`;
    if (this.#pools.has(id)) {
      throw conflict(`pool ${pool} is already the pool of a docker network`, { pool: id });
    }
    if (req.Pool !== '') checkSubnetFree(subnet, this.#inUse());
    this.#commit([
      { id, addressSpace: space, pool, ...(subPool !== undefined && { subPool }), refs: 1, addresses: {} },
    ]);
    this.#log.info('docker pool registered', { pool: id });
    return { PoolID: id, Pool: pool, Data: {} };
  }

  /** Drop a reference to a pool; the last one forgets it with its addresses. Unknown: nothing to do. */
  releasePool(req: { PoolID: string }): Record<string, never> {
    const p = this.#pools.get(req.PoolID);
    if (!p) {
      this.#log.warn('release of an unknown docker pool', { pool: req.PoolID });
      return {};
    }
    if (p.refs > 1) this.#commit([{ ...p, refs: p.refs - 1 }]);
    else {
      this.#commit([], [p.id]);
      this.#log.info('docker pool released', { pool: p.id });
    }
    return {};
  }

  /**
   * Reserve an address of a pool: the gateway (Docker's gateway request: the given address or
   * the pool's first), the requested address, or the next free one. Returns it in CIDR form.
   * Throws NOT_FOUND (unknown pool), INVALID (not an address, outside the pool, reserved),
   * CONFLICT (held by someone else), BUSY (the pool is full).
   */
  requestAddress(req: RequestAddressRequest): { Address: string; Data: Record<string, string> } {
    const p = this.#pool(req.PoolID);
    const draft: Draft = { ...p, addresses: { ...p.addresses } };
    const wanted = req.Address === '' ? undefined : tryParseIP(req.Address);
    if (req.Address !== '' && wanted === undefined)
      throw invalid(`Address "${req.Address}" is not an IP address`, { address: req.Address });
    const len = parseCidr(p.pool).len;
    let ip: string;
    if (req.Options[Label.requestAddressType] === Label.gatewayAddress) {
      // canonicalSubnet checks the gateway: inside the pool, not a reserved address.
      const c = canonicalSubnet({ subnet: p.pool, ...(wanted !== undefined && { gateway: wanted }) });
      ip = formatIP(c.gateway);
      const holder = draft.addresses[ip];
      if (holder !== undefined && holder !== GATEWAY_OWNER)
        throw conflict(`gateway ${ip} is already reserved in pool ${p.pool}`, { address: ip });
      draft.addresses[ip] = GATEWAY_OWNER;
      draft.gateway = ip;
    } else {
      const pool: Pool = {
        id: p.id,
        ...canonicalSubnet({
          subnet: p.pool,
          ...(p.gateway !== undefined && { gateway: p.gateway }),
          ...(p.subPool !== undefined && { ipRange: p.subPool }),
        }),
      };
      const got = allocate(pool, draftStore(draft), {
        owner: `ep-${randomBytes(6).toString('hex')}`,
        request: wanted,
      });
      ip = formatIP(got);
    }
    this.#commit([draft]);
    return { Address: `${ip}/${len}`, Data: {} };
  }

  /** Give an address back. Unknown pool or address: nothing to do. Throws INVALID for a non-address. */
  releaseAddress(req: ReleaseAddressRequest): Record<string, never> {
    const ip = tryParseIP(req.Address.split('/')[0] ?? '');
    if (ip === undefined) throw invalid(`Address "${req.Address}" is not an IP address`);
    const p = this.#pools.get(req.PoolID);
    if (!p) {
      this.#log.warn('address release in an unknown docker pool', { pool: req.PoolID, address: req.Address });
      return {};
    }
    const key = formatIP(ip);
    if (p.addresses[key] === undefined) return {};
    const { [key]: _gone, ...rest } = p.addresses;
    const next: Draft = { ...p, addresses: rest };
    if (p.gateway === key) delete next.gateway;
    this.#commit([next]);
    return {};
  }

  #pool(id: string): PoolRecord {
    const p = this.#pools.get(id);
    if (!p) throw notFound(`pool "${id}" is not known to weft's IPAM`, { pool: id });
    return p;
  }

  #inUse(): InUseNet[] {
    return [
      ...this.#o.networks(),
      ...[...this.#pools.values()].map((p) => ({ name: `docker pool ${p.id}`, subnet: parseCidr(p.pool) })),
    ];
  }

  /** Write the state with `put` replaced and `drop` removed, then make it current. */
  #commit(put: readonly PoolRecord[], drop: readonly string[] = []): void {
    const next = new Map(this.#pools);
    for (const id of drop) next.delete(id);
    for (const p of put) next.set(p.id, p);
    writeAtomic(
      this.#o.file,
      `${JSON.stringify({ version: 1, pools: [...next.values()] } satisfies IpamFile, null, 1)}\n`,
      0o600,
    );
    this.#pools = next;
  }
}

/** The allocator's store over a draft pool record. */
function draftStore(d: Draft): IpamStore {
  return {
    *allocated(): Iterable<Allocation> {
      for (const [ip, owner] of Object.entries(d.addresses)) yield { ip: parseIP(ip), owner };
    },
    lastAllocated: () => (d.last === undefined ? undefined : parseIP(d.last)),
    add: (_id, a) => {
      d.addresses[formatIP(a.ip)] = a.owner;
    },
    setLastAllocated: (_id, ip) => {
      d.last = formatIP(ip);
    },
    remove: (_id, ip) => {
      delete d.addresses[formatIP(ip)];
    },
  };
}
