import client, { type MetricObjectWithValues, type MetricValue, Registry } from "prom-client";
import type { ServerContext, SessionRecord } from "../server/context.js";
import type { QuotaStatus } from "../server/quotas.js";
import type { FerryServer } from "../server/server.js";
import type { ServerState } from "../server/state.js";

/**
 * Every Prometheus metric Ferry exports, in one place (docs/admin.md lists them). Counters are
 * advanced from the server's events, the way src/observe/session-log.ts writes its lines; bytes
 * and datagrams are also counted while sessions run (`refresh`, before each scrape), so a long
 * transfer shows before it ends, and never twice.
 *
 * Label values come only from the configuration or from fixed sets: a user name is a label only
 * when the users file, --user or a group or rule names it (else "other"; no user: "anonymous");
 * rules by their place (`rules[2]`), routes and upstreams by their configured names. Nothing a
 * client sends (a user name nobody configured, a target) becomes a label.
 */

/** What a session's counters stood at when last counted. */
interface Counted {
  up: number;
  down: number;
  datagramsUp: number;
  datagramsDown: number;
  dropped: Record<string, number>;
}

/** Drop reasons of src/server/associate.ts and src/dial/outbound-udp.ts; anything else is "other". */
const DROP_REASONS = new Set([
  "wrong source",
  "GSSAPI check failed",
  "malformed",
  "fragment out of order",
  "fragment missing fragment",
  "fragment too large",
  "fragment destination changed",
  "fragment invalid position",
  "fragment dropped",
  "fragment timeout",
  "queue full",
  "over bandwidth",
  "send failed",
  "unknown sender",
  "too large for GSSAPI",
  "unresolved",
  "denied",
  "closed",
  "upstream failed",
]);

/** The limits a connection or request can be refused by, as the `limit` label says them. */
export const LIMITS = [
  "sessions",
  "sessions_per_client",
  "sessions_per_user",
  "rule_sessions",
  "handshakes",
  "associations_per_client",
  "open_files",
  "quota",
] as const;
export type LimitName = (typeof LIMITS)[number];

/** Which limit a refusal's or a session's reason names (the wording of src/server/*.ts). */
export function limitOf(reason: string | undefined): LimitName | undefined {
  if (!reason) return undefined;
  if (reason.includes("session limit reached (")) return "sessions";
  if (reason.includes("session limit for ")) return "sessions_per_client";
  if (reason.includes("(limits.sessionsPerUser)")) return "sessions_per_user";
  if (reason.includes("(its sessions cap)")) return "rule_sessions";
  if (reason.includes("(limits.handshakes)") || reason.includes("handshakes in progress)"))
    return "handshakes";
  if (reason.includes("UDP association limit for ")) return "associations_per_client";
  // Refused at the request, or cut when the quota ran out.
  if (reason.includes("is over the transfer quota")) return "quota";
  return undefined;
}

/** SOCKS5 reply codes as outcome labels; SOCKS4's rejection names the SOCKS5 code in parentheses. */
const OUTCOMES: Record<string, string> = {
  succeeded: "succeeded",
  "request granted": "succeeded",
  "general SOCKS server failure": "general_failure",
  "connection not allowed by ruleset": "not_allowed",
  "network unreachable": "network_unreachable",
  "host unreachable": "host_unreachable",
  "connection refused": "connection_refused",
  "TTL expired": "ttl_expired",
  "command not supported": "command_not_supported",
  "address type not supported": "address_type_not_supported",
};

/** The outcome label: the reply sent (SOCKS4 or 5 alike), or no_reply. */
export function outcomeOf(r: SessionRecord): string {
  if (r.replyName === undefined) return "no_reply";
  const inner = /\(([^)]*)\)$/.exec(r.replyName)?.[1];
  return OUTCOMES[inner ?? r.replyName] ?? "other";
}

/** SOCKS commands, and `http` for a request an HTTP proxy client had forwarded (docs/http-proxy.md). */
const COMMANDS = new Set(["connect", "bind", "udp", "http"]);
const command = (r: SessionRecord): string =>
  r.command === undefined ? "none" : COMMANDS.has(r.command) ? r.command : "other";

