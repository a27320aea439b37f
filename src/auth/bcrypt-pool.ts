import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { CheckRequest, CheckResponse } from "./bcrypt-worker.js";

export interface BcryptPoolOptions {
  /** Worker threads at most (default: 2, or 1 on a machine with 2 cores or fewer). */
  size?: number;
  /** Checks waiting or running at most; one more is refused at once (default 1024). */
  maxPending?: number;
  /** The worker script; tests point it elsewhere to see a worker die. */
  workerUrl?: URL;
}

/** The result of one check: whether the password matched, and how long bcrypt itself took. */
export interface CheckResult {
  ok: boolean;
  /** Time spent in bcrypt on the worker, without the wait in line or the message passing. */
  ms: number;
}

interface Job {
  request: CheckRequest;
  resolve: (r: CheckResult) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  job?: Job;
  /** What made the worker stop, if it threw. */
  error?: Error;
}

const WORKER_URL = new URL("./bcrypt-worker.js", import.meta.url);

/**
 * bcrypt checks off the event loop. bcryptjs is pure JavaScript: run on the main thread, a burst of
 * checks stalls every session (bcryptjs's async form only yields every 100 ms per check, so 30 at
 * once hold the loop for seconds). A native bcrypt would run in libuv's pool, but its install
 * downloads prebuilt binaries; a worker running bcryptjs needs nothing new.
 *
 * Workers are started when a check needs one, restarted the same way after one dies, and hold
 * the process open only while they have a check to run, so an idle pool never delays an exit.
 * One check per worker at a time; the rest wait here, in order, up to `maxPending`.
 */
export class BcryptPool {
  private readonly size: number;
  private readonly maxPending: number;
  private readonly url: URL;
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];

  constructor(options: BcryptPoolOptions = {}) {
    // Leave a core to the event loop where there are few: on 2 cores, one worker.
    this.size = Math.max(1, options.size ?? Math.min(2, availableParallelism() - 1));
    this.maxPending = options.maxPending ?? 1024;
    this.url = options.workerUrl ?? WORKER_URL;
  }

  /** Checks, waiting or running. */
  get pending(): number {
    return this.queue.length + this.slots.filter((s) => s.job).length;
  }

  /** Live worker threads. */
  get workers(): number {
    return this.slots.length;
  }

  compare(password: string, hash: string): Promise<CheckResult> {
    if (this.pending >= this.maxPending) {
      return Promise.reject(new Error(`too many password checks pending (${this.maxPending})`));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ request: { password, hash }, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let slot = this.slots.find((s) => !s.job);
      const job = this.queue[0]!;
      if (!slot) {
        if (this.slots.length >= this.size) return;
        try {
          slot = this.spawn();
        } catch (err) {
          this.queue.shift();
          job.reject(err as Error);
          continue;
        }
      }
      this.queue.shift();
      slot.job = job;
      slot.worker.ref();
      slot.worker.postMessage(job.request);
    }
  }

  private spawn(): Slot {
    // No flags: the worker needs none, and some (--input-type with -e) stop it from loading.
    const worker = new Worker(this.url, { execArgv: [] });
    const slot: Slot = { worker };
    worker.unref();
    worker.on("message", (m: CheckResponse) => {
      const job = slot.job;
      slot.job = undefined;
      worker.unref();
      if ("error" in m) job?.reject(new Error(m.error));
      else job?.resolve({ ok: m.ok, ms: m.ms });
      this.dispatch();
    });
    // An uncaught error in the worker is followed by its exit, where the job is failed.
    worker.on("error", (err) => {
      slot.error = err;
    });
    worker.on("exit", (code) => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      // Not retried: the check itself may be what killed the worker.
      const why = slot.error ? `failed: ${slot.error.message}` : `exited (code ${code})`;
      slot.job?.reject(new Error(`the password check worker ${why}`));
      slot.job = undefined;
      this.dispatch();
    });
    this.slots.push(slot);
    return slot;
  }
}

let shared: BcryptPool | undefined;

/** The process's pool, made on first use and shared by every user database (reloads included). */
export function sharedBcryptPool(): BcryptPool {
  shared ??= new BcryptPool();
  return shared;
}
