/**
 * A handle on one network namespace's networking: its links, addresses, routes, neighbour and
 * FDB entries and sysctls, all through the namespace's own netlink socket (opened inside it).
 * The root namespace is just another handle: `openHandle(Netns.self())`.
 */
import { Addrs } from './addrs.js';
import { Links } from './links.js';
import { Fdb, Neighbours } from './neigh.js';
import type { Netns } from './netns.js';
import { Routes } from './routes.js';
import { Sysctl } from './sysctl.js';

export class NetHandle {
  readonly links: Links;
  readonly addrs: Addrs;
  readonly routes: Routes;
  readonly neigh: Neighbours;
  readonly fdb: Fdb;
  readonly sysctl: Sysctl;

  constructor(readonly ns: Netns) {
    const sock = () => ns.rtnl();
    this.links = new Links(ns, sock);
    this.addrs = new Addrs(ns, sock);
    this.routes = new Routes(ns, sock);
    this.neigh = new Neighbours(ns, sock);
    this.fdb = new Fdb(ns, sock);
    this.sysctl = new Sysctl(ns);
  }
}

export const openHandle = (ns: Netns): NetHandle => new NetHandle(ns);
