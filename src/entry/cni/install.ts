/**
 * `weft cni install`: put the bundled CNI plugin (dist/cni/weft, made by `npm run build`) into a
 * CNI bin dir as `weft`, and write an example network configuration list into a CNI conf dir.
 * The copy is atomic (temp file + rename), so a runtime calling the plugin meanwhile runs the old
 * or the new file, never half of one. An existing conflist is left alone unless --force.
 *
 * The example chains weft (interfaces, addresses, routes, DNS; capabilities ips, mac, dns,
 * aliases) with the reference `portmap` plugin for published ports, the usual pairing; with
 * `--ports weft` weft publishes the ports itself (its nftables rules, shown by `weft ps`) and
 * the list holds weft alone. Debian's reference plugins speak CNI up to 1.0.0, so a list that
 * chains them says 1.0.0; weft alone says 1.1.0.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { invalid, WeftError } from '../../lib/errors.js';

export interface InstallOptions {
  readonly binDir: string;
  readonly confDir: string;
  /** The CNI network name (the conflist's "name"). */
  readonly name: string;
  /** The weft network; undefined: the daemon's default. */
  readonly network?: string;
  readonly ports: 'portmap' | 'weft';
  readonly socket?: string;
  readonly force: boolean;
  /** The bundled plugin to install (default: dist/cni/weft of this checkout). */
  readonly plugin?: string;
}

export interface InstallResult {
  readonly plugin: string;
  readonly conflist: string;
  readonly conflistWritten: boolean;
}

/** The example network configuration list. */
export function exampleConflist(o: Pick<InstallOptions, 'name' | 'network' | 'ports' | 'socket'>): unknown {
  const weft = {
    type: 'weft',
    ...(o.network !== undefined && { network: o.network }),
    ...(o.socket !== undefined && { socket: o.socket }),
    capabilities: {
      ips: true,
      mac: true,
      dns: true,
      aliases: true,
      ...(o.ports === 'weft' && { portMappings: true }),
    },
  };
  const plugins =
    o.ports === 'weft'
      ? [weft]
      : [weft, { type: 'portmap', capabilities: { portMappings: true }, snat: true }];
  return { cniVersion: o.ports === 'weft' ? '1.1.0' : '1.0.0', name: o.name, plugins };
}

/** The checkout's root: the nearest folder above this module with weft's package.json. */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 10; i++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'weft') return dir;
    } catch {
      // keep looking upwards
    }
    dir = path.dirname(dir);
  }
  throw new WeftError('INTERNAL', 'cannot find the weft checkout this command runs from');
}

export const bundledPlugin = (): string => path.join(packageRoot(), 'dist', 'cni', 'weft');

/**
 * Install the plugin and the example conflist.
 * @throws WeftError INVALID (relative dirs, a bad name), NOT_FOUND (the plugin is not built),
 *   PERMISSION / INTERNAL (the file system refused)
 */
export function installCni(o: InstallOptions): InstallResult {
  for (const [what, d] of [
    ['--bin-dir', o.binDir],
    ['--conf-dir', o.confDir],
  ] as const) {
    if (!path.isAbsolute(d)) throw invalid(`${what} must be an absolute path, not "${d}"`);
  }
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(o.name))
    throw invalid(`"${o.name}" is not a valid CNI network name`);
  const src = o.plugin ?? bundledPlugin();
  if (!fs.existsSync(src)) {
    throw new WeftError(
      'NOT_FOUND',
      `the CNI plugin is not built (${src}); run \`npm run build\` in the weft checkout`,
    );
  }
  const dst = path.join(o.binDir, 'weft');
  const conflist = path.join(o.confDir, `10-${o.name}.conflist`);
  try {
    fs.mkdirSync(o.binDir, { recursive: true });
    const tmp = `${dst}.${process.pid}.tmp`;
    fs.copyFileSync(src, tmp);
    fs.chmodSync(tmp, 0o755);
    fs.renameSync(tmp, dst);
    fs.mkdirSync(o.confDir, { recursive: true });
    let written = false;
    if (o.force || !fs.existsSync(conflist)) {
      const tmpc = `${conflist}.${process.pid}.tmp`;
      fs.writeFileSync(tmpc, `${JSON.stringify(exampleConflist(o), null, 2)}\n`, { mode: 0o644 });
      fs.renameSync(tmpc, conflist);
      written = true;
    }
    return { plugin: dst, conflist, conflistWritten: written };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const code =
      err.code === 'EACCES' || err.code === 'EPERM' || err.code === 'EROFS' ? 'PERMISSION' : 'INTERNAL';
    throw new WeftError(code, `cannot install the CNI plugin: ${err.message}`, { cause: e });
  }
}

/** The `cni` command group of the CLI. */
export function addCniCommands(program: Command): void {
  const cni = program
    .command('cni')
    .description('the CNI plugin: install it for runtimes (podman, containerd, CRI-O)');
  cni
    .command('install')
    .description('copy the CNI plugin into a CNI bin dir as `weft` and write an example conflist')
    .option('--bin-dir <dir>', 'CNI plugin directory', '/opt/cni/bin')
    .option('--conf-dir <dir>', 'CNI network configuration directory', '/etc/cni/net.d')
    .option('--name <name>', 'CNI network name of the example conflist', 'weft')
    .option('--network <name>', 'weft network to attach to (default: the daemon’s default network)')
    .option('--ports <who>', 'who publishes ports: portmap (chained reference plugin) or weft', 'portmap')
    .option('--force', 'overwrite an existing conflist of that name')
    .option('--from <file>', 'the plugin file to install (default: dist/cni/weft of this checkout)')
    .option('--json', 'machine-readable output')
    .action(
      (opts: {
        binDir: string;
        confDir: string;
        name: string;
        network?: string;
        ports: string;
        force?: boolean;
        from?: string;
        json?: boolean;
      }) => {
        if (opts.ports !== 'portmap' && opts.ports !== 'weft')
          throw invalid(`--ports must be portmap or weft, not "${opts.ports}"`);
        const socket = (program.opts() as { socket?: string }).socket;
        const r = installCni({
          binDir: path.resolve(opts.binDir),
          confDir: path.resolve(opts.confDir),
          name: opts.name,
          ...(opts.network !== undefined && { network: opts.network }),
          ports: opts.ports,
          ...(socket !== undefined && { socket: path.resolve(socket) }),
          force: opts.force === true,
          ...(opts.from !== undefined && { plugin: path.resolve(opts.from) }),
        });
        if (opts.json) process.stdout.write(`${JSON.stringify(r)}\n`);
        else {
          process.stdout.write(`installed ${r.plugin}\n`);
          process.stdout.write(
            r.conflistWritten
              ? `wrote ${r.conflist}\n`
              : `kept the existing ${r.conflist} (--force replaces it)\n`,
          );
        }
      },
    );
}
