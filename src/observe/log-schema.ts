import { z } from "zod";
import { EVENT_NAMES, type EventName } from "./events.js";

/**
 * The JSON log line of each event, as docs/logging.md describes it: strict, so a field added to
 * a line without being documented here fails the tests that check every line Ferry writes.
 */

const str = z.string();
const int = z.number().int();
const count = z.number().int().min(0);
const hostPort = z.strictObject({ host: str, port: int });

/** On every line. */
const common = {
  /** pino's numeric level: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal. */
  level: z.union([z.literal(10), z.literal(20), z.literal(30), z.literal(40), z.literal(50), z.literal(60)]),
  /** Milliseconds since the epoch. */
  time: int,
  msg: str,
  /** The process and host that wrote the line. */
  pid: int,
  hostname: str,
  /** With workers: which process wrote the line. */
  worker: z.union([z.literal("primary"), int.min(1)]).optional(),
};

const sessionFields = {
  session: int,
  /** ADDRESS:PORT, an IPv6 address in brackets. */
  client: str,
  /** Behind a balancer: its address and port (the PROXY header named the client). */
  proxy: str.optional(),
  protocol: z.enum(["socks4", "socks4a", "socks5", "http", "unknown"]).optional(),
  /** A TLS listener's connection: the TLS version agreed. */
  tls: str.optional(),
  method: str.optional(),
  /** The user name (userpass), the GSSAPI principal, or absent. */
  user: str.optional(),
  /** Directory users: the LDAP groups the user belongs to. */
  groups: z.array(str).optional(),
  /** GSSAPI: the protection level agreed for the session. */
  protection: z.enum(["none", "integrity", "confidentiality"]).optional(),
  ident: str.optional(),
  command: z.enum(["connect", "bind", "udp", "http"]).optional(),
  target: str.optional(),
  rule: str.optional(),
};

const login = { client: str, user: str, method: str, failures: count, delayMs: count };
const policy = {
  stage: z.enum(["client", "request", "address"]),
  client: str,
  user: str.optional(),
  command: str.optional(),
  target: str.optional(),
  address: str.optional(),
  verdict: z.enum(["allow", "deny"]),
  rule: str,
  reason: str.optional(),
};
const workerRef = { workerIndex: int.min(1) };
const pids = z.array(int.nullable());

/** Each event's own fields (besides the common ones). */
const FIELDS = {
  listen: {
    listen: z.array(str),
    auth: z.array(str).optional(),
    workers: int.optional(),
    workerPids: pids.optional(),
  },
  "gssapi.status": { gssapi: z.boolean() },
  "control.listen": { control: str },
  "fd.short": { fdLimit: int.optional(), fdsNeeded: int },
  "fd.exhausted": { fdLimit: int.optional(), connections: count, closed: count, pausedMs: count.optional() },
  "reload.start": { trigger: str },
  "reload.ok": { opened: z.array(hostPort).optional(), closed: z.array(hostPort).optional() },
  "reload.fail": {},
  "shutdown.start": { signal: str, sessions: count.optional(), workers: count.optional() },
  "shutdown.repeat": { signal: str },
  "shutdown.cut": { signal: str },
  "shutdown.overdue": { sessions: count.optional(), workerPids: pids.optional() },
  "shutdown.done": {},
  "worker.listen": { ...workerRef, workerPid: int.optional() },
  "worker.fail": { ...workerRef, workerPid: int.optional() },
  "worker.exit": { ...workerRef, workerPid: int.optional(), code: int.nullable(), signal: str.nullable() },
  "worker.reload.ok": workerRef,
  "worker.reload.fail": workerRef,
  "connection.refused": {
    client: str,
    clientPort: int,
    /** Behind a balancer: its address and port (the PROXY header named the client). */
    proxy: str.optional(),
    reason: str,
  },
  "session.start": sessionFields,
  "session.end": {
    ...sessionFields,
    /** The address the target resolved to and was connected to. */
    remote: str.optional(),
    /** BND.ADDR:BND.PORT sent to the client. */
    bound: str.optional(),
    /** The reply code sent (SOCKS5 REP, SOCKS4 CD), and its name; "no reply" when none was sent. */
    reply: int.optional(),
    outcome: str,
    /** HTTP proxy requests: the status sent to the client. */
    status: int.optional(),
    bytesUp: count,
    bytesDown: count,
    peer: str.optional(),
    peersRefused: count.optional(),
    datagramsUp: count.optional(),
    datagramsDown: count.optional(),
    datagramsDropped: z.record(str, count).optional(),
    durationMs: count,
    reason: str.optional(),
  },
  "auth.ok": login,
  "auth.fail": login,
  "policy.allow": policy,
  "policy.deny": policy,
  "quota.exhausted": {
    user: str,
    used: count,
    limit: count,
    period: z.enum(["day", "month"]),
    resetsAt: str,
  },
  "quota.warning": {},
  "state.shared": { redis: str, shared: z.literal(true) },
  "state.unshared": { redis: str, shared: z.literal(false), error: str },
  "admin.listen": { admin: str },
  "admin.session.end": {
    session: str,
    user: str.optional(),
    client: str,
    target: str.optional(),
    from: str,
    reason: str,
  },
  "admin.error": { path: str, err: str },
  "admin.user.end": { user: str, sessions: z.array(str), from: str, reason: str },
  "forward.listen": { listen: str, target: str, via: str },
  "forward.end": { id: int, from: str, target: str, bytesUp: count, bytesDown: count, ms: count },
  "forward.fail": { id: int, from: str, target: str, hop: int.optional(), error: str },
} satisfies Record<EventName, z.ZodRawShape>;

/** The schema of one event's line. */
export const eventSchemas = Object.fromEntries(
  EVENT_NAMES.map((name) => [name, z.strictObject({ ...common, event: z.literal(name), ...FIELDS[name] })]),
) as unknown as Record<EventName, z.ZodObject>;

/** Any line Ferry logs: its `event` picks the schema. */
export const logLineSchema = z.discriminatedUnion(
  "event",
  EVENT_NAMES.map((name) => eventSchemas[name]) as unknown as [z.ZodObject, ...z.ZodObject[]],
);

/** The fields each event may carry besides the common ones (for the docs' completeness test). */
export const eventFields = (name: EventName): string[] => Object.keys(FIELDS[name]);
