import type http from "node:http";
import { isLoopback } from "../../policy/addresses.js";
import { ev } from "../events.js";
import type { LiveSnapshot, LiveSource, SessionView } from "../live/view.js";
import type { Logger } from "../logger.js";
import { pageHeaders, pageHtml } from "./page.js";
import { type AdminHandler, type AdminRequest, type AdminServer, plain } from "./server.js";

/**
 * The live admin page and its JSON API (docs/admin.md):
 *
 *   GET  /                  the page (one HTML document, inline CSS and JS)
 *   GET  /api/sessions      running sessions            GET /api/users    per-user totals
 *   GET  /api/denials       recent denials, newest first
 *   GET  /api/events        server-sent events: a `snapshot` (all three) every interval
 *   POST /api/sessions/end  {"id": "17", "reason"?: "..."}   ends one session
 *   POST /api/users/end     {"user": "alice", "reason"?: "..."} ends all of a user's sessions
 */
export interface LiveRoutesOptions {
  /** Between two snapshots on the event stream. */
  intervalMs?: number;
  /** Sessions in one event-stream snapshot at most (the JSON API lists all). */
  maxSessions?: number;
}

/** The header the page sends with its POSTs: a cross-site form cannot, nor can fetch without a preflight. */
export const ACTION_HEADER = "x-ferry-admin";
const DEFAULT_REASON = "ended from the admin page";
const MAX_REASON = 200;
/** Event-stream clients at once: each costs a snapshot a second. */
const MAX_STREAMS = 32;

export function liveRoutes(
  server: AdminServer,
  live: LiveSource,
  log?: Logger,
  options: LiveRoutesOptions = {},
): { close(): void } {
  const intervalMs = options.intervalMs ?? 1000;
  const maxSessions = options.maxSessions ?? 500;
  const admin = {
    route: (method: string, path: string, handler: AdminHandler) =>
      server.route(method, path, guardHost(server, handler)),
  };

  admin.route("GET", "/", (_req, res) => {
    res.writeHead(200, pageHeaders());
    res.end(pageHtml);
  });
  admin.route("GET", "/api/sessions", async (_req, res) => {
    const s = await live.snapshot();
    json(res, 200, { at: s.at, sessions: s.sessions, ...missing(s) });
  });
  admin.route("GET", "/api/denials", async (_req, res) => {
    const s = await live.snapshot();
    json(res, 200, { at: s.at, denials: s.denials, ...missing(s) });
  });
  admin.route("GET", "/api/users", async (_req, res) => {
    const s = await live.snapshot();
    json(res, 200, { at: s.at, users: s.users, columns: s.columns, ...missing(s) });
  });

  const streams = new Set<http.ServerResponse>();
  let timer: NodeJS.Timeout | undefined;
  let last = "";
  let busy = false;
  const tick = async (): Promise<void> => {
    // A slow answer (a worker that does not reply) is not asked again while it is awaited.
    if (busy) return;
    busy = true;
    const s = await live.snapshot().catch(() => undefined);
    busy = false;
    if (!s || streams.size === 0) return;
    const data = eventData(s, maxSessions);
    last = data;
    for (const res of streams) res.write(data);
  };
  const startTicking = (): void => {
    if (timer) return;
    timer = setInterval(() => void tick(), intervalMs);
    timer.unref();
  };
  admin.route("GET", "/api/events", async (req, res) => {
    if (streams.size >= MAX_STREAMS) return plain(res, 503, "too many event streams open\n");
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      // Proxies in between must not hold the stream back.
      "x-accel-buffering": "no",
    });
    let gone = false;
    req.raw.socket.once("close", () => {
      gone = true;
      streams.delete(res);
      if (streams.size === 0 && timer) {
        clearInterval(timer);
        timer = undefined;
      }
    });
    // A first snapshot at once, so the page fills before the first tick.
    const s = await live.snapshot().catch(() => undefined);
    if (gone) return;
    res.write(`retry: ${Math.max(1000, intervalMs)}\n\n`);
    if (s) res.write(eventData(s, maxSessions));
    else if (last) res.write(last);
    streams.add(res);
    startTicking();
  });

  admin.route("POST", "/api/sessions/end", async (req, res) => {
    const body = action(req, res);
    if (!body) return;
    if (typeof body.id !== "string" && typeof body.id !== "number")
      return json(res, 400, { error: 'expected {"id": "SESSION"}' });
    const reason = reasonOf(body.reason);
    const view = await live.end(String(body.id), reason);
    if (!view) return json(res, 404, { error: `no running session ${String(body.id)}` });
    log?.warn(
      ev("admin.session.end", {
        session: view.id,
        user: view.user,
        client: view.client,
        target: view.target,
        from: who(req),
        reason,
      }),
      `admin: ended session ${view.id} (${describe(view)}): ${reason}`,
    );
    json(res, 200, { ended: [view] });
    void tick();
  });
  admin.route("POST", "/api/users/end", async (req, res) => {
    const body = action(req, res);
    if (!body) return;
    if (typeof body.user !== "string" || body.user === "")
      return json(res, 400, { error: 'expected {"user": "NAME"}' });
    const reason = reasonOf(body.reason);
    const ended = await live.endUser(body.user, reason);
    log?.warn(
      ev("admin.user.end", { user: body.user, sessions: ended.map((v) => v.id), from: who(req), reason }),
      `admin: ended ${ended.length} session${ended.length === 1 ? "" : "s"} of user ${body.user}: ${reason}`,
    );
    json(res, 200, { ended });
    void tick();
  });

  return {
    close: () => {
      clearInterval(timer);
      timer = undefined;
      for (const res of streams) res.end();
      streams.clear();
    },
  };
}

