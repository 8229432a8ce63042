/**
 * Validation of names the kernel and weft accept. Checked before anything is changed, so bad
 * input fails with a clear INVALID error and no half-made state.
 */
import { invalid } from './errors.js';

/** Longest interface name: IFNAMSIZ (16) minus the terminating NUL. */
export const IFNAME_MAX = 15;

/** Throws INVALID unless `name` is a valid Linux interface name (the kernel's dev_valid_name). */
export function checkIfName(name: string, what = 'interface name'): string {
  if (typeof name !== 'string' || name.length === 0) throw invalid(`${what} must not be empty`);
  if (Buffer.byteLength(name) > IFNAME_MAX) {
    throw invalid(`${what} "${name}" is too long (${Buffer.byteLength(name)} bytes, at most ${IFNAME_MAX})`, {
      name,
    });
  }
  // '%': the kernel takes "br%d" as a pattern and makes br0, br1… under another name.
  if (name === '.' || name === '..' || /[/:%\s\0]/.test(name)) {
    throw invalid(
      `${what} "${name}" contains a character the kernel refuses or expands ('/', ':', '%', whitespace) or is . or ..`,
      { name },
    );
  }
  return name;
}

const OBJECT_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

/** Names of weft objects (networks, sandboxes, namespaces, labs): Docker's rule, 1-63 chars. */
export function checkObjectName(name: string, what = 'name'): string {
  if (!OBJECT_NAME_RE.test(name)) {
    throw invalid(
      `${what} "${name}" is invalid: use 1-63 of [a-zA-Z0-9_.-], starting with a letter or digit`,
      {
        name,
      },
    );
  }
  return name;
}
