import type { SocksAddress } from "../protocol/address.js";
import type { CommandName } from "../protocol/socks5.js";
import { isLoopback } from "./addresses.js";
import type { Decision } from "./decide.js";

export type { Decision, RuleTrace } from "./decide.js";

export interface RequestQuery {
  client: string;
  user?: string;
  /** The user's groups from the directory that authenticated them (LDAP). */
  groups?: readonly string[];
  method: string;
  version: 4 | 5;
  command: CommandName;
  target: SocksAddress;
}

export interface ExplainOptions {
  /** Fill `trace` with every rule looked at and why it did or did not match (`ferry check`). */
  explain?: boolean;
}

/**
 * Policy is pure: the same question always gets the same answer, so the server, `ferry check`
 * and the tests all ask it the same way. Callers do not pick the questions: src/policy/admit.ts
 * does, for the outbound path (src/dial/outbound.ts) and `ferry check` alike.
 */
export interface Policy {
  client(client: string, options?: ExplainOptions): Decision;
  /**
   * BIND and UDP ASSOCIATE before any peer or datagram: may the command run at all, through which
   * route, under which caps. Each peer and each datagram's destination is decided on its own.
   */
  command(q: RequestQuery, options?: ExplainOptions): Decision;
  /**
   * The one decision about what leaves (or, for BIND, arrives): `ip` is the address used (an IP
   * target is its own); without it, a name target leaves unresolved, for an upstream to resolve.
   */
  destination(q: RequestQuery, ip?: string, options?: ExplainOptions): Decision;
}

const allow = (rule: string, reason: string): Decision => ({ verdict: "allow", rule, reason });
const deny = (rule: string, reason: string): Decision => ({ verdict: "deny", rule, reason });

export const defaultClientDecision = (client: string): Decision =>
  isLoopback(client)
    ? allow("default", "loopback clients are allowed when no client rules are configured")
    : deny("default", "only loopback clients are allowed when no client rules are configured");

export const defaultRequestDecision = (): Decision =>
  allow("default", "every destination is allowed when no rules are configured");

/** With no rules configured: clients from loopback only, every destination. */
export const defaultPolicy: Policy = {
  client: defaultClientDecision,
  command: defaultRequestDecision,
  destination: defaultRequestDecision,
};
