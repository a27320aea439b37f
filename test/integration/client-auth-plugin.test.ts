import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Duplex } from "node:stream";
import { after, before, test } from "node:test";
import type { AuthMethod } from "../../src/auth/method.js";
import { type ClientAuthMethod, connect, noAuth, parseProxyUrl, StreamReader } from "../../src/index.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { sha256, startEchoServer } from "../helpers/net.js";
import { echoThrough } from "../helpers/targets.js";

/** METHOD 0x80 is in the private range (RFC 1928 §3): a stand-in for GSSAPI's encapsulation. */
const XOR_METHOD = 0x80;
const KEY = 0x5a;

const xor = (b: Buffer): Buffer => Buffer.from(b.map((x) => x ^ KEY));

/**
 * Wraps `inner` so every byte is XORed each way: a toy "confidentiality layer" with the same
 * shape as a GSSAPI encapsulation. `early` are bytes the handshake reader already took.
 */
function xorLayer(inner: Duplex, early: Buffer): Duplex {
  const outer = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      inner.write(xor(chunk), cb);
    },
    final(cb) {
      inner.end();
      cb();
    },
    read() {
      inner.resume();
    },
    allowHalfOpen: true,
  });
  if (early.length > 0) outer.push(xor(early));
  inner.on("data", (c: Buffer) => {
    if (!outer.push(xor(c))) inner.pause();
  });
  inner.on("end", () => outer.push(null));
  inner.on("error", (e) => outer.destroy(e));
  outer.on("close", () => inner.destroy());
  return outer;
}

const serverXor: AuthMethod = {
  name: "xor",
  code: XOR_METHOD,
  async negotiate({ stream, reader }) {
    const wrapped = xorLayer(stream, reader.release());
    return { user: "xor-peer", encapsulation: { stream: wrapped, reader: new StreamReader(wrapped) } };
  },
};

const clientXor: ClientAuthMethod = {
  code: XOR_METHOD,
  name: "xor",
  async negotiate(stream, reader) {
    const wrapped = xorLayer(stream, reader.release());
    return { stream: wrapped, reader: new StreamReader(wrapped) };
  },
};

let ferry: RunningFerry;
let echo: { port: number; close: () => Promise<void> };
before(async () => {
  ferry = await startFerry({}, {}, (ctx) => ({ ...ctx, methods: [serverXor, ...ctx.methods] }));
  echo = await startEchoServer();
});
after(async () => {
  await ferry?.close();
  await echo?.close();
});

test("a client auth method that encapsulates: request, reply and data all run through its stream", async () => {
  const payload = randomBytes(256 * 1024);
  const hop = { ...parseProxyUrl(ferry.url), methods: [clientXor, noAuth] };
  const next = ferry.nextRecord();
  const socket = await connect(hop, `localhost:${echo.port}`);
  assert.equal(sha256(await echoThrough(socket, payload)), sha256(payload));
  const record = await next;
  assert.equal(record.method, "xor");
  assert.equal(record.user, "xor-peer");
  assert.equal(record.target, `localhost:${echo.port}`, "the request was read through the layer");
  assert.equal(record.bytesUp, payload.length);
});
