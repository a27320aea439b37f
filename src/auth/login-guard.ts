import { EventEmitter } from "node:events";

export interface LoginEvent {
  client: string;
  user: string;
  method: string;
  ok: boolean;
  /** Failures from this client address still remembered (after this attempt). */
  failures: number;
  /** How long this failed attempt was held before its reply (0 on success). */
  delayMs: number;
}

export interface LoginGuardOptions {
  /** Delay after the first failure; each further failure doubles it. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** A client address with no failure for this long starts afresh. */
  forgetMs?: number;
  /** Client addresses remembered at most (the oldest are forgotten first). */
  maxClients?: number;
}

interface Entry {
  failures: number;
  lastFailure: number;
  /** No attempt from this address is checked before this time. */
  notBefore: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Slows password guessing from one client address: each failure makes that address wait longer
 * (200 ms, 400 ms, 800 ms, ... up to 10 s) before its failure reply and before its next attempt
 * is even checked. Emits a `login` event for every attempt, good or bad, for the log.
 */
export class LoginGuard extends EventEmitter<{ login: [LoginEvent] }> {
  private readonly clients = new Map<string, Entry>();
  private readonly base: number;
  private readonly max: number;
  private readonly forget: number;
  private readonly maxClients: number;

  constructor(options: LoginGuardOptions = {}) {
    super();
    this.base = options.baseDelayMs ?? 200;
    this.max = options.maxDelayMs ?? 10_000;
    this.forget = options.forgetMs ?? 15 * 60_000;
    this.maxClients = options.maxClients ?? 10_000;
  }

  private entry(client: string, now: number): Entry | undefined {
    const e = this.clients.get(client);
    if (e && now - e.lastFailure > this.forget) {
      this.clients.delete(client);
      return undefined;
    }
    return e;
  }

  /** Waits until this client address may try again. */
  async before(client: string): Promise<void> {
    const now = Date.now();
    const e = this.entry(client, now);
    if (e && e.notBefore > now) await sleep(e.notBefore - now);
  }

  succeeded(client: string, user: string, method: string): void {
    const failures = this.entry(client, Date.now())?.failures ?? 0;
    this.emit("login", { client, user, method, ok: true, failures, delayMs: 0 });
  }

  /** Records a failure and waits the growing delay; the caller replies afterwards. */
  async failed(client: string, user: string, method: string): Promise<void> {
    const now = Date.now();
    const e = this.entry(client, now) ?? { failures: 0, lastFailure: now, notBefore: 0 };
    e.failures++;
    e.lastFailure = now;
    const delayMs = Math.min(this.max, this.base * 2 ** Math.min(e.failures - 1, 30));
    e.notBefore = now + delayMs;
    // Re-insert so the map stays ordered by last failure; the oldest is evicted first.
    this.clients.delete(client);
    this.clients.set(client, e);
    if (this.clients.size > this.maxClients) this.clients.delete(this.clients.keys().next().value!);
    this.emit("login", { client, user, method, ok: false, failures: e.failures, delayMs });
    await sleep(delayMs);
  }
}
