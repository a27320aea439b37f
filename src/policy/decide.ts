import type ipaddr from "ipaddr.js";
import type { ResolvePreference } from "../config/routes-schema.js";
import type { SocksAddress } from "../protocol/address.js";
import type { CommandName } from "../protocol/socks5.js";
import { canonicalName, inCidr, policyIp, type Rule, ruleLabel } from "./rules.js";

/** Everything a rule can look at. Leave out what is not known yet (the user at accept). */
export interface Facts {
  client: string;
  user?: string;
  /** The groups the user belongs to. */
  groups?: readonly string[];
  method?: string;
  version?: 4 | 5;
  command?: CommandName;
  target?: SocksAddress;
  /** The address being checked for a name target (after resolution); an IP target is its own address. */
  ip?: string;
  /**
   * A name target that leaves unresolved (an upstream resolves it): no address will ever be known
   * here, so an address range in `to:` is decided without one (see checkDestination). Without this
   * and without `ip`, a name is being asked about before its destination is known (BIND and UDP
   * at the command stage): such rules are undecided.
   */
  unresolved?: boolean;
}

/** How one rule fared against a question: for `ferry check` and `explain`. */
export interface RuleTrace {
  rule: string;
  action: "allow" | "deny";
  line?: number;
  outcome: "matched" | "not matched" | "depends on destination";
  why: string;
}

export interface Decision {
  verdict: "allow" | "deny";
  /** Which rule decided, for logs and `ferry check`: `rules[2] (ferry.yaml:12)`, `default`, ... */
  rule: string;
  /** Why, in words an administrator reads. */
  reason: string;
  /** The deciding rule's line in the configuration file. */
  line?: number;
  /** The deciding rule asked for this decision to be logged. */
  log?: boolean;
  /** The deciding rule's own caps, and the key its counters are kept under. */
  caps?: { key: string; bandwidth?: number; sessions?: number };
  /**
   * At the command stage of BIND and UDP: allowed, but each peer and datagram destination gets
   * its own decision.
   */
  pending?: boolean;
  /**
   * A rule up to and including the deciding one has an address range it could not check against
   * an unresolved name: the addresses the name resolves to may decide otherwise.
   */
  unchecked?: boolean;
  /** The route the deciding rule names (`via`, issue 7); undefined means direct. */
  route?: string;
  /** The address-family preference the deciding rule names (`resolve`, docs/routes.md). */
  resolve?: ResolvePreference;
  /** Every rule looked at, in order, up to and including the deciding one (when asked to explain). */
  trace?: RuleTrace[];
}

type Tri = "yes" | "no" | "unknown";
interface Check {
  result: Tri;
  /** An address range met a name with no address: decided without looking (fail closed). */
  unchecked?: boolean;
  /** Built only when someone reads it (explain, or the deciding rule), to keep decisions cheap. */
  why: () => string;
}

const list = (xs: readonly { text: string }[] | readonly (string | number)[] | undefined): string =>
  (xs ?? []).map((x) => (typeof x === "object" ? x.text : String(x))).join(", ");

function checkRule(rule: Rule, f: Facts, ip: ipaddr.IPv4 | ipaddr.IPv6 | undefined): Check[] {
  const checks: Check[] = [];
  const add = (ok: boolean, yes: () => string, no: () => string): void => {
    checks.push({ result: ok ? "yes" : "no", why: ok ? yes : no });
  };
  if (rule.from) {
    const c = policyIp(f.client);
    const hit = c && rule.from.find((r) => inCidr(c, r));
    add(
      !!hit,
      () => `client ${f.client} is in ${hit?.text}`,
      () => `client ${f.client} is not in ${list(rule.from)}`,
    );
  }
  if (rule.users) {
    const ok = f.user !== undefined && rule.users.includes(f.user);
    add(
      ok,
      () => `user ${f.user} is listed`,
      () =>
        f.user === undefined ? "no authenticated user" : `user ${f.user} is not one of ${list(rule.users)}`,
    );
  }
  if (rule.groups) {
    const hit = rule.groups.find((g) => f.groups?.includes(g));
    add(
      !!hit,
      () => `user ${f.user} is in group ${hit}`,
      () =>
        f.user === undefined
          ? "no authenticated user"
          : `user ${f.user} is in none of the groups ${list(rule.groups)}`,
    );
  }
  if (rule.methods) {
    const m = f.method ?? "none";
    add(
      rule.methods.includes(m),
      () => `method ${m}`,
      () => `method ${m} is not one of ${list(rule.methods)}`,
    );
  }
  if (rule.versions && f.version !== undefined) {
    add(
      rule.versions.includes(f.version),
      () => `SOCKS version ${f.version}`,
      () => `SOCKS version ${f.version} is not ${list(rule.versions)}`,
    );
  }
  if (rule.commands && f.command !== undefined) {
    add(
      rule.commands.includes(f.command),
      () => `command ${f.command}`,
      () => `command ${f.command} is not one of ${list(rule.commands)}`,
    );
  }
  // A UDP ASSOCIATE request names where the client sends from, not where datagrams go: each
  // datagram's destination is decided on its own, with its address.
  const perDatagram = f.command === "udp" && f.ip === undefined && !f.unresolved;
  if ((rule.to || rule.ports) && f.target && perDatagram) {
    checks.push({ result: "unknown", why: () => "UDP destinations are checked for each datagram" });
    return checks;
  }
  if (rule.to && f.target) checks.push(checkDestination(rule, f, ip));
  if (rule.ports && f.target) {
    const p = f.target.port;
    const hit = rule.ports.find((r) => p >= r.from && p <= r.to);
    add(
      !!hit,
      () => `port ${p} is in ${hit?.text}`,
      () => `port ${p} is not in ${list(rule.ports)}`,
    );
  }
  return checks;
}

