/**
 * Every log line Ferry writes carries an `event` field naming what happened, from this one list,
 * so that a log pipeline can select lines without parsing messages and a test can check that no
 * line goes out unnamed. docs/logging.md describes each event's fields; log-schema.ts checks them.
 */
export const EVENTS = {
  // The server's life.
  listen: "listening: the addresses, the authentication methods (with workers: their pids)",
  "gssapi.status": "at start: whether the GSSAPI add-on could be loaded",
  "control.listen": "at start: the control socket `ferry reload` talks to",
  "fd.short": "at start: the open-files limit is below what the configured limits need",
  "fd.exhausted": "out of descriptors: connections closed at accept (at most one line a second)",
  "reload.start": "a reload begins (SIGHUP or `ferry reload`)",
  "reload.ok": "a reload was taken",
  "reload.fail": "a reload was refused; the running configuration stays",
  "shutdown.start": "SIGTERM/SIGINT: no longer accepting, draining the live sessions",
  "shutdown.repeat": "a repeated stop signal, taken as the same stop",
  "shutdown.cut": "a second stop during the drain: every session is closed now",
  "shutdown.overdue": "still running after the sessions were cut: exiting anyway",
  "shutdown.done": "stopped",
  // Workers (`workers: N`), written by the primary.
  "worker.listen": "a replacement worker listens",
  "worker.fail": "a replacement worker could not start",
  "worker.exit": "a worker died; another is started",
  "worker.reload.ok": "a worker started late took the last reload",
  "worker.reload.fail": "a worker started late could not take the last reload",
  // Connections and sessions.
  "connection.refused": "a connection closed before its handshake (client rule, session limits)",
  "session.start": "a request was read and a session slot taken",
  "session.end": "a session ended, established or not: the whole record",
  "auth.ok": "a login succeeded",
  "auth.fail": "a login failed",
  "policy.allow": "a rule marked `log: true` allowed",
  "policy.deny": "a rule denied",
  // Transfer quotas (docs/quotas.md).
  "quota.exhausted": "a user used up their transfer quota: sessions refused and cut until it resets",
  "quota.warning": "the quota state file could not be read or written, or its path changed",
  // Shared state in Redis (docs/scale-out.md).
  "state.shared": "Redis answers: limits, quotas and login throttling are shared",
  "state.unshared": "Redis is unreachable: this instance serves with its own limits",
  // The admin listener (docs/admin.md).
  "admin.listen": "at start: the admin listener's address",
  "admin.session.end": "a session was ended from the admin page or API",
  "admin.user.end": "every session of a user was ended from the admin page or API",
  "admin.error": "an admin route failed (a bug: the request got a 500)",
  // `ferry forward`.
  "forward.listen": "ferry forward listens on a local port",
  "forward.end": "a forwarded connection ended",
  "forward.fail": "a forwarded connection could not reach its target",
} as const;

export type EventName = keyof typeof EVENTS;

export const EVENT_NAMES = Object.keys(EVENTS) as EventName[];

/** The fields of a line with its event first: `log.info(ev("listen", { listen }), "…")`. */
export function ev<F extends object>(event: EventName, fields?: F): { event: EventName } & F {
  return { event, ...(fields as F) };
}
