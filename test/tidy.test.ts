// The house rules, checked by a program (TigerBeetle's tidy.zig): layering, no silent catch, docs and
// comments that name only what exists, the engine's assertion density, and the naming of bounds.
// It reads the source tree as text; it runs nothing. A failure names the file and line to mend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
// Compiled to dist/test/ by `npm test`, or run from test/ with tsx: the repository root is where package.json is.
const root = existsSync(join(here, '..', 'package.json')) ? resolve(here, '..') : resolve(here, '..', '..');

function walk(dir: string, keep: (path: string) => boolean): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir))) {
    const rel = join(dir, name);
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    if (statSync(join(root, rel)).isDirectory()) out.push(...walk(rel, keep));
    else if (keep(rel)) out.push(rel);
  }
  return out.sort();
}

const tsFiles = ['src', 'sim', 'bench', 'test'].flatMap((d) => walk(d, (p) => p.endsWith('.ts')));
const read = (rel: string): string => readFileSync(join(root, rel), 'utf8');
const lineOf = (text: string, index: number): number => text.slice(0, index).split('\n').length;

test('layering: outside the engine, src/ imports the engine only through src/engine/index.ts', () => {
  const bad: string[] = [];
  for (const file of tsFiles.filter((f) => f.startsWith('src/') && !f.startsWith('src/engine/'))) {
    const text = read(file);
    for (const m of text.matchAll(/(?:import|export)[^'"]*from\s+'([^']+)'/g)) {
      const spec = m[1]!;
      if (!spec.startsWith('.')) continue;
      const target = relative(root, resolve(root, dirname(file), spec));
      if (target.startsWith('src/engine/') && target !== 'src/engine/index.js') {
        bad.push(`${file}:${lineOf(text, m.index)} imports ${spec}`);
      }
    }
  }
  assert.ok(bad.length === 0, `import what you need from src/engine/index.ts instead:\n${bad.join('\n')}`);
});

test('the engine imports nothing above it', () => {
  const bad: string[] = [];
  for (const file of tsFiles.filter((f) => f.startsWith('src/engine/'))) {
    const text = read(file);
    for (const m of text.matchAll(/from\s+'([^']+)'/g)) {
      const spec = m[1]!;
      if (!spec.startsWith('.')) continue;
      const target = relative(root, resolve(root, dirname(file), spec));
      if (!target.startsWith('src/engine/')) bad.push(`${file}:${lineOf(text, m.index)} imports ${spec}`);
    }
    if (/from\s+'node:(net|http|https|tls|dgram)'/.test(text)) bad.push(`${file}: network module in the engine`);
  }
  assert.deepEqual(bad, []);
});

/**
 * A catch that drops its error must say why on the line before or on its own line: an error that
 * vanishes without a word is how a failed rollback or a failed background commit goes unnoticed.
 */
test('no catch swallows an error without a comment saying why', () => {
  const bad: string[] = [];
  const swallow = /catch\s*(\([^)]*\))?\s*\{\s*\}|\.catch\(\s*\(\)\s*=>\s*(undefined|\{\s*\}|null|void 0)\s*\)/g;
  for (const file of tsFiles.filter((f) => !f.startsWith('test/'))) {
    const lines = read(file).split('\n');
    lines.forEach((line, i) => {
      if (!swallow.test(line)) return;
      swallow.lastIndex = 0;
      // The reason stands on the line, or in a comment ending at most two lines above (a JSDoc
      // over the one-line function that holds the catch).
      const above = lines.slice(Math.max(0, i - 3), i);
      if (line.includes('//') || above.some((l) => /^\s*(\/\/|\*)/.test(l))) return;
      bad.push(`${file}:${i + 1}: ${line.trim()}`);
    });
    swallow.lastIndex = 0;
  }
  assert.ok(bad.length === 0, `handle the error, log it with context, or say in a comment why ignoring it is right:\n${bad.join('\n')}`);
});

// ---- docs and comments name only what exists ----

const docFiles = ['README.md', 'ARCHITECTURE.md', ...walk('docs', (p) => p.endsWith('.md')),
  ...walk('native', (p) => p.endsWith('.md')), ...walk('src', (p) => p.endsWith('.md'))];
const repoFiles = new Set([...walk('.', () => true)].map((p) => p.replace(/^\.\//, '')));
const baseNames = new Set([...repoFiles].map((p) => p.split('/').pop()!));
const pathPattern = /\b((?:src|test|sim|bench|docs|scripts|native|deploy|\.ci)\/[\w./-]*[\w-]\.(?:ts|js|md|sh|c|h|ya?ml|proto|json))\b/g;
const bareFilePattern = /`([\w-]+\.(?:ts|md|sh|c|proto))`/g;

/** A path as written in prose: a compiled .js under test/ or sim/ stands for its .ts source. */
function pathExists(path: string): boolean {
  if (repoFiles.has(path)) return true;
  if (path.endsWith('.js') && repoFiles.has(path.replace(/\.js$/, '.ts'))) return true;
  return false;
}

/** The comments of a source file, in place: code is blanked but its line breaks stay, so line numbers hold. */
function commentsOf(text: string): string {
  let out = '', at = 0;
  for (const m of text.matchAll(/\/\/[^\n]*|\/\*[\s\S]*?\*\//g)) {
    out += text.slice(at, m.index).replace(/[^\n]/g, ' ') + m[0];
    at = m.index + m[0].length;
  }
  return out + text.slice(at).replace(/[^\n]/g, ' ');
}

test('every file named in the docs or in a comment exists', () => {
  const bad: string[] = [];
  const sources: Array<[string, string]> = [
    ...docFiles.map((f): [string, string] => [f, read(f)]),
    ...tsFiles.map((f): [string, string] => [f, commentsOf(read(f))]),
  ];
  for (const [file, text] of sources) {
    for (const m of text.matchAll(pathPattern)) {
      const path = m[1]!;
      if (path.includes('*') || path.startsWith('dist/')) continue;
      if (!pathExists(path)) bad.push(`${file}: ${path}`);
    }
    for (const m of text.matchAll(bareFilePattern)) {
      if (!baseNames.has(m[1]!) && !baseNames.has(m[1]!.replace(/\.js$/, '.ts'))) bad.push(`${file}: ${m[1]}`);
    }
  }
  assert.ok(bad.length === 0, `named but missing:\n${[...new Set(bad)].join('\n')}`);
});

test('every code symbol the docs or a comment name (`Class.member`, `name()`) exists in the source', () => {
  const source = tsFiles.map(read).join('\n');
  const identifiers = new Set(source.match(/[A-Za-z_$][\w$]*/g) ?? []);
  const bad: string[] = [];
  const sources: Array<[string, string]> = [
    ...docFiles.map((f): [string, string] => [f, read(f)]),
    ...tsFiles.map((f): [string, string] => [f, commentsOf(read(f))]),
  ];
  for (const [file, text] of sources) {
    for (const m of text.matchAll(/`([A-Z][A-Za-z0-9]+)\.([a-z][A-Za-z0-9]+)(?:\(\))?`/g)) {
      if (m[1]! in globalThis) continue; // a JavaScript built-in (Atomics.wait), not ours
      if (!identifiers.has(m[1]!) || !identifiers.has(m[2]!)) bad.push(`${file}:${lineOf(text, m.index)}: ${m[0]}`);
    }
    for (const m of text.matchAll(/`([a-z][A-Za-z0-9]+)\(\)`/g)) {
      if (!identifiers.has(m[1]!)) bad.push(`${file}:${lineOf(text, m.index)}: ${m[0]}`);
    }
  }
  assert.ok(bad.length === 0, `named but missing:\n${bad.join('\n')}`);
});

// ---- the engine's assertions ----

interface AssertionCounts { files: Array<{ file: string; functions: number; assertions: number }>; total: { functions: number; assertions: number } }

/** scripts/assertion-count.mjs (the TypeScript parser's count of functions and assertion calls) as data. */
function assertionCounts(): AssertionCounts {
  const out = execFileSync(process.execPath, [join(root, 'scripts', 'assertion-count.mjs'), '--json'], { cwd: root, encoding: 'utf8' });
  return JSON.parse(out) as AssertionCounts;
}

/**
 * Each engine file's assertions may grow, never fall below what it had when this floor was set: an
 * edit that drops a check must say so here. Raise a floor when a file gains assertions.
 */
const ASSERTION_FLOORS: Record<string, number> = {
  'src/engine/block-writer.ts': 4,
  'src/engine/btree.ts': 36,
  'src/engine/catalog.ts': 26,
  'src/engine/check.ts': 8,
  'src/engine/checksum.ts': 3,
  'src/engine/constants.ts': 21,
  'src/engine/data-path.ts': 20,
  'src/engine/device/file-device.ts': 21,
  'src/engine/device/inline-io.ts': 3,
  'src/engine/device/prng.ts': 5,
  'src/engine/device/sim-device.ts': 30,
  'src/engine/deferred-data.ts': 15,
  'src/engine/diff.ts': 6,
  'src/engine/engine.ts': 40,
  'src/engine/errors.ts': 8,
  'src/engine/flatten.ts': 4,
  'src/engine/format.ts': 37,
  'src/engine/gather.ts': 7,
  'src/engine/held-blocks.ts': 16,
  'src/engine/intent-log.ts': 15,
  'src/engine/intent-log-format.ts': 10,
  'src/engine/intent-log-replay.ts': 12,
  'src/engine/key-order.ts': 7,
  'src/engine/leaf-extents.ts': 15,
  'src/engine/meta-store.ts': 20,
  'src/engine/mutex.ts': 6,
  'src/engine/names.ts': 3,
  'src/engine/pool-file.ts': 1,
  'src/engine/pool.ts': 37,
  'src/engine/radix.ts': 29,
  'src/engine/space-map.ts': 36,
  'src/engine/space-usage.ts': 1,
  'src/engine/superblock-recovery.ts': 5,
  'src/engine/superblock.ts': 5,
};

test('the engine keeps at least one assertion per function, and no file falls below its floor', () => {
  const counts = assertionCounts();
  assert.ok(counts.total.functions > 100, `counted ${counts.total.functions} functions: the counter is broken`);
  const ratio = counts.total.assertions / counts.total.functions;
  assert.ok(ratio >= 1, `the engine has ${counts.total.assertions} assertions for ${counts.total.functions} functions (${ratio.toFixed(2)})`);
  const bad: string[] = [];
  for (const [file, floor] of Object.entries(ASSERTION_FLOORS)) {
    const row = counts.files.find((r) => r.file === file);
    if (row === undefined) bad.push(`${file}: gone (remove its floor)`);
    else if (row.assertions < floor) bad.push(`${file}: ${row.assertions} assertions, floor ${floor}`);
  }
  assert.ok(bad.length === 0, bad.join('\n'));
});

// ---- bounds ----

/**
 * Bounds are named in one convention (TigerBeetle's): SCREAMING_SNAKE_CASE, the unit before the
 * qualifier, biggest first (`REQUEST_BYTES_MAX`, not `MAX_REQUEST_BYTES` or `requestBytesMax`).
 */
test('engine and NBD bounds are SCREAMING_SNAKE_CASE with the qualifier last', () => {
  const bad: string[] = [];
  for (const file of ['src/engine/constants.ts', 'src/nbd/constants.ts']) {
    const text = read(file);
    for (const m of text.matchAll(/^export const (\w+)\s*=/gm)) {
      const name = m[1]!;
      if (!/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/.test(name)) bad.push(`${file}:${lineOf(text, m.index)} ${name}: not SCREAMING_SNAKE_CASE`);
      else if (/^(MAX|MIN)_|_(MAX|MIN)_/.test(name)) bad.push(`${file}:${lineOf(text, m.index)} ${name}: the qualifier (MAX, MIN) goes last`);
    }
  }
  assert.ok(bad.length === 0, bad.join('\n'));
});