const FIXED_RULES = new Set(["default", "self", "end of rules", "end of clients"]);

/** `rules[2] (ferry.yaml:12)` → `rules[2]`: the place, which a comment added above does not change. */
export function ruleLabel(rule: string | undefined): string {
  if (rule === undefined) return "none";
  const place = /^(?:rules|clients)\[\d+\]/.exec(rule)?.[0];
  return place ?? (FIXED_RULES.has(rule) ? rule : "other");
}

/** Names the groups and rules of a configuration list, worked out once per configuration. */
const namedUsers = new WeakMap<object, Set<string>>();

/** A user name as a label: only one the configuration knows. */
export function userLabel(ctx: ServerContext, user: string | undefined): string {
  if (user === undefined) return "anonymous";
  if (ctx.users.has(user)) return user;
  let named = namedUsers.get(ctx.config);
  if (!named) {
    named = new Set([
      ...Object.values(ctx.config.groups).flat(),
      ...(ctx.config.rules ?? []).flatMap((r) => r.users ?? []),
    ]);
    namedUsers.set(ctx.config, named);
  }
  return named.has(user) ? user : "other";
}

const routeLabel = (ctx: ServerContext, route: string | undefined): string =>
  route === undefined || route === "direct"
    ? "direct"
    : ctx.config.routes?.routes.has(route)
      ? route
      : "other";

const PROTECTION = new Set(["none", "integrity", "confidentiality"]);
const METHODS = new Set(["none", "userpass", "gssapi"]);

const SHORT = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const LONG = [0.1, 1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600];

export class FerryMetrics {
  readonly registry = new Registry();
  private readonly counted = new Map<SessionRecord, Counted>();

  private readonly sessions;
  private readonly gssapiSessions;
  private readonly userBytes;
  private readonly ruleBytes;
  private readonly handshakeSeconds;
  private readonly dialSeconds;
  private readonly sessionSeconds;
  private readonly dials;
  private readonly upstreamDials;
  private readonly denials;
  private readonly loginFailures;
  private readonly datagrams;
  private readonly datagramsDropped;
  private readonly limitsHit;
  private readonly reloads;

