/**
 * `weft ui` end to end: a lab (vxlan, 2 hosts, 1 container each; its name carries the test run
 * id), the ui server on a free loopback port, and the page driven in Debian's headless Chromium
 * through playwright-core: hosts and containers appear, clicking two containers shows the path
 * hop by hop, a host added to the lab appears without reload. A screenshot is saved under
 * test-artifacts/. The browser is closed and the lab taken down afterwards, also on failure.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { isRoot, RUN_ID } from '../../../test/bed.js';
import * as lab from '../lab/lab.js';
import { startUi, type UiServer } from './server.js';

/** The little of the page's DOM the checks read (this file compiles without the DOM types). */
interface Doc {
  body: { classList: { contains(c: string): boolean } };
  getElementById(id: string): { textContent: string | null } | null;
}

const CHROMIUM = '/usr/bin/chromium';
const name = `wt-${RUN_ID}-ui`;
const skip = !isRoot()
  ? 'needs root'
  : !fs.existsSync(CHROMIUM)
    ? 'needs chromium (scripts/setup.sh)'
    : false;

describe('weft ui', { skip, timeout: 240_000 }, () => {
  let ui: UiServer | undefined;
  let empty: UiServer | undefined;
  let browser: Browser | undefined;
  let page: Page;

  before(async () => {
    await lab.up({ name, hosts: 2, containers: 1, backend: 'vxlan' });
    ui = await startUi({ lab: name, port: 0, listen: '127.0.0.1', pollMs: 500 });
    empty = await startUi({ lab: `wt-${RUN_ID}-no`, port: 0 });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--headless',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
      ],
      timeout: 30_000,
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await ui?.close();
    await empty?.close();
    await lab.down(name);
  });

  const nodeIds = (sel: string): Promise<string[]> =>
    page.evaluate(
      (s) =>
        (
          globalThis as unknown as {
            weftCy: { nodes(s: string): { map(f: (n: { id(): string }) => string): string[] } };
          }
        ).weftCy
          .nodes(s)
          .map((n) => n.id()),
      sel,
    );

  test('the API gives the topology: hosts, devices, containers, leases', async () => {
    const t = (await (await fetch(`${ui!.url}api/topology`)).json()) as {
      state: string;
      hosts: {
        name: string;
        devices: { kind: string }[];
        containers: { id: string; ip?: string; veth?: string }[];
      }[];
      leases: { host: string; expiresAt?: string }[];
    };
    assert.equal(t.state, 'ok');
    assert.deepEqual(
      t.hosts.map((h) => h.name),
      ['host1', 'host2'],
    );
    for (const h of t.hosts) {
      const kinds = new Set(h.devices.map((d) => d.kind));
      for (const k of ['bridge', 'vxlan', 'uplink', 'veth']) assert.ok(kinds.has(k), `${h.name} has a ${k}`);
      assert.equal(h.containers.length, 1);
      assert.ok(h.containers[0]!.ip && h.containers[0]!.veth, 'container with address and matched veth');
    }
    assert.deepEqual(
      t.leases.map((l) => l.host),
      ['host1', 'host2'],
    );
    const bad = await fetch(`${ui!.url}api/path?src=host1/nope&dst=host2/h2c1`);
    assert.equal(bad.status, 404);
  });

  test('the page draws hosts and containers, and the path between two clicked containers', async () => {
    await page.goto(ui!.url);
    await page.waitForFunction(
      () =>
        (globalThis as unknown as { weftCy?: { nodes(s: string): { length: number } } }).weftCy?.nodes(
          '.container',
        ).length === 2,
      undefined,
      { timeout: 20_000 },
    );
    assert.deepEqual((await nodeIds('.host')).sort(), ['host1', 'host2']);
    const containers = (await nodeIds('.container')).sort();
    assert.deepEqual(containers, ['host1/h1c1', 'host2/h2c1']);
    assert.ok((await nodeIds('.vxlan')).length === 2);
    for (const id of containers) {
      const pos = await page.evaluate((i) => {
        const cy = (
          globalThis as unknown as {
            weftCy: { getElementById(i: string): { renderedPosition(): { x: number; y: number } } };
          }
        ).weftCy;
        return cy.getElementById(i).renderedPosition();
      }, id);
      const box = (await page.locator('#graph').boundingBox())!;
      await page.mouse.click(box.x + pos.x, box.y + pos.y);
    }
    await page.waitForSelector('#hops li', { timeout: 30_000 });
    const hops = await page.locator('#hops li').allInnerTexts();
    assert.ok(hops.length >= 5, `hops: ${hops.join(' | ')}`);
    assert.match(hops[0]!, /host1\/h1c1/);
    assert.match(hops.at(-1)!, /host2\/h2c1/);
    assert.ok(hops.some((h) => /host1/.test(h)) && hops.some((h) => /host2/.test(h)));
    assert.match((await page.locator('#path-title').textContent()) ?? '', /host1\/h1c1 → host2\/h2c1/);
    assert.ok((await nodeIds('.onpath')).length >= 3, 'the path is drawn on the picture');
  });

  test('a host added to the lab appears without reload; screenshot saved', async () => {
    await lab.addHost(name);
    await page.waitForFunction(
      () =>
        (globalThis as unknown as { weftCy: { getElementById(i: string): { nonempty(): boolean } } }).weftCy
          .getElementById('host3/h3c1')
          .nonempty(),
      undefined,
      { timeout: 30_000 },
    );
    assert.deepEqual((await nodeIds('.host')).sort(), ['host1', 'host2', 'host3']);
    const dir = path.resolve('test-artifacts');
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `ui-${RUN_ID}.png`);
    await page.screenshot({ path: file });
    assert.ok(fs.statSync(file).size > 10_000);
  });

  test('a lab that does not exist shows the empty state, not an error', async () => {
    const p = await browser!.newPage();
    await p.goto(empty!.url);
    await p.waitForFunction(
      () => {
        const d = (globalThis as unknown as { document: Doc }).document;
        return d.body.classList.contains('empty') && (d.getElementById('empty')?.textContent ?? '') !== '';
      },
      undefined,
      { timeout: 10_000 },
    );
    assert.match(
      (await p.locator('#empty').textContent()) ?? '',
      /There is no lab "wt-.*-no" running\. Start one with `weft lab up --name/,
    );
    await p.close();
  });
});
