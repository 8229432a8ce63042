/**
 * Starting a worker thread from a sibling module: the compiled `.js` when running from the build,
 * the `.ts` source under tsx (tests, benchmarks), where a worker does not inherit the TypeScript
 * loader: it registers tsx first, then imports the source.
 */
import { Worker } from 'node:worker_threads';

/**
 * `base` is the calling module's import.meta.url, `name` the worker module's file name without
 * extension, in the same folder.
 */
export function spawnWorker(base: string, name: string, workerData: unknown): Worker {
  if (base.endsWith('.ts')) {
    const api = import.meta.resolve('tsx/esm/api');
    const file = new URL(`./${name}.ts`, base).href;
    const code = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(file)}); })`;
    return new Worker(code, { eval: true, workerData });
  }
  return new Worker(new URL(`./${name}.js`, base), { workerData });
}
