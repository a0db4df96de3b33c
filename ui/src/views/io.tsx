// Live I/O: IOPS, throughput and latency percentiles (p50, p99 from the latency histogram's
// differences) for the pool and for one volume, every second while the page is open; a volume's
// QoS limits are drawn on its charts as dashed lines.
import { useState } from 'preact/hooks';
import { listAll, type Volume } from '../api';
import { Chart, ErrorLine, useLoad } from '../components';
import { bytes, count, rate } from '../format';
import { ioHistory, useHistory, type IoPoint, type IoRates } from '../samplers';

const ms = (v: number) => `${v < 1 ? v.toFixed(2) : v.toFixed(1)} ms`;
const iops = (v: number) => `${count(v)}/s`;

function Charts({ title, points, pick, volume }: { title: string; points: IoPoint[]; pick: (p: IoPoint) => IoRates | undefined; volume: Volume | null }) {
  const x = points.map((p) => p.t);
  const col = (f: (r: IoRates) => number | null) => points.map((p) => { const r = pick(p); return r === undefined ? 0 : f(r); });
  const q = volume?.qos ?? null;
  const lim = (label: string, v: number | null | undefined) => (v === null || v === undefined ? [] : [{ label, value: v }]);
  return (
    <div class="charts">
      <Chart title={`${title}: IOPS`} x={x} series={[{ label: 'read', color: '#1f5fa8' }, { label: 'write', color: '#c05a00' }]}
        values={[col((r) => r.readIops), col((r) => r.writeIops)]} format={iops}
        limits={[...lim('QoS IOPS', q?.iopsMax), ...lim('QoS read IOPS', q?.readIopsMax), ...lim('QoS write IOPS', q?.writeIopsMax)]} />
      <Chart title={`${title}: throughput`} x={x} series={[{ label: 'read', color: '#1f5fa8' }, { label: 'write', color: '#c05a00' }]}
        values={[col((r) => r.readBps), col((r) => r.writeBps)]} format={rate}
        limits={[...lim('QoS bytes/s', q?.bpsMax), ...lim('QoS read bytes/s', q?.readBpsMax), ...lim('QoS write bytes/s', q?.writeBpsMax)]} />
      <Chart title={`${title}: latency`} x={x} series={[{ label: 'p50', color: '#2e7d32' }, { label: 'p99', color: '#8e24aa' }]}
        values={[points.map((p) => pick(p)?.p50Ms ?? null), points.map((p) => pick(p)?.p99Ms ?? null)]} format={ms} />
    </div>
  );
}

export function IoView() {
  const points = useHistory(ioHistory);
  const volumes = useLoad(() => listAll<Volume>('/v1/volumes'), []);
  const latest = points[points.length - 1];
  const busiest = latest === undefined ? [] : [...latest.volumes.entries()]
    .map(([name, r]) => ({ name, r, total: r.readIops + r.writeIops }))
    .sort((a, b) => b.total - a.total || a.name.localeCompare(b.name));
  const [chosen, setChosen] = useState<string>('');
  const names = (volumes.value ?? []).map((v) => v.name);
  const active = chosen !== '' ? chosen : busiest.find((b) => b.total > 0)?.name ?? names[0] ?? '';
  const vol = (volumes.value ?? []).find((v) => v.name === active) ?? null;
  return (
    <section aria-labelledby="io-h">
      <h1 id="io-h">Live I/O</h1>
      <p class="sub">Sampled every second while this page is open. Latency percentiles are bucket upper bounds of the daemon's histogram.</p>
      <Charts title="Pool" points={points} pick={(p) => p.pool} volume={null} />
      <h2>Volume</h2>
      <ErrorLine error={volumes.error} />
      <div class="filters">
        <label>Volume <select name="io-volume" value={active} onChange={(e) => setChosen((e.target as HTMLSelectElement).value)}>
          {names.map((n) => <option value={n}>{n}</option>)}
        </select></label>
        {vol?.qos != null && <span class="sub">QoS limits drawn dashed</span>}
      </div>
      {active !== '' && <Charts title={active} points={points} pick={(p) => p.volumes.get(active)} volume={vol} />}
      <h2>Busiest now</h2>
      <div class="table-wrap">
        <table class="plain">
          <thead><tr><th scope="col">Volume</th><th scope="col" class="num">Read IOPS</th><th scope="col" class="num">Write IOPS</th><th scope="col" class="num">Read</th><th scope="col" class="num">Write</th><th scope="col" class="num">p99</th></tr></thead>
          <tbody>
            {busiest.filter((b) => b.total > 0).slice(0, 10).map((b) => (
              <tr><td><button type="button" class="link" onClick={() => setChosen(b.name)}>{b.name}</button></td>
                <td class="num">{count(b.r.readIops)}</td><td class="num">{count(b.r.writeIops)}</td>
                <td class="num">{bytes(b.r.readBps)}/s</td><td class="num">{bytes(b.r.writeBps)}/s</td><td class="num">{b.r.p99Ms === null ? '—' : ms(b.r.p99Ms)}</td></tr>
            ))}
          </tbody>
        </table>
        {busiest.every((b) => b.total === 0) && <p class="sub">No I/O in the last second.</p>}
      </div>
    </section>
  );
}
