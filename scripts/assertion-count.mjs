#!/usr/bin/env node
// Counts assertions and functions per file of the engine (src/engine, device/ included), with the
// TypeScript parser: functions are function declarations, methods, constructors and accessors (not the
// arrow functions passed as callbacks); assertions are calls of assert(), fail(), a lock's
// assertHeld(), the tree walks' checkDepth() and the block validators' violation() rules. Prints a table and the engine's ratio.
//   node scripts/assertion-count.mjs            the working tree
//   node scripts/assertion-count.mjs --ref REV  the engine at a git revision (e.g. the base)
//   --json                                      machine-readable (the tidy test may use it)
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';

// violation(): a rule of a block validator (format.ts), asserted before every write and checked after every read.
const ASSERTION_CALLS = new Set(['assert', 'fail', 'assertHeld', 'checkDepth', 'violation']);

/** { functions, assertions } of one source text. */
export function countSource(text, name = 'file.ts') {
  const source = ts.createSourceFile(name, text, ts.ScriptTarget.Latest, true);
  let functions = 0, assertions = 0;
  const visit = (node) => {
    if (ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node) || ts.isConstructorDeclaration(node)
      || ts.isGetAccessorDeclaration(node) || ts.isSetAccessorDeclaration(node)) {
      if (node.body) functions++;
    }
    if (ts.isCallExpression(node)) {
      const callee = node.expression;
      const called = ts.isIdentifier(callee) ? callee.text : ts.isPropertyAccessExpression(callee) ? callee.name.text : '';
      if (ASSERTION_CALLS.has(called)) assertions++;
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return { functions, assertions };
}

function filesAt(ref) {
  if (ref === null) {
    const out = [];
    const walk = (dir) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, e.name);
        if (e.isDirectory()) walk(path);
        else if (e.name.endsWith('.ts')) out.push({ path: relative('.', path), text: readFileSync(path, 'utf8') });
      }
    };
    walk('src/engine');
    return out;
  }
  const names = execFileSync('git', ['ls-tree', '-r', '--name-only', ref, 'src/engine'], { encoding: 'utf8' })
    .split('\n').filter((n) => n.endsWith('.ts'));
  return names.map((path) => ({ path, text: execFileSync('git', ['show', `${ref}:${path}`], { encoding: 'utf8' }) }));
}

const args = process.argv.slice(2);
const refAt = args.indexOf('--ref');
const ref = refAt >= 0 ? args[refAt + 1] : null;
const rows = filesAt(ref).map((f) => ({ file: f.path, ...countSource(f.text, f.path) })).sort((a, b) => a.file.localeCompare(b.file));
const total = rows.reduce((t, r) => ({ functions: t.functions + r.functions, assertions: t.assertions + r.assertions }), { functions: 0, assertions: 0 });
if (args.includes('--json')) {
  process.stdout.write(`${JSON.stringify({ ref, files: rows, total }, null, 2)}\n`);
} else {
  for (const r of rows) {
    process.stdout.write(`${r.file.padEnd(36)} ${String(r.functions).padStart(4)} functions ${String(r.assertions).padStart(4)} assertions  ${(r.functions ? r.assertions / r.functions : 0).toFixed(2)}\n`);
  }
  process.stdout.write(`${'engine'.padEnd(36)} ${String(total.functions).padStart(4)} functions ${String(total.assertions).padStart(4)} assertions  ${(total.assertions / total.functions).toFixed(2)} per function\n`);
}
