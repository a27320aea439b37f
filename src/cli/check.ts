import { lookup } from "node:dns/promises";
import { existsSync } from "node:fs";
import { ConfigError, loadConfig } from "../config/load.js";
import type { Config } from "../config/schema.js";
import { parseHostPort } from "../config/units.js";
import { admitAddresses, admitTarget } from "../policy/admit.js";
import type { Decision, RequestQuery, RuleTrace } from "../policy/policy.js";
import { policyIp } from "../policy/rules.js";
import { withSelfGuard } from "../policy/self.js";
import { addressOf, formatAddress } from "../protocol/address.js";
import type { CommandName } from "../protocol/socks5.js";
import { buildContext } from "../server/build-context.js";
import { Limits } from "../server/limits.js";
import { ServerState } from "../server/state.js";

export interface CheckFlags {
  config: string;
  from?: string;
  user?: string;
  method?: string;
  socksVersion?: string;
  command?: string;
  to?: string;
  /** Addresses to check instead of resolving the name (repeatable). */
  resolve?: string[];
}

/** Exit codes: 0 allowed (or valid), 1 denied, 2 the configuration or the question is wrong. */
export const CheckExit = { ALLOW: 0, DENY: 1, INVALID: 2 } as const;

const COMMANDS: CommandName[] = ["connect", "bind", "udp"];

class UsageError extends Error {}

export async function check(
  flags: CheckFlags,
  out: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
): Promise<number> {
  let ctx: Awaited<ReturnType<typeof buildContext>>;
  try {
    const config = await loadConfig({ file: flags.config });
    // Rules and users only: no connection to a shared state's Redis.
    ctx = await buildContext(config, new ServerState());
  } catch (err) {
    // A bad file, a bad rule, an unreadable or malformed users file: all make the server refuse to start.
    const message = err instanceof ConfigError ? err.message : `${flags.config}: ${(err as Error).message}`;
    process.stderr.write(`ferry check: invalid configuration:\n${message}\n`);
    return CheckExit.INVALID;
  }
  const config = ctx.config;
  const nClients = config.clients?.length;
  const nRules = config.rules?.length;
  out(
    `${flags.config}: valid (${nClients ?? "no"} client rules${nClients === undefined ? ": loopback clients only" : ""}, ` +
      `${nRules ?? "no"} rules${nRules === undefined ? ": every destination" : ""}, ${ctx.users.size} users, ` +
      `${Object.keys(config.groups).length} groups)`,
  );
  if (typeof config.users === "string" && !existsSync(config.users)) {
    out(`note: the users file ${config.users} does not exist yet, so no file user can log in`);
  }
  if (flags.to === undefined && flags.from === undefined) return CheckExit.ALLOW;

  let query: RequestQuery;
  try {
    query = buildQuery(flags);
  } catch (err) {
    process.stderr.write(`ferry check: ${(err as Error).message}\n`);
    return CheckExit.INVALID;
  }
  // Users of certificates (tls-cert) and Kerberos are not in the users file.
  if (query.user !== undefined && query.method === "userpass" && !ctx.users.has(query.user)) {
    out(`note: ${query.user} is not a configured user; the server would refuse that login before any rule`);
  }
  // Offline, the server's own sockets are the configured listen addresses.
  const policy = withSelfGuard(ctx.policy, () => config.listen);

  const client = policy.client(query.client, { explain: true });
  out(`client ${query.client}: ${verdictText(client)}`);
  printTrace(client, out);
  if (client.verdict === "deny") return finish(client, out, config);

  const who =
    query.user !== undefined
      ? `as ${query.user} (${query.method}, SOCKS${query.version})`
      : `(${query.method}, SOCKS${query.version})`;
  out(`request ${query.command.toUpperCase()} ${formatAddress(query.target)} ${who}:`);
  if (query.command !== "connect") {
    // BIND and UDP are first admitted as a command; the peer or datagram is decided after.
    const command = policy.command(query, { explain: true });
    out(`command ${query.command.toUpperCase()}: ${verdictText(command)}`);
    printTrace(command, out);
    if (command.verdict === "deny" || query.command === "bind") {
      if (query.command === "bind" && command.verdict === "allow") out(`route: ${command.route ?? "direct"}`);
      return finish(command, out, config);
    }
  }
  // The same two steps the server takes (src/policy/admit.ts), with the same routes.
  const first = admitTarget(policy, query, ctx.outbound.resolvesNames, { explain: true });
  if (!("resolve" in first)) {
    out(`${query.target.type === "domain" ? "as a name" : "the address"}: ${verdictText(first.decision)}`);
    printTrace(first.decision, out);
    if (first.verdict === "allow" && first.kind === "name") {
      out(`the name goes unresolved to the upstream of route ${first.decision.route}`);
    }
    return finish(first.decision, out, config);
  }
  const byName = first.byName;
  out("as a name: not final; decided by the addresses it resolves to");
  const ips = flags.resolve?.length ? flags.resolve : await resolve(query.target.host, out);
  if (ips === undefined) {
    if (byName.verdict === "deny") out(`as an unresolved name it is refused: ${verdictText(byName)}`);
    out(`deny: ${query.target.host} does not resolve; the server would answer host unreachable (0x04)`);
    return CheckExit.DENY;
  }
  out(
    `addresses of ${query.target.host}${flags.resolve?.length ? " (as given by --resolve)" : ""}: ${ips.join(", ")}`,
  );
  const admission = admitAddresses(policy, query, ips, { explain: true });
  const decided =
    admission.verdict === "deny"
      ? admission.denied
      : ips.map((ip) => ({ ip, decision: policy.destination(query, ip, { explain: true }) }));
  for (const { ip, decision } of decided) {
    out(`  ${ip}: ${verdictText(decision)}`);
    printTrace(decision, out, "    ");
  }
  if (admission.verdict === "deny") {
    out(`every address of ${query.target.host} is denied, so the request is (reply 0x02)`);
    return finish(admission.decision, out, config);
  }
  if (admission.kind === "addresses") out(`dialled: ${admission.addresses.join(", ")}`);
  return finish(admission.decision, out, config);
}

