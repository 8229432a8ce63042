/**
 * Links of one namespace: list, get, add, delete, change (up/down, MTU, MAC, master, namespace,
 * name, bridge-port options) and the idempotent `ensure`. Callers name links; indexes are
 * resolved here. Every method is synchronous: rtnetlink answers inside the syscall.
 */
import { KernelError, notFound, WeftError } from '../lib/errors.js';
import { formatIP, type IPAddr } from '../lib/ip.js';
import { checkIfName } from '../lib/names.js';
import { type Attr, a, isMac, NLA_F_NESTED } from '../netlink/attr.js';
import { AF, IFF, IFLA, IFLA_BRPORT, NLM_F, RTM } from '../netlink/consts.js';
import {
  blankIfInfo,
  decodeLink,
  encodeNewLink,
  type Link,
  type MacvlanMode,
  type NewLink,
} from '../netlink/link.js';
import { decodeBody, ifinfomsg } from '../netlink/message.js';
import { close, dup } from './libc.js';
import type { Netns } from './netns.js';
import type { NetlinkSocket } from './rtnl.js';

interface Common {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string;
  /** Name of the bridge to enslave the new link to. */
  readonly master?: string;
  readonly txQueueLen?: number;
  readonly up?: boolean;
  /** Create the link directly in this namespace instead of the handle's. */
  readonly netns?: Netns;
}

/** What to create. Like NewLink, but with names and namespace handles instead of indexes and fds. */
export type LinkSpec =
  | (Common & {
      readonly kind: 'bridge';
      readonly vlanFiltering?: boolean;
      readonly stp?: boolean;
      readonly ageingTime?: number;
      readonly mcastSnooping?: boolean;
    })
  | (Common & {
      readonly kind: 'veth';
      readonly peer: {
        readonly name: string;
        readonly netns?: Netns;
        readonly mtu?: number;
        readonly mac?: string;
      };
    })
  | (Common & {
      readonly kind: 'vxlan';
      readonly vni: number;
      readonly local?: IPAddr;
      readonly group?: IPAddr;
      /** Underlay device name the VTEP is bound to. */
      readonly dev?: string;
      readonly port?: number;
      readonly learning?: boolean;
      readonly proxy?: boolean;
      readonly ttl?: number;
      readonly udpCsum?: boolean;
    })
  | (Common & { readonly kind: 'macvlan'; readonly parent: string; readonly mode?: MacvlanMode })
  | (Common & { readonly kind: 'dummy' });

const ENODEV_CODES = new Set(['NOT_FOUND']);

/** A request body naming the link (index 0: the kernel finds it by IFLA_IFNAME). */
const byName = (name: string) => ({ header: blankIfInfo(), attrs: [a.str(IFLA.IFNAME, name)] });

/** A deletion's error: rethrown unless the link is already gone and need not exist. */
function unlessGone(e: unknown, opts: { mustExist?: boolean }): void {
  if (e instanceof KernelError && e.code === 'NOT_FOUND' && !opts.mustExist) return;
  throw e;
}

/** A creation's error: EXISTS named for the link (and a veth's peer), anything else as it is. */
function existsError(spec: LinkSpec, e: unknown): unknown {
  if (e instanceof KernelError && e.code === 'EXISTS') {
    const peer = spec.kind === 'veth' ? ` (or its peer "${spec.peer.name}")` : '';
    return new WeftError('EXISTS', `link "${spec.name}"${peer} already exists`, {
      cause: e,
      details: { link: spec.name },
    });
  }
  return e;
}

export class Links {
  constructor(
    private readonly ns: Netns,
    private readonly sock: () => NetlinkSocket,
  ) {}

  /** Every link of the namespace. */
  list(): Link[] {
    const msgs = this.sock().dump(
      RTM.GETLINK,
      ifinfomsg,
      { header: blankIfInfo(), attrs: [] },
      { what: 'list links' },
    );
    return msgs
      .filter((m) => m.type === RTM.NEWLINK)
      .map((m) => {
        const { header, attrs } = decodeBody(ifinfomsg, m.payload);
        return decodeLink(header, attrs);
      });
  }

