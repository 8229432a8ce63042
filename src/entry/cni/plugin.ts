/**
 * The CNI commands, as a thin client of the weft daemon. One function, `runCni`, takes what a
 * runtime gives a plugin (environment and stdin) and returns what the plugin prints and its
 * exit status; the daemon, the result cache and the namespace check come in as dependencies so
 * that this logic is tested without a daemon or root.
 *
 *   ADD      validate everything, record the attachment as pending in the cache, then POST
 *            /v1/attachments (the daemon makes the veth, addresses, routes and published ports in
 *            one transaction) and complete the record; the result in the config's version
 *   DEL      DELETE /v1/attachments/cni/<id>?ifname=…: idempotent, also without a netns, and
 *            blind to the config fields only ADD uses
 *   CHECK    (cniVersion >= 0.4.0) the daemon's check of the kernel state, then the prevResult's
 *            addresses, MAC and sandbox against the daemon's record: drift is error 100
 *   STATUS   (>= 1.1.0) the daemon answers /readyz and knows the network: else 50
 *   GC       (>= 1.1.0) remove the attachments recorded for this CNI network (on its weft
 *            network) that are not in cni.dev/valid-attachments
 *   VERSION  the versions weft speaks
 *
 * Errors are CNI error objects on stdout with a non-zero exit; never a stack trace on stdout.
 */
import type { AttachRequest, AttachView } from '../../control/service.js';
import type { Cache } from './cache.js';
import { DEFAULT_DATA_DIR } from './cache.js';
import { type Daemon, mayHaveApplied, socketPath } from './client.js';
import {
  type CniArgs,
  type CniEnv,
  type NetConf,
  parseCniArgs,
  parseConfig,
  parseEnv,
  versionOf,
  wantedAddresses,
} from './config.js';
import { asCniError, CniCode, CniError, type Command } from './errors.js';
import {
  type CniResult,
  compareVersions,
  encodeResult,
  isSupported,
  LATEST,
  SUPPORTED_VERSIONS,
} from './result.js';

export const OWNER = 'cni';
/** The daemon's default network (used when the config names none). */
export const DEFAULT_NETWORK = 'bridge';

export interface PluginDeps {
  readonly env: Readonly<Record<string, string | undefined>>;
  daemon(socket: string): Daemon;
  cache(dir: string): Cache;
  /** What is at a CNI_NETNS path: a network namespace, nothing, or something else. */
  netnsState(path: string): 'netns' | 'missing' | 'other';
  /** Diagnostics for stderr (runtimes log it). */
  warn?(msg: string): void;
}

export interface PluginOutput {
  readonly stdout: string;
  readonly exitCode: number;
}

/** Run one CNI command. Never throws: failures are CNI error objects with exit status 1. */
export async function runCni(stdin: string, deps: PluginDeps): Promise<PluginOutput> {
  let command: Command = 'VERSION';
  try {
    const env = parseEnv(deps.env);
    command = env.command;
    if (command === 'VERSION') return ok(versionAnswer(stdin));
    const conf = parseConfig(stdin, command);
    const ctx: Ctx = {
      env,
      conf,
      deps,
      daemon: deps.daemon(socketPath(conf.socket, deps.env)),
      cache: deps.cache(conf.dataDir ?? DEFAULT_DATA_DIR),
    };
    switch (command) {
      case 'ADD':
        return ok(await add(ctx));
      case 'DEL':
        await del(ctx);
        return ok('');
      case 'CHECK':
        await check(ctx);
        return ok('');
      case 'STATUS':
        await status(ctx);
        return ok('');
      case 'GC':
        await gc(ctx);
        return ok('');
    }
  } catch (e) {
    const err = asCniError(e, command);
    if (deps.env.WEFT_DEBUG && e instanceof Error && !(e instanceof CniError))
      deps.warn?.(e.stack ?? e.message);
    return { stdout: `${JSON.stringify(err.toJSON(versionOf(stdin)))}\n`, exitCode: 1 };
  }
}

