import { lookup as dnsLookup } from "node:dns/promises";
import net from "node:net";
import type { Resolved } from "./family.js";

export type { Resolved };

export interface ResolveOptions {
  /** The client this lookup is for: lookups are bounded, and slots shared fairly, per client. */
  client?: string;
  /** Aborted when the session ends: stop waiting (the underlying getaddrinfo cannot be cancelled). */
  signal?: AbortSignal;
  /** Give up after this long, queueing included (the caller passes what is left of timeouts.connect). */
  timeoutMs?: number;
}

export interface ResolverOptions {
  /** The name lookup; the system's getaddrinfo by default. Tests inject one they control. */
  lookup?: (host: string) => Promise<Resolved[]>;
  /** Distinct names one client may have in progress (queued or running) at once. */
  maxPerClient?: number;
  /** Lookups running at once, in total: below libuv's 4 threads so fs and crypto keep one. */
  maxInFlight?: number;
  /** Running lookups one client may hold: fewer than maxInFlight, so hung ones cannot take every slot. */
  maxRunningPerClient?: number;
  /** Lookups waiting for a slot, in total. */
  maxQueue?: number;
  /** How long an answer is reused. */
  cacheMs?: number;
  /** Answers kept; the oldest goes first. */
  maxCache?: number;
  /** The timeout of a call that names none: no lookup waits forever. */
  timeoutMs?: number;
  /** The clock cache entries expire by; tests move it by hand. */
  now?: () => number;
}

