// The network between simulated nodes: one Transport per node (src/cluster/transport.ts). Every
// request and every reply is a message with its own seeded delay, so messages reorder; each may be
// dropped or duplicated; partitions cut pairs of nodes both ways; a down node answers nothing (its
// callers time out). A lost reply still applied its request, as the Transport contract warns.
import type { Prng } from '../../src/engine/device/prng.js';
import type { ReplReply, ReplRequest } from '../../src/cluster/messages.js';
import { TransportError, type Transport } from '../../src/cluster/transport.js';
import type { SimClock } from './sim-clock.js';

export interface SimNetworkOptions {
  /** Each message's delay is uniform in [delayMsMin, delayMsMax]. */
  delayMsMin?: number;
  delayMsMax?: number;
  /** Chance that one message (request or reply) is lost. */
  dropProbability?: number;
  /** Chance that a request is delivered twice (each copy with its own delay). */
  duplicateProbability?: number;
}

export interface SimNetworkStats {
  requests: number;
  delivered: number;
  dropped: number;
  duplicated: number;
  timeouts: number;
}

type Handler = (from: string, request: ReplRequest) => Promise<ReplReply>;

interface Pending {
  resolve: (reply: ReplReply) => void;
  reject: (err: Error) => void;
  cancelTimeout: () => void;
}

export const DELAY_MS_MIN_DEFAULT = 0.1;
export const DELAY_MS_MAX_DEFAULT = 5;

export class SimNetwork {
  readonly clock: SimClock;
  readonly prng: Prng;
  delayMsMin: number;
  delayMsMax: number;
  dropProbability: number;
  duplicateProbability: number;
  readonly stats: SimNetworkStats = { requests: 0, delivered: 0, dropped: 0, duplicated: 0, timeouts: 0 };
  /** Sees every request as it is sent (the simulator's invariant checks read the epochs). */
  tap: ((from: string, to: string, request: ReplRequest) => void) | null = null;
  /** Sees every request copy as it is delivered (`copy` 1 is a duplicate): traces of reordering. */
  deliveryTap: ((from: string, to: string, request: ReplRequest, copy: number) => void) | null = null;
  /** Pairs "a|b" (sorted) that cannot talk. */
  private readonly cut = new Set<string>();
  private readonly down = new Set<string>();
  private readonly endpoints = new Map<string, SimEndpoint>();

  constructor(clock: SimClock, prng: Prng, opts: SimNetworkOptions = {}) {
    this.clock = clock;
    this.prng = prng;
    this.delayMsMin = opts.delayMsMin ?? DELAY_MS_MIN_DEFAULT;
    this.delayMsMax = opts.delayMsMax ?? DELAY_MS_MAX_DEFAULT;
    this.dropProbability = opts.dropProbability ?? 0;
    this.duplicateProbability = opts.duplicateProbability ?? 0;
  }

  /** `node`'s Transport. A new call (a restarted node) closes the old endpoint: its pending calls fail. */
  endpoint(node: string): Transport {
    const old = this.endpoints.get(node);
    if (old !== undefined && !old.closed) old.shut();
    const ep = new SimEndpoint(this, node);
    this.endpoints.set(node, ep);
    return ep;
  }

  /** No message passes between any node of `a` and any node of `b` (both ways) until heal(). */
  partition(a: readonly string[], b: readonly string[]): void {
    for (const x of a) for (const y of b) if (x !== y) this.cut.add(pairKey(x, y));
  }

  /** Cuts `node` from every other node in `all`. */
  isolate(node: string, all: readonly string[]): void { this.partition([node], all); }

  /** Removes every partition (down nodes stay down). */
  heal(): void { this.cut.clear(); }

  /** A down node neither receives nor answers: calls to it time out. */
  setDown(node: string, down: boolean): void {
    if (down) this.down.add(node);
    else this.down.delete(node);
  }

  canTalk(a: string, b: string): boolean {
    return !this.down.has(a) && !this.down.has(b) && !this.cut.has(pairKey(a, b));
  }

  /** A description of the cuts (for traces). */
  describe(): string {
    return `cut=[${[...this.cut].sort().join(',')}] down=[${[...this.down].sort().join(',')}]`;
  }

  delayMs(): number {
    return this.delayMsMin + this.prng.float() * (this.delayMsMax - this.delayMsMin);
  }