/**
 * Without a token the listener is loopback only, but a page elsewhere could still reach it by
 * DNS rebinding (its own name resolving to 127.0.0.1): then the Host header carries that name.
 * So an unguarded listener answers only requests addressed to a loopback address or localhost.
 */
function guardHost(server: AdminServer, handler: AdminHandler): AdminHandler {
  return (req, res) => {
    if (!server.guarded && !loopbackHost(req.headers.host))
      return plain(
        res,
        403,
        "without admin.token the page answers only to a loopback address or localhost\n",
      );
    return handler(req, res);
  };
}

function loopbackHost(host: string | undefined): boolean {
  if (!host) return false;
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(host) ?? /^([^:]+)(?::\d+)?$/.exec(host);
  return m !== null && isLoopback(m[1]!.toLowerCase());
}

/**
 * A POST's JSON body, once it has shown it is no cross-site request: a JSON content type and
 * the action header (or an Authorization header: both need a preflight we never answer), and an
 * Origin and Sec-Fetch-Site, when the browser sends them, of this very listener.
 */
function action(req: AdminRequest, res: http.ServerResponse): Record<string, unknown> | undefined {
  const h = req.headers;
  const refuse = (why: string, status = 403): undefined => {
    json(res, status, { error: why });
    return undefined;
  };
  if (h[ACTION_HEADER] === undefined && h.authorization === undefined)
    return refuse(`a POST needs the ${ACTION_HEADER} header (or Authorization)`);
  const origin = h.origin;
  if (origin !== undefined && origin !== `http://${h.host}`)
    return refuse("a POST from another origin is refused");
  const site = h["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin" && site !== "none")
    return refuse("a POST from another site is refused");
  if (!/^application\/json\b/i.test(String(h["content-type"] ?? "")))
    return refuse("expected content-type: application/json", 415);
  try {
    const body: unknown = JSON.parse(req.body.toString("utf8"));
    if (typeof body === "object" && body !== null && !Array.isArray(body))
      return body as Record<string, unknown>;
  } catch {
    // answered below
  }
  json(res, 400, { error: "expected a JSON object" });
  return undefined;
}

function reasonOf(given: unknown): string {
  if (typeof given !== "string" || given.trim() === "") return DEFAULT_REASON;
  // Kept to one short line: it goes into the session's log line.
  return (
    given
      .replace(/[\p{Cc}\p{Cf}]+/gu, " ")
      .trim()
      .slice(0, MAX_REASON) || DEFAULT_REASON
  );
}

function who(req: AdminRequest): string {
  return req.raw.socket.remoteAddress ?? "unknown";
}

function describe(v: SessionView): string {
  return `${v.user ?? "no user"}, ${v.client} → ${v.target ?? "?"}`;
}

function missing(s: LiveSnapshot): { missing?: number[] } {
  return s.missing?.length ? { missing: s.missing } : {};
}

function eventData(s: LiveSnapshot, maxSessions: number): string {
  const sessions = s.sessions.length > maxSessions ? s.sessions.slice(0, maxSessions) : s.sessions;
  const payload = { ...s, sessions, sessionsTotal: s.sessions.length };
  // JSON has no raw newline, so the one data line is the whole event.
  return `event: snapshot\ndata: ${JSON.stringify(payload)}\n\n`;
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
  res.end(`${JSON.stringify(body)}\n`);
}
