import { createHash, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Secret } from "../../config/secret.js";
import { ev } from "../events.js";
import type { Logger } from "../logger.js";

/**
 * The admin listener: a small HTTP server, apart from the SOCKS port, that other modules hang
 * routes on (docs/admin.md).
 *
 *   admin.route("GET", "/metrics", async (req, res) => {
 *     res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
 *     res.end(await registry.metrics());
 *   });
 *
 * - `route(method, path, handler, { public })`: an exact path (no patterns; read parameters from
 *   `req.url.searchParams`). HEAD is answered by a GET route (Node drops the body). A route is
 *   behind the token unless `public: true` (only /healthz and /readyz are).
 * - The handler gets the parsed URL and the request body (at most MAX_BODY bytes, read before it
 *   is called) and writes the response itself, so it may stream (server-sent events); a throw or
 *   rejection becomes a 500 if nothing was sent yet.
 * - Unknown path: 404; known path, other method: 405 with Allow; no or wrong token: 401; body too
 *   large: 413.
 * - The token is accepted from `Authorization: Bearer TOKEN` (scripts, Prometheus), the
 *   `ferry_admin` cookie (a browser page), or `?token=TOKEN` on a GET, which also sets that cookie
 *   (HttpOnly, SameSite=Strict) so a page opened once by its URL keeps working without the token in
 *   every link.
 */
export interface AdminRequest {
  method: string;
  url: URL;
  headers: http.IncomingHttpHeaders;
  /** The request body, at most MAX_BODY bytes. */
  body: Buffer;
  /** The underlying request, for its socket's close event (a streaming response). */
  raw: http.IncomingMessage;
}

/** What it returns is ignored, but awaited when it is a promise. */
export type AdminHandler = (req: AdminRequest, res: http.ServerResponse) => unknown;

export interface RouteOptions {
  /** Served without the token: for orchestrators' probes, which reveal nothing. */
  public?: boolean;
}

/** Bodies larger than this are refused (413): nothing the admin API takes is large. */
export const MAX_BODY = 64 * 1024;
/** Request line and headers together. */
const MAX_HEADER = 16 * 1024;
/** The cookie a browser keeps the token in. */
export const TOKEN_COOKIE = "ferry_admin";

export interface AdminServerOptions {
  host: string;
  port: number;
  /** Without one, every route is open: loopback only (the configuration refuses anything else). */
  token?: Secret;
  log?: Logger;
}

interface Route {
  handler: AdminHandler;
  public: boolean;
}

export class AdminServer {
  private readonly routes = new Map<string, Map<string, Route>>();
  private readonly http: http.Server;
  private readonly tokenDigest: Buffer | undefined;
  private address: AddressInfo | undefined;

  constructor(private readonly options: AdminServerOptions) {
    this.tokenDigest = options.token ? digest(options.token.reveal()) : undefined;
    this.http = http.createServer(
      { maxHeaderSize: MAX_HEADER, requestTimeout: 30_000, headersTimeout: 10_000 },
      (req, res) => void this.handle(req, res),
    );
    // A client's broken connection is its own business.
    this.http.on("clientError", (_err, socket) => {
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
      else socket.destroy();
    });
  }

  /** Adds a route; a second one for the same method and path replaces the first. */
  route(method: string, path: string, handler: AdminHandler, options: RouteOptions = {}): void {
    const byMethod = this.routes.get(path) ?? new Map<string, Route>();
    this.routes.set(path, byMethod);
    byMethod.set(method.toUpperCase(), { handler, public: options.public ?? false });
  }

  /** Whether a request needs the token at all. */
  get guarded(): boolean {
    return this.tokenDigest !== undefined;
  }

  async listen(): Promise<{ host: string; port: number }> {
    const { host, port } = this.options;
    await new Promise<void>((resolve, reject) => {
      this.http.once("error", reject);
      this.http.listen({ host, port }, () => {
        this.http.off("error", reject);
        resolve();
      });
    });
    this.address = this.http.address() as AddressInfo;
    return { host: this.address.address, port: this.address.port };
  }

  get listening(): boolean {
    return this.http.listening;
  }

  /** Stops listening and ends every connection, streaming ones included. */
  async close(): Promise<void> {
    if (!this.http.listening) return;
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeAllConnections();
    await closed;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://admin.invalid");
    const byMethod = this.routes.get(url.pathname);
    if (!byMethod) return plain(res, 404, "not found\n");
    const method = (req.method ?? "GET").toUpperCase();
    const route = byMethod.get(method) ?? (method === "HEAD" ? byMethod.get("GET") : undefined);
    if (!route) {
      const allow = [...byMethod.keys()];
      if (allow.includes("GET")) allow.push("HEAD");
      return plain(res, 405, "method not allowed\n", { allow: allow.join(", ") });
    }
    if (!route.public && !this.authorized(req, url, method, res)) {
      return plain(res, 401, "a token is needed: Authorization: Bearer TOKEN\n", {
        "www-authenticate": 'Bearer realm="ferry admin"',
      });
    }
    const body = await readBody(req, MAX_BODY);
    if (body === undefined)
      return plain(res, 413, `request body over ${MAX_BODY} bytes\n`, { connection: "close" });
    try {
      await route.handler({ method, url, headers: req.headers, body, raw: req }, res);
    } catch (err) {
      this.options.log?.error(
        ev("admin.error", { path: url.pathname, err: (err as Error).message }),
        "admin: a handler failed",
      );
      if (!res.headersSent) plain(res, 500, "internal error\n");
      else res.destroy();
    }
  }

  /** Checks the token from the header, the cookie or (GET) the query; the query one sets the cookie. */
  private authorized(req: http.IncomingMessage, url: URL, method: string, res: http.ServerResponse): boolean {
    const want = this.tokenDigest;
    if (!want) return true;
    const auth = req.headers.authorization;
    if (auth?.startsWith("Bearer ") && same(want, auth.slice(7).trim())) return true;
    const cookie = cookieValue(req.headers.cookie, TOKEN_COOKIE);
    if (cookie !== undefined && same(want, cookie)) return true;
    const query = url.searchParams.get("token");
    if (query !== null && (method === "GET" || method === "HEAD") && same(want, query)) {
      res.setHeader(
        "set-cookie",
        `${TOKEN_COOKIE}=${encodeURIComponent(query)}; HttpOnly; SameSite=Strict; Path=/`,
      );
      return true;
    }
    return false;
  }
}

const digest = (text: string): Buffer => createHash("sha256").update(text).digest();

/** Compared as digests, in constant time, so neither the length nor a prefix leaks. */
const same = (want: Buffer, given: string): boolean => timingSafeEqual(want, digest(given));

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of header?.split(";") ?? []) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** The whole body, or undefined once it passes `max` bytes. */
function readBody(req: http.IncomingMessage, max: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > max) {
    req.resume();
    return Promise.resolve(undefined);
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.removeAllListeners("data");
        req.resume();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", () => resolve(undefined));
  });
}

/** A short text answer. */
export function plain(
  res: http.ServerResponse,
  status: number,
  text: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "cache-control": "no-store",
    ...headers,
  });
  res.end(text);
}
