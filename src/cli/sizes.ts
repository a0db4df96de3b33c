// Human sizes: parsing "10G", "512M", "4096" (powers of 1024) and printing bytes as "1.5G".
// Shared by the CLI and the daemon's config so a size means the same thing everywhere.

const unitShift: Record<string, number> = { '': 0, B: 0, K: 10, M: 20, G: 30, T: 40, P: 50 };

/** Parses bytes or a K/M/G/T/P (1024-based) size; returns null when it is not a size. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text);
  if (m === null) return null;
  const shift = unitShift[m[2]!.toUpperCase()]!;
  const bytes = Number(m[1]) * 2 ** shift;
  return Number.isSafeInteger(bytes) ? bytes : Number.isFinite(bytes) && bytes < Number.MAX_SAFE_INTEGER ? Math.round(bytes) : null;
}

/** "0", "512B", "4K", "1.5G": one decimal below 10 units, none above. */
export function formatSize(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return '-';
  if (bytes < 1024) return `${bytes}B`;
  const units = ['K', 'M', 'G', 'T', 'P'];
  let value = bytes / 1024;
  let i = 0;
  while (value >= 1023.95 && i < units.length - 1) { value /= 1024; i += 1; }
  const text = value < 10 && !Number.isInteger(value) ? value.toFixed(1) : Math.round(value).toString();
  return `${text.replace(/\.0$/, '')}${units[i]}`;
}
