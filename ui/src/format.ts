// How numbers read on the dashboard: bytes in binary units, rates per second, times in ms.

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v.toFixed(0) : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${units[i]}`;
}

export function rate(n: number): string { return `${bytes(n)}/s`; }

export function count(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)} k`;
  return n < 10 && !Number.isInteger(n) ? n.toFixed(1) : n.toFixed(0);
}

export function percent(part: number, whole: number): string {
  return whole <= 0 ? '—' : `${((100 * part) / whole).toFixed(1)} %`;
}

export function when(ms: number | null): string {
  if (ms === null) return '—';
  const d = new Date(ms);
  const pad = (x: number) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "acme/db" → tenant acme; a name without "/" belongs to the default tenant. */
export function tenantOf(engineName: string): string {
  const slash = engineName.indexOf('/');
  return slash < 0 ? 'default' : engineName.slice(0, slash);
}

/** Parses "10G", "512M", "1.5 GiB", "4096" into bytes (binary units); null when it does not read. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (m === null) return null;
  const power = ' kmgtp'.indexOf((m[2] ?? '').toLowerCase() || ' ');
  const n = Math.round(Number(m[1]) * 1024 ** Math.max(0, power));
  return n - (n % 4096);
}