function verdictText(d: Decision): string {
  return `${d.verdict === "allow" ? "allowed" : "denied"} by ${d.rule}: ${d.reason}`;
}

function printTrace(d: Decision, out: (line: string) => void, indent = "  "): void {
  for (const t of d.trace ?? []) out(`${indent}${traceLine(t)}`);
}

function traceLine(t: RuleTrace): string {
  return `${t.rule} ${t.action}: ${t.outcome}: ${t.why}`;
}

function finish(d: Decision, out: (line: string) => void, config: Config): number {
  if (d.verdict === "allow") {
    out(`route: ${d.route ?? "direct"}`);
    for (const l of Limits.describe(config, d)) out(`limit: ${l}`);
  }
  out(`${d.verdict.toUpperCase()} by ${d.rule}`);
  return d.verdict === "allow" ? CheckExit.ALLOW : CheckExit.DENY;
}

function buildQuery(flags: CheckFlags): RequestQuery {
  if (flags.from === undefined)
    throw new UsageError("--from ADDR is required with --to (the client's address)");
  if (flags.to === undefined)
    throw new UsageError("--to HOST:PORT is required with --from (the destination)");
  const client = policyIp(flags.from)?.toString();
  if (!client) throw new UsageError(`--from ${flags.from} is not an IP address`);
  const command = (flags.command ?? "connect").toLowerCase() as CommandName;
  if (!COMMANDS.includes(command)) throw new UsageError(`--command must be one of ${COMMANDS.join(", ")}`);
  const version = Number(flags.socksVersion ?? 5);
  if (version !== 4 && version !== 5) throw new UsageError("--socks-version must be 4 or 5");
  if (version === 4 && flags.user !== undefined) {
    throw new UsageError("SOCKS4 cannot authenticate a user; leave out --user or use --socks-version 5");
  }
  if (flags.method !== undefined && !["none", "userpass", "gssapi", "tls-cert"].includes(flags.method)) {
    throw new UsageError("--method must be none, userpass, gssapi or tls-cert");
  }
  if (flags.method === "none" && flags.user !== undefined) {
    throw new UsageError("--method none has no user; leave out --user or pick the method that authenticated");
  }
  const hp = parseHostPort(flags.to);
  const q: RequestQuery = {
    client,
    method: flags.method ?? (flags.user !== undefined ? "userpass" : "none"),
    version,
    command,
    target: addressOf(hp.host, hp.port),
  };
  if (flags.user !== undefined) q.user = flags.user;
  return q;
}

async function resolve(host: string, out: (line: string) => void): Promise<string[] | undefined> {
  try {
    const all = await lookup(host, { all: true, verbatim: true });
    return all.map((a) => a.address);
  } catch (err) {
    out(`cannot resolve ${host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    return undefined;
  }
}
