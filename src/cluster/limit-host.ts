import { type LoginEvent, LoginGuard } from "../auth/login-guard.js";
import { TokenBucket } from "../server/limits.js";
import type { ToPrimary, ToWorker } from "./messages.js";

/** The most slots one grant hands a worker: enough that a busy worker rarely asks. */
const MAX_GRANT = 256;
/** How long a grant waits for the other workers to answer a reclaim before it goes on without. */
const RECLAIM_WAIT_MS = 2000;
/** A bucket unused this long is full again, the same as a new one: it is forgotten. */
const BUCKET_IDLE_MS = 60_000;

interface Counter {
  /** Slots granted to workers and not given back. */
  total: number;
  /** Per worker, slots it holds (used or not). */
  held: Map<number, number>;
  /** Grants of this key, one at a time (a reclaim must finish before the next grant counts). */
  queue: Promise<void>;
  busy: number;
}

interface Attempt {
  abort: AbortController;
  /** Set while the worker runs the password check; undefined: the worker is gone. */
  checked?: (ok: boolean | undefined) => void;
}

/**
 * The primary's side of the limits its workers share (the worker's side is
 * src/cluster/worker-store.ts). It keeps, per counter, how many slots each worker holds and
 * never grants beyond the limit in all; a grant is a share of what is free, so a busy worker
 * asks seldom and the last slots go one at a time. When none is free it takes back the slots
 * other workers hold unused. It also keeps the bandwidth buckets (a worker's bucket is filled
 * from them) and the one LoginGuard every worker's logins wait in.
 */
export class LimitHost {
  private readonly counters = new Map<string, Counter>();
  private readonly buckets = new Map<string, { bucket: TokenBucket; lastUsed: number }>();
  private readonly workers = new Map<number, (m: ToWorker) => void>();
  /** Reclaims sent, by id, until answered or their worker is gone. */
  private readonly reclaims = new Map<number, { worker: number; done: (n: number) => void }>();
  private readonly attempts = new Map<string, Attempt>();
  private nextId = 1;
  readonly logins = new LoginGuard();

  constructor() {
    setInterval(() => this.sweepBuckets(), BUCKET_IDLE_MS).unref();
  }

  /** A worker joins: `send` reaches it. */
  attach(worker: number, send: (m: ToWorker) => void): void {
    this.workers.set(worker, send);
  }

  /** A worker is gone: what it held is free, its logins leave their lines. */
  detach(worker: number): void {
    this.workers.delete(worker);
    for (const [key, c] of this.counters) {
      this.drop(c, worker, c.held.get(worker) ?? 0);
      this.forget(key, c);
    }
    for (const r of this.reclaims.values()) if (r.worker === worker) r.done(0);
    for (const [key, a] of this.attempts) {
      if (!key.startsWith(`${worker}:`)) continue;
      a.abort.abort(new Error("the worker is gone"));
      a.checked?.(undefined);
    }
  }

  /** Slots `worker` holds of `key` (for tests and logs). */
  held(key: string, worker?: number): number {
    const c = this.counters.get(key);
    if (!c) return 0;
    return worker === undefined ? c.total : (c.held.get(worker) ?? 0);
  }

  receive(worker: number, m: ToPrimary): void {
    switch (m.ferry) {
      case "take":
        return this.take(worker, m.id, m.key, m.limit ?? Number.POSITIVE_INFINITY, m.give);
      case "return": {
        const c = this.counters.get(m.key);
        if (c) {
          this.drop(c, worker, m.n);
          this.forget(m.key, c);
        }
        return;
      }
      case "reclaimed":
        return this.reclaims.get(m.id)?.done(m.n);
      case "tokens":
        return this.tokens(worker, m.id, m.key, m.rate, m.n);
      case "login":
        return this.login(worker, m.id, m.client, m.user, m.method);
      case "checked":
        return this.attempts.get(`${worker}:${m.id}`)?.checked?.(m.ok);
      case "cancel":
        return this.attempts
          .get(`${worker}:${m.id}`)
          ?.abort.abort(new Error("the client hung up while its login waited its turn"));
      default:
        return;
    }
  }

  private send(worker: number, m: ToWorker): void {
    this.workers.get(worker)?.(m);
  }

