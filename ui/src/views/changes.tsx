// Changes between two points of a volume (a snapshot and a later one, or the live volume), from
// GET /v1/diff: a strip over the volume's address space with the changed ranges, and their total.
import { useEffect, useState } from 'preact/hooks';
import { enc, get, type Diff, type TreeNode } from '../api';
import { ErrorLine } from '../components';
import { bytes } from '../format';

/** Cells of the strip: ranges are merged into this many, so a diff of a million ranges draws as fast as ten. */
const stripCells = 600;

/** Consecutive changed cells as one run each (one rectangle: no seams between neighbours). */
function runs(cells: Float64Array): Array<{ start: number; end: number }> {
  const out: Array<{ start: number; end: number }> = [];
  for (let i = 0; i < cells.length; i += 1) {
    if (cells[i]! <= 0) continue;
    const last = out[out.length - 1];
    if (last !== undefined && last.end === i) last.end = i + 1; else out.push({ start: i, end: i + 1 });
  }
  return out;
}

export function ChangesPanel({ volume }: { volume: TreeNode }) {
  const snaps = volume.children.filter((c) => c.kind === 'snapshot').map((c) => c.name);
  const [from, setFrom] = useState<string>(snaps[snaps.length - 1] ?? '');
  const [to, setTo] = useState<string>(volume.name);
  const [diff, setDiff] = useState<Diff | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => { if (!snaps.includes(from)) setFrom(snaps[snaps.length - 1] ?? ''); }, [snaps.join('|')]);
  useEffect(() => {
    if (from === '' || from === to) { setDiff(null); return; }
    let live = true;
    get<Diff>(`/v1/diff?from=${enc(from)}&to=${enc(to)}`).then((d) => { if (live) { setDiff(d); setError(null); } }, (e: unknown) => { if (live) { setDiff(null); setError(e); } });
    return () => { live = false; };
  }, [from, to, volume]);
  if (snaps.length === 0) return <section class="changes" aria-labelledby="chg-h"><h2 id="chg-h">Changes</h2><p>Take a snapshot to see what changes after it.</p></section>;
  const cells = new Float64Array(stripCells);
  const size = Math.max(1, volume.size);
  for (const r of diff?.ranges ?? []) {
    const a = (r.offset / size) * stripCells, b = ((r.offset + r.length) / size) * stripCells;
    for (let i = Math.floor(a); i < Math.min(stripCells, Math.ceil(b)); i += 1) cells[i]! += Math.min(b, i + 1) - Math.max(a, i);
  }
  return (
    <section class="changes" aria-labelledby="chg-h">
      <h2 id="chg-h">Changes</h2>
      <div class="filters">
        <label>From <select name="diff-from" value={from} onChange={(e) => setFrom((e.target as HTMLSelectElement).value)}>
          {snaps.map((s) => <option value={s}>{s}</option>)}
        </select></label>
        <label>To <select name="diff-to" value={to} onChange={(e) => setTo((e.target as HTMLSelectElement).value)}>
          {snaps.filter((s) => snaps.indexOf(s) > snaps.indexOf(from)).map((s) => <option value={s}>{s}</option>)}
          <option value={volume.name}>{volume.name} (live)</option>
        </select></label>
      </div>
      <ErrorLine error={error} />
      {diff !== null && (
        <>
          <p class="diff-total"><strong>{bytes(diff.changedBytes)}</strong> changed in {diff.ranges.length} range(s) of {bytes(volume.size)}</p>
          <svg class="strip" viewBox={`0 0 ${stripCells} 24`} preserveAspectRatio="none" role="img"
            aria-label={`Changed ranges over the address space: ${bytes(diff.changedBytes)} in ${diff.ranges.length} ranges`}>
            <rect width={stripCells} height={24} class="strip-bg" />
            {runs(cells).map((r) => <rect x={r.start} width={r.end - r.start} height={24} class="strip-on" />)}
          </svg>
          <div class="strip-axis"><span>0</span><span>{bytes(volume.size)}</span></div>
        </>
      )}
    </section>
  );
}
