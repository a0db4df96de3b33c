// Batches replies into one socket write: the first reply of a batch corks the socket and the batch is
// uncorked in the next check phase (setImmediate), so replies completed by the same round of engine
// callbacks leave in one writev (style.md "one socket write for many replies"). A reply with no other
// request of its connection in flight has nothing to wait for: it leaves once the current callback is
// done (process.nextTick), not after every other callback of the turn, which beside another client's
// flood held a queue-depth-1 client's replies behind the flood's work and its writevs.
import type net from 'node:net';

export class ReplyWriter {
  private corked = false;
  private readonly flushBound = (): void => this.flush();

  constructor(private socket: net.Socket) {}

  setSocket(socket: net.Socket): void {
    this.flush();
    this.socket = socket;
  }

  /**
   * Queues `data`; `onSent` runs once the socket has handed it to the kernel. `alone`: no other request
   * of the connection is in flight, so no other reply will join this one's batch this turn.
   */
  send(data: Buffer, onSent?: () => void, alone = false): void {
    // Nothing will be sent: the data is free at once (a reader waiting for it must not wait forever).
    if (this.socket.destroyed) { onSent?.(); return; }
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      if (alone) process.nextTick(this.flushBound);
      else setImmediate(this.flushBound);
    }
    if (onSent) this.socket.write(data, onSent);
    else this.socket.write(data);
  }

  /** Bytes written but not yet taken by the kernel (the client is slow to read). */
  queuedBytes(): number { return this.socket.writableLength; }

  flush(): void {
    if (!this.corked) return;
    this.corked = false;
    if (!this.socket.destroyed) this.socket.uncork();
  }
}
