// Helpers for the dashboard's browser tests: Debian's chromium driven by playwright-core (headless,
// --no-sandbox as root), an API caller with a token, axe-core injected into the page (no serious or
// critical violations allowed), and screenshots saved as test artefacts.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { root } from './cli-helpers.js';

/** Debian's browser (scripts/install-deps.sh installs it); playwright-core downloads none. */
export const chromiumPath = process.env.CAIRN_TEST_CHROMIUM ?? '/usr/bin/chromium';
/** Where screenshots go: look at them after a change to the dashboard. */
export const artefactDir = process.env.CAIRN_TEST_ARTIFACTS ?? '/tmp/cairn-ui-shots';
export const desktop = { width: 1280, height: 800 };
export const phone = { width: 390, height: 844 };

export function assertUiBuilt(): void {
  const index = join(root, 'dist', 'ui', 'index.html');
  if (!existsSync(index)) throw new Error(`${index} is missing: run "npm run build" (it builds the dashboard too)`);
}

export async function launch(t: TestContext): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  t.after(() => browser.close());
  return browser;
}

/** A fresh context (its own sessionStorage); `errors` gathers uncaught errors and Content-Security-Policy refusals. */
export async function newPage(browser: Browser, viewport = desktop): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) errors.push(m.text()); });
  return { context, page, errors };
}

export async function signIn(page: Page, api: string, token: string): Promise<void> {
  await page.goto(`${api}/ui/`);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Pool', level: 1 }).waitFor();
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

interface AxeViolation { id: string; impact: string | null; help: string; nodes: Array<{ target: unknown[] }> }

/** axe-core on the page as it is: no serious or critical violation (WCAG 2 A/AA rules). */
export async function assertAccessible(page: Page, view: string): Promise<void> {
  // Evaluated through the DevTools protocol, which the page's CSP (no inline scripts) does not govern.
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run(ctx: Document, opts: object): Promise<{ violations: AxeViolation[] }> } }).axe;
    const r = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => ({ target: n.target })) }));
  });
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${view}: accessibility violations ${JSON.stringify(bad, null, 1)}`);
}

/** Saves the page at desktop and phone widths as `<name>-1280.png` and `<name>-390.png`. */
export async function screenshots(page: Page, name: string): Promise<void> {
  mkdirSync(artefactDir, { recursive: true });
  const before = page.viewportSize() ?? desktop;
  for (const size of [desktop, phone]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(150); // charts resize on the next frame (ResizeObserver)
    await page.screenshot({ path: join(artefactDir, `${name}-${size.width}.png`), fullPage: size === phone });
  }
  await page.setViewportSize(before);
}

export interface Api { (method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> }

export function apiAs(api: string, token: string): Api {
  return async (method, path, body) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(`${api}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await r.text();
    return { status: r.status, body: text === '' ? null : JSON.parse(text) as unknown };
  };
}