function checkDestination(rule: Rule, f: Facts, ip: ipaddr.IPv4 | ipaddr.IPv6 | undefined): Check {
  const target = f.target!;
  const name = target.type === "domain" ? canonicalName(target.host) : undefined;
  let hasCidr = false;
  for (const d of rule.to!) {
    if (d.kind === "cidr") {
      hasCidr = true;
      if (ip && inCidr(ip, d)) return { result: "yes", why: () => `address ${ip} is in ${d.text}` };
    } else if (name !== undefined) {
      if (d.kind === "name" ? name === d.name : name.endsWith(d.suffix)) {
        return { result: "yes", why: () => `name ${name} matches ${d.text}` };
      }
    }
  }
  const dest = name !== undefined ? (ip ? `${name} (${ip})` : name) : String(ip);
  if (!ip && hasCidr) {
    if (f.unresolved) {
      // The name goes to an upstream that resolves it, so no address range can vouch for it:
      // a range never admits it, and a range in a deny rule refuses it (fail closed).
      const ranges = rule.to!.filter((d) => d.kind === "cidr").map((d) => d.text);
      return rule.action === "deny"
        ? {
            result: "yes",
            unchecked: true,
            why: () =>
              `${dest} would be resolved by the upstream, so Ferry cannot tell whether it is in ${ranges.join(", ")}; a denied range refuses names it cannot check`,
          }
        : {
            result: "no",
            unchecked: true,
            why: () =>
              `${dest} matches no name in ${list(rule.to!)}, and an address range never admits a name the upstream resolves`,
          };
    }
    return {
      result: "unknown",
      why: () => `${dest} matches no name in ${list(rule.to!)}; its addresses are checked one by one`,
    };
  }
  return { result: "no", why: () => `destination ${dest} is not in ${list(rule.to!)}` };
}

function matched(checks: Check[]): string {
  const yes = checks.filter((c) => c.result === "yes").map((c) => c.why());
  return yes.length ? yes.join("; ") : "it matches everything";
}

function fromRule(
  rule: Rule,
  verdict: "allow" | "deny",
  reason: string,
  pending: boolean,
  unchecked: boolean,
): Decision {
  const d: Decision = { verdict, rule: ruleLabel(rule), reason };
  if (rule.line !== undefined) d.line = rule.line;
  if (rule.log) d.log = true;
  if (pending) d.pending = true;
  if (unchecked) d.unchecked = true;
  if (verdict === "allow" && rule.via !== undefined) d.route = rule.via;
  if (verdict === "allow" && rule.resolve !== undefined) d.resolve = rule.resolve;
  if (verdict === "allow" && (rule.bandwidth !== undefined || rule.sessions !== undefined)) {
    d.caps = { key: `${rule.stage}[${rule.index}]` };
    if (rule.bandwidth !== undefined) d.caps.bandwidth = rule.bandwidth;
    if (rule.sessions !== undefined) d.caps.sessions = rule.sessions;
  }
  return d;
}

/**
 * The first rule that matches decides. Pure: the same rules and facts always give the same answer.
 *
 * What leaves the proxy is decided on the facts that will be used: an address (`facts.ip`, or an
 * IP target), or a name handed unresolved to an upstream (`facts.unresolved`), where address
 * ranges cannot vouch for it. src/policy/admit.ts says which applies. Only BIND and UDP at the
 * command stage, before any peer or datagram, leave the destination open: a rule that depends on
 * it is undecided there; an undecided deny is passed over (each destination is decided later),
 * an undecided allow admits the command pending those decisions.
 */
export function decide(rules: readonly Rule[], facts: Facts, options: { explain?: boolean } = {}): Decision {
  const trace: RuleTrace[] | undefined = options.explain ? [] : undefined;
  const t = facts.target;
  const ipText = facts.ip ?? (t && t.type !== "domain" ? t.host : undefined);
  const ip = ipText !== undefined ? policyIp(ipText) : undefined;
  const done = (d: Decision): Decision => {
    if (trace) d.trace = trace;
    return d;
  };
  let unchecked = false;
  for (const rule of rules) {
    const checks = checkRule(rule, facts, ip);
    if (checks.some((c) => c.unchecked)) unchecked = true;
    const no = checks.find((c) => c.result === "no");
    const unknown = checks.find((c) => c.result === "unknown");
    const step = (outcome: RuleTrace["outcome"], why: string): void => {
      const entry: RuleTrace = { rule: ruleLabel(rule), action: rule.action, outcome, why };
      if (rule.line !== undefined) entry.line = rule.line;
      trace?.push(entry);
    };
    if (no) {
      if (trace) step("not matched", no.why());
      continue;
    }
    if (unknown) {
      if (trace) step("depends on destination", unknown.why());
      if (rule.action === "deny") continue;
      return done(
        fromRule(
          rule,
          "allow",
          `allowed, pending the check of each destination (${unknown.why()})`,
          true,
          unchecked,
        ),
      );
    }
    const why = matched(checks);
    step("matched", why);
    return done(fromRule(rule, rule.action, `${rule.action} rule matched: ${why}`, false, unchecked));
  }
  const stage = rules[0]?.stage ?? "rules";
  const end: Decision = {
    verdict: "deny",
    rule: `end of ${stage}`,
    reason: `no ${stage === "clients" ? "client rule" : "rule"} matched; what no rule allows is denied`,
  };
  if (unchecked) end.unchecked = true;
  return done(end);
}
