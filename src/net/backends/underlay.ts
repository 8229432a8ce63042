/**
 * Which interface and address carry the overlay (flannel's --iface / --public-ip): the named
 * interface and its first global IPv4 address; the interface that has the given address; or,
 * with neither, the interface of the default route (flannel's choice). Read-only.
 */
import type { NetHandle } from '../../kernel/handle.js';
import { invalid, notFound } from '../../lib/errors.js';
import { formatIP, type IPAddr, ipEqual, parseIP } from '../../lib/ip.js';

export interface Underlay {
  readonly publicIp: IPAddr;
  readonly iface: { readonly name: string; readonly index: number; readonly mtu: number };
}

/**
 * @throws WeftError NOT_FOUND: the interface does not exist, has no IPv4 address, no interface
 *   has the address, or there is no default route; INVALID: the address is not IPv4, or the
 *   interface does not have it.
 */
export function findUnderlay(h: NetHandle, want: { iface?: string; publicIp?: string | IPAddr }): Underlay {
  const ip = typeof want.publicIp === 'string' ? parseIP(want.publicIp) : want.publicIp;
  if (ip && ip.family !== 4) throw invalid(`the public address must be IPv4, not ${formatIP(ip)}`);
  const v4 = h.addrs.list({ family: 4 }).filter((a) => a.scope === 0);
  let index: number;
  if (want.iface !== undefined) {
    const l = h.links.find(want.iface);
    if (!l) throw notFound(`interface ${want.iface} does not exist`, { iface: want.iface });
    index = l.index;
  } else if (ip) {
    const a = v4.find((x) => ipEqual(x.ipnet.ip, ip));
    if (!a) throw notFound(`no interface has the address ${formatIP(ip)}`, { publicIp: formatIP(ip) });
    index = a.index;
  } else {
    const def = h.routes.list({ family: 4, dst: 'default' }).find((r) => r.oif !== undefined);
    if (!def?.oif) throw notFound('no default route: say which interface carries the overlay (--iface)');
    index = def.oif;
  }
  const link = h.links.get(index);
  const mine = v4.filter((a) => a.index === index);
  let publicIp: IPAddr;
  if (ip) {
    if (want.iface !== undefined && !mine.some((a) => ipEqual(a.ipnet.ip, ip))) {
      throw invalid(`interface ${link.name} does not have the address ${formatIP(ip)}`);
    }
    publicIp = ip;
  } else {
    const first = mine[0];
    if (!first) throw notFound(`interface ${link.name} has no IPv4 address`, { iface: link.name });
    publicIp = first.ipnet.ip;
  }
  return { publicIp, iface: { name: link.name, index: link.index, mtu: link.mtu } };
}
