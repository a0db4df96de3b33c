// What the API handlers share: the engine (the instrumented one the daemon wires up), the job
// manager and how to name a volume's NBD export.
import type { Engine } from '../engine/index.js';
import type { JobManager } from './jobs.js';
import type { QosControl } from '../qos/qos-control.js';

export interface ApiContext {
  engine: Engine;
  /** Volume and tenant QoS limits (src/qos): shared by every request, keyed by volume id and tenant name. */
  qos: QosControl;
  jobs: JobManager;
  poolPath: string;
  /** Where import spools a stream while verifying it (a directory on the pool's file system). */
  spoolDir: string;
  /** "nbd://HOST:PORT" of the NBD server, or null when NBD is off. */
  nbdBaseUri: string | null;
  nbdUri(name: string): string | null;
}

/** How long DELETE waits for a delete before answering 202 with a job instead. */
export const deleteWaitMs = 1000;
