import { createCipheriv, createHash } from "node:crypto";
import http from "node:http";
import { listenClosable } from "./net.js";

const KEY = Buffer.alloc(16, 7);
const IV = Buffer.alloc(16, 0);
const CHUNK = 64 * 1024;

/**
 * Deterministic pseudo-random bytes: the AES-128-CTR keystream under a fixed key, so the server
 * can stream any length and the test can compute the expected hash without storing the data.
 */
function* pseudoRandomChunks(length: number): Generator<Buffer> {
  const cipher = createCipheriv("aes-128-ctr", KEY, IV);
  const zeros = Buffer.alloc(CHUNK);
  for (let left = length; left > 0; left -= CHUNK) {
    yield cipher.update(left >= CHUNK ? zeros : zeros.subarray(0, left));
  }
}

/** sha256 (hex) of the first `length` pseudo-random bytes served at /bytes/LENGTH. */
export function pseudoRandomSha256(length: number): string {
  const hash = createHash("sha256");
  for (const chunk of pseudoRandomChunks(length)) hash.update(chunk);
  return hash.digest("hex");
}

export interface TestHttpServer {
  host: string;
  port: number;
  /** http://host:port (IPv6 hosts in brackets). */
  origin: string;
  /** The body GET / answers with (unique per server). */
  greeting: string;
  /** Remote addresses of the requests served, in order. */
  requests: { path: string; remote: string }[];
  close(): Promise<void>;
}

/**
 * A target web server on loopback: `GET /` answers `greeting`; `GET /bytes/N` streams N
 * deterministic pseudo-random bytes (check with pseudoRandomSha256); anything else is a 404.
 */
export async function startHttpServer(host = "127.0.0.1"): Promise<TestHttpServer> {
  const greeting = `hello from ${host} ${Math.random().toString(36).slice(2)}\n`;
  const requests: { path: string; remote: string }[] = [];
  const server = http.createServer((req, res) => {
    requests.push({ path: req.url ?? "", remote: req.socket.remoteAddress ?? "" });
    const bytes = /^\/bytes\/(\d+)$/.exec(req.url ?? "");
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(greeting) });
      res.end(greeting);
    } else if (bytes) {
      const length = Number(bytes[1]);
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": length });
      const chunks = pseudoRandomChunks(length);
      // Honour backpressure: write until the socket buffer is full, continue on 'drain'.
      const pump = (): void => {
        for (;;) {
          const next = chunks.next();
          if (next.done) {
            res.end();
            return;
          }
          if (!res.write(next.value)) {
            res.once("drain", pump);
            return;
          }
        }
      };
      pump();
    } else {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found\n");
    }
  });
  const listening = await listenClosable(server, host);
  const port = listening.port;
  return {
    host,
    port,
    origin: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    greeting,
    requests,
    close: listening.close,
  };
}
