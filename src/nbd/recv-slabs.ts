// Socket reads straight into reused slabs. By default Node allocates a fresh 64 KiB buffer for every
// socket read; at 1 GB/s of WRITE payload that is 16k buffers a second for the garbage collector, and
// V8 starts full collections to keep up with the external memory (measured: GC threads at ~40 % of a
// core during 1 MiB sequential writes, ~17 % with slabs, and +10-20 % throughput). Here each read lands
// in a large slab right after the previous one, payloads are handed out as views of it (still no
// copy), and a slab returns to the pool once nothing refers to it: not the socket (it has moved on to
// another slab), not the receive queue (every byte consumed), and no request (every payload done).
// A connection keeps the slab it reads into even while idle, so only a bounded number of connections
// read into slabs (the rest keep Node's per-read buffers): pinned memory stays below
// readersMax x slab size, plus the idle slabs kept for reuse.
import net from 'node:net';
import { assert } from '../engine/index.js';
import { SLAB_FREE_BYTES_MIN } from './constants.js';


export class Slab {
  /** Bytes filled by reads so far. */
  used = 0;
  /** Holders: the socket while it reads into the slab, queued chunks, requests holding payload views. */
  private refs = 0;

  constructor(readonly buf: Buffer, private readonly pool: SlabPool) {}

  ref(): void { this.refs++; }

  unref(): void {
    assert(this.refs > 0, 'slab reference count underflows');
    if (--this.refs === 0) this.pool.put(this);
  }
}

/** Idle slabs shared by a server's connections, at most `idleMax` of them kept. */
export class SlabPool {
  private readonly idle: Slab[] = [];
  created = 0;
  /** Connections reading into slabs now. */
  readers = 0;

  constructor(readonly slabBytes: number, private readonly idleMax: number, private readonly readersMax: number) {
    assert(slabBytes > SLAB_FREE_BYTES_MIN, 'a slab holds more than one read');
  }

  /** A reader for one more connection, or null when readersMax connections already have one. */
  tryReader(): SlabReader | null {
    if (this.readers >= this.readersMax) return null;
    return new SlabReader(this);
  }

  take(): Slab {
    const slab = this.idle.pop();
    if (slab) return slab;
    this.created++;
    return new Slab(Buffer.allocUnsafeSlow(this.slabBytes), this);
  }

  put(slab: Slab): void {
    slab.used = 0;
    if (this.idle.length < this.idleMax) this.idle.push(slab);
  }

  get idleCount(): number { return this.idle.length; }
}

/** Where one socket's reads land: the unread tail of its current slab. */
export class SlabReader {
  private current: Slab;
  private closed = false;

  constructor(private readonly pool: SlabPool) {
    pool.readers++;
    this.current = pool.take();
    this.current.ref();
  }

  /** The buffer the next socket read fills (Node calls this after every read). */
  nextBuffer(): Buffer {
    if (this.current.buf.length - this.current.used < SLAB_FREE_BYTES_MIN) {
      const old = this.current;
      this.current = this.pool.take();
      this.current.ref();
      old.unref();
    }
    return this.current.buf.subarray(this.current.used);
  }

  /** `n` bytes were read into the buffer from nextBuffer(): they become a chunk of the current slab. */
  filled(n: number): { chunk: Buffer; slab: Slab } {
    const slab = this.current;
    const chunk = slab.buf.subarray(slab.used, slab.used + n);
    slab.used += n;
    return { chunk, slab };
  }

  /** The socket is gone: it no longer holds its slab. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.readers--;
    this.current.unref();
  }
}

/**
 * Re-creates an accepted socket (accepted paused: net.Server's pauseOnConnect) on the same handle with
 * Node's `onread` option, which only the Socket constructor takes. Returns null when this Node's
 * sockets do not expose what that needs; the caller then keeps the socket and its 'data' events.
 */
export function socketReadingIntoSlabs(accepted: net.Socket, reader: SlabReader,
  onChunk: (chunk: Buffer, slab: Slab) => void): net.Socket | null {
  const internals = accepted as unknown as { _handle?: { useUserBuffer?: unknown }; _server?: unknown };
  const handle = internals._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function') return null;
  const socket = new net.Socket({
    handle,
    onread: {
      buffer: () => reader.nextBuffer(),
      callback: (n: number) => {
        const { chunk, slab } = reader.filled(n);
        onChunk(chunk, slab);
        return true;
      },
    },
  } as net.SocketConstructorOpts);
  // The server counts connections through the socket it created; the new socket must end that count.
  (socket as unknown as { _server?: unknown })._server = internals._server;
  socket.once('close', () => reader.close());
  return socket;
}
