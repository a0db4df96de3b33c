// A tiny seeded PRNG (sfc32) for the simulator and the simulated device. One seed picks every
// random choice, so any run replays exactly (TigerBeetle VOPR style). Not for cryptography.

import { assert } from '../errors.js';

const u32Range = 0x1_0000_0000;

/** sfc32 ("Small Fast Counting"), by Chris Doty-Humphrey (PractRand); 128 bits of state. */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    // Spread one seed over the state with splitmix32, then warm up: low-entropy seeds
    // (1, 2, 3, ...) must not give correlated first outputs.
    let s = seed >>> 0;
    const split = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = split();
    this.b = split();
    this.c = split();
    this.d = 1;
    for (let i = 0; i < 15; i++) this.nextU32();
    assert(this.d === 16, 'the state is warmed up by 15 draws');
  }

  nextU32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1). */
  float(): number {
    const x = this.nextU32() / u32Range;
    assert(x >= 0 && x < 1, 'a float in [0, 1)');
    return x;
  }

  /** Uniform integer in [lo, hi] (both inclusive). */
  int(lo: number, hi: number): number {
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || hi < lo) {
      throw new RangeError(`Prng.int: bad range [${lo}, ${hi}]`);
    }
    const span = hi - lo + 1;
    // Wider than 32 bits: combine two draws (53 bits are enough for byte offsets).
    const x = span <= u32Range ? lo + Math.floor(this.float() * span) : lo + ((this.nextU32() * u32Range + this.nextU32()) % span);
    assert(x >= lo && x <= hi, 'a draw inside its range');
    return x;
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('Prng.pick: empty array');
    return items[this.int(0, items.length - 1)] as T;
  }

  /** Picks a key by weight; weights need not sum to 1. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const keys = Object.keys(weights) as K[];
    let total = 0;
    for (const key of keys) total += Math.max(0, weights[key]);
    assert(total >= 0, 'weights sum to a non-negative total');
    let x = this.float() * total;
    for (const key of keys) {
      x -= Math.max(0, weights[key]);
      if (x < 0) return key;
    }
    return keys[keys.length - 1] as K;
  }

  /** Fills a buffer with random bytes. */
  fill(buf: Buffer): Buffer {
    let i = 0;
    for (; i + 4 <= buf.length; i += 4) buf.writeUInt32LE(this.nextU32(), i);
    for (; i < buf.length; i++) buf[i] = this.nextU32() & 0xff;
    assert(i === buf.length, 'every byte filled');
    return buf;
  }

  /** An independent generator derived from this one (consumes two draws). */
  fork(): Prng {
    return new Prng((this.nextU32() ^ Math.imul(this.nextU32(), 0x27d4eb2d)) >>> 0);
  }
}
