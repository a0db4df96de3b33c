// A volume's lineage: its snapshots and clones as a tree (a clone beside the snapshot or volume it
// came from; a deleted volume kept for its snapshots drawn dashed), each member's exclusive and shared
// bytes and creation time, the everyday actions on the selected member, and the changes between two
// points of the volume (the diff API) as a strip over its address space.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { ApiError, call, enc, get, listAll, waitForJob, type Job, type TreeNode, type Volume, type Whoami } from '../api';
import { ConfirmDialog, ErrorLine, Progress, useLoad } from '../components';
import { bytes, when } from '../format';
import { layoutTree, type PlacedNode } from '../tree-layout';
import { ChangesPanel } from './changes';

const columnPx = 236;
const rowPx = 66;
const nodeWidthPx = 208;
const nodeHeightPx = 54;
const marginPx = 8;

function qosSummary(v: Volume): string {
  const q = v.qos!;
  const parts = [q.iopsMax !== null ? `${q.iopsMax} IOPS` : '', q.bpsMax !== null ? `${bytes(q.bpsMax)}/s` : '',
    q.readIopsMax !== null ? `read ${q.readIopsMax} IOPS` : '', q.writeIopsMax !== null ? `write ${q.writeIopsMax} IOPS` : '',
    q.readBpsMax !== null ? `read ${bytes(q.readBpsMax)}/s` : '', q.writeBpsMax !== null ? `write ${bytes(q.writeBpsMax)}/s` : ''];
  return parts.filter((p) => p !== '').join(', ') || 'none';
}

function shortName(n: TreeNode): string {
  return n.kind === 'snapshot' ? `@${n.name.slice(n.name.indexOf('@') + 1)}` : n.name;
}
function shared(n: TreeNode): number | null {
  return n.exclusiveBytes === null ? null : Math.max(0, n.mappedBytes - n.exclusiveBytes);
}
function truncate(s: string, max: number): string { return s.length <= max ? s : `${s.slice(0, max - 1)}…`; }

/** Rows drawn beyond each edge of the tree's scroll box (a lineage may hold 10 000 members). */
const overscanRows = 12;