  /** The link with this name or index, or undefined. */
  find(nameOrIndex: string | number): Link | undefined {
    const byName = typeof nameOrIndex === 'string';
    if (byName) checkIfName(nameOrIndex);
    try {
      const msgs = this.sock().request(
        RTM.GETLINK,
        ifinfomsg,
        {
          header: blankIfInfo({ index: byName ? 0 : nameOrIndex }),
          attrs: byName ? [a.str(IFLA.IFNAME, nameOrIndex)] : [],
        },
        { what: `get link ${nameOrIndex}` },
      );
      const m = msgs.find((x) => x.type === RTM.NEWLINK);
      if (!m) return undefined;
      const { header, attrs } = decodeBody(ifinfomsg, m.payload);
      return decodeLink(header, attrs);
    } catch (e) {
      if (e instanceof KernelError && ENODEV_CODES.has(e.code)) return undefined;
      throw e;
    }
  }

  /** The link with this name or index; NOT_FOUND if there is none. */
  get(nameOrIndex: string | number): Link {
    const l = this.find(nameOrIndex);
    if (!l)
      throw notFound(`link ${JSON.stringify(nameOrIndex)} not found in ${this.ns.path}`, {
        link: nameOrIndex,
      });
    return l;
  }

  #index(name: string): number {
    return this.get(name).index;
  }

  /** Create a link; EXISTS if the name (or a veth peer's name) is taken. Returns it as read back. */
  add(spec: LinkSpec): Link {
    this.create(spec);
    const where = spec.netns && !spec.netns.sameAs(this.ns) ? linksOf(spec.netns) : this;
    return where.get(spec.name);
  }

  /** `add` without reading the link back (one request fewer, for callers that need nothing of it). */
  create(spec: LinkSpec): void {
    const req = this.#resolve(spec);
    try {
      this.sock().request(RTM.NEWLINK, ifinfomsg, encodeNewLink(req), {
        flags: NLM_F.CREATE | NLM_F.EXCL,
        what: `add ${spec.kind} link ${spec.name}`,
      });
    } catch (e) {
      throw existsError(spec, e);
    }
  }

  /**
   * `create` with the kernel's work on libuv's thread pool (see NetlinkSocket.requestAsync): a
   * veth pair takes ~1.2 ms of kernel time, which the caller's thread can spend on other work.
   * Uses the namespace's second socket, or the first, synchronously, when that one is busy.
   * Throws what `create` throws.
   */
  async createAsync(spec: LinkSpec): Promise<void> {
    const sock = this.ns.rtnlAsync();
    if (!sock) return this.create(spec);
    // The kernel reads a namespace fd only when a pool thread sends the request, perhaps after
    // the caller closed that handle and its number went to another file: the request gets fds
    // of its own, closed once it settled.
    const dups = new Map<Netns, number>();
    const fdOf = (ns: Netns): number => {
      let fd = dups.get(ns);
      if (fd === undefined) {
        fd = dup(ns.fd);
        dups.set(ns, fd);
      }
      return fd;
    };
    try {
      const req = this.#resolve(spec, fdOf);
      await sock.requestAsync(RTM.NEWLINK, ifinfomsg, encodeNewLink(req), {
        flags: NLM_F.CREATE | NLM_F.EXCL,
        what: `add ${spec.kind} link ${spec.name}`,
      });
    } catch (e) {
      throw existsError(spec, e);
    } finally {
      for (const fd of dups.values()) close(fd);
    }
  }

  /**
   * Create the link unless a compatible one exists (same kind and key options); returns it.
   * An incompatible one is a CONFLICT naming the difference, or is recreated with `recreate`.
   */
  ensure(spec: LinkSpec, opts: { recreate?: boolean } = {}): Link {
    const where = spec.netns ? linksOf(spec.netns) : this;
    const existing = where.find(spec.name);
    if (existing) {
      const diff = incompatibility(existing, spec, where);
      if (diff === undefined) {
        if (spec.up && !existing.up) where.setUp(spec.name);
        if (spec.mtu !== undefined && existing.mtu !== spec.mtu) where.setMtu(spec.name, spec.mtu);
        if (spec.master !== undefined && existing.masterIndex !== where.get(spec.master).index) {
          where.setMaster(spec.name, spec.master);
        }
        return where.get(spec.name);
      }
      if (!opts.recreate) {
        throw new WeftError('CONFLICT', `link "${spec.name}" exists but differs: ${diff}`, {
          details: { link: spec.name, diff },
        });
      }
      where.delete(spec.name);
    }
    return this.add(spec);
  }

  /** Delete a link by name. A link that does not exist is success unless `mustExist`. */
  delete(name: string, opts: { mustExist?: boolean } = {}): void {
    checkIfName(name);
    try {
      this.sock().request(RTM.DELLINK, ifinfomsg, byName(name), { what: `delete link ${name}` });
    } catch (e) {
      unlessGone(e, opts);
    }
  }

  /**
   * `delete` with the kernel's work on libuv's thread pool (see NetlinkSocket.requestAsync):
   * deleting a device waits ~17 ms for an RCU barrier, which the caller's thread can spend on
   * other work. Uses the namespace's second socket, or `delete` when that one is busy. Resolves
   * once the link is gone; throws what `delete` throws.
   */
  async deleteAsync(name: string, opts: { mustExist?: boolean } = {}): Promise<void> {
    checkIfName(name);
    const sock = this.ns.rtnlAsync();
    if (!sock) return this.delete(name, opts);
    try {
      await sock.requestAsync(RTM.DELLINK, ifinfomsg, byName(name), { what: `delete link ${name}` });
    } catch (e) {
      unlessGone(e, opts);
    }
  }

  #set(name: string, attrs: Attr[], what: string, flags?: { flags: number; change: number }): void {
    // The kernel finds the link by IFLA_IFNAME when the index is 0, which saves a lookup per
    // change; a rename carries the new name there, so it goes by index.
    if (attrs.some((x) => x.type === IFLA.IFNAME)) {
      const index = this.#index(name);
      this.sock().request(
        RTM.NEWLINK,
        ifinfomsg,
        { header: blankIfInfo({ index, ...(flags ?? {}) }), attrs },
        { what: `${what} ${name}` },
      );
      return;
    }
    checkIfName(name);
    try {
      this.sock().request(
        RTM.NEWLINK,
        ifinfomsg,
        { header: blankIfInfo(flags ?? {}), attrs: [a.str(IFLA.IFNAME, name), ...attrs] },
        { what: `${what} ${name}` },
      );
    } catch (e) {
      if (e instanceof KernelError && ENODEV_CODES.has(e.code)) {
        throw notFound(`link ${JSON.stringify(name)} not found in ${this.ns.path}`, { link: name });
      }
      throw e;
    }
  }

  setUp(name: string): void {
    this.#set(name, [], 'set up', { flags: IFF.UP, change: IFF.UP });
  }
  setDown(name: string): void {
    this.#set(name, [], 'set down', { flags: 0, change: IFF.UP });
  }
  setMtu(name: string, mtu: number): void {
    this.#set(name, [a.u32(IFLA.MTU, mtu)], `set mtu ${mtu} on`);
  }
  setMac(name: string, mac: string): void {
    this.#set(name, [a.mac(IFLA.ADDRESS, mac)], `set mac ${mac} on`);
  }
  setAlias(name: string, alias: string): void {
    this.#set(name, [a.str(IFLA.IFALIAS, alias)], 'set alias on');
  }
  /** Enslave to a bridge, or release from it with `null`. */
  setMaster(name: string, master: string | null): void {
    const idx = master === null ? 0 : this.#index(master);
    this.#set(name, [a.u32(IFLA.MASTER, idx)], master === null ? 'release' : `enslave to ${master}:`);
  }
  rename(name: string, newName: string): void {
    checkIfName(newName);
    try {
      this.#set(name, [a.str(IFLA.IFNAME, newName)], `rename to ${newName}:`);
    } catch (e) {
      if (e instanceof KernelError && e.code === 'EXISTS') {
        throw new WeftError('EXISTS', `cannot rename "${name}": link "${newName}" already exists`, {
          cause: e,
        });
      }
      throw e;
    }
  }
  /** Move a link into another namespace (optionally renaming it there). */
  setNetns(name: string, target: Netns, newName?: string): void {
    if (newName !== undefined) checkIfName(newName);
    this.#set(name, [a.u32(IFLA.NET_NS_FD, target.fd)], `move to ${target.path}:`);
    if (newName !== undefined && newName !== name) linksOf(target).rename(name, newName);
  }

  /**
   * Bridge-port options on a link enslaved to a bridge: hairpin (reflective relay, needed for a
   * container reaching its own published port), learning, flooding, isolation.
   */
  setBridgePort(
    name: string,
    opts: {
      hairpin?: boolean;
      learning?: boolean;
      unicastFlood?: boolean;
      isolated?: boolean;
      neighSuppress?: boolean;
    },
  ): void {
    const index = this.#index(name);
    const port: Attr[] = [];
    if (opts.hairpin !== undefined) port.push(a.u8(IFLA_BRPORT.MODE, opts.hairpin ? 1 : 0));
    if (opts.learning !== undefined) port.push(a.u8(IFLA_BRPORT.LEARNING, opts.learning ? 1 : 0));
    if (opts.unicastFlood !== undefined)
      port.push(a.u8(IFLA_BRPORT.UNICAST_FLOOD, opts.unicastFlood ? 1 : 0));
    if (opts.isolated !== undefined) port.push(a.u8(IFLA_BRPORT.ISOLATED, opts.isolated ? 1 : 0));
    if (opts.neighSuppress !== undefined)
      port.push(a.u8(IFLA_BRPORT.NEIGH_SUPPRESS, opts.neighSuppress ? 1 : 0));
    this.sock().request(
      RTM.SETLINK,
      ifinfomsg,
      {
        header: blankIfInfo({ family: AF.BRIDGE, index }),
        attrs: [a.nest(IFLA.PROTINFO, port, NLA_F_NESTED)],
      },
      { what: `set bridge port options on ${name}` },
    );
  }

  /** Read a bridge port's options back (from the AF_BRIDGE view of the link). */
  bridgePort(name: string): { hairpin: boolean; learning: boolean; isolated: boolean } {
    const index = this.#index(name);
    const msgs = this.sock().dump(
      RTM.GETLINK,
      ifinfomsg,
      { header: blankIfInfo({ family: AF.BRIDGE }), attrs: [] },
      {
        what: `get bridge port ${name}`,
      },
    );
    for (const m of msgs) {
      const { header, attrs } = decodeBody(ifinfomsg, m.payload);
      if (header.index !== index) continue;
      const p = attrs.nested(IFLA.PROTINFO);
      return {
        hairpin: (p?.u8(IFLA_BRPORT.MODE) ?? 0) !== 0,
        learning: (p?.u8(IFLA_BRPORT.LEARNING) ?? 0) !== 0,
        isolated: (p?.u8(IFLA_BRPORT.ISOLATED) ?? 0) !== 0,
      };
    }
    throw notFound(`link "${name}" is not a bridge port`);
  }

  /**
   * Turn a LinkSpec (names, handles) into a NewLink (indexes, fds), validating first. `master`
   * is found where the link is made (the kernel looks IFLA_MASTER up there); a parent or a VTEP's
   * device where the request is sent.
   */
  #resolve(spec: LinkSpec, fdOf: (ns: Netns) => number = (ns) => ns.fd): NewLink {
    checkIfName(spec.name);
    if (spec.mac !== undefined && !isMac(spec.mac))
      throw new WeftError('INVALID', `"${spec.mac}" is not a MAC address`);
    if (spec.mtu !== undefined && (!Number.isInteger(spec.mtu) || spec.mtu < 68 || spec.mtu > 65535)) {
      throw new WeftError('INVALID', `MTU ${spec.mtu} is out of range (68-65535)`);
    }
    const common = {
      name: spec.name,
      ...(spec.mtu !== undefined && { mtu: spec.mtu }),
      ...(spec.mac !== undefined && { mac: spec.mac }),
      ...(spec.master !== undefined && {
        masterIndex: (spec.netns ? linksOf(spec.netns) : this).#index(spec.master),
      }),
      ...(spec.txQueueLen !== undefined && { txQueueLen: spec.txQueueLen }),
      ...(spec.up !== undefined && { up: spec.up }),
      ...(spec.netns !== undefined && { netnsFd: fdOf(spec.netns) }),
    };
    switch (spec.kind) {
      case 'bridge':
        return {
          ...common,
          kind: 'bridge',
          ...(spec.vlanFiltering !== undefined && { vlanFiltering: spec.vlanFiltering }),
          ...(spec.stp !== undefined && { stp: spec.stp }),
          ...(spec.ageingTime !== undefined && { ageingTime: spec.ageingTime }),
          ...(spec.mcastSnooping !== undefined && { mcastSnooping: spec.mcastSnooping }),
        };
      case 'veth': {
        checkIfName(spec.peer.name, 'veth peer name');
        if (spec.peer.name === spec.name && (spec.peer.netns ?? this.ns).sameAs(spec.netns ?? this.ns)) {
          throw new WeftError(
            'INVALID',
            `veth "${spec.name}" and its peer cannot share a name in one namespace`,
          );
        }
        return {
          ...common,
          kind: 'veth',
          peer: {
            name: spec.peer.name,
            ...(spec.peer.netns !== undefined && { netnsFd: fdOf(spec.peer.netns) }),
            ...(spec.peer.mtu !== undefined && { mtu: spec.peer.mtu }),
            ...(spec.peer.mac !== undefined && { mac: spec.peer.mac }),
          },
        };
      }
      case 'vxlan':
        if (!Number.isInteger(spec.vni) || spec.vni < 0 || spec.vni > 0xffffff) {
          throw new WeftError('INVALID', `VNI ${spec.vni} is out of range (0-16777215)`);
        }
        if (spec.port !== undefined && (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535)) {
          throw new WeftError('INVALID', `UDP port ${spec.port} is out of range`);
        }
        return {
          ...common,
          kind: 'vxlan',
          vni: spec.vni,
          ...(spec.local !== undefined && { local: spec.local }),
          ...(spec.group !== undefined && { group: spec.group }),
          ...(spec.dev !== undefined && { devIndex: this.#index(spec.dev) }),
          ...(spec.port !== undefined && { port: spec.port }),
          ...(spec.learning !== undefined && { learning: spec.learning }),
          ...(spec.proxy !== undefined && { proxy: spec.proxy }),
          ...(spec.ttl !== undefined && { ttl: spec.ttl }),
          ...(spec.udpCsum !== undefined && { udpCsum: spec.udpCsum }),
        };
      case 'macvlan':
        return {
          ...common,
          kind: 'macvlan',
          parentIndex: this.#index(spec.parent),
          ...(spec.mode !== undefined && { mode: spec.mode }),
        };
      case 'dummy':
        return { ...common, kind: 'dummy' };
    }
  }
}

