import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { type EchoTarget, parseRawResponse, startEchoTarget, viaProxy } from "../helpers/http-proxy.js";
import { waitFor } from "../helpers/net.js";
import { TestClient } from "../helpers/socks.js";

/** 127.0.0.2 is denied; the rest of loopback allowed; everything else denied. */
const RULES = [{ deny: { to: ["127.0.0.2"] } }, { allow: { to: ["127.0.0.0/8", "::1/128"] } }, { deny: {} }];
const HANDSHAKE_MS = 1000;

/** A listener on 127.0.0.2 that only counts the connections that reach it. */
async function startWitness(): Promise<{ port: number; arrived: () => number; close(): Promise<void> }> {
  let arrived = 0;
  const server = net.createServer((s) => {
    arrived++;
    s.destroy();
  });
  server.listen(0, "127.0.0.2");
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    arrived: () => arrived,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe("malformed and hostile HTTP proxy input", () => {
  let ferry: RunningFerry;
  let target: EchoTarget;
  before(async () => {
    ferry = await startFerry(
      { rules: RULES, timeouts: { handshake: HANDSHAKE_MS } },
      { inlineUsers: [{ name: "alice", password: "wonderland" }] },
    );
    target = await startEchoTarget();
  });
  after(async () => {
    await ferry?.close();
    await target?.close();
  });

  const login = `Basic ${Buffer.from("alice:wonderland").toString("base64")}`;

  /** After each case: a plain request with a good login still gets through. */
  async function assertStillServes(): Promise<void> {
    const r = await viaProxy(ferry.port, `${target.origin}/still`, {
      headers: { "Proxy-Authorization": login },
    });
    assert.equal(r.status, 200);
    assert.equal(r.body, "seen GET /still\n");
  }

  async function recordOf(port: number) {
    await waitFor(() => ferry.records.some((r) => r.clientPort === port), 5000, `the record of port ${port}`);
    return ferry.records.find((r) => r.clientPort === port)!;
  }

  test("a giant header: 431 and a close, nothing reaches the target", async () => {
    const seen = target.seen.length;
    const c = await TestClient.connect(ferry.port);
    c.write(
      `GET ${target.origin}/big HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${login}\r\nX-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`,
    );
    const { data, ended } = await c.readToEnd(5000);
    c.destroy();
    assert.ok(ended, "the connection was closed");
    assert.match(data.toString(), /^HTTP\/1\.1 431 /);
    assert.match((await recordOf(c.localPort)).reason ?? "", /HPE_HEADER_OVERFLOW/);
    assert.equal(target.seen.length, seen);
    await assertStillServes();
  });

  test("a request line with no end is closed by the handshake timeout", async () => {
    const c = await TestClient.connect(ferry.port);
    const started = Date.now();
    c.write(`GET ${target.origin}/never-ending`);
    await c.waitClosed(HANDSHAKE_MS + 4000);
    const tookMs = Date.now() - started;
    c.destroy();
    assert.ok(tookMs >= HANDSHAKE_MS - 50, `closed after ${tookMs} ms, before the timeout`);
    assert.match((await recordOf(c.localPort)).reason ?? "", /no complete HTTP request head within 1000 ms/);
    await assertStillServes();
  });

  test("Content-Length with Transfer-Encoding: 400, and no smuggled request reaches the target", async () => {
    const seen = target.seen.length;
    const smuggled = `GET ${target.origin}/smuggled HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${login}\r\n\r\n`;
    const body = `0\r\n\r\n${smuggled}`;
    const c = await TestClient.connect(ferry.port);
    c.write(
      `POST ${target.origin}/echo HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${login}\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
    );
    const { data, ended } = await c.readToEnd(5000);
    c.destroy();
    assert.ok(ended);
    const text = data.toString();
    assert.match(text, /^HTTP\/1\.1 400 /);
    assert.equal((text.match(/HTTP\/1\.1 /g) ?? []).length, 1, "one answer only");
    await assertStillServes();
    assert.deepEqual(
      target.seen.slice(seen).map((s) => s.url),
      ["/still"],
      "only the later good request reached the target",
    );
  });

  test("a bad Proxy-Authorization: 407 with a challenge, nothing reaches the target", async () => {
    const seen = target.seen.length;
    for (const value of ["Basic !!!not-base64!!!", "Basic bm8tY29sb24=", "Digest username=alice", "Basic"]) {
      const c = await TestClient.connect(ferry.port);
      c.write(`GET ${target.origin}/x HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${value}\r\n\r\n`);
      const r = await c.read(parseRawResponse, 10_000, `the answer to ${value}`);
      c.destroy();
      assert.equal(r.status, 407, value);
      assert.match(r.head, /\r\nProxy-Authenticate: Basic realm="ferry"/i);
    }
    assert.equal(target.seen.length, seen);
    await assertStillServes();
  });

  test("an absolute URI or CONNECT to a denied host (127.0.0.2): 403, nothing arrives there", async () => {
    const witness = await startWitness();
    try {
      const r = await viaProxy(ferry.port, `http://127.0.0.2:${witness.port}/`, {
        headers: { "Proxy-Authorization": login },
      });
      assert.equal(r.status, 403);
      assert.match(r.body, /denied by rule rules\[0\]/);
      const c = await TestClient.connect(ferry.port);
      c.write(`CONNECT 127.0.0.2:${witness.port} HTTP/1.1\r\nProxy-Authorization: ${login}\r\n\r\n`);
      const answer = await c.read(parseRawResponse, 10_000, "the CONNECT answer");
      c.destroy();
      assert.equal(answer.status, 403);
      const rec = await recordOf(c.localPort);
      assert.equal(rec.command, "connect");
      assert.equal(rec.rule, "rules[0]");
      assert.equal(rec.reply, 2);
      await assertStillServes();
      assert.equal(witness.arrived(), 0, "a connection reached the denied host");
    } finally {
      await witness.close();
    }
  });
});
