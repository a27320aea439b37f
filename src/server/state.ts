import { EventEmitter } from "node:events";
import { LoginGuard } from "../auth/login-guard.js";
import { Resolver } from "../dial/resolver.js";
import type { Decision } from "../policy/policy.js";
import type { Endpoint } from "../policy/self.js";
import { ClientCounter } from "./client-counter.js";
import { Limits } from "./limits.js";

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
export class ServerState extends EventEmitter<{ decision: [DecisionEvent] }> {
  readonly limits = new Limits();
  /** Live sessions per client address (limits.sessionsPerClient). */
  readonly sessionsPerClient = new ClientCounter();
  /** Live UDP associations per client address (limits.associationsPerClient). */
  readonly associations = new ClientCounter();
  readonly logins = new LoginGuard();
  /** Every name lookup for clients goes through it: bounded per client and in total, cached briefly. */
  readonly resolver = new Resolver();
  /** The sockets this server listens on, which it must never proxy to. */
  endpoints: Endpoint[] = [];
}
