import http from "node:http";
import type { Parser } from "../../src/protocol/parse.js";
import { listenClosable } from "./net.js";

/** What a proxy may reach in tests: loopback only, everything else denied. */
export const LOOPBACK_RULES = [{ allow: { to: ["127.0.0.0/8", "::1/128"] } }, { deny: {} }];

export interface SeenRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  body: string;
  /** Remote port of the connection it came on: equal ports mean a kept-alive connection. */
  remotePort: number;
}

export interface EchoTarget {
  port: number;
  origin: string;
  seen: SeenRequest[];
  close(): Promise<void>;
}

/**
 * A loopback target for HTTP proxy tests. Every request is recorded (headers as received, body);
 * the answer is by path:
 * - `/echo`: 200 with the request body, Content-Length framed;
 * - `/chunked`: 200 in three chunks, no Content-Length;
 * - `/cut`: announces 1000 bytes, sends 10, then closes the connection;
 * - anything else: 200 `seen <method> <url>`.
 */
export async function startEchoTarget(): Promise<EchoTarget> {
  const seen: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      seen.push({
        method: req.method ?? "",
        url: req.url ?? "",
        rawHeaders: req.rawHeaders,
        body,
        remotePort: req.socket.remotePort ?? 0,
      });
      if (req.url === "/echo") {
        res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
        res.end(body);
      } else if (req.url === "/chunked") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("one,");
        setTimeout(() => {
          res.write("two,");
          res.end("three");
        }, 20);
      } else if (req.url === "/cut") {
        res.writeHead(200, { "content-type": "text/plain", "content-length": "1000" });
        res.write("0123456789");
        setTimeout(() => req.socket.destroy(), 50);
      } else {
        const text = `seen ${req.method} ${req.url}\n`;
        res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(text) });
        res.end(req.method === "HEAD" ? undefined : text);
      }
    });
  });
  const listening = await listenClosable(server);
  const port = listening.port;
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    seen,
    close: listening.close,
  };
}

/** Header values by lower-case name, from rawHeaders. */
export function headerValues(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) out.push(raw[i + 1]!);
  return out;
}

export interface RawResponse {
  status: number;
  head: string;
  body: string;
}

/**
 * One HTTP/1.1 response read from raw bytes: the head, then a Content-Length body (or none).
 * For tests that speak to the proxy byte by byte (TestClient.read).
 */
export const parseRawResponse: Parser<RawResponse> = (buf) => {
  const bytes = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const end = bytes.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const head = bytes.subarray(0, end).toString("latin1");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
  const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
  // 1xx and 200 to CONNECT carry no body.
  const bodyLength = status < 200 || /^HTTP\/1\.[01] 200 Connection established/.test(head) ? 0 : length;
  if (bytes.length < end + 4 + bodyLength) return undefined;
  return {
    value: { status, head, body: bytes.subarray(end + 4, end + 4 + bodyLength).toString("utf8") },
    consumed: end + 4 + bodyLength,
  };
};

/** A response head alone (a HEAD response, whose Content-Length announces no body here). */
export const parseRawHead: Parser<string> = (buf) => {
  const end = Buffer.from(buf.buffer, buf.byteOffset, buf.length).indexOf("\r\n\r\n");
  return end < 0
    ? undefined
    : { value: Buffer.from(buf.subarray(0, end)).toString("latin1"), consumed: end + 4 };
};

/** `GET url` (or another method) through the HTTP proxy at 127.0.0.1:`proxyPort` with Node's client. */
export function viaProxy(
  proxyPort: number,
  url: string,
  options: { method?: string; headers?: http.OutgoingHttpHeaders; body?: string; agent?: http.Agent } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1",
      port: proxyPort,
      method: options.method ?? "GET",
      path: url,
      headers: options.headers,
      agent: options.agent ?? false,
      timeout: 10_000,
    });
    req.on("timeout", () => req.destroy(new Error(`no answer through the proxy for ${url} in 10 s`)));
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString("utf8"),
        }),
      );
    });
    req.end(options.body);
  });
}
