import type { SocksAddress } from "../protocol/address.js";
import type { CommandName } from "../protocol/socks5.js";
import { isLoopback } from "./addresses.js";
import type { Decision } from "./decide.js";

export type { Decision, RuleTrace } from "./decide.js";

export interface RequestQuery {
  client: string;
  user?: string;
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
 * and the tests all ask it the same way. `address` is asked again for every address a target
 * name resolves to (and for an IP target itself) before anything is dialled.
 */
export interface Policy {
  client(client: string, options?: ExplainOptions): Decision;
  request(q: RequestQuery, options?: ExplainOptions): Decision;
  address(q: RequestQuery, ip: string, options?: ExplainOptions): Decision;
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
  request: defaultRequestDecision,
  address: defaultRequestDecision,
};
