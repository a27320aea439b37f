import { clientGroup } from "../auth/login-guard.js";

/** The shortest the handshake timeout gets under pressure (unless configured shorter still). */
export const PRESSURE_FLOOR_MS = 1000;
/** How often handshakes are checked against the shortened timeout while under pressure. */
const SWEEP_MS = 100;

/**
 * The handshake timeout at a given load: the configured one up to half the budget, then
 * shrinking linearly to PRESSURE_FLOOR_MS when the budget is full. 0 (no timeout) stays 0.
 */
export function pressureTimeout(timeoutMs: number, inProgress: number, budget: number): number {
  if (timeoutMs <= 0) return 0;
  const floor = Math.min(PRESSURE_FLOOR_MS, timeoutMs);
  const over = Math.min(1, Math.max(0, (inProgress / budget - 0.5) / 0.5));
  return Math.round(timeoutMs - (timeoutMs - floor) * over);
}

export interface HandshakeTicket {
  /** The handshake is over (request read, or connection gone): frees its place. Idempotent. */
  release(): void;
}

interface Entry {
  group: string;
  startedAt: number;
  /** The configured handshake timeout this connection started under (0: none). */
  timeoutMs: number;
  shed: (reason: string) => void;
  done: boolean;
}

/**
 * Connections still in the handshake (accept → request read), counted apart from established
 * sessions so that clients which never finish cannot keep out the ones that do. It never
 * refuses: when full, it closes the oldest handshake of the client group (an IPv4 address, an
 * IPv6 /64) holding the most, so an honest client with one handshake in flight outlasts an
 * attacker holding hundreds, from however many addresses, unless the attacker has more
 * addresses than the budget has places. Above half full, the handshake timeout shortens
 * (pressureTimeout), so stalled connections make room without waiting for someone new.
 */
export class HandshakeBudget {
  /** Every handshake in progress, oldest first (a Set keeps insertion order). */
  private readonly all = new Set<Entry>();
  /** Per client group, its handshakes oldest first. */
  private readonly byGroup = new Map<string, Set<Entry>>();
  /** Groups by how many handshakes they hold, to find the heaviest without a scan. */
  private readonly groupsHolding = new Map<number, Set<string>>();
  private heaviest = 0;
  private budget = Number.POSITIVE_INFINITY;
  private sweeper: NodeJS.Timeout | undefined;
  /** Handshakes closed to make room or by the shortened timeout, since start. */
  shed = 0;

  get inProgress(): number {
    return this.all.size;
  }

  /**
   * Counts a new handshake from `client`, first closing one (through its `shed`) if `budget`
   * places are taken. `shed` must end that connection; its place is freed at once.
   */
  admit(client: string, budget: number, timeoutMs: number, shed: (reason: string) => void): HandshakeTicket {
    this.budget = budget;
    while (this.all.size >= budget && this.heaviest > 0) {
      const victim = this.oldestOfHeaviest();
      this.drop(victim);
      this.shed++;
      victim.shed(
        `closed in the handshake to make room: ${budget} handshakes in progress (limits.handshakes), the most from ${victim.group}`,
      );
    }
    const entry: Entry = {
      group: clientGroup(client),
      startedAt: performance.now(),
      timeoutMs,
      shed,
      done: false,
    };
    this.add(entry);
    this.schedule();
    return { release: () => this.drop(entry) };
  }

  private oldestOfHeaviest(): Entry {
    const group = this.groupsHolding.get(this.heaviest)!.values().next().value!;
    return this.byGroup.get(group)!.values().next().value!;
  }

  private add(e: Entry): void {
    this.all.add(e);
    let mine = this.byGroup.get(e.group);
    if (!mine) {
      mine = new Set();
      this.byGroup.set(e.group, mine);
    }
    mine.add(e);
    this.move(e.group, mine.size - 1, mine.size);
  }

  private drop(e: Entry): void {
    if (e.done) return;
    e.done = true;
    this.all.delete(e);
    const mine = this.byGroup.get(e.group)!;
    mine.delete(e);
    if (mine.size === 0) this.byGroup.delete(e.group);
    this.move(e.group, mine.size + 1, mine.size);
  }

  /** Moves `group` from the bucket of groups holding `from` handshakes to `to`'s. */
  private move(group: string, from: number, to: number): void {
    if (from > 0) {
      const bucket = this.groupsHolding.get(from)!;
      bucket.delete(group);
      if (bucket.size === 0) this.groupsHolding.delete(from);
    }
    if (to > 0) {
      let bucket = this.groupsHolding.get(to);
      if (!bucket) {
        bucket = new Set();
        this.groupsHolding.set(to, bucket);
      }
      bucket.add(group);
    }
    if (to > this.heaviest) this.heaviest = to;
    // Counts change by one at a time, so the heaviest is at most one lower when its bucket empties.
    else if (from === this.heaviest && !this.groupsHolding.has(from)) this.heaviest = to;
  }

  /** Runs the sweep while more than half the budget is taken. */
  private schedule(): void {
    if (this.sweeper || this.all.size <= this.budget / 2) return;
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  /** Closes the handshakes older than the timeout the current pressure allows. */
  private sweep(): void {
    const count = this.all.size;
    if (count <= this.budget / 2) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
      return;
    }
    const now = performance.now();
    for (const e of this.all) {
      const age = now - e.startedAt;
      // Oldest first: from here on all are younger than any shortened timeout.
      if (age < PRESSURE_FLOOR_MS) break;
      const limit = pressureTimeout(e.timeoutMs, count, this.budget);
      // At or above its own timeout the session's own timer closes it, with its usual reason.
      if (limit === 0 || limit >= e.timeoutMs || age < limit) continue;
      this.drop(e);
      this.shed++;
      e.shed(
        `handshake not finished within ${limit} ms (shortened from ${e.timeoutMs} ms: ${count} of ${this.budget} handshakes in progress)`,
      );
    }
  }
}
