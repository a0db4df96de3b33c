// CLI output: aligned tables, key/value listings and JSON. Output goes through these helpers so
// every command prints the same way, and --json always prints the API's objects unchanged.

export interface Column<T> { header: string; value: (row: T) => string; right?: boolean }

export function table<T>(rows: T[], columns: Column<T>[]): string {
  const cells = rows.map((row) => columns.map((c) => c.value(row)));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) => values
    .map((v, i) => (columns[i]!.right === true ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
    .join('  ').trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n');
}

export function keyValues(pairs: Array<[string, string]>): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}`).join('\n');
}

export function printJson(value: unknown): void { process.stdout.write(`${JSON.stringify(value, null, 2)}\n`); }
export function print(text: string): void { process.stdout.write(`${text}\n`); }

export function when(ms: number | undefined): string {
  if (ms === undefined) return '-';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}
