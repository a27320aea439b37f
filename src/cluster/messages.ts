import type { LoginEvent, LoginOutcome } from "../auth/login-guard.js";
import type { LiveSnapshot, SessionView } from "../observe/live/view.js";
import type { ListeningAddress } from "../server/server.js";

/**
 * What the primary and its workers say to each other over the cluster's IPC channel. Every
 * message carries `ferry`, so Node's own cluster messages are never mistaken for ours.
 */
export type ToPrimary =
  /** Listening on every address; or could not start (the message is fit to print). */
  | { ferry: "ready"; listening: ListeningAddress[] }
  | { ferry: "failed"; message: string }
  /** Give back `give` unused slots of `key` (its limit changed), then grant some (limit null: uncapped). */
  | { ferry: "take"; id: number; key: string; limit: number | null; give: number }
  /** Unused slots of `key` handed back, unasked (the key went idle here). */
  | { ferry: "return"; key: string; n: number }
  /** The answer to a reclaim: `n` unused slots handed back. */
  | { ferry: "reclaimed"; id: number; n: number }
  /** `n` bytes of the bucket `key` (rate bytes a second); answered when the primary's bucket has them. */
  | { ferry: "tokens"; id: number; key: string; rate: number; n: number }
  /** A login attempt to line up; `checked` answers a `check`; `cancel`: the client left. */
  | { ferry: "login"; id: number; client: string; user: string; method: string }
  | { ferry: "checked"; id: number; ok: boolean }
  | { ferry: "cancel"; id: number }
  | { ferry: "reloaded"; id: number; ok: boolean; message: string }
  /** Quota usage (src/cluster/worker-quota-store.ts): add `bytes` (0: read); every user's totals in `period`. */
  | { ferry: "quotaAdd"; id: number; user: string; period: string; bytes: number }
  | { ferry: "quotaUsage"; id: number; period: string }
  /** The answer to a metrics request: prom-client's JSON of this worker's registry (none: not counted). */
  | { ferry: "metrics"; id: number; metrics: unknown[] }
  /** The admin page's figures of this worker (its own session ids); the answer to `live`. */
  | { ferry: "live"; id: number; snapshot: LiveSnapshot }
  /** The sessions an `end` ended. */
  | { ferry: "ended"; id: number; ended: SessionView[] };

export type ToWorker =
  | { ferry: "grant"; id: number; n: number }
  /** Hand back every unused slot of `key`: another worker needs one and none is free. */
  | { ferry: "reclaim"; id: number; key: string }
  | { ferry: "tokens"; id: number }
  /** Run the password check of login `id` now: its turn has come. */
  | { ferry: "check"; id: number }
  | { ferry: "login"; id: number; outcome?: LoginOutcome; event?: LoginEvent; error?: string }
  | { ferry: "reload"; id: number; generation: number }
  /** Answers to quotaAdd (the total after adding) and quotaUsage (user → bytes). */
  | { ferry: "quotaTotal"; id: number; total: number }
  | { ferry: "quotaUsage"; id: number; usage: Record<string, number> }
  /** Send the admin page's figures (`live`). */
  | { ferry: "live"; id: number }
  /** End session `session` (this worker's id), or every session of `user`. */
  | { ferry: "end"; id: number; session?: string; user?: string; reason: string }
  /** Stop accepting and drain (`now`: cut every session at once). */
  | { ferry: "stop"; now: boolean }
  /** Send this worker's metrics (for the primary's /metrics). */
  | { ferry: "metrics"; id: number };

/** Environment a worker is started with. */
export const WORKER_INDEX_ENV = "FERRY_WORKER";
export const WORKER_COUNT_ENV = "FERRY_WORKERS";
export const GENERATION_ENV = "FERRY_GENERATION";

export function isFerryMessage(m: unknown): m is { ferry: string } {
  return typeof m === "object" && m !== null && typeof (m as { ferry?: unknown }).ferry === "string";
}