/** Links of another namespace (through its own socket). */
function linksOf(ns: Netns): Links {
  return new Links(ns, () => ns.rtnl());
}

/** Why an existing link cannot stand for `spec` (undefined: it can). */
function incompatibility(l: Link, spec: LinkSpec, where: Links): string | undefined {
  if (l.kind !== spec.kind) return `kind ${l.kind} vs ${spec.kind}`;
  if (spec.mac !== undefined && l.mac !== spec.mac.toLowerCase()) return `mac ${l.mac} vs ${spec.mac}`;
  if (l.kind === 'vxlan' && spec.kind === 'vxlan') {
    if (l.vni !== spec.vni) return `vni ${l.vni} vs ${spec.vni}`;
    if (spec.port !== undefined && l.port !== spec.port) return `port ${l.port} vs ${spec.port}`;
    if (spec.local !== undefined && (l.local === undefined || formatIP(l.local) !== formatIP(spec.local))) {
      return `local ${l.local ? formatIP(l.local) : 'none'} vs ${formatIP(spec.local)}`;
    }
    if (spec.learning !== undefined && l.learning !== spec.learning)
      return `learning ${l.learning} vs ${spec.learning}`;
    if (spec.proxy !== undefined && l.proxy !== spec.proxy) return `proxy ${l.proxy} vs ${spec.proxy}`;
    if (spec.dev !== undefined && l.devIndex !== where.find(spec.dev)?.index)
      return `dev differs (want ${spec.dev})`;
  }
  if (l.kind === 'macvlan' && spec.kind === 'macvlan') {
    if (spec.mode !== undefined && l.mode !== spec.mode) return `mode ${l.mode} vs ${spec.mode}`;
  }
  if (l.kind === 'bridge' && spec.kind === 'bridge') {
    if (spec.vlanFiltering !== undefined && l.vlanFiltering !== spec.vlanFiltering) {
      return `vlan_filtering ${l.vlanFiltering} vs ${spec.vlanFiltering}`;
    }
  }
  return undefined;
}
