// How nodes reach each other: a request/reply channel per pair. TcpTransport (src/cluster) is the
// real one (length-framed messages on the replication port); SimNetwork (sim/cluster) delays, drops,
// duplicates, reorders and partitions for the simulator.
import type { ReplReply, ReplRequest } from './messages.js';

export class TransportError extends Error {
  readonly code = 'transport_error';
  constructor(message: string) { super(message); this.name = 'TransportError'; }
}

export interface Transport {
  /**
   * Sends `request` to node `to` and resolves with its reply; rejects with TransportError when the
   * node cannot be reached or does not answer within `timeoutMs`. A request may still have been
   * applied when it rejects (the reply was lost): every request must be safe to apply twice.
   */
  request(to: string, request: ReplRequest, timeoutMs: number): Promise<ReplReply>;
  /** Serves requests addressed to this node (one handler; requests may run concurrently). */
  serve(handler: (from: string, request: ReplRequest) => Promise<ReplReply>): void;
  close(): Promise<void>;
}

/** Where to reach each node's replication port (TcpTransport looks names up through this). */
export type AddressBook = (node: string) => string | null;