interface Ctx {
  readonly env: CniEnv;
  readonly conf: NetConf;
  readonly deps: PluginDeps;
  readonly daemon: Daemon;
  readonly cache: Cache;
}

const ok = (stdout: string): PluginOutput => ({ stdout, exitCode: 0 });

/** VERSION: answered in the version the runtime asked in (if weft speaks it). */
export function versionAnswer(stdin: string): string {
  const asked = versionOf(stdin);
  const cniVersion = isSupported(asked) ? asked : LATEST;
  return `${JSON.stringify({ cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] })}\n`;
}

function requireVersion(conf: NetConf, min: string, command: Command): void {
  if (compareVersions(conf.cniVersion, min) < 0) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `config version does not allow ${command}`,
      `${command} needs cniVersion ${min} or later; the config is ${conf.cniVersion}`,
    );
  }
}

/** @throws CniError 3 (no such namespace), 4 (CNI_NETNS is not a network namespace) */
function checkNetns(ctx: Ctx): void {
  const state = ctx.deps.netnsState(ctx.env.netns);
  if (state === 'missing')
    throw new CniError(CniCode.UnknownContainer, `network namespace ${ctx.env.netns} does not exist`);
  if (state === 'other')
    throw new CniError(CniCode.InvalidEnvironment, `CNI_NETNS ${ctx.env.netns} is not a network namespace`);
}

/** The request for the daemon, from the config, runtimeConfig and CNI_ARGS. */
export function attachRequest(env: CniEnv, conf: NetConf, args: CniArgs): AttachRequest {
  const addrs = wantedAddresses(conf, args);
  const mac = conf.runtime.mac ?? conf.argsMac ?? args.mac;
  return {
    owner: OWNER,
    containerId: env.containerId,
    netns: env.netns,
    ifname: env.ifname,
    ...(conf.network !== undefined && { network: conf.network }),
    ...(addrs.ip !== undefined && { ip: addrs.ip }),
    ...(addrs.ip6 !== undefined && { ip6: addrs.ip6 }),
    ...(mac !== undefined && { mac }),
    ...(conf.runtime.ports.length > 0 && { ports: conf.runtime.ports }),
    ...(conf.runtime.aliases.length > 0 && { aliases: conf.runtime.aliases }),
  };
}

/**
 * The CNI result of an attachment: the host veth, then the container interface (with its
 * sandbox), its addresses pointing at it with their gateways, the routes and DNS. A prevResult
 * (weft chained after another interface plugin) keeps its entries first.
 */
export function resultFromView(v: AttachView, netns: string, conf: NetConf, prev?: CniResult): CniResult {
  const interfaces: CniResult['interfaces'] = [...(prev?.interfaces ?? [])];
  if (v.hostIfname) {
    interfaces.push({
      name: v.hostIfname,
      ...(v.hostMac !== undefined && { mac: v.hostMac }),
      mtu: v.mtu,
    });
  }
  const idx = interfaces.length;
  interfaces.push({ name: v.ifname, ...(v.mac !== undefined && { mac: v.mac }), mtu: v.mtu, sandbox: netns });
  const gatewayFor = (addr: string): string | undefined => {
    const v6 = addr.includes(':');
    return v.gateways.find((g) => g.includes(':') === v6);
  };
  const ips: CniResult['ips'] = [
    ...(prev?.ips ?? []),
    ...v.addresses.map((address) => {
      const gateway = gatewayFor(address);
      return { address, ...(gateway !== undefined && { gateway }), interface: idx };
    }),
  ];
  const routes: CniResult['routes'] = [
    ...(prev?.routes ?? []),
    ...v.routes.map((r) => ({ dst: r.dst, ...(r.gw !== undefined && { gw: r.gw }) })),
  ];
  const rdns = conf.runtime.dns;
  const nameservers = rdns?.servers?.length ? rdns.servers : v.dns.nameservers;
  const dns: CniResult['dns'] = {
    ...prev?.dns,
    ...(nameservers.length > 0 && { nameservers: [...nameservers] }),
    ...(rdns?.searches?.length && { search: [...rdns.searches] }),
    ...(rdns?.options?.length && { options: [...rdns.options] }),
  };
  return { interfaces, ips, routes, dns };
}

