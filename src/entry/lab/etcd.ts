/**
 * The lab's etcd: Debian's etcd-server (`etcd` 3.4) started by the lab, one member per namespace
 * on the switch (etcd1 at underlay .2, etcd2 .3, etcd3 .4), data in a folder under the lab's
 * state dir, clients on :2379 and peers on :2380 of the member's lab address only. Health is
 * asked the way an operator would (GET /health on the client URL), with curl from inside the
 * member's namespace, bounded.
 */
import * as fs from 'node:fs';
import { DEFAULT_PATH, findProgram } from '../../kernel/run.js';
import { notFound, WeftError } from '../../lib/errors.js';
import { alive, interrupted, logTail, type ProcRef, runIn, spawnDetached, untilAborted } from './procs.js';
import type { EtcdMemberRecord } from './record.js';
import type { LabNs } from './underlay.js';

export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;
const HEALTH_TIMEOUT_MS = 20_000;

/** Where `etcd` is on `env`'s PATH, or NOT_FOUND saying how to install it. */
export function findEtcd(env: NodeJS.ProcessEnv = process.env): string {
  const found = findProgram('etcd', env.PATH ?? DEFAULT_PATH);
  if (found) return found;
  throw notFound(
    'etcd is not installed: run `apt-get install etcd-server` (scripts/setup.sh installs it), or use --store embedded',
    { program: 'etcd', package: 'etcd-server' },
  );
}

/** The argv of member `me` of a cluster of `members`. */
export function etcdArgs(
  me: Pick<EtcdMemberRecord, 'name' | 'ip' | 'dataDir'>,
  members: readonly Pick<EtcdMemberRecord, 'name' | 'ip'>[],
  token: string,
): string[] {
  return [
    '--name',
    me.name,
    '--data-dir',
    me.dataDir,
    '--listen-client-urls',
    `http://${me.ip}:${ETCD_CLIENT_PORT}`,
    '--advertise-client-urls',
    `http://${me.ip}:${ETCD_CLIENT_PORT}`,
    '--listen-peer-urls',
    `http://${me.ip}:${ETCD_PEER_PORT}`,
    '--initial-advertise-peer-urls',
    `http://${me.ip}:${ETCD_PEER_PORT}`,
    '--initial-cluster',
    members.map((m) => `${m.name}=http://${m.ip}:${ETCD_PEER_PORT}`).join(','),
    '--initial-cluster-state',
    'new',
    '--initial-cluster-token',
    token,
  ];
}

/**
 * The member's environment: the caller's without ETCD_* variables. etcd takes each as a flag:
 * one that shadows a flag the lab gives (ETCD_NAME, ETCD_DATA_DIR…) makes it refuse to start,
 * and the others would change the member behind the lab's back.
 */
export function etcdEnv(env: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('ETCD_')));
}

/** Start one member (detached, inside its namespace). Throws NOT_FOUND without etcd. */
export function startMember(
  ns: LabNs,
  me: EtcdMemberRecord,
  members: readonly EtcdMemberRecord[],
  token: string,
  env: Record<string, string>,
): Promise<ProcRef> {
  const bin = findEtcd(env);
  fs.mkdirSync(me.dataDir, { recursive: true, mode: 0o700 });
  return spawnDetached(ns.ns, bin, etcdArgs(me, members, token), { env: etcdEnv(env), log: me.log });
}

/**
 * Wait until the member answers healthy. Throws UNAVAILABLE naming the member and the tail of
 * its log when it exits or stays unhealthy past the bound; `interrupted()` as soon as `signal`
 * fires (a Ctrl-C during `up` does not wait out the bound).
 */
export async function waitHealthy(
  ns: LabNs,
  me: EtcdMemberRecord,
  o: { timeoutMs?: number; signal?: AbortSignal | undefined } = {},
): Promise<void> {
  const timeoutMs = o.timeoutMs ?? HEALTH_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    if (o.signal?.aborted) throw interrupted();
    if (me.proc && !alive(me.proc)) {
      throw new WeftError('UNAVAILABLE', `etcd member ${me.name} exited:\n${logTail(me.log, 1500)}`, {
        details: { member: me.name, log: me.log },
      });
    }
    const r = await runIn(
      ns.ns,
      'curl',
      ['-s', '-m', '1', `http://${me.ip}:${ETCD_CLIENT_PORT}/health`],
      3000,
      o.signal,
    );
    last = r.stdout.trim();
    if (r.code === 0 && /"health"\s*:\s*"true"/.test(last)) return;
    if (Date.now() > deadline) {
      throw new WeftError(
        'UNAVAILABLE',
        `etcd member ${me.name} (${me.ip}) not healthy after ${timeoutMs / 1000} s (${last || 'no answer'}):\n${logTail(me.log, 1500)}`,
        { details: { member: me.name, log: me.log } },
      );
    }
    await untilAborted(new Promise((r2) => setTimeout(r2, 100)), o.signal);
  }
}