function TreeDrawing({ root, selected, onSelect }: { root: TreeNode; selected: string | null; onSelect: (n: TreeNode) => void }) {
  const { nodes, rows, depth } = useMemo(() => layoutTree(root), [root]);
  const box = useRef<HTMLDivElement>(null);
  const [view, setView] = useState({ top: 0, height: 600 });
  useEffect(() => {
    const el = box.current;
    if (el === null) return undefined;
    const ro = new ResizeObserver(() => setView({ top: el.scrollTop, height: el.clientHeight }));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  const width = (depth + 1) * columnPx + marginPx * 2;
  const height = rows * rowPx + marginPx * 2;
  const x = (p: PlacedNode) => marginPx + p.depth * columnPx;
  const y = (p: PlacedNode) => marginPx + p.row * rowPx;
  // Only the members in (or near) the scroll box are drawn; an edge is drawn when its span of rows is.
  const firstRow = Math.floor(view.top / rowPx) - overscanRows;
  const lastRow = Math.ceil((view.top + view.height) / rowPx) + overscanRows;
  const shown = nodes.filter((p) => p.row >= firstRow && p.row <= lastRow);
  const edges = nodes.filter((p) => p.parent !== null && p.parent.row <= lastRow && p.row >= firstRow);
  return (
    <div class="tree-scroll" ref={box} onScroll={(e) => { const el = e.target as HTMLDivElement; setView({ top: el.scrollTop, height: el.clientHeight }); }}>
      <svg class="tree" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="group" aria-label={`Lineage of ${root.name}: ${nodes.length} members`}>
        {edges.map((p) => {
          const par = p.parent!;
          const x1 = x(par) + nodeWidthPx, y1 = y(par) + nodeHeightPx / 2, x2 = x(p), y2 = y(p) + nodeHeightPx / 2;
          const mid = (x1 + x2) / 2;
          return <path key={`e-${p.node.name}`} class="edge" d={`M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`} />;
        })}
        {shown.map((p) => {
          const n = p.node;
          const cls = ['node', n.kind, n.deleted === true ? 'deleted' : '', n.current ? 'current' : '', selected === n.name ? 'selected' : ''].join(' ');
          const space = n.deleted === true ? 'deleted: kept for its snapshots' : `excl ${bytes(n.exclusiveBytes)} · shared ${bytes(shared(n))}`;
          // Named by its visible text (what a sighted user reads is what a screen reader hears); the
          // full name and kind are its description.
          const description = `${n.kind} ${n.name}${n.deleted === true ? ', deleted, kept for its snapshots' : ''}, exclusive ${bytes(n.exclusiveBytes)}, shared ${bytes(shared(n))}`;
          return (
            <g key={n.name} class={cls} transform={`translate(${x(p)},${y(p)})`} tabIndex={0} role="button" aria-pressed={selected === n.name}
              data-name={n.name} onClick={() => onSelect(n)} onKeyDown={(e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onSelect(n); } }}>
              <rect width={nodeWidthPx} height={nodeHeightPx} rx={6} />
              <text x={10} y={21} class="node-name">{truncate(shortName(n), 24)}</text>
              <text x={10} y={41} class="node-space">{space}</text>
              <desc>{description}</desc>
            </g>
          );
        })}
      </svg>
    </div>
  );
}

type Pending = { title: string; text: string; confirm: string; run: () => Promise<void> } | null;

function findNode(root: TreeNode, name: string): TreeNode | null {
  if (root.name === name) return root;
  for (const c of root.children) { const f = findNode(c, name); if (f !== null) return f; }
  return null;
}
/** The first live volume under `node` (a clone that survives when `node` is deleted). */
function survivingClone(node: TreeNode): string | null {
  for (const c of node.children) {
    if (c.kind === 'volume' && c.deleted !== true) return c.name;
    const deeper = survivingClone(c);
    if (deeper !== null) return deeper;
  }
  return null;
}

function Actions({ node, pageVolume, canWrite, onDone }: { node: TreeNode; pageVolume: string; canWrite: boolean; onDone: (goTo?: string) => void }) {
  const [name, setName] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [progress, setProgress] = useState<{ label: string; value: number } | null>(null);
  const [pending, setPending] = useState<Pending>(null);
  const volumeInfo = useLoad(() => (node.kind === 'volume' && node.deleted !== true ? get<Volume>(`/v1/volumes/${enc(node.name)}`) : Promise.resolve(null)), [node.name]);
  useEffect(() => { setError(null); setName(''); }, [node.name]);
  const run = async (work: () => Promise<void>) => {
    setError(null);
    try { await work(); } catch (err) { setError(err); } finally { setProgress(null); }
  };
  const volumeOf = node.kind === 'snapshot' ? node.name.slice(0, node.name.indexOf('@')) : node.name;
  const snapName = node.kind === 'snapshot' ? node.name.slice(node.name.indexOf('@') + 1) : '';
  const afterJob = async (status: number, job: Job | null, label: string) => {
    if (status === 202 && job !== null) await waitForJob(job.id, (value) => setProgress({ label, value }));
  };
  const snapshot = () => run(async () => {
    await call('POST', `/v1/volumes/${enc(node.name)}/snapshots`, { name: name.trim() });
    setName(''); onDone();
  });
  const clone = () => run(async () => {
    const target = name.trim();
    await call('POST', '/v1/volumes', { name: target, from: node.name });
    setName(''); onDone();
  });
  const flatten = () => run(async () => {
    setProgress({ label: `Flattening ${node.name}`, value: 0 });
    const r = await call<Job>('POST', `/v1/volumes/${enc(node.name)}/flatten`);
    await afterJob(r.status, r.data, `Flattening ${node.name}`);
    onDone();
  });
  const askRevert = () => setPending({
    title: `Revert ${volumeOf}?`, confirm: 'Revert',
    text: `${volumeOf} goes back to its content at snapshot ${snapName}. Everything written to it since is lost (snapshots taken later stay).`,
    run: () => run(async () => { await call('POST', `/v1/volumes/${enc(volumeOf)}/revert`, { snapshot: snapName }); onDone(); }),
  });
  const askDelete = () => {
    const frees = node.exclusiveBytes === null ? 'an unknown amount' : `about ${bytes(node.exclusiveBytes)}`;
    const kept = node.children.length === 0 ? '' : node.kind === 'volume'
      ? ` Its ${node.children.length} snapshot(s) and clone(s) keep working; what they share with it stays allocated.`
      : ` Its ${node.children.length} clone(s) keep working; what they share with it stays allocated.`;
    setPending({
      title: `Delete ${node.name}?`, confirm: 'Delete',
      text: `Deleting ${node.kind} ${node.name} frees ${frees} (the blocks only it holds).${kept}`,
      run: () => run(async () => {
        const url = node.kind === 'volume' ? `/v1/volumes/${enc(node.name)}` : `/v1/volumes/${enc(volumeOf)}/snapshots/${enc(snapName)}`;
        setProgress({ label: `Deleting ${node.name}`, value: 0 });
        const r = await call<Job | null>('DELETE', url);
        await afterJob(r.status, r.data, `Deleting ${node.name}`);
        // The page's own volume is gone: follow a clone that survives it (or go back to the list).
        onDone(node.kind === 'volume' && node.name === pageVolume ? survivingClone(node) ?? '' : undefined);
      }),
    });
  };
  const v = volumeInfo.value;
  return (
    <div class="actions">
      <dl class="facts">
        <dt>Kind</dt><dd>{node.deleted === true ? 'deleted volume (kept while its snapshots exist)' : node.kind}</dd>
        <dt>Size</dt><dd>{bytes(node.size)}</dd>
        <dt>Mapped</dt><dd>{bytes(node.mappedBytes)}</dd>
        <dt>Exclusive</dt><dd>{bytes(node.exclusiveBytes)}</dd>
        <dt>Shared</dt><dd>{bytes(shared(node))}</dd>
        <dt>Created</dt><dd>{when(node.createdMs)}</dd>
        {v !== null && v.origin !== null && <><dt>Origin</dt><dd>{v.origin}</dd></>}
        {v !== null && v.nbdUri !== null && <><dt>Export</dt><dd><code>{v.nbdUri}</code></dd></>}
        {v !== null && v.qos !== null && <><dt>QoS</dt><dd>{qosSummary(v)}</dd></>}
        {v?.replicas !== undefined && v.replicas.length > 0 && (
          <><dt>Replicas</dt><dd><ul class="replicas">{v.replicas.map((r) => (
            <li>{r.node}{r.primary === true ? ' (primary)' : ''}: {r.state}{typeof r.rebuildProgress === 'number' && r.state !== 'healthy' ? ` ${(r.rebuildProgress * 100).toFixed(0)} %` : ''}</li>
          ))}</ul></dd></>
        )}
      </dl>
      {canWrite && node.deleted !== true && (
        <>
          <form class="inline-form" onSubmit={(e) => { e.preventDefault(); }} aria-label={`Actions on ${node.name}`}>
            <label>New name <input name="new-name" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} /></label>
            {node.kind === 'volume' && <button type="button" disabled={name.trim() === ''} onClick={snapshot}>Snapshot</button>}
            <button type="button" disabled={name.trim() === ''} onClick={clone}>Clone</button>
          </form>
          <div class="row-buttons">
            {node.kind === 'snapshot' && <button type="button" onClick={askRevert}>Revert {volumeOf} to this</button>}
            {v !== null && v.origin !== null && <button type="button" onClick={flatten}>Flatten</button>}
            <button type="button" class="danger" onClick={askDelete}>Delete</button>
          </div>
        </>
      )}
      {progress !== null && <Progress value={progress.value} label={progress.label} />}
      <ErrorLine error={error ?? volumeInfo.error} />
      {pending !== null && (
        <ConfirmDialog title={pending.title} confirmLabel={pending.confirm} onCancel={() => setPending(null)}
          onConfirm={() => { const p = pending; setPending(null); void p.run(); }}>
          <p>{pending.text}</p>
        </ConfirmDialog>
      )}
    </div>
  );
}

