// Volumes and snapshots in one list: searchable, sortable, and virtualised (only the rows in view are
// in the DOM, so 1 000 volumes and 10 000 snapshots scroll as fast as ten). Exclusive bytes cost a
// space query each, so they are fetched for the rows in view only. A create form for volumes.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { call, enc, get, listAll, type Qos, type Snapshot, type Volume, type Whoami } from '../api';
import { ErrorLine, useLoad } from '../components';
import { bytes, parseSize, when } from '../format';

/** Fixed row height (px): what makes the windowing arithmetic exact. */
const rowHeightPx = 40;
/** Rows rendered beyond each edge of the view, so a fast scroll shows no blank. */
const overscanRows = 10;
/** Space queries in flight at once for the visible rows' exclusive bytes. */
const spaceQueriesMax = 4;

interface Row { kind: 'volume' | 'snapshot'; name: string; volume: string; size: number; mappedBytes: number; createdMs: number; origin: string | null; qos: Qos | null; nbdUri: string | null }
type SortKey = 'name' | 'kind' | 'size' | 'mappedBytes' | 'createdMs';

function qosText(q: Qos | null): string {
  if (q === null) return '';
  const parts: string[] = [];
  if (q.iopsMax !== null) parts.push(`${q.iopsMax} IOPS`);
  if (q.readIopsMax !== null) parts.push(`r ${q.readIopsMax} IOPS`);
  if (q.writeIopsMax !== null) parts.push(`w ${q.writeIopsMax} IOPS`);
  if (q.bpsMax !== null) parts.push(`${bytes(q.bpsMax)}/s`);
  if (q.readBpsMax !== null) parts.push(`r ${bytes(q.readBpsMax)}/s`);
  if (q.writeBpsMax !== null) parts.push(`w ${bytes(q.writeBpsMax)}/s`);
  return parts.join(', ');
}

async function loadRows(): Promise<Row[]> {
  const [volumes, snapshots] = await Promise.all([listAll<Volume>('/v1/volumes'), listAll<Snapshot>('/v1/snapshots')]);
  return [
    ...volumes.map((v): Row => ({ kind: 'volume', name: v.name, volume: v.name, size: v.size, mappedBytes: v.mappedBytes, createdMs: v.createdMs, origin: v.origin, qos: v.qos, nbdUri: v.nbdUri })),
    ...snapshots.map((s): Row => ({ kind: 'snapshot', name: s.name, volume: s.volume, size: s.size, mappedBytes: s.mappedBytes, createdMs: s.createdMs, origin: null, qos: null, nbdUri: s.nbdUri })),
  ];
}

function CreateVolume({ onCreated }: { onCreated: (name: string) => void }) {
  const [name, setName] = useState('');
  const [size, setSize] = useState('1G');
  const [error, setError] = useState<unknown>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    const bytesWanted = parseSize(size);
    if (bytesWanted === null || bytesWanted <= 0) { setError(new Error('Size: a number with an optional unit, e.g. 10G or 512M')); return; }
    try {
      await call('POST', '/v1/volumes', { name: name.trim(), size: bytesWanted });
      setError(null); setName('');
      onCreated(name.trim());
    } catch (err) { setError(err); }
  };
  return (
    <form class="inline-form" onSubmit={submit} aria-label="Create a volume">
      <label>Name <input name="volume-name" required value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} /></label>
      <label>Size <input name="volume-size" required size={6} value={size} onInput={(e) => setSize((e.target as HTMLInputElement).value)} /></label>
      <button type="submit">Create volume</button>
      <ErrorLine error={error} />
    </form>
  );
}

