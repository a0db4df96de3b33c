// The gRPC server on a unix socket: binds service objects to the loaded csi.proto, logs one
// structured JSON line per RPC (rpc, volume id, outcome, duration) and turns thrown errors into
// gRPC statuses. Unknown services for the mode answer UNIMPLEMENTED (grpc-js default).
import { rmSync, mkdirSync, existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { rpcsInFlightMax, shutdownGraceMs } from './constants.js';
import { CsiError, Status, toCsiError } from './errors.js';
import { loadCsi } from './proto.js';

type Handler = (request: never) => Promise<unknown>;
export type ServiceImpl = object;

/** "unix:///path/csi.sock" or "unix:/path" or a bare path → the socket path. */
export function socketPathOf(endpoint: string): string {
  if (endpoint.startsWith('unix://')) return endpoint.slice('unix://'.length);
  if (endpoint.startsWith('unix:')) return endpoint.slice('unix:'.length);
  if (endpoint.startsWith('/')) return endpoint;
  throw new Error(`--endpoint must be unix:///PATH (got ${endpoint})`);
}

function idOf(request: Record<string, unknown>): string | undefined {
  for (const key of ['volume_id', 'source_volume_id', 'snapshot_id', 'group_snapshot_id', 'name']) {
    if (typeof request[key] === 'string' && request[key] !== '') return request[key] as string;
  }
  return undefined;
}

function wrap(log: Logger, rpc: string, fn: Handler, inFlight: { count: number }): grpc.handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    const started = performance.now();
    const request = call.request as Record<string, unknown>;
    const volumeId = idOf(request);
    const done = (err: CsiError | null, response?: unknown): void => {
      const ms = Math.round(performance.now() - started);
      if (err === null) log.info({ rpc, volumeId, outcome: 'ok', ms }, rpc);
      else log.warn({ rpc, volumeId, outcome: Status[err.code], message: err.message, ms }, rpc);
      if (err === null) callback(null, response);
      else callback({ code: err.code, details: err.message, metadata: new grpc.Metadata() } as grpc.ServiceError);
    };
    if (inFlight.count >= rpcsInFlightMax) {
      done(new CsiError(Status.RESOURCE_EXHAUSTED, `more than ${rpcsInFlightMax} RPCs in flight`));
      return;
    }
    inFlight.count++;
    fn(request as never).then(
      (response) => { inFlight.count--; done(null, response); },
      (err: unknown) => { inFlight.count--; done(toCsiError(err)); },
    );
  };
}

function bind(log: Logger, service: grpc.ServiceDefinition, impl: ServiceImpl, inFlight: { count: number }):
  grpc.UntypedServiceImplementation {
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const rpc of Object.keys(service)) {
    const fn = (impl as Record<string, unknown>)[rpc];
    if (typeof fn === 'function') handlers[rpc] = wrap(log, rpc, (fn as Handler).bind(impl), inFlight);
    else {
      handlers[rpc] = wrap(log, rpc, async () => {
        throw new CsiError(Status.UNIMPLEMENTED, `${rpc} is not implemented by this plugin`);
      }, inFlight);
    }
  }
  return handlers;
}

export interface CsiServer { socketPath: string; close(): Promise<void> }

export async function startServer(endpoint: string, log: Logger,
  services: { identity: ServiceImpl; controller?: ServiceImpl; groupController?: ServiceImpl; node?: ServiceImpl }): Promise<CsiServer> {
  const socketPath = socketPathOf(endpoint);
  mkdirSync(dirname(socketPath), { recursive: true });
  // A socket left by a previous run (crash, kill -9) would make bind fail with EADDRINUSE.
  if (existsSync(socketPath) && statSync(socketPath).isSocket()) rmSync(socketPath);
  const csi = loadCsi();
  const server = new grpc.Server();
  const inFlight = { count: 0 };
  server.addService(csi.Identity.service, bind(log, csi.Identity.service, services.identity, inFlight));
  if (services.controller) server.addService(csi.Controller.service, bind(log, csi.Controller.service, services.controller, inFlight));
  if (services.groupController) {
    server.addService(csi.GroupController.service, bind(log, csi.GroupController.service, services.groupController, inFlight));
  }
  if (services.node) server.addService(csi.Node.service, bind(log, csi.Node.service, services.node, inFlight));
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
  return {
    socketPath,
    close: () => new Promise<void>((resolve) => {
      // Graceful first (in-flight RPCs finish), then forced: a CO keeps its channel open.
      const force = setTimeout(() => server.forceShutdown(), shutdownGraceMs);
      server.tryShutdown(() => {
        clearTimeout(force);
        try { rmSync(socketPath, { force: true }); } catch { /* already gone */ }
        resolve();
      });
    }),
  };
}
