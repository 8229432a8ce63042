/**
 * A handle on one network namespace's networking: its links, addresses, routes, neighbour and
 * FDB entries and sysctls, all through the namespace's own netlink socket (opened inside it).
 * The root namespace is just another handle: `openHandle(Netns.self())`.
 */
import { Links } from './links.js';
import type { Netns } from './netns.js';

export class NetHandle {
  readonly links: Links;

  constructor(readonly ns: Netns) {
    const sock = () => ns.rtnl();
    this.links = new Links(ns, sock);
  }
}

export const openHandle = (ns: Netns): NetHandle => new NetHandle(ns);
