// Command-line numbers of the simulators' runners (sim/run.ts, sim/cluster/run.ts).

/** A whole number in [0, max] from `--name`, or `fallback` when the flag is absent; a clear error otherwise. */
export function parseCount(value: string | undefined, fallback: number, max: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > max) throw new Error(`--${name} must be an integer in [0, ${max}], got ${value}`);
  return n;
}
