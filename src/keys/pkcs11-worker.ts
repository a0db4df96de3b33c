// The worker thread that talks to PKCS#11 modules (pkcs11js calls are synchronous: a token that hangs
// would stop the daemon's event loop, and with it every volume). One per process: the modules loaded
// here are initialized once (PKCS#11 v2.40 §5.4), and the KEKs opened here are used by handle from the
// main thread (pkcs11-host.ts). Messages: {id, op: 'open', ref, env} | {id, op: 'wrap'|'unwrap',
// handle, data} | {id, op: 'close', handle}; replies {id, ok: true, ...} or {id, ok: false, code, message}.
import { parentPort } from 'node:worker_threads';
import { KekError } from './errors.js';
import { openPkcs11Kek } from './pkcs11-kek.js';
import { parseKekRef } from './ref.js';
import type { KekProvider } from './provider.js';

export type WorkerRequest =
  | { id: number; op: 'open'; ref: string; env: Record<string, string> }
  | { id: number; op: 'wrap' | 'unwrap'; handle: number; data: Uint8Array }
  | { id: number; op: 'close'; handle: number };

export type WorkerReply =
  | { id: number; ok: true; handle?: number; fingerprint?: string; data?: Uint8Array }
  | { id: number; ok: false; code: string; message: string };

const keks = new Map<number, KekProvider>();
let nextHandle = 1;

async function serve(req: WorkerRequest): Promise<WorkerReply> {
  switch (req.op) {
    case 'open': {
      const parsed = parseKekRef(req.ref, req.env);
      if (parsed.kind !== 'pkcs11') throw new KekError('invalid_argument', 'the PKCS#11 worker opens pkcs11: references only');
      const kek = await openPkcs11Kek(req.ref, parsed, req.env);
      const handle = nextHandle++;
      keks.set(handle, kek);
      return { id: req.id, ok: true, handle, fingerprint: kek.fingerprint };
    }
    case 'wrap': case 'unwrap': {
      const kek = keks.get(req.handle);
      if (kek === undefined) throw new KekError('kek_unavailable', 'this KEK was closed');
      const input = Buffer.from(req.data.buffer, req.data.byteOffset, req.data.byteLength);
      const out = req.op === 'wrap' ? await kek.wrap(input) : await kek.unwrap(input);
      return { id: req.id, ok: true, data: out };
    }
    case 'close': {
      const kek = keks.get(req.handle);
      keks.delete(req.handle);
      await kek?.close();
      return { id: req.id, ok: true };
    }
  }
}

parentPort?.on('message', (req: WorkerRequest) => {
  void serve(req).then(
    (reply) => parentPort!.postMessage(reply),
    (err: unknown) => parentPort!.postMessage({
      id: req.id, ok: false,
      code: err instanceof KekError ? err.code : 'kek_unavailable',
      message: err instanceof Error ? err.message : String(err),
    } satisfies WorkerReply),
  );
});