  /**
   * `server`: counted from its events and its running sessions. `processMetrics`: Node's
   * process_* and nodejs_* (collectDefaultMetrics).
   */
  constructor(
    private readonly server?: FerryServer,
    state?: ServerState,
    options: { processMetrics?: boolean } = {},
  ) {
    const registers = [this.registry];
    const counter = <K extends string>(name: string, help: string, labelNames: readonly K[]) =>
      new client.Counter<K>({ name, help, labelNames, registers });
    const histogram = <K extends string>(
      name: string,
      help: string,
      labelNames: readonly K[],
      buckets: number[],
    ) => new client.Histogram<K>({ name, help, labelNames, buckets, registers });

    const running = (): SessionRecord[] => [...(this.server?.sessions() ?? [])];
    new client.Gauge({
      name: "ferry_sessions_active",
      help: "Sessions established (request read) and running, by command.",
      labelNames: ["command"] as const,
      registers,
      collect() {
        this.reset();
        for (const c of COMMANDS) this.set({ command: c }, 0);
        for (const r of running()) if (r.command !== undefined) this.inc({ command: command(r) });
      },
    });
    const srv = this.server;
    new client.Gauge({
      name: "ferry_connections_open",
      help: "Client connections open, in the handshake or established.",
      registers,
      collect() {
        this.set(srv?.activeSessions ?? 0);
      },
    });
    new client.Gauge({
      name: "ferry_handshakes_in_progress",
      help: "Client connections still in the handshake (limits.handshakes).",
      registers,
      collect() {
        this.set(srv?.handshaking ?? 0);
      },
    });
    this.sessions = counter(
      "ferry_sessions_total",
      "Sessions ended, by command and outcome (the reply sent).",
      ["command", "outcome"],
    );
    this.gssapiSessions = counter(
      "ferry_gssapi_sessions_total",
      "GSSAPI-authenticated sessions ended, by the protection level agreed.",
      ["protection"],
    );
    this.userBytes = counter(
      "ferry_user_bytes_total",
      "Bytes relayed, by user (configured users; anonymous, other) and direction (up: client to target).",
      ["user", "direction"],
    );
    this.ruleBytes = counter(
      "ferry_rule_bytes_total",
      "Bytes relayed, by the admitting rule and direction.",
      ["rule", "direction"],
    );
    this.handshakeSeconds = histogram(
      "ferry_handshake_duration_seconds",
      "From accept until the request was read (greeting, authentication, request).",
      [],
      SHORT,
    );
    this.dialSeconds = histogram(
      "ferry_dial_duration_seconds",
      "CONNECT: from the request until the target answered or the dial failed, by route.",
      ["route"],
      SHORT,
    );
    this.sessionSeconds = histogram(
      "ferry_session_duration_seconds",
      "Sessions' whole length, by command.",
      ["command"],
      LONG,
    );
    this.dials = counter("ferry_dials_total", "CONNECT dials to targets, by route and result (ok, failed).", [
      "route",
      "result",
    ]);
    this.upstreamDials = counter(
      "ferry_upstream_dials_total",
      "Dials through an upstream proxy, by route, upstream and result (ok: carried the dial; failed: blamed, the next member tried).",
      ["route", "upstream", "result"],
    );
    this.denials = counter(
      "ferry_denials_total",
      "Connections (stage client) and requests (stage request) refused by a rule.",
      ["stage", "rule"],
    );
    this.loginFailures = counter(
      "ferry_login_failures_total",
      "Failed logins, by method and user (configured users; other).",
      ["method", "user"],
    );
    this.datagrams = counter("ferry_udp_datagrams_total", "UDP datagrams relayed, by direction.", [
      "direction",
    ]);
    this.datagramsDropped = counter("ferry_udp_dropped_total", "UDP datagrams not relayed, by reason.", [
      "reason",
    ]);
    this.limitsHit = counter(
      "ferry_limits_hit_total",
      "Connections and requests refused, or handshakes closed, by a limit.",
      ["limit"],
    );
    this.reloads = counter("ferry_reloads_total", "Configuration reloads, by result (ok, refused).", [
      "result",
    ]);
    for (const result of ["ok", "refused"]) this.reloads.inc({ result }, 0);
    for (const limit of LIMITS) this.limitsHit.inc({ limit }, 0);

    if (state) this.quotaGauges(state);
    if (options.processMetrics) client.collectDefaultMetrics({ register: this.registry });
    if (server) this.watch(server);
    if (state) this.watchState(state);
  }

  private get ctx(): ServerContext | undefined {
    return this.server?.current;
  }

  private watch(server: FerryServer): void {
    server.on("session", (r) => this.ended(r));
    server.on("refused", (e) => {
      if (e.rule !== undefined) this.denials.inc({ stage: "client", rule: ruleLabel(e.rule) });
      const limit = limitOf(e.reason);
      if (limit) this.limitsHit.inc({ limit });
    });
    server.on("fdExhausted", (e) => this.limitsHit.inc({ limit: "open_files" }, e.closed));
  }

  /**
   * Each user's transfer quota as it stands. Every worker reports the shared total, so a
   * cluster's primary takes the largest report rather than the sum.
   */
  private quotaGauges(state: ServerState): void {
    const registers = [this.registry];
    const current = (): Promise<QuotaStatus[]> => state.quotas.report();
    const label = (user: string): string => {
      const ctx = this.ctx;
      return ctx ? userLabel(ctx, user) : "other";
    };
    new client.Gauge({
      name: "ferry_quota_used_bytes",
      help: "Bytes a user with a transfer quota has moved this period, both directions (docs/quotas.md).",
      labelNames: ["user", "period"] as const,
      registers,
      aggregator: "max",
      async collect() {
        this.reset();
        for (const q of await current()) this.set({ user: label(q.user), period: q.period }, q.used);
      },
    });
    new client.Gauge({
      name: "ferry_quota_limit_bytes",
      help: "A user's transfer quota for the period.",
      labelNames: ["user", "period"] as const,
      registers,
      aggregator: "max",
      async collect() {
        this.reset();
        for (const q of await current()) this.set({ user: label(q.user), period: q.period }, q.limit);
      },
    });
  }

