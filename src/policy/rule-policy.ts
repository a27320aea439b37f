import type { Config } from "../config/schema.js";
import { decide, type Facts } from "./decide.js";
import { defaultClientDecision, defaultRequestDecision, type Policy, type RequestQuery } from "./policy.js";
import type { Rule } from "./rules.js";

type ParsedRules = NonNullable<Config["rules"]> | NonNullable<Config["clients"]>;

function placed(rules: ParsedRules | undefined, stage: Rule["stage"], config: Config): Rule[] | undefined {
  if (!rules) return undefined;
  const origin = config.origin;
  return rules.map((r, index) => {
    const rule: Rule = { ...r, stage, index };
    const line = origin?.[stage][index];
    if (origin && line) {
      rule.file = origin.file;
      rule.line = line;
    }
    return rule;
  });
}

/** user → the groups that list them. */
export function groupIndex(groups: Record<string, string[]>): Map<string, string[]> {
  const index = new Map<string, string[]>();
  for (const [group, members] of Object.entries(groups)) {
    for (const m of members) index.set(m, [...(index.get(m) ?? []), group]);
  }
  return index;
}

/**
 * The configured rules as a Policy. A stage with no rules configured keeps its default
 * (clients: loopback only; requests: everything).
 */
export function buildPolicy(config: Config): Policy {
  const clients = placed(config.clients, "clients", config);
  const rules = placed(config.rules, "rules", config);
  const memberOf = groupIndex(config.groups);
  const facts = (q: RequestQuery): Facts => {
    const f: Facts = { ...q };
    // The configuration's groups and the directory's, as one list.
    if (q.user !== undefined) f.groups = [...(memberOf.get(q.user) ?? []), ...(q.groups ?? [])];
    return f;
  };
  const destinationFacts = (q: RequestQuery, ip: string | undefined): Facts => {
    const f = facts(q);
    // Always final: an address (given, or the target's own), or a name that leaves unresolved.
    if (ip !== undefined) f.ip = ip;
    else if (q.target.type === "domain") f.unresolved = true;
    else f.ip = q.target.host;
    return f;
  };
  return {
    client: (client, options) =>
      clients ? decide(clients, { client }, options) : defaultClientDecision(client),
    command: (q, options) => (rules ? decide(rules, facts(q), options) : defaultRequestDecision()),
    destination: (q, ip, options) =>
      rules ? decide(rules, destinationFacts(q, ip), options) : defaultRequestDecision(),
  };
}
