import type { LoginThrottle } from "../auth/login-guard.js";
import { LoginGuard } from "../auth/login-guard.js";
import { TokenBucket } from "./limits.js";

/**
 * One counter a session takes a slot of: `key` names what is counted (every session, a client
 * address, a user, a rule of one configuration), `limit` is its cap under the caller's
 * configuration (Infinity: counted, not capped).
 */
export interface Claim {
  key: string;
  limit: number;
}

/** Slots taken (release gives them back; idempotent), or the index of the claim that was full. */
export type Taken = { release(): void } | { refused: number };

/** Slots taken of every claim, given back by `free` one key at a time, once however often released. */
export function takenSlots(claims: readonly Claim[], free: (key: string) => void): Taken {
  let released = false;
  return {
    release: () => {
      if (released) return;
      released = true;
      for (const c of claims) free(c.key);
    },
  };
}

/**
 * Where the limits shared by every session of the server are kept: session counts, bandwidth
 * and login throttling. With one process it is this process's memory (LocalLimitStore); with
 * workers the primary keeps the counts and hands each worker allotments it uses locally
 * (src/cluster/worker-store.ts); with `state: { redis }` several machines share them in Redis
 * (src/shared/redis-store.ts).
 */
export interface LimitStore {
  /**
   * Takes one slot of every claim, all or none. Answers at once when it can (always, for the
   * local store); a shared store may have to ask, and then returns a promise.
   */
  take(claims: readonly Claim[]): Taken | Promise<Taken>;
  /**
   * True when the claim is surely full now, known without asking anyone: for refusing a
   * connection at accept, before it costs a handshake. False when unsure.
   */
  full(claim: Claim): boolean;
  /** A bucket of `rate` bytes a second that draws on the store's one for `key`. */
  bucket(key: string, rate: number): TokenBucket;
  /** Failed-login memory and the lines logins wait in (src/auth/login-guard.ts). */
  readonly logins: LoginThrottle;
  /** Lets go of what the store holds open (a connection to Redis), when the server stops. */
  close?(): Promise<void>;
}

/** The store of a server that is one process: counters in a map, plain token buckets. */
export class LocalLimitStore implements LimitStore {
  private readonly counts = new Map<string, number>();
  readonly logins: LoginThrottle;

  constructor(logins: LoginThrottle = new LoginGuard()) {
    this.logins = logins;
  }

  take(claims: readonly Claim[]): Taken {
    for (let i = 0; i < claims.length; i++) {
      const c = claims[i]!;
      if ((this.counts.get(c.key) ?? 0) >= c.limit) return { refused: i };
    }
    for (const c of claims) this.counts.set(c.key, (this.counts.get(c.key) ?? 0) + 1);
    return takenSlots(claims, (key) => {
      const left = (this.counts.get(key) ?? 1) - 1;
      if (left > 0) this.counts.set(key, left);
      else this.counts.delete(key);
    });
  }

  full(claim: Claim): boolean {
    return (this.counts.get(claim.key) ?? 0) >= claim.limit;
  }

  /** How many slots of `key` are taken (for tests and logs). */
  held(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  bucket(_key: string, rate: number): TokenBucket {
    return new TokenBucket(rate);
  }
}

/** The keys the session limits are counted under in the store. */
export const SESSIONS_KEY = "sessions";
export const clientKey = (client: string): string => `client\0${client}`;
export const userKey = (user: string): string => `user\0${user}`;
export const associationsKey = (client: string): string => `udp\0${client}`;
