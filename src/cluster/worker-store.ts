import { EventEmitter } from "node:events";
import type { LoginEvent, LoginOutcome, LoginThrottle } from "../auth/login-guard.js";
import { clientGroup, PendingLogins } from "../auth/login-guard.js";
import { type Claim, type LimitStore, type Taken, takenSlots } from "../server/limit-store.js";
import { TokenBucket } from "../server/limits.js";
import type { ToPrimary, ToWorker } from "./messages.js";

/** How the worker talks to its primary (the cluster's IPC channel, or a pipe in a unit test). */
export interface PrimaryChannel {
  send(m: ToPrimary): void;
  /** Every message from the primary; `undefined` once the channel has closed. */
  listen(handler: (m: ToWorker | undefined) => void): void;
}

/** A key this worker has not used for this long gives its allotment back. */
const IDLE_MS = 5000;
/** Rounds one claim may wait or ask before it is refused (each ends in a grant to someone). */
const MAX_ROUNDS = 16;

interface Entry {
  /** The cap the allotment was granted under; a claim with another one asks afresh. */
  limit: number;
  /** Slots the primary granted this worker and has not had back. */
  allot: number;
  /** Of those, taken by live sessions. */
  used: number;
  /** A request to the primary under way: other claims of the key wait for it. */
  asking?: Promise<void>;
  idleSince: number;
}

/** JSON has no Infinity: an uncapped claim travels as null. */
const wire = (limit: number): number | null => (Number.isFinite(limit) ? limit : null);

/**
 * A worker's view of the limits its primary keeps (src/cluster/limit-host.ts). For each counter
 * the primary grants this worker an allotment of slots; sessions take and give back slots of it
 * here, with no message, and only a worker that has used up its allotment asks for more. The
 * primary never grants more than the limit in all, so the limit holds across workers; when none
 * is left it first takes back the slots other workers hold unused. Bandwidth works the same
 * way in bytes, and logins wait in the primary's lines.
 */
export class WorkerLimitStore implements LimitStore {
  private readonly entries = new Map<string, Entry>();
  private readonly waiting = new Map<number, (m: ToWorker | undefined) => void>();
  private nextId = 1;
  private closed = false;
  readonly logins: RemoteLoginGuard;

  constructor(private readonly channel: PrimaryChannel) {
    this.logins = new RemoteLoginGuard(this);
    channel.listen((m) => this.receive(m));
    setInterval(() => this.sweep(), IDLE_MS).unref();
  }

  take(claims: readonly Claim[]): Taken | Promise<Taken> {
    for (const c of claims) {
      const e = this.entries.get(c.key);
      if (!e || e.asking || e.limit !== c.limit || e.used >= e.allot) return this.takeSlowly(claims);
    }
    for (const c of claims) this.entries.get(c.key)!.used++;
    return this.slots(claims);
  }

  /** Only what this worker holds counts: a claim it alone fills is surely full. */
  full(claim: Claim): boolean {
    return (this.entries.get(claim.key)?.used ?? 0) >= claim.limit;
  }

  bucket(key: string, rate: number): TokenBucket {
    return new SharedBucket(this, key, rate);
  }

  private async takeSlowly(claims: readonly Claim[]): Promise<Taken> {
    for (let i = 0; i < claims.length; i++) {
      if (!(await this.reserve(claims[i]!))) {
        for (const c of claims.slice(0, i)) this.free(c.key);
        return { refused: i };
      }
    }
    return this.slots(claims);
  }

  private slots(claims: readonly Claim[]): Taken {
    return takenSlots(claims, (key) => this.free(key));
  }

  private free(key: string): void {
    const e = this.entries.get(key)!;
    if (--e.used === 0) e.idleSince = performance.now();
  }

  /** Takes one slot of `c`, asking the primary for more when the allotment is used up. */
  private async reserve(c: Claim): Promise<boolean> {
    for (let round = 0; round < MAX_ROUNDS && !this.closed; round++) {
      let e = this.entries.get(c.key);
      if (!e) {
        e = { limit: c.limit, allot: 0, used: 0, idleSince: performance.now() };
        this.entries.set(c.key, e);
      }
      if (e.asking) {
        await e.asking;
        continue;
      }
      if (e.limit === c.limit && e.used < e.allot) {
        e.used++;
        return true;
      }
      // A reload changed the cap: what this worker holds unused goes back, and it asks anew.
      let give = 0;
      if (e.limit !== c.limit) {
        give = e.allot - e.used;
        e.allot = e.used;
        e.limit = c.limit;
      }
      const entry = e;
      let granted = 0;
      const id = this.nextId++;
      entry.asking = this.request({ ferry: "take", id, key: c.key, limit: wire(c.limit), give }).then((m) => {
        granted = m?.ferry === "grant" ? m.n : 0;
        entry.allot += granted;
        entry.asking = undefined;
      });
      await entry.asking;
      // Granted: loop to take it (a claim that waited on this request may have been first).
      if (granted === 0) return false;
    }
    return false;
  }

