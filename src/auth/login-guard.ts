import { EventEmitter } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import ipaddr from "ipaddr.js";
import { isPlainIpv4 } from "../protocol/address.js";

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
  /** Attempts from one client address (IPv6: one /64) in line or being checked at once. */
  maxPendingPerClient?: number;
  /** Attempts from everyone in line or being checked at once. */
  maxPending?: number;
}

/**
 * Defaults for the bounds on attempts in line. 32 per address: browsers open up to 32
 * connections to one proxy at once, each its own login, and with the same credentials they
 * drain fast (the first success is cached, users.ts); a guesser gains nothing from a longer line,
 * as its attempts are checked one by one. 256 in all: one worker checks ~12 cost-10 hashes a
 * second, so a longer line could not be checked before the handshake timeout (10 s) ends it.
 */
/** A client address with no failure for this long starts afresh. */
export const FORGET_MS = 15 * 60_000;

export const LOGIN_LINE_DEFAULTS = { maxPendingPerClient: 32, maxPending: 256 };

/** The outcome of one attempt: checked and right, checked and wrong, or not checked at all. */
export type LoginOutcome = { ok: true } | { ok: false; refused?: string };

/**
 * What a login waits on: the guard below in one process, or, with workers, the primary's guard
 * asked from a worker (src/cluster/worker-store.ts), so that throttling holds across workers.
 */
export interface LoginThrottle extends EventEmitter<{ login: [LoginEvent] }> {
  attempt(
    client: string,
    user: string,
    method: string,
    check: () => Promise<boolean>,
    signal?: AbortSignal,
  ): Promise<LoginOutcome>;
  /** Attempts in line or being checked, from `client`'s group or from everyone (as known here). */
  pending(client?: string): number;
}

/** Login attempts in line or being checked: per client group, and in all. */
export class PendingLogins {
  private readonly perGroup = new Map<string, number>();
  all = 0;

  /** For `client`'s group (as clientGroup() reads it), or in all. */
  count(client?: string): number {
    return client === undefined ? this.all : (this.perGroup.get(clientGroup(client)) ?? 0);
  }

  /** For a group already computed. */
  inGroup(group: string): number {
    return this.perGroup.get(group) ?? 0;
  }

  add(group: string): void {
    this.perGroup.set(group, this.inGroup(group) + 1);
    this.all++;
  }

  remove(group: string): void {
    const left = this.inGroup(group) - 1;
    if (left > 0) this.perGroup.set(group, left);
    else this.perGroup.delete(group);
    this.all--;
  }
}

/** What is remembered of one client group's failures. */
export interface FailureEntry {
  failures: number;
  /** No attempt from this group is checked before this time (ms since the epoch). */
  notBefore: number;
}

/**
 * Where failed logins are remembered: this process's map (LocalFailures), or a store every
 * instance shares (src/cluster/redis-logins.ts), so a failure on one throttles the others.
 */
export interface FailureMemory {
  /** The group's failures, or undefined when it has none remembered. */
  get(group: string): FailureEntry | undefined | Promise<FailureEntry | undefined>;
  /** Counts a failure; `delayFor(failures)` is how long it holds the group. Returns the new entry. */
  fail(group: string, delayFor: (failures: number) => number): FailureEntry | Promise<FailureEntry>;
}

interface Entry extends FailureEntry {
  lastFailure: number;
}

/** Failures in this process: a map ordered by last failure, bounded, forgetting quiet groups. */
export class LocalFailures implements FailureMemory {
  private readonly clients = new Map<string, Entry>();

  constructor(
    private readonly forget: number,
    private readonly maxClients: number,
  ) {}

  get(group: string): Entry | undefined {
    const e = this.clients.get(group);
    if (e && Date.now() - e.lastFailure > this.forget) {
      this.clients.delete(group);
      return undefined;
    }
    return e;
  }

  fail(group: string, delayFor: (failures: number) => number): Entry {
    const now = Date.now();
    const e = this.get(group) ?? { failures: 0, lastFailure: now, notBefore: 0 };
    e.failures++;
    e.lastFailure = now;
    e.notBefore = now + delayFor(e.failures);
    // Re-insert so the map stays ordered by last failure; the oldest is evicted first.
    this.clients.delete(group);
    this.clients.set(group, e);
    if (this.clients.size > this.maxClients) this.clients.delete(this.clients.keys().next().value!);
    return e;
  }
}

/**
 * Slows password guessing from one client address (an IPv6 client by its /64, which one host
 * usually holds whole): each failure makes that address wait longer (200 ms, 400 ms, 800 ms,
 * ... up to 10 s) before its failure reply and before its next attempt is even checked.
 *
 * Attempts are checked one at a time per address and user, each waiting in line until the one
 * before has finished, failure delay included, so sending many at once gains nothing. Once an
 * address has a failure on record, all its attempts share one line, whatever user they name, so
 * trying one password on many users at once gains nothing either. An attempt beyond the bounds
 * on the lines (LOGIN_LINE_DEFAULTS) is refused unchecked. Emits a `login` event for every
 * checked attempt, good or bad, for the log.
 */
