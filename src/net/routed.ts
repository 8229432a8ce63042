/**
 * What the host already routes, for choosing subnets that do not clash with it (the control
 * layer decides; reading the kernel is this layer's job).
 */
import { openHandle } from '../kernel/handle.js';
import type { Netns } from '../kernel/netns.js';
import type { Family, IPNet } from '../lib/ip.js';

/** Destination prefixes of every route in every table of `ns` (default routes excluded). */
export function routedPrefixes(ns: Netns, family: Family = 4): IPNet[] {
  return openHandle(ns)
    .routes.list({ family, table: 'all' })
    .flatMap((r) => (r.dst && r.dst.len > 0 ? [r.dst] : []));
}
