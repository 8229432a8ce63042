/**
 * Sandbox network namespaces, pinned at `<runDir>/netns/<id>` (production: /run/weft/netns).
 * The run directory comes from the caller's Host context; there is no global path here.
 */
import * as path from 'node:path';
import { openHandle } from '../kernel/handle.js';
import { Netns } from '../kernel/netns.js';
import { checkObjectName } from '../lib/names.js';
import type { SandboxRef } from './driver.js';

export interface Sandbox extends SandboxRef {
  /** Where the namespace is pinned. */
  readonly path: string;
}

/** Where the namespace of sandbox `id` is pinned. Throws INVALID for a bad id. */
export function sandboxPath(runDir: string, id: string): string {
  checkObjectName(id, 'sandbox id');
  return path.join(runDir, 'netns', id);
}

/**
 * Create the sandbox's namespace with `lo` up. Throws INVALID for a bad id or relative runDir,
 * EXISTS when a namespace is already pinned there. On failure nothing is left pinned.
 */
export function createSandbox(runDir: string, id: string): Sandbox {
  const p = sandboxPath(runDir, id);
  const ns = Netns.create(p);
  try {
    openHandle(ns).links.setUp('lo');
  } catch (e) {
    ns.delete();
    throw e;
  }
  return { id, ns, path: p };
}

/** Open an existing sandbox's namespace. Throws NOT_FOUND when it is not pinned. */
export function openSandbox(runDir: string, id: string): Sandbox {
  const p = sandboxPath(runDir, id);
  return { id, ns: Netns.open(p), path: p };
}

/**
 * Remove the sandbox's namespace pin (idempotent: a missing one is success). The namespace, and
 * every interface in it, goes away once no process and no open handle holds it: close handles
 * (`sandbox.ns.close()`) first.
 */
export function removeSandbox(runDir: string, id: string): void {
  Netns.remove(sandboxPath(runDir, id));
}

/**
 * A sandbox whose namespace someone else made (a CNI runtime's netns path), or, without a path,
 * this process's own namespace (where a bare endpoint waits for its runtime to move it). The
 * handle is the caller's to close. Throws NOT_FOUND when the path does not exist.
 */
export function openExternalSandbox(id: string, netnsPath: string | undefined): Sandbox {
  const p = netnsPath ?? '/proc/self/ns/net';
  return { id, ns: Netns.open(p), path: p };
}
