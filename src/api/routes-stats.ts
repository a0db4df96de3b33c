// GET /v1/stats: I/O totals per volume since the daemon started (operations, bytes, a cumulative
// latency histogram), scoped like the rest of the API (a tenant sees its own volumes, by its own
// names). A client samples it, e.g. every second, and draws the differences (the dashboard's live I/O).
import { Type, type Static } from '@sinclair/typebox';
import type { SharedApiContext } from './context.js';
import type { RouteTable } from './routes.js';
import { splitQualified } from '../tenancy/names.js';

const Count = Type.Number({ minimum: 0 });
export const VolumeIoStats = Type.Object({
  name: Type.String({ description: 'the volume (or VOL@SNAP) as the caller names it' }),
  readOps: Count, writeOps: Count, readBytes: Count,
  writeBytes: Type.Number({ minimum: 0, description: 'bytes written, trimmed or zeroed' }),
  latencyCounts: Type.Array(Count, { description: 'requests that took at most bucketsSeconds[i]; one more entry at the end: all requests' }),
});
export const IoStats = Type.Object({
  timeMs: Type.Integer({ description: 'when the totals were read (ms since the epoch)' }),
  bucketsSeconds: Type.Array(Type.Number(), { description: 'upper bounds of the latency buckets' }),
  volumes: Type.Array(VolumeIoStats, { description: 'volumes with I/O since the daemon started (write, read, trim and write-zeroes requests; writeOps counts all but reads)' }),
});
export type IoStats = Static<typeof IoStats>;

/** Where the totals come from (the daemon's Metrics.ioTotals); none: an empty answer. */
export type IoTotalsSource = () => Promise<Omit<IoStats, 'timeMs'>>;

export function registerStatsRoutes(routes: RouteTable, ctx: SharedApiContext, source: IoTotalsSource | undefined): void {
  routes.add({
    method: 'GET', url: '/v1/stats', access: 'read', tag: 'pool',
    summary: 'I/O totals per volume since start (operations, bytes, latency histogram); sample it and take differences',
    responses: { 200: { description: 'totals', schema: IoStats } },
    handler: async (_req, _reply, ctx) => {
      const timeMs = Date.now();
      if (source === undefined) return { timeMs, bucketsSeconds: [], volumes: [] };
      const totals = await source();
      const tenant = ctx.principal()?.tenant ?? null;
      const volumes = tenant === null ? totals.volumes : totals.volumes.flatMap((v) => {
        const split = splitQualified(v.name);
        return split.tenant === tenant ? [{ ...v, name: split.name }] : [];
      });
      return { timeMs, bucketsSeconds: totals.bucketsSeconds, volumes };
    },
  });
}
