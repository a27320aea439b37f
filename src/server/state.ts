import { EventEmitter } from "node:events";
import type { LoginThrottle } from "../auth/login-guard.js";
import type { HopResult } from "../dial/chain.js";
import { Resolver } from "../dial/resolver.js";
import type { Decision } from "../policy/policy.js";
import type { Endpoint } from "../policy/self.js";
import { type LimitStore, LocalLimitStore } from "./limit-store.js";
import { Limits } from "./limits.js";
import { LocalQuotaStore } from "./quota-store.js";
import { Quotas } from "./quotas.js";

/** A decision a rule marked `log: true`, or any denial at the address stage, as it happens. */
export interface DecisionEvent {
  stage: "client" | "request" | "address";
  client: string;
  user?: string;
  command?: string;
  target?: string;
  /** The resolved address checked (address stage). */
  ip?: string;
  decision: Decision;
}

/**
 * What outlives a reload: session counters, bandwidth buckets, failed-login memory, the server's
 * own listening sockets. Each new ServerContext is built around the same state.
 */
export class ServerState extends EventEmitter<{ decision: [DecisionEvent]; upstream: [HopResult] }> {
  readonly limits: Limits;
  readonly logins: LoginThrottle;
  /** The reload the running configuration came with (0: the one read at start). */
  generation = 0;
  /** Every name lookup for clients goes through it: bounded per client and in total, cached briefly. */
  readonly resolver = new Resolver();
  /** The sockets this server listens on, which it must never proxy to. */
  endpoints: Endpoint[] = [];

  /**
   * `store` keeps the counts every session shares (sessions in total, per client, per user, per
   * rule; UDP associations; bandwidth; logins); `workers` is how many processes share it, each
   * taking its share of the limits that stay per process (limits.handshakes).
   */
  constructor(
    readonly store: LimitStore = new LocalLimitStore(),
    readonly workers = 1,
    /** Transfer quotas (docs/quotas.md): this process's own, kept in the state file, unless shared. */
    readonly quotas = new Quotas(new LocalQuotaStore(), { persist: true }),
  ) {
    super();
    this.limits = new Limits(store);
    this.logins = store.logins;
  }
}