/** ipMasq and mtu in the config must agree with the weft network (they are its settings). */
async function checkNetworkSettings(ctx: Ctx): Promise<void> {
  const { conf } = ctx;
  if (conf.ipMasq === undefined && conf.mtu === undefined) return;
  const name = conf.network ?? DEFAULT_NETWORK;
  const n = await ctx.daemon.network(name);
  const diffs: string[] = [];
  if (conf.mtu !== undefined && n.mtu !== conf.mtu) diffs.push(`mtu ${n.mtu} (the config asks ${conf.mtu})`);
  if (conf.ipMasq !== undefined && n.masquerade !== conf.ipMasq) {
    diffs.push(`masquerade ${n.masquerade ? 'on' : 'off'} (the config asks ipMasq ${conf.ipMasq})`);
  }
  if (diffs.length > 0) {
    throw new CniError(
      CniCode.InvalidConfig,
      `the config does not match weft network "${name}": ${diffs.join(', ')}`,
      'ipMasq and mtu are settings of the weft network: create it with them (weft network create -o masquerade=… -o mtu=…) or leave them out',
    );
  }
}

async function add(ctx: Ctx): Promise<string> {
  const { env, conf } = ctx;
  const args = parseCniArgs(env.args);
  checkNetns(ctx);
  const req = attachRequest(env, conf, args);
  await checkNetworkSettings(ctx);
  const record = {
    kind: 'weft-cni-result',
    name: conf.name,
    containerId: env.containerId,
    ifname: env.ifname,
    netns: env.netns,
    cniVersion: conf.cniVersion,
  } as const;
  // Owned before it exists: GC of another CNI network must never see this attachment unrecorded
  // (while the daemon works, or after this process dies). A record already there (ADD again)
  // owns it already.
  const wrote = ctx.cache.read(conf.name, env.containerId, env.ifname) === undefined;
  if (wrote) {
    ctx.cache.write({
      ...record,
      network: conf.network ?? DEFAULT_NETWORK,
      pending: true,
      result: null,
      created: new Date().toISOString(),
    });
  }
  let view: AttachView;
  try {
    view = await ctx.daemon.attach(req);
    if (view.netns !== null && view.netns !== env.netns) {
      // An attachment of that id for another namespace: a container whose DEL never came. The
      // runtime has moved on; replace it.
      ctx.deps.warn?.(
        `replacing a stale attachment of ${env.containerId}/${env.ifname} (netns ${view.netns})`,
      );
      await ctx.daemon.detach(OWNER, env.containerId, env.ifname);
      view = await ctx.daemon.attach(req);
    }
  } catch (e) {
    // The record goes only when nothing can be attached: else DEL or this network's GC needs it.
    if (wrote && !mayHaveApplied(e)) forget(ctx);
    throw e;
  }
  const result = resultFromView(view, env.netns, conf, conf.prevResult);
  const encoded = encodeResult(result, conf.cniVersion);
  try {
    ctx.cache.write({ ...record, network: view.network, result: encoded, created: new Date().toISOString() });
  } catch (e) {
    // Nothing half-made: without its record the attachment goes too (if it cannot, the pending
    // record keeps it owned).
    try {
      await ctx.daemon.detach(OWNER, env.containerId, env.ifname);
      forget(ctx);
    } catch {}
    throw e;
  }
  return `${JSON.stringify(encoded)}\n`;
}

/** Best effort: remove this attachment's record (the failure that led here is the one to report). */
function forget(ctx: Ctx): void {
  try {
    ctx.cache.remove(ctx.conf.name, ctx.env.containerId, ctx.env.ifname);
  } catch {}
}

async function del(ctx: Ctx): Promise<void> {
  const { env, conf } = ctx;
  await ctx.daemon.detach(OWNER, env.containerId, env.ifname);
  ctx.cache.remove(conf.name, env.containerId, env.ifname);
}