/** A deleted volume has no tree of its own; its lineage lives on through its clones, if any. */
function DeletedVolumeHint({ name }: { name: string }) {
  const clones = useLoad(async () => (await listAll<Volume>('/v1/volumes')).filter((v) => v.origin !== null && (v.origin === name || v.origin.startsWith(`${name}@`))), [name]);
  if (clones.value === null || clones.value.length === 0) return null;
  return (
    <p>{name} was deleted; its snapshots live on while clones use them. Its lineage through a clone:{' '}
      {clones.value.map((c, i) => <>{i > 0 ? ', ' : ''}<a href={`#/volume/${enc(c.name)}`}>{c.name}</a></>)}</p>
  );
}

export function LineageView({ name, who }: { name: string; who: Whoami }) {
  const tree = useLoad(() => get<TreeNode>(`/v1/volumes/${enc(name)}/tree`), [name]);
  const [selected, setSelected] = useState<string | null>(name);
  useEffect(() => setSelected(name), [name]);
  const root = tree.value;
  const node = root === null ? null : findNode(root, selected ?? name) ?? findNode(root, name);
  const page = root === null ? null : findNode(root, name);
  return (
    <section aria-labelledby="lin-h">
      <p class="crumbs"><a href="#/volumes">Volumes</a> / {name}</p>
      <h1 id="lin-h">Lineage of {name}</h1>
      <ErrorLine error={tree.error} />
      {tree.error instanceof ApiError && tree.error.code === 'volume_not_found' && <DeletedVolumeHint name={name} />}
      {root !== null && (
        <>
          <TreeDrawing root={root} selected={node?.name ?? null} onSelect={(n) => setSelected(n.name)} />
          <p class="legend"><span class="key volume" /> volume <span class="key snapshot" /> snapshot <span class="key deleted" /> deleted, kept for its snapshots · bold: this page's volume · select a member for its figures and actions</p>
          <div class="lineage">
            {node !== null && (
              <aside class="panel" aria-labelledby="sel-h">
                <h2 id="sel-h">{node.name}</h2>
                <Actions node={node} pageVolume={name} canWrite={who.role !== 'reader'} onDone={(goTo) => {
                  if (goTo === undefined) { tree.reload(); return; }
                  location.hash = goTo === '' ? '#/volumes' : `#/volume/${enc(goTo)}`;
                }} />
              </aside>
            )}
            {page !== null && page.kind === 'volume' && page.deleted !== true && <ChangesPanel volume={page} />}
          </div>
        </>
      )}
    </section>
  );
}