export function VolumesView({ who }: { who: Whoami }) {
  const rows = useLoad(loadRows, []);
  const [query, setQuery] = useState('');
  const [kind, setKind] = useState<'all' | 'volume' | 'snapshot'>('all');
  const [sort, setSort] = useState<{ key: SortKey; up: boolean }>({ key: 'name', up: true });
  const [scrollTop, setScrollTop] = useState(0);
  const [viewPx, setViewPx] = useState(600);
  const [exclusive, setExclusive] = useState<Map<string, number | null>>(new Map());
  const box = useRef<HTMLDivElement>(null);
  const showTenant = who.role === 'admin';

  const shown = useMemo(() => {
    const q = query.trim().toLowerCase();
    const list = (rows.value ?? []).filter((r) => (kind === 'all' || r.kind === kind) && (q === '' || r.name.toLowerCase().includes(q)));
    const dir = sort.up ? 1 : -1;
    const key = sort.key;
    list.sort((a, b) => {
      const x = a[key], y = b[key];
      return (typeof x === 'string' ? x.localeCompare(y as string) : (x as number) - (y as number)) * dir || a.name.localeCompare(b.name);
    });
    return list;
  }, [rows.value, query, kind, sort]);

  useEffect(() => {
    const el = box.current;
    if (el === null) return undefined;
    const ro = new ResizeObserver(() => setViewPx(el.clientHeight));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const first = Math.max(0, Math.floor(scrollTop / rowHeightPx) - overscanRows);
  const last = Math.min(shown.length, Math.ceil((scrollTop + viewPx) / rowHeightPx) + overscanRows);
  const visible = shown.slice(first, last);

  // Exclusive bytes of the rows in view, a few queries at a time; remembered while the view lives.
  useEffect(() => {
    const wanted = visible.map((r) => r.name).filter((n) => !exclusive.has(n)).slice(0, 40);
    if (wanted.length === 0) return undefined;
    let live = true;
    const found = new Map<string, number | null>();
    const worker = async () => {
      for (let n = wanted.shift(); n !== undefined && live; n = wanted.shift()) {
        try { found.set(n, (await get<{ exclusiveBytes: number }>(`/v1/volumes/${enc(n)}/space`)).exclusiveBytes); } catch {
          // Gone since the list was read (or not reachable): shown as unknown.
          found.set(n, null);
        }
      }
    };
    void Promise.all(Array.from({ length: spaceQueriesMax }, worker)).then(() => {
      if (live) setExclusive((m) => new Map([...m, ...found]));
    });
    return () => { live = false; };
  }, [first, last, shown]);

  const header = (key: SortKey, label: string, cls = '') => (
    <th scope="col" class={cls} aria-sort={sort.key === key ? (sort.up ? 'ascending' : 'descending') : 'none'}>
      <button type="button" class="sort" onClick={() => setSort((s) => ({ key, up: s.key === key ? !s.up : true }))}>
        {label}{sort.key === key ? (sort.up ? ' ▲' : ' ▼') : ''}
      </button>
    </th>
  );
  const volumeCount = (rows.value ?? []).filter((r) => r.kind === 'volume').length;
  return (
    <section aria-labelledby="vol-h" class="volumes">
      <h1 id="vol-h">Volumes</h1>
      {who.role !== 'reader' && <CreateVolume onCreated={(n) => { location.hash = `#/volume/${enc(n)}`; }} />}
      <div class="filters">
        <label>Search <input type="search" name="search" value={query} onInput={(e) => { setQuery((e.target as HTMLInputElement).value); box.current?.scrollTo(0, 0); }} /></label>
        <label>Show <select name="kind" value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value as typeof kind)}>
          <option value="all">volumes and snapshots</option><option value="volume">volumes</option><option value="snapshot">snapshots</option>
        </select></label>
        <span class="count" aria-live="polite">{shown.length} shown · {volumeCount} volumes, {(rows.value?.length ?? 0) - volumeCount} snapshots</span>
        <button type="button" onClick={() => { setExclusive(new Map()); rows.reload(); }}>Refresh</button>
      </div>
      <ErrorLine error={rows.error} />
      <div class="vlist" ref={box} tabIndex={0} aria-label="Volumes and snapshots" onScroll={(e) => setScrollTop((e.target as HTMLDivElement).scrollTop)}>
        <table class="grid" aria-rowcount={shown.length + 1}>
          <thead>
            <tr>
              {header('name', 'Name', 'col-name')}{header('kind', 'Kind', 'narrow-hide')}{header('size', 'Size', 'num')}{header('mappedBytes', 'Mapped', 'num')}
              <th scope="col" class="num">Exclusive</th>
              {showTenant && <th scope="col" class="opt">Tenant</th>}
              <th scope="col" class="opt">Origin</th><th scope="col" class="opt">QoS</th><th scope="col" class="opt">Export</th>
              {header('createdMs', 'Created', 'opt')}
            </tr>
          </thead>
          <tbody>
            {first > 0 && <tr aria-hidden="true" style={{ height: `${first * rowHeightPx}px` }} />}
            {visible.map((r, i) => (
              <tr key={r.name} aria-rowindex={first + i + 2} class={r.kind}>
                <td class="col-name"><a href={`#/volume/${enc(r.volume)}`} title={r.name}>{r.name}</a></td>
                <td class="narrow-hide">{r.kind}</td>
                <td class="num">{bytes(r.size)}</td>
                <td class="num">{bytes(r.mappedBytes)}</td>
                <td class="num">{exclusive.has(r.name) ? bytes(exclusive.get(r.name)) : '…'}</td>
                {showTenant && <td class="opt">{r.name.includes('/') ? r.name.slice(0, r.name.indexOf('/')) : 'default'}</td>}
                <td class="opt">{r.origin ?? ''}</td>
                <td class="opt">{qosText(r.qos)}</td>
                <td class="opt"><code title={r.nbdUri ?? ''}>{r.nbdUri ?? ''}</code></td>
                <td class="opt">{when(r.createdMs)}</td>
              </tr>
            ))}
            {last < shown.length && <tr aria-hidden="true" style={{ height: `${(shown.length - last) * rowHeightPx}px` }} />}
          </tbody>
        </table>
      </div>
    </section>
  );
}
