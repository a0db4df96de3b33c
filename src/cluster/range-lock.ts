// Per-volume ordering on the primary: a data request waits for earlier overlapping ones (so
// overlapping writes reach every member in the same order), a barrier (snapshot, checkpoint, the
// last step of a rebuild) waits for everything before it and holds everything after it.
// First come, first served: an entry is granted when it overlaps no earlier entry, granted or not.

interface Entry {
  startBytes: number;
  endBytes: number;
  granted: boolean;
  grant: () => void;
}

const ALL_END_BYTES = Number.MAX_SAFE_INTEGER;

export class RangeLock {
  private readonly entries: Entry[] = [];

  /** Waits until [offset, offset+length) overlaps no earlier holder or waiter; returns the release. */
  acquire(offsetBytes: number, lengthBytes: number): Promise<() => void> {
    return this.enqueue(offsetBytes, offsetBytes + Math.max(lengthBytes, 1));
  }

  /** The whole volume: waits for every earlier request and holds every later one until released. */
  barrier(): Promise<() => void> { return this.enqueue(0, ALL_END_BYTES); }

  /** Requests holding or waiting (for tests and idle()). */
  get size(): number { return this.entries.length; }

  private enqueue(startBytes: number, endBytes: number): Promise<() => void> {
    return new Promise((resolve) => {
      const entry: Entry = { startBytes, endBytes, granted: false, grant: () => undefined };
      entry.grant = () => {
        let released = false;
        resolve(() => {
          if (released) return;
          released = true;
          this.entries.splice(this.entries.indexOf(entry), 1);
          this.pump();
        });
      };
      this.entries.push(entry);
      this.pump();
    });
  }

  private pump(): void {
    for (let i = 0; i < this.entries.length; i++) {
      const entry = this.entries[i]!;
      if (entry.granted) continue;
      let blocked = false;
      for (let j = 0; j < i && !blocked; j++) {
        const earlier = this.entries[j]!;
        blocked = earlier.startBytes < entry.endBytes && entry.startBytes < earlier.endBytes;
      }
      if (!blocked) { entry.granted = true; entry.grant(); }
    }
  }
}