export class LoginGuard extends EventEmitter<{ login: [LoginEvent] }> implements LoginThrottle {
  private readonly memory: FailureMemory;
  private readonly lines = new Lines();
  /** Attempts in line or being checked, per client group. */
  private readonly inLine = new PendingLogins();
  private readonly base: number;
  private readonly max: number;
  readonly maxPendingPerClient: number;
  readonly maxPending: number;

  /** `memory`: where failures are kept (default: this process, per forgetMs and maxClients). */
  constructor(options: LoginGuardOptions = {}, memory?: FailureMemory) {
    super();
    this.base = options.baseDelayMs ?? 200;
    this.max = options.maxDelayMs ?? 10_000;
    this.memory = memory ?? new LocalFailures(options.forgetMs ?? FORGET_MS, options.maxClients ?? 10_000);
    this.maxPendingPerClient = options.maxPendingPerClient ?? LOGIN_LINE_DEFAULTS.maxPendingPerClient;
    this.maxPending = options.maxPending ?? LOGIN_LINE_DEFAULTS.maxPending;
  }

  /** Attempts in line or being checked, from `client`'s group or from everyone. */
  pending(client?: string): number {
    return this.inLine.count(client);
  }

  /**
   * Runs `check` in its turn and holds a failure for its delay; resolves when the reply may go.
   * `signal` (the client leaving) takes an attempt out of line; a check under way runs to the end.
   * `report` takes the attempt's event instead of the `login` listeners (a worker logs its own).
   */
  async attempt(
    client: string,
    user: string,
    method: string,
    check: () => Promise<boolean>,
    signal?: AbortSignal,
    report: (e: LoginEvent) => void = (e) => this.emit("login", e),
  ): Promise<LoginOutcome> {
    signal?.throwIfAborted();
    const group = clientGroup(client);
    const held = this.inLine.inGroup(group);
    if (held >= this.maxPendingPerClient) {
      return { ok: false, refused: `too many login attempts in line from ${group} (${held}); not checked` };
    }
    if (this.inLine.all >= this.maxPending) {
      return { ok: false, refused: `too many login attempts in line (${this.inLine.all}); not checked` };
    }
    this.inLine.add(group);
    const releases: (() => void)[] = [];
    try {
      releases.push(await this.lines.enter(`${group}\0${user}`, signal));
      if (await this.memory.get(group)) releases.push(await this.lines.enter(group, signal));
      const wait = ((await this.memory.get(group))?.notBefore ?? 0) - Date.now();
      if (wait > 0) await sleep(wait, undefined, { signal });
      if (await check()) {
        const failures = (await this.memory.get(group))?.failures ?? 0;
        report({ client, user, method, ok: true, failures, delayMs: 0 });
        return { ok: true };
      }
      // Not abortable: a client that hangs up must not shorten the line's wait.
      const delayMs = await this.failed(client, group, user, method, report);
      if (delayMs > 0) await sleep(delayMs);
      return { ok: false };
    } finally {
      for (const release of releases.reverse()) release();
      this.inLine.remove(group);
    }
  }

  /** Records a failure; returns how long its reply is held. */
  private async failed(
    client: string,
    group: string,
    user: string,
    method: string,
    report: (e: LoginEvent) => void,
  ): Promise<number> {
    const e = await this.memory.fail(group, (n) => this.delayFor(n));
    // Its own delay in full, or longer if a shared memory already holds the group longer.
    const delayMs = Math.max(this.delayFor(e.failures), e.notBefore - Date.now());
    report({ client, user, method, ok: false, failures: e.failures, delayMs: this.delayFor(e.failures) });
    return delayMs;
  }

  /** 200 ms after the first failure, doubling with each, up to the maximum. */
  private delayFor(failures: number): number {
    return Math.min(this.max, this.base * 2 ** Math.min(failures - 1, 30));
  }
}

/** The key attempts are counted under: an IPv4 address, or an IPv6 address's /64. */
export function clientGroup(address: string): string {
  // Every handshake asks: an IPv4 address in its plain form is its own group, unparsed.
  if (isPlainIpv4(address)) return address;
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.process(address);
  } catch {
    return address;
  }
  if (ip.kind() === "ipv4") return ip.toString();
  const parts = (ip as ipaddr.IPv6).parts.slice(0, 4);
  return `${new ipaddr.IPv6([...parts, 0, 0, 0, 0]).toString()}/64`;
}

/** First come, first served lines, one per key; a line exists only while someone is in it. */
class Lines {
  private readonly lines = new Map<string, (() => void)[]>();

  /** Resolves, with a release function, when it is this caller's turn on `key`. */
  enter(key: string, signal?: AbortSignal): Promise<() => void> {
    const waiting = this.lines.get(key);
    if (!waiting) {
      this.lines.set(key, []);
      return Promise.resolve(this.releaser(key));
    }
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = waiting.indexOf(turn);
        if (i >= 0) waiting.splice(i, 1);
        reject(signal!.reason);
      };
      const turn = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve(this.releaser(key));
      };
      waiting.push(turn);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private releaser(key: string): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.lines.get(key)?.shift();
      if (next) next();
      else this.lines.delete(key);
    };
  }
}