  /** Sends one message from `from` to `to`: maybe lost, else run after its delay if the link still holds. */
  send(from: string, to: string, deliver: () => void): void {
    if (!this.canTalk(from, to) || this.prng.chance(this.dropProbability)) {
      this.stats.dropped++;
      return;
    }
    this.clock.setTimer(this.delayMs(), () => {
      // A partition or crash that came while the message was in flight loses it too.
      if (!this.canTalk(from, to)) { this.stats.dropped++; return; }
      this.stats.delivered++;
      deliver();
    });
  }

  endpointOf(node: string): SimEndpoint | null {
    const ep = this.endpoints.get(node);
    return ep === undefined || ep.closed ? null : ep;
  }
}

class SimEndpoint implements Transport {
  readonly node: string;
  handler: Handler | null = null;
  closed = false;
  private readonly net: SimNetwork;
  private readonly pending = new Map<number, Pending>();
  private idNext = 1;

  constructor(net: SimNetwork, node: string) {
    this.net = net;
    this.node = node;
  }

  request(to: string, request: ReplRequest, timeoutMs: number): Promise<ReplReply> {
    if (this.closed) return Promise.reject(new TransportError(`${this.node}: transport closed`));
    const net = this.net;
    net.stats.requests++;
    net.tap?.(this.node, to, request);
    const id = this.idNext++;
    return new Promise<ReplReply>((resolve, reject) => {
      const cancelTimeout = net.clock.setTimer(timeoutMs, () => {
        if (!this.pending.delete(id)) return;
        net.stats.timeouts++;
        reject(new TransportError(`${this.node} → ${to}: ${request.t} timed out after ${timeoutMs} ms`));
      });
      this.pending.set(id, { resolve, reject, cancelTimeout });
      const copies = net.prng.chance(net.duplicateProbability) ? 2 : 1;
      if (copies === 2) net.stats.duplicated++;
      for (let i = 0; i < copies; i++) {
        const message = copyRequest(request);
        net.send(this.node, to, () => {
          net.deliveryTap?.(this.node, to, message, i);
          void this.serveAt(to, id, message);
        });
      }
    });
  }

  serve(handler: Handler): void { this.handler = handler; }

  async close(): Promise<void> { this.shut(); }

  /** Closes now: pending calls fail, nothing more is served. */
  shut(): void {
    this.closed = true;
    this.handler = null;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.cancelTimeout();
      p.reject(new TransportError(`${this.node}: transport closed`));
    }
  }

  /** The request reached `to`: run its handler, send the reply back as its own message. */
  private async serveAt(to: string, id: number, request: ReplRequest): Promise<void> {
    const server = this.net.endpointOf(to);
    // Nobody serves there (a crashed process): the caller's timeout answers.
    const handler = server?.handler ?? null;
    if (server === null || handler === null) return;
    let reply: ReplReply;
    try {
      reply = await handler(this.node, request);
    } catch (err) {
      // A handler that throws answers with an error reply, as the TCP transport does.
      const code = typeof (err as { code?: unknown }).code === 'string' ? (err as { code: string }).code : 'internal';
      reply = { ok: false, code, message: err instanceof Error ? err.message : String(err) };
    }
    // The serving process crashed while it worked: a dead process sends nothing.
    if (server.closed) return;
    const answered = copyReply(reply);
    this.net.send(to, this.node, () => {
      const p = this.pending.get(id);
      // A second copy's reply, or one after the timeout or a restart: nobody waits for it.
      if (p === undefined || this.closed) return;
      this.pending.delete(id);
      p.cancelTimeout();
      p.resolve(answered);
    });
  }
}

function pairKey(a: string, b: string): string { return a < b ? `${a}|${b}` : `${b}|${a}`; }

/** What travels is a copy: neither side may see the other mutate a buffer afterwards. */
function copyRequest(request: ReplRequest): ReplRequest {
  return cloneValue(request) as ReplRequest;
}

function copyReply(reply: ReplReply): ReplReply {
  if (reply.ok && reply.result !== undefined) return { ok: true, result: cloneValue(reply.result) };
  return { ...reply };
}

function cloneValue(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return Buffer.from(value);
  if (Array.isArray(value)) return value.map(cloneValue);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = cloneValue(v);
    return out;
  }
  return value;
}