async function check(ctx: Ctx): Promise<void> {
  const { env, conf } = ctx;
  requireVersion(conf, '0.4.0', 'CHECK');
  const prev = conf.prevResult;
  if (!prev) throw new CniError(CniCode.InvalidConfig, 'CHECK needs the prevResult of the ADD');
  parseCniArgs(env.args);
  checkNetns(ctx);
  const view = await ctx.daemon.check(OWNER, env.containerId, env.ifname);
  const problems: string[] = [];
  const idx = prev.interfaces.findIndex((i) => i.name === env.ifname && i.sandbox !== undefined);
  if (idx < 0) {
    throw new CniError(CniCode.InvalidConfig, `the prevResult has no interface ${env.ifname} in a sandbox`);
  }
  const iface = prev.interfaces[idx]!;
  if (iface.sandbox !== env.netns)
    problems.push(`interface ${env.ifname} is in ${env.netns}, not ${iface.sandbox}`);
  if (
    iface.mac !== undefined &&
    view.mac !== undefined &&
    iface.mac.toLowerCase() !== view.mac.toLowerCase()
  ) {
    problems.push(`interface ${env.ifname} has MAC ${view.mac}, not ${iface.mac}`);
  }
  const have = new Set(view.addresses);
  for (const ip of prev.ips) {
    if (ip.interface === idx && !have.has(ip.address))
      problems.push(`address ${ip.address} is not on ${env.ifname}`);
  }
  if (problems.length > 0) {
    throw new CniError(
      CniCode.Drift,
      `${env.containerId}/${env.ifname} differs from its ADD`,
      problems.join('; '),
    );
  }
}

async function status(ctx: Ctx): Promise<void> {
  requireVersion(ctx.conf, '1.1.0', 'STATUS');
  // Every way the daemon cannot serve ADD (not running, starting, no such network) is 50.
  await ctx.daemon.ready();
  const name = ctx.conf.network ?? DEFAULT_NETWORK;
  try {
    await ctx.daemon.network(name);
  } catch (e) {
    const err = asCniError(e, 'STATUS');
    if (err.code === CniCode.NotAvailable)
      throw new CniError(CniCode.NotAvailable, `weft network "${name}": ${err.message}`);
    throw err;
  }
}

async function gc(ctx: Ctx): Promise<void> {
  const { conf } = ctx;
  requireVersion(conf, '1.1.0', 'GC');
  const key = (containerId: string, ifname: string) => `${containerId}\n${ifname}`;
  const valid = new Set((conf.validAttachments ?? []).map((a) => key(a.containerID, a.ifname)));
  const network = conf.network ?? DEFAULT_NETWORK;
  const errors: string[] = [];
  const all = await ctx.daemon.attachments(OWNER);
  const kept = new Set(all.map((a) => key(a.containerId, a.ifname)));
  for (const a of all) {
    const k = key(a.containerId, a.ifname);
    if (a.network !== network || valid.has(k)) continue;
    // Ours only with a record of this CNI network (a pending one too: an ADD that died after the
    // attach). Without one it is another network's (its ADD writes the record first) or unknown.
    if (!ctx.cache.owners(a.containerId, a.ifname).includes(conf.name)) continue;
    try {
      await ctx.daemon.detach(OWNER, a.containerId, a.ifname);
      kept.delete(k);
      ctx.cache.remove(conf.name, a.containerId, a.ifname);
    } catch (e) {
      errors.push(`${a.containerId}/${a.ifname}: ${(e as Error).message}`);
    }
  }
  // Records of attachments the daemon no longer has; one whose detach failed stays ours.
  for (const e of ctx.cache.list(conf.name)) {
    const k = key(e.containerId, e.ifname);
    if (!valid.has(k) && !kept.has(k)) ctx.cache.remove(conf.name, e.containerId, e.ifname);
  }
  if (errors.length > 0) {
    throw new CniError(
      CniCode.TryAgainLater,
      `GC could not remove ${errors.length} attachment(s)`,
      errors.join('; '),
    );
  }
}
