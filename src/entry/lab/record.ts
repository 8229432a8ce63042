/**
 * The lab record: one JSON file per lab (<stateRoot>/<lab>/lab.json) saying what the lab is made
 * of (hosts, addresses, store, processes as pid + start time). Written atomically (temp file and
 * rename) after every step of `up`, so a lab whose CLI died half-way can still be listed and
 * taken down; `down` does not need it to find what to remove (see procs.ts), it only helps.
 *
 * Mutations of one lab (up, add-host, rm-host, down) take a lock file next to the record, so two
 * CLIs never interleave on one lab; a lock whose holder died is taken over.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WeftError } from '../../lib/errors.js';
import { alive, type ProcRef } from './procs.js';
import type { Backend, StoreKind } from './topology.js';

export const RECORD_VERSION = 1;

export interface HostRecord {
  readonly name: string;
  readonly index: number;
  /** The host's underlay (public) address. */
  readonly ip: string;
  readonly stateDir: string;
  readonly runDir: string;
  readonly socket: string;
  readonly log: string;
  daemon?: ProcRef;
  /** Names of the containers the lab started on this host. */
  containers: string[];
}

export interface EtcdMemberRecord {
  readonly name: string;
  readonly ip: string;
  readonly dataDir: string;
  readonly log: string;
  proc?: ProcRef;
}

export interface LabRecord {
  readonly version: number;
  readonly name: string;
  readonly created: string;
  readonly backend: Backend;
  readonly store: StoreKind;
  /** What the daemons get as --store. */
  readonly storeSpec: string;
  readonly network: string;
  readonly subnetLen: number;
  readonly underlay: string;
  readonly gateway: string;
  readonly containersPerHost: number;
  readonly internet: {
    readonly router: string;
    readonly server: string;
    proc?: ProcRef;
    readonly log: string;
  };
  etcd: EtcdMemberRecord[];
  hosts: HostRecord[];
  /** The published port the check reaches from the internet. */
  published?: { host: string; container: string; port: number };
  /** Set once `up` finished. */
  ready?: boolean;
}

/** Read a lab record; undefined when there is none. Throws INTERNAL for an unreadable one. */
export function readRecord(file: string): LabRecord | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const r = JSON.parse(text) as LabRecord;
    if (typeof r !== 'object' || r === null || typeof r.name !== 'string' || !Array.isArray(r.hosts)) {
      throw new Error('not a lab record');
    }
    return r;
  } catch (e) {
    throw new WeftError('INTERNAL', `the lab record ${file} is unreadable: ${(e as Error).message}`, {
      cause: e,
      details: { file },
    });
  }
}

/** Write the record atomically. */
export function writeRecord(file: string, r: LabRecord): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(r, null, 2)}\n`, { mode: 0o644 });
  fs.renameSync(tmp, file);
}

const LOCK_WAIT_MS = 30_000;

/**
 * Run `fn` holding the lab's lock (`<dir>/lock`, holding our pid and start time). Waits (bounded)
 * for another holder; takes over a lock whose holder is gone. Throws BUSY when the lock stays
 * held, and whatever `fn` throws.
 */
export async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const file = path.join(dir, 'lock');
  const me = fs.readFileSync('/proc/self/stat', 'utf8');
  const startTime = me.slice(me.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      fs.writeFileSync(file, JSON.stringify({ pid: process.pid, startTime }), { flag: 'wx' });
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') fs.mkdirSync(dir, { recursive: true });
      else if (code !== 'EEXIST') throw e;
      else {
        let holder: ProcRef | undefined;
        try {
          holder = JSON.parse(fs.readFileSync(file, 'utf8')) as ProcRef;
        } catch {
          holder = undefined;
        }
        if (!holder || !alive(holder)) {
          fs.rmSync(file, { force: true });
          continue;
        }
        if (Date.now() > deadline) {
          throw new WeftError('BUSY', `the lab is busy: process ${holder.pid} is changing it`, {
            details: { lock: file, pid: holder.pid },
          });
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(file, { force: true });
  }
}