  private take(worker: number, id: number, key: string, limit: number, give: number): void {
    let c = this.counters.get(key);
    if (!c) {
      c = { total: 0, held: new Map(), queue: Promise.resolve(), busy: 0 };
      this.counters.set(key, c);
    }
    const counter = c;
    if (give > 0) this.drop(counter, worker, give);
    counter.busy++;
    counter.queue = counter.queue
      .then(async () => {
        if (!this.workers.has(worker)) return;
        let n = this.grant(counter, worker, limit);
        if (n === 0 && counter.total > (counter.held.get(worker) ?? 0)) {
          await this.reclaim(key, counter, worker);
          if (!this.workers.has(worker)) return;
          n = this.grant(counter, worker, limit);
        }
        this.send(worker, { ferry: "grant", id, n });
      })
      .finally(() => {
        counter.busy--;
        this.forget(key, counter);
      });
  }

  /** Grants `worker` a share of what is free of `c` under `limit`; 0 when nothing is. */
  private grant(c: Counter, worker: number, limit: number): number {
    const free = limit - c.total;
    if (free < 1) return 0;
    const share = Math.max(1, Math.floor(free / (2 * Math.max(1, this.workers.size))));
    const n = Math.min(free, share, MAX_GRANT);
    c.total += n;
    c.held.set(worker, (c.held.get(worker) ?? 0) + n);
    return n;
  }

  /** Asks every other worker holding slots of `key` to give back those it does not use. */
  private async reclaim(key: string, c: Counter, except: number): Promise<void> {
    const asked: Promise<void>[] = [];
    for (const [worker, n] of c.held) {
      if (worker === except || n <= 0) continue;
      const id = this.nextId++;
      asked.push(
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, RECLAIM_WAIT_MS);
          // The answer counts whenever it comes: the worker has given those slots up.
          this.reclaims.set(id, {
            worker,
            done: (given) => {
              this.reclaims.delete(id);
              clearTimeout(timer);
              if (given > 0 && this.workers.has(worker)) this.drop(c, worker, given);
              resolve();
            },
          });
          this.send(worker, { ferry: "reclaim", id, key });
        }),
      );
    }
    await Promise.all(asked);
  }

  private drop(c: Counter, worker: number, n: number): void {
    const held = c.held.get(worker) ?? 0;
    const given = Math.min(held, n);
    c.total -= given;
    if (held - given > 0) c.held.set(worker, held - given);
    else c.held.delete(worker);
  }

  private forget(key: string, c: Counter): void {
    if (c.total === 0 && c.busy === 0 && this.counters.get(key) === c) this.counters.delete(key);
  }

  /** Grants `n` bytes of the bucket `key` when it has them (it goes into debt, and the answer waits). */
  private tokens(worker: number, id: number, key: string, rate: number, n: number): void {
    let b = this.buckets.get(key);
    if (!b || b.bucket.rate !== rate) {
      b = { bucket: new TokenBucket(rate), lastUsed: 0 };
      this.buckets.set(key, b);
    }
    b.lastUsed = performance.now();
    const wait = b.bucket.take(n);
    if (wait <= 0) return this.send(worker, { ferry: "tokens", id });
    setTimeout(() => this.send(worker, { ferry: "tokens", id }), Math.ceil(wait)).unref();
  }

  private sweepBuckets(): void {
    const now = performance.now();
    for (const [key, b] of this.buckets) {
      const refillMs = (b.bucket.burst * 1000) / b.bucket.rate;
      if (now - b.lastUsed > Math.max(BUCKET_IDLE_MS, 2 * refillMs)) this.buckets.delete(key);
    }
  }

  /** Lines a worker's login up in the one guard; the worker checks the password when told. */
  private login(worker: number, id: number, client: string, user: string, method: string): void {
    const key = `${worker}:${id}`;
    const attempt: Attempt = { abort: new AbortController() };
    this.attempts.set(key, attempt);
    let event: LoginEvent | undefined;
    const check = () =>
      new Promise<boolean>((resolve, reject) => {
        attempt.checked = (ok) => {
          attempt.checked = undefined;
          if (ok === undefined) reject(new Error("the worker checking the password is gone"));
          else resolve(ok);
        };
        this.send(worker, { ferry: "check", id });
      });
    this.logins
      .attempt(client, user, method, check, attempt.abort.signal, (e) => {
        event = e;
      })
      .then(
        (outcome) => this.send(worker, { ferry: "login", id, outcome, ...(event && { event }) }),
        (err: Error) =>
          this.send(worker, { ferry: "login", id, error: err.message, ...(event && { event }) }),
      )
      .finally(() => this.attempts.delete(key));
  }
}
