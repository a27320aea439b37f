import type { Decision } from "./decide.js";
import type { ExplainOptions, Policy, RequestQuery } from "./policy.js";

/**
 * What may leave for a target, decided on the facts that will be used. Both the outbound path
 * (src/dial/outbound.ts) and `ferry check` walk these two steps, so they cannot disagree:
 *
 * 1. `admitTarget`: an IP target is decided on its address. A name is first decided as the name
 *    alone. If that admits it through a route whose last hop resolves names (socks4a, socks5h,
 *    HTTP), the name leaves as it is: it is what the upstream receives, and no address range in
 *    `to:` could vouch for it. Otherwise the name must be resolved here.
 * 2. `admitAddresses`: every address the name resolved to is decided with the name and the
 *    address. The first address allowed names the rule that admits the request: its route, caps
 *    and bandwidth apply, and only the addresses that same rule admits are dialled (an upstream
 *    is handed the address, never the name, so the upstream cannot resolve it elsewhere).
 */
export type Admission =
  | { verdict: "allow"; decision: Decision; kind: "name" }
  | { verdict: "allow"; decision: Decision; kind: "addresses"; addresses: string[] }
  | { verdict: "deny"; decision: Decision; denied: { ip?: string; decision: Decision }[] };

/** The name must be resolved; `byName` is how the name alone fared, for the messages. */
export interface NeedsAddresses {
  resolve: true;
  byName: Decision;
}

/** Does a route (a rule's `via`; undefined is direct) hand names to an upstream that resolves them? */
export type ResolvesNames = (route: string | undefined) => boolean;

export function admitTarget(
  policy: Policy,
  q: RequestQuery,
  resolvesNames: ResolvesNames,
  options?: ExplainOptions,
): Admission | NeedsAddresses {
  if (q.target.type !== "domain") {
    const d = policy.destination(q, undefined, options);
    return d.verdict === "allow"
      ? { verdict: "allow", decision: d, kind: "addresses", addresses: [q.target.host] }
      : { verdict: "deny", decision: d, denied: [{ ip: q.target.host, decision: d }] };
  }
  const byName = policy.destination(q, undefined, options);
  if (byName.verdict === "allow" && resolvesNames(byName.route)) {
    return { verdict: "allow", decision: byName, kind: "name" };
  }
  // Refused as a name, and no address range was left unchecked: its addresses cannot change that.
  if (byName.verdict === "deny" && !byName.unchecked) {
    return { verdict: "deny", decision: byName, denied: [{ decision: byName }] };
  }
  return { resolve: true, byName };
}

/** Step 2: `ips` in the resolver's order. */
export function admitAddresses(
  policy: Policy,
  q: RequestQuery,
  ips: readonly string[],
  options?: ExplainOptions,
): Admission {
  const decided = ips.map((ip) => ({ ip, decision: policy.destination(q, ip, options) }));
  const first = decided.find((d) => d.decision.verdict === "allow");
  if (!first) {
    const decision = decided[0]?.decision ?? policy.destination(q, undefined, options);
    return { verdict: "deny", decision, denied: decided };
  }
  const rule = first.decision.rule;
  return {
    verdict: "allow",
    decision: first.decision,
    kind: "addresses",
    addresses: decided
      .filter((d) => d.decision.verdict === "allow" && d.decision.rule === rule)
      .map((d) => d.ip),
  };
}
