/**
 * A small seeded mutator for network fuzzing: the same seed gives the same inputs, so a failure
 * prints a seed and an input number that replay it.
 */

/** mulberry32: a tiny, fast PRNG; plenty for choosing mutations. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

/** The generator for input `index` of a run with `seed`: each input replays on its own. */
export function rngFor(seed: number, index: number): Rng {
  return new Rng((Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(index + 1, 0xc2b2ae35)) >>> 0);
}

/** Bytes that sit on the edges of SOCKS fields: versions, methods, commands, lengths. */
const INTERESTING = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x7f, 0x80, 0xfe, 0xff];

/** One random change to `input`: flip, set, truncate, extend, insert, delete, duplicate, length. */
export function mutateOnce(rng: Rng, input: Buffer): { bytes: Buffer; how: string } {
  const n = input.length;
  const at = n > 0 ? rng.int(n) : 0;
  switch (rng.int(10)) {
    case 0: {
      if (n === 0) break;
      const b = Buffer.from(input);
      const bit = rng.int(8);
      b[at] = b[at]! ^ (1 << bit);
      return { bytes: b, how: `flip bit ${bit} at ${at}` };
    }
    case 1: {
      if (n === 0) break;
      const b = Buffer.from(input);
      const v = rng.pick(INTERESTING);
      b[at] = v;
      return { bytes: b, how: `set ${at}=0x${v.toString(16)}` };
    }
    case 2: {
      const keep = rng.int(Math.max(1, n));
      return { bytes: input.subarray(0, keep), how: `truncate to ${keep}` };
    }
    case 3: {
      const extra = rng.bytes(1 + rng.int(rng.chance(0.1) ? 600 : 16));
      return { bytes: Buffer.concat([input, extra]), how: `extend by ${extra.length}` };
    }
    case 4: {
      const extra = rng.bytes(1 + rng.int(8));
      return {
        bytes: Buffer.concat([input.subarray(0, at), extra, input.subarray(at)]),
        how: `insert ${extra.length} at ${at}`,
      };
    }
    case 5: {
      if (n === 0) break;
      const len = 1 + rng.int(Math.min(8, n - at));
      return {
        bytes: Buffer.concat([input.subarray(0, at), input.subarray(at + len)]),
        how: `delete ${len} at ${at}`,
      };
    }
    case 6: {
      if (n === 0) break;
      const len = 1 + rng.int(Math.min(32, n - at));
      const chunk = input.subarray(at, at + len);
      return {
        bytes: Buffer.concat([input.subarray(0, at + len), chunk, input.subarray(at + len)]),
        how: `duplicate ${len} at ${at}`,
      };
    }
    case 7: {
      // A length field off by a little, or at its extremes.
      if (n === 0) break;
      const b = Buffer.from(input);
      const delta = rng.pick([-2, -1, 1, 2, 128, -128]);
      b[at] = (b[at]! + delta) & 0xff;
      return { bytes: b, how: `add ${delta} at ${at}` };
    }
    case 8: {
      if (n === 0) break;
      const b = Buffer.from(input);
      const v = rng.pick([0x00, 0x01, 0x04, 0x05, 0x06, 0xff]);
      b[0] = v;
      return { bytes: b, how: `version 0x${v.toString(16)}` };
    }
    default:
      break;
  }
  const noise = rng.bytes(rng.int(64));
  return { bytes: noise, how: `noise ${noise.length}` };
}

/** One to four changes in a row. */
export function mutate(rng: Rng, input: Buffer): { bytes: Buffer; how: string[] } {
  let bytes = input;
  const how: string[] = [];
  const times = 1 + rng.int(4);
  for (let i = 0; i < times; i++) {
    const m = mutateOnce(rng, bytes);
    bytes = m.bytes;
    how.push(m.how);
  }
  return { bytes, how };
}
