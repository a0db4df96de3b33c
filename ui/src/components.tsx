// Small pieces every view uses: an error line with the API's problem detail, a progress bar, a
// confirmation dialog, summary cards, and a time-series chart (uPlot) that follows its box's width.
import { useEffect, useRef, useState } from 'preact/hooks';
import type { ComponentChildren } from 'preact';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { ApiError } from './api';

export function ErrorLine({ error }: { error: unknown }) {
  if (error === null || error === undefined) return null;
  const text = error instanceof ApiError ? `${error.detail}${error.code !== 'http_error' ? ` (${error.code})` : ''}` : error instanceof Error ? error.message : String(error);
  return <p class="error" role="alert">{text}</p>;
}

export function Progress({ value, label }: { value: number; label: string }) {
  return (
    <div class="progress">
      <progress max={1} value={value} aria-label={label} />
      <span>{(value * 100).toFixed(0)} %</span>
    </div>
  );
}

export function Card({ label, value, hint }: { label: string; value: ComponentChildren; hint?: string }) {
  return (
    <div class="card">
      <div class="card-label">{label}</div>
      <div class="card-value">{value}</div>
      {hint !== undefined && <div class="card-hint">{hint}</div>}
    </div>
  );
}

/** A modal question: `children` says what will happen; Confirm runs `onConfirm`. */
export function ConfirmDialog({ title, children, confirmLabel, onConfirm, onCancel }: {
  title: string; children: ComponentChildren; confirmLabel: string; onConfirm: () => void; onCancel: () => void;
}) {
  const ref = useRef<HTMLButtonElement>(null);
  useEffect(() => { ref.current?.focus(); }, []);
  return (
    <div class="modal-backdrop" onKeyDown={(e) => { if (e.key === 'Escape') onCancel(); }}>
      <div class="modal" role="dialog" aria-modal="true" aria-labelledby="modal-title">
        <h2 id="modal-title">{title}</h2>
        <div>{children}</div>
        <div class="row-buttons">
          <button type="button" onClick={onCancel}>Cancel</button>
          <button type="button" class="danger" ref={ref} onClick={onConfirm}>{confirmLabel}</button>
        </div>
      </div>
    </div>
  );
}

export interface Series { label: string; color: string; dash?: number[] }

/**
 * A line chart of `x` (seconds since the epoch) against each series; `limits` are horizontal lines
 * (QoS limits) drawn dashed. Redraws when data changes; resizes with its container.
 */
export function Chart({ title, x, series, values, format, limits = [] }: {
  title: string; x: number[]; series: Series[]; values: Array<Array<number | null>>; format: (v: number) => string;
  limits?: Array<{ label: string; value: number }>;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = `${series.map((s) => s.label).join('|')}#${limits.map((l) => l.label).join('|')}`;
  const data = (): uPlot.AlignedData => [x, ...values, ...limits.map((l) => x.map(() => l.value))] as uPlot.AlignedData;
  useEffect(() => {
    const el = box.current;
    if (el === null) return undefined;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth), height: 180,
      legend: { show: true, live: false },
      cursor: { show: true, points: { show: false } },
      scales: { y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: '#444', grid: { stroke: '#eee' } },
        { stroke: '#444', grid: { stroke: '#eee' }, size: 88, values: (_u, splits) => splits.map((v) => format(v)) },
      ],
      series: [
        {},
        ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, points: { show: false }, value: (_u: uPlot, v: number | null) => (v === null ? '—' : format(v)) })),
        ...limits.map((l) => ({ label: l.label, stroke: '#b00020', width: 1.5, dash: [6, 4], points: { show: false }, value: () => format(l.value) })),
      ],
    };
    const p = new uPlot(opts, data(), el);
    plot.current = p;
    const ro = new ResizeObserver(() => p.setSize({ width: Math.max(200, el.clientWidth), height: 180 }));
    ro.observe(el);
    return () => { ro.disconnect(); p.destroy(); plot.current = null; };
  }, [shape]);
  useEffect(() => { plot.current?.setData(data()); });
  const last = values.map((v) => v[v.length - 1]);
  const summary = series.map((s, i) => `${s.label} ${last[i] === null || last[i] === undefined ? 'no data' : format(last[i]!)}`).join(', ');
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={`${title}: ${summary}`} data-chart={title} data-points={x.length} />
    </figure>
  );
}

/** Runs `fn` now and every `ms` while mounted; the latest fn is used (no stale closures). */
export function useInterval(fn: () => void, ms: number, deps: unknown[] = []): void {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    saved.current();
    const t = setInterval(() => saved.current(), ms);
    return () => clearInterval(t);
  }, [ms, ...deps]);
}

/** A value loaded by `load`, with its error; reload() fetches it again. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { value: T | null; error: unknown; reload: () => void } {
  const [value, setValue] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  // Other arguments: the old value belongs to something else (another volume's tree) and must not show.
  useEffect(() => { setValue(null); setError(null); }, deps);
  useEffect(() => {
    let live = true;
    load().then((v) => { if (live) { setValue(v); setError(null); } }, (e: unknown) => { if (live) setError(e); });
    return () => { live = false; };
  }, [...deps, tick]);
  return { value, error, reload: () => setTick((n) => n + 1) };
}
