// PKCS#11 KEKs used from the main thread through one worker thread (pkcs11-worker.ts), with a bound on
// every call: a token that stops answering makes its calls fail with KekUnavailable after
// PKCS11_CALL_TIMEOUT_MS (its tenant's volumes lock, or stay locked, as for an HSM that is down) while
// the event loop, and every other volume, keeps going. The worker is never killed (a thread stuck in a
// native call cannot be): calls queue behind the stuck one and time out too, until the token answers
// again; beyond PKCS11_CALLS_QUEUED_MAX they fail at once.
import { Worker } from 'node:worker_threads';
import { KekError, KekUnavailable, KekWrongKey, type KekErrorCode } from './errors.js';
import type { KekProvider } from './provider.js';
import type { WorkerReply, WorkerRequest } from './pkcs11-worker.js';
import { PKCS11_MODULE_ENV, type Pkcs11Ref } from './ref.js';

/** How long one call into a PKCS#11 module may take (CAIRN_PKCS11_TIMEOUT_MS overrides it). */
export const PKCS11_CALL_TIMEOUT_MS = 10_000;
/** Calls waiting on the worker at once; beyond it a call fails at once (the token is not answering). */
export const PKCS11_CALLS_QUEUED_MAX = 64;

type Request = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

function errorOf(code: string, message: string): KekError {
  if (code === 'kek_wrong_key') return new KekWrongKey(message);
  if (code === 'kek_unavailable') return new KekUnavailable(message);
  return new KekError(code as KekErrorCode, message);
}

class Pkcs11Host {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: WorkerReply & { ok: true }) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();


  private start(): Worker {
    if (this.worker !== null) return this.worker;
    const worker = new Worker(new URL('./pkcs11-worker.js', import.meta.url));
    worker.on('message', (reply: WorkerReply) => {
      const p = this.pending.get(reply.id);
      if (p === undefined) return; // it timed out: the caller has its error already
      this.pending.delete(reply.id);
      clearTimeout(p.timer);
      if (reply.ok) p.resolve(reply); else p.reject(errorOf(reply.code, reply.message));
    });
    const fail = (why: string): void => {
      this.worker = null; // the next call starts another
      for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(new KekUnavailable(`the PKCS#11 worker ${why}`)); }
      this.pending.clear();
    };
    worker.on('error', (err) => fail(`failed: ${err.message}`));
    worker.on('exit', (code) => fail(`exited (${code})`));
    // Never what keeps the process alive (a stuck call must not hold up a shutdown); after the
    // listeners, which would take a reference again.
    worker.unref();
    this.worker = worker;
    return worker;
  }

  call(req: Request, what: string, timeoutMs: number): Promise<WorkerReply & { ok: true }> {
    if (this.pending.size >= PKCS11_CALLS_QUEUED_MAX) {
      return Promise.reject(new KekUnavailable(`${what}: ${this.pending.size} PKCS#11 calls are already waiting (the token is not answering)`));
    }
    const worker = this.start();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new KekUnavailable(`${what}: the PKCS#11 module did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      worker.postMessage({ ...req, id });
    });
  }
}

let host: Pkcs11Host | null = null;

/** Opens a pkcs11: KEK in the worker thread; the provider's calls are bounded (see above). */
export async function openPkcs11KekIsolated(ref: string, parsed: Pkcs11Ref, env: NodeJS.ProcessEnv): Promise<KekProvider> {
  // The worker reads the PIN itself: it gets only what the reference needs from the environment.
  const needed: Record<string, string> = {};
  for (const name of [PKCS11_MODULE_ENV, parsed.pinSource.kind === 'env' ? parsed.pinSource.name : null]) {
    if (name !== null && env[name] !== undefined) needed[name] = env[name]!;
  }
  const h = (host ??= new Pkcs11Host());
  const fromEnv = Number(env.CAIRN_PKCS11_TIMEOUT_MS);
  const ms = Number.isSafeInteger(fromEnv) && fromEnv > 0 ? fromEnv : PKCS11_CALL_TIMEOUT_MS;
  const opened = await h.call({ op: 'open', ref, env: needed }, `opening ${ref}`, ms);
  const handle = opened.handle!;
  const bytes = (r: WorkerReply & { ok: true }): Buffer => Buffer.from(r.data!.buffer, r.data!.byteOffset, r.data!.byteLength);
  return {
    ref, fingerprint: opened.fingerprint!,
    wrap: async (dek) => bytes(await h.call({ op: 'wrap', handle, data: dek }, `wrapping with ${ref}`, ms)),
    unwrap: async (wrapped) => bytes(await h.call({ op: 'unwrap', handle, data: wrapped }, `unwrapping with ${ref}`, ms)),
    close: async () => { await h.call({ op: 'close', handle }, `closing ${ref}`, ms); },
  };
}
