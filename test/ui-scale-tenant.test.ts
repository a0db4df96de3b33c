// The dashboard at scale and under a tenant's token, in chromium against a real `cairn serve`:
// 1 000 volumes and 10 000 snapshots stay a windowed list (a bounded number of rows in the DOM,
// search and sort over all of them), a lineage of 2 000 snapshots draws only what is in view, and a
// tenant's token sees only its tenant's volumes and never calls an admin-only route.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { adminToken, assertBuilt, startServe, tempDir } from './cli-helpers.js';
import { apiAs, assertAccessible, assertUiBuilt, launch, newPage, screenshots, signIn } from './ui-helpers.js';

const MiB = 1024 * 1024;
const volumeCount = 1000;
const snapshotsPerVolume = 10;
/** Creates in flight at once while filling the pool. */
const createsInFlight = 8;
/** Rows the windowed list may hold in the DOM at once (the view's rows plus overscan, with room). */
const domRowsMax = 120;
const waitMs = 60_000;

const volName = (i: number) => `v${String(i).padStart(4, '0')}`;

test('dashboard: 1 000 volumes and 10 000 snapshots in a windowed list; a tenant sees only its own', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  assertUiBuilt();
  const dir = await tempDir(t, 'cairn-ui-scale-');
  const d = await startServe(t, join(dir, 'pool'), ['--pool-size', '4G']);
  const api = apiAs(d.api, adminToken(d.api));
  let next = 0;
  await Promise.all(Array.from({ length: createsInFlight }, async () => {
    for (let i = next++; i < volumeCount; i = next++) {
      const r = await api('POST', '/v1/volumes', { name: volName(i), size: MiB });
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
  }));
  for (let s = 0; s < snapshotsPerVolume; s += 1) {
    const r = await api('POST', '/v1/snapshots', { snapshots: Array.from({ length: volumeCount }, (_, i) => `${volName(i)}@s${s}`) });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  const browser = await launch(t);

  await t.test('the list holds every row but renders a window of them; search and sort cover all', async () => {
    const { page, errors } = await newPage(browser);
    await signIn(page, d.api, adminToken(d.api));
    await page.goto(`${d.api}/ui/#/volumes`);
    const total = volumeCount * (1 + snapshotsPerVolume);
    await page.locator('.count').filter({ hasText: `${total} shown` }).waitFor({ timeout: waitMs });
    const rendered = () => page.locator('table.grid tbody tr:not([aria-hidden])').count();
    assert.ok(await rendered() <= domRowsMax, `windowed: ${await rendered()} rows in the DOM`);
    await assertAccessible(page, 'volumes');
    await screenshots(page, 'volumes');
    // Scrolled to the end: the last name in order is there, and still only a window of rows.
    await page.locator('.vlist').evaluate((el) => { el.scrollTop = el.scrollHeight; });
    await page.getByRole('link', { name: `${volName(volumeCount - 1)}@s9`, exact: true }).waitFor({ timeout: waitMs });
    assert.ok(await rendered() <= domRowsMax);
    // Sorted by name, descending: the last volume's snapshots come first.
    await page.getByRole('button', { name: /^Name/ }).click();
    await page.locator('.vlist').evaluate((el) => { el.scrollTop = 0; });
    await page.getByRole('link', { name: `${volName(volumeCount - 1)}@s9`, exact: true }).waitFor({ timeout: waitMs });
    await page.getByLabel('Search').fill(volName(123));
    await page.locator('.count').filter({ hasText: `${1 + snapshotsPerVolume} shown` }).waitFor({ timeout: waitMs });
    await page.getByLabel('Show').selectOption('volume');
    await page.locator('.count').filter({ hasText: /^1 shown/ }).waitFor({ timeout: waitMs });
    assert.deepEqual(errors, []);
  });

  await t.test('a lineage of 2 000 snapshots draws only the members in view', async () => {
    assert.equal((await api('POST', '/v1/volumes', { name: 'deep', size: MiB })).status, 201);
    for (let batch = 0; batch < 2; batch += 1) {
      const names = Array.from({ length: 1000 }, (_, i) => `deep@a${String(batch * 1000 + i).padStart(4, '0')}`);
      assert.equal((await api('POST', '/v1/snapshots', { snapshots: names })).status, 201);
    }
    const { page, errors } = await newPage(browser);
    await signIn(page, d.api, adminToken(d.api));
    await page.goto(`${d.api}/ui/#/volume/deep`);
    await page.locator('svg.tree g[data-name="deep@a0000"]').waitFor({ timeout: waitMs });
    assert.match(await page.locator('svg.tree').getAttribute('aria-label') ?? '', /2001 members/);
    const drawn = () => page.locator('svg.tree g.node').count();
    assert.ok(await drawn() <= domRowsMax, `windowed tree: ${await drawn()} members drawn`);
    await page.locator('.tree-scroll').evaluate((el) => { el.scrollTop = el.scrollHeight; });
    await page.locator('svg.tree g[data-name="deep@a1999"]').waitFor({ timeout: waitMs });
    assert.ok(await drawn() <= domRowsMax);
    await page.locator('svg.tree g[data-name="deep@a1999"]').click();
    await page.getByRole('heading', { name: 'deep@a1999', level: 2 }).waitFor();
    assert.deepEqual(errors, []);
  });

  await t.test('a tenant token sees only its tenant, and the page calls no admin-only route', async () => {
    assert.equal((await api('POST', '/v1/tenants', { name: 'acme' })).status, 201);
    const created = await api('POST', '/v1/tokens', { role: 'tenant', tenant: 'acme', name: 'acme-ui' });
    const tenantToken = (created.body as { token: string }).token;
    assert.equal((await apiAs(d.api, tenantToken)('POST', '/v1/volumes', { name: 'web', size: 64 * MiB })).status, 201);
    const { page, errors } = await newPage(browser);
    const calls: Array<{ path: string; status: number }> = [];
    page.on('response', (r) => {
      const path = new URL(r.url()).pathname;
      if (!path.startsWith('/ui/')) calls.push({ path, status: r.status() });
    });
    await signIn(page, d.api, tenantToken);
    await page.getByText('tenant · acme').waitFor();
    await page.getByText('Checksum errors').waitFor({ timeout: waitMs });
    assert.equal(await page.getByRole('heading', { name: 'Usage by tenant' }).count(), 0, 'no tenant table for a tenant');
    await assertAccessible(page, 'pool (tenant)');
    await page.goto(`${d.api}/ui/#/volumes`);
    await page.locator('.count').filter({ hasText: '1 shown · 1 volumes, 0 snapshots' }).waitFor({ timeout: waitMs });
    await page.getByRole('link', { name: 'web', exact: true }).waitFor();
    assert.equal(await page.getByRole('link', { name: volName(0), exact: true }).count(), 0);
    await page.goto(`${d.api}/ui/#/volume/web`);
    await page.locator('svg.tree g[data-name="web"]').waitFor({ timeout: waitMs });
    await page.goto(`${d.api}/ui/#/io`);
    await page.locator('[data-chart="Pool: IOPS"]').waitFor({ timeout: waitMs });
    await page.goto(`${d.api}/ui/#/jobs`);
    await page.getByRole('heading', { name: 'Jobs' }).waitFor();
    await page.waitForTimeout(1500);
    const adminOnly = calls.filter((c) => c.path.startsWith('/v1/tenants') || c.path.startsWith('/v1/tokens') || c.path === '/metrics'
      || c.path === '/v1/pool/grow' || c.path.startsWith('/v1/cluster'));
    assert.deepEqual(adminOnly, [], 'a tenant\'s page calls no admin-only route');
    assert.deepEqual(calls.filter((c) => c.status === 403 || c.status === 401), [], 'no refusals');
    assert.deepEqual(errors, []);
  });
});