/** A failed lookup; `code` is the system's (ENOTFOUND, EAI_AGAIN ...) or ETIMEDOUT, ETOOMANY, EBUSY, ABORT_ERR. */
export class ResolveError extends Error {
  override name = "ResolveError";
  constructor(
    message: string,
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const systemLookup = async (host: string): Promise<Resolved[]> =>
  (await dnsLookup(host, { all: true, verbatim: true })).map((a) => ({
    address: a.address,
    family: a.family,
  }));

/** One caller waiting on a job. */
interface Waiter {
  resolve: (list: Resolved[]) => void;
  reject: (err: ResolveError) => void;
  /** Stops the caller's timer and abort listener. */
  cleanup: () => void;
}

/** One getaddrinfo call (queued or running), shared by every caller asking for the same name. */
interface Job {
  key: string;
  host: string;
  /** The client whose queue it waits in and whose running share it uses. */
  owner: string;
  running: boolean;
  waiters: Set<Waiter>;
  /** Every client charged for it (see `inProgress`). */
  clients: Set<string>;
}

const ANONYMOUS = "";

/**
 * The one place names are resolved (getaddrinfo runs on libuv's small thread pool, shared with fs
 * and crypto, and cannot be cancelled; a flood of unique names or a DNS server that never answers
 * would otherwise stall every lookup, and fs, for everyone):
 *
 * - Same name, one lookup: concurrent callers share a job (coalescing).
 * - Per client, at most `maxPerClient` distinct names in progress: more fails at once (ETOOMANY)
 *   rather than queueing. A client stays charged for a running job until getaddrinfo really
 *   returns, even if it stopped waiting: otherwise timing out and retrying would pile up hung
 *   lookups without bound. (Likewise for a queued job it left that others still wait for; the job
 *   keeps its creator's place in the queues.)
 * - In total, at most `maxInFlight` lookups run; the rest wait in per-client FIFO queues served
 *   round-robin, so a client's flood delays another client's lookup by at most one turn. The
 *   queues together hold at most `maxQueue` jobs (EBUSY beyond). One client holds at most
 *   `maxRunningPerClient` running slots, so its hung lookups always leave a slot for others.
 * - A caller's timeout and signal cover queueing and the lookup; on either it is rejected at once.
 *   A queued job nobody waits for any more is dropped; a running one keeps its slot until it
 *   returns, because its thread stays busy until then.
 * - Answers are cached briefly (getaddrinfo gives no TTL, so `cacheMs` is short to see changed
 *   records soon), bounded in entries. Failures are not cached: a caller arriving after a failure
 *   tries again (an outage heals at once), and the bounds above already stop a client turning bad
 *   names into a flood.
 */
export class Resolver {
  private readonly lookup: (host: string) => Promise<Resolved[]>;
  private readonly maxPerClient: number;
  private readonly maxInFlight: number;
  private readonly maxRunningPerClient: number;
  private readonly maxQueue: number;
  private readonly cacheMs: number;
  private readonly maxCache: number;
  private readonly defaultTimeoutMs: number;
  private readonly now: () => number;

  private readonly cache = new Map<string, { expires: number; list: Resolved[] }>();
  private readonly jobs = new Map<string, Job>();
  /** Waiting jobs per client; Map order is the round-robin order (a served client moves to the back). */
  private readonly queues = new Map<string, Job[]>();
  private queued = 0;
  private running = 0;
  private readonly runningBy = new Map<string, number>();
  /** Jobs each client is charged for. */
  private readonly inProgress = new Map<string, number>();

  constructor(options: ResolverOptions = {}) {
    this.lookup = options.lookup ?? systemLookup;
    this.maxPerClient = options.maxPerClient ?? 8;
    this.maxInFlight = options.maxInFlight ?? 3;
    this.maxRunningPerClient = Math.min(
      options.maxRunningPerClient ?? Math.max(1, this.maxInFlight - 1),
      this.maxInFlight,
    );
    this.maxQueue = options.maxQueue ?? 256;
    this.cacheMs = options.cacheMs ?? 30_000;
    this.maxCache = options.maxCache ?? 512;
    this.defaultTimeoutMs = options.timeoutMs ?? 30_000;
    this.now = options.now ?? Date.now;
  }

  /** Counts for metrics and tests. */
  get stats(): { running: number; queued: number; cached: number } {
    return { running: this.running, queued: this.queued, cached: this.cache.size };
  }

  resolve(host: string, options: ResolveOptions = {}): Promise<Resolved[]> {
    const family = net.isIP(host);
    // A literal needs no lookup (getaddrinfo would just parse it, yet take a slot).
    if (family !== 0) return Promise.resolve([{ address: host, family }]);
    const key = host.toLowerCase();
    const hit = this.cache.get(key);
    if (hit) {
      if (hit.expires > this.now()) return Promise.resolve(hit.list.slice());
      this.cache.delete(key);
    }
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(new ResolveError(`lookup of ${host} aborted`, "ABORT_ERR"));
    // setTimeout takes at most 2^31-1 ms (more fires at once).
    const timeoutMs = Math.min(options.timeoutMs ?? this.defaultTimeoutMs, 2 ** 31 - 1);
    if (!(timeoutMs > 0)) return Promise.reject(timedOut(host, 0)); // spent (or NaN): fail, never wait
    const client = options.client ?? ANONYMOUS;

    let job = this.jobs.get(key);
    if (!job?.clients.has(client)) {
      const mine = this.inProgress.get(client) ?? 0;
      if (mine >= this.maxPerClient) {
        return Promise.reject(
          new ResolveError(
            `too many name lookups in progress for client ${client || "(unnamed)"} (${mine}); ${host} refused`,
            "ETOOMANY",
          ),
        );
      }
      if (!job && this.queued >= this.maxQueue && !this.mayStart(client)) {
        return Promise.reject(
          new ResolveError(`too many name lookups waiting (${this.queued}); ${host} refused`, "EBUSY"),
        );
      }
      if (!job) {
        job = { key, host, owner: client, running: false, waiters: new Set(), clients: new Set() };
        this.jobs.set(key, job);
        this.enqueue(job);
      }
      job.clients.add(client);
      this.inProgress.set(client, mine + 1);
    }
    const shared = job;

    const result = new Promise<Resolved[]>((resolve, reject) => {
      const leave = (err: ResolveError) => {
        waiter.cleanup();
        shared.waiters.delete(waiter);
        if (!shared.running && shared.waiters.size === 0) this.drop(shared);
        reject(err);
      };
      const timer = setTimeout(() => leave(timedOut(host, timeoutMs)), timeoutMs);
      const onAbort = () => leave(new ResolveError(`lookup of ${host} aborted`, "ABORT_ERR"));
      signal?.addEventListener("abort", onAbort, { once: true });
      const waiter: Waiter = {
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      shared.waiters.add(waiter);
    });
    this.pump();
    return result;
  }

  private enqueue(job: Job): void {
    const queue = this.queues.get(job.owner);
    if (queue) queue.push(job);
    else this.queues.set(job.owner, [job]);
    this.queued++;
  }

  /** Whether a new job of this client would start now rather than queue. */
  private mayStart(client: string): boolean {
    return (
      this.running < this.maxInFlight &&
      (this.runningBy.get(client) ?? 0) < this.maxRunningPerClient &&
      !this.queues.has(client)
    );
  }

  /** Starts queued jobs while slots are free: the first client (in round-robin order) that may run one. */
  private pump(): void {
    while (this.running < this.maxInFlight) {
      let next: Job | undefined;
      for (const [client, queue] of this.queues) {
        if ((this.runningBy.get(client) ?? 0) >= this.maxRunningPerClient) continue;
        next = queue.shift();
        this.queues.delete(client);
        if (queue.length > 0) this.queues.set(client, queue); // to the back of the round
        break;
      }
      if (!next) return;
      this.queued--;
      this.start(next);
    }
  }

  private start(job: Job): void {
    job.running = true;
    this.running++;
    this.runningBy.set(job.owner, (this.runningBy.get(job.owner) ?? 0) + 1);
    let call: Promise<Resolved[]>;
    try {
      call = this.lookup(job.host);
    } catch (err) {
      call = Promise.reject(err);
    }
    call.then(
      (list) => {
        if (list.length === 0) this.finish(job, new ResolveError(`${job.host} has no address`, "ENOTFOUND"));
        else {
          this.store(job.key, list);
          this.finish(job, list);
        }
      },
      (err: unknown) => {
        const code = (err as { code?: unknown })?.code;
        const c = typeof code === "string" ? code : "EAI_FAIL";
        this.finish(job, new ResolveError(`cannot resolve ${job.host}: ${c}`, c, { cause: err }));
      },
    );
  }

  /** The lookup really returned: its slot, and its clients' charges, are free. */
  private finish(job: Job, outcome: Resolved[] | ResolveError): void {
    this.running--;
    const owned = (this.runningBy.get(job.owner) ?? 1) - 1;
    if (owned > 0) this.runningBy.set(job.owner, owned);
    else this.runningBy.delete(job.owner);
    this.release(job);
    for (const w of job.waiters) {
      w.cleanup();
      if (outcome instanceof ResolveError) w.reject(outcome);
      else w.resolve(outcome.slice());
    }
    job.waiters.clear();
    this.pump();
  }

  /** A queued job nobody waits for any more: it never costs a slot. */
  private drop(job: Job): void {
    const queue = this.queues.get(job.owner);
    const i = queue?.indexOf(job) ?? -1;
    if (queue && i >= 0) {
      queue.splice(i, 1);
      this.queued--;
      if (queue.length === 0) this.queues.delete(job.owner);
    }
    this.release(job);
  }

  private release(job: Job): void {
    if (this.jobs.get(job.key) === job) this.jobs.delete(job.key);
    for (const client of job.clients) {
      const n = (this.inProgress.get(client) ?? 1) - 1;
      if (n > 0) this.inProgress.set(client, n);
      else this.inProgress.delete(client);
    }
    job.clients.clear();
  }

  private store(key: string, list: Resolved[]): void {
    if (this.cacheMs <= 0 || this.maxCache <= 0) return;
    this.cache.delete(key);
    while (this.cache.size >= this.maxCache) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
    }
    this.cache.set(key, { expires: this.now() + this.cacheMs, list: list.slice() });
  }
}

function timedOut(host: string, ms: number): ResolveError {
  return new ResolveError(`lookup of ${host} timed out after ${ms} ms`, "ETIMEDOUT");
}
