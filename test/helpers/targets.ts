import dgram from "node:dgram";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import https from "node:https";
import type net from "node:net";
import { join } from "node:path";
import { listenClosable } from "./net.js";
import { run, tempDir } from "./process.js";

/** Sends `payload`, half-closes, and collects everything until the far side ends (10 s cap). */
export async function echoThrough(socket: net.Socket, payload: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  const timer = setTimeout(() => socket.destroy(new Error("no end of echo within 10 s")), 10_000);
  socket.end(payload);
  try {
    await once(socket, "end");
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
  return Buffer.concat(chunks);
}

/** A self-signed certificate for `localhost` and 127.0.0.1, made with `openssl req` (1 day). */
export async function selfSignedCert(): Promise<{ key: Buffer; cert: Buffer }> {
  const dir = await tempDir("ferry-cert-");
  try {
    const key = join(dir.path, "key.pem");
    const cert = join(dir.path, "cert.pem");
    const r = await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout",
      key,
      "-out",
      cert,
    ]);
    if (r.code !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
    return { key: await readFile(key), cert: await readFile(cert) };
  } finally {
    await dir.remove();
  }
}

export interface TestHttpsServer {
  port: number;
  /** Remote ports of the TLS connections accepted: one per kept-alive connection. */
  connections: number[];
  requests: string[];
  close(): Promise<void>;
}

/** An HTTPS server on 127.0.0.1 answering `secure <path>` to every request. */
export async function startHttpsServer(tlsFiles: { key: Buffer; cert: Buffer }): Promise<TestHttpsServer> {
  const connections: number[] = [];
  const requests: string[] = [];
  const server = https.createServer(tlsFiles, (req, res) => {
    requests.push(req.url ?? "");
    const body = `secure ${req.url}\n`;
    res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  server.on("secureConnection", (s) => connections.push(s.remotePort ?? 0));
  const listening = await listenClosable(server);
  return {
    port: listening.port,
    connections,
    requests,
    close: listening.close,
  };
}

/** A UDP server on 127.0.0.1 that answers each datagram with `echo:` + the datagram. */
export async function startUdpEcho(): Promise<{ port: number; received: Buffer[]; close: () => void }> {
  const socket = dgram.createSocket("udp4");
  const received: Buffer[] = [];
  socket.on("message", (msg, rinfo) => {
    received.push(msg);
    socket.send(Buffer.concat([Buffer.from("echo:"), msg]), rinfo.port, rinfo.address);
  });
  socket.bind(0, "127.0.0.1");
  await once(socket, "listening");
  return { port: socket.address().port, received, close: () => socket.close() };
}

/**
 * Sends `payload` without half-closing and collects until as many bytes came back (10 s cap):
 * for proxies such as microsocks that close both ways on the first FIN.
 */
export async function echoWithoutFin(socket: net.Socket, payload: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`echo stalled at ${got} bytes`)), 10_000);
      socket.on("data", (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (got >= payload.length) {
          clearTimeout(timer);
          resolve();
        }
      });
      socket.on("error", reject);
      socket.on("close", () => reject(new Error(`closed after ${got} bytes`)));
      socket.write(payload);
    });
  } finally {
    socket.destroy();
  }
  return Buffer.concat(chunks);
}