  private watchState(state: ServerState): void {
    state.logins.on("login", (e) => {
      if (e.ok) return;
      const ctx = this.ctx;
      this.loginFailures.inc({
        method: METHODS.has(e.method) ? e.method : "other",
        user: ctx ? userLabel(ctx, e.user) : "other",
      });
    });
    state.on("upstream", (e) => {
      const ctx = this.ctx;
      const known = ctx?.config.routes;
      this.upstreamDials.inc({
        route: known?.routes.has(e.route) ? e.route : "other",
        upstream: ctx && e.upstream in ctx.config.upstreams ? e.upstream : "other",
        result: e.ok ? "ok" : "failed",
      });
    });
  }

  private ended(r: SessionRecord): void {
    this.advance(r);
    this.counted.delete(r);
    const ctx = this.ctx;
    this.sessions.inc({ command: command(r), outcome: outcomeOf(r) });
    this.sessionSeconds.observe({ command: command(r) }, r.durationMs / 1000);
    if (r.handshakeMs !== undefined) this.handshakeSeconds.observe(r.handshakeMs / 1000);
    if (r.dialMs !== undefined) {
      const route = ctx ? routeLabel(ctx, r.route) : "other";
      this.dialSeconds.observe({ route }, r.dialMs / 1000);
      this.dials.inc({ route, result: r.reply === 0 || r.reply === 90 ? "ok" : "failed" });
    }
    if (r.denied) this.denials.inc({ stage: "request", rule: ruleLabel(r.rule) });
    if (r.method === "gssapi" && r.protection !== undefined) {
      this.gssapiSessions.inc({ protection: PROTECTION.has(r.protection) ? r.protection : "other" });
    }
    // "refused: ..." (a session or rule limit), a handshake closed to make room, an association cap.
    const limit = limitOf(r.reason);
    if (limit) this.limitsHit.inc({ limit });
  }

  /** Counts what a session moved since it was last counted. */
  private advance(r: SessionRecord): void {
    const before = this.counted.get(r);
    const now: Counted = {
      up: r.bytesUp,
      down: r.bytesDown,
      datagramsUp: r.datagramsUp ?? 0,
      datagramsDown: r.datagramsDown ?? 0,
      dropped: { ...r.datagramsDropped },
    };
    const up = now.up - (before?.up ?? 0);
    const down = now.down - (before?.down ?? 0);
    if (up > 0 || down > 0) {
      const ctx = this.ctx;
      const user = ctx ? userLabel(ctx, r.user) : "other";
      const rule = ruleLabel(r.rule);
      if (up > 0) {
        this.userBytes.inc({ user, direction: "up" }, up);
        this.ruleBytes.inc({ rule, direction: "up" }, up);
      }
      if (down > 0) {
        this.userBytes.inc({ user, direction: "down" }, down);
        this.ruleBytes.inc({ rule, direction: "down" }, down);
      }
    }
    const dgUp = now.datagramsUp - (before?.datagramsUp ?? 0);
    const dgDown = now.datagramsDown - (before?.datagramsDown ?? 0);
    if (dgUp > 0) this.datagrams.inc({ direction: "up" }, dgUp);
    if (dgDown > 0) this.datagrams.inc({ direction: "down" }, dgDown);
    for (const [reason, n] of Object.entries(now.dropped)) {
      const d = n - (before?.dropped[reason] ?? 0);
      if (d > 0) this.datagramsDropped.inc({ reason: DROP_REASONS.has(reason) ? reason : "other" }, d);
    }
    this.counted.set(r, now);
  }

  /** Brings the byte and datagram counters up to date with the sessions still running. */
  refresh(): void {
    for (const r of this.server?.sessions() ?? []) this.advance(r);
  }

  /** A reload, ok or refused. */
  reloaded(ok: boolean): void {
    this.reloads.inc({ result: ok ? "ok" : "refused" });
  }

  /** This process's metrics, up to date, as prom-client's JSON (for a cluster's primary). */
  async snapshot(): Promise<MetricObjectWithValues<MetricValue<string>>[]> {
    this.refresh();
    return await this.registry.getMetricsAsJSON();
  }

  /** The text format, up to date. */
  async text(): Promise<string> {
    this.refresh();
    return await this.registry.metrics();
  }
}
