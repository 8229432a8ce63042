/**
 * Choosing and opening a registry from a `--store` string:
 *   embedded                          store.db in the host's state dir (default /var/lib/weft)
 *   embedded:/abs/path/store.db       an embedded store elsewhere (the lab: one per lab)
 *   etcd://host:2379[,host2:2379…]    etcd endpoints (plain gRPC)
 *   http://h:2379[,http://h2:2379…]   the same, as flannel's -etcd-endpoints writes them;
 *   https://h:2379[,…]                TLS (CA and client certificate through options)
 *   unix:///abs/path                  etcd on a unix socket (tests reach a namespace's etcd so)
 * The etcd client is imported only when an etcd store is opened: loading it costs ~350 ms.
 */
import * as path from 'node:path';
import { invalid } from '../../lib/errors.js';
import { DEFAULT_STATE_DIR } from '../../lib/paths.js';
import { type EmbeddedOptions, EmbeddedRegistry } from './embedded.js';
import type { Registry } from './types.js';

export type { KvEntry, PutOptions, Registry, Watch, WatchEvent, WatchHandlers } from './types.js';

/** The embedded store of a host: `store.db` in its state dir. */
export const embeddedPath = (stateDir: string = DEFAULT_STATE_DIR): string => path.join(stateDir, 'store.db');
export const DEFAULT_EMBEDDED_PATH = embeddedPath();

export type StoreSpec =
  | { readonly kind: 'embedded'; readonly path: string }
  | { readonly kind: 'etcd'; readonly endpoints: readonly string[]; readonly tls: boolean };

export interface OpenRegistryOptions {
  /** etcd TLS: PEM files of the CA, the client certificate and its key. */
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
  /** etcd: bound on each call, retries included (default 5,000 ms). */
  readonly callTimeoutMs?: number | undefined;
  /** embedded: poll period, history size, lock wait. */
  readonly embedded?: EmbeddedOptions | undefined;
}

const HOST_PORT = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$/;

/** Parse a `--store` string (bare `embedded` is the store in `stateDir`, the host's). Throws INVALID, saying what was expected, for anything else. */
export function parseStoreSpec(spec: string, stateDir?: string): StoreSpec {
  const s = spec.trim();
  if (s === 'embedded') return { kind: 'embedded', path: embeddedPath(stateDir) };
  if (s.startsWith('embedded:')) {
    const p = s.slice('embedded:'.length);
    if (!path.isAbsolute(p) || p.endsWith('/')) {
      throw invalid(
        `embedded store needs an absolute file path: "${spec}" (e.g. embedded:/var/lib/weft/store.db)`,
      );
    }
    return { kind: 'embedded', path: path.normalize(p) };
  }
  if (s.startsWith('unix://')) {
    const p = s.slice('unix://'.length);
    if (!path.isAbsolute(p) || s.includes(',')) {
      throw invalid(`etcd unix socket needs one absolute path: "${spec}" (e.g. unix:///run/etcd.sock)`);
    }
    return { kind: 'etcd', endpoints: [s], tls: false };
  }
  const scheme = /^(etcd|http|https):\/\//.exec(s)?.[1];
  if (!scheme) {
    throw invalid(
      `unknown store "${spec}": expected embedded, embedded:/path, etcd://host:port[,host:port…] or http(s)://host:port[,…]`,
    );
  }
  const endpoints = s.split(',').map((part, i) => {
    let hp = part.trim();
    // etcd:// once at the front; http(s):// may repeat on every member (flannel's form).
    const m = /^(etcd|http|https):\/\//.exec(hp);
    if (m) {
      if (m[1] !== scheme) throw invalid(`store "${spec}" mixes ${scheme}:// and ${m[1]}:// endpoints`);
      if (scheme === 'etcd' && i > 0) throw invalid(`store "${spec}": write etcd:// once, then host:port,…`);
      hp = hp.slice(m[0].length);
    }
    hp = hp.replace(/\/$/, '');
    const port = HOST_PORT.exec(hp)?.[1];
    if (port === undefined || Number(port) < 1 || Number(port) > 65535) {
      throw invalid(`store "${spec}": "${part}" is not host:port (e.g. etcd://10.0.0.1:2379)`);
    }
    return scheme === 'etcd' ? hp : `${scheme}://${hp}`;
  });
  return { kind: 'etcd', endpoints, tls: scheme === 'https' };
}

/** The store string of a spec (for logs, the lab's configs, child processes). */
export function formatStoreSpec(spec: StoreSpec): string {
  if (spec.kind === 'embedded') return `embedded:${spec.path}`;
  const [first] = spec.endpoints;
  return first !== undefined && /^[a-z]+:\/\//.test(first)
    ? spec.endpoints.join(',')
    : `etcd://${spec.endpoints.join(',')}`;
}

/**
 * Open the registry a spec names. Throws INVALID for bad options or unreadable TLS files,
 * UNAVAILABLE when the embedded file cannot be opened; an etcd store is not contacted until
 * its first call (which then fails UNAVAILABLE if it is unreachable).
 */
export async function openRegistry(spec: StoreSpec, opts: OpenRegistryOptions = {}): Promise<Registry> {
  if (spec.kind === 'embedded') return EmbeddedRegistry.open(spec.path, opts.embedded);
  const { EtcdRegistry } = await import('./etcd.js');
  return EtcdRegistry.open({
    endpoints: spec.endpoints,
    caFile: opts.caFile,
    certFile: opts.certFile,
    keyFile: opts.keyFile,
    callTimeoutMs: opts.callTimeoutMs,
  });
}