  /** Sends a request and resolves with the primary's answer (undefined if the channel closed). */
  request(m: ToPrimary & { id: number }): Promise<ToWorker | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.waiting.set(m.id, resolve);
      this.channel.send(m);
    });
  }

  send(m: ToPrimary): void {
    if (!this.closed) this.channel.send(m);
  }

  newId(): number {
    return this.nextId++;
  }

  /** `n` bytes of the primary's bucket `key`; resolves when they are granted. */
  tokens(key: string, rate: number, n: number): Promise<boolean> {
    return this.request({ ferry: "tokens", id: this.nextId++, key, rate, n }).then((m) => m !== undefined);
  }

  private receive(m: ToWorker | undefined): void {
    if (m === undefined) {
      this.closed = true;
      for (const resolve of this.waiting.values()) resolve(undefined);
      this.waiting.clear();
      return;
    }
    switch (m.ferry) {
      case "reclaim": {
        const e = this.entries.get(m.key);
        const n = e ? e.allot - e.used : 0;
        if (e) e.allot -= n;
        this.send({ ferry: "reclaimed", id: m.id, n });
        return;
      }
      case "check":
        return this.logins.runCheck(m.id);
      case "grant":
      case "tokens":
      case "login": {
        const resolve = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        resolve?.(m);
        return;
      }
    }
  }

  /** Gives back the allotments of keys no session has used for a while, and forgets them. */
  private sweep(): void {
    const now = performance.now();
    for (const [key, e] of this.entries) {
      if (e.used > 0 || e.asking || now - e.idleSince < IDLE_MS) continue;
      this.entries.delete(key);
      if (e.allot > 0) this.send({ ferry: "return", key, n: e.allot });
    }
  }
}

/**
 * A token bucket filled by grants from the primary's bucket of the same key rather than by the
 * clock: together the workers' buckets never get more than the primary's rate. Taking works
 * as in the plain bucket (a chunk may go into debt, and the reader rests); once half empty it
 * asks for what makes it full again, one request at a time.
 */
class SharedBucket extends TokenBucket {
  private asking = false;

  constructor(
    private readonly store: WorkerLimitStore,
    private readonly key: string,
    rate: number,
  ) {
    super(rate);
    this.tokens = 0;
    this.refill();
  }

  protected override refill(): void {
    if (this.asking || this.tokens >= this.burst / 2) return;
    this.asking = true;
    const n = Math.ceil(this.burst - this.tokens);
    void this.store.tokens(this.key, this.rate, n).then((granted) => {
      if (granted) this.tokens += n;
      this.asking = false;
    });
  }

  override take(n: number): number {
    this.tokens -= n;
    this.refill();
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}

/**
 * Logins wait in the primary's LoginGuard, so its lines and failure delays hold across workers;
 * the password is checked here, when the primary says it is this attempt's turn.
 */
class RemoteLoginGuard extends EventEmitter<{ login: [LoginEvent] }> implements LoginThrottle {
  private readonly checks = new Map<number, () => Promise<boolean>>();
  private readonly inLine = new PendingLogins();

  constructor(private readonly store: WorkerLimitStore) {
    super();
  }

  pending(client?: string): number {
    return this.inLine.count(client);
  }

  async attempt(
    client: string,
    user: string,
    method: string,
    check: () => Promise<boolean>,
    signal?: AbortSignal,
  ): Promise<LoginOutcome> {
    signal?.throwIfAborted();
    const id = this.store.newId();
    const group = clientGroup(client);
    this.checks.set(id, check);
    this.inLine.add(group);
    // The primary takes it out of line; a check under way runs to the end, as in one process.
    const onAbort = () => this.store.send({ ferry: "cancel", id });
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const m = await this.store.request({ ferry: "login", id, client, user, method });
      if (m?.ferry !== "login") throw new Error("login not checked: the server is stopping");
      if (m.event) this.emit("login", m.event);
      if (m.outcome) return m.outcome;
      throw signal?.aborted ? signal.reason : new Error(m.error ?? "login not checked");
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.checks.delete(id);
      this.inLine.remove(group);
    }
  }

  runCheck(id: number): void {
    const check = this.checks.get(id);
    const done = (ok: boolean) => this.store.send({ ferry: "checked", id, ok });
    if (!check) return done(false);
    check().then(done, () => done(false));
  }
}
