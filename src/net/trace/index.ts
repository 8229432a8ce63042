/**
 * `weft trace`'s library: the hop model (./types.ts), the walk through live kernel state
 * (./walk.ts), the nftables matcher (./nftmatch.ts), the probe (./probe.ts) and the text
 * rendering (./render.ts). The command (src/entry/trace/) resolves names into places and calls
 * these.
 */
export * from './nftmatch.js';
export * from './probe.js';
export * from './procnet.js';
export * from './render.js';
export * from './types.js';
export { nudText, routeText, type TraceOptions, trace } from './walk.js';
